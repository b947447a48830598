//! An outgoing protomux-rpc connection: dial a public key over the DHT, open one channel
//! (protocol, empty id), send requests and match responses by id, each with a timeout.
//! The alias client and the native scraper are built on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::events::ConnectionErrorKind;
use crate::keys::{Key, KeyPair};
use crate::mux::{self, Channel, ChannelStep, LOCAL_CHANNEL};
use crate::node::DhtNode;
use crate::redial::{Missed, OnFailure, Redial};
use crate::rpc::{self, RequestIds, RpcError};
use crate::transport::{read_loop, write_loop};
use crate::wire::WireError;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ClientError {
    /// The DHT found no way to the key, or the handshake was refused (a firewall).
    #[error("could not connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    /// Connecting took longer than allowed.
    #[error("connecting to {target} timed out after {ms} ms")]
    ConnectTimeout { target: String, ms: u64 },
    /// No reply in time; a late reply is ignored.
    #[error("timeout of {0}ms exceeded")]
    Timeout(u64),
    /// The channel or connection closed before the reply.
    #[error("channel closed")]
    ChannelClosed,
    /// The peer answered with a protomux-rpc error.
    #[error("{}", .0.js_message())]
    Remote(RpcError),
    /// The reply was not what the protocol says.
    #[error("could not decode response: {0}")]
    Decode(WireError),
    /// The reply is larger than the caller accepts.
    #[error("response of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

impl ClientError {
    /// The `code` a JS error for this carries (protomux-rpc-client's where it has one).
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "PEER_CONNECTION_FAILED",
            ClientError::ConnectTimeout { .. } => "REQUEST_TIMEOUT",
            ClientError::Timeout(_) => "TIMEOUT_EXCEEDED",
            ClientError::ChannelClosed => "CHANNEL_CLOSED",
            ClientError::Remote(err) => err.js_code().map_or("REQUEST_ERROR", |code| code.as_str()),
            ClientError::Decode(_) => "DECODE_ERROR",
            ClientError::TooLarge { .. } => "RESPONSE_TOO_LARGE",
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Vec<u8>, ClientError>>>>>;

pub struct RpcConnection {
    /// Taken (dropped) by `close`: the writer ends once every sender is gone.
    frames: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    pending: Pending,
    ids: Mutex<RequestIds>,
    closed: Arc<AtomicBool>,
    /// Tells the connection task to stop waiting for the peer (`close`).
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl RpcConnection {
    /// Dials `remote` with `key_pair` and opens the `protocol` channel.
    pub async fn connect(
        node: &DhtNode,
        key_pair: &KeyPair,
        remote: Key,
        protocol: &'static str,
        connect_timeout: Duration,
        keep_alive: Duration,
    ) -> Result<Self, ClientError> {
        let target = remote.to_z32();
        // hyperdht's connect, holepunching included (holepunch::client).
        let dial = crate::holepunch::client::connect(node, key_pair, remote.0);
        let stream = match tokio::time::timeout(connect_timeout, dial).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(ClientError::Connect { target, reason: err.to_string() }),
            Err(_) => {
                let ms = u64::try_from(connect_timeout.as_millis()).unwrap_or(u64::MAX);
                return Err(ClientError::ConnectTimeout { target, ms });
            }
        };
        let (reader, writer) = stream.into_split();
        let (frames, frames_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::channel(16);
        let channel = Channel::new(protocol);
        let _ = frames.send(channel.open_frame());

        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let reader_task = tokio::spawn(read_loop(reader, incoming_tx));
        let writer_task = tokio::spawn(write_loop(writer, frames_rx, keep_alive));
        let dispatch = Dispatch { pending: pending.clone(), frames: frames.clone() };
        let task_closed = closed.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Ends when the peer ends the channel or the stream, or when we close: a JS
            // protomux peer never answers a channel close, so that is not waited for.
            tokio::select! {
                _ = dispatch.run(channel, incoming) => {}
                _ = stopped => {}
            }
            task_closed.store(true, Ordering::SeqCst);
            dispatch.fail_all();
            reader_task.abort();
            // The writer ends itself once every sender is gone; bound it all the same.
            drop(dispatch);
            let abort = writer_task.abort_handle();
            if tokio::time::timeout(Duration::from_millis(500), writer_task).await.is_err() {
                abort.abort();
            }
        });
        Ok(Self {
            frames: Mutex::new(Some(frames)),
            pending,
            ids: Mutex::new(RequestIds::new()),
            closed,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends `method(value)` and waits up to `timeout` for the response value.
    pub async fn request(&self, method: &str, value: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        if self.is_closed() {
            return Err(ClientError::ChannelClosed);
        }
        let id = self.ids.lock().map_err(|_| ClientError::ChannelClosed)?.next_id();
        let (reply_tx, reply_rx) = oneshot::channel();
        self.pending.lock().map_err(|_| ClientError::ChannelClosed)?.insert(id, reply_tx);

        let request = rpc::Request { id, method, value };
        let mut frame = Vec::with_capacity(
            mux::message_header_len(LOCAL_CHANNEL, rpc::REQUEST_MESSAGE) + request.encoded_len(),
        );
        mux::write_message_header(&mut frame, LOCAL_CHANNEL, rpc::REQUEST_MESSAGE);
        request.encode_into(&mut frame);
        let sent = self.frames.lock().ok().and_then(|frames| frames.as_ref().map(|f| f.send(frame).is_ok()));
        if sent != Some(true) {
            self.forget(id);
            return Err(ClientError::ChannelClosed);
        }
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::ChannelClosed),
            Err(_) => {
                self.forget(id);
                Err(ClientError::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)))
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
    }

    /// Closes the channel and the connection; requests still waiting get ChannelClosed.
    pub async fn close(&self) {
        // The close frame goes out, then our sender goes: the writer flushes and ends our
        // side of the stream without waiting for the peer.
        if let Some(frames) = self.frames.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = frames.send(mux::encode_close(LOCAL_CHANNEL));
        }
        if let Some(stop) = self.stop.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = stop.send(());
        }
        let task = self.task.lock().ok().and_then(|mut slot| slot.take());
        if let Some(task) = task {
            let abort = task.abort_handle();
            // Only our own writer is left to finish; bound it all the same.
            if tokio::time::timeout(Duration::from_millis(200), task).await.is_err() {
                abort.abort();
            }
        }
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut pending) = self.pending.lock() {
            pending.clear();
        }
    }
}

/// One dial attempt's bound. hyperdht's connect bounds itself (a random-NAT punch gives
/// up after 35 s of probes, a try-later waits 10-20 s); this only keeps a wedged attempt
/// from holding the dial forever.
const DIAL_LIMIT: Duration = Duration::from_secs(90);

/// The connection to one remote, dialled in the background so that a slow punch outlives
/// the request that started it ([`Redial`]), and dialled again once it has closed.
pub struct RpcLink {
    redial: Redial<RpcConnection, ClientError>,
    node: Arc<DhtNode>,
    key_pair: KeyPair,
    remote: Key,
    protocol: &'static str,
    keep_alive: Duration,
}

impl RpcLink {
    pub fn new(node: Arc<DhtNode>, key_pair: KeyPair, remote: Key, protocol: &'static str, keep_alive: Duration, on_failure: OnFailure) -> Self {
        Self { redial: Redial::new(|c: &RpcConnection| !c.is_closed(), on_failure), node, key_pair, remote, protocol, keep_alive }
    }

    /// The open connection, waiting at most `wait` for one (then `ConnectTimeout`).
    pub async fn connection(&self, wait: Duration) -> Result<Arc<RpcConnection>, ClientError> {
        let (node, key_pair, remote, protocol, keep_alive) =
            (self.node.clone(), self.key_pair.clone(), self.remote, self.protocol, self.keep_alive);
        let dial = move || {
            let (node, key_pair) = (node.clone(), key_pair.clone());
            async move { RpcConnection::connect(&node, &key_pair, remote, protocol, DIAL_LIMIT, keep_alive).await }
        };
        self.redial.get(wait, dial).await.map_err(|missed| match missed {
            Missed::Failed(error) => error,
            Missed::TimedOut => ClientError::ConnectTimeout {
                target: self.remote.to_z32(),
                ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            },
        })
    }

    /// Stops a dial under way and closes the connection made, if any; a later
    /// [`connection`](Self::connection) dials again.
    pub async fn close(&self) {
        if let Some(connection) = self.redial.take() {
            connection.close().await;
        }
    }
}

impl Drop for RpcConnection {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut slot| slot.take()) {
            task.abort();
        }
    }
}

struct Dispatch {
    pending: Pending,
    frames: mpsc::UnboundedSender<Vec<u8>>,
}

impl Dispatch {
    async fn run(&self, mut channel: Channel, mut incoming: mpsc::Receiver<Result<Vec<u8>, ConnectionErrorKind>>) {
        while let Some(Ok(frame)) = incoming.recv().await {
            // A frame we cannot parse ends the connection, as a JS peer's would.
            let Ok(decoded) = mux::decode_frame(&frame) else { return };
            match channel.on_frame(decoded) {
                // Batch items are decoded one at a time; a malformed one ends the connection.
                ChannelStep::Messages(messages) => {
                    for message in messages {
                        let Ok(message) = message else { return };
                        if message.message_type == rpc::RESPONSE_MESSAGE {
                            self.on_response(message.payload);
                        }
                    }
                }
                ChannelStep::Reply(reply) => {
                    let _ = self.frames.send(reply);
                }
                ChannelStep::Ended => return,
                ChannelStep::Nothing => {}
            }
        }
    }

    fn on_response(&self, payload: &[u8]) {
        let Ok(response) = rpc::Response::decode(payload) else { return };
        let waiter = self.pending.lock().ok().and_then(|mut pending| pending.remove(&response.id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(response.result.map(<[u8]>::to_vec).map_err(ClientError::Remote));
        }
    }

    fn fail_all(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            for (_, waiter) in pending.drain() {
                let _ = waiter.send(Err(ClientError::ChannelClosed));
            }
        }
    }
}
