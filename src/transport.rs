//! The byte pipe under both directions of protomux: a secret stream over UDX, read in
//! its own task and written by one writer task that also sends the keep-alives.

use std::time::Duration;

use peeroxide_dht::secret_stream::{SecretStreamError, SecretStreamReadHalf, SecretStreamWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::ConnectionErrorKind;

/// What a secret stream can run over.
pub trait RawStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> RawStream for T {}

/// The largest secret-stream message (a 3-byte length) less the cipher overhead (17 bytes).
pub const MAX_FRAME: usize = (1 << 24) - 1 - 17;

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
/// A frame is anything holding bytes: what it holds besides (a share of a send budget)
/// is released once the frame is written.
pub async fn write_loop<T: RawStream, F: AsRef<[u8]> + Send + 'static>(
    mut writer: SecretStreamWriteHalf<WriteHalf<T>>,
    mut frames: mpsc::UnboundedReceiver<F>,
    keep_alive: Duration,
) -> Result<(), ConnectionErrorKind> {
    let mut idle_since = Instant::now();
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => {
                    write_frame(&mut writer, frame.as_ref()).await?;
                    drop(frame);
                    idle_since = Instant::now();
                }
                None => break,
            },
            _ = tokio::time::sleep_until(idle_since + keep_alive) => {
                write_frame(&mut writer, &[]).await?;
                idle_since = Instant::now();
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), writer.shutdown()).await;
    Ok(())
}

/// A dead peer surfaces here as the transport's timeout (`ETIMEDOUT`): UDX gives up on
/// data the peer stops acknowledging, so no deadline is needed on top.
async fn write_frame<T: RawStream>(
    writer: &mut SecretStreamWriteHalf<WriteHalf<T>>,
    frame: &[u8],
) -> Result<(), ConnectionErrorKind> {
    writer.write(frame).await.map_err(|e| stream_error(&e))
}

pub fn stream_error(err: &SecretStreamError) -> ConnectionErrorKind {
    match err {
        SecretStreamError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ConnectionErrorKind::new("ETIMEDOUT", io.to_string())
        }
        // The peer destroyed its stream (UDX DESTROY), as a JS socket reports it.
        SecretStreamError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => {
            ConnectionErrorKind::reset()
        }
        SecretStreamError::Io(io) => ConnectionErrorKind::new("ERR_STREAM", io.to_string()),
        other => ConnectionErrorKind::new("ERR_STREAM", other.to_string()),
    }
}
