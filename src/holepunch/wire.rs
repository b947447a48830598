//! Our side of a node's DHT sockets. peeroxide-dht answers the DHT; this takes from the
//! same sockets (through a datagram filter that runs before peeroxide's handler) the
//! messages a holepunching server must answer itself, and sends requests and replies from
//! any socket we choose. peeroxide's server events carry neither the request id nor the
//! socket a request came in on nor the address its sender saw us at, and its replies
//! always leave from the socket the request came in on; hyperdht answers from a puncher
//! socket so that the client learns that socket's address.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use peeroxide_dht::hyperdht_messages::{
    decode_handshake_from_bytes, decode_holepunch_msg_from_bytes, HandshakeMessage, HolepunchMessage,
    MODE_FROM_CLIENT, MODE_FROM_RELAY, MODE_FROM_SECOND_RELAY, PEER_HANDSHAKE, PEER_HOLEPUNCH,
};
use peeroxide_dht::messages::{decode_message, encode_request_to_bytes, encode_response_to_bytes, Ipv4Peer, Message, Request, Response};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use super::peer_of;

/// dht-rpc's defaults for one request: 1 s per try, three retries.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
pub const REQUEST_RETRIES: u32 = 3;
/// Requests of one served key waiting for their handler; beyond this they are dropped
/// (a client retries a dropped handshake, as it would a lost datagram). This filter runs
/// before the shim's rate limit on DHT datagrams, so it keeps its own bound.
const INCOMING_QUEUE: usize = 1024;
/// DHT nodes remembered with the address they saw us at.
const SEEN_NODES: usize = 64;
/// dht-rpc commands (internal).
pub const CMD_PING: u64 = 0;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("the request timed out")]
    Timeout,
    #[error("the DHT node is closed")]
    Closed,
    #[error("could not encode a DHT message: {0}")]
    Encode(String),
    #[error("could not send: {0}")]
    Send(String),
}

/// A request this process serves, as it arrived.
#[derive(Debug)]
pub struct Incoming {
    /// The socket it came in on (a reply leaves from it unless we choose another).
    pub via: udx::Socket,
    /// Who sent it: a relaying DHT node, or the client itself.
    pub from: SocketAddr,
    /// Our address as the sender saw it.
    pub to: Ipv4Peer,
    pub tid: u16,
    pub target: [u8; 32],
    pub kind: IncomingKind,
}

#[derive(Debug)]
pub enum IncomingKind {
    Handshake(HandshakeMessage),
    Holepunch(HolepunchMessage),
}

/// A response to one of our requests.
#[derive(Debug, Clone)]
pub struct Reply {
    pub from: SocketAddr,
    /// Our address as the responder saw it.
    pub to: Ipv4Peer,
    pub error: u64,
    pub value: Option<Vec<u8>>,
}

/// What to ask.
#[derive(Debug, Clone)]
pub struct Ask {
    pub internal: bool,
    pub command: u64,
    pub target: Option<[u8; 32]>,
    pub value: Option<Vec<u8>>,
}

/// The node's sockets as we use them. Cheap to clone.
#[derive(Clone)]
pub struct DhtWire {
    inner: Arc<Inner>,
}

struct Inner {
    /// The socket peeroxide sends its requests from (and announces from): relayed
    /// handshakes reach us here.
    primary: udx::Socket,
    /// The socket bound to the node's port (the same one unless the node is firewalled).
    listen: udx::Socket,
    state: Mutex<State>,
}

/// Called for each request dropped because its queue was full.
pub type OnDrop = Arc<dyn Fn(&IncomingKind) + Send + Sync>;

struct Serving {
    queue: mpsc::Sender<Incoming>,
    on_drop: OnDrop,
}

struct Inflight {
    to: SocketAddr,
    via: udx::WeakSocket,
    reply: Option<oneshot::Sender<Reply>>,
}

#[derive(Default)]
struct State {
    inflight: HashMap<u16, Inflight>,
    next_tid: u16,
    /// Most recent last: DHT nodes that answered us, with our address as they saw it.
    seen: VecDeque<(SocketAddr, Ipv4Peer)>,
    serving: HashMap<[u8; 32], Serving>,
    closed: bool,
}

impl DhtWire {
    /// Takes our messages from the node's sockets from now on.
    pub fn install(primary: udx::Socket, listen: udx::Socket) -> Self {
        let inner = Arc::new(Inner {
            primary,
            listen,
            state: Mutex::new(State { next_tid: rand::random(), ..State::default() }),
        });
        let sockets = if inner.primary.same(&inner.listen) { vec![inner.primary.clone()] } else { vec![inner.primary.clone(), inner.listen.clone()] };
        for socket in sockets {
            socket.set_datagram_filter(Some(filter_for(&inner, &socket)));
        }
        Self { inner }
    }

    /// The socket relayed requests reach us on, and our default for sending.
    pub fn primary(&self) -> &udx::Socket {
        &self.inner.primary
    }

    /// The socket bound to the node's port.
    pub fn listen(&self) -> &udx::Socket {
        &self.inner.listen
    }

    /// Every socket of the node, without repeats.
    pub fn node_sockets(&self) -> Vec<udx::Socket> {
        if self.inner.primary.same(&self.inner.listen) {
            vec![self.inner.primary.clone()]
        } else {
            vec![self.inner.primary.clone(), self.inner.listen.clone()]
        }
    }

    /// Handles a datagram that arrived on one of our own sockets (a puncher's): our
    /// replies, and requests for the keys we serve. Returns whether it was ours.
    pub fn deliver(&self, via: &udx::Socket, data: &[u8], from: SocketAddr) -> bool {
        self.inner.on_datagram(via, data, from)
    }

    /// Starts taking the handshakes and holepunches for `target` (hash of a served key);
    /// `on_drop` learns of each one dropped because the queue was full.
    pub fn serve(&self, target: [u8; 32], on_drop: OnDrop) -> mpsc::Receiver<Incoming> {
        let (queue, rx) = mpsc::channel(INCOMING_QUEUE);
        self.inner.lock().serving.insert(target, Serving { queue, on_drop });
        rx
    }

    pub fn unserve(&self, target: &[u8; 32]) {
        self.inner.lock().serving.remove(target);
    }

    /// DHT nodes that answered us, most recent first, and the address each saw us at.
    pub fn recent_nodes(&self) -> Vec<(SocketAddr, Ipv4Peer)> {
        self.inner.lock().seen.iter().rev().cloned().collect()
    }

    /// Our address as the DHT node at `node` last saw it.
    pub fn seen_by(&self, node: SocketAddr) -> Option<Ipv4Peer> {
        self.inner.lock().seen.iter().rev().find(|(addr, _)| *addr == node).map(|(_, to)| to.clone())
    }

    /// Sends a request from `via` and waits for its response (dht-rpc's timeout and
    /// retries: `REQUEST_TIMEOUT` per try, `retries` more tries).
    pub async fn request(&self, via: &udx::Socket, to: SocketAddr, ask: Ask, retries: u32) -> Result<Reply, WireError> {
        let (tid, rx) = {
            let mut st = self.inner.lock();
            if st.closed {
                return Err(WireError::Closed);
            }
            let mut tid = st.next_tid;
            while st.inflight.contains_key(&tid) {
                tid = tid.wrapping_add(1);
            }
            st.next_tid = tid.wrapping_add(1);
            let (tx, rx) = oneshot::channel();
            st.inflight.insert(tid, Inflight { to, via: via.downgrade(), reply: Some(tx) });
            (tid, rx)
        };
        let _forget = Forget { inner: &self.inner, tid };
        let request = Request {
            tid,
            to: peer_of(to),
            id: None,
            token: None,
            internal: ask.internal,
            command: ask.command,
            target: ask.target,
            value: ask.value,
        };
        let bytes = encode_request_to_bytes(&request).map_err(|e| WireError::Encode(e.to_string()))?;
        tokio::pin!(rx);
        for _ in 0..=retries {
            via.send_to(&bytes, to).map_err(|e| WireError::Send(e.to_string()))?;
            tokio::select! {
                reply = &mut rx => return reply.map_err(|_| WireError::Closed),
                _ = tokio::time::sleep(REQUEST_TIMEOUT) => {}
            }
        }
        Err(WireError::Timeout)
    }

    /// Answers a request with a response (a direct handshake's reply).
    pub fn reply(&self, via: &udx::Socket, tid: u16, to: SocketAddr, value: Vec<u8>) -> Result<(), WireError> {
        let response = Response { tid, to: peer_of(to), id: None, token: None, closer_nodes: vec![], error: 0, value: Some(value) };
        let bytes = encode_response_to_bytes(&response).map_err(|e| WireError::Encode(e.to_string()))?;
        via.send_to(&bytes, to).map_err(|e| WireError::Send(e.to_string()))
    }

    /// Sends a request on under the id of the one it answers (dht-rpc's `req.relay`): a
    /// server's answer goes back through the relaying node this way.
    pub fn relay(&self, via: &udx::Socket, tid: u16, command: u64, target: [u8; 32], value: Vec<u8>, to: SocketAddr) -> Result<(), WireError> {
        let request = Request { tid, to: peer_of(to), id: None, token: None, internal: false, command, target: Some(target), value: Some(value) };
        let bytes = encode_request_to_bytes(&request).map_err(|e| WireError::Encode(e.to_string()))?;
        via.send_to(&bytes, to).map_err(|e| WireError::Send(e.to_string()))
    }

    /// Gives the node's sockets back to peeroxide alone and fails our pending requests.
    pub fn close(&self) {
        {
            let mut st = self.inner.lock();
            st.closed = true;
            st.inflight.clear();
            st.serving.clear();
        }
        for socket in self.node_sockets() {
            socket.set_datagram_filter(None);
        }
    }
}

/// Removes a request's entry however its wait ends.
struct Forget<'a> {
    inner: &'a Inner,
    tid: u16,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.inner.lock().inflight.remove(&self.tid);
    }
}

fn filter_for(inner: &Arc<Inner>, socket: &udx::Socket) -> udx::DatagramFilter {
    // Weak both: the socket owns this filter.
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let via = socket.downgrade();
    Arc::new(move |data: &[u8], from: SocketAddr| {
        let (Some(inner), Some(via)) = (weak.upgrade(), via.upgrade()) else { return false };
        inner.on_datagram(&via, data, from)
    })
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_datagram(&self, via: &udx::Socket, data: &[u8], from: SocketAddr) -> bool {
        // One byte is a holepunch probe; dht-rpc ignores anything that short.
        if data.len() < 2 {
            return false;
        }
        let Ok(message) = decode_message(data) else { return false };
        match message {
            Message::Response(res) => self.on_response(via, res, from),
            Message::Request(req) => self.on_request(via, req, from),
        }
    }

    fn on_response(&self, via: &udx::Socket, res: Response, from: SocketAddr) -> bool {
        let mut st = self.lock();
        // What nodes saw of the node's own sockets only: a puncher socket's mapping is
        // not where a relay forwards to.
        let node_socket = via.same(&self.primary) || via.same(&self.listen);
        if node_socket && res.to.port != 0 && !res.to.host.is_empty() {
            st.seen.retain(|(addr, _)| *addr != from);
            if st.seen.len() >= SEEN_NODES {
                st.seen.pop_front();
            }
            st.seen.push_back((from, res.to.clone()));
        }
        let ours = st.inflight.get(&res.tid).is_some_and(|entry| entry.to == from && entry.via.upgrade().is_some_and(|s| s.same(via)));
        if !ours {
            return false;
        }
        if let Some(reply) = st.inflight.get_mut(&res.tid).and_then(|entry| entry.reply.take()) {
            let _ = reply.send(Reply { from, to: res.to, error: res.error, value: res.value });
        }
        true
    }

    fn on_request(&self, via: &udx::Socket, req: Request, from: SocketAddr) -> bool {
        if req.internal || !(req.command == PEER_HANDSHAKE || req.command == PEER_HOLEPUNCH) {
            return false;
        }
        let Some(target) = req.target else { return false };
        let st = self.lock();
        let Some(handler) = st.serving.get(&target) else { return false };
        // From here the request is ours: what cannot be read is dropped, as hyperdht's
        // router drops it (a reply from peeroxide would be one hyperdht never sends).
        let Some(value) = req.value.as_deref() else { return true };
        let kind = if req.command == PEER_HANDSHAKE {
            match decode_handshake_from_bytes(value) {
                Ok(msg) if matches!(msg.mode, MODE_FROM_CLIENT | MODE_FROM_RELAY | MODE_FROM_SECOND_RELAY) => IncomingKind::Handshake(msg),
                _ => return true,
            }
        } else {
            match decode_holepunch_msg_from_bytes(value) {
                Ok(msg) if msg.mode == MODE_FROM_RELAY => IncomingKind::Holepunch(msg),
                // Relaying holepunches for others (and our own FROM_CLIENT, which a
                // router relays on) stays peeroxide's job.
                _ => return false,
            }
        };
        let incoming = Incoming { via: via.clone(), from, to: req.to, tid: req.tid, target, kind };
        if let Err(err) = handler.queue.try_send(incoming) {
            let dropped = match err {
                mpsc::error::TrySendError::Full(dropped) | mpsc::error::TrySendError::Closed(dropped) => dropped,
            };
            (handler.on_drop)(&dropped.kind);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peeroxide_dht::hyperdht_messages::{encode_handshake_to_bytes, encode_holepunch_msg_to_bytes, MODE_FROM_SERVER};

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn request_bytes(tid: u16, command: u64, target: [u8; 32], value: Vec<u8>) -> Vec<u8> {
        encode_request_to_bytes(&Request {
            tid,
            to: Ipv4Peer { host: "127.0.0.1".into(), port: 1 },
            id: None,
            token: None,
            internal: false,
            command,
            target: Some(target),
            value: Some(value),
        })
        .unwrap()
    }

    fn handshake(mode: u64) -> Vec<u8> {
        encode_handshake_to_bytes(&HandshakeMessage { mode, noise: vec![1, 2, 3], peer_address: None, relay_address: None }).unwrap()
    }

    #[tokio::test]
    async fn takes_only_the_requests_of_served_keys_and_passes_the_rest_on() {
        let node = udx::Socket::bind(localhost()).unwrap();
        let (passed_tx, mut passed) = mpsc::unbounded_channel();
        node.on_datagram(Arc::new(move |data: &[u8], _| {
            let _ = passed_tx.send(data.to_vec());
        }));
        let wire = DhtWire::install(node.clone(), node.clone());
        let mut ours = wire.serve([7; 32], Arc::new(|_: &IncomingKind| {}));
        let peer = udx::Socket::bind(localhost()).unwrap();
        let to = node.local_addr();

        peer.send_to(&request_bytes(5, PEER_HANDSHAKE, [7; 32], handshake(MODE_FROM_RELAY)), to).unwrap();
        let incoming = tokio::time::timeout(Duration::from_secs(5), ours.recv()).await.unwrap().unwrap();
        assert_eq!((incoming.tid, incoming.from, incoming.target), (5, peer.local_addr(), [7; 32]));
        assert_eq!(incoming.to, Ipv4Peer { host: "127.0.0.1".into(), port: 1 });
        assert!(incoming.via.same(&node));
        assert!(matches!(incoming.kind, IncomingKind::Handshake(ref m) if m.noise == vec![1, 2, 3]));

        // Another key, or a holepunch to relay on: peeroxide's.
        let other = request_bytes(6, PEER_HANDSHAKE, [8; 32], handshake(MODE_FROM_RELAY));
        let hp = encode_holepunch_msg_to_bytes(&HolepunchMessage { mode: MODE_FROM_CLIENT, id: 0, payload: vec![1], peer_address: None }).unwrap();
        let relay_this = request_bytes(8, PEER_HOLEPUNCH, [7; 32], hp);
        for bytes in [&other, &relay_this] {
            peer.send_to(bytes, to).unwrap();
            assert_eq!(&tokio::time::timeout(Duration::from_secs(5), passed.recv()).await.unwrap().unwrap(), bytes);
        }
        // Ours but unreadable, or a mode a server does not answer: dropped, as hyperdht's
        // router drops them.
        peer.send_to(&request_bytes(9, PEER_HANDSHAKE, [7; 32], vec![0xff]), to).unwrap();
        peer.send_to(&request_bytes(7, PEER_HANDSHAKE, [7; 32], handshake(MODE_FROM_SERVER)), to).unwrap();
        peer.send_to(b"zz", to).unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), passed.recv()).await.unwrap().unwrap(), b"zz");
        assert!(ours.try_recv().is_err());

        wire.unserve(&[7; 32]);
        let again = request_bytes(10, PEER_HANDSHAKE, [7; 32], handshake(MODE_FROM_RELAY));
        peer.send_to(&again, to).unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), passed.recv()).await.unwrap().unwrap(), again);
    }

    #[tokio::test]
    async fn requests_match_their_responses_and_remember_what_nodes_saw() {
        let ours = udx::Socket::bind(localhost()).unwrap();
        let wire = DhtWire::install(ours.clone(), ours.clone());
        let node = udx::Socket::bind(localhost()).unwrap();
        let (req_tx, mut requests) = mpsc::unbounded_channel();
        node.on_datagram(Arc::new(move |data: &[u8], from| {
            let _ = req_tx.send((data.to_vec(), from));
        }));
        let ask = Ask { internal: true, command: CMD_PING, target: None, value: None };
        let pending = tokio::spawn({
            let wire = wire.clone();
            let ours = ours.clone();
            let to = node.local_addr();
            async move { wire.request(&ours, to, ask, 0).await }
        });
        let (bytes, from) = requests.recv().await.unwrap();
        let Ok(Message::Request(req)) = decode_message(&bytes) else { panic!("not a request") };
        assert!(req.internal);
        // A response with another id is not ours (peeroxide's), the right one is.
        let respond = |tid| {
            encode_response_to_bytes(&Response {
                tid,
                to: Ipv4Peer { host: "203.0.113.7".into(), port: 4242 },
                id: None,
                token: None,
                closer_nodes: vec![],
                error: 0,
                value: Some(b"pong".to_vec()),
            })
            .unwrap()
        };
        node.send_to(&respond(req.tid.wrapping_add(1)), from).unwrap();
        node.send_to(&respond(req.tid), from).unwrap();
        let reply = pending.await.unwrap().unwrap();
        assert_eq!(reply.value.as_deref(), Some(&b"pong"[..]));
        assert_eq!(reply.to, Ipv4Peer { host: "203.0.113.7".into(), port: 4242 });
        assert_eq!(wire.seen_by(node.local_addr()), Some(reply.to.clone()));
        assert_eq!(wire.recent_nodes().len(), 1);
        assert!(wire.inner.lock().inflight.is_empty());

        // A reply to a request from another socket of ours (a puncher's) is matched, but
        // says nothing about where nodes see the node.
        let puncher = udx::Socket::bind(localhost()).unwrap();
        let puncher_wire = wire.clone();
        let via = puncher.clone();
        puncher.on_datagram(Arc::new(move |data: &[u8], from| {
            puncher_wire.deliver(&via, data, from);
        }));
        let ask = Ask { internal: true, command: CMD_PING, target: None, value: None };
        let pending = tokio::spawn({
            let (wire, puncher, to) = (wire.clone(), puncher.clone(), node.local_addr());
            async move { wire.request(&puncher, to, ask, 0).await }
        });
        let (bytes, from) = requests.recv().await.unwrap();
        let Ok(Message::Request(req)) = decode_message(&bytes) else { panic!("not a request") };
        assert_eq!(from, puncher.local_addr());
        let other = encode_response_to_bytes(&Response {
            tid: req.tid,
            to: Ipv4Peer { host: "203.0.113.7".into(), port: 5555 },
            id: None,
            token: None,
            closer_nodes: vec![],
            error: 0,
            value: None,
        })
        .unwrap();
        node.send_to(&other, from).unwrap();
        assert_eq!(pending.await.unwrap().unwrap().to.port, 5555);
        assert_eq!(wire.seen_by(node.local_addr()).map(|p| p.port), Some(4242));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_times_out_after_its_retries() {
        let ours = udx::Socket::bind(localhost()).unwrap();
        let wire = DhtWire::install(ours.clone(), ours.clone());
        let silent = udx::Socket::bind(localhost()).unwrap();
        let ask = Ask { internal: true, command: CMD_PING, target: None, value: None };
        let started = tokio::time::Instant::now();
        let result = wire.request(&ours, silent.local_addr(), ask, 2).await;
        assert_eq!(result.unwrap_err(), WireError::Timeout);
        assert_eq!(started.elapsed(), REQUEST_TIMEOUT * 3);
        assert!(wire.inner.lock().inflight.is_empty());
        wire.close();
        let ask = Ask { internal: true, command: CMD_PING, target: None, value: None };
        assert_eq!(wire.request(&ours, silent.local_addr(), ask, 0).await.unwrap_err(), WireError::Closed);
    }
}
