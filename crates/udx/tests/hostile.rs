//! Hostile peers against a real socket: forged and replayed packets, a window held shut,
//! sequence numbers far outside the window, floods for streams that do not exist. The
//! stream under attack ignores them or ends; other streams and the datagram user go on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use udx::packet::{Header, Packet, FLAG_DATA, FLAG_SACK};
use udx::{CloseReason, Config, Socket, Stream};

const LIMIT: Duration = Duration::from_secs(20);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn packet(h: Header, payload: &[u8]) -> Vec<u8> {
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A healthy stream pair on `victim`'s socket, to check it keeps working.
async fn healthy_echo(victim: &Socket) -> (Stream, Stream) {
    let other = Socket::bind(localhost()).unwrap();
    let a = Stream::connect(victim, 100, 200, other.local_addr()).unwrap();
    let b = Stream::connect(&other, 200, 100, victim.local_addr()).unwrap();
    (a, b)
}

/// Both directions: `a` (on the victim's socket) also receives, so once this returns the
/// victim's socket has processed everything sent to it before (one FIFO queue).
async fn still_works(a: &mut Stream, b: &mut Stream) {
    a.write_all(b"still alive").await.unwrap();
    let mut buf = [0u8; 11];
    timeout(LIMIT, b.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"still alive");
    b.write_all(b"and answers").await.unwrap();
    timeout(LIMIT, a.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"and answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_acks_sacks_and_far_sequences_are_ignored() {
    let victim = Socket::bind(localhost()).unwrap();
    let attacker = UdpSocket::bind(localhost()).await.unwrap();
    let attacker_addr = attacker.local_addr().unwrap();
    // The victim's stream 1 talks to the attacker's (pretend) stream 9.
    let mut target = Stream::connect(&victim, 1, 9, attacker_addr).unwrap();
    let (mut a, mut b) = healthy_echo(&victim).await;
    target.write_all(&[1u8; 5000]).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = timeout(LIMIT, attacker.recv_from(&mut buf)).await.unwrap().unwrap();
    assert!(Packet::parse(&buf[..n]).is_some());
    let victim_addr = victim.local_addr();
    let base = Header { stream_id: 1, recv_window: 1 << 20, ..Default::default() };
    let mut sack = Vec::new();
    for (s, e) in [(0u32, 1_000_000u32), (50, 40), (u32::MAX - 5, 3)] {
        sack.extend_from_slice(&s.to_le_bytes());
        sack.extend_from_slice(&e.to_le_bytes());
    }
    let forged = [
        packet(Header { ack: 1_000_000, ..base }, &[]),                   // ACK of data never sent
        packet(Header { flags: FLAG_SACK, ..base }, &sack),              // SACK ranges never sent
        packet(Header { flags: FLAG_DATA, seq: 1 << 30, ..base }, b"x"), // far outside the window
        packet(Header { flags: FLAG_DATA, seq: u32::MAX, ..base }, b"y"),
        packet(Header { flags: FLAG_DATA, data_offset: 250, ..base }, b"short"), // offset past end
    ];
    for _ in 0..50 {
        for p in &forged {
            attacker.send_to(p, victim_addr).await.unwrap();
        }
    }
    // Spoofed stream ids: packets for ids nobody uses.
    for id in 0..500u32 {
        attacker.send_to(&packet(Header { flags: FLAG_DATA, stream_id: 10_000 + id, ..base }, &[0; 1000]), victim_addr).await.unwrap();
    }
    still_works(&mut a, &mut b).await;
    let stats = target.stats().unwrap();
    assert!(stats.dropped_sacks >= 50, "{stats:?}");
    assert!(target.close_reason().is_none(), "forgeries do not end the stream");
    assert!(victim.unknown_stream_packets() >= 500, "{}", victim.unknown_stream_packets());
    drop(target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_duplicated_data_is_delivered_once() {
    let victim = Socket::bind(localhost()).unwrap();
    let peer = UdpSocket::bind(localhost()).await.unwrap();
    let mut target = Stream::connect(&victim, 1, 9, peer.local_addr().unwrap()).unwrap();
    let victim_addr = victim.local_addr();
    for round in 0..3 {
        for seq in 0..4u32 {
            let body = [b'a' + seq as u8; 10];
            let h = Header { flags: FLAG_DATA, stream_id: 1, recv_window: 1 << 20, seq, ack: 0, data_offset: 0 };
            peer.send_to(&packet(h, &body), victim_addr).await.unwrap();
        }
        let _ = round;
    }
    let mut got = [0u8; 40];
    timeout(LIMIT, target.read_exact(&mut got)).await.unwrap().unwrap();
    let want: Vec<u8> = (0..4u8).flat_map(|i| [b'a' + i; 10]).collect();
    assert_eq!(&got[..], &want[..]);
    // Nothing more arrives: the replays were not delivered twice.
    let mut more = [0u8; 1];
    assert!(timeout(Duration::from_millis(300), target.read(&mut more)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_held_shut_bounds_memory_and_trips_the_user_timeout() {
    let victim = Socket::bind(localhost()).unwrap();
    let attacker = UdpSocket::bind(localhost()).await.unwrap();
    let cfg = Config { user_timeout: Some(Duration::from_secs(2)), ..Config::default() };
    let mut target = Stream::connect_with(&victim, 1, 9, attacker.local_addr().unwrap(), cfg).unwrap();
    let victim_addr = victim.local_addr();
    // The attacker acknowledges everything but keeps its window at zero.
    let answering = Arc::new(AtomicUsize::new(0));
    let count = answering.clone();
    let responder = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok(Ok((n, _))) = timeout(Duration::from_secs(10), attacker.recv_from(&mut buf)).await {
            let Some(p) = Packet::parse(&buf[..n]) else { continue };
            let ack = p.header.seq.wrapping_add(u32::from(p.header.flags & 0x03 != 0));
            let h = Header { stream_id: 1, recv_window: 0, seq: 0, ack, ..Default::default() };
            let _ = attacker.send_to(&h.to_bytes(), victim_addr).await;
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        loop {
            match timeout(Duration::from_secs(5), target.write(&chunk)).await {
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => return (written, Some(e.kind()), target),
                Err(_) => return (written, None, target),
            }
        }
    });
    let (written, error, target) = timeout(LIMIT, writer).await.unwrap().unwrap();
    // Writes stop at the send buffer bound (1 MiB) and the stream ends: no unbounded queue.
    assert!(written <= (1 << 20) + 64 * 1024, "wrote {written}");
    assert_eq!(error, Some(std::io::ErrorKind::TimedOut));
    assert_eq!(target.close_reason(), Some(CloseReason::TimedOut));
    assert!(answering.load(Ordering::Relaxed) > 0);
    responder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_flood_for_an_unknown_stream_leaves_streams_and_datagrams_working() {
    let victim = Socket::bind(localhost()).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    victim.on_datagram(Arc::new(move |data: &[u8], _| {
        if data == b"dht ping" {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let (mut a, mut b) = healthy_echo(&victim).await;
    let attacker = UdpSocket::bind(localhost()).await.unwrap();
    let flood = packet(Header { flags: FLAG_DATA, stream_id: 4242, recv_window: 1 << 20, ..Default::default() }, &[0xAB; 1100]);
    for i in 0..20_000 {
        let _ = attacker.send_to(&flood, victim.local_addr()).await;
        if i % 2000 == 0 {
            let _ = attacker.send_to(b"dht ping", victim.local_addr()).await;
        }
    }
    still_works(&mut a, &mut b).await;
    timeout(LIMIT, async {
        while seen.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert!(victim.unknown_stream_packets() > 0);
    assert_eq!(victim.stream_count(), 1, "the flood registered nothing");
}
