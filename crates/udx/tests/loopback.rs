//! Real sockets on 127.0.0.1: byte-exact transfers both ways, clean closes, and the
//! datagram side channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use udx::{CloseReason, Socket, Stream};

const LIMIT: Duration = Duration::from_secs(20);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn pair() -> (Stream, Stream) {
    let a = Socket::bind(localhost()).unwrap();
    let b = Socket::bind(localhost()).unwrap();
    let sa = Stream::connect(&a, 1, 2, b.local_addr()).unwrap();
    let sb = Stream::connect(&b, 2, 1, a.local_addr()).unwrap();
    (sa, sb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_byte_exact_from_1_byte_to_16_mib() {
    for len in [1usize, 1151, 1152, 1153, 100_000, 2 << 20, 16 << 20] {
        let (mut a, mut b) = pair().await;
        let data = pattern(len);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
            timeout(LIMIT, a.flushed()).await.unwrap().unwrap();
            a
        });
        let mut got = Vec::new();
        timeout(LIMIT, b.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got.len(), len);
        assert!(got == data, "payload of {len} bytes differs");
        b.shutdown().await.unwrap();
        let a = writer.await.unwrap();
        assert_eq!(timeout(LIMIT, a.closed()).await.unwrap(), CloseReason::Done);
        assert_eq!(timeout(LIMIT, b.closed()).await.unwrap(), CloseReason::Done);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trips_in_both_directions() {
    let (mut a, mut b) = pair().await;
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = b.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            b.write_all(&buf[..n]).await.unwrap();
        }
        b.shutdown().await.unwrap();
        b
    });
    for i in 0..200usize {
        let msg = pattern(1 + i * 13 % 3000);
        a.write_all(&msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        timeout(LIMIT, a.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, msg);
    }
    a.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(LIMIT, a.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    let b = echo.await.unwrap();
    assert_eq!(timeout(LIMIT, b.closed()).await.unwrap(), CloseReason::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_resets_the_peer() {
    let (a, mut b) = pair().await;
    a.destroy();
    let mut buf = [0u8; 8];
    let err = timeout(LIMIT, b.read(&mut buf)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(b.close_reason(), Some(CloseReason::Reset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_udx_datagrams_reach_the_handler_and_streams_keep_working() {
    let a = Socket::bind(localhost()).unwrap();
    let b = Socket::bind(localhost()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    b.on_datagram(Arc::new(move |data: &[u8], from| {
        let _ = tx.send((data.to_vec(), from));
    }));
    let mut sa = Stream::connect(&a, 5, 6, b.local_addr()).unwrap();
    let mut sb = Stream::connect(&b, 6, 5, a.local_addr()).unwrap();
    a.send_to(b"dht message", b.local_addr()).unwrap();
    let (data, from) = timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
    assert_eq!((data.as_slice(), from), (&b"dht message"[..], a.local_addr()));
    sa.write_all(b"stream bytes").await.unwrap();
    let mut buf = [0u8; 12];
    timeout(LIMIT, sb.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"stream bytes");
    // A UDX-shaped packet for an unknown stream is dropped, not handed to the DHT.
    let mut forged = udx::packet::Header { flags: udx::packet::FLAG_DATA, stream_id: 999, ..Default::default() }.to_bytes().to_vec();
    forged.extend_from_slice(b"junk");
    a.send_to(&forged, b.local_addr()).unwrap();
    a.send_to(b"after", b.local_addr()).unwrap();
    let (data, _) = timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
    assert_eq!(data, b"after");
    assert_eq!(b.unknown_stream_packets(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_stream_connects_through_its_firewall() {
    let a = Socket::bind(localhost()).unwrap();
    let b = Socket::bind(localhost()).unwrap();
    let allowed = a.local_addr();
    let mut sb = Stream::listen(&b, 8, 7, Box::new(move |_, from| from == allowed)).unwrap();
    let intruder = Socket::bind(localhost()).unwrap();
    let mut evil = Stream::connect(&intruder, 7, 8, b.local_addr()).unwrap();
    evil.write_all(b"let me in").await.unwrap();
    let mut sa = Stream::connect(&a, 7, 8, b.local_addr()).unwrap();
    sa.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    timeout(LIMIT, sb.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(sb.remote_addr(), Some(allowed));
}
