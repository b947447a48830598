//! One UDP socket shared by many streams and by a datagram user (the DHT).
//!
//! A receive task drains the socket in batches into reused buffers — `recvmmsg` and UDP
//! GRO where the platform has them (through `quinn-udp`), so a burst of packets costs a
//! few syscalls: UDX packets go to their stream by id; anything else goes to the datagram
//! handler. After each batch every stream that received something sends its ACKs and
//! whatever the ACKs unblocked, so a burst costs one ACK per stream, not one per packet.
//! Streams send bursts of equal-sized packets with UDP GSO (one `sendmsg` for up to ~40).

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::backlog::{Backlog, Pushed};
use crate::packet;
use crate::stream::StreamShared;
use crate::UdxError;

/// Receive buffer size: C's is 2048, but a GRO batch of packets arrives in one buffer and a
/// datagram larger than the buffer would be truncated: the UDP maximum.
const RECV_BUFFER: usize = 65536;
/// Buffers per `recvmmsg` at most. A socket starts with one and grows only while its
/// batches come back full, so a quiet socket (a DHT socket, a holepunch probe socket)
/// keeps 64 KiB, a busy one 512 KiB.
const RECV_BUFFERS_MAX: usize = 8;
/// `recvmmsg` calls before the batch's ACKs go out.
const RECV_ROUNDS: usize = 16;
/// Bytes in one GSO send at most (the kernel's limit is one UDP datagram, 64 KiB).
pub(crate) const GSO_MAX_BYTES: usize = 60_000;
/// Kernel buffers: a burst of a fast sender must fit (C uses 1 MiB / 208 KiB; the kernel
/// clamps to net.core.rmem_max / wmem_max).
const SO_RCVBUF: usize = 4 << 20;
const SO_SNDBUF: usize = 1 << 20;

/// A datagram that is not UDX, for the socket's other user.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub data: Vec<u8>,
    pub addr: SocketAddr,
}

/// Called from the receive task for every non-UDX datagram; must not block.
pub type DatagramHandler = Arc<dyn Fn(&[u8], SocketAddr) + Send + Sync>;

/// Sees every non-UDX datagram before the handler (receive task; must not block) and
/// returns `true` to keep it from the handler: lets a second user of a socket (a DHT
/// server next to the DHT) take the messages that are its own.
pub type DatagramFilter = Arc<dyn Fn(&[u8], SocketAddr) -> bool + Send + Sync>;

/// A bound UDP socket carrying UDX streams and datagrams. Cheap to clone; the socket
/// stops receiving when `close` is called or the last clone (streams hold one) is gone.
#[derive(Clone)]
pub struct Socket {
    pub(crate) inner: Arc<SocketInner>,
}

/// A socket handle that does not keep the socket open (for callbacks installed on the
/// socket itself, which would otherwise own it).
#[derive(Clone)]
pub struct WeakSocket {
    inner: Weak<SocketInner>,
}

impl WeakSocket {
    pub fn upgrade(&self) -> Option<Socket> {
        self.inner.upgrade().map(|inner| Socket { inner })
    }
}

pub(crate) struct SocketInner {
    pub(crate) udp: Arc<UdpSocket>,
    /// Batched, GSO/GRO-capable I/O on `udp`.
    state: quinn_udp::UdpSocketState,
    pub(crate) max_gso_segments: usize,
    local_addr: SocketAddr,
    routes: RwLock<HashMap<u32, Arc<StreamShared>>>,
    on_datagram: RwLock<Option<DatagramHandler>>,
    filter: RwLock<Option<DatagramFilter>>,
    closed: AtomicBool,
    stop: Arc<Notify>,
    /// Datagrams waiting for room in the kernel's send buffer, in order.
    backlog: Arc<Mutex<Backlog>>,
    pub(crate) stats: SocketStats,
}

#[derive(Default)]
pub(crate) struct SocketStats {
    pub(crate) unknown_stream_packets: AtomicU64,
}

impl Drop for SocketInner {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl Socket {
    /// Binds a socket (must be called inside a tokio runtime) and starts receiving.
    pub fn bind(addr: SocketAddr) -> Result<Socket, UdxError> {
        let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
        let raw = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if addr.is_ipv6() {
            // Dual-stack, as the C libudx binds "::".
            let _ = raw.set_only_v6(false);
        }
        // Best effort: the kernel clamps, and a smaller buffer only costs speed.
        let _ = raw.set_recv_buffer_size(SO_RCVBUF);
        let _ = raw.set_send_buffer_size(SO_SNDBUF);
        raw.set_nonblocking(true)?;
        raw.bind(&addr.into())?;
        let udp = Arc::new(UdpSocket::from_std(raw.into())?);
        let local_addr = udp.local_addr()?;
        let state = quinn_udp::UdpSocketState::new((&*udp).into())?;
        let max_gso_segments = state.max_gso_segments().clamp(1, 64);
        let stop = Arc::new(Notify::new());
        let inner = Arc::new(SocketInner {
            udp: udp.clone(),
            state,
            max_gso_segments,
            local_addr,
            routes: RwLock::new(HashMap::new()),
            on_datagram: RwLock::new(None),
            filter: RwLock::new(None),
            closed: AtomicBool::new(false),
            stop: stop.clone(),
            backlog: Arc::default(),
            stats: SocketStats::default(),
        });
        tokio::spawn(recv_loop(udp, Arc::downgrade(&inner), stop));
        Ok(Socket { inner })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub fn downgrade(&self) -> WeakSocket {
        WeakSocket { inner: Arc::downgrade(&self.inner) }
    }

    /// Whether both handles are the same socket.
    pub fn same(&self, other: &Socket) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Sets where non-UDX datagrams go (replacing any earlier handler).
    pub fn on_datagram(&self, handler: DatagramHandler) {
        *self.inner.on_datagram.write().unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    /// Stops handing non-UDX datagrams to a handler; they are dropped from now on.
    pub fn remove_datagram_handler(&self) {
        *self.inner.on_datagram.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Sets (or with `None` removes) the filter that sees non-UDX datagrams before the
    /// handler and may keep them from it.
    pub fn set_datagram_filter(&self, filter: Option<DatagramFilter>) {
        *self.inner.filter.write().unwrap_or_else(|e| e.into_inner()) = filter;
    }

    /// Sends a datagram now, in order with everything else sent on this socket.
    pub fn send_to(&self, data: &[u8], addr: SocketAddr) -> Result<(), UdxError> {
        self.inner.send_to(data, addr).map_err(UdxError::Io)
    }

    /// Sends one datagram with its own IP time-to-live (a NAT-opening probe meant to
    /// expire on the way), then restores the socket's TTL.
    pub fn send_to_with_ttl(&self, data: &[u8], addr: SocketAddr, ttl: u32) -> Result<(), UdxError> {
        let previous = self.inner.udp.ttl()?;
        self.inner.udp.set_ttl(ttl)?;
        let sent = self.inner.send_to(data, addr);
        let restored = self.inner.udp.set_ttl(previous);
        sent.map_err(UdxError::Io)?;
        Ok(restored?)
    }

    pub fn set_ttl(&self, ttl: u32) -> Result<(), UdxError> {
        Ok(self.inner.udp.set_ttl(ttl)?)
    }

    pub fn ttl(&self) -> Result<u32, UdxError> {
        Ok(self.inner.udp.ttl()?)
    }

    /// Stops receiving and destroys every stream on this socket.
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.stop.notify_one();
        lock(&self.inner.backlog).clear();
        let streams: Vec<_> = self.inner.routes.write().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, s)| s).collect();
        for stream in streams {
            // A stream still listening on other sockets only loses this one.
            stream.socket_closed(&self.inner);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Number of streams receiving on this socket.
    pub fn stream_count(&self) -> usize {
        self.inner.routes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// UDX packets dropped because no stream has their id.
    pub fn unknown_stream_packets(&self) -> u64 {
        self.inner.stats.unknown_stream_packets.load(Ordering::Relaxed)
    }

    /// Datagrams dropped because the kernel's send buffer and our backlog were full, as a
    /// counter that outlives this handle without keeping the socket open (for a metrics
    /// registry).
    pub fn backlog_dropped_counter(&self) -> Arc<AtomicU64> {
        lock(&self.inner.backlog).dropped_counter()
    }
}

impl SocketInner {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn send_to(&self, data: &[u8], addr: SocketAddr) -> io::Result<()> {
        if self.is_closed() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "socket is closed"));
        }
        let addr = self.outgoing_addr(addr);
        {
            // Behind what already waits, to keep the order.
            let mut backlog = lock(&self.backlog);
            if !backlog.is_empty() {
                self.wait_in(&mut backlog, data, addr);
                return Ok(());
            }
        }
        match self.send_now(data, addr) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The kernel buffer is full; a datagram may be lost, but keep it if the
                // buffer drains soon.
                self.wait_in(&mut lock(&self.backlog), data, addr);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn wait_in(&self, backlog: &mut Backlog, data: &[u8], addr: SocketAddr) {
        if backlog.push(data, addr) == Pushed::StartDraining {
            tokio::spawn(drain_backlog(self.udp.clone(), self.backlog.clone()));
        }
    }

    /// One `sendto` now. The syscall itself, not tokio's `try_send_to`: that one refuses
    /// (WouldBlock) until the reactor has seen the socket writable once, which would put
    /// the first packets after `bind` behind later ones. `addr` is already outgoing.
    pub(crate) fn send_now(&self, data: &[u8], addr: SocketAddr) -> io::Result<usize> {
        socket2::SockRef::from(&*self.udp).send_to(data, &addr.into())
    }

    /// Sends `contents`, several datagrams of `segment` bytes each (the last may be
    /// shorter) when it is longer than one, with one syscall where GSO is available.
    pub(crate) fn send_segments(&self, contents: &[u8], segment: usize, addr: SocketAddr) -> io::Result<()> {
        if contents.len() <= segment {
            return self.send_now(contents, addr).map(|_| ());
        }
        let transmit = quinn_udp::Transmit { destination: addr, ecn: None, contents, segment_size: Some(segment), src_ip: None };
        self.state.try_send((&*self.udp).into(), &transmit)
    }

    /// A dual-stack socket sends to IPv4 peers at their v4-mapped address.
    pub(crate) fn outgoing_addr(&self, addr: SocketAddr) -> SocketAddr {
        match (self.local_addr, addr) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
            _ => addr,
        }
    }

    pub(crate) fn register(&self, id: u32, stream: Arc<StreamShared>) -> Result<(), UdxError> {
        if self.is_closed() {
            return Err(UdxError::SocketClosed);
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if routes.contains_key(&id) {
            return Err(UdxError::StreamIdInUse(id));
        }
        routes.insert(id, stream);
        Ok(())
    }

    pub(crate) fn is_registered(&self, id: u32, stream: &Arc<StreamShared>) -> bool {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).get(&id).is_some_and(|s| Arc::ptr_eq(s, stream))
    }

    pub(crate) fn unregister(&self, id: u32, stream: &Arc<StreamShared>) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if routes.get(&id).is_some_and(|s| Arc::ptr_eq(s, stream)) {
            routes.remove(&id);
        }
    }

    fn route(&self, id: u32) -> Option<Arc<StreamShared>> {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }
}

fn lock(backlog: &Mutex<Backlog>) -> MutexGuard<'_, Backlog> {
    backlog.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends the backlog in order as the kernel makes room; ends when it is empty (or cleared
/// by `close`).
async fn drain_backlog(udp: Arc<UdpSocket>, backlog: Arc<Mutex<Backlog>>) {
    loop {
        let Some((data, addr)) = lock(&backlog).pop() else { return };
        let sent = udp.try_io(tokio::io::Interest::WRITABLE, || socket2::SockRef::from(&*udp).send_to(&data, &addr.into()));
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                lock(&backlog).unpop(data, addr);
                if udp.writable().await.is_err() {
                    lock(&backlog).clear();
                    return;
                }
            }
            // Sent, or lost as UDP may lose it.
            _ => {}
        }
    }
}

fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

async fn recv_loop(udp: Arc<UdpSocket>, socket: Weak<SocketInner>, stop: Arc<Notify>) {
    let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; RECV_BUFFER]];
    let mut meta = vec![quinn_udp::RecvMeta::default()];
    let mut touched: Vec<Arc<StreamShared>> = Vec::new();
    loop {
        tokio::select! {
            ready = udp.readable() => if ready.is_err() { return },
            _ = stop.notified() => return,
        }
        let Some(inner) = socket.upgrade() else { return };
        if inner.is_closed() {
            return;
        }
        for _ in 0..RECV_ROUNDS {
            let received = {
                let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                udp.try_io(tokio::io::Interest::READABLE, || inner.state.recv((&*udp).into(), &mut slices, &mut meta))
            };
            let count = match received {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors (port unreachable) surface here on Linux: not fatal.
                Err(_) => continue,
            };
            // Read after the syscall: a handler changed before a datagram was received
            // is the one that gets it.
            let handler = inner.on_datagram.read().unwrap_or_else(|e| e.into_inner()).clone();
            let filter = inner.filter.read().unwrap_or_else(|e| e.into_inner()).clone();
            let others = Others { filter: filter.as_ref(), handler: handler.as_ref() };
            for (buf, m) in bufs.iter().zip(&meta).take(count) {
                let from = normalize(m.addr);
                // A GRO batch holds several datagrams of `stride` bytes (the last shorter).
                let stride = if m.stride == 0 { m.len } else { m.stride };
                for datagram in buf[..m.len].chunks(stride.max(1)) {
                    dispatch(&inner, datagram, from, &others, &mut touched);
                }
            }
            if count == bufs.len() && bufs.len() < RECV_BUFFERS_MAX {
                bufs.push(vec![0u8; RECV_BUFFER]);
                meta.push(quinn_udp::RecvMeta::default());
            }
        }
        for stream in touched.drain(..) {
            stream.after_input();
        }
    }
}

/// Where a non-UDX datagram goes: the filter first, then the handler.
struct Others<'a> {
    filter: Option<&'a DatagramFilter>,
    handler: Option<&'a DatagramHandler>,
}

fn dispatch(inner: &Arc<SocketInner>, datagram: &[u8], from: SocketAddr, others: &Others<'_>, touched: &mut Vec<Arc<StreamShared>>) {
    match packet::peek_stream_id(datagram) {
        Some(id) => match inner.route(id) {
            Some(stream) => {
                if stream.on_packet(inner, datagram, from) && !touched.iter().any(|s| Arc::ptr_eq(s, &stream)) {
                    touched.push(stream);
                }
            }
            None => {
                inner.stats.unknown_stream_packets.fetch_add(1, Ordering::Relaxed);
            }
        },
        None => {
            if others.filter.is_some_and(|filter| filter(datagram, from)) {
                return;
            }
            if let Some(handler) = others.handler {
                handler(datagram, from);
            }
        }
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("local_addr", &self.inner.local_addr).finish()
    }
}
