//! `UdxStream` and `UdxAsyncStream`: libudx 1.7.3's stream API over a `udx::Stream`.
//!
//! A libudx stream exists before it has a socket (`create_stream` takes only the local
//! id), so the `udx::Stream` sits in a slot that `connect` or `set_firewall_hook` fills.
//! The slot is shared so that a firewall hook that refuses can close the stream later,
//! from a task of its own (the hook runs on the socket's receive task under the stream's
//! lock, where closing it would deadlock).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Result, UdxError};
use crate::socket::UdxSocket;

/// The MTU libudx reports before a stream has measured one (and udx starts from).
const BASE_MTU: usize = 1200;

/// Streams cork: a partly filled packet waits for `flush`. peeroxide's secret stream
/// writes each message as a 3-byte length, the body, then a flush, so a small message
/// leaves as one packet rather than two; every writer above this crate flushes.
fn config() -> udx::Config {
    udx::Config { cork: true, ..udx::Config::default() }
}

struct Slot {
    stream: Mutex<Option<udx::Stream>>,
    /// Set by a firewall hook that said no; read when the stream is put in the slot.
    refused: Arc<AtomicBool>,
    /// This stream forwards its packets to another (`relay_to`).
    relaying: AtomicBool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<udx::Stream>> {
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A relay's own stream carries none of the relayed data, so it has nothing to end
        // gracefully: ending it would put its END (its own sequence numbers) into the
        // relayed conversation. Destroy it, as JS blind-relay destroys a pairing's streams.
        if *self.relaying.get_mut() {
            if let Some(stream) = self.stream.get_mut().unwrap_or_else(|e| e.into_inner()).as_ref() {
                stream.destroy();
            }
        }
        // Otherwise dropping the `udx::Stream` ends it gracefully in the background.
    }
}

fn not_connected() -> UdxError {
    UdxError::other(io::ErrorKind::NotConnected, "stream is not connected: call connect or set_firewall_hook first")
}

fn already_connected() -> UdxError {
    UdxError::other(io::ErrorKind::AlreadyExists, "stream is already connected")
}

/// A reliable, ordered byte stream over UDX.
///
/// Created by [`UdxRuntime::create_stream`](crate::UdxRuntime::create_stream); joins a
/// socket on [`connect`](Self::connect) or [`set_firewall_hook`](Self::set_firewall_hook);
/// read and written through [`into_async_stream`](Self::into_async_stream). Dropping it
/// ends the stream gracefully in the background (a relaying stream is destroyed).
pub struct UdxStream {
    local_id: u32,
    slot: Arc<Slot>,
}

impl UdxStream {
    pub(crate) fn new(local_id: u32) -> Self {
        Self {
            local_id,
            slot: Arc::new(Slot { stream: Mutex::new(None), refused: Arc::new(AtomicBool::new(false)), relaying: AtomicBool::new(false) }),
        }
    }

    /// Consumes the stream and returns its tokio `AsyncRead + AsyncWrite` form.
    pub fn into_async_stream(self) -> UdxAsyncStream {
        UdxAsyncStream { slot: self.slot, shutdown_sent: false }
    }

    /// The stream's current MTU in bytes.
    pub fn effective_mtu(&self) -> usize {
        self.slot.lock().as_ref().map_or(BASE_MTU, |s| s.mtu())
    }

    /// Connects to the remote stream `remote_id` at `remote_addr`, over `socket`.
    pub async fn connect(&self, socket: &UdxSocket, remote_id: u32, remote_addr: SocketAddr) -> Result<()> {
        let udx_socket = socket.bound()?;
        crate::require_runtime()?;
        let mut slot = self.slot.lock();
        if slot.is_some() {
            return Err(already_connected());
        }
        *slot = Some(udx::Stream::connect_with(udx_socket, self.local_id, remote_id, remote_addr, config())?);
        Ok(())
    }

    /// Puts the stream on `socket` without a remote address: the first packet for it
    /// calls `hook(socket, source port, source ip)` once. `true` makes that source the
    /// stream's peer (and the packet is processed); `false` closes the stream.
    ///
    /// `remote_id` is the peer's stream id, known from the handshake.
    pub fn set_firewall_hook<F>(&self, socket: &UdxSocket, remote_id: u32, hook: F) -> Result<()>
    where
        F: FnOnce(&UdxSocket, u16, IpAddr) -> bool + Send + 'static,
    {
        let udx_socket = socket.bound()?;
        crate::require_runtime()?;
        let mut slot = self.slot.lock();
        if slot.is_some() {
            return Err(already_connected());
        }
        // udx calls its hook for every packet until one is accepted; libudx's fires once.
        let mut once = Some((hook, socket.clone()));
        let refused = Arc::clone(&self.slot.refused);
        let weak = Arc::downgrade(&self.slot);
        let firewall: udx::FirewallHook = Box::new(move |_, from| {
            let Some((hook, socket)) = once.take() else { return false };
            if hook(&socket, from.port(), from.ip()) {
                return true;
            }
            refused.store(true, Ordering::Release);
            // Not here: this runs under the stream's lock (see the module comment). The
            // weak reference is upgraded there too, so the last handle never drops here.
            tokio::spawn(destroy_refused(weak.clone()));
            false
        });
        let stream = udx::Stream::listen_with(udx_socket, self.local_id, remote_id, firewall, config())?;
        // The hook may have refused before the stream was in the slot.
        if self.slot.refused.load(Ordering::Acquire) {
            stream.destroy();
        }
        *slot = Some(stream);
        Ok(())
    }

    /// Forwards every packet that arrives for this stream, unread, to `destination`'s
    /// peer (a blind relay; only the stream id is rewritten). Both streams must be on a
    /// socket. The two directions of a pair do not contend: each packet is forwarded
    /// without holding its own stream's lock.
    pub fn relay_to(&self, destination: &UdxStream) -> Result<()> {
        if Arc::ptr_eq(&self.slot, &destination.slot) {
            let slot = self.slot.lock();
            let stream = slot.as_ref().ok_or_else(not_connected)?;
            stream.relay_to(stream);
        } else {
            // Always lock the lower address first: `a.relay_to(b)` and `b.relay_to(a)` on
            // two threads at once must not each hold one slot waiting for the other.
            let self_first = Arc::as_ptr(&self.slot) < Arc::as_ptr(&destination.slot);
            let (first, second) = if self_first { (&self.slot, &destination.slot) } else { (&destination.slot, &self.slot) };
            let first = first.lock();
            let second = second.lock();
            let (source, target) = if self_first { (&first, &second) } else { (&second, &first) };
            let (Some(source), Some(target)) = (source.as_ref(), target.as_ref()) else { return Err(not_connected()) };
            source.relay_to(target);
        }
        self.slot.relaying.store(true, Ordering::Release);
        Ok(())
    }

    /// Destroys the stream: a DESTROY goes to the peer if it is connected.
    pub async fn destroy(self) -> Result<()> {
        if let Some(stream) = self.slot.lock().as_ref() {
            stream.destroy();
        }
        Ok(())
    }

    /// Extension (not in libudx): the stream's local id.
    pub fn local_id(&self) -> u32 {
        self.local_id
    }

    /// Extension (not in libudx): runs `f` on the underlying `udx::Stream`, once the
    /// stream is on a socket. `f` must not call back into this `UdxStream`.
    pub fn with_udx_stream<R>(&self, f: impl FnOnce(&udx::Stream) -> R) -> Option<R> {
        self.slot.lock().as_ref().map(f)
    }
}

async fn destroy_refused(slot: Weak<Slot>) {
    if let Some(slot) = slot.upgrade() {
        if let Some(stream) = slot.lock().as_ref() {
            stream.destroy();
        }
    }
}

impl std::fmt::Debug for UdxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdxStream").field("local_id", &self.local_id).finish()
    }
}

/// A [`UdxStream`] as tokio `AsyncRead + AsyncWrite`, from
/// [`UdxStream::into_async_stream`].
///
/// Writes are queued (bounded by the stream's send buffer) and full packets sent at
/// once; `flush` sends a partly filled last packet but does not wait for
/// acknowledgements; `shutdown` sends END and resolves once the peer has acknowledged
/// everything written and the END (or the stream has closed).
pub struct UdxAsyncStream {
    slot: Arc<Slot>,
    shutdown_sent: bool,
}

impl UdxAsyncStream {
    /// Extension (not in libudx): runs `f` on the underlying `udx::Stream`, once the
    /// stream is on a socket. `f` must not call back into this `UdxAsyncStream`.
    pub fn with_udx_stream<R>(&self, f: impl FnOnce(&udx::Stream) -> R) -> Option<R> {
        self.slot.lock().as_ref().map(f)
    }
}

fn never_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "UDX stream was never connected")
}

impl AsyncRead for UdxAsyncStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut slot = self.slot.lock();
        let Some(stream) = slot.as_mut() else { return Poll::Ready(Err(never_connected())) };
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UdxAsyncStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut slot = self.slot.lock();
        let Some(stream) = slot.as_mut() else { return Poll::Ready(Err(never_connected())) };
        Pin::new(stream).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slot = self.slot.lock();
        let Some(stream) = slot.as_mut() else { return Poll::Ready(Err(never_connected())) };
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let mut slot = this.slot.lock();
        // Never on a socket: nothing to end (libudx returns Ok too).
        let Some(stream) = slot.as_mut() else { return Poll::Ready(Ok(())) };
        if !this.shutdown_sent {
            ready!(Pin::new(&mut *stream).poll_shutdown(cx))?;
            this.shutdown_sent = true;
        }
        // Still waiting for a first packet: no peer to acknowledge anything.
        if stream.remote_addr().is_none() {
            return Poll::Ready(Ok(()));
        }
        // `flushed` holds no state of its own (it registers the waker on each poll), so a
        // fresh one per poll waits exactly as one kept across polls would.
        let polled = pin!(stream.flushed()).poll(cx);
        match polled {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            // Closed meanwhile (ended by both sides, or destroyed here): nothing left to
            // wait for, as libudx 1.7.3 reports it.
            Poll::Ready(Err(udx::UdxError::StreamClosed)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err.into_io())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for UdxAsyncStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdxAsyncStream").field("stream", &*self.slot.lock()).finish()
    }
}
