//! Reaching peers behind NATs, as JS hyperdht does (`lib/server.js`, `lib/connect.js`,
//! `lib/holepuncher.js`, `lib/nat.js`), on our own sockets beside peeroxide-dht's node:
//!
//! - [`wire`]: our side of the node's DHT sockets. A datagram filter takes the
//!   `PEER_HANDSHAKE`/`PEER_HOLEPUNCH` requests for the keys this process serves (with the
//!   request id, the socket they came in on and the address the sender saw us at), keeps
//!   what each DHT node saw of us, and sends our own requests and replies from any socket
//!   (a puncher's included).
//! - [`nat`]: classifies a socket's NAT from what DHT nodes saw of it.
//! - [`puncher`]: a holepunching socket set: NAT sampling, probes, the consistent, random
//!   and birthday strategies, and the node's limit on random punches.
//! - [`server`]: the server side: honest handshake payloads and `PEER_HOLEPUNCH` answers.
//! - [`client`]: the client side: a connect that holepunches like `dht.connect`.

/// Diagnosis of NAT traversal where no debugger reaches (the NAT lab's namespaces): with
/// `DPC_HP_DEBUG` set, each holepunch step is printed to stderr.
macro_rules! hp_debug {
    ($($arg:tt)*) => {
        if std::env::var_os("DPC_HP_DEBUG").is_some() {
            eprintln!("[hp {:?}] {}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() % 100_000).unwrap_or(0), format!($($arg)*));
        }
    };
}
pub mod client;
pub mod nat;
pub mod puncher;
pub mod server;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use peeroxide_dht::hyperdht_messages::{HolepunchPayload, FIREWALL_UNKNOWN};
use peeroxide_dht::messages::Ipv4Peer;

/// hyperdht's minimum time between two random-NAT punches of one node.
pub const RANDOM_PUNCH_INTERVAL: Duration = Duration::from_secs(20);
/// hyperdht punches across a randomizing NAT once at a time per node.
const RANDOM_PUNCH_LIMIT: u32 = 1;

/// The node-wide limit on random-NAT punches (hyperdht's `_randomPunches`,
/// `_lastRandomPunch`): they cost hundreds of sockets or probes, so one at a time, and
/// not again within 20 s of the last one ending.
#[derive(Debug)]
pub struct RandomPunches {
    state: Mutex<RandomState>,
    interval: Duration,
}

#[derive(Debug, Default)]
struct RandomState {
    active: u32,
    last: Option<Instant>,
}

impl Default for RandomPunches {
    fn default() -> Self {
        Self::new(RANDOM_PUNCH_INTERVAL)
    }
}

impl RandomPunches {
    pub fn new(interval: Duration) -> Self {
        Self { state: Mutex::new(RandomState::default()), interval }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RandomState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a random punch must wait (one is running, or the last ended too recently).
    pub fn busy(&self) -> bool {
        let st = self.lock();
        st.active >= RANDOM_PUNCH_LIMIT || st.last.is_some_and(|last| last.elapsed() < self.interval)
    }

    /// A random punch starts (the puncher's).
    pub(crate) fn begin(&self) {
        self.lock().active += 1;
    }

    /// Counts a punch being agreed with the peer, without starting the interval when it
    /// is let go (hyperdht's client holds the count over its punching round).
    pub(crate) fn hold(&self) {
        self.lock().active += 1;
    }

    pub(crate) fn unhold(&self) {
        let mut st = self.lock();
        st.active = st.active.saturating_sub(1);
    }

    /// A random punch ended (connected or given up): the interval starts now.
    pub(crate) fn end(&self) {
        let mut st = self.lock();
        st.active = st.active.saturating_sub(1);
        st.last = Some(Instant::now());
    }
}

/// A holepunch round that carries only an error (ABORTED, TRY_LATER): what a side sends
/// when it gives up, as hyperdht's `abort` does.
pub fn error_payload(error: u64, round: u64) -> HolepunchPayload {
    HolepunchPayload {
        error,
        firewall: FIREWALL_UNKNOWN,
        round,
        connected: false,
        punching: false,
        addresses: None,
        remote_address: None,
        token: None,
        remote_token: None,
    }
}

pub fn peer_of(addr: SocketAddr) -> Ipv4Peer {
    Ipv4Peer { host: addr.ip().to_string(), port: addr.port() }
}

/// The socket address of a wire address; `None` for what a peer cannot be sent to.
pub fn addr_of(peer: &Ipv4Peer) -> Option<SocketAddr> {
    let ip: Ipv4Addr = peer.host.parse().ok()?;
    (peer.port != 0).then(|| SocketAddr::new(IpAddr::V4(ip), peer.port))
}

pub fn same_peer(a: &Ipv4Peer, b: &Ipv4Peer) -> bool {
    a.host == b.host && a.port == b.port
}

fn octets(host: &str) -> Option<[u8; 4]> {
    host.parse::<Ipv4Addr>().ok().map(|ip| ip.octets())
}

/// npm `bogon`'s private ranges (10/8, 100.64/10, 127/8, 169.254/16, 172.16/12,
/// 192.168/16); anything unparsable counts as private.
pub fn is_private(host: &str) -> bool {
    let Some(ip) = octets(host) else { return true };
    ip[0] == 10
        || (ip[0] == 100 && (64..=127).contains(&ip[1]))
        || ip[0] == 127
        || (ip[0] == 169 && ip[1] == 254)
        || (ip[0] == 172 && (16..=31).contains(&ip[1]))
        || (ip[0] == 192 && ip[1] == 168)
}

/// npm `bogon`'s reserved ranges (0/8, 192.0.0/24, TEST-NETs, 198.18/15, multicast,
/// 240/4); anything unparsable counts as reserved.
pub fn is_reserved(host: &str) -> bool {
    let Some(ip) = octets(host) else { return true };
    ip[0] == 0
        || (ip[0] == 192 && ip[1] == 0 && (ip[2] == 0 || ip[2] == 2))
        || (ip[0] == 198 && (18..=19).contains(&ip[1]))
        || (ip[0] == 198 && ip[1] == 51 && ip[2] == 100)
        || (ip[0] == 203 && ip[1] == 0 && ip[2] == 113)
        || ip[0] >= 224
}

pub fn is_bogon(host: &str) -> bool {
    is_private(host) || is_reserved(host)
}

/// hyperdht's `matchAddress`: the remote LAN address sharing the longest prefix (in
/// whole octets, at least one) with one of ours.
pub fn match_address(local: &[Ipv4Peer], remote: &[Ipv4Peer]) -> Option<Ipv4Peer> {
    let mut best: Option<(usize, &Ipv4Peer)> = None;
    for l in local {
        let a: Vec<&str> = l.host.split('.').collect();
        for r in remote {
            let b: Vec<&str> = r.host.split('.').collect();
            let shared = a.iter().zip(b.iter()).take(3).take_while(|(x, y)| x == y).count();
            if shared == 3 {
                return Some(r.clone());
            }
            if shared > 0 && best.is_none_or(|(n, _)| shared > n) {
                best = Some((shared, r));
            }
        }
    }
    best.map(|(_, r)| r.clone())
}

/// A loopback network for the module's tests: three serving nodes and a firewalled node
/// that has seen them all (its NAT samples come from them).
#[cfg(test)]
pub(crate) async fn test_network() -> (Vec<std::sync::Arc<crate::node::DhtNode>>, std::sync::Arc<crate::node::DhtNode>) {
    use crate::node::{DhtNode, NodeConfig};
    use std::sync::Arc;
    let spawn = |bootstrap: Vec<String>, ephemeral| async move {
        Arc::new(DhtNode::spawn(NodeConfig { bootstrap, host: "127.0.0.1".into(), port: 0, ephemeral }).await.expect("node"))
    };
    let first = spawn(vec![], Some(false)).await;
    let address = first.local_address().await.expect("address");
    let bootstrap = vec![format!("{}:{}", address.host, address.port)];
    let mut nodes = vec![first];
    for _ in 0..2 {
        nodes.push(spawn(bootstrap.clone(), Some(false)).await);
    }
    let node = spawn(bootstrap, None).await;
    // A query to every node: the wire sees what each saw of the node; and its LAN address
    // is checked.
    let _ = node.handle().dht().find_node([9; 32]).await;
    assert!(node.wire().recent_nodes().len() >= 3, "{:?}", node.wire().recent_nodes());
    node.local_addresses().await;
    (nodes, node)
}

#[cfg(test)]
pub(crate) async fn destroy_network(nodes: Vec<std::sync::Arc<crate::node::DhtNode>>, node: std::sync::Arc<crate::node::DhtNode>) {
    node.destroy().await;
    for n in nodes {
        n.destroy().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(host: &str) -> Ipv4Peer {
        Ipv4Peer { host: host.into(), port: 1 }
    }

    #[test]
    fn bogons_as_npm_bogon() {
        for host in ["10.0.1.2", "127.0.0.1", "192.168.1.1", "172.20.0.1", "169.254.1.1", "100.64.0.1", "nonsense"] {
            assert!(is_private(host), "{host}");
        }
        for host in ["0.0.0.0", "192.0.2.1", "198.51.100.2", "203.0.113.9", "198.18.0.1", "224.0.0.1", "255.255.255.255"] {
            assert!(is_reserved(host) && !is_private(host) || host == "nonsense", "{host}");
        }
        for host in ["11.0.0.21", "88.99.3.86", "172.32.0.1", "100.128.0.1"] {
            assert!(!is_bogon(host), "{host}");
        }
    }

    #[test]
    fn match_address_prefers_the_longest_shared_prefix() {
        let local = [p("192.168.122.238")];
        assert_eq!(match_address(&local, &[p("192.168.0.23"), p("192.168.122.1")]), Some(p("192.168.122.1")));
        assert_eq!(match_address(&local, &[p("10.0.0.1"), p("192.1.1.1")]), Some(p("192.1.1.1")));
        assert_eq!(match_address(&local, &[p("10.0.0.1")]), None);
        assert_eq!(match_address(&local, &[]), None);
    }

    #[test]
    fn wire_addresses_that_cannot_be_dialled_are_refused() {
        assert_eq!(addr_of(&Ipv4Peer { host: "11.0.0.33".into(), port: 0 }), None);
        assert_eq!(addr_of(&Ipv4Peer { host: "not an ip".into(), port: 9 }), None);
        assert_eq!(addr_of(&Ipv4Peer { host: "11.0.0.33".into(), port: 9 }), Some("11.0.0.33:9".parse().unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn random_punches_are_one_at_a_time_and_spaced() {
        let limit = RandomPunches::new(Duration::from_secs(20));
        assert!(!limit.busy());
        limit.begin();
        assert!(limit.busy());
        limit.end();
        assert!(limit.busy(), "the interval starts when a punch ends");
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(limit.busy());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!limit.busy());
        limit.hold();
        assert!(limit.busy());
        limit.unhold();
        assert!(!limit.busy(), "a hold let go does not start the interval");
    }
}
