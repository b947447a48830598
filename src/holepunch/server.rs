//! The server side of hyperdht's holepunch protocol (`lib/server.js`: `_addHandshake`,
//! `_onpeerholepunch`, `_abort`, `_clearLater`), for one served key.
//!
//! A handshake gets a slot (its `holepunch.id`), honest payload fields (firewall OPEN only
//! when the node is reachable unsolicited; otherwise the holepunch id and the relays with
//! the address each saw us at; no address a peer cannot use), and, when the client is
//! neither open nor direct, a puncher whose socket the handshake reply leaves from (the
//! client learns that socket's address and probes it at once). `PEER_HOLEPUNCH` rounds
//! then run against that puncher. A slot is freed 10 s after its connection opened or was
//! given up, at most `MAX_HANDSHAKES` are held, and `close()` drops them all.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};
use peeroxide_dht::crypto::NS_PEER_HOLEPUNCH;
use peeroxide_dht::hyperdht::ServerEvent;
use peeroxide_dht::hyperdht_messages::{
    encode_holepunch_msg_to_bytes, HandshakeMessage, HolepunchInfo, RelayInfo, HolepunchMessage, HolepunchPayload, NoisePayload,
    ERROR_ABORTED, ERROR_NONE, ERROR_TRY_LATER, FIREWALL_OPEN, FIREWALL_RANDOM, FIREWALL_UNKNOWN, MODE_FROM_CLIENT,
    MODE_FROM_RELAY, MODE_FROM_SECOND_RELAY, MODE_FROM_SERVER, PEER_HANDSHAKE, PEER_HOLEPUNCH,
};
use peeroxide_dht::messages::Ipv4Peer;
use peeroxide_dht::secure_payload::SecurePayload;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::puncher::{is_consistent, PunchEvent, Puncher, SocketSink};
use super::wire::{Incoming, IncomingKind};
use super::{addr_of, error_payload, is_bogon, match_address, peer_of, same_peer};
use crate::node::DhtNode;

/// Handshakes held at once (each a slot, maybe a puncher); more are dropped until slots
/// free up (hyperdht holds unbounded many).
pub const MAX_HANDSHAKES: usize = 256;
/// How long a slot outlives its outcome, so late holepunch rounds still find it.
pub const CLEAR_WAIT: Duration = Duration::from_secs(10);
/// How long a client has to start punching (or to dial in) after the handshake.
pub const INITIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Arrival details kept for handshakes not answered yet.
const ARRIVALS: usize = 1024;
const ARRIVAL_TTL: Duration = Duration::from_secs(30);
/// Holepunch rounds being answered at once.
const MAX_IN_FLIGHT: usize = 128;

type Blake2b256 = blake2::Blake2bMac<U32>;

/// The holepunch secret of a finished Noise handshake (hyperdht `noise-wrap.js`:
/// keyed BLAKE2b-256 of the namespace, keyed by the handshake hash).
pub fn holepunch_secret(handshake_hash: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(mut mac) = <Blake2b256 as KeyInit>::new_from_slice(handshake_hash) {
        mac.update(&*NS_PEER_HOLEPUNCH);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// How a handshake reached us (known when it came through our wire).
#[derive(Clone)]
struct Arrival {
    via: udx::Socket,
    /// Our address as the node that handed it to us saw it.
    to: Ipv4Peer,
}

pub struct Responder {
    node: Arc<DhtNode>,
    target: [u8; 32],
    st: Mutex<State>,
    closing: AtomicBool,
    /// The nodes our last announcements went to, newest last (hyperdht keeps three
    /// rounds to recognise a relay of ours).
    announced: Mutex<VecDeque<Vec<Ipv4Peer>>>,
}

/// Announcement rounds whose nodes still count as our relays.
const RELAY_ROUNDS: usize = 3;

#[derive(Default)]
struct State {
    slots: Vec<Option<Arc<Hs>>>,
    /// By the handshake's Noise bytes: how it arrived, and its slot once answered.
    handshakes: HashMap<Vec<u8>, Known>,
}

struct Known {
    arrival: Option<Arrival>,
    slot: Option<usize>,
    at: Instant,
}

/// One handshake's holepunch state (hyperdht's `hs`).
pub struct Hs {
    id: usize,
    st: Mutex<HsState>,
    /// Holepunch rounds of one handshake are answered one at a time.
    turn: tokio::sync::Mutex<()>,
    ended: watch::Sender<bool>,
    /// When the client must have started punching or dialled in; `None`: no deadline.
    prepunch: watch::Sender<Option<Instant>>,
}

#[derive(Default)]
struct HsState {
    round: u64,
    payload: Option<Arc<SecurePayload>>,
    puncher: Option<Puncher>,
    reply_from_puncher: bool,
    connected: bool,
    aborted: bool,
    clear_at: Option<Instant>,
}

impl Hs {
    fn lock(&self) -> MutexGuard<'_, HsState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn clear_later(st: &mut HsState) {
        if st.clear_at.is_none() {
            st.clear_at = Some(Instant::now() + CLEAR_WAIT);
        }
    }

    /// The stream has its peer (hyperdht's `onsocket`): punching is over.
    fn on_socket(&self) {
        let puncher = {
            let mut st = self.lock();
            if st.connected {
                return;
            }
            st.connected = true;
            Self::clear_later(&mut st);
            st.puncher.take()
        };
        self.prepunch.send_replace(None);
        if let Some(puncher) = puncher {
            puncher.destroy();
        }
    }

    /// Gives the handshake up (hyperdht's `onabort`): the pending stream is dropped.
    fn abort(&self) {
        let puncher = {
            let mut st = self.lock();
            if st.connected || st.aborted {
                return;
            }
            st.aborted = true;
            Self::clear_later(&mut st);
            st.puncher.take()
        };
        self.prepunch.send_replace(None);
        if let Some(puncher) = puncher {
            puncher.destroy();
        }
        self.ended.send_replace(true);
    }
}

/// What the handshake reply says and where its stream listens; from [`Responder::offer`].
pub struct Offer {
    hs: Arc<Hs>,
    responder: Arc<Responder>,
    pub firewall: u64,
    pub holepunch: Option<HolepunchInfo>,
    pub addresses4: Vec<Ipv4Peer>,
    /// A dialled stream sends from here (the socket a direct handshake came in on).
    pub dial_socket: udx::Socket,
    /// A listening stream accepts its peer on these (the node's sockets; a puncher's
    /// are added as they open).
    pub listen_sockets: Vec<udx::Socket>,
    our_remote: bool,
    relayed: bool,
    client_address: Ipv4Peer,
    server_address: Option<Ipv4Peer>,
    finished: bool,
}

impl Drop for Offer {
    fn drop(&mut self) {
        // A handshake that failed after its offer: the slot goes at once.
        if !self.finished {
            self.responder.release(self.hs.id);
        }
    }
}

/// Waits for a handshake's stream to get its peer; from [`Responder::finish`].
pub struct HsWait {
    hs: Arc<Hs>,
    events: Option<mpsc::UnboundedReceiver<PunchEvent>>,
}

impl HsWait {
    /// The peer's address once the stream has one; `None` when the handshake was given up
    /// (no punch started in time, the punch failed, or the server closed).
    pub async fn connected(mut self, connected: oneshot::Receiver<SocketAddr>) -> Option<SocketAddr> {
        tokio::pin!(connected);
        let mut ended = self.hs.ended.subscribe();
        let mut prepunch = self.hs.prepunch.subscribe();
        loop {
            let deadline = *prepunch.borrow_and_update();
            let timeout = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                addr = &mut connected => return addr.ok(),
                _ = ended.wait_for(|e| *e) => return None,
                _ = prepunch.changed() => {}
                _ = timeout => {
                    hp_debug!("wait id={} prepunch timeout", self.hs.id);
                    self.hs.abort();
                    return None;
                }
                event = async {
                    match self.events.as_mut() {
                        Some(events) => events.recv().await,
                        None => std::future::pending().await,
                    }
                } => match event {
                    Some(PunchEvent::Aborted) | None => {
                        hp_debug!("wait id={} puncher aborted", self.hs.id);
                        self.events = None;
                        self.hs.abort();
                    }
                    Some(PunchEvent::Connected { .. }) => {}
                },
            }
        }
    }
}

impl Responder {
    pub fn new(node: Arc<DhtNode>, target: [u8; 32]) -> Arc<Self> {
        Arc::new(Self {
            node,
            target,
            st: Mutex::new(State::default()),
            closing: AtomicBool::new(false),
            announced: Mutex::new(VecDeque::new()),
        })
    }

    /// The nodes an announcement went to (hyperdht's announcer: they hold our record,
    /// relay handshakes and holepunch rounds to us).
    pub fn announced(&self, nodes: Vec<Ipv4Peer>) {
        let mut rounds = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        if rounds.len() >= RELAY_ROUNDS {
            rounds.pop_front();
        }
        rounds.push_back(nodes);
    }

    /// The relays of the last announcement, each with the address it saw us at.
    fn relays(&self) -> Vec<RelayInfo> {
        let rounds = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        let Some(latest) = rounds.back() else { return Vec::new() };
        latest
            .iter()
            .filter_map(|relay| {
                let seen = self.node.wire().seen_by(addr_of(relay)?)?;
                Some(RelayInfo { relay_address: relay.clone(), peer_address: seen })
            })
            .collect()
    }

    /// Whether `addr` took one of our last announcements.
    fn is_relay(&self, addr: SocketAddr) -> bool {
        let peer = peer_of(addr);
        self.announced.lock().unwrap_or_else(|e| e.into_inner()).iter().flatten().any(|r| *r == peer)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, id: u64) -> Option<Arc<Hs>> {
        let id = usize::try_from(id).ok()?;
        self.lock().slots.get(id).cloned().flatten()
    }

    /// Frees slots whose time is up and forgets stale arrivals.
    fn sweep(st: &mut State) {
        let now = Instant::now();
        for slot in st.slots.iter_mut() {
            if slot.as_ref().is_some_and(|hs| hs.lock().clear_at.is_some_and(|at| at <= now)) {
                *slot = None;
            }
        }
        while st.slots.last().is_some_and(|s| s.is_none()) {
            st.slots.pop();
        }
        let slots = &st.slots;
        st.handshakes.retain(|_, known| match known.slot {
            Some(id) => slots.get(id).is_some_and(|s| s.is_some()),
            None => now.duration_since(known.at) < ARRIVAL_TTL,
        });
    }

    fn release(&self, id: usize) {
        let mut st = self.lock();
        if let Some(slot) = st.slots.get_mut(id) {
            *slot = None;
        }
        Self::sweep(&mut st);
    }

    fn note_arrival(&self, noise: &[u8], arrival: Arrival) {
        let mut st = self.lock();
        Self::sweep(&mut st);
        if st.handshakes.len() >= ARRIVALS && !st.handshakes.contains_key(noise) {
            return;
        }
        st.handshakes.entry(noise.to_vec()).or_insert(Known { arrival: Some(arrival), slot: None, at: Instant::now() });
    }

    /// The socket a handshake's reply must leave from: its puncher's, when the client is
    /// to learn that socket's address.
    fn reply_socket(&self, noise: &[u8]) -> Option<udx::Socket> {
        let hs = {
            let st = self.lock();
            let id = st.handshakes.get(noise)?.slot?;
            st.slots.get(id).cloned().flatten()?
        };
        let st = hs.lock();
        if !st.reply_from_puncher {
            return None;
        }
        st.puncher.as_ref().and_then(|p| p.socket())
    }

    /// Starts answering a handshake that passed the firewall: a slot, and the payload
    /// fields. `None` when every slot is taken or the server is closing.
    pub async fn offer(self: &Arc<Self>, noise: &[u8], client_address: &Ipv4Peer, relayed: bool) -> Option<Offer> {
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        let wire = self.node.wire();
        let (hs, arrival) = {
            let mut st = self.lock();
            Self::sweep(&mut st);
            let arrival = st.handshakes.get(noise).and_then(|k| k.arrival.clone());
            let id = match st.slots.iter().position(|s| s.is_none()) {
                Some(free) => free,
                None if st.slots.len() < MAX_HANDSHAKES => {
                    st.slots.push(None);
                    st.slots.len() - 1
                }
                None => return None,
            };
            let hs = Arc::new(Hs {
                id,
                st: Mutex::new(HsState::default()),
                turn: tokio::sync::Mutex::new(()),
                ended: watch::channel(false).0,
                prepunch: watch::channel(None).0,
            });
            st.slots[id] = Some(hs.clone());
            let known = st.handshakes.entry(noise.to_vec()).or_insert(Known { arrival: None, slot: None, at: Instant::now() });
            known.slot = Some(id);
            (hs, arrival)
        };
        let server_address = arrival.as_ref().map(|a| a.to.clone());
        let our_remote = self.node.reachable_address();
        // A private address helps only a peer behind the same NAT (or on our LAN).
        let same_network = is_bogon(&client_address.host)
            || server_address.as_ref().is_some_and(|s| s.host == client_address.host);
        let mut addresses4 = Vec::new();
        if let Some(remote) = &our_remote {
            addresses4.push(remote.clone());
        }
        for local in self.node.local_addresses().await {
            if (same_network || !is_bogon(&local.host)) && !addresses4.iter().any(|a| same_peer(a, &local)) {
                addresses4.push(local);
            }
        }
        let holepunch = our_remote.is_none().then(|| HolepunchInfo { id: hs.id as u64, relays: self.relays() });
        let dial_socket = match (&arrival, relayed) {
            (Some(a), false) => a.via.clone(),
            _ => wire.primary().clone(),
        };
        hp_debug!("offer id={} client={:?} server_seen={:?} relayed={} our_remote={:?} addrs={:?} relays={:?} arrival_via={:?}", hs.id, client_address, server_address, relayed, our_remote, addresses4, holepunch.as_ref().map(|h| &h.relays), arrival.as_ref().map(|a| a.via.local_addr()));
        Some(Offer {
            hs,
            responder: self.clone(),
            firewall: if our_remote.is_some() { FIREWALL_OPEN } else { FIREWALL_UNKNOWN },
            holepunch,
            addresses4,
            dial_socket,
            listen_sockets: wire.node_sockets(),
            our_remote: our_remote.is_some(),
            relayed,
            client_address: client_address.clone(),
            server_address,
            finished: false,
        })
    }
}

impl Offer {
    /// The listening stream's firewall hook: the first packet (from a real port) gives it
    /// its peer and ends the punching.
    pub fn hook(&self, connected: oneshot::Sender<SocketAddr>) -> udx::FirewallHook {
        let hs = self.hs.clone();
        let mut connected = Some(connected);
        Box::new(move |socket, addr| {
            if addr.port() == 0 {
                return false;
            }
            hp_debug!("hook id={} first packet from {addr} on {}", hs.id, socket.local_addr());
            hs.on_socket();
            if let Some(tx) = connected.take() {
                let _ = tx.send(addr);
            }
            true
        })
    }

    /// The rest of `_addHandshake`, once the reply is made: the stream was dialled (the
    /// client is open or came directly), or the client is on our LAN (a puncher, and the
    /// client's ping decides), or we are reachable (wait for the client to dial), or
    /// punch: a puncher whose socket the reply leaves from.
    pub fn finish(mut self, secret: [u8; 32], remote: &NoisePayload, dialled: bool, stream: udx::StreamHandle) -> HsWait {
        self.finished = true;
        let hs = self.hs.clone();
        if dialled {
            hs.on_socket();
            return HsWait { hs, events: None };
        }
        let deadline = Some(Instant::now() + INITIAL_TIMEOUT);
        let same_host = self.relayed && self.server_address.as_ref().is_some_and(|s| s.host == self.client_address.host);
        hp_debug!("finish id={} dialled={dialled} remote_fw={} remote_addrs={:?}", hs.id, remote.firewall, remote.addresses4);
        let lan = same_host && {
            let theirs: Vec<Ipv4Peer> = remote.addresses4.iter().filter(|a| super::is_private(&a.host)).cloned().collect();
            let ours = self.responder.node.local_addresses_now();
            match_address(&ours, &theirs).is_some()
        };
        if lan || !self.our_remote {
            let sink: SocketSink = Arc::new(move |socket: &udx::Socket| {
                let _ = stream.listen_also(socket);
            });
            match Puncher::new(self.responder.node.punch_context(), false, remote.firewall, Some(sink)) {
                Ok((puncher, events)) => {
                    {
                        let mut st = hs.lock();
                        st.payload = Some(Arc::new(SecurePayload::new(secret)));
                        st.puncher = Some(puncher);
                        st.reply_from_puncher = !lan;
                    }
                    hp_debug!("finish id={} puncher lan={lan}", hs.id);
                    hs.prepunch.send_replace(deadline);
                    return HsWait { hs, events: Some(events) };
                }
                Err(err) => tracing::debug!(%err, "holepunch: no puncher socket; waiting for the client to dial"),
            }
        }
        hs.prepunch.send_replace(deadline);
        HsWait { hs, events: None }
    }
}

impl Responder {
    /// Answers one `PEER_HOLEPUNCH` round (hyperdht's `_onpeerholepunch`): the socket to
    /// answer from and the encrypted payload, or `None` for no answer.
    pub async fn on_holepunch(&self, incoming: &Incoming, msg: &HolepunchMessage) -> Option<(udx::Socket, Vec<u8>)> {
        let hs = self.slot(msg.id)?;
        let peer_address = msg.peer_address.clone()?;
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        let _turn = hs.turn.lock().await;
        let Some(payload) = hs.lock().payload.clone() else {
            // Not opened for punching (open, or dialled).
            return self.abort(&hs, ERROR_ABORTED);
        };
        let remote = payload.decrypt(&msg.payload).ok()?;
        let Some(puncher) = hs.lock().puncher.clone() else { return self.abort(&hs, ERROR_ABORTED) };
        let from_our_relay = self.is_relay(incoming.from);
        hp_debug!("hp id={} from={} via={} to={:?} peer={:?} round={} err={} fw={} punching={} addrs={:?} remote_address={:?} token={} remote_token={} our_relay={from_our_relay}", msg.id, incoming.from, incoming.via.local_addr(), incoming.to, peer_address, remote.round, remote.error, remote.firewall, remote.punching, remote.addresses, remote.remote_address, remote.token.is_some(), remote.remote_token.is_some());
        if remote.error != ERROR_NONE {
            let mut st = hs.lock();
            st.round = st.round.max(remote.round);
            drop(st);
            return self.abort(&hs, ERROR_ABORTED);
        }
        let token = payload.token(&peer_address.host);
        // Only a relay of ours can have handed the client our token for this address.
        let echoed = from_our_relay && remote.remote_token == Some(token);
        // A round relayed to the puncher's own socket says what that socket looks like.
        puncher.add_sample(&incoming.via, &incoming.to, incoming.from);
        {
            let mut st = hs.lock();
            if remote.round >= st.round {
                st.round = remote.round;
                puncher.update_remote(remote.punching, remote.firewall, remote.addresses.as_deref(), echoed.then_some(peer_address.host.as_str()));
            }
        }
        let mut stable = puncher.analyze(false).await;
        hp_debug!("hp id={} analyzed stable={stable} local_fw={} local_addrs={:?} echoed={echoed}", msg.id, puncher.firewall(), puncher.addresses());
        if puncher.destroyed() {
            return None;
        }
        if !puncher.remote_holepunching() && !stable {
            stable = puncher.analyze(true).await;
            if puncher.destroyed() {
                return None;
            }
            if !stable {
                return self.abort(&hs, ERROR_ABORTED);
            }
        }
        // Fast open: the client already opened its NAT toward our puncher's address.
        let opened_toward_us = remote.remote_address.as_ref().is_some_and(|ra| puncher.addresses().is_some_and(|ours| ours.iter().any(|a| same_peer(a, ra))));
        if is_consistent(puncher.firewall()) && opened_toward_us {
            puncher.ping(&peer_address);
        }
        if puncher.remote_holepunching() {
            hs.prepunch.send_replace(None);
            let random = puncher.remote_firewall() >= FIREWALL_RANDOM || puncher.firewall() >= FIREWALL_RANDOM;
            // A round sent again (its answer was slow: 256 sockets to open) is not a new
            // punch: the one running is this one.
            if random && !puncher.randomized() && self.node.random_punches().busy() {
                // No relay to fall back on: the client tries again later.
                return self.abort(&hs, ERROR_TRY_LATER);
            }
            let punching = puncher.punch().await;
            if puncher.destroyed() {
                return None;
            }
            if !punching {
                return self.abort(&hs, ERROR_ABORTED);
            }
        }
        if puncher.firewall() != FIREWALL_UNKNOWN {
            puncher.freeze();
        }
        let reply = HolepunchPayload {
            error: ERROR_NONE,
            firewall: puncher.firewall(),
            round: hs.lock().round,
            connected: puncher.connected(),
            punching: puncher.punching(),
            addresses: puncher.addresses(),
            remote_address: None,
            token: from_our_relay.then_some(token),
            remote_token: remote.token,
        };
        let socket = puncher.socket()?;
        hp_debug!("hp id={} reply fw={} punching={} connected={} addrs={:?} from {}", msg.id, reply.firewall, reply.punching, reply.connected, reply.addresses, socket.local_addr());
        Some((socket, payload.encrypt(&reply).ok()?))
    }

    /// Tells the client we gave up (hyperdht's `_abort`), from the node's socket.
    fn abort(&self, hs: &Hs, error: u64) -> Option<(udx::Socket, Vec<u8>)> {
        hp_debug!("abort id={} error={error}", hs.id);
        let (payload, round) = {
            let st = hs.lock();
            (st.payload.clone(), st.round)
        };
        hs.abort();
        let payload = payload?;
        Some((self.node.wire().primary().clone(), payload.encrypt(&error_payload(error, round)).ok()?))
    }

    /// Ends every handshake (their pending streams are dropped) and frees the slots.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let slots: Vec<Arc<Hs>> = {
            let mut st = self.lock();
            st.handshakes.clear();
            st.slots.drain(..).flatten().collect()
        };
        for hs in slots {
            hs.abort();
            if let Some(puncher) = hs.lock().puncher.take() {
                puncher.destroy();
            }
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().slots.iter().filter(|s| s.is_some()).count()
    }
}

/// Takes the served key's requests off the wire until `shutdown`: handshakes go to the
/// server's handshake loop as peeroxide's server events (so that they share its limits and
/// duplicate cache), their replies leave from the socket hyperdht would send them from;
/// holepunch rounds are answered here.
pub async fn dispatch(
    responder: Arc<Responder>,
    mut incoming: mpsc::Receiver<Incoming>,
    server_events: mpsc::UnboundedSender<ServerEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut answering: JoinSet<()> = JoinSet::new();
    let mut replying: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            next = incoming.recv() => {
                let Some(request) = next else { break };
                match request.kind {
                    IncomingKind::Handshake(ref msg) => {
                        let msg = msg.clone();
                        responder.note_arrival(&msg.noise, Arrival { via: request.via.clone(), to: request.to.clone() });
                        let (reply_tx, reply_rx) = oneshot::channel();
                        let event = ServerEvent::PeerHandshake {
                            msg: msg.clone(),
                            from: peer_of(request.from),
                            peer_address: msg.peer_address.clone(),
                            target: Some(request.target),
                            reply_tx,
                        };
                        if server_events.send(event).is_err() {
                            break;
                        }
                        // Bounded by the handshake loop, which answers or drops each at once
                        // or from its own bounded queue.
                        let responder = responder.clone();
                        replying.spawn(async move {
                            if let Ok(Some(reply)) = reply_rx.await {
                                responder.send_handshake_reply(&request, &msg, reply);
                            }
                        });
                    }
                    IncomingKind::Holepunch(_) => {
                        if answering.len() >= MAX_IN_FLIGHT {
                            tracing::debug!("holepunch: too many rounds in flight; one dropped");
                            continue;
                        }
                        let responder = responder.clone();
                        answering.spawn(async move {
                            let IncomingKind::Holepunch(msg) = &request.kind else { return };
                            if let Some((socket, payload)) = responder.on_holepunch(&request, msg).await {
                                responder.send_holepunch_reply(&request, &socket, msg, payload);
                            }
                        });
                    }
                }
            }
            Some(_) = answering.join_next(), if !answering.is_empty() => {}
            Some(_) = replying.join_next(), if !replying.is_empty() => {}
            _ = shutdown.wait_for(|closed| *closed) => break,
        }
    }
    answering.abort_all();
    replying.abort_all();
}

impl Responder {
    fn send_handshake_reply(&self, request: &Incoming, msg: &HandshakeMessage, reply: Vec<u8>) {
        let wire = self.node.wire();
        let via = self.reply_socket(&msg.noise).unwrap_or_else(|| request.via.clone());
        hp_debug!("handshake reply mode={} tid={} to={} from socket {}", msg.mode, request.tid, request.from, via.local_addr());
        let sent = match msg.mode {
            MODE_FROM_CLIENT => wire.reply(&via, request.tid, request.from, reply),
            MODE_FROM_RELAY => wire.relay(&via, request.tid, PEER_HANDSHAKE, self.target, reply, request.from),
            MODE_FROM_SECOND_RELAY => match msg.relay_address.as_ref().and_then(addr_of) {
                Some(relay) => wire.relay(&via, request.tid, PEER_HANDSHAKE, self.target, reply, relay),
                None => return,
            },
            _ => return,
        };
        if let Err(err) = sent {
            tracing::debug!(%err, "holepunch: handshake reply not sent");
        }
    }

    fn send_holepunch_reply(&self, request: &Incoming, via: &udx::Socket, msg: &HolepunchMessage, payload: Vec<u8>) {
        let reply = HolepunchMessage { mode: MODE_FROM_SERVER, id: 0, payload, peer_address: msg.peer_address.clone() };
        let Ok(value) = encode_holepunch_msg_to_bytes(&reply) else { return };
        if let Err(err) = self.node.wire().relay(via, request.tid, PEER_HOLEPUNCH, self.target, value, request.from) {
            tracing::debug!(%err, "holepunch: reply not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peeroxide_dht::hyperdht_messages::{FIREWALL_CONSISTENT, UdxInfo};

    async fn network() -> (Vec<Arc<DhtNode>>, Arc<DhtNode>) {
        super::super::test_network().await
    }

    async fn destroy(nodes: Vec<Arc<DhtNode>>, server: Arc<DhtNode>) {
        super::super::destroy_network(nodes, server).await
    }

    fn client() -> Ipv4Peer {
        Ipv4Peer { host: "127.0.0.1".into(), port: 40000 }
    }

    fn remote_payload(firewall: u64) -> NoisePayload {
        NoisePayload {
            version: 1,
            error: 0,
            firewall,
            holepunch: None,
            addresses4: vec![],
            addresses6: vec![],
            udx: Some(UdxInfo { version: 1, reusable_socket: false, id: 9, seq: 0 }),
            secret_stream: None,
            relay_through: None,
            relay_addresses: None,
        }
    }

    /// A handshake answered as a firewalled client's: its slot, with a puncher.
    async fn punching_handshake(responder: &Arc<Responder>, noise: &[u8], secret: [u8; 32]) -> (u64, HsWait, udx::Stream, oneshot::Receiver<SocketAddr>) {
        let offer = responder.offer(noise, &client(), true).await.expect("a slot");
        let id = offer.holepunch.as_ref().expect("holepunch info").id;
        let (tx, rx) = oneshot::channel();
        let local_id = peeroxide_dht::hyperdht::alloc_stream_id();
        let stream = udx::Stream::listen_on(&offer.listen_sockets, local_id, 9, offer.hook(tx), udx::Config::default()).expect("stream");
        let wait = offer.finish(secret, &remote_payload(FIREWALL_UNKNOWN), false, stream.handle());
        (id, wait, stream, rx)
    }

    fn round(secure: &SecurePayload, round: u64, firewall: u64, punching: bool, remote_token: Option<[u8; 32]>) -> Vec<u8> {
        secure
            .encrypt(&HolepunchPayload {
                error: ERROR_NONE,
                firewall,
                round,
                connected: false,
                punching,
                addresses: Some(vec![client()]),
                remote_address: None,
                token: Some([5; 32]),
                remote_token,
            })
            .expect("encrypt")
    }

    fn incoming(server: &DhtNode, from: SocketAddr, id: u64, payload: Vec<u8>) -> (Incoming, HolepunchMessage) {
        let msg = HolepunchMessage { mode: peeroxide_dht::hyperdht_messages::MODE_FROM_RELAY, id, payload, peer_address: Some(client()) };
        let incoming = Incoming {
            via: server.wire().primary().clone(),
            from,
            to: Ipv4Peer { host: "127.0.0.1".into(), port: 1 },
            tid: 1,
            target: [0; 32],
            kind: IncomingKind::Holepunch(msg.clone()),
        };
        (incoming, msg)
    }

    #[tokio::test]
    async fn payload_fields_are_honest_for_a_firewalled_node() {
        let (nodes, server) = network().await;
        let responder = Responder::new(server.clone(), [1; 32]);
        let relay = nodes[0].local_address().await.expect("relay");
        responder.announced(vec![relay.clone()]);
        let offer = responder.offer(b"noise", &client(), true).await.expect("offer");
        // Never reachable unsolicited: holepunch info, the relay with what it saw of us.
        assert_eq!(offer.firewall, FIREWALL_UNKNOWN);
        let info = offer.holepunch.clone().expect("holepunch info");
        assert_eq!(info.relays.len(), 1);
        assert_eq!(info.relays[0].relay_address, relay);
        assert_eq!(info.relays[0].peer_address.host, "127.0.0.1");
        assert_eq!(info.relays[0].peer_address.port, server.wire().primary().local_addr().port());
        // The loopback address, on the node's port: nothing unparsable, no port 0.
        let port = server.wire().listen().local_addr().port();
        assert_eq!(offer.addresses4, vec![Ipv4Peer { host: "127.0.0.1".into(), port }]);
        // A peer elsewhere gets no private address at all.
        let elsewhere = Ipv4Peer { host: "88.99.3.86".into(), port: 1 };
        let offer = responder.offer(b"noise 2", &elsewhere, true).await.expect("offer");
        assert!(offer.addresses4.is_empty());
        drop(offer);
        destroy(nodes, server).await;
    }

    #[tokio::test]
    async fn holepunch_rounds_are_checked_and_answered_from_the_puncher() {
        let (nodes, server) = network().await;
        let responder = Responder::new(server.clone(), [1; 32]);
        let relay: SocketAddr = addr_of(&nodes[0].local_address().await.expect("relay")).expect("addr");
        let stranger: SocketAddr = addr_of(&nodes[1].local_address().await.expect("stranger")).expect("addr");
        responder.announced(vec![peer_of(relay)]);
        let secret = [3; 32];
        let client_secure = SecurePayload::new(secret);
        let (id, _wait, _stream, _connected) = punching_handshake(&responder, b"noise", secret).await;

        // Unknown slot, a payload not under the handshake's secret: no answer at all.
        let (inc, msg) = incoming(&server, relay, id + 1, round(&client_secure, 0, FIREWALL_CONSISTENT, false, None));
        assert!(responder.on_holepunch(&inc, &msg).await.is_none());
        let (inc, msg) = incoming(&server, relay, id, round(&SecurePayload::new([4; 32]), 0, FIREWALL_CONSISTENT, false, None));
        assert!(responder.on_holepunch(&inc, &msg).await.is_none());

        // A probe round through our relay: answered from the puncher's socket, with our
        // token for the client's host and its token echoed.
        let (inc, msg) = incoming(&server, relay, id, round(&client_secure, 0, FIREWALL_CONSISTENT, false, None));
        let (socket, reply) = responder.on_holepunch(&inc, &msg).await.expect("an answer");
        assert!(!socket.same(server.wire().primary()), "the puncher's socket");
        let reply = client_secure.decrypt(&reply).expect("under the shared secret");
        assert_eq!(reply.error, ERROR_NONE);
        assert_eq!(reply.firewall, FIREWALL_CONSISTENT, "loopback maps consistently");
        assert_eq!(reply.addresses, Some(vec![peer_of(socket.local_addr())]));
        assert_eq!(reply.remote_token, Some([5; 32]));
        let token = reply.token.expect("our token, through our relay");

        // Through a node that is not our relay: no token (it could not have been given one).
        let (inc, msg) = incoming(&server, stranger, id, round(&client_secure, 1, FIREWALL_CONSISTENT, false, None));
        let (_, reply) = responder.on_holepunch(&inc, &msg).await.expect("an answer");
        assert_eq!(client_secure.decrypt(&reply).expect("decrypt").token, None);

        // The punching round echoes our token through our relay: verified, and we punch.
        let (inc, msg) = incoming(&server, relay, id, round(&client_secure, 2, FIREWALL_CONSISTENT, true, Some(token)));
        let (_, reply) = responder.on_holepunch(&inc, &msg).await.expect("an answer");
        let reply = client_secure.decrypt(&reply).expect("decrypt");
        assert!(reply.punching);
        assert_eq!(reply.round, 2);

        // The client gives up: we answer ABORTED from the node's socket and end the slot.
        let aborting = client_secure
            .encrypt(&error_payload(ERROR_ABORTED, 3))
            .expect("encrypt");
        let (inc, msg) = incoming(&server, relay, id, aborting);
        let (socket, reply) = responder.on_holepunch(&inc, &msg).await.expect("an answer");
        assert!(socket.same(server.wire().primary()));
        assert_eq!(client_secure.decrypt(&reply).expect("decrypt").error, ERROR_ABORTED);
        destroy(nodes, server).await;
    }

    #[tokio::test]
    async fn a_random_punch_waits_out_the_nodes_limit() {
        let (nodes, server) = network().await;
        let responder = Responder::new(server.clone(), [1; 32]);
        let relay: SocketAddr = addr_of(&nodes[0].local_address().await.expect("relay")).expect("addr");
        responder.announced(vec![peer_of(relay)]);
        let secret = [3; 32];
        let client_secure = SecurePayload::new(secret);
        let (id, _wait, _stream, _connected) = punching_handshake(&responder, b"noise", secret).await;
        // Another random punch ended a moment ago: not now.
        server.random_punches().begin();
        server.random_punches().end();
        let (inc, msg) = incoming(&server, relay, id, round(&client_secure, 0, FIREWALL_RANDOM, true, None));
        let (_, reply) = responder.on_holepunch(&inc, &msg).await.expect("an answer");
        assert_eq!(client_secure.decrypt(&reply).expect("decrypt").error, ERROR_TRY_LATER);

        // Later: a verified client across a randomizing NAT is punched to, and the same
        // round sent again (its answer was late) finds that punch, not the limit.
        tokio::time::pause();
        tokio::time::advance(crate::holepunch::RANDOM_PUNCH_INTERVAL).await;
        tokio::time::resume();
        let (id, _wait, _stream, _connected) = punching_handshake(&responder, b"noise 2", secret).await;
        let (inc, msg) = incoming(&server, relay, id, round(&client_secure, 0, FIREWALL_RANDOM, false, None));
        let (_, reply) = responder.on_holepunch(&inc, &msg).await.expect("an answer");
        let token = client_secure.decrypt(&reply).expect("decrypt").token;
        for _ in 0..2 {
            let (inc, msg) = incoming(&server, relay, id, round(&client_secure, 1, FIREWALL_RANDOM, true, token));
            let (_, reply) = responder.on_holepunch(&inc, &msg).await.expect("an answer");
            let reply = client_secure.decrypt(&reply).expect("decrypt");
            assert_eq!((reply.error, reply.punching), (ERROR_NONE, true));
        }
        assert!(server.random_punches().busy());
        responder.close();
        destroy(nodes, server).await;
    }

    #[tokio::test]
    async fn slots_are_bounded_time_out_and_go_with_close() {
        let (nodes, server) = network().await;
        let responder = Responder::new(server.clone(), [1; 32]);
        tokio::time::pause();
        let mut waits = Vec::new();
        for i in 0..MAX_HANDSHAKES {
            waits.push(punching_handshake(&responder, format!("noise {i}").as_bytes(), [3; 32]).await);
        }
        assert_eq!(responder.held(), MAX_HANDSHAKES);
        assert!(responder.offer(b"one too many", &client(), true).await.is_none());

        // Nobody punched or dialled in time: given up, the slot freed a while later.
        let (_, wait, _stream, connected) = waits.pop().expect("one");
        let started = Instant::now();
        assert_eq!(wait.connected(connected).await, None);
        assert!(started.elapsed() >= INITIAL_TIMEOUT);
        tokio::time::advance(CLEAR_WAIT).await;
        assert!(responder.offer(b"now there is room", &client(), true).await.is_some());

        // Closing ends every handshake at once.
        responder.close();
        assert_eq!(responder.held(), 0);
        let (_, wait, _stream, connected) = waits.pop().expect("another");
        assert_eq!(wait.connected(connected).await, None);
        assert!(responder.offer(b"after close", &client(), true).await.is_none());
        tokio::time::resume();
        drop(waits);
        destroy(nodes, server).await;
    }
}
