//! The addon's own metrics (prometheus crate), in a registry of their own so that they
//! never mix with the user's metrics unless asked for (`includeOwnMetrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Stats {
    registry: Registry,
    pub scrapes_served: IntCounter,
    pub bytes_sent: IntCounter,
    pub metrics_errors: IntCounter,
    pub firewall_blocks: IntCounter,
    pub handshakes_dropped: IntCounter,
    pub alias_registrations: IntCounterVec,
    pub open_connections: IntGauge,
    pub metrics_pending: IntGauge,
    /// Datagrams in that the DHT's sockets dropped (a flood), read from the sockets.
    datagrams_dropped: SummedCounter,
    /// Datagrams out that neither the kernel nor the socket's backlog had room for.
    datagrams_unsent: SummedCounter,
}

/// A counter kept by others (sockets), summed on render: the sockets count without knowing
/// about metrics, and the registry holds the counts, never the sockets.
struct SummedCounter {
    counter: IntCounter,
    sources: Mutex<Vec<Arc<AtomicU64>>>,
}

impl SummedCounter {
    fn add_source(&self, source: Arc<AtomicU64>) {
        if let Ok(mut sources) = self.sources.lock() {
            if !sources.iter().any(|known| Arc::ptr_eq(known, &source)) {
                sources.push(source);
            }
        }
    }

    fn update(&self) {
        if let Ok(sources) = self.sources.lock() {
            let total: u64 = sources.iter().map(|source| source.load(Ordering::Relaxed)).sum();
            self.counter.inc_by(total.saturating_sub(self.counter.get()));
        }
    }
}

impl Stats {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
            let _ = registry.register(Box::new(counter.clone()));
            counter
        };
        let scrapes_served = counter("dht_prom_client_scrapes_served_total", "Metrics requests answered with success");
        let bytes_sent = counter("dht_prom_client_scrape_bytes_sent_total", "Bytes of successful metrics replies sent");
        let metrics_errors = counter("dht_prom_client_metrics_errors_total", "Metrics requests answered with success:false");
        let firewall_blocks = counter("dht_prom_client_firewall_blocks_total", "Handshakes dropped by the firewall");
        let handshakes_dropped = counter(
            "dht_prom_client_handshakes_dropped_total",
            "Handshakes dropped unread because too many were waiting (a flood)",
        );
        let alias_registrations = IntCounterVec::new(
            Opts::new("dht_prom_client_alias_registrations_total", "Alias registration attempts by result"),
            &["result"],
        )
        .unwrap_or_else(|_| unreachable_metric("alias_registrations"));
        let _ = registry.register(Box::new(alias_registrations.clone()));
        let open_connections = IntGauge::new("dht_prom_client_open_connections", "Scraper connections open now")
            .unwrap_or_else(|_| unreachable_metric("open_connections"));
        let _ = registry.register(Box::new(open_connections.clone()));
        let metrics_pending = IntGauge::new("dht_prom_client_metrics_pending", "getMetrics calls waiting for their result")
            .unwrap_or_else(|_| unreachable_metric("metrics_pending"));
        let _ = registry.register(Box::new(metrics_pending.clone()));
        let summed = |name: &str, help: &str| SummedCounter { counter: counter(name, help), sources: Mutex::new(Vec::new()) };
        let datagrams_dropped = summed(
            "dht_prom_client_datagrams_dropped_total",
            "DHT datagrams dropped because they came faster than the node takes them (a flood)",
        );
        let datagrams_unsent = summed(
            "dht_prom_client_datagrams_unsent_total",
            "Datagrams not sent because the socket's send buffer and backlog were full",
        );
        Self {
            registry,
            scrapes_served,
            bytes_sent,
            metrics_errors,
            firewall_blocks,
            handshakes_dropped,
            alias_registrations,
            open_connections,
            metrics_pending,
            datagrams_dropped,
            datagrams_unsent,
        }
    }

    /// Counts the incoming drops of one more DHT socket (a counter the socket keeps).
    pub fn add_datagram_drop_source(&self, source: Arc<AtomicU64>) {
        self.datagrams_dropped.add_source(source);
    }

    /// Counts the unsent datagrams of one more socket (a counter the socket keeps).
    pub fn add_datagram_unsent_source(&self, source: Arc<AtomicU64>) {
        self.datagrams_unsent.add_source(source);
    }

    /// Prometheus text exposition of every metric above.
    pub fn render(&self) -> String {
        self.datagrams_dropped.update();
        self.datagrams_unsent.update();
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// The names and helps above are constants that the prometheus crate accepts; failing
/// here is a bug in this file, caught by its tests, never something input can cause.
fn unreachable_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let stats = Stats::new();
        stats.scrapes_served.inc();
        stats.alias_registrations.with_label_values(&["success"]).inc();
        stats.open_connections.set(2);
        let text = stats.render();
        for name in [
            "dht_prom_client_scrapes_served_total 1",
            "dht_prom_client_scrape_bytes_sent_total 0",
            "dht_prom_client_metrics_errors_total 0",
            "dht_prom_client_firewall_blocks_total 0",
            "dht_prom_client_handshakes_dropped_total 0",
            "dht_prom_client_metrics_pending 0",
            "dht_prom_client_datagrams_dropped_total 0",
            "dht_prom_client_datagrams_unsent_total 0",
            "dht_prom_client_alias_registrations_total{result=\"success\"} 1",
            "dht_prom_client_open_connections 2",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn dropped_datagrams_are_read_from_the_sockets_counters() {
        let stats = Stats::new();
        let (a, b) = (Arc::new(AtomicU64::new(3)), Arc::new(AtomicU64::new(4)));
        stats.add_datagram_drop_source(a.clone());
        stats.add_datagram_drop_source(b.clone());
        stats.add_datagram_drop_source(a.clone()); // the same socket twice counts once
        assert!(stats.render().contains("dht_prom_client_datagrams_dropped_total 7"));
        a.fetch_add(10, Ordering::Relaxed);
        assert!(stats.render().contains("dht_prom_client_datagrams_dropped_total 17"));

        stats.add_datagram_unsent_source(b);
        assert!(stats.render().contains("dht_prom_client_datagrams_unsent_total 4"), "a counter of its own");
    }
}
