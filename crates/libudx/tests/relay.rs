//! `relay_to` as peeroxide-dht's relay service uses it: two listening streams on the
//! relay's socket, each relaying to the other, carrying a full-duplex conversation
//! between two peers that only know the relay.

use std::net::SocketAddr;
use std::time::Duration;

use libudx::{UdxRuntime, UdxSocket, UdxStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 509 + seed) as u8).collect()
}

async fn bound(runtime: &UdxRuntime) -> UdxSocket {
    let socket = runtime.create_socket().await.expect("create_socket");
    socket.bind(localhost()).await.expect("bind");
    socket
}

struct Relayed {
    _sockets: Vec<UdxSocket>,
    /// The relay's pair (ids 101 and 102), as `bridge_one_pairing` keeps them.
    pair: (UdxStream, UdxStream),
    /// Peer 1's stream (id 1, talking to relay stream 101) and peer 2's (id 2, to 102).
    peers: (UdxStream, UdxStream),
}

async fn relayed(runtime: &UdxRuntime) -> Relayed {
    let relay = bound(runtime).await;
    let p1 = bound(runtime).await;
    let p2 = bound(runtime).await;
    let r1 = runtime.create_stream(101).await.expect("create_stream");
    r1.set_firewall_hook(&relay, 1, |_, _, _| true).expect("hook");
    let r2 = runtime.create_stream(102).await.expect("create_stream");
    r2.set_firewall_hook(&relay, 2, |_, _, _| true).expect("hook");
    // Both directions wired at once from two threads: the shim takes both streams' locks
    // in one order whichever side asks.
    std::thread::scope(|scope| {
        let one = scope.spawn(|| (0..1000).try_for_each(|_| r1.relay_to(&r2)));
        let two = scope.spawn(|| (0..1000).try_for_each(|_| r2.relay_to(&r1)));
        one.join().expect("thread").expect("relay_to");
        two.join().expect("thread").expect("relay_to");
    });
    let to = relay.local_addr().await.expect("local_addr");
    let s1 = runtime.create_stream(1).await.expect("create_stream");
    s1.connect(&p1, 101, to).await.expect("connect");
    let s2 = runtime.create_stream(2).await.expect("create_stream");
    s2.connect(&p2, 102, to).await.expect("connect");
    Relayed { _sockets: vec![relay, p1, p2], pair: (r1, r2), peers: (s1, s2) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_pair_carries_both_directions_at_once() {
    let runtime = UdxRuntime::new().expect("runtime");
    let Relayed { _sockets, pair, peers } = relayed(&runtime).await;
    let (s1, s2) = (peers.0.into_async_stream(), peers.1.into_async_stream());
    // Full duplex, both peers writing and reading at the same time, plus an echo of
    // small messages interleaved: packets cross the relay both ways concurrently.
    let run = |mut stream: libudx::UdxAsyncStream, seed: usize| async move {
        let out = pattern(1 << 20, seed);
        let (mut reader, mut writer) = tokio::io::split(&mut stream);
        let write = async {
            for chunk in out.chunks(10_000) {
                writer.write_all(chunk).await.expect("write");
            }
            writer.shutdown().await.expect("shutdown");
        };
        let read = async {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.expect("read");
            got
        };
        let ((), got) = tokio::join!(write, read);
        got
    };
    let (got1, got2) = timeout(LIMIT, async { tokio::join!(tokio::spawn(run(s1, 1)), tokio::spawn(run(s2, 2))) })
        .await
        .expect("relayed transfer in time (no deadlock)");
    let (got1, got2) = (got1.expect("task"), got2.expect("task"));
    assert!(got1 == pattern(1 << 20, 2), "peer 2 -> peer 1 differs");
    assert!(got2 == pattern(1 << 20, 1), "peer 1 -> peer 2 differs");
    // The relay's own streams put no packet of their own into the conversation.
    for r in [&pair.0, &pair.1] {
        let sent = r.with_udx_stream(|s| s.stats().map(|st| st.packets_sent)).flatten();
        assert_eq!(sent, Some(0));
    }
}

/// Waits for `cond`, which has no event to await, checking every few milliseconds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_relay_pair_stops_forwarding_and_frees_both_streams() {
    let runtime = UdxRuntime::new().expect("runtime");
    let Relayed { _sockets, pair, peers } = relayed(&runtime).await;
    let (mut s1, mut s2) = (peers.0.into_async_stream(), peers.1.into_async_stream());
    // Both peers speak first (as secret streams do): a relay stream learns its peer's
    // address from the peer's first packet, and forwards nothing to a peer it has not
    // heard from yet (libudx 1.7.3 too).
    s1.write_all(b"ping").await.expect("write");
    s1.flush().await.expect("flush");
    s2.write_all(b"pong").await.expect("write");
    s2.flush().await.expect("flush");
    let mut buf = [0u8; 4];
    timeout(LIMIT, s2.read_exact(&mut buf)).await.expect("in time").expect("read");
    assert_eq!(&buf, b"ping");
    timeout(LIMIT, s1.read_exact(&mut buf)).await.expect("in time").expect("read");
    assert_eq!(&buf, b"pong");

    let relay = _sockets[0].udx_socket().expect("bound");
    assert_eq!(relay.stream_count(), 2);
    // peeroxide's relay service tears a pairing down by dropping the pair.
    drop(pair);
    // Both unregister: the two streams referred to each other, and that must not keep
    // them alive.
    eventually("the relay streams to unregister", || relay.stream_count() == 0).await;
    let unknown = relay.unknown_stream_packets();
    s1.write_all(b"more").await.expect("write");
    s1.flush().await.expect("flush");
    eventually("peer 1's packet to reach the relay and find no stream", || relay.unknown_stream_packets() > unknown).await;
}
