//! The socket half of the libudx API on 127.0.0.1: binding, datagrams in order through
//! `recv_start`, TTL, and the errors of an unbound socket.

use std::net::SocketAddr;
use std::time::Duration;

use libudx::{Datagram, UdxError, UdxRuntime, UdxSocket};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

async fn bound(runtime: &UdxRuntime) -> UdxSocket {
    let socket = runtime.create_socket().await.expect("create_socket");
    socket.bind(localhost()).await.expect("bind");
    socket
}

async fn next(rx: &mut UnboundedReceiver<Datagram>) -> Datagram {
    timeout(LIMIT, rx.recv()).await.expect("a datagram in time").expect("channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_arrive_in_the_order_they_were_sent() {
    let runtime = UdxRuntime::new().expect("runtime");
    let a = bound(&runtime).await;
    let b = bound(&runtime).await;
    let mut rx = b.recv_start().expect("recv_start");
    let to = b.local_addr().await.expect("local_addr");
    let from = a.local_addr().await.expect("local_addr");
    // Bursts of 64 back to back (libudx 1.7.3 spawned a task per datagram, which
    // reorders a burst on a multi-threaded runtime); each burst is awaited whole, so
    // the receiver's kernel buffer never overflows and nothing may be missing.
    let mut expected = 0u32;
    for burst in 0..32u32 {
        for i in 0..64u32 {
            let n = burst * 64 + i;
            // DHT-like payloads of varying size; none starts with UDX's 0xFF 0x01.
            let mut data = n.to_be_bytes().to_vec();
            data.resize(4 + (n as usize * 37) % 1200, 0x13);
            a.send_to(&data, to).expect("send_to");
        }
        for _ in 0..64 {
            let d = next(&mut rx).await;
            assert_eq!(d.addr, from);
            let n = u32::from_be_bytes([d.data[0], d.data[1], d.data[2], d.data[3]]);
            assert_eq!(n, expected, "datagram {n} arrived where {expected} was due");
            assert_eq!(d.data.len(), 4 + (n as usize * 37) % 1200);
            expected += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_dropped_and_counted_beyond_the_rate_and_the_channel_stays_bounded() {
    let runtime = UdxRuntime::new().expect("runtime");
    let a = bound(&runtime).await;
    let b = bound(&runtime).await;
    let mut rx = b.recv_start().expect("recv_start");
    let to = b.local_addr().await.expect("local_addr");
    let started = std::time::Instant::now();
    // 40 MB as fast as one socket sends it; nobody reads the channel meanwhile.
    let datagram = vec![0x13; 1000];
    for _ in 0..40_000 {
        let _ = a.send_to(&datagram, to);
    }
    // Everything the kernel kept has been through the socket once the counts stop moving.
    let mut last = (usize::MAX, u64::MAX);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = (rx.len(), b.dropped_datagrams());
        if now == last {
            break;
        }
        last = now;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (queued, dropped) = last;
    // 4 MiB of burst plus 16 MiB a second; 5,000 datagrams plus 20,000 a second.
    let byte_bound = 4.0 * 1048576.0 + 16.0 * 1048576.0 * elapsed;
    assert!((queued * 1000) as f64 <= byte_bound + 1000.0, "{queued} queued in {elapsed:.2} s");
    assert!(queued as f64 <= 5000.0 + 20000.0 * elapsed + 1.0, "{queued} queued in {elapsed:.2} s");
    assert!(dropped > 0, "nothing dropped of 40,000 ({queued} queued in {elapsed:.2} s)");
    assert_eq!(b.dropped_datagrams_counter().load(std::sync::atomic::Ordering::Relaxed), dropped);
    // The rate refills: a datagram sent later is delivered.
    while rx.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send_to(b"after", to).expect("send_to");
    assert_eq!(next(&mut rx).await.data, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_that_arrive_before_recv_start_are_delivered_first() {
    let runtime = UdxRuntime::new().expect("runtime");
    let a = bound(&runtime).await;
    let b = bound(&runtime).await;
    let to = b.local_addr().await.expect("local_addr");
    // A stream on b whose hook tells us when b's receive task has reached a UDX packet
    // sent after the early datagram: by then the early one has been received too.
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let stream = runtime.create_stream(7).await.expect("create_stream");
    stream
        .set_firewall_hook(&b, 8, move |_, _, _| {
            let _ = reached_tx.send(());
            false
        })
        .expect("set_firewall_hook");
    a.send_to(b"early", to).expect("send_to");
    let mut udx_data = vec![0xFF, 1, 0x01, 0];
    udx_data.extend_from_slice(&7u32.to_le_bytes());
    udx_data.extend_from_slice(&[0; 12]);
    udx_data.extend_from_slice(b"payload");
    a.send_to(&udx_data, to).expect("send_to");
    timeout(LIMIT, reached_rx).await.expect("in time").expect("hook fired");
    a.send_to(b"later", to).expect("send_to");
    let mut rx = b.recv_start().expect("recv_start");
    assert_eq!(next(&mut rx).await.data, b"early");
    // The UDX packet went to its stream, not here.
    assert_eq!(next(&mut rx).await.data, b"later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_recv_start_replaces_the_channel() {
    let runtime = UdxRuntime::new().expect("runtime");
    let a = bound(&runtime).await;
    let b = bound(&runtime).await;
    let mut first = b.recv_start().expect("recv_start");
    let mut second = b.recv_start().expect("recv_start");
    assert!(timeout(LIMIT, first.recv()).await.expect("in time").is_none(), "the replaced channel ends");
    a.send_to(b"x", b.local_addr().await.expect("local_addr")).expect("send_to");
    assert_eq!(next(&mut second).await.data, b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_ends_when_every_handle_is_gone() {
    let runtime = UdxRuntime::new().expect("runtime");
    let socket = bound(&runtime).await;
    let clone = socket.clone();
    let mut rx = socket.recv_start().expect("recv_start");
    socket.close().await.expect("close");
    // Another handle still exists: still receiving.
    let a = bound(&runtime).await;
    a.send_to(b"still", clone.local_addr().await.expect("local_addr")).expect("send_to");
    assert_eq!(next(&mut rx).await.data, b"still");
    clone.close().await.expect("close");
    assert!(timeout(LIMIT, rx.recv()).await.expect("in time").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_set_and_read_back() {
    let runtime = UdxRuntime::new().expect("runtime");
    let socket = bound(&runtime).await;
    socket.set_ttl(5).expect("set_ttl");
    assert_eq!(socket.ttl().expect("ttl"), 5);
    socket.set_ttl(64).expect("set_ttl");
    assert_eq!(socket.ttl().expect("ttl"), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_socket_fails_and_a_bound_one_cannot_bind_again() {
    let runtime = UdxRuntime::new().expect("runtime");
    let socket = runtime.create_socket().await.expect("create_socket");
    let to: SocketAddr = "127.0.0.1:9".parse().expect("address");
    assert!(matches!(socket.send_to(b"x", to), Err(UdxError::Io(_))));
    assert!(matches!(socket.local_addr().await, Err(UdxError::Io(_))));
    assert!(matches!(socket.recv_start(), Err(UdxError::Io(_))));
    assert!(matches!(socket.set_ttl(3), Err(UdxError::Io(_))));
    assert!(matches!(socket.ttl(), Err(UdxError::Io(_))));
    assert!(socket.udx_socket().is_none());
    socket.bind(localhost()).await.expect("bind");
    assert!(matches!(socket.bind(localhost()).await, Err(UdxError::Io(_))));
    let udx = socket.udx_socket().expect("bound");
    assert_eq!(udx.local_addr(), socket.local_addr().await.expect("local_addr"));
}

#[test]
fn binding_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let runtime = UdxRuntime::new().expect("runtime");
    let socket = poll_to_end(runtime.create_socket()).expect("create_socket");
    let bind = poll_to_end(socket.bind(localhost()));
    assert!(matches!(bind, Err(UdxError::RuntimeGone)), "{bind:?}");
}

/// Polls a future that never waits to completion, without a tokio runtime.
fn poll_to_end<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the future waited"),
    }
}
