use std::io;

/// Errors of the UDX transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdxError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("stream id {0} is already in use on this socket")]
    StreamIdInUse(u32),
    #[error("socket is closed")]
    SocketClosed,
    #[error("stream is closed")]
    StreamClosed,
    #[error("connection reset by peer")]
    Reset,
    #[error("connection timed out")]
    TimedOut,
}

impl UdxError {
    pub(crate) fn from_close(reason: crate::CloseReason) -> Self {
        match reason {
            crate::CloseReason::Reset => UdxError::Reset,
            crate::CloseReason::TimedOut => UdxError::TimedOut,
            crate::CloseReason::Done | crate::CloseReason::Destroyed => UdxError::StreamClosed,
        }
    }

    /// The `io::Error` an `AsyncRead`/`AsyncWrite` user sees.
    pub fn into_io(self) -> io::Error {
        match self {
            UdxError::Io(e) => e,
            UdxError::Reset => io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer"),
            UdxError::TimedOut => io::Error::new(io::ErrorKind::TimedOut, "connection timed out"),
            other => io::Error::new(io::ErrorKind::NotConnected, other.to_string()),
        }
    }
}
