//! `UdxSocket`: libudx 1.7.3's socket handle over a `udx::Socket`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::error::{Result, UdxError};

/// Non-UDX datagrams kept for a bound socket whose owner has not called `recv_start`
/// yet, as the kernel keeps them for libudx 1.7.3 (it reads only from `recv_start` on).
/// Beyond this the newest are dropped, as a full kernel buffer drops them.
const WAITING_BYTES: usize = 1 << 20;

/// How fast non-UDX datagrams reach the `recv_start` channel, per socket: a sustained
/// rate and a burst, in datagrams and in bytes. Beyond that they are dropped and counted
/// ([`UdxSocket::dropped_datagrams`]), as a full kernel buffer drops them. The channel is
/// unbounded (libudx's type), so this is what bounds it: a flood of UDP at loopback speed
/// would otherwise queue faster than peeroxide-dht decodes (measured: +125 MB in 5 s of
/// 90,000 one-KB datagrams a second). A DHT node's own traffic is far below these figures.
const DATAGRAMS_PER_SEC: f64 = 20_000.0;
const DATAGRAM_BURST: f64 = 5_000.0;
const BYTES_PER_SEC: f64 = 16.0 * 1024.0 * 1024.0;
const BYTE_BURST: f64 = 4.0 * 1024.0 * 1024.0;

/// An incoming datagram that is not UDX, received on a [`UdxSocket`].
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Raw payload bytes.
    pub data: Vec<u8>,
    /// Source address of the datagram.
    pub addr: SocketAddr,
}

/// A UDP socket carrying UDX streams and unreliable datagrams.
///
/// A cheap-clone handle: all clones share one socket. Non-UDX datagrams go to the
/// channel from [`recv_start`](Self::recv_start); that channel closes once every handle
/// is dropped (or `close`d). The UDP port itself stays open while streams still use it.
#[derive(Clone)]
pub struct UdxSocket {
    inner: Arc<Inner>,
}

struct Inner {
    udx: OnceLock<udx::Socket>,
    /// Shared with the socket's datagram handler, which must not hold `Inner` itself:
    /// `Inner` owns the socket, so that would be a cycle that never closes.
    datagrams: Arc<Mutex<Intake>>,
}

/// Where non-UDX datagrams go, and how fast.
struct Intake {
    delivery: Delivery,
    datagram_tokens: TokenBucket,
    byte_tokens: TokenBucket,
    dropped: Arc<AtomicU64>,
}

enum Delivery {
    Waiting { queue: VecDeque<Datagram>, bytes: usize },
    Receiving(mpsc::UnboundedSender<Datagram>),
    Closed,
}

impl Intake {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            delivery: Delivery::Waiting { queue: VecDeque::new(), bytes: 0 },
            datagram_tokens: TokenBucket::new(DATAGRAMS_PER_SEC, DATAGRAM_BURST, now),
            byte_tokens: TokenBucket::new(BYTES_PER_SEC, BYTE_BURST, now),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn deliver(&mut self, data: &[u8], addr: SocketAddr) {
        match &mut self.delivery {
            Delivery::Waiting { queue, bytes } => {
                if *bytes + data.len() <= WAITING_BYTES {
                    *bytes += data.len();
                    queue.push_back(Datagram { data: data.to_vec(), addr });
                } else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Delivery::Receiving(tx) => {
                let now = Instant::now();
                // Both buckets are refilled; a datagram takes from both or from neither.
                let admitted = self.datagram_tokens.has(1.0, now) && self.byte_tokens.has(data.len() as f64, now);
                if !admitted {
                    self.drop_one();
                    return;
                }
                self.datagram_tokens.take(1.0);
                self.byte_tokens.take(data.len() as f64);
                // A dropped receiver means nobody wants them: drop, as libudx does.
                let _ = tx.send(Datagram { data: data.to_vec(), addr });
            }
            Delivery::Closed => {}
        }
    }
}

/// `rate` tokens a second, at most `burst` saved up.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self { rate, burst, tokens: burst, at: now }
    }

    /// Refills to `now`, then tells whether `n` tokens are there.
    fn has(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        self.tokens >= n
    }

    fn take(&mut self, n: f64) {
        self.tokens -= n;
    }
}

fn lock(datagrams: &Mutex<Intake>) -> MutexGuard<'_, Intake> {
    datagrams.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the `recv_start` channel (peeroxide's I/O loop stops on it); streams
        // still on the socket keep their own handle to it.
        lock(&self.datagrams).delivery = Delivery::Closed;
    }
}

impl UdxSocket {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                udx: OnceLock::new(),
                datagrams: Arc::new(Mutex::new(Intake::new())),
            }),
        }
    }

    /// The bound `udx::Socket`, or the error libudx gives for an unbound one.
    pub(crate) fn bound(&self) -> Result<&udx::Socket> {
        self.inner.udx.get().ok_or_else(|| UdxError::other(std::io::ErrorKind::NotConnected, "socket not bound"))
    }

    /// Binds the socket to a local address. Fails if it is already bound.
    pub async fn bind(&self, addr: SocketAddr) -> Result<()> {
        let already = || UdxError::other(std::io::ErrorKind::AlreadyExists, "socket already bound");
        if self.inner.udx.get().is_some() {
            return Err(already());
        }
        crate::require_runtime()?;
        let socket = udx::Socket::bind(addr)?;
        let datagrams = Arc::clone(&self.inner.datagrams);
        socket.on_datagram(Arc::new(move |data: &[u8], from: SocketAddr| lock(&datagrams).deliver(data, from)));
        if self.inner.udx.set(socket.clone()).is_err() {
            // Another clone bound it meanwhile.
            socket.close();
            return Err(already());
        }
        Ok(())
    }

    /// The local address this socket is bound to.
    pub async fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.bound()?.local_addr())
    }

    /// Sets the IP time-to-live (IPv6: hop limit) of datagrams sent from now on.
    pub fn set_ttl(&self, ttl: u32) -> Result<()> {
        Ok(self.bound()?.set_ttl(ttl)?)
    }

    /// The IP time-to-live of outgoing datagrams.
    pub fn ttl(&self) -> Result<u32> {
        Ok(self.bound()?.ttl()?)
    }

    /// Sends an unreliable datagram to `addr`, now: datagrams leave in the order of the
    /// calls (libudx 1.7.3 spawned a task per datagram, which could reorder them).
    pub fn send_to(&self, data: &[u8], addr: SocketAddr) -> Result<()> {
        Ok(self.bound()?.send_to(data, addr)?)
    }

    /// Starts delivering non-UDX datagrams to the returned channel. Datagrams that arrived
    /// since `bind` come first. A second call replaces the channel (the first one ends).
    pub fn recv_start(&self) -> Result<mpsc::UnboundedReceiver<Datagram>> {
        self.bound()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut intake = lock(&self.inner.datagrams);
        if let Delivery::Waiting { queue, .. } = std::mem::replace(&mut intake.delivery, Delivery::Closed) {
            for datagram in queue {
                // `rx` is alive here, so this cannot fail.
                let _ = tx.send(datagram);
            }
        }
        intake.delivery = Delivery::Receiving(tx);
        Ok(rx)
    }

    /// Extension (not in libudx): non-UDX datagrams dropped so far because they came
    /// faster than the socket hands them on (see the crate's README), or arrived before
    /// `recv_start` beyond what is kept.
    pub fn dropped_datagrams(&self) -> u64 {
        self.dropped_datagrams_counter().load(Ordering::Relaxed)
    }

    /// Extension (not in libudx): the counter behind [`Self::dropped_datagrams`], to read
    /// without keeping the socket open.
    pub fn dropped_datagrams_counter(&self) -> Arc<AtomicU64> {
        lock(&self.inner.datagrams).dropped.clone()
    }

    /// Drops this handle, as libudx 1.7.3 does: the socket stops delivering datagrams
    /// once every handle is gone, and its port closes once no stream uses it either.
    pub async fn close(self) -> Result<()> {
        drop(self);
        Ok(())
    }

    /// Extension (not in libudx): the underlying `udx::Socket`, once bound, for code
    /// that talks to the transport directly.
    pub fn udx_socket(&self) -> Option<udx::Socket> {
        self.inner.udx.get().cloned()
    }
}

impl std::fmt::Debug for UdxSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdxSocket").field("local_addr", &self.inner.udx.get().map(|s| s.local_addr())).finish()
    }
}
