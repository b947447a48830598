//! One HyperDHT node on peeroxide-dht: joins a network from a bootstrap list, bound to a
//! given host, and ends every task and socket it started on `destroy()`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libudx::UdxRuntime;
use peeroxide_dht::hyperdht::{self, HyperDhtConfig, HyperDhtError, HyperDhtHandle, ServerEvent};
use peeroxide_dht::holepuncher::Holepuncher;
use peeroxide_dht::messages::Ipv4Peer;
use thiserror::Error;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::holepunch::puncher::PunchContext;
use crate::holepunch::wire::DhtWire;
use crate::holepunch::RandomPunches;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid bootstrap address {0:?}: expected host:port")]
    InvalidBootstrap(String),
    #[error("could not start the UDX runtime: {0}")]
    Runtime(String),
    #[error("could not start the DHT node: {0}")]
    Spawn(#[source] HyperDhtError),
    #[error("could not bootstrap the DHT node: {0}")]
    Bootstrap(#[source] HyperDhtError),
    #[error("the DHT node is destroyed")]
    Destroyed,
    #[error("the DHT node has no socket")]
    NoSocket,
}

/// Where a node binds and whom it asks to join the network.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `host:port` strings; empty means a network of one (tests build their own).
    pub bootstrap: Vec<String>,
    /// The address to bind, e.g. `127.0.0.1` in tests; `0.0.0.0` binds every interface.
    pub host: String,
    /// 0 lets the OS pick.
    pub port: u16,
    /// `Some(false)` makes a node that routes for others at once (a testnet's nodes);
    /// `None` lets the node decide, as hyperdht does.
    pub ephemeral: Option<bool>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { bootstrap: public_bootstrap(), host: "0.0.0.0".into(), port: 0, ephemeral: None }
    }
}

/// The public HyperDHT bootstrap nodes, as hyperdht's own default.
pub fn public_bootstrap() -> Vec<String> {
    hyperdht::DEFAULT_BOOTSTRAP.iter().map(|s| (*s).to_string()).collect()
}

/// Checks a `host:port` bootstrap entry (peeroxide also takes `ip@name:port`).
pub fn validate_bootstrap(entry: &str) -> Result<(), NodeError> {
    let invalid = || NodeError::InvalidBootstrap(entry.to_string());
    let (host, port) = entry.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(invalid());
    }
    Ok(())
}

pub struct DhtNode {
    runtime: UdxRuntime,
    handle: HyperDhtHandle,
    task: Mutex<Option<JoinHandle<Result<(), HyperDhtError>>>>,
    server_events: Mutex<Option<UnboundedReceiver<ServerEvent>>>,
    host: String,
    /// Our side of the node's sockets (holepunching, our own requests).
    wire: DhtWire,
    random_punches: Arc<RandomPunches>,
    /// Not known to be reachable unsolicited (hyperdht's `dht.firewalled`): only a node
    /// configured as serving the network (not ephemeral) is taken to be reachable.
    firewalled: bool,
    /// Local interface addresses checked to be usable, by host.
    usable_hosts: Mutex<HashMap<String, bool>>,
}

impl DhtNode {
    /// Starts the node and waits until it has bootstrapped.
    pub async fn spawn(config: NodeConfig) -> Result<Self, NodeError> {
        for entry in &config.bootstrap {
            validate_bootstrap(entry)?;
        }
        let runtime = UdxRuntime::new().map_err(|e| NodeError::Runtime(e.to_string()))?;
        let mut dht_config = HyperDhtConfig::default();
        dht_config.dht.bootstrap = config.bootstrap.clone();
        dht_config.dht.host = config.host.clone();
        dht_config.dht.port = config.port;
        if let Some(ephemeral) = config.ephemeral {
            dht_config.dht.ephemeral = Some(ephemeral);
            // A node that serves the network must not claim to be behind a firewall.
            dht_config.dht.firewalled = ephemeral;
        }
        let firewalled = dht_config.dht.firewalled;
        let (task, handle, server_events) =
            hyperdht::spawn(&runtime, dht_config).await.map_err(NodeError::Spawn)?;
        let socket = |s: Option<libudx::UdxSocket>| s.and_then(|s| s.udx_socket());
        let primary = socket(handle.server_socket().await.ok().flatten());
        let listen = socket(handle.listen_socket().await.ok().flatten());
        let (Some(primary), Some(listen)) = (primary, listen) else {
            let _ = handle.destroy().await;
            task.abort();
            return Err(NodeError::NoSocket);
        };
        // Installed before bootstrapping, so that it sees what the first nodes saw of us.
        let wire = DhtWire::install(primary, listen);
        let node = Self {
            runtime,
            handle,
            task: Mutex::new(Some(task)),
            server_events: Mutex::new(Some(server_events)),
            host: config.host,
            wire,
            random_punches: Arc::new(RandomPunches::default()),
            firewalled,
            usable_hosts: Mutex::new(HashMap::new()),
        };
        if let Err(err) = node.handle.bootstrapped().await {
            node.destroy().await;
            return Err(NodeError::Bootstrap(err));
        }
        Ok(node)
    }

    pub fn handle(&self) -> &HyperDhtHandle {
        &self.handle
    }

    pub fn runtime(&self) -> &UdxRuntime {
        &self.runtime
    }

    /// The server-side handshake events; there is one receiver, for one server per node.
    pub fn take_server_events(&self) -> Option<UnboundedReceiver<ServerEvent>> {
        self.server_events.lock().ok().and_then(|mut slot| slot.take())
    }

    /// The node's address as a peer on this machine would reach it.
    pub async fn local_address(&self) -> Result<Ipv4Peer, NodeError> {
        let port = self.handle.local_port().await.map_err(|_| NodeError::Destroyed)?;
        let host = if self.host == "0.0.0.0" { "127.0.0.1".to_string() } else { self.host.clone() };
        Ok(Ipv4Peer { host, port })
    }

    pub fn wire(&self) -> &DhtWire {
        &self.wire
    }

    pub fn random_punches(&self) -> &Arc<RandomPunches> {
        &self.random_punches
    }

    pub fn punch_context(&self) -> PunchContext {
        PunchContext {
            wire: self.wire.clone(),
            bind: self.bind_ip(),
            random_punches: self.random_punches.clone(),
            firewalled: self.firewalled,
        }
    }

    fn bind_ip(&self) -> IpAddr {
        self.host.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// Where peers reach this node unsolicited (hyperdht's `dht.remoteAddress()`): only
    /// when it is not firewalled, at the address DHT nodes agree they saw, on our port.
    /// `None` otherwise: a firewalled node is holepunched to, never dialled.
    pub fn reachable_address(&self) -> Option<Ipv4Peer> {
        if self.firewalled {
            return None;
        }
        let port = self.wire.listen().local_addr().port();
        let mut votes: Vec<(Ipv4Peer, usize)> = Vec::new();
        for (_, seen) in self.wire.recent_nodes() {
            if seen.port != port || crate::holepunch::is_reserved(&seen.host) {
                continue;
            }
            match votes.iter_mut().find(|(addr, _)| *addr == seen) {
                Some((_, n)) => *n += 1,
                None => votes.push((seen, 1)),
            }
        }
        votes.into_iter().max_by_key(|(_, n)| *n).map(|(addr, _)| addr)
    }

    /// Our LAN addresses as hyperdht shares them (`Holepuncher.localAddresses` of the
    /// server socket, then `validateLocalAddresses`): on the node's port, loopback only
    /// when bound to it, the bound address only when bound to one, each checked once to be
    /// usable (a socket there can reach itself).
    pub async fn local_addresses(&self) -> Vec<Ipv4Peer> {
        let candidates = self.local_candidates();
        let mut out = Vec::new();
        for candidate in candidates {
            let known = self.usable_hosts.lock().ok().and_then(|m| m.get(&candidate.host).copied());
            let usable = match known {
                Some(usable) => usable,
                None => {
                    let usable = host_is_usable(&candidate.host).await;
                    if let Ok(mut m) = self.usable_hosts.lock() {
                        m.insert(candidate.host.clone(), usable);
                    }
                    usable
                }
            };
            if usable {
                out.push(candidate);
            }
        }
        out
    }

    /// The local addresses already known usable, without checking new ones.
    pub fn local_addresses_now(&self) -> Vec<Ipv4Peer> {
        let known = self.usable_hosts.lock().map(|m| m.clone()).unwrap_or_default();
        self.local_candidates().into_iter().filter(|c| known.get(&c.host).copied().unwrap_or(false)).collect()
    }

    fn local_candidates(&self) -> Vec<Ipv4Peer> {
        let port = self.wire.listen().local_addr().port();
        match self.bind_ip() {
            ip if ip.is_unspecified() => Holepuncher::local_addresses(port),
            ip => vec![Ipv4Peer { host: ip.to_string(), port }],
        }
    }

    /// Stops the node and waits for its task; idempotent.
    pub async fn destroy(&self) {
        let task = self.task.lock().ok().and_then(|mut slot| slot.take());
        let Some(task) = task else { return };
        self.wire.close();
        let _ = self.handle.destroy().await;
        // The node's task ends once destroyed; bound the wait so close() never hangs.
        let abort = task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(2), task).await.is_err() {
            abort.abort();
        }
    }
}

/// hyperdht's check of a LAN address: a socket bound there reaches itself.
async fn host_is_usable(host: &str) -> bool {
    let Ok(ip) = host.parse::<Ipv4Addr>() else { return false };
    let Ok(socket) = tokio::net::UdpSocket::bind(SocketAddr::from((ip, 0))).await else { return false };
    let Ok(me) = socket.local_addr() else { return false };
    if socket.send_to(&[0], me).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_entries_are_checked() {
        assert!(validate_bootstrap("127.0.0.1:49737").is_ok());
        assert!(validate_bootstrap("88.99.3.86@node1.hyperdht.org:49737").is_ok());
        for bad in ["127.0.0.1", ":80", "host:0", "host:99999", "host:x", ""] {
            assert!(validate_bootstrap(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn spawns_on_loopback_and_destroys_twice() {
        let node = DhtNode::spawn(NodeConfig {
            bootstrap: vec![],
            host: "127.0.0.1".into(),
            port: 0,
            ephemeral: None,
        })
        .await
        .expect("node starts");
        let addr = node.local_address().await.expect("address");
        assert_eq!(addr.host, "127.0.0.1");
        assert_ne!(addr.port, 0);
        node.destroy().await;
        node.destroy().await;
    }
}
