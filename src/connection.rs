//! One scraper connection: the secret stream over UDX, protomux with the
//! `prometheus-metrics` channel, protomux-rpc `metrics` requests served concurrently.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use peeroxide_dht::secret_stream::SecretStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::events::{ConnectionErrorKind, Event, EventSink};
use crate::transport::{read_loop, write_loop, MAX_FRAME};
use crate::keys::Key;
use crate::mux::{self, Channel, ChannelMessage, ChannelStep, LOCAL_CHANNEL};
use crate::rpc::{self, RpcError};
use crate::server::{MetricsRequestInfo, MetricsSource};
use crate::stats::Stats;
use crate::wire::{self, MetricsRequest};

pub const PROTOCOL: &str = "prometheus-metrics";
pub const METHOD: &str = "metrics";
/// The largest metrics text that fits one reply whatever its request id: the frame less
/// its headers (channel and type, rpc flags and id, reply version, flag and length).
pub const MAX_METRICS_BYTES: usize = MAX_FRAME - 2 - (1 + 9) - (1 + 1 + 9);

/// Requests waiting or running on one connection before it counts as abuse and is closed
/// (protomux-rpc-client sends at most 16 at once).
const MAX_QUEUED_REQUESTS: usize = 1024;
/// Bytes of frames queued for the writer on one connection: room for two of the largest
/// replies. A metrics reply waits for room; an error reply or a reject that finds none
/// closes the connection, as the peer is not reading what it asked for.
const SEND_BUDGET: usize = 2 * MAX_FRAME;
/// How long a handshaken client has to send its first UDX packet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Data unacknowledged this long means the scraper is gone (its keep-alives stopped).
pub const DEAD_PEER_AFTER: Duration = Duration::from_secs(15);

/// How a scraper connection's UDX stream runs: a secret-stream message (its 3-byte
/// length and its body are two writes, then a flush) leaves as one packet, and a
/// vanished peer ends the stream after `DEAD_PEER_AFTER`.
pub fn stream_config() -> udx::Config {
    udx::Config { cork: true, user_timeout: Some(DEAD_PEER_AFTER), ..udx::Config::default() }
}

/// What every connection of one server shares.
pub struct ConnectionContext {
    pub source: Arc<dyn MetricsSource>,
    pub events: EventSink,
    pub stats: Arc<Stats>,
    pub keep_alive: Duration,
    pub max_concurrent_requests: usize,
    pub shutdown: watch::Receiver<bool>,
    pub open_connections: AtomicUsize,
}

/// A handshaken connection whose UDX stream waits for the client's first packet.
pub struct PendingStream {
    pub stream: udx::Stream,
    pub connected: oneshot::Receiver<SocketAddr>,
    pub tx: [u8; 32],
    pub rx: [u8; 32],
    pub handshake_hash: [u8; 64],
    pub remote_public_key: Key,
}

/// Serves one connection to its end. Never panics outward: the work runs in its own
/// task, so a panic there (a bug, or a dependency's) ends this connection only.
pub async fn serve_connection(context: Arc<ConnectionContext>, pending: PendingStream) {
    let remote_public_key = pending.remote_public_key;
    let remote_address = match tokio::time::timeout(CONNECT_TIMEOUT, pending.connected).await {
        Ok(Ok(address)) => address,
        // The client never came; the stream is dropped with its registration.
        _ => return,
    };
    let secret_stream = SecretStream::from_session(
        false,
        pending.stream,
        pending.tx,
        pending.rx,
        pending.handshake_hash,
        remote_public_key.0,
    );
    let Ok(Ok(secret_stream)) = tokio::time::timeout(CONNECT_TIMEOUT, secret_stream).await else {
        return;
    };

    let uid: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    context.open_connections.fetch_add(1, Ordering::Relaxed);
    context.stats.open_connections.inc();
    (context.events)(Event::ConnectionOpen {
        uid: uid.clone(),
        remote_address: remote_address.to_string(),
        remote_public_key,
    });

    let session = Session { context: context.clone(), uid: uid.clone(), remote_public_key };
    let outcome = tokio::spawn(session.run(secret_stream)).await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(join_error) if join_error.is_panic() => Some(ConnectionErrorKind::new(
            "ERR_INTERNAL",
            "internal error while serving the connection; it was closed",
        )),
        Err(_) => None,
    };
    if let Some(error) = error {
        (context.events)(Event::ConnectionError { uid: uid.clone(), remote_public_key, error });
    }
    context.open_connections.fetch_sub(1, Ordering::Relaxed);
    context.stats.open_connections.dec();
    (context.events)(Event::ConnectionClose { uid, remote_public_key });
}

struct Session {
    context: Arc<ConnectionContext>,
    uid: Arc<str>,
    remote_public_key: Key,
}

impl Session {
    async fn run(self, stream: SecretStream<udx::Stream>) -> Result<(), ConnectionErrorKind> {
        let (reader, writer) = stream.into_split();
        // Reads run in their own task: a secret-stream read is not cancel-safe, and the
        // loop below selects on several things at once.
        let (incoming_tx, mut incoming) = mpsc::channel(16);
        let reader_task = tokio::spawn(read_loop(reader, incoming_tx));
        let (frames_tx, frames_rx) = mpsc::unbounded_channel::<Outgoing>();
        let frames = Outbox { frames: frames_tx, budget: Arc::new(Semaphore::new(SEND_BUDGET)) };
        let mut writer_task = tokio::spawn(write_loop(writer, frames_rx, self.context.keep_alive));
        let mut channel = Channel::new(PROTOCOL);
        frames.send_now(channel.open_frame())?;

        let permits = Arc::new(Semaphore::new(self.context.max_concurrent_requests.max(1)));
        let mut requests = JoinSet::new();
        let mut shutdown = self.context.shutdown.clone();

        let result = loop {
            tokio::select! {
                read = incoming.recv() => match read {
                    Some(Ok(frame)) => {
                        match self.on_frame(&frame, &mut channel, &frames, &permits, &mut requests) {
                            Ok(true) => {}
                            // The peer closed the channel: the JS server ends the socket, and
                            // its listeners see the peer's reset.
                            Ok(false) => break Err(ConnectionErrorKind::reset()),
                            Err(error) => break Err(error),
                        }
                    }
                    None => break Err(ConnectionErrorKind::reset()),
                    Some(Err(error)) => break Err(error),
                },
                Some(_) = requests.join_next(), if !requests.is_empty() => {}
                _ = crate::server::closed(&mut shutdown) => {
                    // Scrapes in flight are dropped (and their budget with them); the
                    // scraper sees the channel close.
                    requests.abort_all();
                    let _ = frames.send_now(channel.close_frame());
                    break Ok(());
                }
                done = &mut writer_task => {
                    break match done {
                        Ok(Err(error)) => Err(error),
                        _ => Ok(()),
                    };
                }
            }
        };

        // Reaped, so that no request task keeps the writer's queue open.
        requests.abort_all();
        while requests.join_next().await.is_some() {}
        drop(frames);
        // The writer flushes what is queued, then ends our side; give it a bounded time.
        if !writer_task.is_finished() && tokio::time::timeout(Duration::from_secs(1), &mut writer_task).await.is_err() {
            writer_task.abort();
        }
        // Reading to the peer's end lets a JS peer's destroy() finish at once.
        if result.as_ref().map_or_else(|e| e.code == "ECONNRESET", |_| true) {
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while incoming.recv().await.is_some() {}
            })
            .await;
        }
        reader_task.abort();
        result
    }

    /// Handles one frame; `Ok(false)` means the peer closed our channel.
    fn on_frame(
        &self,
        frame: &[u8],
        channel: &mut Channel,
        frames: &Outbox,
        permits: &Arc<Semaphore>,
        requests: &mut JoinSet<()>,
    ) -> Result<bool, ConnectionErrorKind> {
        let decoded = mux::decode_frame(frame).map_err(protocol_error)?;
        match channel.on_frame(decoded) {
            // Batch items are decoded one at a time, as they are handled.
            ChannelStep::Messages(messages) => {
                for message in messages {
                    self.on_message(message.map_err(protocol_error)?, frames, permits, requests)?;
                }
            }
            ChannelStep::Reply(reply) => frames.send_now(reply)?,
            ChannelStep::Ended => return Ok(false),
            ChannelStep::Nothing => {}
        }
        Ok(true)
    }

    fn on_message(
        &self,
        message: ChannelMessage<'_>,
        frames: &Outbox,
        permits: &Arc<Semaphore>,
        requests: &mut JoinSet<()>,
    ) -> Result<(), ConnectionErrorKind> {
        // Type 1 (responses) cannot arrive for a server that asks nothing; ignore them.
        if message.message_type != rpc::REQUEST_MESSAGE {
            return Ok(());
        }
        let Ok(request) = rpc::Request::decode(message.payload) else {
            // An undecodable request has no id to answer; JS drops it the same way.
            return Ok(());
        };
        let id = request.id;
        if request.method != METHOD {
            if id != 0 {
                let error = RpcError::unknown_method(request.method);
                frames.send_now(response_frame(id, Err(&error)))?;
            }
            return Ok(());
        }
        if let Err(err) = MetricsRequest::decode(request.value) {
            if id != 0 {
                let error = RpcError::decode_error(err.to_string());
                frames.send_now(response_frame(id, Err(&error)))?;
            }
            return Ok(());
        }
        if requests.len() >= MAX_QUEUED_REQUESTS {
            return Err(ConnectionErrorKind::new(
                "ERR_PROTOCOL",
                format!("more than {MAX_QUEUED_REQUESTS} requests in flight on one connection"),
            ));
        }

        let context = self.context.clone();
        let info = MetricsRequestInfo { uid: self.uid.clone(), remote_public_key: self.remote_public_key };
        let frames = frames.clone();
        let permits = permits.clone();
        requests.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else { return };
            let uid = info.uid.clone();
            // Counted while it waits; the count drops with the call, also when the
            // connection closes and drops it unsettled.
            let pending = Pending::new(&context.stats.metrics_pending);
            let result = context.source.metrics(info).await;
            drop(pending);
            let (success, text) = match result {
                Ok(metrics) => (true, metrics),
                Err(_) => {
                    context.stats.metrics_errors.inc();
                    (false, format!("Failed to obtain metrics (uid {uid})"))
                }
            };
            let (success, text) = if success && frame_len_for(id, &text) > MAX_FRAME {
                // One reply is one secret-stream message: too large cannot be sent at all.
                context.stats.metrics_errors.inc();
                let limit = MAX_FRAME;
                (false, format!("Metrics too large to send: {} bytes, the limit is {limit} (uid {uid})", text.len()))
            } else {
                (success, text)
            };
            if id == 0 {
                return;
            }
            let frame = metrics_reply_frame(id, success, &text);
            drop(text);
            let len = frame.len();
            // The request's permit is held until the reply is queued: a peer that does not
            // read stalls its own requests, never this process's memory. Counted before the
            // writer can see the reply, so a scrape that follows it sees it counted.
            frames
                .send(frame, || {
                    if success {
                        context.stats.scrapes_served.inc();
                        context.stats.bytes_sent.inc_by(len as u64);
                    }
                })
                .await;
        });
        Ok(())
    }
}

/// One unit of a gauge for as long as it lives.
struct Pending<'a>(&'a prometheus::IntGauge);

impl<'a> Pending<'a> {
    fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A frame for the writer, holding its share of the connection's send budget until it
/// has been written.
struct Outgoing {
    bytes: Vec<u8>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Outgoing {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The writer's queue, bounded in bytes by a semaphore of [`SEND_BUDGET`] permits.
#[derive(Clone)]
struct Outbox {
    frames: mpsc::UnboundedSender<Outgoing>,
    budget: Arc<Semaphore>,
}

impl Outbox {
    /// A frame never needs more than the whole budget, so the largest one still goes.
    fn cost(bytes: &[u8]) -> u32 {
        u32::try_from(bytes.len().clamp(1, SEND_BUDGET)).unwrap_or(u32::MAX)
    }

    /// Queues a frame now, or fails the connection when the peer leaves no room.
    fn send_now(&self, bytes: Vec<u8>) -> Result<(), ConnectionErrorKind> {
        match self.budget.clone().try_acquire_many_owned(Self::cost(&bytes)) {
            Ok(permit) => {
                // A closed queue means the writer ended; the session notices that itself.
                let _ = self.frames.send(Outgoing { bytes, _budget: Some(permit) });
                Ok(())
            }
            Err(_) => Err(ConnectionErrorKind::new(
                "ERR_PROTOCOL",
                format!("the peer does not read its replies ({SEND_BUDGET} bytes queued)"),
            )),
        }
    }

    /// Queues a frame once there is room; false if the connection has ended. `on_queued`
    /// runs just before the writer can see the frame, and only if it still takes frames.
    async fn send(&self, bytes: Vec<u8>, on_queued: impl FnOnce()) -> bool {
        let Ok(permit) = self.budget.clone().acquire_many_owned(Self::cost(&bytes)).await else {
            return false;
        };
        if self.frames.is_closed() {
            return false;
        }
        on_queued();
        self.frames.send(Outgoing { bytes, _budget: Some(permit) }).is_ok()
    }
}

fn protocol_error(err: mux::MuxError) -> ConnectionErrorKind {
    ConnectionErrorKind::new("ERR_PROTOCOL", err.to_string())
}

/// The exact length of a metrics reply frame, known before it is built.
fn frame_len_for(id: u64, text: &str) -> usize {
    mux::message_header_len(LOCAL_CHANNEL, rpc::RESPONSE_MESSAGE)
        + rpc::ok_response_header_len(id)
        + wire::metrics_reply_len(text)
}

/// The whole frame in one buffer of the exact size: the metrics text is copied once.
fn metrics_reply_frame(id: u64, success: bool, text: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(frame_len_for(id, text));
    mux::write_message_header(&mut frame, LOCAL_CHANNEL, rpc::RESPONSE_MESSAGE);
    rpc::write_ok_response_header(&mut frame, id);
    wire::encode_metrics_reply_into(&mut frame, success, text);
    frame
}

fn response_frame(id: u64, result: Result<&[u8], &RpcError>) -> Vec<u8> {
    let mut frame = Vec::new();
    mux::write_message_header(&mut frame, LOCAL_CHANNEL, rpc::RESPONSE_MESSAGE);
    rpc::Response { id, result: result.map_err(Clone::clone) }.encode_into(&mut frame);
    frame
}


#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> (Outbox, mpsc::UnboundedReceiver<Outgoing>) {
        let (frames, rx) = mpsc::unbounded_channel();
        (Outbox { frames, budget: Arc::new(Semaphore::new(SEND_BUDGET)) }, rx)
    }

    #[test]
    fn error_replies_to_a_peer_that_does_not_read_end_the_connection() {
        // One batch frame of unknown-method requests used to queue every reply at once.
        let (outbox, mut written) = outbox();
        let reply = vec![0u8; 1 << 20];
        let fit = SEND_BUDGET / reply.len();
        for _ in 0..fit {
            outbox.send_now(reply.clone()).expect("room for it");
        }
        let error = outbox.send_now(reply.clone()).expect_err("the budget is spent");
        assert_eq!(error.code, "ERR_PROTOCOL");
        assert!(error.message.contains("does not read"), "{}", error.message);
        // Written frames give their bytes back.
        drop(written.try_recv().expect("queued"));
        outbox.send_now(reply).expect("room again");
    }

    #[tokio::test]
    async fn a_metrics_reply_waits_for_room_and_the_largest_one_still_goes() {
        let (outbox, mut written) = outbox();
        outbox.send_now(vec![0; SEND_BUDGET - 10]).expect("room");
        let waiting = outbox.clone();
        let sent = tokio::spawn(async move { waiting.send(vec![0; MAX_FRAME], || {}).await });
        tokio::task::yield_now().await;
        assert!(!sent.is_finished(), "waits while the queue is full");
        assert!(written.try_recv().is_ok());
        assert!(sent.await.expect("task"), "queued once the first frame is written");
        assert_eq!(written.try_recv().map(|f| f.bytes.len()).ok(), Some(MAX_FRAME));
        assert_eq!(Outbox::cost(&[]), 1);
        assert_eq!(Outbox::cost(&vec![0; SEND_BUDGET + 5]) as usize, SEND_BUDGET);
    }

    #[tokio::test]
    async fn what_a_reply_counts_is_counted_before_the_writer_can_see_it() {
        // A scraper that got reply 1 and asks again must find reply 1 in the counters
        // (includeOwnMetrics): counting after the queue let the next scrape overtake it.
        let (outbox, mut written) = outbox();
        let counted = std::sync::atomic::AtomicBool::new(false);
        let sent = outbox.send(vec![1], || {
            assert!(written.try_recv().is_err(), "the writer saw the frame first");
            counted.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(sent.await);
        assert!(counted.load(std::sync::atomic::Ordering::SeqCst));
        assert!(written.try_recv().is_ok());

        // A connection whose writer has ended counts nothing.
        drop(written);
        assert!(!outbox.send(vec![2], || panic!("counted a frame nobody will write")).await);
    }
}
