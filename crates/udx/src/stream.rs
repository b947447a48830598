//! The tokio face of a [`Conn`]: `AsyncRead`/`AsyncWrite`, and the one small task per
//! stream that runs its timers.
//!
//! Sending is done by whoever changed the state, at once: a write sends from the
//! writer's task, an ACK's effects from the receive task, a timeout from the timer task.
//! Nothing waits for a timer tick to send (a tokio timer tick is a whole millisecond,
//! twenty loopback round trips). The timer task sleeps until the connection's next
//! deadline and is woken early only when that deadline moves closer.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::conn::{CloseReason, Config, Conn, Stats};
use crate::packet::{self, Packet, FLAG_DESTROY, FLAG_MESSAGE};
use crate::socket::{Socket, SocketInner, GSO_MAX_BYTES};
use crate::UdxError;

/// Decides whether the first packet from `addr`, received on the given socket, may connect
/// a listening stream (which then sends from that socket).
pub type FirewallHook = Box<dyn FnMut(&Socket, SocketAddr) -> bool + Send>;

/// After our END is acknowledged, a dropped stream waits this long for the peer's END
/// before it resets the stream.
const LINGER: Duration = Duration::from_secs(2);
/// A stream that closed cleanly keeps its id this long to re-acknowledge a retransmitted
/// END whose ACK was lost (the C libudx's first RTO is 1 s; this covers two of them).
const TIME_WAIT: Duration = Duration::from_secs(3);
/// Room for one packet (the MTU is at most 1500).
const TX_BUFFER: usize = 2048;

thread_local! {
    /// Where a flush builds its burst of packets: `flush` never awaits, so one buffer per
    /// thread serves every stream without an allocation per packet or per stream.
    static BURST: RefCell<Vec<u8>> = RefCell::new(vec![0u8; GSO_MAX_BYTES + TX_BUFFER]);
}

/// A burst the kernel refused (its buffer full), resent first once the socket is writable.
struct Stalled {
    bytes: Vec<u8>,
    segment: usize,
    addr: SocketAddr,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) struct StreamShared {
    id: u32,
    state: Mutex<State>,
    timer: Notify,
}

struct State {
    /// Where the stream sends from; while listening, one of the sockets it listens on.
    socket: Socket,
    /// While listening: the other sockets this stream also accepts its first packet on
    /// (a server that does not know yet which of its sockets a peer will reach).
    also_on: Vec<Socket>,
    cfg: Config,
    remote_id: u32,
    remote_addr: Option<SocketAddr>,
    conn: Option<Conn>,
    firewall: Option<FirewallHook>,
    relay_to: Option<Arc<StreamShared>>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    close_waker: Vec<Waker>,
    /// The deadline the timer task sleeps until.
    armed: Option<Instant>,
    stalled: Option<Stalled>,
    /// The user dropped the handle: finish sending, then go.
    detached: bool,
    linger_until: Option<Instant>,
    time_wait_until: Option<Instant>,
    finished: bool,
    /// Closed before it ever connected (destroyed while listening, or socket closed).
    early_close: Option<CloseReason>,
}

impl StreamShared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one datagram for this stream (receive task). Returns whether it needs an
    /// `after_input` at the end of the batch.
    pub(crate) fn on_packet(self: &Arc<Self>, socket: &Arc<SocketInner>, datagram: &[u8], from: SocketAddr) -> bool {
        let Some(pkt) = Packet::parse(datagram) else { return false };
        let mut st = self.lock();
        if st.finished {
            return false;
        }
        if st.conn.is_none() {
            if st.early_close.is_some() {
                return false;
            }
            let sock = Socket { inner: socket.clone() };
            let accepted = st.firewall.as_mut().is_some_and(|hook| hook(&sock, from));
            if !accepted {
                return false;
            }
            st.firewall = None;
            self.settle_on(&mut st, sock);
            st.remote_addr = Some(from);
            let mut cfg = st.cfg.clone();
            cfg.ipv6 = from.is_ipv6();
            st.conn = Some(Conn::new(now(), st.remote_id, cfg));
            // A write made while listening waits for this moment.
            if let Some(w) = st.write_waker.take() {
                w.wake();
            }
        }
        if let Some(target) = st.relay_to.clone() {
            drop(st);
            target.relay_packet(datagram);
            if pkt.header.flags & FLAG_DESTROY != 0 {
                self.destroy_now();
            }
            return false;
        }
        let Some(conn) = st.conn.as_mut() else { return false };
        let wake = conn.handle_packet(now(), &pkt);
        if wake.readable {
            if let Some(w) = st.read_waker.take() {
                w.wake();
            }
        }
        if wake.writable {
            if let Some(w) = st.write_waker.take() {
                w.wake();
            }
        }
        true
    }

    /// Makes `socket` the one the stream sends from and leaves every other socket it
    /// listened on.
    fn settle_on(self: &Arc<Self>, st: &mut State, socket: Socket) {
        let mut others = std::mem::take(&mut st.also_on);
        if !Arc::ptr_eq(&st.socket.inner, &socket.inner) {
            others.push(std::mem::replace(&mut st.socket, socket));
        }
        for other in others {
            if !Arc::ptr_eq(&other.inner, &st.socket.inner) {
                other.inner.unregister(self.id, self);
            }
        }
    }

    fn listen_also(self: &Arc<Self>, socket: &Socket) -> Result<(), UdxError> {
        let mut st = self.lock();
        if st.conn.is_some() {
            return Ok(());
        }
        if st.finished || st.early_close.is_some() {
            return Err(UdxError::StreamClosed);
        }
        if Arc::ptr_eq(&st.socket.inner, &socket.inner) || st.also_on.iter().any(|s| Arc::ptr_eq(&s.inner, &socket.inner)) {
            return Ok(());
        }
        socket.inner.register(self.id, self.clone())?;
        st.also_on.push(socket.clone());
        Ok(())
    }

    fn connect_to(self: &Arc<Self>, socket: &Socket, addr: SocketAddr) -> Result<(), UdxError> {
        let mut st = self.lock();
        if st.conn.is_some() || st.finished || st.early_close.is_some() {
            return Err(UdxError::StreamClosed);
        }
        if !socket.inner.is_registered(self.id, self) {
            socket.inner.register(self.id, self.clone())?;
        }
        st.firewall = None;
        self.settle_on(&mut st, socket.clone());
        st.remote_addr = Some(addr);
        let mut cfg = st.cfg.clone();
        cfg.ipv6 = addr.is_ipv6();
        st.conn = Some(Conn::new(now(), st.remote_id, cfg));
        if let Some(w) = st.write_waker.take() {
            w.wake();
        }
        self.flush(&mut st);
        Ok(())
    }

    /// One of the sockets this stream is registered on was closed (its routes are gone).
    /// A listening stream with other sockets left keeps listening on those.
    pub(crate) fn socket_closed(self: &Arc<Self>, closed: &Arc<SocketInner>) {
        {
            let mut st = self.lock();
            if st.conn.is_none() && !st.finished {
                st.also_on.retain(|s| !Arc::ptr_eq(&s.inner, closed));
                if !Arc::ptr_eq(&st.socket.inner, closed) {
                    return;
                }
                if let Some(next) = st.also_on.pop() {
                    st.socket = next;
                    return;
                }
            }
        }
        self.destroy_now();
    }

    /// Sends what the batch's packets made due (ACKs, unblocked data) and re-arms timers.
    pub(crate) fn after_input(self: &Arc<Self>) {
        let mut st = self.lock();
        self.flush(&mut st);
    }

    /// Forwards a relayed packet to this stream's peer under its stream id.
    fn relay_packet(&self, datagram: &[u8]) {
        let st = self.lock();
        let (Some(addr), false) = (st.remote_addr, st.finished) else { return };
        let mut buf = [0u8; TX_BUFFER];
        if datagram.len() > buf.len() {
            return;
        }
        let out = &mut buf[..datagram.len()];
        out.copy_from_slice(datagram);
        out[4..8].copy_from_slice(&st.remote_id.to_le_bytes());
        let _ = st.socket.inner.send_to(out, addr);
    }

    /// Sends everything the connection allows now, wakes waiters, re-arms the timer.
    fn flush(&self, st: &mut State) {
        let State { conn, stalled, socket, remote_addr, .. } = st;
        let (Some(conn), Some(addr)) = (conn.as_mut(), *remote_addr) else {
            // Not connected: nothing to send, but a close (destroyed while listening) must
            // still wake the waiters and the timer task, which unregisters the stream.
            self.settle(st);
            return;
        };
        if stalled.is_none() {
            let addr = socket.inner.outgoing_addr(addr);
            *stalled = BURST.with(|burst| send_burst(conn, &socket.inner, addr, &mut burst.borrow_mut()));
        }
        self.settle(st);
    }

    /// Wakes everyone a state change concerns and moves the timer if needed.
    fn settle(&self, st: &mut State) {
        let closed = st.conn.as_ref().and_then(|c| c.closed()).or(st.early_close);
        if closed.is_some() {
            for w in [st.read_waker.take(), st.write_waker.take()].into_iter().flatten() {
                w.wake();
            }
            for w in st.close_waker.drain(..) {
                w.wake();
            }
            self.timer.notify_one();
            return;
        }
        if st.stalled.is_some() {
            self.timer.notify_one();
            return;
        }
        let next = st.conn.as_ref().and_then(|c| c.poll_timeout());
        if let Some(next) = next {
            if st.armed.is_none_or(|armed| next < armed) {
                self.timer.notify_one();
            }
        }
        if st.detached {
            self.timer.notify_one();
        }
    }

    /// Destroys without ceremony (socket closing): no more I/O on this stream.
    pub(crate) fn destroy_now(&self) {
        let mut st = self.lock();
        match st.conn.as_mut() {
            Some(conn) => conn.destroy(),
            None => st.early_close = Some(CloseReason::Destroyed),
        }
        self.flush(&mut st);
    }

    fn unregister(self: &Arc<Self>, st: &mut State) {
        st.finished = true;
        st.socket.inner.unregister(self.id, self);
        for other in std::mem::take(&mut st.also_on) {
            other.inner.unregister(self.id, self);
        }
        st.relay_to = None;
        for w in [st.read_waker.take(), st.write_waker.take()].into_iter().flatten() {
            w.wake();
        }
        for w in st.close_waker.drain(..) {
            w.wake();
        }
    }
}

/// Sends every packet the connection allows now, equal-sized runs of them as one GSO
/// burst. Returns the burst the kernel refused, if it did.
fn send_burst(conn: &mut Conn, socket: &SocketInner, addr: SocketAddr, buf: &mut [u8]) -> Option<Stalled> {
    let now = now();
    let max_segments = socket.max_gso_segments;
    let (mut len, mut segment, mut count) = (0usize, 0usize, 0usize);
    let send = |bytes: &[u8], segment: usize| match socket.send_segments(bytes, segment, addr) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(Stalled { bytes: bytes.to_vec(), segment, addr }),
        // Unreachable and friends: the packets are lost; recovery resends them.
        _ => None,
    };
    loop {
        if count == max_segments || len + segment > GSO_MAX_BYTES {
            if let Some(stalled) = send(&buf[..len], segment) {
                return Some(stalled);
            }
            (len, count) = (0, 0);
        }
        let Some(n) = conn.poll_transmit(now, &mut buf[len..len + TX_BUFFER]) else { break };
        if count > 0 && n > segment {
            // A larger packet cannot join this burst: send the burst, start anew with it.
            if let Some(stalled) = send(&buf[..len], segment) {
                // The new packet is dropped with the refused burst; recovery resends it.
                return Some(stalled);
            }
            buf.copy_within(len..len + n, 0);
            (len, segment, count) = (n, n, 1);
            continue;
        }
        if count == 0 {
            segment = n;
        }
        len += n;
        count += 1;
        if n < segment {
            // A shorter packet ends a burst.
            if let Some(stalled) = send(&buf[..len], segment) {
                return Some(stalled);
            }
            (len, count) = (0, 0);
        }
    }
    if len > 0 {
        return send(&buf[..len], segment);
    }
    None
}

/// The timer task: runs until the stream is closed and drained (or dropped and done).
async fn run_timers(shared: Arc<StreamShared>) {
    loop {
        // A burst the kernel refused goes first, once the socket is writable again.
        let stalled = {
            let st = shared.lock();
            st.stalled.as_ref().map(|_| st.socket.inner.udp.clone())
        };
        if let Some(udp) = stalled {
            let writable = udp.writable().await;
            let mut st = shared.lock();
            if writable.is_err() {
                shared.unregister(&mut st);
                return;
            }
            if let Some(burst) = st.stalled.take() {
                let refused = st.socket.inner.send_segments(&burst.bytes, burst.segment, burst.addr);
                if matches!(&refused, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                    st.stalled = Some(burst);
                    continue;
                }
            }
            shared.flush(&mut st);
            continue;
        }
        let Some(deadline) = next_deadline(&shared) else { return };
        let fired = match deadline {
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => true,
                _ = shared.timer.notified() => false,
            },
            None => {
                shared.timer.notified().await;
                false
            }
        };
        if fired {
            let mut st = shared.lock();
            st.armed = None;
            if let Some(conn) = st.conn.as_mut() {
                conn.handle_timeout(now());
            }
            shared.flush(&mut st);
            if let Some(w) = st.write_waker.take() {
                w.wake();
            }
        }
    }
}

/// What the timer task sleeps until (`Some(None)`: until notified), or `None` when the
/// stream is finished and unregistered.
fn next_deadline(shared: &Arc<StreamShared>) -> Option<Option<Instant>> {
    let mut st = shared.lock();
    let t = now();
    let drained = st.conn.as_ref().is_some_and(|c| c.is_drained());
    if drained && !st.socket.is_closed() && st.conn.as_ref().and_then(|c| c.closed()) == Some(CloseReason::Done) {
        let until = *st.time_wait_until.get_or_insert(t + TIME_WAIT);
        if t < until {
            return Some(Some(until));
        }
    }
    if st.early_close.is_some() || drained {
        shared.unregister(&mut st);
        return None;
    }
    if st.detached {
        let State { conn, linger_until, .. } = &mut *st;
        match conn.as_mut() {
            // Never connected and nobody will use it.
            None => {
                shared.unregister(&mut st);
                return None;
            }
            Some(conn) if conn.closed().is_none() && conn.local_ended() => {
                let until = *linger_until.get_or_insert(t + LINGER);
                if conn.remote_ended() || t >= until {
                    conn.destroy();
                    shared.flush(&mut st);
                    return Some(Some(t));
                }
            }
            Some(_) => {}
        }
    }
    let mut next = st.conn.as_ref().and_then(|c| c.poll_timeout());
    if let Some(linger) = st.linger_until {
        next = Some(next.map_or(linger, |n| n.min(linger)));
    }
    st.armed = next;
    Some(next)
}

/// A weak handle on a [`Stream`]: adds listening sockets or connects it while the stream
/// lives; does nothing once it is gone.
#[derive(Clone)]
pub struct StreamHandle {
    shared: std::sync::Weak<StreamShared>,
}

impl StreamHandle {
    pub fn listen_also(&self, socket: &Socket) -> Result<(), UdxError> {
        self.shared.upgrade().ok_or(UdxError::StreamClosed)?.listen_also(socket)
    }

    pub fn connect_to(&self, socket: &Socket, addr: SocketAddr) -> Result<(), UdxError> {
        self.shared.upgrade().ok_or(UdxError::StreamClosed)?.connect_to(socket, addr)
    }

    /// Whether the stream has a peer (connected, or closed after it had one).
    pub fn is_connected(&self) -> bool {
        self.shared.upgrade().is_some_and(|s| s.lock().conn.is_some())
    }
}

/// A UDX stream: a reliable byte stream to one remote stream.
pub struct Stream {
    shared: Arc<StreamShared>,
    closed_reported: bool,
}

impl Stream {
    fn create(socket: &Socket, local_id: u32, remote_id: u32, remote_addr: Option<SocketAddr>, firewall: Option<FirewallHook>, cfg: Config) -> Result<Stream, UdxError> {
        let conn = remote_addr.map(|addr| Conn::new(now(), remote_id, Config { ipv6: addr.is_ipv6(), ..cfg.clone() }));
        let shared = Arc::new(StreamShared {
            id: local_id,
            state: Mutex::new(State {
                socket: socket.clone(),
                also_on: Vec::new(),
                cfg,
                remote_id,
                remote_addr,
                conn,
                firewall,
                relay_to: None,
                read_waker: None,
                write_waker: None,
                close_waker: Vec::new(),
                armed: None,
                stalled: None,
                detached: false,
                linger_until: None,
                time_wait_until: None,
                finished: false,
                early_close: None,
            }),
            timer: Notify::new(),
        });
        socket.inner.register(local_id, shared.clone())?;
        tokio::spawn(run_timers(shared.clone()));
        Ok(Stream { shared, closed_reported: false })
    }

    /// A stream to `remote_id` at `addr`, sending from `socket`.
    pub fn connect(socket: &Socket, local_id: u32, remote_id: u32, addr: SocketAddr) -> Result<Stream, UdxError> {
        Self::connect_with(socket, local_id, remote_id, addr, Config::default())
    }

    pub fn connect_with(socket: &Socket, local_id: u32, remote_id: u32, addr: SocketAddr, cfg: Config) -> Result<Stream, UdxError> {
        Self::create(socket, local_id, remote_id, Some(addr), None, cfg)
    }

    /// A stream that connects to whoever sends its first packet, if `firewall` agrees
    /// (packets it refuses are dropped and the stream keeps waiting).
    pub fn listen(socket: &Socket, local_id: u32, remote_id: u32, firewall: FirewallHook) -> Result<Stream, UdxError> {
        Self::listen_with(socket, local_id, remote_id, firewall, Config::default())
    }

    pub fn listen_with(socket: &Socket, local_id: u32, remote_id: u32, firewall: FirewallHook, cfg: Config) -> Result<Stream, UdxError> {
        Self::create(socket, local_id, remote_id, None, Some(firewall), cfg)
    }

    /// A listening stream that accepts its first packet on any of `sockets` (at least
    /// one); it then sends from the socket that packet came in on and leaves the others.
    pub fn listen_on(sockets: &[Socket], local_id: u32, remote_id: u32, firewall: FirewallHook, cfg: Config) -> Result<Stream, UdxError> {
        let (first, rest) = sockets.split_first().ok_or(UdxError::SocketClosed)?;
        let stream = Self::create(first, local_id, remote_id, None, Some(firewall), cfg)?;
        for socket in rest {
            stream.listen_also(socket)?;
        }
        Ok(stream)
    }

    /// Makes a listening stream accept its first packet on `socket` too (a socket opened
    /// after the stream, e.g. for holepunching). A no-op once the stream is connected.
    pub fn listen_also(&self, socket: &Socket) -> Result<(), UdxError> {
        self.shared.listen_also(socket)
    }

    /// Connects a listening stream to `addr` through `socket` now, without waiting for a
    /// packet (the peer was found some other way, e.g. by a holepunch probe). Fails if it
    /// is connected already or closed.
    pub fn connect_to(&self, socket: &Socket, addr: SocketAddr) -> Result<(), UdxError> {
        self.shared.connect_to(socket, addr)
    }

    /// A handle for `listen_also`/`connect_to` from elsewhere (a holepuncher) that does
    /// not keep the stream alive.
    pub fn handle(&self) -> StreamHandle {
        StreamHandle { shared: Arc::downgrade(&self.shared) }
    }

    pub fn id(&self) -> u32 {
        self.shared.id
    }

    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.shared.lock().remote_addr
    }

    pub fn socket(&self) -> Socket {
        self.shared.lock().socket.clone()
    }

    pub fn stats(&self) -> Option<Stats> {
        self.shared.lock().conn.as_ref().map(|c| c.stats())
    }

    pub fn mtu(&self) -> usize {
        self.shared.lock().conn.as_ref().map_or(1200, |c| c.mtu())
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.shared.lock().conn.as_ref().and_then(|c| c.srtt())
    }

    /// Why the stream ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let st = self.shared.lock();
        st.conn.as_ref().and_then(|c| c.closed()).or(st.early_close)
    }

    /// Packets arriving on this stream are forwarded, unread, to `destination`'s peer
    /// (a blind relay). Both streams should listen or be connected.
    pub fn relay_to(&self, destination: &Stream) {
        self.shared.lock().relay_to = Some(destination.shared.clone());
    }

    /// Sends an unreliable message (one datagram; dropped if lost).
    pub fn send_message(&self, data: &[u8]) -> Result<(), UdxError> {
        let st = self.shared.lock();
        let (Some(conn), Some(addr)) = (st.conn.as_ref(), st.remote_addr) else { return Err(UdxError::StreamClosed) };
        if let Some(reason) = conn.closed() {
            return Err(UdxError::from_close(reason));
        }
        if data.len() > TX_BUFFER - packet::HEADER_SIZE {
            return Err(UdxError::Io(io::Error::new(io::ErrorKind::InvalidInput, "message larger than a datagram")));
        }
        let mut header = conn.message_header();
        header.flags = FLAG_MESSAGE;
        let mut buf = Vec::with_capacity(packet::HEADER_SIZE + data.len());
        buf.extend_from_slice(&header.to_bytes());
        buf.extend_from_slice(data);
        st.socket.inner.send_to(&buf, addr).map_err(UdxError::Io)
    }

    /// The next unreliable message, if one has arrived.
    pub fn try_recv_message(&self) -> Option<Vec<u8>> {
        self.shared.lock().conn.as_mut().and_then(|c| c.take_message())
    }

    /// Ends the stream now and tells the peer (DESTROY).
    pub fn destroy(&self) {
        self.shared.destroy_now();
    }

    /// Waits until every written byte and our END (if `shutdown` was called) are
    /// acknowledged, or the stream closes.
    pub async fn flushed(&self) -> Result<(), UdxError> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            let closed = st.conn.as_ref().and_then(|c| c.closed()).or(st.early_close);
            match (st.conn.as_ref(), closed) {
                (Some(conn), _) if conn.all_acked() => Poll::Ready(Ok(())),
                (_, Some(reason)) => Poll::Ready(Err(UdxError::from_close(reason))),
                _ => {
                    st.close_waker.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits until the stream is closed, and says why.
    pub async fn closed(&self) -> CloseReason {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            match st.conn.as_ref().and_then(|c| c.closed()).or(st.early_close) {
                Some(reason) => Poll::Ready(reason),
                None => {
                    st.close_waker.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl AsyncRead for Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let mut st = this.shared.lock();
        let State { conn, early_close, .. } = &mut *st;
        let Some(conn) = conn.as_mut() else {
            if let Some(reason) = *early_close {
                return Poll::Ready(close_result(reason, &mut this.closed_reported));
            }
            st.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let n = conn.read(buf.initialize_unfilled());
        if n > 0 {
            buf.advance(n);
            if conn.has_pending_ack() {
                this.shared.flush(&mut st);
            }
            return Poll::Ready(Ok(()));
        }
        if conn.read_eof() {
            return Poll::Ready(match conn.closed() {
                None | Some(CloseReason::Done) => Ok(()),
                Some(reason) => close_result(reason, &mut this.closed_reported),
            });
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A reset or timeout is reported once as an error; after that reads see EOF.
fn close_result(reason: CloseReason, reported: &mut bool) -> io::Result<()> {
    if *reported || reason == CloseReason::Done || reason == CloseReason::Destroyed {
        return Ok(());
    }
    *reported = true;
    Err(UdxError::from_close(reason).into_io())
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        let State { conn, early_close, .. } = &mut *st;
        let Some(conn) = conn.as_mut() else {
            if let Some(reason) = *early_close {
                return Poll::Ready(Err(UdxError::from_close(reason).into_io()));
            }
            // Listening: writes queue once the peer's first packet connects us.
            st.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        if let Some(reason) = conn.closed() {
            return Poll::Ready(Err(UdxError::from_close(reason).into_io()));
        }
        let n = conn.write(data);
        if n == 0 && !data.is_empty() {
            st.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.shared.flush(&mut st);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sends a corked partial packet; `flushed()` is what waits for the ACKs.
        let mut st = self.shared.lock();
        if let Some(conn) = st.conn.as_mut() {
            conn.push();
            self.shared.flush(&mut st);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if let Some(conn) = st.conn.as_mut() {
            conn.end();
            self.shared.flush(&mut st);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.detached = true;
        if let Some(conn) = st.conn.as_mut() {
            conn.end();
        }
        self.shared.flush(&mut st);
        self.shared.timer.notify_one();
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.shared.id).finish()
    }
}
