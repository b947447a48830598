//! Alias registration: tell each scraper "alias -> my metrics key" over protomux-rpc
//! `register-alias`/`alias`, right after the server listens and every interval after.
//!
//! Unlike the reference, which fires on a plain setInterval, an attempt still running
//! when the next is due is not doubled: the schedule waits for it, then skips the ticks
//! it missed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::events::{Event, EventSink};
use crate::keys::{Key, KeyPair};
use crate::node::DhtNode;
use crate::redial::OnFailure;
use crate::rpc_client::{ClientError, RpcConnection, RpcLink};
use crate::server::closed;
use crate::stats::Stats;
use crate::tasks::join_all_within;
use crate::wire::{AliasOutcome, AliasRequest, AliasResponse};

pub const PROTOCOL: &str = "register-alias";
pub const METHOD: &str = "alias";

/// Why one registration failed; becomes the JS Error of `register-alias-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasError {
    /// None for a refusal by the scraper (`Unauthorised`), as the reference's plain Error.
    pub code: Option<String>,
    pub message: String,
}

impl From<ClientError> for AliasError {
    fn from(err: ClientError) -> Self {
        AliasError { code: Some(err.code().to_string()), message: err.to_string() }
    }
}

pub type AliasFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, AliasError>> + Send>>;

/// How an encoded `alias` request reaches a scraper and its response comes back.
pub trait AliasTransport: Send + Sync + 'static {
    fn request(&self, scraper: Key, body: Vec<u8>, timeout: Duration) -> AliasFuture;
    /// The schedule has nothing to send to `scraper` for a while: let go of its connection.
    fn release(&self, _scraper: Key) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

#[derive(Clone)]
pub struct AliasConfig {
    pub scrapers: Vec<Key>,
    pub secret: [u8; 32],
    pub alias: String,
    /// The metrics server's public key, the alias's target.
    pub target_public_key: Key,
    pub hostname: String,
    pub service: String,
    pub interval: Duration,
    /// Bounds the whole attempt, connecting included (protomux-rpc-client: 10 s).
    pub request_timeout: Duration,
    /// A connection unused this long is closed (protomux-rpc-client's GC: 60 s).
    pub idle_timeout: Duration,
}

// Hand-written so the shared secret never ends up in a log (as `AliasRequest`'s).
impl std::fmt::Debug for AliasConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasConfig")
            .field("scrapers", &self.scrapers)
            .field("secret", &"<redacted>")
            .field("alias", &self.alias)
            .field("target_public_key", &self.target_public_key)
            .field("hostname", &self.hostname)
            .field("service", &self.service)
            .field("interval", &self.interval)
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Runs the schedule for every scraper until `close()`.
pub struct AliasRegistrar {
    shutdown: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
}

impl AliasRegistrar {
    pub fn start(config: AliasConfig, transport: Arc<dyn AliasTransport>, events: EventSink, stats: Arc<Stats>) -> Self {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let config = Arc::new(config);
        let mut tasks = JoinSet::new();
        for scraper in config.scrapers.clone() {
            let schedule = Schedule {
                scraper,
                config: config.clone(),
                transport: transport.clone(),
                events: events.clone(),
                stats: stats.clone(),
            };
            tasks.spawn(schedule.run(shutdown_rx.clone()));
        }
        Self { shutdown, tasks: Mutex::new(tasks) }
    }

    /// Stops at once, an attempt in flight included; idempotent.
    pub async fn close(&self) {
        self.shutdown.send_replace(true);
        join_all_within(&mut *self.tasks.lock().await, Duration::from_millis(500)).await;
    }
}

/// How much longer than its own timeout a transport gets before the registrar gives up on it.
const TRANSPORT_BACKSTOP: Duration = Duration::from_secs(1);

struct Schedule {
    scraper: Key,
    config: Arc<AliasConfig>,
    transport: Arc<dyn AliasTransport>,
    events: EventSink,
    stats: Arc<Stats>,
}

impl Schedule {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.config.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut idle_deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = sleep_until_some(idle_deadline) => {
                    idle_deadline = None;
                    self.transport.release(self.scraper).await;
                    continue;
                }
                _ = closed(&mut shutdown) => break,
            }
            tokio::select! {
                _ = self.attempt() => {}
                _ = closed(&mut shutdown) => break,
            }
            idle_deadline = Some(Instant::now() + self.config.idle_timeout);
        }
        self.transport.release(self.scraper).await;
    }

    async fn attempt(&self) {
        let config = &self.config;
        (self.events)(Event::AliasAttempt {
            scraper_public_key: self.scraper,
            alias: config.alias.clone(),
            target_public_key: config.target_public_key,
            hostname: config.hostname.clone(),
            service: config.service.clone(),
        });
        let request = AliasRequest::new(
            config.secret,
            config.alias.clone(),
            config.target_public_key.0,
            config.hostname.clone(),
            config.service.clone(),
        );
        let body = request.encode();
        let timeout = config.request_timeout;
        // The transport bounds the attempt itself, with the error the reference gives
        // (REQUEST_TIMEOUT: no connection in time; TIMEOUT_EXCEEDED: no reply). This bound,
        // a little later, only catches a transport that does not: at the same instant it
        // would race the transport's own answer and sometimes win.
        let backstop = timeout + TRANSPORT_BACKSTOP;
        let outcome = match tokio::time::timeout(backstop, self.transport.request(self.scraper, body, timeout)).await {
            Ok(Ok(response)) => match AliasResponse::decode(&response) {
                Ok(AliasResponse { outcome: AliasOutcome::Success { updated }, .. }) => Ok(updated),
                Ok(AliasResponse { outcome: AliasOutcome::Failure { error_message }, .. }) => {
                    Err(AliasError { code: None, message: error_message })
                }
                Err(err) => Err(AliasError::from(ClientError::Decode(err))),
            },
            Ok(Err(err)) => Err(err),
            Err(_) => Err(AliasError::from(ClientError::Timeout(duration_ms(timeout)))),
        };
        match outcome {
            Ok(updated) => {
                self.stats.alias_registrations.with_label_values(&["success"]).inc();
                (self.events)(Event::RegisterAliasSuccess { scraper_public_key: self.scraper, updated });
            }
            Err(error) => {
                self.stats.alias_registrations.with_label_values(&["error"]).inc();
                (self.events)(Event::RegisterAliasError { scraper_public_key: self.scraper, error });
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Registration over the client's own DHT node, with a key pair of its own (the
/// reference warns against reusing the server's), one warm connection per scraper.
pub struct NativeAliasTransport {
    node: Arc<DhtNode>,
    key_pair: KeyPair,
    links: std::sync::Mutex<HashMap<Key, Arc<RpcLink>>>,
}

const KEEP_ALIVE: Duration = Duration::from_secs(5);

impl NativeAliasTransport {
    pub fn new(node: Arc<DhtNode>) -> Self {
        Self { node, key_pair: KeyPair::generate(), links: std::sync::Mutex::new(HashMap::new()) }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<RpcLink>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scraper's connection, waiting at most `timeout`; the dial goes on after that
    /// and retries with protomux-rpc-client's backoff, as its `connect()` does, so a slow
    /// punch still serves the next registration.
    async fn connection(&self, scraper: Key, timeout: Duration) -> Result<Arc<RpcConnection>, ClientError> {
        let link = self
            .links()
            .entry(scraper)
            .or_insert_with(|| {
                let (node, key_pair) = (self.node.clone(), self.key_pair.clone());
                Arc::new(RpcLink::new(node, key_pair, scraper, PROTOCOL, KEEP_ALIVE, OnFailure::Backoff))
            })
            .clone();
        link.connection(timeout).await
    }
}

impl AliasTransport for Arc<NativeAliasTransport> {
    fn request(&self, scraper: Key, body: Vec<u8>, timeout: Duration) -> AliasFuture {
        let this = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let connection = this.connection(scraper, timeout).await.map_err(|err| match err {
                // protomux-rpc-client reports a target it could not reach in time this way.
                ClientError::ConnectTimeout { .. } => AliasError {
                    code: Some("REQUEST_TIMEOUT".into()),
                    message: format!("Request timed out after {} ms", duration_ms(timeout)),
                },
                other => AliasError::from(other),
            })?;
            let left = timeout.saturating_sub(started.elapsed());
            connection.request(METHOD, &body, left).await.map_err(AliasError::from)
        })
    }

    fn release(&self, scraper: Key) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let link = this.links().remove(&scraper);
            if let Some(link) = link {
                link.close().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers after `delay`, counting calls and the most at once.
    struct SlowTransport {
        delay: Duration,
        calls: AtomicUsize,
        running: AtomicUsize,
        max_running: AtomicUsize,
        releases: AtomicUsize,
    }

    impl AliasTransport for Arc<SlowTransport> {
        fn request(&self, _scraper: Key, _body: Vec<u8>, _timeout: Duration) -> AliasFuture {
            let this = self.clone();
            Box::pin(async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let now = this.running.fetch_add(1, Ordering::SeqCst) + 1;
                this.max_running.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(this.delay).await;
                this.running.fetch_sub(1, Ordering::SeqCst);
                Ok(AliasResponse::success(true).encode())
            })
        }

        fn release(&self, _scraper: Key) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            self.releases.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        }
    }

    fn transport(delay: Duration) -> Arc<SlowTransport> {
        Arc::new(SlowTransport {
            delay,
            calls: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            releases: AtomicUsize::new(0),
        })
    }

    fn config(interval: Duration, scrapers: usize) -> AliasConfig {
        AliasConfig {
            scrapers: (0..scrapers).map(|i| Key([i as u8; 32])).collect(),
            secret: [9; 32],
            alias: "alias".into(),
            target_public_key: Key([7; 32]),
            hostname: "host".into(),
            service: "svc".into(),
            interval,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn recording_sink() -> (EventSink, Arc<std::sync::Mutex<Vec<Event>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sink: EventSink = Arc::new(move |event| {
            if let Ok(mut seen) = sink_seen.lock() {
                seen.push(event);
            }
        });
        (sink, seen)
    }

    #[test]
    fn config_debug_hides_the_secret() {
        let text = format!("{:?}", config(Duration::from_secs(1), 1));
        assert!(text.contains("secret: \"<redacted>\""), "{text}");
        assert!(text.contains("alias: \"alias\""), "{text}");
        // The derived Debug printed the secret as `[9, 9, ...]`; no spelling of it may appear.
        for spelling in ["9, 9, 9", "090909", &Key([9; 32]).to_z32()] {
            assert!(!text.contains(spelling), "{spelling} in {text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_attempt_at_once_then_every_interval() {
        let transport = transport(Duration::from_millis(10));
        let (sink, seen) = recording_sink();
        let registrar =
            AliasRegistrar::start(config(Duration::from_secs(60), 1), Arc::new(transport.clone()), sink, Arc::new(Stats::new()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(transport.calls.load(Ordering::SeqCst), 1, "first attempt right away");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(transport.calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(transport.calls.load(Ordering::SeqCst), 4);
        registrar.close().await;
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let successes = seen.iter().filter(|e| matches!(e, Event::RegisterAliasSuccess { updated: true, .. })).count();
        let attempts = seen.iter().filter(|e| matches!(e, Event::AliasAttempt { .. })).count();
        assert_eq!((attempts, successes), (4, 4));
        assert!(matches!(seen.first(), Some(Event::AliasAttempt { .. })), "the attempt is announced before it runs");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_is_not_doubled() {
        // Each attempt takes 2.5 intervals: the reference would have three in flight.
        let transport = transport(Duration::from_millis(2500));
        let (sink, _seen) = recording_sink();
        let registrar =
            AliasRegistrar::start(config(Duration::from_secs(1), 1), Arc::new(transport.clone()), sink, Arc::new(Stats::new()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        registrar.close().await;
        assert_eq!(transport.max_running.load(Ordering::SeqCst), 1);
        let calls = transport.calls.load(Ordering::SeqCst);
        assert!((3..=5).contains(&calls), "{calls} attempts in 10 s of 2.5 s each");
    }

    #[tokio::test(start_paused = true)]
    async fn each_scraper_has_its_own_schedule_and_idle_connections_are_released() {
        let transport = transport(Duration::from_millis(10));
        let (sink, seen) = recording_sink();
        let registrar =
            AliasRegistrar::start(config(Duration::from_secs(3600), 2), Arc::new(transport.clone()), sink, Arc::new(Stats::new()));
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(transport.calls.load(Ordering::SeqCst), 2);
        assert_eq!(transport.releases.load(Ordering::SeqCst), 2, "idle for 60 s: released");
        registrar.close().await;
        let scrapers: std::collections::HashSet<_> = seen
            .lock()
            .map(|s| {
                s.iter()
                    .filter_map(|e| match e {
                        Event::RegisterAliasSuccess { scraper_public_key, .. } => Some(*scraper_public_key),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(scrapers.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn close_stops_an_attempt_in_flight() {
        let transport = transport(Duration::from_secs(3600));
        let (sink, seen) = recording_sink();
        let registrar =
            AliasRegistrar::start(config(Duration::from_secs(60), 1), Arc::new(transport.clone()), sink, Arc::new(Stats::new()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(transport.running.load(Ordering::SeqCst), 1);
        let started = Instant::now();
        registrar.close().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(transport.calls.load(Ordering::SeqCst), 1);
        let outcomes = seen.lock().map(|s| s.iter().filter(|e| !matches!(e, Event::AliasAttempt { .. })).count());
        assert_eq!(outcomes.ok(), Some(0), "no outcome event for the cancelled attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_and_timeouts_become_errors() {
        struct Refusing;
        impl AliasTransport for Refusing {
            fn request(&self, _scraper: Key, _body: Vec<u8>, _timeout: Duration) -> AliasFuture {
                Box::pin(async { Ok(AliasResponse::failure("Unauthorised").encode()) })
            }
        }
        struct Hanging;
        impl AliasTransport for Hanging {
            fn request(&self, _scraper: Key, _body: Vec<u8>, _timeout: Duration) -> AliasFuture {
                Box::pin(std::future::pending())
            }
        }
        /// Gives up with its own error at its timeout, a moment after the registrar's call
        /// started (as a real one does: its clock starts later).
        struct Unreachable;
        impl AliasTransport for Unreachable {
            fn request(&self, _scraper: Key, _body: Vec<u8>, timeout: Duration) -> AliasFuture {
                Box::pin(async move {
                    tokio::time::sleep(timeout + Duration::from_millis(1)).await;
                    Err(AliasError { code: Some("REQUEST_TIMEOUT".into()), message: "Request timed out after 10000 ms".into() })
                })
            }
        }
        let unreachable = AliasError { code: Some("REQUEST_TIMEOUT".into()), message: "Request timed out after 10000 ms".into() };
        for (transport, expected) in [
            (Arc::new(Refusing) as Arc<dyn AliasTransport>, AliasError { code: None, message: "Unauthorised".into() }),
            // The transport's own error, not the registrar's bound.
            (Arc::new(Unreachable) as Arc<dyn AliasTransport>, unreachable),
            (
                Arc::new(Hanging) as Arc<dyn AliasTransport>,
                AliasError { code: Some("TIMEOUT_EXCEEDED".into()), message: "timeout of 10000ms exceeded".into() },
            ),
        ] {
            let (sink, seen) = recording_sink();
            let registrar = AliasRegistrar::start(config(Duration::from_secs(3600), 1), transport, sink, Arc::new(Stats::new()));
            // The backstop gives up on the hanging transport at 10 + 1 s.
            tokio::time::sleep(Duration::from_secs(12)).await;
            registrar.close().await;
            let errors: Vec<AliasError> = seen
                .lock()
                .map(|s| {
                    s.iter()
                        .filter_map(|e| match e {
                            Event::RegisterAliasError { error, .. } => Some(error.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(errors, vec![expected]);
        }
    }
}
