//! Streams through the libudx API on 127.0.0.1: connect both ways, the single-fire
//! firewall hook (accepting and refusing), destroy, and the errors of a stream that
//! never joined a socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libudx::{UdxAsyncStream, UdxError, UdxRuntime, UdxSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251 + seed) as u8).collect()
}

async fn bound(runtime: &UdxRuntime) -> UdxSocket {
    let socket = runtime.create_socket().await.expect("create_socket");
    socket.bind(localhost()).await.expect("bind");
    socket
}

/// Two connected streams, ids 1 (on `a`) and 2 (on `b`), as peeroxide's client and
/// server sides make them.
async fn connected_pair(runtime: &UdxRuntime) -> (UdxSocket, UdxSocket, libudx::UdxStream, libudx::UdxStream) {
    let a = bound(runtime).await;
    let b = bound(runtime).await;
    let sa = runtime.create_stream(1).await.expect("create_stream");
    let sb = runtime.create_stream(2).await.expect("create_stream");
    sa.connect(&a, 2, b.local_addr().await.expect("local_addr")).await.expect("connect");
    sb.connect(&b, 1, a.local_addr().await.expect("local_addr")).await.expect("connect");
    (a, b, sa, sb)
}

/// Writes `out`, ends, reads the peer's bytes to the end, then waits for the END's ACK.
async fn exchange(mut stream: UdxAsyncStream, out: Vec<u8>) -> Vec<u8> {
    let (mut reader, mut writer) = tokio::io::split(&mut stream);
    let write = async {
        writer.write_all(&out).await.expect("write");
        writer.shutdown().await.expect("shutdown");
    };
    let read = async {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.expect("read");
        got
    };
    let ((), got) = timeout(LIMIT, async { tokio::join!(write, read) }).await.expect("exchange in time");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_streams_carry_bytes_both_ways_at_once() {
    let runtime = UdxRuntime::new().expect("runtime");
    let (_a, _b, sa, sb) = connected_pair(&runtime).await;
    let to_b = pattern(2 << 20, 1);
    let to_a = pattern(700_001, 2);
    let (got_b, got_a) = tokio::join!(
        tokio::spawn(exchange(sb.into_async_stream(), to_a.clone())),
        tokio::spawn(exchange(sa.into_async_stream(), to_b.clone())),
    );
    let (got_b, got_a) = (got_b.expect("task"), got_a.expect("task"));
    assert_eq!(got_b.len(), to_b.len());
    assert!(got_b == to_b, "a -> b differs");
    assert_eq!(got_a.len(), to_a.len());
    assert!(got_a == to_a, "b -> a differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_message_arrives_whole_while_the_stream_stays_open() {
    let runtime = UdxRuntime::new().expect("runtime");
    let (_a, _b, sa, sb) = connected_pair(&runtime).await;
    let (mut a, mut b) = (sa.into_async_stream(), sb.into_async_stream());
    // A secret-stream frame: length, body, flush (the stream corks until the flush).
    for round in 0..50usize {
        let body = pattern(1 + round * 97, round);
        let len = [body.len() as u8, (body.len() >> 8) as u8, (body.len() >> 16) as u8];
        a.write_all(&len).await.expect("write");
        a.write_all(&body).await.expect("write");
        a.flush().await.expect("flush");
        let mut got = vec![0u8; 3 + body.len()];
        timeout(LIMIT, b.read_exact(&mut got)).await.expect("in time").expect("read");
        assert_eq!(&got[..3], &len);
        assert!(got[3..] == body[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_firewall_hook_fires_once_and_adopts_the_first_sender() {
    let runtime = UdxRuntime::new().expect("runtime");
    let client = bound(&runtime).await;
    let server = bound(&runtime).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Option<(SocketAddr, u16, IpAddr)>>> = Arc::default();
    let listening = runtime.create_stream(20).await.expect("create_stream");
    {
        let (calls, seen) = (calls.clone(), seen.clone());
        listening
            .set_firewall_hook(&server, 10, move |socket, port, ip| {
                calls.fetch_add(1, Ordering::SeqCst);
                let local = socket.udx_socket().map(|s| s.local_addr());
                *seen.lock().expect("lock") = local.map(|l| (l, port, ip));
                true
            })
            .expect("set_firewall_hook");
    }
    // The listening side writes first and only then reads, as peeroxide's relay service
    // does (`SecretStream::from_session` writes its header before reading): the write
    // waits for the first packet and must be woken by it.
    let server_side = tokio::spawn(async move {
        let mut stream = listening.into_async_stream();
        stream.write_all(&pattern(5000, 3)).await.expect("write");
        stream.flush().await.expect("flush");
        let mut got = vec![0u8; 300_000];
        stream.read_exact(&mut got).await.expect("read");
        stream.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("read to end");
        assert!(rest.is_empty());
        got
    });
    let dialing = runtime.create_stream(10).await.expect("create_stream");
    dialing.connect(&client, 20, server.local_addr().await.expect("local_addr")).await.expect("connect");
    let got_client = exchange(dialing.into_async_stream(), pattern(300_000, 4)).await;
    let got_server = timeout(LIMIT, server_side).await.expect("in time").expect("task");
    assert!(got_client == pattern(5000, 3));
    assert!(got_server == pattern(300_000, 4));
    // Hundreds of packets arrived; the hook saw only the first.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let client_addr = client.local_addr().await.expect("local_addr");
    let server_addr = server.local_addr().await.expect("local_addr");
    assert_eq!(*seen.lock().expect("lock"), Some((server_addr, client_addr.port(), client_addr.ip())));
}

/// A raw UDX DATA packet for stream `id`.
fn udx_data_packet(id: u32, seq: u32) -> Vec<u8> {
    let mut p = vec![0xFF, 1, 0x01, 0];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&65536u32.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(b"data");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewall_hook_that_refuses_closes_the_stream_and_fires_no_more() {
    let runtime = UdxRuntime::new().expect("runtime");
    let intruder = bound(&runtime).await;
    let server = bound(&runtime).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let listening = runtime.create_stream(30).await.expect("create_stream");
    {
        let calls = calls.clone();
        listening
            .set_firewall_hook(&server, 31, move |_, _, _| {
                calls.fetch_add(1, Ordering::SeqCst);
                false
            })
            .expect("set_firewall_hook");
    }
    let mut stream = listening.into_async_stream();
    // The read waits on a task of its own, so only a wake-up (not the timeout's own
    // poll at its deadline) can finish it.
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await;
        (stream, n)
    });
    let to = server.local_addr().await.expect("local_addr");
    // A burst: the later packets reach the stream before the refusal has closed it.
    for seq in 0..8 {
        intruder.send_to(&udx_data_packet(30, seq), to).expect("send_to");
    }
    let (mut stream, n) = timeout(LIMIT, reader).await.expect("closed in time").expect("task");
    assert_eq!(n.expect("a refused stream reads EOF"), 0);
    assert!(stream.write_all(b"no").await.is_err(), "a refused stream cannot be written");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(stream.with_udx_stream(|s| s.close_reason()), Some(Some(udx::CloseReason::Destroyed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_resets_the_peer() {
    let runtime = UdxRuntime::new().expect("runtime");
    let (_a, _b, sa, sb) = connected_pair(&runtime).await;
    let mut b = sb.into_async_stream();
    sa.destroy().await.expect("destroy");
    let mut buf = [0u8; 16];
    let err = timeout(LIMIT, b.read(&mut buf)).await.expect("in time").expect_err("the peer destroyed the stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    // After the error, EOF.
    assert_eq!(b.read(&mut buf).await.expect("eof"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_ends_it_gracefully() {
    let runtime = UdxRuntime::new().expect("runtime");
    let (_a, _b, sa, sb) = connected_pair(&runtime).await;
    let mut a = sa.into_async_stream();
    a.write_all(b"last words").await.expect("write");
    drop(a);
    let mut got = Vec::new();
    let mut b = sb.into_async_stream();
    timeout(LIMIT, b.read_to_end(&mut got)).await.expect("in time").expect("read");
    assert_eq!(got, b"last words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_off_any_socket_fails_cleanly() {
    let runtime = UdxRuntime::new().expect("runtime");
    let unbound = runtime.create_socket().await.expect("create_socket");
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let stream = runtime.create_stream(40).await.expect("create_stream");
    assert!(matches!(stream.connect(&unbound, 41, addr).await, Err(UdxError::Io(_))));
    assert!(matches!(stream.set_firewall_hook(&unbound, 41, |_, _, _| true), Err(UdxError::Io(_))));
    let other = runtime.create_stream(42).await.expect("create_stream");
    assert!(matches!(stream.relay_to(&other), Err(UdxError::Io(_))));
    assert_eq!(stream.effective_mtu(), 1200);
    assert!(stream.with_udx_stream(|_| ()).is_none());
    runtime.create_stream(43).await.expect("create_stream").destroy().await.expect("destroy of a stream never connected");

    let mut never = stream.into_async_stream();
    let mut buf = [0u8; 4];
    assert_eq!(never.read(&mut buf).await.expect_err("read").kind(), std::io::ErrorKind::NotConnected);
    assert_eq!(never.write(b"x").await.expect_err("write").kind(), std::io::ErrorKind::NotConnected);
    never.shutdown().await.expect("nothing to end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_joins_one_socket_once_and_ids_are_unique() {
    let runtime = UdxRuntime::new().expect("runtime");
    let socket = bound(&runtime).await;
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let stream = runtime.create_stream(50).await.expect("create_stream");
    stream.connect(&socket, 51, addr).await.expect("connect");
    assert!(matches!(stream.connect(&socket, 51, addr).await, Err(UdxError::Io(_))));
    assert!(matches!(stream.set_firewall_hook(&socket, 51, |_, _, _| true), Err(UdxError::Io(_))));
    let twin = runtime.create_stream(50).await.expect("create_stream");
    match twin.connect(&socket, 52, addr).await {
        Err(UdxError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse),
        other => panic!("a second stream 50 on one socket: {other:?}"),
    }
    stream.destroy().await.expect("destroy");
}
