//! A loopback testnet of peeroxide-dht nodes, like hyperdht/testnet, for the core's tests.
#![allow(dead_code)]

use std::sync::Arc;

use dht_prom_client_rs::node::{DhtNode, NodeConfig};

pub struct Testnet {
    pub nodes: Vec<Arc<DhtNode>>,
    pub bootstrap: Vec<String>,
}

impl Testnet {
    pub async fn new(size: usize) -> Testnet {
        let first = spawn(vec![], Some(false)).await;
        let address = first.local_address().await.expect("bootstrap address");
        let bootstrap = vec![format!("{}:{}", address.host, address.port)];
        let mut nodes = vec![first];
        while nodes.len() < size {
            nodes.push(spawn(bootstrap.clone(), Some(false)).await);
        }
        Testnet { nodes, bootstrap }
    }

    /// A node as a client or server process would run it.
    pub async fn node(&self) -> Arc<DhtNode> {
        spawn(self.bootstrap.clone(), None).await
    }

    pub async fn destroy(self) {
        for node in self.nodes {
            node.destroy().await;
        }
    }
}

async fn spawn(bootstrap: Vec<String>, ephemeral: Option<bool>) -> Arc<DhtNode> {
    let config = NodeConfig { bootstrap, host: "127.0.0.1".into(), port: 0, ephemeral };
    Arc::new(DhtNode::spawn(config).await.expect("node starts"))
}

/// This process's resident memory (VmRSS), in KiB: what the hostile tests keep flat.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
