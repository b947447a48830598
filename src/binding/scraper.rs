//! `NativeScraper` and the metrics message codecs the JS scraper facade uses.

use std::sync::Arc;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use super::error::{core_error, into_async_error, key_error, positive_millis, ErrorCode};
use crate::keys::{Key, KeyPair};
use crate::node::{DhtNode, NodeConfig};
use crate::scraper::{RequestOptions, Scraper, ScraperConfig};
use crate::wire::{MetricsReply, MetricsRequest};

#[napi(object)]
pub struct ScraperOptions {
    pub bootstrap: Vec<String>,
    pub host: String,
    /// The scraper's identity; a fresh key pair when absent (the client's firewall will
    /// then refuse it, unless it lists that key).
    pub secret_key: Option<Buffer>,
    pub request_timeout_ms: Option<f64>,
    pub max_bytes: Option<f64>,
}

#[napi(object)]
pub struct ScrapeRequest {
    pub timeout_ms: Option<f64>,
    pub major: Option<f64>,
    pub minor: Option<f64>,
}

/// `{ success, metrics | errorMessage }` as the reference resolves it; on a connection or
/// protocol failure `errorCode`/`failure` say what happened instead (the facade throws).
#[napi(object)]
pub struct ScrapeOutcome {
    pub success: Option<bool>,
    pub metrics: Option<String>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    pub failure: Option<String>,
}

#[napi]
pub struct NativeScraper {
    node: Arc<DhtNode>,
    scraper: Arc<Scraper>,
    public_key: Key,
    /// Where `Drop` ends what `close()` was not called for.
    runtime: tokio::runtime::Handle,
}

/// Finalized without close() (collected, or its worker thread went away): close the
/// connection and the DHT node in the background rather than leave them running. A
/// runtime that is shutting down drops the task; never a panic on the JS thread.
impl Drop for NativeScraper {
    fn drop(&mut self) {
        let (scraper, node) = (self.scraper.clone(), self.node.clone());
        drop(self.runtime.spawn(async move {
            scraper.close().await;
            node.destroy().await;
        }));
    }
}

/// Starts a DHT node for a scraper of `client_public_key`.
#[napi]
pub async fn start_scraper(options: ScraperOptions, client_public_key: Buffer) -> napi::Result<NativeScraper> {
    start(options, client_public_key).await.map_err(into_async_error)
}

async fn start(options: ScraperOptions, client_public_key: Buffer) -> napi::Result<NativeScraper, ErrorCode> {
    let target = Key::from_bytes(&client_public_key).map_err(key_error)?;
    let key_pair = match &options.secret_key {
        Some(secret) => KeyPair::from_secret_key(secret)
            .map_err(|e| core_error(ErrorCode::InvalidArgument, format!("secretKey: {e}")))?,
        None => KeyPair::generate(),
    };
    let mut config = ScraperConfig::new(key_pair.clone(), target);
    if let Some(ms) = options.request_timeout_ms {
        config.request_timeout = positive_millis(ms, "requestTimeoutMs")?;
        // Waiting for a connection is bounded by the same budget: a firewall answers
        // nothing, so without a bound a refused scrape would wait for every relay the DHT
        // knows. The dial goes on after that, for the next request.
        config.connect_timeout = config.request_timeout;
    }
    if let Some(max) = options.max_bytes {
        if !(max.is_finite() && max >= 1.0) {
            return Err(core_error(ErrorCode::InvalidArgument, "maxBytes must be a positive number"));
        }
        config.max_bytes = max.min(usize::MAX as f64) as usize;
    }
    let node = DhtNode::spawn(NodeConfig { bootstrap: options.bootstrap, host: options.host, port: 0, ephemeral: None })
        .await
        .map_err(|e| core_error(ErrorCode::Node, e.to_string()))?;
    let node = Arc::new(node);
    let scraper = Arc::new(Scraper::new(node.clone(), config));
    let runtime = tokio::runtime::Handle::current();
    Ok(NativeScraper { node, scraper, public_key: key_pair.public_key, runtime })
}

fn version(value: Option<f64>) -> Option<u64> {
    // JS encodes `m.major || 1`: 0, NaN and absent all mean the default.
    value.filter(|v| v.is_finite() && *v >= 1.0).map(|v| v.min(u64::MAX as f64) as u64)
}

#[napi]
impl NativeScraper {
    /// The scraper's own public key (what the client's firewall must admit).
    #[napi(getter)]
    pub fn public_key(&self) -> Buffer {
        self.public_key.0.to_vec().into()
    }

    #[napi]
    pub async fn request_metrics(&self, request: Option<ScrapeRequest>) -> napi::Result<ScrapeOutcome> {
        let scraper = self.scraper.clone();
        let request = request.unwrap_or(ScrapeRequest { timeout_ms: None, major: None, minor: None });
        let timeout = match request.timeout_ms {
            Some(ms) => Some(positive_millis(ms, "timeout").map_err(into_async_error)?),
            None => None,
        };
        let options = RequestOptions { major: version(request.major), minor: version(request.minor), timeout };
        let mut outcome = ScrapeOutcome { success: None, metrics: None, error_message: None, error_code: None, failure: None };
        match scraper.request_metrics(options).await {
            Ok(MetricsReply::Success { metrics }) => {
                outcome.success = Some(true);
                outcome.metrics = Some(metrics);
            }
            Ok(MetricsReply::Failure { error_message }) => {
                outcome.success = Some(false);
                outcome.error_message = Some(error_message);
            }
            Err(err) => {
                outcome.error_code = Some(err.code().to_string());
                outcome.failure = Some(err.to_string());
            }
        }
        Ok(outcome)
    }

    /// Closes the connection and the scraper's DHT node; idempotent.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.scraper.close().await;
        self.node.destroy().await;
        Ok(())
    }
}

/// MetricsRequest bytes (dht-prom-client's MetricsReqEnc; 0 or absent versions mean 1).
#[napi]
pub fn encode_metrics_request(major: Option<f64>, minor: Option<f64>) -> Buffer {
    let default = MetricsRequest::default();
    MetricsRequest { major: version(major).unwrap_or(default.major), minor: version(minor).unwrap_or(default.minor) }
        .encode()
        .into()
}

/// Decodes MetricsReply bytes; throws with the reference's error text on a future version.
#[napi]
pub fn decode_metrics_reply(bytes: Buffer) -> napi::Result<ScrapeOutcome, ErrorCode> {
    let reply = MetricsReply::decode(&bytes).map_err(|e| core_error(ErrorCode::InvalidArgument, e.to_string()))?;
    let (success, text) = (reply.is_success(), reply.text().to_string());
    Ok(ScrapeOutcome {
        success: Some(success),
        metrics: success.then(|| text.clone()),
        error_message: (!success).then_some(text),
        error_code: None,
        failure: None,
    })
}
