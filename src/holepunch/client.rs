//! The client side (hyperdht's `lib/connect.js`): find the relays holding the server's
//! announcement, handshake through them, then connect as the server's payload allows:
//! directly (it is open, or not holepunchable), on the LAN (it is behind our NAT), or
//! by holepunching (probe rounds through the server's relay, then punching), with
//! hyperdht's limit on random-NAT punches.

use std::net::SocketAddr;
use std::time::Duration;

use peeroxide_dht::crypto::hash;
use peeroxide_dht::hyperdht::alloc_stream_id;
use peeroxide_dht::hyperdht_messages::{
    decode_handshake_from_bytes, decode_holepunch_msg_from_bytes, encode_handshake_to_bytes, encode_holepunch_msg_to_bytes,
    HandshakeMessage, HolepunchMessage, HolepunchPayload, NoisePayload, RelayInfo, SecretStreamInfo, UdxInfo, ERROR_ABORTED,
    ERROR_NONE, FIREWALL_OPEN, FIREWALL_RANDOM, FIREWALL_UNKNOWN, MODE_FROM_CLIENT, MODE_REPLY, PEER_HANDSHAKE, PEER_HOLEPUNCH,
};
use peeroxide_dht::messages::Ipv4Peer;
use peeroxide_dht::noise::Keypair as NoiseKeypair;
use peeroxide_dht::noise_wrap::{NoiseWrap, NoiseWrapResult};
use peeroxide_dht::secret_stream::SecretStream;
use peeroxide_dht::secure_payload::SecurePayload;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::puncher::{is_consistent, PunchEvent, Puncher};
use super::wire::{Ask, DhtWire, Reply, REQUEST_RETRIES};
use super::{addr_of, error_payload, is_bogon, is_reserved, match_address, peer_of, same_peer};
use crate::keys::KeyPair;
use crate::node::DhtNode;

/// Handshakes through relays in flight at once (hyperdht: 2).
const PARALLEL_HANDSHAKES: usize = 2;
/// How long an open client waits for the server to dial it.
const PASSIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a LAN address has to answer a ping.
const LAN_PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for a server's fast-open probe that it said it sent (it sends it
/// before its answer, which comes the longer way, through a relay), before asking it to
/// punch: a few scheduling hiccups' worth.
const FAST_OPEN_GRACE: Duration = Duration::from_millis(250);

/// hyperdht's connect errors, with its codes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    #[error("PEER_NOT_FOUND: Peer not found")]
    PeerNotFound,
    #[error("PEER_CONNECTION_FAILED: Failed to connect to peer")]
    ConnectionFailed,
    #[error("SERVER_INCOMPATIBLE: Server is using an incompatible version")]
    ServerIncompatible,
    #[error("SERVER_ERROR: {0}")]
    ServerError(String),
    #[error("CANNOT_HOLEPUNCH: Cannot holepunch to remote")]
    CannotHolepunch,
    #[error("HOLEPUNCH_ABORTED: Holepunch aborted")]
    HolepunchAborted,
    #[error("HOLEPUNCH_PROBE_TIMEOUT: Holepunching probe did not finish in time")]
    ProbeTimeout,
    #[error("HOLEPUNCH_DOUBLE_RANDOMIZED_NATS: Both remote and local NATs are randomizing")]
    DoubleRandomized,
    #[error("HOLEPUNCH_INVALID: Invalid holepunch payload")]
    HolepunchInvalid,
    #[error("REMOTE_ABORTED: {0}")]
    RemoteAborted(String),
    #[error("REMOTE_NOT_HOLEPUNCHING: Remote is not holepunching")]
    RemoteNotHolepunching,
    #[error("REMOTE_NOT_HOLEPUNCHABLE: Remote is not holepunchable")]
    RemoteNotHolepunchable,
    #[error("could not open the stream: {0}")]
    Stream(String),
    #[error("the DHT node failed: {0}")]
    Dht(String),
}

/// Connects to `remote_public_key` as `key_pair`; the stream is end-to-end encrypted.
pub async fn connect(node: &DhtNode, key_pair: &KeyPair, remote_public_key: [u8; 32]) -> Result<SecretStream<udx::Stream>, ConnectError> {
    let target = hash(&remote_public_key);
    let replies = node.handle().query_find_peer(target).await.map_err(|e| ConnectError::Dht(e.to_string()))?;
    let mut relays: Vec<SocketAddr> = Vec::new();
    for reply in replies.iter().filter(|r| r.value.is_some()) {
        if let Some(addr) = addr_of(&reply.from) {
            if !relays.contains(&addr) {
                relays.push(addr);
            }
        }
    }
    hp_debug!("connect: {} find-peer replies, relays {relays:?}", replies.len());
    if relays.is_empty() {
        return Err(ConnectError::PeerNotFound);
    }

    let wire = node.wire().clone();
    let stream_id = alloc_stream_id();
    let our_remote = node.reachable_address();
    let mut addresses4: Vec<Ipv4Peer> = our_remote.iter().cloned().collect();
    addresses4.extend(node.local_addresses().await);
    let our_firewall = if our_remote.is_some() { FIREWALL_OPEN } else { FIREWALL_UNKNOWN };
    let mut noise = NoiseWrap::new_initiator(
        NoiseKeypair { public_key: key_pair.public_key.0, secret_key: key_pair.secret_key },
        remote_public_key,
    );
    let request = noise
        .send(&NoisePayload {
            version: 1,
            error: ERROR_NONE,
            firewall: our_firewall,
            holepunch: None,
            addresses4,
            addresses6: vec![],
            udx: Some(UdxInfo { version: 1, reusable_socket: false, id: u64::from(stream_id), seq: 0 }),
            secret_stream: Some(SecretStreamInfo { version: 1 }),
            relay_through: None,
            relay_addresses: None,
        })
        .map_err(|e| ConnectError::Stream(e.to_string()))?;
    let value = encode_handshake_to_bytes(&HandshakeMessage { mode: MODE_FROM_CLIENT, noise: request, peer_address: None, relay_address: None })
        .map_err(|e| ConnectError::Stream(e.to_string()))?;

    let handshake = handshake_through(&wire, &relays, target, value).await;
    hp_debug!("connect: handshake {:?}", handshake.as_ref().map(|(relay, reply)| (relay, reply.from, reply.to.clone(), reply.value.as_ref().map(|v| v.len()))));
    let (relay, reply) = handshake?;
    let hs = decode_handshake_from_bytes(reply.value.as_deref().unwrap_or_default()).map_err(|_| ConnectError::ConnectionFailed)?;
    if hs.mode != MODE_REPLY || reply.from != relay || hs.noise.is_empty() {
        return Err(ConnectError::ConnectionFailed);
    }
    let relay_address = peer_of(relay);
    let server_address = hs.peer_address.clone().unwrap_or_else(|| relay_address.clone());
    let client_address = reply.to.clone();
    let payload = noise.recv(&hs.noise).map_err(|_| ConnectError::ConnectionFailed)?;
    if payload.version != 1 {
        return Err(ConnectError::ServerIncompatible);
    }
    if payload.error != ERROR_NONE {
        return Err(ConnectError::ServerError("Server returned an error".into()));
    }
    let remote_id = payload
        .udx
        .as_ref()
        .and_then(|u| u32::try_from(u.id).ok())
        .ok_or_else(|| ConnectError::ServerError("Server did not send UDX data".into()))?;
    let session = noise.finalize().map_err(|_| ConnectError::ConnectionFailed)?;

    let attempt = Attempt {
        node,
        wire,
        target,
        stream_id,
        remote_id,
        payload,
        session,
        relay_address,
        server_address,
        client_address,
        our_firewall,
    };
    let route = attempt.run().await;
    hp_debug!("connect: route {:?} (server fw={} addrs={:?} holepunch={:?}, server at {:?}, we at {:?})", route.as_ref().map(|r| match r { Route::Dial(s, a) => format!("dial {a} from {}", s.local_addr()), Route::Stream(_) => "dialled by server".into() }), attempt.payload.firewall, attempt.payload.addresses4, attempt.payload.holepunch, attempt.server_address, attempt.client_address);
    let stream = match route? {
        Route::Dial(socket, addr) => udx::Stream::connect_with(&socket, stream_id, remote_id, addr, crate::connection::stream_config())
            .map_err(|e| ConnectError::Stream(e.to_string()))?,
        Route::Stream(stream) => stream,
    };
    let session = &attempt.session;
    let secret = SecretStream::from_session(true, stream, session.tx, session.rx, session.handshake_hash, session.remote_public_key)
        .await
        .map_err(|e| ConnectError::Stream(e.to_string()));
    hp_debug!("connect: secret stream {:?}", secret.as_ref().map(|_| ()));
    secret
}

/// Sends the handshake through the relays, a few at a time; the first reply wins.
async fn handshake_through(wire: &DhtWire, relays: &[SocketAddr], target: [u8; 32], value: Vec<u8>) -> Result<(SocketAddr, Reply), ConnectError> {
    let mut pending = relays.iter().copied();
    let mut tries = JoinSet::new();
    let start = |tries: &mut JoinSet<_>, relay: SocketAddr| {
        let wire = wire.clone();
        let value = value.clone();
        tries.spawn(async move {
            let ask = Ask { internal: false, command: PEER_HANDSHAKE, target: Some(target), value: Some(value) };
            (relay, wire.request(&wire.primary().clone(), relay, ask, REQUEST_RETRIES).await)
        });
    };
    for relay in pending.by_ref().take(PARALLEL_HANDSHAKES) {
        start(&mut tries, relay);
    }
    while let Some(done) = tries.join_next().await {
        match done {
            Ok((relay, Ok(reply))) if reply.error == 0 && reply.value.is_some() => return Ok((relay, reply)),
            _ => {
                if let Some(next) = pending.next() {
                    start(&mut tries, next);
                }
            }
        }
    }
    Err(ConnectError::ConnectionFailed)
}

/// How the stream gets its peer.
enum Route {
    /// Connect from this socket to this address.
    Dial(udx::Socket, SocketAddr),
    /// The server dialled us: this stream has its peer.
    Stream(udx::Stream),
}

struct Attempt<'a> {
    node: &'a DhtNode,
    wire: DhtWire,
    target: [u8; 32],
    stream_id: u32,
    remote_id: u32,
    payload: NoisePayload,
    session: NoiseWrapResult,
    relay_address: Ipv4Peer,
    server_address: Ipv4Peer,
    client_address: Ipv4Peer,
    our_firewall: u64,
}

impl Attempt<'_> {
    /// Where the stream connects: a socket of ours and the server's address.
    async fn run(&self) -> Result<Route, ConnectError> {
        let payload = &self.payload;
        let relayed = !same_peer(&self.server_address, &self.relay_address);
        let holepunchable = payload.holepunch.as_ref().is_some_and(|h| !h.relays.is_empty());
        let dial = |addr: &Ipv4Peer| addr_of(addr).map(|a| Route::Dial(self.wire.primary().clone(), a)).ok_or(ConnectError::ConnectionFailed);
        if !relayed {
            // The server answered us itself: it is where we sent the handshake.
            return dial(&self.relay_address);
        }
        if payload.firewall == FIREWALL_OPEN || !holepunchable {
            let first_public = payload.addresses4.iter().find(|a| !is_bogon(&a.host) && a.port != 0);
            return dial(first_public.unwrap_or(&self.server_address));
        }
        if self.our_firewall == FIREWALL_OPEN {
            return self.wait_for_server().await;
        }
        let lan = (self.client_address.host == self.server_address.host).then(|| {
            let theirs: Vec<Ipv4Peer> = payload.addresses4.iter().filter(|a| !is_reserved(&a.host)).cloned().collect();
            let ours = self.node.local_addresses_now();
            match_address(&ours, &theirs).or_else(|| theirs.first().cloned())
        });
        // The LAN first, then holepunching: a holepunch round the server cannot use yet
        // makes a hyperdht server abort the handshake, and with it the stream the LAN
        // connection was about to reach. A blocked LAN costs at most `LAN_PING_TIMEOUT`.
        if let Some(addr) = lan.flatten() {
            if let Some((socket, addr)) = self.lan(addr).await {
                return Ok(Route::Dial(socket, addr));
            }
        }
        self.holepunch().await.map(|(socket, addr)| Route::Dial(socket, addr))
    }

    /// An open client: the server dials us.
    async fn wait_for_server(&self) -> Result<Route, ConnectError> {
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let hook: udx::FirewallHook = Box::new(move |_socket, addr| {
            if let Some(tx) = tx.take() {
                let _ = tx.send(addr);
            }
            addr.port() != 0
        });
        let stream = udx::Stream::listen_on(&self.wire.node_sockets(), self.stream_id, self.remote_id, hook, crate::connection::stream_config())
            .map_err(|e| ConnectError::Stream(e.to_string()))?;
        match tokio::time::timeout(PASSIVE_TIMEOUT, rx).await {
            Ok(Ok(_)) => Ok(Route::Stream(stream)),
            _ => Err(ConnectError::HolepunchAborted),
        }
    }

    /// The server is behind our NAT: its LAN address answers a DHT ping.
    async fn lan(&self, addr: Ipv4Peer) -> Option<(udx::Socket, SocketAddr)> {
        let to = addr_of(&addr)?;
        let ping = self.node.handle().dht().ping(&addr.host, addr.port);
        match tokio::time::timeout(LAN_PING_TIMEOUT, ping).await {
            Ok(Ok(_)) => Some((self.wire.listen().clone(), to)),
            _ => None,
        }
    }

    async fn holepunch(&self) -> Result<(udx::Socket, SocketAddr), ConnectError> {
        let Some(info) = self.payload.holepunch.as_ref().filter(|h| !h.relays.is_empty()) else {
            return Err(ConnectError::CannotHolepunch);
        };
        let (puncher, events) = Puncher::new(self.node.punch_context(), true, self.payload.firewall, None)
            .map_err(|e| ConnectError::Stream(e.to_string()))?;
        let _destroy = DestroyOnDrop(puncher.clone());
        let mut punch = Punch {
            attempt: self,
            puncher: puncher.clone(),
            secure: SecurePayload::new(self.session.holepunch_secret),
            id: info.id,
            round: 0,
        };
        let server_relay = info.relays.iter().find(|r| same_peer(&r.relay_address, &self.relay_address)).unwrap_or(&info.relays[0]).clone();
        punch.run(server_relay, events).await
    }
}

/// Ends the puncher however the attempt ends (a connect that timed out drops it).
struct DestroyOnDrop(Puncher);

impl Drop for DestroyOnDrop {
    fn drop(&mut self) {
        self.0.destroy();
    }
}

struct Punch<'a, 'b> {
    attempt: &'a Attempt<'b>,
    puncher: Puncher,
    secure: SecurePayload,
    id: u64,
    round: u64,
}

/// What the probe round settled.
struct Probed {
    token: Option<[u8; 32]>,
    /// The server's address as the relay saw it.
    peer_address: Ipv4Peer,
    /// The server pinged the session we opened toward it (it is consistent, and the
    /// address we opened toward is its own).
    fast_open: bool,
}

/// A holepunch round's answer.
struct Answer {
    peer_address: Ipv4Peer,
    payload: HolepunchPayload,
}

impl Punch<'_, '_> {
    async fn run(&mut self, server_relay: RelayInfo, mut events: mpsc::UnboundedReceiver<PunchEvent>) -> Result<(udx::Socket, SocketAddr), ConnectError> {
        let rounds = async {
            let mut server_address = self.attempt.server_address.clone();
            let probed = self.probe_round(Some(server_address.clone()), &server_relay, true).await?;
            if self.done() {
                return Ok(());
            }
            // The server saw the session we opened toward it and pinged us back before it
            // answered (hyperdht's fast open): give that probe its moment. Asking for a
            // punch we do not need makes the server start one, and across our randomizing
            // NAT that holds its node's random-punch limit for 20 s, refusing (TRY_LATER)
            // whoever dials it from that node next, as a scraper whose alias we registered.
            if probed.fast_open {
                tokio::time::sleep(FAST_OPEN_GRACE).await;
            }
            let (token, peer_address) = (probed.token, probed.peer_address);
            // The server's relay is ours too: the address it saw the server at is current.
            if same_peer(&server_relay.relay_address, &self.attempt.relay_address) && !same_peer(&server_address, &peer_address) {
                server_address = peer_address;
                self.puncher.open_session(&server_address);
            }
            self.round_punch(&server_address, token, &server_relay).await
        };
        tokio::pin!(rounds);
        let mut rounds_done = false;
        loop {
            tokio::select! {
                // A probe that got through wins over rounds still running (hyperdht's
                // `isDone`): no punch is asked for once connected.
                biased;
                event = events.recv() => match event {
                    Some(PunchEvent::Connected { socket, addr }) => return Ok((socket, addr)),
                    Some(PunchEvent::Aborted) | None => return Err(ConnectError::HolepunchAborted),
                },
                result = &mut rounds, if !rounds_done => {
                    rounds_done = true;
                    // Punching started: the puncher connects or gives up on its own.
                    result?;
                }
            }
        }
    }

    /// Connected (a probe got through) or given up: no more rounds.
    fn done(&self) -> bool {
        self.puncher.connected() || self.puncher.destroyed()
    }

    /// One `PEER_HOLEPUNCH` round through `relay` (hyperdht's `updateHolepunch`).
    async fn update(&mut self, peer_address: &Ipv4Peer, relay: &Ipv4Peer, payload: HolepunchPayload) -> Result<Answer, ConnectError> {
        let relay_addr = addr_of(relay).ok_or(ConnectError::HolepunchInvalid)?;
        let socket = self.puncher.socket().ok_or(ConnectError::HolepunchAborted)?;
        let encrypted = self.secure.encrypt(&payload).map_err(|_| ConnectError::HolepunchInvalid)?;
        let msg = HolepunchMessage { mode: MODE_FROM_CLIENT, id: self.id, payload: encrypted, peer_address: Some(peer_address.clone()) };
        let value = encode_holepunch_msg_to_bytes(&msg).map_err(|_| ConnectError::HolepunchInvalid)?;
        let ask = Ask { internal: false, command: PEER_HOLEPUNCH, target: Some(self.attempt.target), value: Some(value) };
        let reply = self.attempt.wire.request(&socket, relay_addr, ask, REQUEST_RETRIES).await.map_err(|_| ConnectError::ConnectionFailed)?;
        let hp = decode_holepunch_msg_from_bytes(reply.value.as_deref().unwrap_or_default()).map_err(|_| ConnectError::HolepunchInvalid)?;
        if hp.mode != MODE_REPLY || reply.from != relay_addr {
            return Err(ConnectError::HolepunchInvalid);
        }
        // The relay saw our puncher socket: a NAT sample of it.
        self.puncher.add_sample(&socket, &reply.to, reply.from);
        let remote = self.secure.decrypt(&hp.payload).map_err(|_| ConnectError::HolepunchInvalid)?;
        if remote.error != ERROR_NONE {
            return Err(ConnectError::RemoteAborted(format!("Remote aborted with error code {}", remote.error)));
        }
        let echoed = remote.remote_token.is_some() && remote.remote_token == payload.token;
        self.puncher.update_remote(remote.punching, remote.firewall, remote.addresses.as_deref(), echoed.then_some(peer_address.host.as_str()));
        Ok(Answer { peer_address: hp.peer_address.unwrap_or_else(|| relay.clone()), payload: remote })
    }

    fn next_round(&mut self) -> u64 {
        let round = self.round;
        self.round += 1;
        round
    }

    async fn probe_round(&mut self, server_address: Option<Ipv4Peer>, server_relay: &RelayInfo, mut retry: bool) -> Result<Probed, ConnectError> {
        // hyperdht probes again after a retry or a reopened socket; bounded here.
        let mut rounds_left = 4u32;
        loop {
            rounds_left = rounds_left.saturating_sub(1);
            // A low-TTL probe toward the server opens our NAT for its fast-open probe.
            if let Some(server) = &server_address {
                self.puncher.open_session(server);
            }
            let payload = HolepunchPayload {
                error: ERROR_NONE,
                firewall: self.puncher.firewall(),
                round: self.next_round(),
                connected: false,
                punching: false,
                addresses: self.puncher.addresses(),
                remote_address: server_address.clone(),
                token: None,
                remote_token: None,
            };
            let answer = self.update(&server_relay.peer_address, &server_relay.relay_address, payload).await?;
            let fast_open = server_address.as_ref().is_some_and(|ours| {
                is_consistent(answer.payload.firewall)
                    && answer.payload.addresses.as_ref().is_some_and(|theirs| theirs.iter().any(|a| same_peer(a, ours)))
            });
            let probed = Probed { token: answer.payload.token, peer_address: answer.peer_address, fast_open };
            if self.done() {
                return Ok(probed);
            }
            // The server does not know its NAT yet: give it a moment (it may fast-open).
            if self.puncher.remote_firewall() == FIREWALL_UNKNOWN {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let stable = self.puncher.analyze(false).await;
            if self.done() {
                return Ok(probed);
            }
            if !stable && self.puncher.analyze(true).await && rounds_left > 0 {
                retry = false;
                continue;
            }
            if (self.puncher.remote_firewall() == FIREWALL_UNKNOWN || probed.token.is_none()) && retry {
                retry = false;
                continue;
            }
            if self.puncher.remote_firewall() == FIREWALL_UNKNOWN || self.puncher.firewall() == FIREWALL_UNKNOWN {
                return Err(self.abort(server_relay, ConnectError::ProbeTimeout).await);
            }
            if self.puncher.remote_firewall() >= FIREWALL_RANDOM && self.puncher.firewall() >= FIREWALL_RANDOM {
                return Err(self.abort(server_relay, ConnectError::DoubleRandomized).await);
            }
            return Ok(probed);
        }
    }

    async fn round_punch(&mut self, server_address: &Ipv4Peer, remote_token: Option<[u8; 32]>, _server_relay: &RelayInfo) -> Result<(), ConnectError> {
        if self.done() {
            return Ok(());
        }
        // What we tell the server now is final.
        self.puncher.freeze();
        let random = self.puncher.remote_firewall() >= FIREWALL_RANDOM || self.puncher.firewall() >= FIREWALL_RANDOM;
        let limits = self.attempt.node.random_punches();
        if random && limits.busy() {
            // No relay to fall back on: the caller tries again later (the server's
            // handshake times out, as with hyperdht).
            return Err(ConnectError::HolepunchAborted);
        }
        let payload = HolepunchPayload {
            error: ERROR_NONE,
            firewall: self.puncher.firewall(),
            round: self.next_round(),
            connected: false,
            punching: true,
            addresses: self.puncher.addresses(),
            remote_address: None,
            token: Some(self.secure.token(&server_address.host)),
            remote_token,
        };
        if random {
            limits.hold();
        }
        let relay = self.attempt.relay_address.clone();
        let answer = self.update(server_address, &relay, payload).await;
        if random {
            limits.unhold();
        }
        answer?;
        if self.done() {
            return Ok(());
        }
        if !self.puncher.remote_holepunching() {
            return Err(ConnectError::RemoteNotHolepunching);
        }
        if !self.puncher.punch().await {
            return Err(ConnectError::RemoteNotHolepunchable);
        }
        Ok(())
    }

    /// Tells the server we give up, then fails with `err`.
    async fn abort(&mut self, server_relay: &RelayInfo, err: ConnectError) -> ConnectError {
        let payload = error_payload(ERROR_ABORTED, self.next_round());
        let _ = self.update(&server_relay.peer_address, &server_relay.relay_address, payload).await;
        self.puncher.destroy();
        err
    }
}
