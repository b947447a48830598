//! The error type of libudx 1.7.3, with the same variants, so code that names them (or
//! wraps the type with `#[from]`, as peeroxide-dht does) compiles unchanged.

use std::io;

/// Errors returned by libudx operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdxError {
    /// A libuv/udx numeric error code. Kept for API compatibility; never returned here.
    #[error("libuv/udx error code: {0}")]
    Uv(i32),
    /// There is no tokio runtime to run the socket or stream on.
    #[error("runtime shut down")]
    RuntimeGone,
    /// The stream has been closed or destroyed.
    #[error("stream closed")]
    StreamClosed,
    /// An I/O error, or a transport error in `io::Error` form.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Convenience alias for `std::result::Result<T, UdxError>`.
pub type Result<T> = std::result::Result<T, UdxError>;

impl UdxError {
    pub(crate) fn other(kind: io::ErrorKind, msg: &'static str) -> Self {
        UdxError::Io(io::Error::new(kind, msg))
    }
}

impl From<udx::UdxError> for UdxError {
    fn from(err: udx::UdxError) -> Self {
        match err {
            udx::UdxError::StreamClosed => UdxError::StreamClosed,
            udx::UdxError::StreamIdInUse(id) => {
                UdxError::Io(io::Error::new(io::ErrorKind::AddrInUse, format!("stream id {id} is already in use on this socket")))
            }
            other => UdxError::Io(other.into_io()),
        }
    }
}
