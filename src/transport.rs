//! The byte pipe under both directions of protomux: a secret stream over UDX, read in
//! its own task and written by one writer task that also sends the keep-alives.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use peeroxide_dht::secret_stream::{SecretStreamError, SecretStreamReadHalf, SecretStreamWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::ConnectionErrorKind;

/// What a secret stream can run over.
pub trait RawStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> RawStream for T {}

/// Hands the inner stream each message in one write. peeroxide's secret stream writes the
/// 3-byte length and the body separately and then flushes; libudx's writes are
/// stop-and-wait (a write waits for the previous one's ACK), so two writes cost a paced
/// round trip more than one. Buffers until flush, then writes once and waits for the ACK.
pub struct Coalesce<T> {
    inner: T,
    pending: Vec<u8>,
    written: usize,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Self { inner, pending: Vec::new(), written: 0 }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.written < this.pending.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.pending[this.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.written += n;
        }
        this.pending.clear();
        this.written = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The largest secret-stream message (a 3-byte length) less the cipher overhead (17 bytes).
pub const MAX_FRAME: usize = (1 << 24) - 1 - 17;

/// A write the peer has not acknowledged in this long (plus time for its size) means the
/// peer is gone. libudx alone gives up only after six RTO backoffs, about a minute.
const DEAD_PEER_AFTER: Duration = Duration::from_secs(15);

fn write_deadline(len: usize) -> Duration {
    // A second per MiB on top: large replies are slow over libudx's pacing, not dead.
    DEAD_PEER_AFTER + Duration::from_secs((len / (1 << 20)) as u64)
}

/// Forwards every frame to `incoming` until the stream ends or fails. A secret-stream
/// read is not cancel-safe, so it must not sit in a `select!` beside other branches.
pub async fn read_loop<T: RawStream>(
    mut reader: SecretStreamReadHalf<ReadHalf<T>>,
    incoming: mpsc::Sender<Result<Vec<u8>, ConnectionErrorKind>>,
) {
    loop {
        let next = match reader.read().await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => return,
            Err(err) => Err(stream_error(&err)),
        };
        let failed = next.is_err();
        if incoming.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// Writes queued frames; after `keep_alive` without a write, an empty message keeps NATs
/// open and lets a dead peer surface as an error. Ends our side when the queue closes.
pub async fn write_loop<T: RawStream>(
    mut writer: SecretStreamWriteHalf<WriteHalf<T>>,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    keep_alive: Duration,
) -> Result<(), ConnectionErrorKind> {
    let mut idle_since = Instant::now();
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => {
                    write_or_time_out(&mut writer, &frame).await?;
                    idle_since = Instant::now();
                }
                None => break,
            },
            _ = tokio::time::sleep_until(idle_since + keep_alive) => {
                write_or_time_out(&mut writer, &[]).await?;
                idle_since = Instant::now();
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), writer.shutdown()).await;
    Ok(())
}

async fn write_or_time_out<T: RawStream>(
    writer: &mut SecretStreamWriteHalf<WriteHalf<T>>,
    frame: &[u8],
) -> Result<(), ConnectionErrorKind> {
    match tokio::time::timeout(write_deadline(frame.len()), writer.write(frame)).await {
        Ok(written) => written.map_err(|e| stream_error(&e)),
        Err(_) => Err(ConnectionErrorKind::new("ETIMEDOUT", "connection timed out: the peer stopped acknowledging")),
    }
}

pub fn stream_error(err: &SecretStreamError) -> ConnectionErrorKind {
    match err {
        SecretStreamError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ConnectionErrorKind::new("ETIMEDOUT", io.to_string())
        }
        SecretStreamError::Io(io) => ConnectionErrorKind::new("ERR_STREAM", io.to_string()),
        other => ConnectionErrorKind::new("ERR_STREAM", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write it gets.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_message_reaches_the_inner_stream_in_one_write() {
        let mut stream = Coalesce::new(Recorder::default());
        stream.write_all(&[3, 0, 0]).await.expect("header");
        stream.write_all(b"abc").await.expect("body");
        assert!(stream.inner.writes.is_empty(), "nothing is written before the flush");
        stream.flush().await.expect("flush");
        stream.write_all(&[0, 0, 0]).await.expect("next header");
        stream.flush().await.expect("flush");
        assert_eq!(stream.inner.writes, vec![vec![3, 0, 0, b'a', b'b', b'c'], vec![0, 0, 0]]);
        assert_eq!(stream.inner.flushes, 2);
    }
}
