//! The public API of `libudx` 1.7.3 that peeroxide-dht 1.7.3 calls, implemented on this
//! project's own transport, the `udx` crate.
//!
//! peeroxide-dht depends on `libudx = "1.7.3"`; the workspace swaps this crate in with
//! `[patch.crates-io]`, so peeroxide runs its DHT, relays and holepuncher on `udx` without
//! a line of it changed. This crate is the only place that knows libudx's API: our own code
//! talks to `udx` directly (the extensions [`UdxSocket::udx_socket`] and
//! [`UdxStream::with_udx_stream`] hand over the underlying objects).
//!
//! The types and their semantics, as peeroxide relies on them:
//! - [`UdxRuntime`] / [`RuntimeHandle`]: a token; everything runs on the ambient tokio
//!   runtime, as in libudx 1.7.3.
//! - [`UdxSocket`]: a cheap-clone handle, unbound until [`UdxSocket::bind`]. Every datagram
//!   that is not UDX goes to the channel [`UdxSocket::recv_start`] returns; datagrams are
//!   sent at once and in order.
//! - [`UdxStream`]: holds its local id until [`UdxStream::connect`] or
//!   [`UdxStream::set_firewall_hook`] puts it on a socket; [`UdxStream::relay_to`] forwards
//!   its packets blindly to another stream's peer.
//! - [`UdxAsyncStream`]: tokio `AsyncRead + AsyncWrite` over the stream.
//!
//! Differences from libudx 1.7.3 are listed in the crate's README.
#![forbid(unsafe_code)]

mod error;
mod runtime;
mod socket;
mod stream;

pub use error::{Result, UdxError};
pub use runtime::{RuntimeHandle, UdxRuntime};
pub use socket::{Datagram, UdxSocket};
pub use stream::{UdxAsyncStream, UdxStream};

/// tokio sockets and tasks need a runtime; without one they panic, so fail first.
fn require_runtime() -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(UdxError::RuntimeGone),
    }
}
