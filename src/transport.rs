//! The byte pipe under both directions of protomux: a secret stream over UDX, read in
//! its own task and written by one writer task that also sends the keep-alives.

use std::time::Duration;

use libudx::UdxAsyncStream;
use peeroxide_dht::secret_stream::{SecretStream, SecretStreamError, SecretStreamReadHalf, SecretStreamWriteHalf};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::ConnectionErrorKind;

pub type Stream = SecretStream<UdxAsyncStream>;

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
pub async fn read_loop(
    mut reader: SecretStreamReadHalf<ReadHalf<UdxAsyncStream>>,
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
pub async fn write_loop(
    mut writer: SecretStreamWriteHalf<WriteHalf<UdxAsyncStream>>,
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

async fn write_or_time_out(
    writer: &mut SecretStreamWriteHalf<WriteHalf<UdxAsyncStream>>,
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
