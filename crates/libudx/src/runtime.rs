//! libudx 1.7.3's runtime is a token: sockets and streams run on the ambient tokio
//! runtime. Kept as such, since peeroxide-dht passes it (and its handle) around.

use std::sync::Arc;

use crate::error::Result;
use crate::socket::UdxSocket;
use crate::stream::UdxStream;

/// Shared handle to a UDX runtime, held by whoever needs to make streams later.
#[derive(Debug)]
pub struct RuntimeHandle {
    _private: (),
}

/// Creates sockets and streams. Lightweight: the I/O runs on the ambient tokio runtime.
#[derive(Debug)]
pub struct UdxRuntime {
    handle: Arc<RuntimeHandle>,
}

impl UdxRuntime {
    /// Creates a new runtime.
    pub fn new() -> Result<Self> {
        Ok(Self { handle: Arc::new(RuntimeHandle { _private: () }) })
    }

    /// A runtime that shares another runtime's handle.
    pub fn shared(handle: Arc<RuntimeHandle>) -> Self {
        Self { handle }
    }

    /// A shared handle to this runtime.
    pub fn handle(&self) -> Arc<RuntimeHandle> {
        Arc::clone(&self.handle)
    }

    /// A new socket, unbound until [`UdxSocket::bind`].
    pub async fn create_socket(&self) -> Result<UdxSocket> {
        Ok(UdxSocket::new())
    }

    /// A new stream with the given local id; it joins a socket on
    /// [`UdxStream::connect`] or [`UdxStream::set_firewall_hook`].
    pub async fn create_stream(&self, local_id: u32) -> Result<UdxStream> {
        Ok(UdxStream::new(local_id))
    }
}
