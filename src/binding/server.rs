//! `NativeServer`: the metrics server of one DhtPromClient, with its own DHT node.
//! getMetrics and events reach JS through weak threadsafe functions, so that they never
//! keep the process alive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{
    Buffer, BufferSlice, Either, FromNapiValue, Promise, ToNapiValue, TypeName, ValidateNapiValue, ValueType,
};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use peeroxide_dht::hyperdht_messages::NoisePayload;
use peeroxide_dht::messages::Ipv4Peer;

use super::error::{core_error, into_async_error, positive_millis, ErrorCode};
use crate::alias::{AliasConfig, AliasError, AliasFuture, AliasRegistrar, AliasTransport, NativeAliasTransport};
use crate::events::{Event, EventSink};
use crate::keys::{Key, KeyPair};
use crate::node::{DhtNode, NodeConfig};
use crate::server::{MetricsFuture, MetricsRequestInfo, MetricsServer, MetricsSource, ServerConfig};
use crate::stats::Stats;

/// The largest metrics text one reply can carry, in UTF-8 bytes (a secret-stream message
/// is at most 16 MiB - 1); larger metrics give `metrics-error` and a `success: false` reply.
#[napi]
pub const MAX_METRICS_BYTES: u32 = crate::connection::MAX_METRICS_BYTES as u32;

#[napi(object)]
pub struct ServerOptions {
    /// `host:port` entries; the facade turns `{host, port}` objects into these.
    pub bootstrap: Vec<String>,
    /// The address to bind (`127.0.0.1` in tests).
    pub host: String,
    pub public_key: Buffer,
    pub secret_key: Buffer,
    /// Only these keys may connect.
    pub allowed_keys: Vec<Buffer>,
    /// Alias registration with every allowed key; none when absent.
    pub alias: Option<AliasOptions>,
}

#[napi(object)]
pub struct AliasOptions {
    pub secret: Buffer,
    pub alias: String,
    pub hostname: String,
    pub service: String,
    pub register_interval_ms: f64,
    /// Bounds each attempt, connecting included (default 10000, as protomux-rpc-client).
    pub request_timeout_ms: Option<f64>,
}

/// The argument of the facade's function that registers through a JS protomux-rpc-client.
#[napi(object)]
pub struct AliasCall {
    pub scraper_public_key: Buffer,
    /// The encoded AliasRequest.
    pub body: Buffer,
    pub timeout_ms: f64,
}

/// What that function settles with: the encoded AliasResponse, or the error it got.
#[napi(object)]
pub struct AliasCallResult {
    pub response: Option<Buffer>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// The argument of the facade's getMetrics wrapper.
#[napi(object, object_from_js = false)]
pub struct MetricsCall {
    pub uid: String,
    #[napi(ts_type = "Buffer")]
    pub remote_public_key: KeyBuffer,
}

/// A 32-byte key handed to JS as a copied Buffer. napi-rs's `Buffer` becomes an external
/// Buffer with a finalizer, which costs more than the copy (measured: 4% of the client's
/// CPU per 1 KB scrape went to creating it).
pub struct KeyBuffer(pub [u8; 32]);

/// The metrics text, read from JS in one pass. napi-rs's `String` asks V8 for the UTF-8
/// length first (a whole pass over the text), then converts (a second pass); a string of
/// n UTF-16 units has at most 3n UTF-8 bytes, so one conversion into a buffer that large
/// does (measured: the length pass is ~1 ms of a 2 MB scrape). Only the pages written are
/// ever touched.
pub struct MetricsText(pub String);

impl TypeName for MetricsText {
    fn type_name() -> &'static str {
        "String"
    }

    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl ValidateNapiValue for MetricsText {}

impl FromNapiValue for MetricsText {
    unsafe fn from_napi_value(env: napi::sys::napi_env, value: napi::sys::napi_value) -> napi::Result<Self> {
        let mut units = 0usize;
        // SAFETY: a null buffer asks for the length in UTF-16 units only.
        let status = unsafe { napi::sys::napi_get_value_string_utf16(env, value, std::ptr::null_mut(), 0, &mut units) };
        if status != napi::sys::Status::napi_ok {
            return Err(napi::Error::from_reason("getMetrics did not return a string"));
        }
        let capacity = units.saturating_mul(3).saturating_add(1);
        let mut bytes: Vec<u8> = Vec::with_capacity(capacity);
        let mut written = 0usize;
        // SAFETY: napi writes at most `capacity` bytes (NUL included) into the buffer.
        let status = unsafe {
            napi::sys::napi_get_value_string_utf8(env, value, bytes.as_mut_ptr().cast(), capacity, &mut written)
        };
        if status != napi::sys::Status::napi_ok {
            return Err(napi::Error::from_reason("could not read the metrics text"));
        }
        // SAFETY: the first `written` bytes were just initialised by napi (written < capacity).
        unsafe { bytes.set_len(written.min(capacity - 1)) };
        String::from_utf8(bytes).map(MetricsText).map_err(|e| napi::Error::from_reason(e.to_string()))
    }
}

impl ToNapiValue for KeyBuffer {
    unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> napi::Result<napi::sys::napi_value> {
        let copy = BufferSlice::copy_from(&Env::from_raw(env), val.0)?;
        // SAFETY: `env` is the live environment napi hands to this conversion.
        unsafe { BufferSlice::to_napi_value(env, copy) }
    }
}

#[napi(object)]
pub struct JsPeerAddress {
    pub host: String,
    pub port: u32,
}

#[napi(object)]
pub struct JsUdxInfo {
    pub version: i64,
    pub reusable_socket: bool,
    pub id: i64,
    pub seq: i64,
}

#[napi(object)]
pub struct JsRelayInfo {
    pub relay_address: JsPeerAddress,
    pub peer_address: JsPeerAddress,
}

#[napi(object)]
pub struct JsHolepunchInfo {
    pub id: i64,
    pub relays: Vec<JsRelayInfo>,
}

#[napi(object)]
pub struct JsSecretStreamInfo {
    pub version: i64,
}

#[napi(object)]
pub struct JsRelayThroughInfo {
    pub version: i64,
    pub public_key: Buffer,
    pub token: Buffer,
}

/// The handshake payload as hyperdht's firewall callback receives it.
#[napi(object)]
pub struct JsHandshakePayload {
    pub version: i64,
    pub error: i64,
    pub firewall: i64,
    pub holepunch: Option<JsHolepunchInfo>,
    pub addresses4: Vec<JsPeerAddress>,
    pub addresses6: Vec<JsPeerAddress>,
    pub udx: Option<JsUdxInfo>,
    pub secret_stream: Option<JsSecretStreamInfo>,
    pub relay_through: Option<JsRelayThroughInfo>,
    pub relay_addresses: Option<Vec<JsPeerAddress>>,
}

/// One core event, flattened; the facade shapes it into the reference's payloads.
#[napi(object)]
pub struct JsEvent {
    pub name: String,
    pub uid: Option<String>,
    pub remote_public_key: Option<Buffer>,
    pub remote_address: Option<String>,
    pub address: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub payload: Option<JsHandshakePayload>,
    pub scraper_public_key: Option<Buffer>,
    pub updated: Option<bool>,
    pub alias: Option<String>,
    pub target_key: Option<Buffer>,
    pub hostname: Option<String>,
    pub service: Option<String>,
}

/// What Rust hands the facade: a scrape's getMetrics call, or an event.
type ToJs = Either<MetricsCall, JsEvent>;

/// The one way from Rust to the facade, for getMetrics calls and events alike: one queue,
/// so JS sees them in the order Rust made them (a connection's `connection-open` before
/// its first `metrics-request`, that request before its `connection-close`). Two threadsafe
/// functions would not keep that order: Node runs whichever was made first.
///
/// For a getMetrics call the facade's wrapper returns the text (or null) at once when
/// getMetrics is synchronous, and a Promise otherwise: no promise round trip for the
/// common case. For an event it returns nothing, and nothing is read back.
type ToJsFn = ThreadsafeFunction<ToJs, Either<Option<MetricsText>, Promise<Option<String>>>, ToJs, Status, false, true>;
type AliasRequestFn = ThreadsafeFunction<AliasCall, Promise<AliasCallResult>, AliasCall, Status, false, true>;

/// Registration through the user's JS protomux-rpc-client (option `protomuxRpcClient`).
struct JsAliasTransport {
    request: Arc<AliasRequestFn>,
}

impl AliasTransport for JsAliasTransport {
    fn request(&self, scraper: Key, body: Vec<u8>, timeout: Duration) -> AliasFuture {
        let request = self.request.clone();
        Box::pin(async move {
            let call = AliasCall {
                scraper_public_key: scraper.0.to_vec().into(),
                body: body.into(),
                timeout_ms: timeout.as_millis() as f64,
            };
            let js_failure = |err: napi::Error| AliasError { code: Some("ERR_JS_TRANSPORT".into()), message: err.reason.clone() };
            let promise = request.call_async_catch(call).await.map_err(js_failure)?;
            let result = promise.await.map_err(js_failure)?;
            match result.response {
                Some(response) => Ok(response.to_vec()),
                None => Err(AliasError {
                    code: result.error_code,
                    message: result.error_message.unwrap_or_else(|| "alias request failed".into()),
                }),
            }
        })
    }
}

struct JsMetricsSource {
    to_js: Arc<ToJsFn>,
}

impl MetricsSource for JsMetricsSource {
    fn metrics(&self, request: MetricsRequestInfo) -> MetricsFuture {
        let to_js = self.to_js.clone();
        Box::pin(async move {
            let call = MetricsCall {
                uid: request.uid.to_string(),
                remote_public_key: KeyBuffer(request.remote_public_key.0),
            };
            // The facade's wrapper settles with the text, or null after emitting
            // metrics-error; a throw or rejection here is caught, never fatal.
            let returned = to_js.call_async_catch(Either::A(call)).await.map_err(|e| e.to_string())?;
            let settled = match returned {
                Either::A(now) => Ok(now.map(|text| text.0)),
                Either::B(promise) => promise.await,
            };
            match settled {
                Ok(Some(metrics)) => Ok(metrics),
                Ok(None) => Err("getMetrics failed".to_string()),
                Err(err) => Err(err.to_string()),
            }
        })
    }
}

#[napi]
pub struct NativeServer {
    node: Arc<DhtNode>,
    server: Arc<MetricsServer>,
    registrar: Option<Arc<AliasRegistrar>>,
    stats: Arc<Stats>,
    /// Taken by close() once the last event is queued: the listener refers back to the JS
    /// client, which refers to this object, a cycle V8 cannot see through while it is held.
    to_js: std::sync::Mutex<Option<Arc<ToJsFn>>>,
    events_open: Arc<AtomicBool>,
    /// Where `Drop` ends what `close()` was not called for.
    runtime: tokio::runtime::Handle,
}

/// The JS object is finalized: its environment is going away (a worker thread terminated
/// or exited) or it was collected. Without close(), the server and its DHT node would
/// serve on with nobody to answer getMetrics; end them in the background, as close() does
/// (a second close is a no-op). Spawning on a runtime that is shutting down (the process
/// exits) drops the task: never a panic here, on the JS thread.
impl Drop for NativeServer {
    fn drop(&mut self) {
        self.events_open.store(false, Ordering::SeqCst);
        let (server, node, registrar) = (self.server.clone(), self.node.clone(), self.registrar.clone());
        drop(self.runtime.spawn(async move {
            let registrar = async {
                if let Some(registrar) = &registrar {
                    registrar.close().await;
                }
            };
            tokio::join!(registrar, server.close());
            node.destroy().await;
        }));
    }
}

/// Starts a DHT node and a metrics server on it. Resolves once the server is announced.
/// `to_js` takes getMetrics calls and events, in one queue ([`ToJsFn`]).
#[napi]
pub async fn start_server(
    options: ServerOptions,
    #[napi(ts_arg_type = "(call: MetricsCall | JsEvent) => string | null | Promise<string | null> | undefined")]
    to_js: ToJsFn,
    alias_request: Option<AliasRequestFn>,
) -> napi::Result<NativeServer> {
    start(options, to_js, alias_request).await.map_err(into_async_error)
}

async fn start(
    options: ServerOptions,
    to_js: ToJsFn,
    alias_request: Option<AliasRequestFn>,
) -> napi::Result<NativeServer, ErrorCode> {
    let key_pair = KeyPair::from_parts(&options.public_key, &options.secret_key)
        .map_err(|e| core_error(ErrorCode::InvalidArgument, format!("keyPair: {e}")))?;
    let allowed_keys = options
        .allowed_keys
        .iter()
        .map(|key| Key::from_bytes(key))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| core_error(ErrorCode::InvalidKey, format!("scraperPublicKey: {e}")))?;
    // Every argument is checked before the node exists, so a bad one leaves nothing running.
    let alias_config = match options.alias {
        Some(alias) => Some(alias_config(alias, &allowed_keys, key_pair.public_key)?),
        None => None,
    };

    let node = DhtNode::spawn(NodeConfig { bootstrap: options.bootstrap, host: options.host, port: 0, ephemeral: None })
        .await
        .map_err(|e| core_error(ErrorCode::Node, e.to_string()))?;
    let node = Arc::new(node);

    let events_open = Arc::new(AtomicBool::new(true));
    let to_js = Arc::new(to_js);
    let sink = event_sink(to_js.clone(), events_open.clone());
    let stats = Arc::new(Stats::new());
    let source = Arc::new(JsMetricsSource { to_js: to_js.clone() });
    let config = ServerConfig::new(key_pair, allowed_keys);
    let server = match MetricsServer::listen(node.clone(), config, source, sink.clone(), stats.clone()).await {
        Ok(server) => server,
        Err(err) => {
            node.destroy().await;
            return Err(core_error(ErrorCode::Listen, err.to_string()));
        }
    };
    // As the reference: the first registration right after the server listens.
    let registrar = alias_config.map(|config| {
        let transport: Arc<dyn AliasTransport> = match alias_request {
            Some(request) => Arc::new(JsAliasTransport { request: Arc::new(request) }),
            None => Arc::new(Arc::new(NativeAliasTransport::new(node.clone()))),
        };
        Arc::new(AliasRegistrar::start(config, transport, sink, stats.clone()))
    });
    let runtime = tokio::runtime::Handle::current();
    let to_js = std::sync::Mutex::new(Some(to_js));
    Ok(NativeServer { node, server: Arc::new(server), registrar, stats, to_js, events_open, runtime })
}

fn alias_config(options: AliasOptions, scrapers: &[Key], target: Key) -> napi::Result<AliasConfig, ErrorCode> {
    let secret = Key::from_bytes(&options.secret)
        .map_err(|e| core_error(ErrorCode::InvalidKey, format!("scraperSecret {e}")))?;
    let interval = positive_millis(options.register_interval_ms, "registerIntervalMs")?;
    let request_timeout = positive_millis(options.request_timeout_ms.unwrap_or(10_000.0), "requestTimeoutMs")?;
    Ok(AliasConfig {
        scrapers: scrapers.to_vec(),
        secret: secret.0,
        alias: options.alias,
        target_public_key: target,
        hostname: options.hostname,
        service: options.service,
        interval,
        request_timeout,
        idle_timeout: Duration::from_secs(60),
    })
}

#[napi]
impl NativeServer {
    #[napi(getter)]
    pub fn public_key(&self) -> Buffer {
        self.server.public_key().0.to_vec().into()
    }

    /// The addon's own metrics in Prometheus text format.
    #[napi]
    pub fn own_metrics(&self) -> String {
        self.stats.render()
    }

    /// Ends every connection, withdraws the announcement and destroys the node.
    /// Idempotent. The last event it delivers is `closed`, after every other one (one
    /// queue delivers them in order); none follows.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        // Scrapers hear goodbye at once, whatever ending the registrations costs.
        let registrar = async {
            if let Some(registrar) = &self.registrar {
                registrar.close().await;
            }
        };
        tokio::join!(registrar, self.server.close());
        self.node.destroy().await;
        if self.events_open.swap(false, Ordering::SeqCst) {
            // Let go of the listener with the last event (queued calls are still delivered),
            // so that a closed client can be collected.
            let to_js = self.to_js.lock().ok().and_then(|mut slot| slot.take());
            if let Some(to_js) = to_js {
                to_js.call(Either::B(JsEvent::named("closed")), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
        Ok(())
    }
}

fn event_sink(to_js: Arc<ToJsFn>, open: Arc<AtomicBool>) -> EventSink {
    Arc::new(move |event: Event| {
        if !open.load(Ordering::SeqCst) {
            return;
        }
        // Non-blocking: a slow listener queues events, never stalls the network side.
        to_js.call(Either::B(to_js_event(event)), ThreadsafeFunctionCallMode::NonBlocking);
    })
}

fn key_buffer(key: &Key) -> Buffer {
    key.0.to_vec().into()
}

impl JsEvent {
    fn named(name: &str) -> Self {
        JsEvent {
            name: name.into(),
            uid: None,
            remote_public_key: None,
            remote_address: None,
            address: None,
            error_code: None,
            error_message: None,
            payload: None,
            scraper_public_key: None,
            updated: None,
            alias: None,
            target_key: None,
            hostname: None,
            service: None,
        }
    }
}

fn to_js_event(event: Event) -> JsEvent {
    let mut js = JsEvent::named("");
    match event {
        Event::ConnectionOpen { uid, remote_address, remote_public_key } => {
            js.name = "connection-open".into();
            js.uid = Some(uid.to_string());
            js.remote_address = Some(remote_address);
            js.remote_public_key = Some(key_buffer(&remote_public_key));
        }
        Event::ConnectionClose { uid, remote_public_key } => {
            js.name = "connection-close".into();
            js.uid = Some(uid.to_string());
            js.remote_public_key = Some(key_buffer(&remote_public_key));
        }
        Event::ConnectionError { uid, remote_public_key, error } => {
            js.name = "connection-error".into();
            js.uid = Some(uid.to_string());
            js.remote_public_key = Some(key_buffer(&remote_public_key));
            js.error_code = Some(error.code.to_string());
            js.error_message = Some(error.message);
        }
        Event::FirewallBlock { remote_public_key, payload, address } => {
            js.name = "firewall-block".into();
            js.remote_public_key = Some(key_buffer(&remote_public_key));
            js.address = Some(address);
            js.payload = Some(to_js_payload(*payload));
        }
        Event::AliasAttempt { scraper_public_key, alias, target_public_key, hostname, service } => {
            js.name = "alias-attempt".into();
            js.scraper_public_key = Some(key_buffer(&scraper_public_key));
            js.alias = Some(alias);
            js.target_key = Some(key_buffer(&target_public_key));
            js.hostname = Some(hostname);
            js.service = Some(service);
        }
        Event::RegisterAliasSuccess { scraper_public_key, updated } => {
            js.name = "register-alias-success".into();
            js.scraper_public_key = Some(key_buffer(&scraper_public_key));
            js.updated = Some(updated);
        }
        Event::RegisterAliasError { scraper_public_key, error } => {
            js.name = "register-alias-error".into();
            js.scraper_public_key = Some(key_buffer(&scraper_public_key));
            js.error_code = error.code;
            js.error_message = Some(error.message);
        }
    }
    js
}

fn to_js_peer(peer: Ipv4Peer) -> JsPeerAddress {
    JsPeerAddress { host: peer.host, port: u32::from(peer.port) }
}

fn to_js_peers(peers: Vec<Ipv4Peer>) -> Vec<JsPeerAddress> {
    peers.into_iter().map(to_js_peer).collect()
}

/// JS numbers hold these exactly up to 2^53; the wire allows more, so clamp rather than wrap.
fn js_int(n: u64) -> i64 {
    i64::try_from(n.min(crate::wire::MAX_SAFE_INTEGER)).unwrap_or(i64::MAX)
}

fn to_js_payload(payload: NoisePayload) -> JsHandshakePayload {
    JsHandshakePayload {
        version: js_int(payload.version),
        error: js_int(payload.error),
        firewall: js_int(payload.firewall),
        holepunch: payload.holepunch.map(|hp| JsHolepunchInfo {
            id: js_int(hp.id),
            relays: hp
                .relays
                .into_iter()
                .map(|r| JsRelayInfo { relay_address: to_js_peer(r.relay_address), peer_address: to_js_peer(r.peer_address) })
                .collect(),
        }),
        addresses4: to_js_peers(payload.addresses4),
        addresses6: to_js_peers(payload.addresses6),
        udx: payload.udx.map(|u| JsUdxInfo {
            version: js_int(u.version),
            reusable_socket: u.reusable_socket,
            id: js_int(u.id),
            seq: js_int(u.seq),
        }),
        secret_stream: payload.secret_stream.map(|s| JsSecretStreamInfo { version: js_int(s.version) }),
        relay_through: payload.relay_through.map(|r| JsRelayThroughInfo {
            version: js_int(r.version),
            public_key: r.public_key.to_vec().into(),
            token: r.token.to_vec().into(),
        }),
        relay_addresses: payload.relay_addresses.map(to_js_peers),
    }
}
