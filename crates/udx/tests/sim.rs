//! Two `Conn`s joined by a simulated link on a virtual clock: loss, reordering,
//! duplication and delay are injected deterministically, and time only moves when
//! nothing else can happen, so every test is exact and instant.

use std::collections::BinaryHeap;
use std::cmp::Reverse;
use std::time::{Duration, Instant};

use udx::conn::{CloseReason, Config, Conn};
use udx::packet::{Header, Packet, FLAG_SACK};

/// xorshift64*: deterministic, dependency-free randomness for the link.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[derive(Clone, Copy, Default)]
struct Link {
    delay: Duration,
    loss: f64,
    duplicate: f64,
    /// Extra delay of up to this much on a random half of the packets.
    jitter: Duration,
}

/// A packet on the wire: arrival time, send order (ties), receiving side, bytes.
type InFlight = (Instant, u64, usize, Vec<u8>);

struct Sim {
    now: Instant,
    start: Instant,
    conns: [Conn; 2],
    link: Link,
    rng: Rng,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// Drop packets from side 0 whose sequence numbers are in this set (once each).
    drop_once: Vec<u32>,
    /// From this time on, the link drops everything.
    blackhole_after: Option<Instant>,
    received: Vec<u8>,
    read_enabled: bool,
}

impl Sim {
    fn new(link: Link, seed: u64, cfg0: Config, cfg1: Config) -> Self {
        let now = Instant::now();
        Sim {
            now,
            start: now,
            conns: [Conn::new(now, 2, cfg0), Conn::new(now, 1, cfg1)],
            link,
            rng: Rng(seed | 1),
            queue: BinaryHeap::new(),
            order: 0,
            drop_once: Vec::new(),
            blackhole_after: None,
            received: Vec::new(),
            read_enabled: true,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn transmit(&mut self) {
        let mut buf = [0u8; 2048];
        for side in 0..2 {
            while let Some(n) = self.conns[side].poll_transmit(self.now, &mut buf) {
                let bytes = buf[..n].to_vec();
                let header = Packet::parse(&bytes).unwrap().header;
                if side == 0 && header.flags & 0x03 != 0 {
                    if let Some(i) = self.drop_once.iter().position(|&s| s == header.seq) {
                        self.drop_once.remove(i);
                        continue;
                    }
                }
                if self.blackhole_after.is_some_and(|t| self.now >= t) || self.rng.chance(self.link.loss) {
                    continue;
                }
                let copies = if self.rng.chance(self.link.duplicate) { 2 } else { 1 };
                for _ in 0..copies {
                    let jitter = if self.link.jitter > Duration::ZERO && self.rng.chance(0.5) {
                        Duration::from_nanos(self.rng.next() % self.link.jitter.as_nanos() as u64)
                    } else {
                        Duration::ZERO
                    };
                    self.order += 1;
                    self.queue.push(Reverse((self.now + self.link.delay + jitter, self.order, 1 - side, bytes.clone())));
                }
            }
        }
    }

    fn read(&mut self) {
        if !self.read_enabled {
            return;
        }
        let mut buf = [0u8; 65536];
        loop {
            let n = self.conns[1].read(&mut buf);
            if n == 0 {
                break;
            }
            self.received.extend_from_slice(&buf[..n]);
        }
    }

    /// Runs until `done` or nothing is left to happen; panics past `limit` virtual time.
    fn run_until(&mut self, limit: Duration, done: impl FnMut(&Sim) -> bool) {
        assert!(self.step_until(limit, done), "no completion within {limit:?} of virtual time");
    }

    /// Runs until virtual time `for_time` from now has passed (or nothing is left).
    fn run_for(&mut self, for_time: Duration) {
        let limit = self.elapsed() + for_time;
        self.step_until(limit, |_| false);
    }

    /// Returns false when the next event lies past `limit`.
    fn step_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..10_000_000 {
            self.transmit();
            self.read();
            self.transmit();
            if done(self) {
                return true;
            }
            let next_packet = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next_timer = self.conns.iter().filter_map(|c| c.poll_timeout()).min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else { return true };
            if next - self.start > limit {
                return false;
            }
            self.now = self.now.max(next);
            while let Some(Reverse((t, ..))) = self.queue.peek() {
                if *t > self.now {
                    break;
                }
                let Some(Reverse((_, _, to, bytes))) = self.queue.pop() else { break };
                let pkt = Packet::parse(&bytes).unwrap();
                self.conns[to].handle_packet(self.now, &pkt);
            }
            for c in &mut self.conns {
                c.handle_timeout(self.now);
            }
        }
        panic!("simulation did not settle");
    }

    /// Writes `data` from side 0 as the window allows, ends, and runs to completion.
    fn transfer(&mut self, data: &[u8], limit: Duration) {
        let mut written = 0;
        let mut ended = false;
        let total = data.len();
        for _ in 0..1_000_000 {
            written += self.conns[0].write(&data[written..]);
            if written == total && !ended {
                self.conns[0].end();
                ended = true;
            }
            let before = self.elapsed();
            self.run_until(limit, |s| {
                s.received.len() == total && s.conns[1].remote_ended() && s.conns[0].all_acked()
                    || s.conns[0].buffered_bytes() < 1 << 19 && written < total
                    || s.conns[0].closed().is_some()
            });
            if self.received.len() == total && self.conns[0].all_acked() || self.conns[0].closed().is_some() {
                return;
            }
            assert!(self.elapsed() <= limit && (self.elapsed() > before || written < total), "stuck");
        }
        panic!("transfer did not finish");
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 997) as u8).collect()
}

const RTT_10MS: Link = Link { delay: Duration::from_millis(5), loss: 0.0, duplicate: 0.0, jitter: Duration::ZERO };

#[test]
fn lossless_bulk_uses_no_retransmissions() {
    let mut sim = Sim::new(RTT_10MS, 1, Config::default(), Config::default());
    let data = pattern(2 << 20);
    sim.transfer(&data, Duration::from_secs(5));
    assert!(sim.received == data);
    let stats = sim.conns[0].stats();
    assert_eq!((stats.retransmits, stats.rto_count), (0, 0));
    // Slow start from 10 packets at 10 ms RTT: 2 MiB is about 8 round trips.
    assert!(sim.elapsed() < Duration::from_millis(200), "took {:?}", sim.elapsed());
    assert!(sim.conns[0].mtu() > 1200, "MTU probes went through");
}

#[test]
fn random_loss_is_repaired_without_stalls() {
    for seed in 1..=5 {
        let link = Link { loss: 0.02, ..RTT_10MS };
        let mut sim = Sim::new(link, seed, Config::default(), Config::default());
        let data = pattern(1 << 20);
        sim.transfer(&data, Duration::from_secs(30));
        assert!(sim.received == data, "seed {seed}");
        let stats = sim.conns[0].stats();
        assert!(stats.retransmits > 0, "seed {seed}: loss was injected");
        // RACK and tail-loss probes repair nearly everything before an RTO.
        assert!(stats.rto_count <= 1, "seed {seed}: {} RTOs", stats.rto_count);
        assert!(sim.elapsed() < Duration::from_secs(2), "seed {seed}: took {:?}", sim.elapsed());
    }
}

#[test]
fn tail_loss_is_recovered_by_a_probe_not_an_rto() {
    let mut sim = Sim::new(RTT_10MS, 7, Config::default(), Config::default());
    // Warm the RTT estimate, then lose the last packet of a 10-packet write.
    sim.transfer(b"", Duration::from_secs(1));
    let mut sim = Sim::new(RTT_10MS, 7, Config::default(), Config::default());
    sim.conns[0].write(&pattern(1000));
    sim.run_until(Duration::from_secs(1), |s| s.received.len() == 1000);
    sim.drop_once = vec![10];
    let data = pattern(1152 * 9 + 100);
    sim.conns[0].write(&data);
    let start = sim.elapsed();
    sim.run_until(Duration::from_secs(2), |s| s.received.len() == 1000 + data.len() && s.conns[0].all_acked());
    let stats = sim.conns[0].stats();
    assert_eq!(stats.rto_count, 0);
    assert!(stats.tlp_count >= 1);
    assert!(sim.elapsed() - start < Duration::from_millis(60), "took {:?}", sim.elapsed() - start);
}

#[test]
fn reordering_and_duplication_deliver_exactly_once_in_order() {
    let link = Link { duplicate: 0.1, jitter: Duration::from_millis(3), ..RTT_10MS };
    let mut sim = Sim::new(link, 11, Config::default(), Config::default());
    let data = pattern(3 << 20);
    sim.transfer(&data, Duration::from_secs(30));
    assert!(sim.received == data);
    assert_eq!(sim.conns[0].stats().rto_count, 0);
}

#[test]
fn a_vanished_peer_times_out() {
    let mut sim = Sim::new(RTT_10MS, 3, Config::default(), Config::default());
    sim.conns[0].write(&pattern(5000));
    sim.run_until(Duration::from_secs(1), |s| s.received.len() == 5000);
    sim.blackhole_after = Some(sim.now);
    sim.conns[0].write(&pattern(100));
    sim.run_until(Duration::from_secs(120), |s| s.conns[0].closed().is_some());
    assert_eq!(sim.conns[0].closed(), Some(CloseReason::TimedOut));
    // 200 ms doubling six times before giving up.
    assert!(sim.elapsed() > Duration::from_secs(10) && sim.elapsed() < Duration::from_secs(60), "{:?}", sim.elapsed());
}

#[test]
fn user_timeout_bounds_the_wait_for_a_vanished_peer() {
    let cfg = Config { user_timeout: Some(Duration::from_secs(3)), ..Config::default() };
    let mut sim = Sim::new(RTT_10MS, 3, cfg, Config::default());
    sim.conns[0].write(&pattern(5000));
    sim.run_until(Duration::from_secs(1), |s| s.received.len() == 5000);
    let lost_at = sim.elapsed();
    sim.blackhole_after = Some(sim.now);
    sim.conns[0].write(&pattern(100));
    sim.run_until(Duration::from_secs(120), |s| s.conns[0].closed().is_some());
    assert_eq!(sim.conns[0].closed(), Some(CloseReason::TimedOut));
    let waited = sim.elapsed() - lost_at;
    // The backed-off RTO is capped at the user timeout rather than overshooting it.
    assert!(waited >= Duration::from_secs(3) && waited < Duration::from_millis(3300), "{waited:?}");
}

#[test]
fn a_full_receive_window_pauses_the_sender_until_read() {
    let small = Config { recv_window: 64 * 1024, ..Config::default() };
    let mut sim = Sim::new(RTT_10MS, 5, Config::default(), small);
    sim.read_enabled = false;
    let data = pattern(512 * 1024);
    sim.conns[0].write(&data);
    sim.conns[0].end();
    sim.run_for(Duration::from_secs(2));
    // Everything the window allowed is buffered, nothing more was accepted.
    assert!(sim.conns[1].readable_bytes() <= 64 * 1024 + 1500, "{}", sim.conns[1].readable_bytes());
    sim.read_enabled = true;
    sim.run_until(Duration::from_secs(60), |s| s.received.len() == data.len() && s.conns[0].all_acked());
    assert!(sim.received == data);
}

#[test]
fn forged_sacks_and_acks_for_unsent_data_change_nothing() {
    let mut sim = Sim::new(RTT_10MS, 9, Config::default(), Config::default());
    sim.conns[0].write(&pattern(20_000));
    sim.transmit();
    let now = sim.now;
    // A SACK for data never sent, and an ACK beyond what was sent.
    let mut forged = Header { flags: FLAG_SACK, stream_id: 1, recv_window: 1 << 20, seq: 0, ack: 0, data_offset: 0 }.to_bytes().to_vec();
    forged.extend_from_slice(&1000u32.to_le_bytes());
    forged.extend_from_slice(&2000u32.to_le_bytes());
    sim.conns[0].handle_packet(now, &Packet::parse(&forged).unwrap());
    let beyond = Header { flags: 0, stream_id: 1, recv_window: 1 << 20, seq: 0, ack: 5000, data_offset: 0 }.to_bytes();
    sim.conns[0].handle_packet(now, &Packet::parse(&beyond).unwrap());
    assert_eq!(sim.conns[0].stats().dropped_sacks, 1);
    sim.run_until(Duration::from_secs(2), |s| s.received.len() == 20_000 && s.conns[0].all_acked());
    assert_eq!(sim.conns[0].stats().rto_count, 0);
}

#[test]
fn data_far_outside_the_window_is_not_buffered() {
    let mut conn = Conn::new(Instant::now(), 1, Config::default());
    for seq in [5_000u32, 1 << 20, u32::MAX - 3] {
        let mut pkt = Header { flags: udx::packet::FLAG_DATA, stream_id: 2, recv_window: 1 << 20, seq, ack: 0, data_offset: 0 }.to_bytes().to_vec();
        pkt.extend_from_slice(&[7u8; 1000]);
        conn.handle_packet(Instant::now(), &Packet::parse(&pkt).unwrap());
    }
    // The last one is behind the window (already delivered, as far as wrapping goes).
    assert_eq!(conn.stats().dropped_packets, 2);
    assert_eq!(conn.readable_bytes(), 0);
}

#[test]
fn both_sides_end_and_close_cleanly() {
    let mut sim = Sim::new(RTT_10MS, 13, Config::default(), Config::default());
    sim.conns[0].write(b"ping");
    sim.conns[0].end();
    sim.run_until(Duration::from_secs(1), |s| s.conns[1].remote_ended());
    sim.conns[1].end();
    sim.run_until(Duration::from_secs(1), |s| s.conns.iter().all(|c| c.is_drained()));
    assert_eq!(sim.conns[0].closed(), Some(CloseReason::Done));
    assert_eq!(sim.conns[1].closed(), Some(CloseReason::Done));
    assert_eq!(sim.received, b"ping");
}

#[test]
fn corked_writes_share_a_packet_until_pushed() {
    let cfg = Config { cork: true, ..Config::default() };
    let mut conn = Conn::new(Instant::now(), 1, cfg);
    let mut buf = [0u8; 2048];
    conn.write(&[0, 0, 3]);
    conn.write(b"abc");
    assert_eq!(conn.poll_transmit(Instant::now(), &mut buf), None);
    conn.push();
    assert_eq!(conn.poll_transmit(Instant::now(), &mut buf), Some(20 + 6));
    assert_eq!(conn.poll_transmit(Instant::now(), &mut buf), None);
}

#[test]
fn a_closed_stream_reacknowledges_a_retransmitted_end() {
    let mut sim = Sim::new(RTT_10MS, 17, Config::default(), Config::default());
    sim.conns[0].end();
    sim.conns[1].end();
    sim.run_until(Duration::from_secs(1), |s| s.conns.iter().all(|c| c.is_drained()));
    assert_eq!(sim.conns[1].closed(), Some(CloseReason::Done));
    // Side 0's END (seq 0) again, as if side 1's ACK of it had been lost.
    let end = Header { flags: udx::packet::FLAG_END, stream_id: 1, recv_window: 1 << 20, seq: 0, ack: 1, data_offset: 0 }.to_bytes();
    sim.conns[1].handle_packet(sim.now, &Packet::parse(&end).unwrap());
    let mut buf = [0u8; 2048];
    let n = sim.conns[1].poll_transmit(sim.now, &mut buf).expect("an ACK answers it");
    let ack = Packet::parse(&buf[..n]).unwrap().header;
    assert_eq!((ack.flags, ack.ack), (0, 1));
    assert!(sim.conns[1].is_drained());
}
