//! The metrics server scraped by the native (Rust) scraper on a loopback testnet of
//! peeroxide-dht nodes: no napi, no JS.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Testnet;
use dht_prom_client_rs::events::{Event, EventSink};
use dht_prom_client_rs::keys::KeyPair;
use dht_prom_client_rs::node::DhtNode;
use dht_prom_client_rs::rpc_client::ClientError;
use dht_prom_client_rs::scraper::{RequestOptions, Scraper, ScraperConfig};
use dht_prom_client_rs::server::{MetricsFuture, MetricsRequestInfo, MetricsServer, MetricsSource, ServerConfig};
use dht_prom_client_rs::stats::Stats;
use dht_prom_client_rs::wire::MetricsReply;
use tokio::sync::mpsc;

/// Answers `metrics <n>` with a call counter, or fails when asked to.
struct CountingSource {
    calls: AtomicUsize,
    fail: bool,
}

impl MetricsSource for CountingSource {
    fn metrics(&self, _request: MetricsRequestInfo) -> MetricsFuture {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = self.fail;
        Box::pin(async move { if fail { Err("broken collector".into()) } else { Ok(format!("metrics {n}\n")) } })
    }
}

fn channel_sink() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Mutex::new(tx);
    let sink: EventSink = Arc::new(move |event| {
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(event);
        }
    });
    (sink, rx)
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("event channel open")
}

/// A loopback testnet with a metrics server on one node, letting in `scraper_keys`, and a
/// node of its own for the scraper.
struct Lab {
    testnet: Testnet,
    server_node: Arc<DhtNode>,
    scraper_node: Arc<DhtNode>,
    server: MetricsServer,
    server_keys: KeyPair,
    scraper_keys: KeyPair,
    events: mpsc::UnboundedReceiver<Event>,
    stats: Arc<Stats>,
}

impl Lab {
    async fn start(source: Arc<dyn MetricsSource>) -> Self {
        let testnet = Testnet::new(3).await;
        let server_node = testnet.node().await;
        let (scraper_keys, server_keys) = (KeyPair::generate(), KeyPair::generate());
        let (sink, events) = channel_sink();
        let stats = Arc::new(Stats::new());
        let server = MetricsServer::listen(
            server_node.clone(),
            ServerConfig::new(server_keys.clone(), vec![scraper_keys.public_key]),
            source,
            sink,
            stats.clone(),
        )
        .await
        .expect("server listens");
        let scraper_node = testnet.node().await;
        Self { testnet, server_node, scraper_node, server, server_keys, scraper_keys, events, stats }
    }

    /// A scraper's settings for this lab's server, with the allowed key.
    fn scraper_config(&self) -> ScraperConfig {
        ScraperConfig::new(self.scraper_keys.clone(), self.server_keys.public_key)
    }

    async fn destroy(self) {
        self.server.close().await;
        self.server_node.destroy().await;
        self.scraper_node.destroy().await;
        self.testnet.destroy().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_scraper_scrapes_and_strangers_are_blocked() {
    let source = Arc::new(CountingSource { calls: AtomicUsize::new(0), fail: false });
    let mut lab = Lab::start(source.clone()).await;
    assert_eq!(lab.server.public_key(), lab.server_keys.public_key);

    let scraper = Scraper::new(lab.scraper_node.clone(), lab.scraper_config());
    for i in 0..20 {
        let reply = scraper.request_metrics(RequestOptions::default()).await.expect("scrape");
        assert_eq!(reply, MetricsReply::Success { metrics: format!("metrics {i}\n") });
    }
    let Event::ConnectionOpen { remote_public_key, remote_address, .. } = next_event(&mut lab.events).await else {
        panic!("connection-open first")
    };
    assert_eq!(remote_public_key, lab.scraper_keys.public_key);
    assert!(remote_address.starts_with("127.0.0.1:"), "{remote_address}");

    // Version checks answer DECODE_ERROR without asking the source.
    let calls = source.calls.load(Ordering::SeqCst);
    let err = scraper
        .request_metrics(RequestOptions { major: Some(1000), ..Default::default() })
        .await
        .expect_err("major 1000 is refused");
    assert_eq!(err.code(), "DECODE_ERROR");
    assert_eq!(source.calls.load(Ordering::SeqCst), calls);

    // Another key is dropped at the handshake and reported.
    let stranger_keys = KeyPair::generate();
    let mut stranger_config = ScraperConfig::new(stranger_keys.clone(), lab.server_keys.public_key);
    stranger_config.connect_timeout = Duration::from_secs(8);
    let stranger = Scraper::new(lab.scraper_node.clone(), stranger_config);
    let err = stranger.request_metrics(RequestOptions::default()).await.expect_err("firewalled");
    assert!(matches!(err, ClientError::Connect { .. } | ClientError::ConnectTimeout { .. }), "{err:?}");
    let blocked = loop {
        if let Event::FirewallBlock { remote_public_key, address, payload } = next_event(&mut lab.events).await {
            break (remote_public_key, address, payload);
        }
    };
    assert_eq!(blocked.0, stranger_keys.public_key);
    assert!(blocked.1.starts_with("127.0.0.1:"), "{}", blocked.1);
    assert_eq!(blocked.2.version, 1);
    assert!(lab.stats.render().contains("dht_prom_client_firewall_blocks_total"));

    // The scraper is still served on its connection.
    assert!(scraper.request_metrics(RequestOptions::default()).await.expect("scrape").is_success());

    // close() ends the connection (the scraper sees it) and returns promptly.
    let started = std::time::Instant::now();
    lab.server.close().await;
    assert!(started.elapsed() < Duration::from_secs(4), "close took {:?}", started.elapsed());
    let closed = loop {
        if let Event::ConnectionClose { remote_public_key, .. } = next_event(&mut lab.events).await {
            break remote_public_key;
        }
    };
    assert_eq!(closed, lab.scraper_keys.public_key);
    let err = scraper
        .request_metrics(RequestOptions { timeout: Some(Duration::from_secs(3)), ..Default::default() })
        .await
        .expect_err("server is closed");
    assert!(!matches!(err, ClientError::Remote(_)), "{err:?}");

    scraper.close().await;
    stranger.close().await;
    lab.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_gives_success_false_with_the_uid() {
    let mut lab = Lab::start(Arc::new(CountingSource { calls: AtomicUsize::new(0), fail: true })).await;
    let scraper = Scraper::new(lab.scraper_node.clone(), lab.scraper_config());
    let reply = scraper.request_metrics(RequestOptions::default()).await.expect("scrape");
    let Event::ConnectionOpen { uid, .. } = next_event(&mut lab.events).await else { panic!("connection-open") };
    assert_eq!(reply, MetricsReply::Failure { error_message: format!("Failed to obtain metrics (uid {uid})") });

    scraper.close().await;
    lab.destroy().await;
}

/// Returns a text that, with any headers, is larger than one secret-stream message.
struct OversizedSource;

impl MetricsSource for OversizedSource {
    fn metrics(&self, _request: MetricsRequestInfo) -> MetricsFuture {
        Box::pin(async { Ok("x".repeat(dht_prom_client_rs::transport::MAX_FRAME)) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_too_large_for_one_reply_give_success_false_not_a_broken_stream() {
    let lab = Lab::start(Arc::new(OversizedSource)).await;
    let scraper = Scraper::new(lab.scraper_node.clone(), lab.scraper_config());
    for _ in 0..2 {
        let reply = scraper.request_metrics(RequestOptions::default()).await.expect("a reply, on a live connection");
        let MetricsReply::Failure { error_message } = reply else { panic!("success:false expected") };
        assert!(error_message.starts_with("Metrics too large to send"), "{error_message}");
    }
    assert!(lab.stats.render().contains("dht_prom_client_metrics_errors_total 2"));

    scraper.close().await;
    lab.destroy().await;
}

// One thread: a request that does not wait gives up at the runtime's first timer turn,
// and a dial needs several turns (lookup, handshake, stream), so it cannot be done by then.
// With worker threads it could (seen with both cores busy).
#[tokio::test(flavor = "current_thread")]
async fn a_dial_that_outlasts_its_request_goes_on_and_serves_the_next_one() {
    // A punch through a randomizing NAT can take longer than a request waits; dropping the
    // dial with the request would start the punch over each time. Here a request that does
    // not wait at all stands in for that.
    let mut lab = Lab::start(Arc::new(CountingSource { calls: AtomicUsize::new(0), fail: false })).await;
    let mut config = lab.scraper_config();
    config.connect_timeout = Duration::ZERO;
    let scraper = Scraper::new(lab.scraper_node.clone(), config);

    let err = scraper.request_metrics(RequestOptions::default()).await.expect_err("no wait for a connection");
    assert!(matches!(err, ClientError::ConnectTimeout { .. }), "{err:?}");
    assert_eq!(err.code(), "REQUEST_TIMEOUT");
    // The dial went on after the request gave up, and reached the server.
    let Event::ConnectionOpen { remote_public_key, .. } = next_event(&mut lab.events).await else {
        panic!("connection-open first")
    };
    assert_eq!(remote_public_key, lab.scraper_keys.public_key);
    // Our side of it may finish a moment after the server's; each try does not wait either.
    let mut reply = None;
    for _ in 0..200 {
        match scraper.request_metrics(RequestOptions::default()).await {
            Ok(got) => {
                reply = Some(got);
                break;
            }
            Err(ClientError::ConnectTimeout { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(reply, Some(MetricsReply::Success { metrics: "metrics 0\n".into() }), "served within 2 s");
    while let Ok(event) = lab.events.try_recv() {
        assert!(!matches!(event, Event::ConnectionOpen { .. }), "one dial served both requests: {event:?}");
    }

    scraper.close().await;
    lab.destroy().await;
}
