//! The socket-level hooks a DHT server needs beside the DHT on the same sockets: a filter
//! that takes its own datagrams before the DHT's handler, per-datagram TTL, and streams
//! that listen on several sockets (a holepunching server does not know which of its
//! sockets a peer will reach) or are connected explicitly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use udx::{Socket, Stream};

const LIMIT: Duration = Duration::from_secs(20);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_takes_what_it_claims_and_the_handler_gets_the_rest() {
    let a = Socket::bind(localhost()).unwrap();
    let b = Socket::bind(localhost()).unwrap();
    let (handled_tx, mut handled) = mpsc::unbounded_channel();
    b.on_datagram(Arc::new(move |data: &[u8], _| {
        let _ = handled_tx.send(data.to_vec());
    }));
    let (filtered_tx, mut filtered) = mpsc::unbounded_channel();
    b.set_datagram_filter(Some(Arc::new(move |data: &[u8], from| {
        if data.starts_with(b"mine") {
            let _ = filtered_tx.send((data.to_vec(), from));
            return true;
        }
        false
    })));
    a.send_to(b"mine 1", b.local_addr()).unwrap();
    a.send_to(b"theirs", b.local_addr()).unwrap();
    assert_eq!(timeout(LIMIT, filtered.recv()).await.unwrap().unwrap(), (b"mine 1".to_vec(), a.local_addr()));
    assert_eq!(timeout(LIMIT, handled.recv()).await.unwrap().unwrap(), b"theirs");
    // Streams are not affected by a filter.
    let mut sa = Stream::connect(&a, 1, 2, b.local_addr()).unwrap();
    let mut sb = Stream::connect(&b, 2, 1, a.local_addr()).unwrap();
    sa.write_all(b"mine too").await.unwrap();
    let mut buf = [0u8; 8];
    timeout(LIMIT, sb.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"mine too");
    // Removed: everything reaches the handler again.
    b.set_datagram_filter(None);
    a.send_to(b"mine 2", b.local_addr()).unwrap();
    assert_eq!(timeout(LIMIT, handled.recv()).await.unwrap().unwrap(), b"mine 2");
    assert!(filtered.try_recv().is_err());
    // No handler: datagrams are dropped, and the socket keeps working.
    b.remove_datagram_handler();
    a.send_to(b"dropped", b.local_addr()).unwrap();
    sa.write_all(b"still ok").await.unwrap();
    timeout(LIMIT, sb.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"still ok");
    assert!(handled.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_can_carry_its_own_ttl() {
    let a = Socket::bind(localhost()).unwrap();
    let b = Socket::bind(localhost()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    b.on_datagram(Arc::new(move |data: &[u8], _| {
        let _ = tx.send(data.to_vec());
    }));
    let before = a.ttl().unwrap();
    // Loopback is zero hops away: even a TTL of 1 arrives.
    a.send_to_with_ttl(&[0], b.local_addr(), 1).unwrap();
    assert_eq!(timeout(LIMIT, rx.recv()).await.unwrap().unwrap(), vec![0]);
    assert_eq!(a.ttl().unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_listening_on_several_sockets_connects_where_the_peer_arrives() {
    let first = Socket::bind(localhost()).unwrap();
    let second = Socket::bind(localhost()).unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let hook: udx::FirewallHook = Box::new(move |socket, from| {
        let _ = seen_tx.send((socket.local_addr(), from));
        true
    });
    let mut server = Stream::listen_on(std::slice::from_ref(&first), 10, 20, hook, udx::Config::default()).unwrap();
    server.listen_also(&second).unwrap();
    server.listen_also(&second).unwrap(); // twice is once
    assert_eq!((first.stream_count(), second.stream_count()), (1, 1));

    let peer = Socket::bind(localhost()).unwrap();
    let mut client = Stream::connect(&peer, 20, 10, second.local_addr()).unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    timeout(LIMIT, server.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(seen.recv().await.unwrap(), (second.local_addr(), peer.local_addr()));
    // It answers from the socket the peer reached, and left the other one.
    assert_eq!(server.socket().local_addr(), second.local_addr());
    assert_eq!((first.stream_count(), second.stream_count()), (0, 1));
    server.write_all(b"world").await.unwrap();
    timeout(LIMIT, client.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"world");
    // Connected: more sockets change nothing.
    let third = Socket::bind(localhost()).unwrap();
    server.listen_also(&third).unwrap();
    assert_eq!(third.stream_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_of_its_sockets_leaves_a_listening_stream_the_others() {
    let first = Socket::bind(localhost()).unwrap();
    let second = Socket::bind(localhost()).unwrap();
    let mut server = Stream::listen_on(&[first.clone(), second.clone()], 11, 21, Box::new(|_, _| true), udx::Config::default()).unwrap();
    first.close();
    assert!(server.close_reason().is_none());
    let peer = Socket::bind(localhost()).unwrap();
    let mut client = Stream::connect(&peer, 21, 11, second.local_addr()).unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    timeout(LIMIT, server.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"hi");
    // The last one going ends it.
    let lonely = Stream::listen(&peer, 30, 31, Box::new(|_, _| true)).unwrap();
    peer.close();
    assert!(timeout(LIMIT, lonely.closed()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_stream_can_be_connected_explicitly() {
    let a = Socket::bind(localhost()).unwrap();
    let b = Socket::bind(localhost()).unwrap();
    let c = Socket::bind(localhost()).unwrap();
    // Listening on a and b, connected through c: it leaves a and b.
    let mut sa = Stream::listen_on(&[a.clone(), b.clone()], 40, 41, Box::new(|_, _| false), udx::Config::default()).unwrap();
    let peer = Socket::bind(localhost()).unwrap();
    let mut sp = Stream::connect(&peer, 41, 40, c.local_addr()).unwrap();
    sa.connect_to(&c, peer.local_addr()).unwrap();
    assert_eq!((a.stream_count(), b.stream_count(), c.stream_count()), (0, 0, 1));
    assert!(sa.connect_to(&c, peer.local_addr()).is_err(), "connected once only");
    sa.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(LIMIT, sp.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping");
    sp.write_all(b"pong").await.unwrap();
    timeout(LIMIT, sa.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"pong");
    // Dropped streams leave every socket they were on.
    drop(sa);
    let left = Stream::listen_on(&[a.clone(), b.clone()], 50, 51, Box::new(|_, _| true), udx::Config::default()).unwrap();
    left.destroy();
    timeout(LIMIT, left.closed()).await.unwrap();
    for _ in 0..200 {
        if a.stream_count() == 0 && b.stream_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!((a.stream_count(), b.stream_count()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_handles_do_not_keep_sockets_or_streams() {
    let a = Socket::bind(localhost()).unwrap();
    let weak = a.downgrade();
    assert!(weak.upgrade().is_some_and(|s| s.same(&a)));
    let b = Socket::bind(localhost()).unwrap();
    let stream = Stream::listen(&a, 60, 61, Box::new(|_, _| true)).unwrap();
    let handle = stream.handle();
    handle.listen_also(&b).unwrap();
    assert_eq!(b.stream_count(), 1);
    assert!(!handle.is_connected());
    handle.connect_to(&b, "127.0.0.1:9".parse().unwrap()).unwrap();
    assert!(handle.is_connected());
    assert_eq!((a.stream_count(), b.stream_count()), (0, 1));
    stream.destroy();
    drop(stream);
    drop(a);
    // The stream's timer task lets go of it once it has unregistered.
    for _ in 0..400 {
        if handle.listen_also(&b).is_err() && weak.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(weak.upgrade().is_none());
    assert!(handle.connect_to(&b, "127.0.0.1:9".parse().unwrap()).is_err());
}
