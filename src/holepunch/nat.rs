//! A socket's NAT, classified from the addresses DHT nodes saw it at (hyperdht's
//! `lib/nat.js` rules): the same address from three nodes is a consistent NAT (one
//! mapping for every destination), a new port per node a randomizing one.

use std::collections::HashMap;
use std::net::SocketAddr;

use peeroxide_dht::hyperdht_messages::{FIREWALL_CONSISTENT, FIREWALL_OPEN, FIREWALL_RANDOM, FIREWALL_UNKNOWN};
use peeroxide_dht::messages::Ipv4Peer;
use tokio::sync::watch;

/// Samples after which the analysis is final even without a consistent result.
pub const MIN_SAMPLES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sample {
    host: String,
    port: u16,
    hits: u32,
}

pub struct Nat {
    /// The node is not known to be reachable unsolicited (hyperdht's `dht.firewalled`).
    firewalled: bool,
    /// By host only (port 0), and by host and port; most hits first.
    by_host: Vec<Sample>,
    by_addr: Vec<Sample>,
    /// Nodes already sampled: one sample each.
    sampled_from: HashMap<SocketAddr, ()>,
    pub sampled: usize,
    pub firewall: u64,
    /// What to tell a peer to punch to: `None` until known; a randomizing NAT's port is 0.
    pub addresses: Option<Vec<Ipv4Peer>>,
    frozen: bool,
    min_samples: usize,
    settled: watch::Sender<bool>,
}

impl Nat {
    pub fn new(firewalled: bool) -> Self {
        Self {
            firewalled,
            by_host: Vec::new(),
            by_addr: Vec::new(),
            sampled_from: HashMap::new(),
            sampled: 0,
            firewall: if firewalled { FIREWALL_UNKNOWN } else { FIREWALL_OPEN },
            addresses: None,
            frozen: false,
            min_samples: MIN_SAMPLES,
            settled: watch::channel(false).0,
        }
    }

    /// Resolves once the analysis has a result (consistent or open at once, otherwise
    /// after enough samples), or sampling gave up.
    pub fn settled(&self) -> watch::Receiver<bool> {
        self.settled.subscribe()
    }

    pub fn is_settled(&self) -> bool {
        *self.settled.borrow()
    }

    /// Sampling is over (all pings answered or timed out): analyze with what there is.
    pub fn give_up(&mut self) {
        self.settled.send_replace(true);
    }

    pub fn has_sampled(&self, node: &SocketAddr) -> bool {
        self.sampled_from.contains_key(node)
    }

    /// Stops updating the classification: it was told to the peer.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// `addr`: where the DHT node at `from` saw this socket.
    pub fn add(&mut self, addr: &Ipv4Peer, from: SocketAddr) {
        if self.sampled_from.insert(from, ()).is_some() {
            return;
        }
        add_sample(&mut self.by_host, &addr.host, 0);
        add_sample(&mut self.by_addr, &addr.host, addr.port);
        self.sampled += 1;
        if (self.sampled >= 3 || !self.firewalled) && !self.frozen {
            self.update();
        }
        if self.firewall == FIREWALL_CONSISTENT || self.firewall == FIREWALL_OPEN || self.sampled >= self.min_samples {
            self.settled.send_replace(true);
        }
    }

    fn update(&mut self) {
        if self.firewalled && self.firewall == FIREWALL_OPEN {
            self.firewall = FIREWALL_UNKNOWN;
        }
        self.update_firewall();
        self.update_addresses();
    }

    fn update_firewall(&mut self) {
        if !self.firewalled {
            self.firewall = FIREWALL_OPEN;
            return;
        }
        if self.sampled < 3 {
            return;
        }
        let max = self.by_addr.first().map_or(0, |s| s.hits);
        if max >= 3 {
            self.firewall = FIREWALL_CONSISTENT;
        } else if max == 1 {
            self.firewall = FIREWALL_RANDOM;
        } else if self.by_host.len() == 1 && self.sampled > 3 {
            // Two hits on one address, and at least two misses on the same host.
            self.firewall = FIREWALL_RANDOM;
        } else if self.by_host.len() > 1 && self.by_addr.get(1).is_some_and(|s| s.hits > 1) {
            // Two hits each on two hosts (a node with two addresses): consistent.
            self.firewall = FIREWALL_CONSISTENT;
        } else if self.sampled > 4 {
            self.firewall = FIREWALL_RANDOM;
        }
    }

    fn update_addresses(&mut self) {
        let peer = |s: &Sample| Ipv4Peer { host: s.host.clone(), port: s.port };
        match self.firewall {
            FIREWALL_UNKNOWN => self.addresses = None,
            FIREWALL_RANDOM => self.addresses = self.by_host.first().map(|s| vec![peer(s)]),
            FIREWALL_CONSISTENT => {
                let mut out = Vec::new();
                for s in &self.by_addr {
                    if s.hits >= 2 || out.len() < 2 {
                        out.push(peer(s));
                    }
                }
                self.addresses = Some(out);
            }
            // An open node's punch addresses stay as they were (hyperdht leaves them).
            _ => {}
        }
    }
}

/// Counts a hit and keeps the list ordered by hits, earlier samples first among equals.
fn add_sample(samples: &mut Vec<Sample>, host: &str, port: u16) {
    if let Some(mut i) = samples.iter().position(|s| s.host == host && s.port == port) {
        samples[i].hits += 1;
        while i > 0 && samples[i - 1].hits < samples[i].hits {
            samples.swap(i - 1, i);
            i -= 1;
        }
        return;
    }
    samples.push(Sample { host: host.to_string(), port, hits: 1 });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, port: u16) -> Ipv4Peer {
        Ipv4Peer { host: host.into(), port }
    }

    fn node(i: u8) -> SocketAddr {
        SocketAddr::from(([11, 0, 0, i], 49737))
    }

    #[test]
    fn one_mapping_for_every_node_is_consistent() {
        let mut nat = Nat::new(true);
        nat.add(&at("11.0.0.31", 5000), node(11));
        nat.add(&at("11.0.0.31", 5000), node(12));
        assert_eq!((nat.firewall, nat.is_settled()), (FIREWALL_UNKNOWN, false));
        nat.add(&at("11.0.0.31", 5000), node(12)); // one sample per node
        assert_eq!(nat.sampled, 2);
        nat.add(&at("11.0.0.31", 5000), node(13));
        assert_eq!(nat.firewall, FIREWALL_CONSISTENT);
        assert!(nat.is_settled());
        assert_eq!(nat.addresses, Some(vec![at("11.0.0.31", 5000)]));
    }

    #[test]
    fn a_new_port_per_node_is_random_and_advertises_the_host_only() {
        let mut nat = Nat::new(true);
        for (i, port) in [(11, 1000), (12, 2000), (13, 3000)] {
            nat.add(&at("11.0.0.33", port), node(i));
        }
        assert_eq!(nat.firewall, FIREWALL_RANDOM);
        assert_eq!(nat.addresses, Some(vec![at("11.0.0.33", 0)]));
        assert!(!nat.is_settled(), "random waits for the fourth sample");
        nat.add(&at("11.0.0.33", 4000), node(14));
        assert!(nat.is_settled());
    }

    #[test]
    fn two_hits_and_two_misses_on_one_host_is_random() {
        let mut nat = Nat::new(true);
        nat.add(&at("1.1.1.1", 10), node(11));
        nat.add(&at("1.1.1.1", 10), node(12));
        nat.add(&at("1.1.1.1", 11), node(13));
        assert_eq!(nat.firewall, FIREWALL_UNKNOWN);
        nat.add(&at("1.1.1.1", 12), node(14));
        assert_eq!(nat.firewall, FIREWALL_RANDOM);
    }

    #[test]
    fn two_hosts_hit_twice_each_is_consistent() {
        let mut nat = Nat::new(true);
        nat.add(&at("1.1.1.1", 10), node(11));
        nat.add(&at("2.2.2.2", 20), node(12));
        nat.add(&at("1.1.1.1", 10), node(13));
        nat.add(&at("2.2.2.2", 20), node(14));
        assert_eq!(nat.firewall, FIREWALL_CONSISTENT);
        assert_eq!(nat.addresses, Some(vec![at("1.1.1.1", 10), at("2.2.2.2", 20)]));
    }

    #[test]
    fn a_frozen_classification_does_not_move() {
        let mut nat = Nat::new(true);
        for i in 11..14 {
            nat.add(&at("1.1.1.1", 10), node(i));
        }
        nat.freeze();
        nat.add(&at("1.1.1.1", 99), node(14));
        nat.add(&at("1.1.1.1", 98), node(15));
        assert_eq!(nat.firewall, FIREWALL_CONSISTENT);
    }

    #[test]
    fn an_unfirewalled_node_is_open_at_once() {
        let mut nat = Nat::new(false);
        assert_eq!(nat.firewall, FIREWALL_OPEN);
        nat.add(&at("1.1.1.1", 10), node(11));
        assert_eq!(nat.firewall, FIREWALL_OPEN);
        assert!(nat.is_settled());
        assert_eq!(nat.addresses, None);
    }

    #[test]
    fn giving_up_settles_without_a_result() {
        let mut nat = Nat::new(true);
        let mut settled = nat.settled();
        nat.add(&at("1.1.1.1", 10), node(11));
        nat.give_up();
        assert!(*settled.borrow_and_update());
        assert_eq!(nat.firewall, FIREWALL_UNKNOWN);
    }
}
