//! One HyperDHT node on peeroxide-dht: joins a network from a bootstrap list, bound to a
//! given host, and ends every task and socket it started on `destroy()`.

use std::sync::Mutex;

use libudx::UdxRuntime;
use peeroxide_dht::hyperdht::{self, HyperDhtConfig, HyperDhtError, HyperDhtHandle, ServerEvent};
use peeroxide_dht::messages::Ipv4Peer;
use thiserror::Error;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

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
        let (task, handle, server_events) =
            hyperdht::spawn(&runtime, dht_config).await.map_err(NodeError::Spawn)?;
        let node = Self {
            runtime,
            handle,
            task: Mutex::new(Some(task)),
            server_events: Mutex::new(Some(server_events)),
            host: config.host,
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

    /// Addresses to advertise in a handshake: the address the network sees (when the
    /// node has learned it), then the bound address, so that peers on the same host or
    /// LAN connect directly.
    pub async fn advertised_addresses(&self) -> Vec<Ipv4Peer> {
        let mut out = Vec::new();
        if let Ok(Some(remote)) = self.handle.remote_address().await {
            out.push(remote);
        }
        if let Ok(local) = self.local_address().await {
            if local.host != "0.0.0.0" && !out.contains(&local) {
                out.push(local);
            }
        }
        out
    }

    /// Stops the node and waits for its task; idempotent.
    pub async fn destroy(&self) {
        let task = self.task.lock().ok().and_then(|mut slot| slot.take());
        let Some(task) = task else { return };
        let _ = self.handle.destroy().await;
        // The node's task ends once destroyed; bound the wait so close() never hangs.
        let abort = task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(2), task).await.is_err() {
            abort.abort();
        }
    }
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
