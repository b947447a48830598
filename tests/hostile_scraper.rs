//! Hostile traffic from a peer holding the scraper's key (it passes the firewall): unknown
//! methods, batches of them, a huge secret-stream length prefix, 10,000 requests it never
//! reads the replies to, a reader that stops mid-reply, and getMetrics calls that never
//! settle. Each ends in an error reply or a closed connection with bounded memory, and the
//! next connection is served. The peer is a native peeroxide-dht connection whose frames
//! the test writes by hand.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{rss_kib, Testnet};
use dht_prom_client_rs::events::{Event, EventSink};
use dht_prom_client_rs::keys::{Key, KeyPair};
use dht_prom_client_rs::mux::{self, decode_frame, encode_open, Frame, LOCAL_CHANNEL};
use dht_prom_client_rs::node::DhtNode;
use dht_prom_client_rs::rpc::{self, ErrorCode, Response};
use dht_prom_client_rs::scraper::{RequestOptions, Scraper, ScraperConfig};
use dht_prom_client_rs::server::{MetricsFuture, MetricsRequestInfo, MetricsServer, MetricsSource, ServerConfig};
use dht_prom_client_rs::stats::Stats;
use dht_prom_client_rs::wire::{MetricsReply, MetricsRequest};
use libudx::{UdxAsyncStream, UdxSocket};
use peeroxide_dht::secret_stream::SecretStream;
use tokio::io::AsyncWriteExt;

/// The tests measure this process's RSS: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Metrics of a fixed size, or a call that never settles; counts calls made and alive.
struct Source {
    text: String,
    settle: bool,
    calls: Arc<AtomicUsize>,
    alive: Arc<AtomicUsize>,
}

struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MetricsSource for Source {
    fn metrics(&self, _request: MetricsRequestInfo) -> MetricsFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.alive.fetch_add(1, Ordering::SeqCst);
        let alive = Alive(self.alive.clone());
        let (text, settle) = (self.text.clone(), self.settle);
        Box::pin(async move {
            let _alive = alive;
            if !settle {
                std::future::pending::<()>().await;
            }
            Ok(text)
        })
    }
}

struct Setup {
    testnet: Testnet,
    server_node: Arc<DhtNode>,
    server: MetricsServer,
    server_key: Key,
    scraper_keys: KeyPair,
    peer_node: Arc<DhtNode>,
    events: Arc<Mutex<Vec<Event>>>,
    stats: Arc<Stats>,
    calls: Arc<AtomicUsize>,
    alive: Arc<AtomicUsize>,
}

async fn setup(text_bytes: usize, settle: bool) -> Setup {
    setup_with(text_bytes, settle, |_| {}).await
}

async fn setup_with(text_bytes: usize, settle: bool, configure: impl FnOnce(&mut ServerConfig)) -> Setup {
    let testnet = Testnet::new(3).await;
    let server_node = testnet.node().await;
    let server_keys = KeyPair::generate();
    let scraper_keys = KeyPair::generate();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = events.clone();
    let sink: EventSink = Arc::new(move |event| sink_events.lock().expect("events").push(event));
    let stats = Arc::new(Stats::new());
    let (calls, alive) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let source = Source { text: "x".repeat(text_bytes), settle, calls: calls.clone(), alive: alive.clone() };
    let mut config = ServerConfig::new(server_keys.clone(), vec![scraper_keys.public_key]);
    configure(&mut config);
    let server = MetricsServer::listen(
        server_node.clone(),
        config,
        Arc::new(source),
        sink,
        stats.clone(),
    )
    .await
    .expect("server listens");
    let peer_node = testnet.node().await;
    Setup { testnet, server_node, server, server_key: server_keys.public_key, scraper_keys, peer_node, events, stats, calls, alive }
}

impl Setup {
    /// A connection with the scraper's key, its channel opened.
    async fn peer(&self) -> Peer {
        let connection = self
            .peer_node
            .handle()
            .connect(&self.scraper_keys.to_dht(), self.server_key.0, self.peer_node.runtime())
            .await
            .expect("the scraper's key connects");
        let mut peer = Peer { stream: connection.stream, _socket: connection.socket };
        peer.write(&encode_open(LOCAL_CHANNEL, "prometheus-metrics", None, None)).await;
        peer
    }

    /// The native scraper, as a well-behaved second connection.
    async fn scrape_once(&self) -> MetricsReply {
        let scraper = Scraper::new(self.peer_node.clone(), ScraperConfig::new(self.scraper_keys.clone(), self.server_key));
        let reply = scraper.request_metrics(RequestOptions::default()).await.expect("the next connection is served");
        scraper.close().await;
        reply
    }

    /// The error of the `n`-th connection opened (0: the first), once it has closed.
    async fn connection_failure(&self, n: usize, limit: Duration) -> (&'static str, String) {
        let started = Instant::now();
        loop {
            {
                let events = self.events.lock().expect("events");
                let uid = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::ConnectionOpen { uid, .. } => Some(uid.clone()),
                        _ => None,
                    })
                    .nth(n);
                if let Some(uid) = uid {
                    let error = events.iter().find_map(|e| match e {
                        Event::ConnectionError { uid: u, error, .. } if *u == uid => Some(error.clone()),
                        _ => None,
                    });
                    let closed = events.iter().any(|e| matches!(e, Event::ConnectionClose { uid: u, .. } if *u == uid));
                    if let (Some(error), true) = (error, closed) {
                        return (error.code, error.message);
                    }
                }
            }
            assert!(started.elapsed() < limit, "connection #{n} did not fail and close within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn teardown(self) {
        self.server.close().await;
        self.server_node.destroy().await;
        self.peer_node.destroy().await;
        self.testnet.destroy().await;
    }
}

struct Peer {
    stream: SecretStream<UdxAsyncStream>,
    _socket: UdxSocket,
}

impl Peer {
    async fn write(&mut self, frame: &[u8]) {
        self.stream.write(frame).await.expect("write");
    }

    /// Reads responses until one for `id` (within 10 s).
    async fn response(&mut self, id: u64) -> Result<Vec<u8>, rpc::RpcError> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let frame = self.stream.read().await.expect("read").expect("open");
                let Ok(Frame::Messages(messages)) = decode_frame(&frame) else { continue };
                for message in messages {
                    let message = message.expect("well-formed");
                    if message.message_type != rpc::RESPONSE_MESSAGE {
                        continue;
                    }
                    let response = Response::decode(message.payload).expect("response");
                    if response.id == id {
                        return response.result.map(<[u8]>::to_vec);
                    }
                }
            }
        })
        .await
        .expect("a response within 10 s")
    }
}

fn request(id: u64, method: &str) -> Vec<u8> {
    let value = MetricsRequest::default().encode();
    let mut frame = Vec::new();
    mux::write_message_header(&mut frame, LOCAL_CHANNEL, rpc::REQUEST_MESSAGE);
    rpc::Request { id, method, value: &value }.encode_into(&mut frame);
    frame
}

/// A batch frame of whole request frames' messages (each frame less its channel byte).
fn batch(requests: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0, 0, 1];
    for request in requests {
        let item = &request[1..];
        out.push(u8::try_from(item.len()).expect("short items"));
        out.extend_from_slice(item);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_get_error_replies_alone_or_in_a_batch_and_the_connection_goes_on() {
    let setup = setup(64, true).await;
    let mut peer = setup.peer().await;
    peer.write(&request(1, "nope")).await;
    let error = peer.response(1).await.expect_err("an error reply");
    assert_eq!(error.js_code(), Some(ErrorCode::UnknownMethod));
    assert_eq!(error.message, "Unknown method 'nope'");
    // One batch frame of 200 unknown methods: 200 error replies, then a scrape.
    let items: Vec<Vec<u8>> = (2..202).map(|id| request(id, "nope")).collect();
    peer.write(&batch(&items)).await;
    for id in 2..202 {
        assert!(peer.response(id).await.is_err(), "request {id}");
    }
    peer.write(&request(202, "metrics")).await;
    let reply = MetricsReply::decode(&peer.response(202).await.expect("metrics")).expect("reply");
    assert_eq!(reply.text().len(), 64);
    assert!(setup.events.lock().expect("events").iter().all(|e| !matches!(e, Event::ConnectionError { .. })));
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_never_read_close_the_connection_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    // 256 KB a reply: unbounded, 10,000 of them would be 2.5 GB.
    let setup = setup(256 * 1024, true).await;
    let rss_before = rss_kib();
    let mut peer = setup.peer().await;
    // In batches of 100, as fast as the stream takes them; the replies are never read.
    let mut id = 1;
    let mut write_failed = false;
    while id <= 10_000 {
        let items: Vec<Vec<u8>> = (id..id + 100).map(|id| request(id, "metrics")).collect();
        if tokio::time::timeout(Duration::from_secs(5), peer.stream.write(&batch(&items))).await.map_or(true, |r| r.is_err()) {
            write_failed = true; // the server closed the connection under us
            break;
        }
        id += 100;
    }
    let (code, message) = setup.connection_failure(0, Duration::from_secs(30)).await;
    let rss_after = rss_kib();
    eprintln!("10,000 requests never read: {code} {message:?}; writes stopped at id {id} ({write_failed}); RSS {rss_before} -> {rss_after} KiB");
    assert_eq!(code, "ERR_PROTOCOL");
    assert!(message.contains("requests in flight"), "{message}");
    assert!(rss_after < rss_before + 128 * 1024, "RSS {rss_before} -> {rss_after} KiB");
    assert_eq!(setup.scrape_once().await.text().len(), 256 * 1024);
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_mid_reply_is_timed_out_while_others_are_served() {
    // Held while this test's memory grows, not while it waits for the timeout.
    let serial = SERIAL.lock().await;
    // More than the peer's 4 MiB receive window: the reply stalls part way.
    let setup = setup(6 << 20, true).await;
    let mut peer = setup.peer().await;
    peer.write(&request(1, "metrics")).await;
    // The stalled connection does not hold up another.
    assert_eq!(setup.scrape_once().await.text().len(), 6 << 20);
    drop(serial);
    // The window stays shut: no progress for the dead-peer time (15 s) ends it.
    let started = Instant::now();
    let (code, _) = setup.connection_failure(0, Duration::from_secs(40)).await;
    eprintln!("stalled reader: {code} after {:?} more", started.elapsed());
    assert_eq!(code, "ETIMEDOUT");
    assert_eq!(setup.stats.render().lines().find(|l| l.starts_with("dht_prom_client_open_connections")), Some("dht_prom_client_open_connections 0"));
    drop(peer);
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_length_prefix_costs_one_message_and_ends_the_connection() {
    let _serial = SERIAL.lock().await;
    let setup = setup(64, true).await;
    let rss_before = rss_kib();
    let peer = setup.peer().await;
    // Below the secret stream: the largest length its 3-byte prefix can say, then that
    // many bytes that are not a valid ciphertext.
    let mut raw = peer.stream.into_inner();
    raw.write_all(&[0xff, 0xff, 0xff]).await.expect("prefix");
    let chunk = vec![0x5a; 1 << 20];
    for _ in 0..15 {
        raw.write_all(&chunk).await.expect("body");
    }
    raw.write_all(&chunk[..(1 << 20) - 1]).await.expect("body");
    raw.flush().await.expect("flush");
    let (code, message) = setup.connection_failure(0, Duration::from_secs(30)).await;
    let rss_after = rss_kib();
    eprintln!("16 MiB length prefix: {code} {message:?}; RSS {rss_before} -> {rss_after} KiB");
    assert_eq!(code, "ERR_STREAM");
    // This process is both ends: the peer's send buffers, the server's one 16 MiB message
    // and its decryption. A second such message would not add to it.
    assert!(rss_after < rss_before + 96 * 1024, "RSS {rss_before} -> {rss_after} KiB");
    assert_eq!(setup.scrape_once().await.text().len(), 64);
    drop(raw);
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getmetrics_calls_that_never_settle_time_the_scraper_out_and_go_with_their_connection() {
    // 100 calls at once per connection, so that all 1,000 below are really made.
    let setup = setup_with(64, false, |config| config.max_concurrent_requests = 100).await;
    // The scraper times out; its connection stays open with the call pending.
    let mut config = ScraperConfig::new(setup.scraper_keys.clone(), setup.server_key);
    config.request_timeout = Duration::from_millis(500);
    let scraper = Scraper::new(setup.peer_node.clone(), config);
    let err = scraper.request_metrics(RequestOptions::default()).await.expect_err("never settles");
    assert_eq!(err.code(), "TIMEOUT_EXCEEDED");
    // 1,000 more: 10 connections of 100 requests each, closed by the peer.
    for round in 0..10u64 {
        let mut peer = setup.peer().await;
        let items: Vec<Vec<u8>> = (1..=100).map(|id| request(round * 100 + id, "metrics")).collect();
        peer.write(&batch(&items)).await;
        let wait = Instant::now();
        while setup.calls.load(Ordering::SeqCst) < 1 + (round as usize + 1) * 100 {
            assert!(wait.elapsed() < Duration::from_secs(10), "calls did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peer.stream.shutdown().await.expect("end");
        drop(peer);
    }
    assert_eq!(setup.calls.load(Ordering::SeqCst), 1001);
    // Every call of a closed connection is dropped; only the scraper's stays.
    let started = Instant::now();
    while setup.alive.load(Ordering::SeqCst) != 1 {
        assert!(started.elapsed() < Duration::from_secs(20), "{} calls still alive", setup.alive.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(setup.stats.render().contains("dht_prom_client_metrics_pending 1"));
    scraper.close().await;
    let started = Instant::now();
    while setup.alive.load(Ordering::SeqCst) != 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the scraper's call outlived its connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(setup.stats.render().contains("dht_prom_client_metrics_pending 0"));
    setup.teardown().await;
}
