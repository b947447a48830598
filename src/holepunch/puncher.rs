//! A holepunching socket set (hyperdht's `lib/holepuncher.js`): its own UDP socket(s),
//! the NAT analysis of that socket, one-byte probes, and the three ways to punch:
//! consistent against consistent (probe the peer's addresses), consistent against random
//! (probe random ports of the peer's host), random against consistent (open up to 256
//! sockets toward the peer: one of their mappings is where the peer's probes land).
//!
//! The initiator (the connecting side) connects when a probe reaches it; the other side
//! answers every probe with one, and its stream connects on the first UDX packet (the
//! server's stream listens on every socket of its puncher).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use peeroxide_dht::hyperdht_messages::{FIREWALL_CONSISTENT, FIREWALL_OPEN, FIREWALL_RANDOM, FIREWALL_UNKNOWN};
use peeroxide_dht::messages::Ipv4Peer;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use super::nat::{Nat, MIN_SAMPLES};
use super::wire::{Ask, DhtWire, CMD_PING};
use super::{addr_of, RandomPunches};

/// Sockets opened toward a peer across our randomizing NAT.
pub const BIRTHDAY_SOCKETS: usize = 256;
/// A probe that opens our NAT but should die before the peer's (hyperdht: 5 hops).
pub const HOLEPUNCH_TTL: u32 = 5;
const PROBE: [u8; 1] = [0];
const MAX_REOPENS: usize = 3;
/// Rounds of consistent probes, a second apart.
const CONSISTENT_TRIES: u32 = 10;
/// Random probes, 20 ms apart (~35 s).
const RANDOM_TRIES: u32 = 1750;
const RANDOM_PROBE_GAP: Duration = Duration::from_millis(20);
/// hyperdht skips the freshest nodes (busy with current traffic) once it knows 8.
const SAMPLE_SKIP_FRESH: usize = 5;

/// What a puncher needs of its node.
#[derive(Clone)]
pub struct PunchContext {
    pub wire: DhtWire,
    /// The address its sockets bind (the node's host).
    pub bind: IpAddr,
    pub random_punches: Arc<RandomPunches>,
    /// The node is not known to be reachable unsolicited.
    pub firewalled: bool,
}

#[derive(Debug)]
pub enum PunchEvent {
    /// A probe from the peer reached us (initiator only): connect the stream here.
    Connected { socket: udx::Socket, addr: SocketAddr },
    /// Gave up, or destroyed before connecting.
    Aborted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAddress {
    pub host: String,
    pub port: u16,
    pub verified: bool,
}

/// Called with every socket the puncher opens (a server adds it to its stream's).
pub type SocketSink = Arc<dyn Fn(&udx::Socket) + Send + Sync>;

#[derive(Clone)]
pub struct Puncher {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: PunchContext,
    initiator: bool,
    st: Mutex<State>,
    events: mpsc::UnboundedSender<PunchEvent>,
    stopped: watch::Sender<bool>,
    on_socket: Option<SocketSink>,
}

struct State {
    /// The first is the one we sample, reply from and probe from.
    holders: Vec<udx::Socket>,
    nat: Nat,
    /// Bumped when the primary socket is replaced: late samples of the old one are dropped.
    generation: u64,
    punching: bool,
    connected: bool,
    destroyed: bool,
    randomized: bool,
    remote_firewall: u64,
    remote_addresses: Vec<RemoteAddress>,
    remote_holepunching: bool,
    punched: Option<bool>,
    tasks: Vec<AbortHandle>,
}

impl Puncher {
    /// Opens the first socket and starts sampling its NAT.
    pub fn new(ctx: PunchContext, initiator: bool, remote_firewall: u64, on_socket: Option<SocketSink>) -> std::io::Result<(Self, mpsc::UnboundedReceiver<PunchEvent>)> {
        let (events, events_rx) = mpsc::unbounded_channel();
        let nat = Nat::new(ctx.firewalled);
        let inner = Arc::new(Inner {
            ctx,
            initiator,
            st: Mutex::new(State {
                holders: Vec::new(),
                nat,
                generation: 0,
                punching: false,
                connected: false,
                destroyed: false,
                randomized: false,
                remote_firewall,
                remote_addresses: Vec::new(),
                remote_holepunching: false,
                punched: None,
                tasks: Vec::new(),
            }),
            events,
            stopped: watch::channel(false).0,
            on_socket,
        });
        let socket = inner.open_socket()?;
        inner.lock().holders.push(socket);
        let puncher = Self { inner };
        puncher.inner.spawn_sampling(0);
        Ok((puncher, events_rx))
    }

    /// The socket replies and probes leave from.
    pub fn socket(&self) -> Option<udx::Socket> {
        self.inner.lock().holders.first().cloned()
    }

    pub fn owns(&self, socket: &udx::Socket) -> bool {
        self.inner.lock().holders.iter().any(|s| s.same(socket))
    }

    pub fn firewall(&self) -> u64 {
        self.inner.lock().nat.firewall
    }

    pub fn addresses(&self) -> Option<Vec<Ipv4Peer>> {
        self.inner.lock().nat.addresses.clone()
    }

    pub fn remote_firewall(&self) -> u64 {
        self.inner.lock().remote_firewall
    }

    pub fn remote_holepunching(&self) -> bool {
        self.inner.lock().remote_holepunching
    }

    pub fn punching(&self) -> bool {
        self.inner.lock().punching
    }

    pub fn connected(&self) -> bool {
        self.inner.lock().connected
    }

    pub fn destroyed(&self) -> bool {
        self.inner.lock().destroyed
    }

    /// Punching across a randomizing NAT (counted in the node's limit).
    pub fn randomized(&self) -> bool {
        self.inner.lock().randomized
    }

    pub fn freeze(&self) {
        self.inner.lock().nat.freeze();
    }

    /// Adds a NAT sample seen on one of our sockets (a relayed request's `to`).
    pub fn add_sample(&self, via: &udx::Socket, to: &Ipv4Peer, from: SocketAddr) {
        let mut st = self.inner.lock();
        if st.holders.first().is_some_and(|s| s.same(via)) {
            st.nat.add(to, from);
        }
    }

    /// What the peer told us; `verified` is the host whose token it echoed.
    pub fn update_remote(&self, punching: bool, firewall: u64, addresses: Option<&[Ipv4Peer]>, verified: Option<&str>) {
        let mut st = self.inner.lock();
        let was_verified = |host: &str, st: &State| st.remote_addresses.iter().any(|a| a.verified && a.host == host);
        let remote: Vec<RemoteAddress> = addresses
            .unwrap_or_default()
            .iter()
            .map(|a| RemoteAddress { host: a.host.clone(), port: a.port, verified: verified == Some(a.host.as_str()) || was_verified(&a.host, &st) })
            .collect();
        st.remote_firewall = firewall;
        st.remote_addresses = remote;
        st.remote_holepunching = punching;
    }

    /// Sends a probe to `addr` from our socket (opens our NAT toward it).
    pub fn ping(&self, addr: &Ipv4Peer) {
        if let Some(socket) = self.socket() {
            probe(&socket, addr, false);
        }
    }

    /// A low-TTL probe: opens our NAT toward `addr` without reaching the peer's.
    pub fn open_session(&self, addr: &Ipv4Peer) {
        if let Some(socket) = self.socket() {
            probe(&socket, addr, true);
        }
    }

    /// Waits for the NAT analysis; `false` when it is unusable (unknown, or random on
    /// both sides). With `allow_reopen`, tries fresh sockets first (hyperdht: mobile NATs
    /// sometimes give a new socket a better mapping).
    pub async fn analyze(&self, allow_reopen: bool) -> bool {
        self.inner.settled().await;
        if !self.inner.unstable() {
            return true;
        }
        if !allow_reopen {
            return false;
        }
        for _ in 0..MAX_REOPENS {
            {
                let st = self.inner.lock();
                if !self.inner.unstable_in(&st) || st.destroyed || st.connected || st.punching {
                    break;
                }
            }
            if self.inner.reset().is_err() {
                break;
            }
            self.inner.settled().await;
        }
        coerce(self.firewall()) == FIREWALL_CONSISTENT
    }

    /// Starts punching as the NATs allow; `false` when they do not (or nothing to punch
    /// to). Returns once punching has started; the same answer every time.
    pub async fn punch(&self) -> bool {
        if let Some(done) = self.inner.lock().punched {
            return done;
        }
        let result = self.inner.clone().punch().await;
        self.inner.lock().punched = Some(result);
        result
    }

    /// Stops everything, closes the sockets nobody else uses, and (not connected) says
    /// `Aborted`. Idempotent.
    pub fn destroy(&self) {
        self.inner.destroy();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_socket(self: &Arc<Self>) -> std::io::Result<udx::Socket> {
        let socket = udx::Socket::bind(SocketAddr::new(self.ctx.bind, 0)).map_err(|e| match e {
            udx::UdxError::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        })?;
        let weak: Weak<Inner> = Arc::downgrade(self);
        let via = socket.downgrade();
        socket.on_datagram(Arc::new(move |data: &[u8], from: SocketAddr| {
            let (Some(inner), Some(via)) = (weak.upgrade(), via.upgrade()) else { return };
            if data.len() > 1 {
                // DHT traffic: our pings' replies, holepunch requests relayed to this socket.
                inner.ctx.wire.deliver(&via, data, from);
            } else {
                inner.on_probe(&via, from);
            }
        }));
        if let Some(sink) = &self.on_socket {
            sink(&socket);
        }
        Ok(socket)
    }

    fn on_probe(&self, via: &udx::Socket, from: SocketAddr) {
        hp_debug!("probe in on {} from {from} initiator={}", via.local_addr(), self.initiator);
        if !self.initiator {
            // Answer: the initiator connects on it (and our NAT now knows the peer).
            let _ = via.send_to(&PROBE, from);
            return;
        }
        let mut st = self.lock();
        if st.connected || st.destroyed {
            return;
        }
        st.connected = true;
        st.punching = false;
        let kept: Vec<udx::Socket> = st.holders.drain(..).filter(|s| s.same(via)).collect();
        st.holders = kept;
        self.end_randomized(&mut st);
        for task in st.tasks.drain(..) {
            task.abort();
        }
        drop(st);
        self.stopped.send_replace(true);
        let _ = self.events.send(PunchEvent::Connected { socket: via.clone(), addr: from });
    }

    fn unstable_in(&self, st: &State) -> bool {
        let local = st.nat.firewall;
        (st.remote_firewall >= FIREWALL_RANDOM && local >= FIREWALL_RANDOM) || local == FIREWALL_UNKNOWN
    }

    fn unstable(&self) -> bool {
        self.unstable_in(&self.lock())
    }

    async fn settled(&self) {
        let mut settled = self.lock().nat.settled();
        let _ = settled.wait_for(|done| *done).await;
    }

    /// A new primary socket, a new analysis.
    fn reset(self: &Arc<Self>) -> std::io::Result<()> {
        let socket = self.open_socket()?;
        let generation = {
            let mut st = self.lock();
            if st.destroyed {
                return Ok(());
            }
            if let Some(old) = st.holders.pop() {
                old.remove_datagram_handler();
            }
            st.holders.insert(0, socket);
            st.nat.give_up();
            st.nat = Nat::new(self.ctx.firewalled);
            st.generation += 1;
            st.generation
        };
        self.spawn_sampling(generation);
        Ok(())
    }

    fn spawn(self: &Arc<Self>, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(work).abort_handle();
        let mut st = self.lock();
        if st.destroyed {
            handle.abort();
            return;
        }
        st.tasks.retain(|t| !t.is_finished());
        st.tasks.push(handle);
    }

    /// Pings DHT nodes from the primary socket: the address each saw is a NAT sample.
    fn spawn_sampling(self: &Arc<Self>, generation: u64) {
        let this = self.clone();
        self.spawn(async move {
            for _ in 0..2 {
                let Some((socket, wanted, nodes)) = this.sampling_round(generation) else { return };
                let mut pings = JoinSet::new();
                for node in nodes.into_iter().take(wanted) {
                    let wire = this.ctx.wire.clone();
                    let socket = socket.clone();
                    pings.spawn(async move {
                        let ask = Ask { internal: true, command: CMD_PING, target: None, value: None };
                        (node, wire.request(&socket, node, ask, 0).await)
                    });
                }
                while let Some(done) = pings.join_next().await {
                    if let Ok((node, ref r)) = done {
                        hp_debug!("sample {node} -> {:?}", r.as_ref().map(|r| &r.to));
                    }
                    if let Ok((node, Ok(reply))) = done {
                        let mut st = this.lock();
                        if st.generation == generation && !st.destroyed {
                            st.nat.add(&reply.to, node);
                        }
                    }
                }
                if this.lock().nat.sampled >= MIN_SAMPLES {
                    break;
                }
            }
            let mut st = this.lock();
            if st.generation == generation {
                st.nat.give_up();
            }
        });
    }

    /// The nodes to ping next (hyperdht's `autoSample`): recent ones not yet sampled.
    fn sampling_round(&self, generation: u64) -> Option<(udx::Socket, usize, Vec<SocketAddr>)> {
        let st = self.lock();
        if st.generation != generation || st.destroyed {
            return None;
        }
        let socket = st.holders.first()?.clone();
        let wanted = MIN_SAMPLES.saturating_sub(st.nat.sampled);
        let recent = self.ctx.wire.recent_nodes();
        let skip = if recent.len() >= 8 { SAMPLE_SKIP_FRESH } else { 0 };
        let nodes = recent.into_iter().skip(skip).map(|(addr, _)| addr).filter(|addr| !st.nat.has_sampled(addr)).collect();
        Some((socket, wanted, nodes))
    }

    async fn punch(self: Arc<Self>) -> bool {
        let (local, remote, verified) = {
            let mut st = self.lock();
            if st.destroyed || st.connected || st.remote_addresses.is_empty() {
                return false;
            }
            st.punching = true;
            let verified = st.remote_addresses.iter().find(|a| a.verified).map(|a| Ipv4Peer { host: a.host.clone(), port: a.port });
            (coerce(st.nat.firewall), coerce(st.remote_firewall), verified)
        };
        hp_debug!("punch local={local} remote={remote} verified={verified:?}");
        if local == FIREWALL_CONSISTENT && remote == FIREWALL_CONSISTENT {
            let this = self.clone();
            self.spawn(async move { this.consistent_probes().await });
            return true;
        }
        let Some(verified) = verified else { return false };
        if local == FIREWALL_CONSISTENT && remote >= FIREWALL_RANDOM {
            self.begin_randomized();
            let this = self.clone();
            self.spawn(async move { this.random_probes(verified).await });
            return true;
        }
        if local >= FIREWALL_RANDOM && remote == FIREWALL_CONSISTENT {
            self.begin_randomized();
            self.open_birthday_sockets(&verified);
            if self.lock().punching {
                let this = self.clone();
                self.spawn(async move { this.keep_random_nat_open(verified).await });
            }
            return true;
        }
        false
    }

    /// Sleeps unless destroyed or connected meanwhile; `false` then.
    async fn pause(&self, for_time: Duration) -> bool {
        let mut stopped = self.stopped.subscribe();
        if *stopped.borrow_and_update() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(for_time) => {}
            _ = stopped.wait_for(|s| *s) => return false,
        }
        !*self.stopped.borrow()
    }

    fn still_punching(&self) -> bool {
        self.lock().punching
    }

    async fn consistent_probes(self: Arc<Self>) {
        // The responder's fast-open probe just went out: give the initiator's a second.
        if !self.initiator && !self.pause(Duration::from_secs(1)).await {
            return;
        }
        let mut tries = 0u32;
        while self.still_punching() && tries < CONSISTENT_TRIES {
            tries += 1;
            let (socket, targets) = {
                let st = self.lock();
                let Some(socket) = st.holders.first().cloned() else { break };
                // Unverified addresses only every fourth round.
                let targets: Vec<Ipv4Peer> = st
                    .remote_addresses
                    .iter()
                    .filter(|a| a.verified || tries & 3 == 0)
                    .map(|a| Ipv4Peer { host: a.host.clone(), port: a.port })
                    .collect();
                (socket, targets)
            };
            for target in &targets {
                probe(&socket, target, false);
            }
            if !self.pause(Duration::from_secs(1)).await {
                return;
            }
        }
        self.auto_destroy();
    }

    async fn random_probes(self: Arc<Self>, remote: Ipv4Peer) {
        for _ in 0..RANDOM_TRIES {
            if !self.still_punching() {
                break;
            }
            let Some(socket) = self.lock().holders.first().cloned() else { break };
            probe(&socket, &Ipv4Peer { host: remote.host.clone(), port: random_port() }, false);
            if !self.pause(RANDOM_PROBE_GAP).await {
                return;
            }
        }
        self.auto_destroy();
    }

    fn open_birthday_sockets(self: &Arc<Self>, remote: &Ipv4Peer) {
        loop {
            {
                let st = self.lock();
                if !st.punching || st.holders.len() >= BIRTHDAY_SOCKETS {
                    return;
                }
            }
            let Ok(socket) = self.open_socket() else { return };
            if self.lock().holders.len().is_multiple_of(64) {
                hp_debug!("birthday sockets: {}", self.lock().holders.len());
            }
            probe(&socket, remote, true);
            let mut st = self.lock();
            if st.destroyed {
                socket.remove_datagram_handler();
                return;
            }
            st.holders.push(socket);
        }
    }

    async fn keep_random_nat_open(self: Arc<Self>, remote: Ipv4Peer) {
        if !self.pause(Duration::from_millis(100)).await {
            return;
        }
        let mut i = 0usize;
        let mut low_ttl_rounds = 1u32;
        for _ in 0..RANDOM_TRIES {
            if !self.still_punching() {
                break;
            }
            let socket = {
                let st = self.lock();
                if st.holders.is_empty() {
                    break;
                }
                if i >= st.holders.len() {
                    i = 0;
                    low_ttl_rounds = low_ttl_rounds.saturating_sub(1);
                }
                st.holders[i].clone()
            };
            i += 1;
            probe(&socket, &remote, low_ttl_rounds > 0);
            if !self.pause(RANDOM_PROBE_GAP).await {
                return;
            }
        }
        self.auto_destroy();
    }

    fn auto_destroy(&self) {
        if !self.lock().connected {
            self.destroy();
        }
    }

    fn begin_randomized(&self) {
        let mut st = self.lock();
        if !st.randomized {
            st.randomized = true;
            self.ctx.random_punches.begin();
        }
    }

    fn end_randomized(&self, st: &mut State) {
        if st.randomized {
            st.randomized = false;
            self.ctx.random_punches.end();
        }
    }

    fn destroy(&self) {
        let mut st = self.lock();
        if st.destroyed {
            return;
        }
        st.destroyed = true;
        st.punching = false;
        // The sockets close once nobody holds them (a stream connected on one keeps it).
        for socket in st.holders.drain(..) {
            socket.remove_datagram_handler();
        }
        st.nat.give_up();
        for task in st.tasks.drain(..) {
            task.abort();
        }
        let connected = st.connected;
        if !connected {
            self.end_randomized(&mut st);
        }
        drop(st);
        self.stopped.send_replace(true);
        if !connected {
            let _ = self.events.send(PunchEvent::Aborted);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle gone without destroy(): release the limiter and the sockets.
        let st = self.st.get_mut().unwrap_or_else(|e| e.into_inner());
        for socket in st.holders.drain(..) {
            socket.remove_datagram_handler();
        }
        if st.randomized {
            self.ctx.random_punches.end();
        }
    }
}

fn probe(socket: &udx::Socket, to: &Ipv4Peer, low_ttl: bool) {
    let Some(addr) = addr_of(to) else { return };
    // A probe may be lost; so may its failure to send.
    let _ = if low_ttl { socket.send_to_with_ttl(&PROBE, addr, HOLEPUNCH_TTL) } else { socket.send_to(&PROBE, addr) };
}

fn random_port() -> u16 {
    1000 + (rand::random::<u32>() % 64536) as u16
}

/// Open is as good as consistent for punching.
pub fn coerce(firewall: u64) -> u64 {
    if firewall == FIREWALL_OPEN {
        FIREWALL_CONSISTENT
    } else {
        firewall
    }
}

pub fn is_consistent(firewall: u64) -> bool {
    firewall == FIREWALL_OPEN || firewall == FIREWALL_CONSISTENT
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::holepunch::{destroy_network, peer_of, test_network};

    async fn next_event(events: &mut mpsc::UnboundedReceiver<PunchEvent>) -> PunchEvent {
        tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event in time").expect("an event")
    }

    #[tokio::test]
    async fn consistent_punchers_find_each_other_and_the_initiator_connects() {
        let (nodes, node) = test_network().await;
        let (initiator, mut initiator_events) = Puncher::new(node.punch_context(), true, FIREWALL_UNKNOWN, None).expect("initiator");
        let opened = Arc::new(Mutex::new(Vec::new()));
        let sink: SocketSink = {
            let opened = opened.clone();
            Arc::new(move |s: &udx::Socket| opened.lock().expect("sockets").push(s.local_addr()))
        };
        let (responder, _responder_events) = Puncher::new(node.punch_context(), false, FIREWALL_UNKNOWN, Some(sink)).expect("responder");
        assert!(initiator.analyze(false).await && responder.analyze(false).await, "loopback maps consistently");
        assert_eq!(initiator.firewall(), FIREWALL_CONSISTENT);
        let (i_socket, r_socket) = (initiator.socket().expect("socket"), responder.socket().expect("socket"));
        assert_eq!(*opened.lock().expect("sockets"), vec![r_socket.local_addr()], "the sink sees every socket");
        assert_eq!(responder.addresses(), Some(vec![peer_of(r_socket.local_addr())]));

        // Each tells the other its punch address; the host it verified is the other's.
        let i_addr = [peer_of(i_socket.local_addr())];
        let r_addr = [peer_of(r_socket.local_addr())];
        initiator.update_remote(true, FIREWALL_CONSISTENT, Some(&r_addr), Some("127.0.0.1"));
        responder.update_remote(true, FIREWALL_CONSISTENT, Some(&i_addr), Some("127.0.0.1"));
        assert!(responder.punch().await && initiator.punch().await);
        assert!(initiator.punch().await, "asked again: the same answer");
        match next_event(&mut initiator_events).await {
            PunchEvent::Connected { socket, addr } => {
                assert!(socket.same(&i_socket));
                assert_eq!(addr, r_socket.local_addr());
            }
            PunchEvent::Aborted => panic!("aborted"),
        }
        assert!(initiator.connected() && !initiator.punching());
        assert!(!node.random_punches().busy(), "a consistent punch is not a random one");

        // Destroyed without connecting: Aborted, once.
        responder.destroy();
        responder.destroy();
        assert!(responder.destroyed());
        initiator.destroy();
        destroy_network(nodes, node).await;
    }

    #[tokio::test]
    async fn without_a_verified_address_a_random_punch_does_not_start() {
        let (nodes, node) = test_network().await;
        let (puncher, mut events) = Puncher::new(node.punch_context(), true, FIREWALL_RANDOM, None).expect("puncher");
        assert!(puncher.analyze(false).await);
        puncher.update_remote(true, FIREWALL_RANDOM, Some(&[Ipv4Peer { host: "127.0.0.1".into(), port: 9 }]), None);
        assert!(!puncher.punch().await);
        assert!(!puncher.randomized() && !node.random_punches().busy());
        puncher.destroy();
        assert!(matches!(next_event(&mut events).await, PunchEvent::Aborted));
        destroy_network(nodes, node).await;
    }
}
