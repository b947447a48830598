//! Hostile DHT peers against the metrics server, on a loopback testnet: a burst of
//! handshakes from random keys sent as raw PEER_HANDSHAKE datagrams (as fast as one socket
//! sends them, faster than any JS client would), while the scraper keeps scraping.

mod common;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{rss_kib, Testnet};
use dht_prom_client_rs::events::{Event, EventSink};
use dht_prom_client_rs::keys::{Key, KeyPair};
use dht_prom_client_rs::node::DhtNode;
use dht_prom_client_rs::scraper::{RequestOptions, Scraper, ScraperConfig};
use dht_prom_client_rs::server::{MetricsFuture, MetricsRequestInfo, MetricsServer, MetricsSource, ServerConfig};
use dht_prom_client_rs::stats::Stats;
use peeroxide_dht::crypto::hash;
use peeroxide_dht::hyperdht_messages::{
    encode_handshake_to_bytes, HandshakeMessage, NoisePayload, SecretStreamInfo, UdxInfo, FIREWALL_UNKNOWN,
    MODE_FROM_CLIENT, PEER_HANDSHAKE,
};
use peeroxide_dht::messages::{encode_request_to_bytes, Ipv4Peer, Request};
use peeroxide_dht::noise::Keypair as NoiseKeypair;
use peeroxide_dht::noise_wrap::NoiseWrap;

const BURST: usize = 1000;

/// The tests measure this process's RSS and descriptors: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Fixed;

impl MetricsSource for Fixed {
    fn metrics(&self, _request: MetricsRequestInfo) -> MetricsFuture {
        Box::pin(async { Ok("up 1\n".to_string()) })
    }
}

/// Every event, for the test to read when it wants.
fn recording_sink() -> (EventSink, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let sink: EventSink = Arc::new(move |event| sink_seen.lock().expect("events").push(event));
    (sink, seen)
}

/// A metrics server on `node` that lets in `scraper` only, with its events and stats.
async fn listen(node: &Arc<DhtNode>, server_keys: &KeyPair, scraper: Key) -> (MetricsServer, Arc<Mutex<Vec<Event>>>, Arc<Stats>) {
    let (sink, events) = recording_sink();
    let stats = Arc::new(Stats::new());
    let config = ServerConfig::new(server_keys.clone(), vec![scraper]);
    let server = MetricsServer::listen(node.clone(), config, Arc::new(Fixed), sink, stats.clone()).await.expect("server listens");
    (server, events, stats)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

fn counter(stats: &Stats, name: &str) -> u64 {
    let text = stats.render();
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

/// A client's first handshake message, as peeroxide's and hyperdht's connect build it,
/// wrapped in the PEER_HANDSHAKE request a client sends straight to the server's node.
fn handshake_datagram(client: &KeyPair, server: Key, to: &Ipv4Peer, tid: u16) -> Vec<u8> {
    let keypair = NoiseKeypair { public_key: client.public_key.0, secret_key: client.secret_key };
    let mut noise = NoiseWrap::new_initiator(keypair, server.0);
    let payload = NoisePayload {
        version: 1,
        error: 0,
        firewall: FIREWALL_UNKNOWN,
        holepunch: None,
        addresses4: vec![],
        addresses6: vec![],
        udx: Some(UdxInfo { version: 1, reusable_socket: false, id: u64::from(tid) + 1, seq: 0 }),
        secret_stream: Some(SecretStreamInfo { version: 1 }),
        relay_through: None,
        relay_addresses: None,
    };
    let message =
        HandshakeMessage { mode: MODE_FROM_CLIENT, noise: noise.send(&payload).expect("noise"), peer_address: None, relay_address: None };
    let request = Request {
        tid,
        to: to.clone(),
        id: None,
        token: None,
        internal: false,
        command: PEER_HANDSHAKE,
        target: Some(hash(server.as_bytes())),
        value: Some(encode_handshake_to_bytes(&message).expect("handshake")),
    };
    encode_request_to_bytes(&request).expect("request")
}

/// Waits up to `limit` for `done`, checking every 20 ms.
async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_handshakes_from_random_keys_opens_nothing_and_every_one_is_accounted_for() {
    let _serial = SERIAL.lock().await;
    let testnet = Testnet::new(3).await;
    let server_node = testnet.node().await;
    let server_keys = KeyPair::generate();
    let scraper_keys = KeyPair::generate();
    let (server, events, stats) = listen(&server_node, &server_keys, scraper_keys.public_key).await;
    let server_address = server_node.local_address().await.expect("address");

    // The scraper connects first and keeps scraping through the burst.
    let scraper_node = testnet.node().await;
    let scraper = Arc::new(Scraper::new(scraper_node.clone(), ScraperConfig::new(scraper_keys, server_keys.public_key)));
    assert!(scraper.request_metrics(RequestOptions::default()).await.expect("first scrape").is_success());
    let datagrams: Vec<(Key, Vec<u8>)> = (0..BURST)
        .map(|i| {
            let keys = KeyPair::generate();
            let datagram = handshake_datagram(&keys, server_keys.public_key, &server_address, i as u16);
            (keys.public_key, datagram)
        })
        .collect();
    let fds_before = open_fds();
    let rss_before = rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let (scrapes, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let scraping = {
        let (scraper, stop, scrapes, failures) = (scraper.clone(), stop.clone(), scrapes.clone(), failures.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let options = RequestOptions { timeout: Some(Duration::from_secs(5)), ..Default::default() };
                match scraper.request_metrics(options).await {
                    Ok(reply) if reply.is_success() => scrapes.fetch_add(1, Ordering::SeqCst),
                    _ => failures.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let attacker = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    let target = format!("{}:{}", server_address.host, server_address.port);
    let burst_started = Instant::now();
    for (_, datagram) in &datagrams {
        attacker.send_to(datagram, &target).expect("send");
    }
    let sent_in = burst_started.elapsed();
    let scrapes_before = scrapes.load(Ordering::SeqCst);
    // Each handshake is either through the Noise step and blocked, or dropped unread.
    let accounted = || counter(&stats, "dht_prom_client_firewall_blocks_total") + counter(&stats, "dht_prom_client_handshakes_dropped_total");
    wait_for(Duration::from_secs(30), "every handshake blocked or dropped", || accounted() >= BURST as u64).await;
    let handled_in = burst_started.elapsed();
    let blocked = counter(&stats, "dht_prom_client_firewall_blocks_total");
    let dropped = counter(&stats, "dht_prom_client_handshakes_dropped_total");
    assert_eq!(blocked + dropped, BURST as u64);

    // A client whose handshake got no answer sends it again: the ones blocked are answered
    // from the cache (not decrypted, not reported again), the dropped ones are now handled
    // (or dropped again, on a slow machine: then another round).
    let mut rounds = 0;
    while counter(&stats, "dht_prom_client_firewall_blocks_total") < BURST as u64 {
        rounds += 1;
        assert!(rounds <= 10, "not every key reported after {rounds} resends");
        for (_, datagram) in &datagrams {
            attacker.send_to(datagram, &target).expect("send");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let mut last = accounted();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = accounted();
            if now == last {
                break;
            }
            last = now;
        }
    }
    wait_for(Duration::from_secs(10), "the scraper served after the burst", || scrapes.load(Ordering::SeqCst) > scrapes_before + 5).await;
    stop.store(true, Ordering::SeqCst);
    scraping.await.expect("scraping task");
    drop(attacker);

    let events = std::mem::take(&mut *events.lock().expect("events"));
    let reported: Vec<Key> = events
        .iter()
        .filter_map(|event| match event {
            Event::FirewallBlock { remote_public_key, .. } => Some(*remote_public_key),
            _ => None,
        })
        .collect();
    let unique: HashSet<Key> = reported.iter().copied().collect();
    let sent: HashSet<Key> = datagrams.iter().map(|(key, _)| *key).collect();
    assert_eq!(reported.len(), BURST, "each key reported exactly once");
    assert_eq!(unique, sent);
    let opened = events.iter().filter(|event| matches!(event, Event::ConnectionOpen { .. })).count();
    assert_eq!(opened, 1, "only the scraper's connection");
    assert_eq!(counter(&stats, "dht_prom_client_open_connections"), 1);
    assert_eq!(failures.load(Ordering::SeqCst), 0, "every scrape during the burst succeeded");

    let fds_after = open_fds();
    let rss_after = rss_kib();
    eprintln!(
        "burst of {BURST}: sent in {sent_in:?}, handled in {handled_in:?}: {} blocked, {dropped} dropped at once; \
         after {rounds} resend(s): {} blocked, {} dropped; {} scrapes during it, 0 failed; fds {fds_before} -> {fds_after}; \
         RSS {rss_before} -> {rss_after} KiB",
        blocked,
        counter(&stats, "dht_prom_client_firewall_blocks_total"),
        counter(&stats, "dht_prom_client_handshakes_dropped_total"),
        scrapes.load(Ordering::SeqCst),
    );
    assert!(fds_after <= fds_before, "file descriptors {fds_before} -> {fds_after}");
    // Generous: the allocator keeps freed memory; a leak of the messages would be larger
    // and grow with BURST (the reply cache once kept ~1.3 KB per handshake, twice).
    assert!(rss_after < rss_before + 32 * 1024, "RSS {rss_before} -> {rss_after} KiB");

    server.close().await;
    scraper.close().await;
    server_node.destroy().await;
    scraper_node.destroy().await;
    testnet.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flood_at_the_dht_node_is_dropped_and_counted_and_memory_stays_flat() {
    let _serial = SERIAL.lock().await;
    let testnet = Testnet::new(3).await;
    let server_node = testnet.node().await;
    let server_keys = KeyPair::generate();
    let scraper_keys = KeyPair::generate();
    let (server, _events, stats) = listen(&server_node, &server_keys, scraper_keys.public_key).await;
    let scraper_node = testnet.node().await;
    let scraper = Scraper::new(scraper_node.clone(), ScraperConfig::new(scraper_keys, server_keys.public_key));
    assert!(scraper.request_metrics(RequestOptions::default()).await.expect("first scrape").is_success());

    // DHT requests of 1 KB for an unknown command, as fast as one thread sends them: more
    // than peeroxide-dht decodes, so without a bound they would queue in memory (measured
    // before the bound: +125 MB in 5 s).
    let address = server_node.local_address().await.expect("address");
    let target = format!("{}:{}", address.host, address.port);
    let datagrams: Vec<Vec<u8>> = (0..256u16)
        .map(|tid| {
            let request = Request {
                tid,
                to: address.clone(),
                id: None,
                token: None,
                internal: false,
                command: 99,
                target: Some([tid as u8; 32]),
                value: Some(vec![0; 1000]),
            };
            encode_request_to_bytes(&request).expect("request")
        })
        .collect();
    let rss_before = rss_kib();
    let flood = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("flood socket");
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(3) {
            for datagram in &datagrams {
                if socket.send_to(datagram, &target).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    });
    let mut scrapes = 0;
    let mut rss_peak = rss_before;
    while !flood.is_finished() {
        let options = RequestOptions { timeout: Some(Duration::from_secs(5)), ..Default::default() };
        assert!(scraper.request_metrics(options).await.expect("scrape during the flood").is_success());
        scrapes += 1;
        rss_peak = rss_peak.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = flood.join().expect("flood thread");
    let dropped = counter(&stats, "dht_prom_client_datagrams_dropped_total");
    eprintln!("flood: {sent} datagrams in 3 s, {dropped} dropped by the DHT sockets, {scrapes} scrapes during it; RSS {rss_before} -> peak {rss_peak} KiB");
    assert!(dropped > 0, "{sent} sent, none dropped");
    assert!(rss_peak < rss_before + 24 * 1024, "RSS {rss_before} -> peak {rss_peak} KiB");

    server.close().await;
    scraper.close().await;
    server_node.destroy().await;
    scraper_node.destroy().await;
    testnet.destroy().await;
}
