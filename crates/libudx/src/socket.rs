//! `UdxSocket`: libudx 1.7.3's socket handle over a `udx::Socket`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::mpsc;

use crate::error::{Result, UdxError};

/// Non-UDX datagrams kept for a bound socket whose owner has not called `recv_start`
/// yet, as the kernel keeps them for libudx 1.7.3 (it reads only from `recv_start` on).
/// Beyond this the newest are dropped, as a full kernel buffer drops them.
const WAITING_BYTES: usize = 1 << 20;

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
    datagrams: Arc<Mutex<Delivery>>,
}

enum Delivery {
    Waiting { queue: VecDeque<Datagram>, bytes: usize },
    Receiving(mpsc::UnboundedSender<Datagram>),
    Closed,
}

impl Delivery {
    fn deliver(&mut self, data: &[u8], addr: SocketAddr) {
        match self {
            Delivery::Waiting { queue, bytes } => {
                if *bytes + data.len() <= WAITING_BYTES {
                    *bytes += data.len();
                    queue.push_back(Datagram { data: data.to_vec(), addr });
                }
            }
            Delivery::Receiving(tx) => {
                // A dropped receiver means nobody wants them: drop, as libudx does.
                let _ = tx.send(Datagram { data: data.to_vec(), addr });
            }
            Delivery::Closed => {}
        }
    }
}

fn lock(datagrams: &Mutex<Delivery>) -> MutexGuard<'_, Delivery> {
    datagrams.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the `recv_start` channel (peeroxide's I/O loop stops on it); streams
        // still on the socket keep their own handle to it.
        *lock(&self.datagrams) = Delivery::Closed;
    }
}

impl UdxSocket {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                udx: OnceLock::new(),
                datagrams: Arc::new(Mutex::new(Delivery::Waiting { queue: VecDeque::new(), bytes: 0 })),
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
        let mut delivery = lock(&self.inner.datagrams);
        if let Delivery::Waiting { queue, .. } = std::mem::replace(&mut *delivery, Delivery::Closed) {
            for datagram in queue {
                // `rx` is alive here, so this cannot fail.
                let _ = tx.send(datagram);
            }
        }
        *delivery = Delivery::Receiving(tx);
        Ok(rx)
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
