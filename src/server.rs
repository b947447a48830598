//! The metrics server: a HyperDHT server on a key pair whose firewall admits only the
//! scraper keys, answering protomux-rpc `prometheus-metrics`/`metrics` on each connection.
//!
//! Built on peeroxide-dht's public pieces (server events, Noise IK, UDX streams, secret
//! stream) because its `run_server` cannot serve JS clients (see PEEROXIDE-NOTES.md).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peeroxide_dht::crypto::{hash, NS_PEER_HANDSHAKE};
use peeroxide_dht::hyperdht::{alloc_stream_id, ServerEvent};
use peeroxide_dht::hyperdht_messages::{
    decode_noise_payload_from_bytes, encode_handshake_to_bytes, encode_noise_payload_to_bytes,
    HandshakeMessage, NoisePayload, SecretStreamInfo, UdxInfo, FIREWALL_OPEN, MODE_FROM_RELAY,
    MODE_FROM_SECOND_RELAY, MODE_FROM_SERVER, MODE_REPLY,
};
use peeroxide_dht::messages::Ipv4Peer;
use peeroxide_dht::noise::{HandshakeIK, Keypair as NoiseKeypair};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::connection::{serve_connection, stream_config, ConnectionContext, PendingStream};
use crate::events::{Event, EventSink};
use crate::holepunch::server::{dispatch, holepunch_secret, Responder};
use crate::keys::{Key, KeyPair};
use crate::node::DhtNode;
use crate::stats::Stats;
use crate::tasks::join_all_within;

/// Where the metrics come from; the napi layer calls the user's `getMetrics` here.
pub trait MetricsSource: Send + Sync + 'static {
    /// Resolves the metrics text, or an error message for the owner's logs (the scraper
    /// only ever sees `Failed to obtain metrics (uid <uid>)`).
    fn metrics(&self, request: MetricsRequestInfo) -> MetricsFuture;
}

pub type MetricsFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Who asks, passed to the source so that its events carry the connection's uid.
#[derive(Debug, Clone)]
pub struct MetricsRequestInfo {
    pub uid: Arc<str>,
    pub remote_public_key: Key,
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("the DHT node already runs a server")]
    AlreadyListening,
    #[error("the DHT node has no server socket")]
    NoSocket,
    #[error("could not announce the server: {0}")]
    Announce(String),
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub key_pair: KeyPair,
    /// Only these remote public keys complete a handshake.
    pub allowed_keys: Vec<Key>,
    /// An empty secret-stream message after this long without writes (JS DHT default).
    pub keep_alive: Duration,
    /// Connections beyond this many are refused at the handshake.
    pub max_connections: usize,
    /// Requests served at once on one connection; more wait their turn.
    pub max_concurrent_requests: usize,
}

impl ServerConfig {
    pub fn new(key_pair: KeyPair, allowed_keys: Vec<Key>) -> Self {
        Self {
            key_pair,
            allowed_keys,
            keep_alive: Duration::from_secs(5),
            max_connections: 64,
            max_concurrent_requests: 16,
        }
    }
}

/// A running server; `close()` ends it, and every connection, within milliseconds.
pub struct MetricsServer {
    public_key: Key,
    shutdown: watch::Sender<bool>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    node: Arc<DhtNode>,
    key_pair: KeyPair,
    holepunch: Arc<Responder>,
}

impl MetricsServer {
    /// Registers the server with the node, announces it, and starts answering handshakes.
    pub async fn listen(
        node: Arc<DhtNode>,
        config: ServerConfig,
        source: Arc<dyn MetricsSource>,
        events: EventSink,
        stats: Arc<Stats>,
    ) -> Result<Self, ServerError> {
        let server_events = node.take_server_events().ok_or(ServerError::AlreadyListening)?;
        let dht_socket = node.handle().server_socket().await.ok().flatten().ok_or(ServerError::NoSocket)?;
        // Datagrams a flood made the DHT's sockets drop (crates/libudx), and datagrams they
        // had no room to send (crates/udx), in ownMetrics. Our streams and DHT replies leave
        // from these two; a puncher's short-lived sockets are not counted.
        let listen_socket = node.handle().listen_socket().await.ok().flatten();
        for socket in std::iter::once(&dht_socket).chain(listen_socket.as_ref()) {
            stats.add_datagram_drop_source(socket.dropped_datagrams_counter());
            if let Some(udx) = socket.udx_socket() {
                stats.add_datagram_unsent_source(udx.backlog_dropped_counter());
            }
        }
        let public_key = config.key_pair.public_key;
        let target = hash(public_key.as_bytes());
        node.handle().register_server(&target);
        let announced = node
            .handle()
            .announce(target, &config.key_pair.to_dht(), &[])
            .await
            .map_err(|e| ServerError::Announce(e.to_string()))?;
        // The nodes holding our announcement relay holepunch rounds to us.
        let holepunch = Responder::new(node.clone(), target);
        let relays = announced.closest_nodes.clone();
        holepunch.announced(announced.closest_nodes);

        let (shutdown, shutdown_rx) = watch::channel(false);
        let context = Arc::new(ConnectionContext {
            source,
            events: events.clone(),
            stats,
            keep_alive: config.keep_alive,
            max_concurrent_requests: config.max_concurrent_requests,
            shutdown: shutdown_rx.clone(),
            open_connections: AtomicUsize::new(0),
        });
        let mut tasks = JoinSet::new();
        // Handshakes and holepunch rounds for our key come off the node's sockets through
        // our wire (to answer them from the socket hyperdht would); handshakes then reach
        // the loop below as server events.
        let stats = context.stats.clone();
        let incoming = node.wire().serve(
            target,
            Arc::new(move |kind: &crate::holepunch::wire::IncomingKind| {
                if matches!(kind, crate::holepunch::wire::IncomingKind::Handshake(_)) {
                    stats.handshakes_dropped.inc();
                }
            }),
        );
        tasks.spawn(dispatch(holepunch.clone(), incoming, node.handle().server_sender().clone(), shutdown_rx.clone()));
        let handshakes = Handshakes {
            holepunch: holepunch.clone(),
            config: config.clone(),
            context,
            replies: ReplyCache::new(REPLY_CACHE_ENTRIES, REPLY_CACHE_BYTES, Duration::from_secs(20)),
        };
        tasks.spawn(handshakes.run(server_events, shutdown_rx.clone()));
        tasks.spawn(reannounce(node.clone(), holepunch.clone(), config.key_pair.clone(), relays, shutdown_rx));

        Ok(Self { public_key, shutdown, tasks: tokio::sync::Mutex::new(tasks), node, key_pair: config.key_pair, holepunch })
    }

    pub fn public_key(&self) -> Key {
        self.public_key
    }

    /// Stops answering handshakes, ends every connection, and withdraws the announcement.
    /// Idempotent; bounded in time even when peers do not answer.
    pub async fn close(&self) {
        // A second call finds the flag set and the tasks gone, and returns as quickly.
        self.shutdown.send_replace(true);
        join_all_within(&mut *self.tasks.lock().await, Duration::from_secs(2)).await;
        let target = hash(self.public_key.as_bytes());
        self.node.wire().unserve(&target);
        self.holepunch.close();
        self.node.handle().unregister_server(&target);
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.node.handle().unannounce(target, &self.key_pair.to_dht()),
        )
        .await;
    }
}

/// Resolves once the server is closing; drops the watch guard before it returns.
pub(crate) async fn closed(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|closed| *closed).await;
}

/// hyperdht's announcer pings the nodes holding our record this often: that keeps our
/// NAT's mappings to them open, so they can still relay a client's handshake to us. A NAT
/// forgets an idle UDP mapping after 30-120 s (Linux: 30 s unanswered, 120 s answered);
/// without the pings a client behind one is unreachable from then until the next announce.
const RELAY_PING_EVERY: Duration = Duration::from_secs(3);
/// ...and announces anew after this many rounds of pings (about 5 minutes), or at once when
/// fewer than this many of them (or than all, if fewer) answer a round.
const PING_ROUNDS_PER_ANNOUNCE: u32 = 100;
const MIN_ACTIVE_RELAYS: usize = 3;

async fn reannounce(
    node: Arc<DhtNode>,
    holepunch: Arc<Responder>,
    key_pair: KeyPair,
    mut relays: Vec<Ipv4Peer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let target = hash(key_pair.public_key.as_bytes());
    let dht_key_pair = key_pair.to_dht();
    loop {
        for _ in 0..PING_ROUNDS_PER_ANNOUNCE {
            tokio::select! {
                _ = tokio::time::sleep(RELAY_PING_EVERY) => {}
                _ = closed(&mut shutdown) => return,
            }
            let answered = tokio::select! {
                answered = ping_all(&node, &relays) => answered,
                _ = closed(&mut shutdown) => return,
            };
            if answered < relays.len().min(MIN_ACTIVE_RELAYS) || relays.is_empty() {
                break; // too many gone (or nobody holds our record): announce again now
            }
        }
        let announced = tokio::select! {
            announced = node.handle().announce(target, &dht_key_pair, &[]) => announced,
            _ = closed(&mut shutdown) => return,
        };
        match announced {
            Ok(announced) => {
                relays = announced.closest_nodes.clone();
                holepunch.announced(announced.closest_nodes);
            }
            Err(err) => tracing::debug!(%err, "re-announce failed; the relays are pinged and it is tried again"),
        }
    }
}

/// Pings every node at once; how many answered.
async fn ping_all(node: &Arc<DhtNode>, nodes: &[Ipv4Peer]) -> usize {
    let mut pings = JoinSet::new();
    for peer in nodes {
        let (node, peer) = (node.clone(), peer.clone());
        pings.spawn(async move { node.handle().dht().ping(&peer.host, peer.port).await.is_ok() });
    }
    let mut answered = 0;
    while let Some(done) = pings.join_next().await {
        answered += usize::from(matches!(done, Ok(true)));
    }
    answered
}

/// Handshakes waiting for their Noise step; beyond this, new ones are dropped unread and
/// counted (`handshakes_dropped`). hyperdht #294 proposes the same bound on concurrent
/// handshakes. JS clients retry a handshake that gets no answer.
const MAX_WAITING_HANDSHAKES: usize = 256;
/// ...and at most this many bytes of their Noise messages (a message is up to 64 KiB).
const MAX_WAITING_BYTES: usize = 4 << 20;
/// Answered handshakes remembered, by count and by bytes of reply.
const REPLY_CACHE_ENTRIES: usize = 1024;
const REPLY_CACHE_BYTES: usize = 1 << 20;

/// Answers server-side handshakes one at a time, so that a flood of handshakes costs
/// one task, and duplicates of a handshake get the first answer (JS clients send each
/// handshake through several nodes and retry it).
///
/// peeroxide-dht queues handshakes on an unbounded channel; this task empties it as fast
/// as it fills (answering duplicates from the cache, dropping what exceeds the bound) and
/// does the costly Noise step only for the bounded queue it keeps itself.
struct Handshakes {
    holepunch: Arc<Responder>,
    config: ServerConfig,
    context: Arc<ConnectionContext>,
    replies: ReplyCache,
}

impl Handshakes {
    async fn run(
        mut self,
        mut server_events: tokio::sync::mpsc::UnboundedReceiver<ServerEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut connections = JoinSet::new();
        let mut waiting = Waiting::default();
        loop {
            // Take everything queued so far before the next Noise step.
            let mut ended = false;
            loop {
                match server_events.try_recv() {
                    Ok(event) => self.intake(event, &mut waiting),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        ended = true;
                        break;
                    }
                }
            }
            while connections.try_join_next().is_some() {}
            if ended || *shutdown.borrow() {
                break;
            }
            if let Some(pending) = waiting.pop() {
                let reply = self.answer(pending.msg, pending.from, pending.peer_address, &mut connections).await;
                let _ = pending.reply_tx.send(reply);
                continue;
            }
            tokio::select! {
                event = server_events.recv() => match event {
                    Some(event) => self.intake(event, &mut waiting),
                    None => break,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = crate::server::closed(&mut shutdown) => break,
            }
        }
        // Handshakes still waiting get no answer (their senders see an empty reply).
        drop(waiting);
        // Let every connection say goodbye, then make sure none outlives the server.
        join_all_within(&mut connections, Duration::from_millis(1500)).await;
    }

    /// Cheap work only: a duplicate is answered from the cache, a handshake beyond the
    /// bound is dropped, the rest wait for `answer`.
    fn intake(&mut self, event: ServerEvent, waiting: &mut Waiting) {
        match event {
            ServerEvent::PeerHandshake { msg, from, peer_address, reply_tx, .. } => {
                if let Some(cached) = self.replies.get(&msg.noise) {
                    let _ = reply_tx.send(cached);
                    return;
                }
                if let Err(dropped) = waiting.push(PendingHandshake { msg, from, peer_address, reply_tx }) {
                    self.context.stats.handshakes_dropped.inc();
                    let _ = dropped.reply_tx.send(None);
                }
            }
            // Our holepunch rounds come through our wire (holepunch::server); one that
            // reached peeroxide instead has no answer.
            ServerEvent::PeerHolepunch { reply_tx, .. } => {
                let _ = reply_tx.send(None);
            }
            _ => {}
        }
    }

    async fn answer(
        &mut self,
        msg: HandshakeMessage,
        from: Ipv4Peer,
        peer_address: Option<Ipv4Peer>,
        connections: &mut JoinSet<()>,
    ) -> Option<Vec<u8>> {
        // A duplicate that arrived while its first copy was waiting.
        if let Some(cached) = self.replies.get(&msg.noise) {
            return cached;
        }
        let key = ReplyCache::key(&msg.noise);
        let reply = self.handshake(msg, from, peer_address, connections).await;
        self.replies.insert(key, reply.clone());
        reply
    }

    async fn handshake(
        &mut self,
        msg: HandshakeMessage,
        from: Ipv4Peer,
        peer_address: Option<Ipv4Peer>,
        connections: &mut JoinSet<()>,
    ) -> Option<Vec<u8>> {
        let relayed = matches!(msg.mode, MODE_FROM_RELAY | MODE_FROM_SECOND_RELAY);
        // The firewall is given the claimed client address, as in JS; it decides on the
        // key alone (hyperdht #295: the address is the peer's to choose).
        let client_address = peer_address.clone().unwrap_or_else(|| from.clone());
        let key_pair = &self.config.key_pair;
        let mut noise = HandshakeIK::new_responder(
            NoiseKeypair { public_key: key_pair.public_key.0, secret_key: key_pair.secret_key },
            &*NS_PEER_HANDSHAKE,
        );
        // One decrypt; nothing is allocated for a key the firewall drops.
        let plaintext = noise.recv(&msg.noise).ok()?;
        let remote_public_key = Key(*noise.remote_static_key()?);
        let remote_payload = decode_noise_payload_from_bytes(&plaintext).ok()?;

        if !self.config.allowed_keys.contains(&remote_public_key) {
            self.context.stats.firewall_blocks.inc();
            (self.context.events)(Event::FirewallBlock {
                remote_public_key,
                payload: Box::new(remote_payload),
                address: format!("{}:{}", client_address.host, client_address.port),
            });
            return None;
        }
        if *self.context.shutdown.borrow() {
            return None;
        }
        if self.context.open_connections.load(Ordering::Relaxed) >= self.config.max_connections {
            tracing::debug!("connection limit reached; handshake dropped");
            return None;
        }
        let remote_udx = remote_payload.udx.as_ref()?;
        let remote_stream_id = u32::try_from(remote_udx.id).ok()?;
        if remote_payload.version != 1 {
            return None;
        }

        // A holepunch slot, and what the reply may honestly say (holepunch::server).
        let Some(offer) = self.holepunch.offer(&msg.noise, &client_address, relayed).await else {
            tracing::debug!("every holepunch slot is taken; handshake dropped");
            return None;
        };
        let local_stream_id = alloc_stream_id();
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let client_addr = client_address.host.parse().ok().map(|ip| SocketAddr::new(ip, client_address.port));
        // As hyperdht's server: a client that says it is reachable (or that reached us
        // directly) is dialled at once; otherwise the stream waits for the client's first
        // packet, which fixes its address.
        let dial = (remote_payload.firewall == FIREWALL_OPEN || !relayed)
            .then_some(client_addr)
            .flatten()
            .filter(|addr: &SocketAddr| addr.port() != 0);
        let stream = match dial {
            Some(addr) => {
                let stream = udx::Stream::connect_with(&offer.dial_socket, local_stream_id, remote_stream_id, addr, stream_config()).ok()?;
                let _ = connected_tx.send(addr);
                stream
            }
            // The client's first packet may come to any of our sockets (a puncher's too).
            None => udx::Stream::listen_on(&offer.listen_sockets, local_stream_id, remote_stream_id, offer.hook(connected_tx), stream_config()).ok()?,
        };

        let reply_payload = NoisePayload {
            version: 1,
            error: 0,
            firewall: offer.firewall,
            holepunch: offer.holepunch.clone(),
            addresses4: offer.addresses4.clone(),
            addresses6: vec![],
            udx: Some(UdxInfo { version: 1, reusable_socket: false, id: u64::from(local_stream_id), seq: 0 }),
            secret_stream: Some(SecretStreamInfo { version: 1 }),
            relay_through: None,
            relay_addresses: None,
        };
        let reply_noise = noise.send(&encode_noise_payload_to_bytes(&reply_payload).ok()?).ok()?;
        let session = noise.result()?.clone();

        // Dialled, or waiting for the client (punching first if need be): the stream is
        // served once it has its peer, dropped if the punch is given up.
        let wait = offer.finish(holepunch_secret(&session.handshake_hash), &remote_payload, dial.is_some(), stream.handle());
        let context = self.context.clone();
        connections.spawn(async move {
            let Some(address) = wait.connected(connected_rx).await else { return };
            let (connected_tx, connected) = tokio::sync::oneshot::channel();
            let _ = connected_tx.send(address);
            let pending = PendingStream {
                stream,
                connected,
                tx: session.tx,
                rx: session.rx,
                handshake_hash: session.handshake_hash,
                remote_public_key,
            };
            serve_connection(context, pending).await;
        });

        let reply = HandshakeMessage {
            mode: if relayed { MODE_FROM_SERVER } else { MODE_REPLY },
            noise: reply_noise,
            peer_address: if relayed { peer_address } else { None },
            relay_address: None,
        };
        encode_handshake_to_bytes(&reply).ok()
    }
}

/// A handshake taken from peeroxide's queue, waiting for its Noise step.
struct PendingHandshake {
    msg: HandshakeMessage,
    from: Ipv4Peer,
    peer_address: Option<Ipv4Peer>,
    reply_tx: tokio::sync::oneshot::Sender<Option<Vec<u8>>>,
}

/// The bounded queue of [`PendingHandshake`]s, oldest first.
#[derive(Default)]
struct Waiting {
    queue: VecDeque<PendingHandshake>,
    bytes: usize,
}

impl Waiting {
    /// Queues the handshake, or gives it back when the queue is full.
    // Given back by value: boxing it would allocate for every handshake a flood drops.
    #[allow(clippy::result_large_err)]
    fn push(&mut self, pending: PendingHandshake) -> Result<(), PendingHandshake> {
        let size = pending.msg.noise.len();
        if self.queue.len() >= MAX_WAITING_HANDSHAKES || self.bytes + size > MAX_WAITING_BYTES {
            return Err(pending);
        }
        self.bytes += size;
        self.queue.push_back(pending);
        Ok(())
    }

    fn pop(&mut self) -> Option<PendingHandshake> {
        let pending = self.queue.pop_front()?;
        self.bytes -= pending.msg.noise.len();
        Some(pending)
    }
}

/// Replies by a hash of the incoming Noise message (never the message itself, which may
/// be 64 KiB), bounded in count, bytes and age.
struct ReplyCache {
    entries: HashMap<[u8; 32], (Instant, Option<Vec<u8>>)>,
    order: VecDeque<[u8; 32]>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    ttl: Duration,
}

impl ReplyCache {
    fn new(capacity: usize, max_bytes: usize, ttl: Duration) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), capacity, max_bytes, bytes: 0, ttl }
    }

    /// BLAKE2b-256: a peer cannot make two messages share an entry.
    fn key(noise: &[u8]) -> [u8; 32] {
        hash(noise)
    }

    /// What an entry costs: its key, its time and its reply.
    fn cost(reply: &Option<Vec<u8>>) -> usize {
        std::mem::size_of::<([u8; 32], Instant, Option<Vec<u8>>)>() + reply.as_ref().map_or(0, Vec::len)
    }

    fn get(&mut self, noise: &[u8]) -> Option<Option<Vec<u8>>> {
        self.expire();
        self.entries.get(&Self::key(noise)).map(|(_, reply)| reply.clone())
    }

    fn insert(&mut self, key: [u8; 32], reply: Option<Vec<u8>>) {
        self.expire();
        let cost = Self::cost(&reply);
        // The first answer stands (and keeps its one place in `order`).
        if cost > self.max_bytes || self.entries.contains_key(&key) {
            return;
        }
        while self.entries.len() >= self.capacity || self.bytes + cost > self.max_bytes {
            if !self.evict_oldest() {
                break;
            }
        }
        self.bytes += cost;
        self.order.push_back(key);
        self.entries.insert(key, (Instant::now(), reply));
    }

    fn evict_oldest(&mut self) -> bool {
        let Some(oldest) = self.order.pop_front() else { return false };
        if let Some((_, reply)) = self.entries.remove(&oldest) {
            self.bytes -= Self::cost(&reply);
        }
        true
    }

    fn expire(&mut self) {
        while let Some(oldest) = self.order.front() {
            match self.entries.get(oldest) {
                Some((at, _)) if at.elapsed() < self.ttl => break,
                _ => {
                    self.evict_oldest();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(cache: &mut ReplyCache, noise: &[u8], reply: Option<Vec<u8>>) {
        cache.insert(ReplyCache::key(noise), reply);
    }

    #[test]
    fn reply_cache_is_bounded_and_remembers_drops() {
        let mut cache = ReplyCache::new(2, 1 << 20, Duration::from_secs(60));
        insert(&mut cache, &[1], Some(vec![10]));
        insert(&mut cache, &[2], None);
        assert_eq!(cache.get(&[1]), Some(Some(vec![10])));
        assert_eq!(cache.get(&[2]), Some(None));
        insert(&mut cache, &[3], Some(vec![30]));
        assert_eq!(cache.get(&[1]), None, "the oldest entry makes room");
        assert_eq!(cache.entries.len(), 2);
    }

    #[test]
    fn reply_cache_expires() {
        let mut cache = ReplyCache::new(8, 1 << 20, Duration::from_millis(0));
        insert(&mut cache, &[1], None);
        assert_eq!(cache.get(&[1]), None);
        assert!(cache.order.is_empty());
        assert_eq!(cache.bytes, 0);
    }

    #[test]
    fn reply_cache_keeps_a_hash_of_the_message_not_the_message() {
        // The largest Noise message a UDP datagram carries: it used to be kept twice.
        let noise = vec![7u8; 64 * 1024];
        let mut cache = ReplyCache::new(1024, 1 << 20, Duration::from_secs(60));
        insert(&mut cache, &noise, None);
        assert_eq!(cache.get(&noise), Some(None));
        let mut other = noise.clone();
        other[0] = 8;
        assert_eq!(cache.get(&other), None, "one byte apart is another handshake");
        assert!(cache.bytes < 128, "an entry costs {} bytes", cache.bytes);
        assert!(cache.entries.keys().chain(cache.order.iter()).all(|key| key.len() == 32));
    }

    #[test]
    fn reply_cache_is_bounded_in_bytes() {
        let reply = Some(vec![0u8; 1000]);
        let per_entry = ReplyCache::cost(&reply);
        let mut cache = ReplyCache::new(1024, 10 * per_entry, Duration::from_secs(60));
        for i in 0..100u32 {
            insert(&mut cache, &i.to_le_bytes(), reply.clone());
            assert!(cache.bytes <= 10 * per_entry);
        }
        assert_eq!(cache.entries.len(), 10);
        assert_eq!(cache.get(&99u32.to_le_bytes()), Some(reply.clone()), "the newest stay");
        assert_eq!(cache.get(&89u32.to_le_bytes()), None);
        // The first answer to a message stands.
        insert(&mut cache, &99u32.to_le_bytes(), None);
        assert_eq!(cache.get(&99u32.to_le_bytes()), Some(reply.clone()));
        assert_eq!((cache.entries.len(), cache.order.len(), cache.bytes), (10, 10, 10 * per_entry));
        // A reply larger than the whole budget is not kept.
        insert(&mut cache, b"big", Some(vec![0; 20 * per_entry]));
        assert_eq!(cache.get(b"big"), None);
    }

    fn pending(noise_len: usize) -> PendingHandshake {
        let (reply_tx, _) = tokio::sync::oneshot::channel();
        PendingHandshake {
            msg: HandshakeMessage { mode: MODE_REPLY, noise: vec![0; noise_len], peer_address: None, relay_address: None },
            from: Ipv4Peer { host: "127.0.0.1".into(), port: 1 },
            peer_address: None,
            reply_tx,
        }
    }

    #[test]
    fn the_waiting_queue_is_bounded_in_count_and_bytes() {
        let mut waiting = Waiting::default();
        for _ in 0..MAX_WAITING_HANDSHAKES {
            assert!(waiting.push(pending(100)).is_ok());
        }
        assert!(waiting.push(pending(100)).is_err(), "one more than the count");
        while waiting.pop().is_some() {}
        assert_eq!(waiting.bytes, 0);
        let big = MAX_WAITING_BYTES / 4;
        for _ in 0..4 {
            assert!(waiting.push(pending(big)).is_ok());
        }
        assert!(waiting.push(pending(1)).is_err(), "one byte more than the budget");
        assert_eq!(waiting.pop().map(|p| p.msg.noise.len()), Some(big), "oldest first");
        assert!(waiting.push(pending(1)).is_ok());
    }
}
