//! Scrape latency with no JS at all: the Rust server and the Rust scraper on a loopback
//! testnet of peeroxide-dht nodes. Separates the network stack's cost from the
//! threadsafe-function hop to JS that the Node benchmark (scrape.js) includes.
//!   cargo run --release --example latency -- [scrapes] [bytes]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dht_prom_client_rs::events::ignore_events;
use dht_prom_client_rs::keys::KeyPair;
use dht_prom_client_rs::node::{DhtNode, NodeConfig};
use dht_prom_client_rs::scraper::{RequestOptions, Scraper, ScraperConfig};
use dht_prom_client_rs::server::{MetricsFuture, MetricsRequestInfo, MetricsServer, MetricsSource, ServerConfig};
use dht_prom_client_rs::stats::Stats;

struct Fixed(String);

impl MetricsSource for Fixed {
    fn metrics(&self, _request: MetricsRequestInfo) -> MetricsFuture {
        let text = self.0.clone();
        Box::pin(async move { Ok(text) })
    }
}

async fn node(bootstrap: Vec<String>, ephemeral: Option<bool>) -> Arc<DhtNode> {
    let config = NodeConfig { bootstrap, host: "127.0.0.1".into(), port: 0, ephemeral };
    Arc::new(DhtNode::spawn(config).await.expect("node starts"))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let scrapes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);

    let first = node(vec![], Some(false)).await;
    let address = first.local_address().await.expect("address");
    let bootstrap = vec![format!("{}:{}", address.host, address.port)];
    let mut testnet = vec![first];
    for _ in 0..2 {
        testnet.push(node(bootstrap.clone(), Some(false)).await);
    }

    let scraper_keys = KeyPair::generate();
    let server_keys = KeyPair::generate();
    let server_node = node(bootstrap.clone(), None).await;
    let server = MetricsServer::listen(
        server_node.clone(),
        ServerConfig::new(server_keys.clone(), vec![scraper_keys.public_key]),
        Arc::new(Fixed("x".repeat(bytes))),
        ignore_events(),
        Arc::new(Stats::new()),
    )
    .await
    .expect("listen");

    let scraper_node = node(bootstrap, None).await;
    let mut config = ScraperConfig::new(scraper_keys, server_keys.public_key);
    config.request_timeout = Duration::from_secs(30);
    let scraper = Scraper::new(scraper_node.clone(), config);
    let started = Instant::now();
    scraper.request_metrics(RequestOptions::default()).await.expect("first scrape");
    println!("first scrape (connect included): {:.1} ms", started.elapsed().as_secs_f64() * 1e3);

    let mut latencies = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let started = Instant::now();
        let reply = scraper.request_metrics(RequestOptions::default()).await.expect("scrape");
        latencies.push(started.elapsed());
        assert!(reply.is_success());
    }
    latencies.sort();
    let at = |p: f64| latencies[((p / 100.0) * latencies.len() as f64) as usize].as_secs_f64() * 1e3;
    println!("{scrapes} scrapes of {bytes} bytes: p50 {:.3} ms, p99 {:.3} ms", at(50.0), at(99.0));

    scraper.close().await;
    server.close().await;
    for node in [server_node, scraper_node].into_iter().chain(testnet) {
        node.destroy().await;
    }
}
