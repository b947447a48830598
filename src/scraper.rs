//! The native scraper: asks a DhtPromClient's metrics server for its metrics over
//! protomux-rpc `prometheus-metrics`/`metrics`, keeping the connection between requests
//! and dialling again when it was lost. A dial outlives a request that gave up on it (a
//! punch through a randomizing NAT may need longer than one request waits); a dial that
//! fails is reported at once, so the command line can tell "unreachable" from "no reply".

use std::sync::Arc;
use std::time::Duration;

use crate::connection::{METHOD, PROTOCOL};
use crate::keys::{Key, KeyPair};
use crate::node::DhtNode;
use crate::redial::OnFailure;
use crate::rpc_client::{ClientError, RpcLink};
use crate::wire::{MetricsReply, MetricsRequest, MAJOR_VERSION, MINOR_VERSION};

#[derive(Debug, Clone)]
pub struct ScraperConfig {
    pub key_pair: KeyPair,
    pub target: Key,
    /// Per request, unless the request says otherwise (the reference scraper: 5 s).
    pub request_timeout: Duration,
    /// How long a request waits for a connection; the dial itself goes on after that.
    pub connect_timeout: Duration,
    /// Replies larger than this are refused (a secret-stream message is at most 16 MiB).
    pub max_bytes: usize,
}

impl ScraperConfig {
    pub fn new(key_pair: KeyPair, target: Key) -> Self {
        Self {
            key_pair,
            target,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What one request may override.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOptions {
    pub major: Option<u64>,
    pub minor: Option<u64>,
    pub timeout: Option<Duration>,
}

pub struct Scraper {
    config: ScraperConfig,
    link: RpcLink,
}

const KEEP_ALIVE: Duration = Duration::from_secs(5);

impl Scraper {
    pub fn new(node: Arc<DhtNode>, config: ScraperConfig) -> Self {
        let link = RpcLink::new(node, config.key_pair.clone(), config.target, PROTOCOL, KEEP_ALIVE, OnFailure::Report);
        Self { config, link }
    }

    pub fn target(&self) -> Key {
        self.config.target
    }

    /// One scrape: `Ok` carries the client's `{success, metrics | errorMessage}`;
    /// connection, timeout and protocol failures are `Err`.
    pub async fn request_metrics(&self, options: RequestOptions) -> Result<MetricsReply, ClientError> {
        let request = MetricsRequest {
            major: options.major.unwrap_or(MAJOR_VERSION),
            minor: options.minor.unwrap_or(MINOR_VERSION),
        };
        let timeout = options.timeout.unwrap_or(self.config.request_timeout);
        let connection = self.link.connection(self.config.connect_timeout).await?;
        let value = connection.request(METHOD, &request.encode(), timeout).await?;
        if value.len() > self.config.max_bytes {
            return Err(ClientError::TooLarge { size: value.len(), limit: self.config.max_bytes });
        }
        MetricsReply::decode(&value).map_err(ClientError::Decode)
    }

    /// Closes the connection and stops a dial under way; a later request dials again.
    pub async fn close(&self) {
        self.link.close().await;
    }
}
