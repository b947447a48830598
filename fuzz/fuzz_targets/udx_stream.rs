//! One UDX stream's state machine (crates/udx `conn::Conn`) fed an arbitrary sequence of
//! packets, timeouts, reads and writes on a virtual clock: no panic, and its memory stays
//! within the bounds it promises whatever the peer sends.
#![no_main]

use std::time::{Duration, Instant};

use fuzz_support::{within_budget, Budget};
use libfuzzer_sys::fuzz_target;
use udx::conn::{Config, Conn};
use udx::packet::{Header, Packet, HEADER_SIZE};

// The stream's own bounds, not the input, size what it keeps: a 64 KiB receive window
// (below), 4096 out-of-order slots, a 64 KiB send buffer, plus buffer growth.
const WINDOW: u32 = 64 * 1024;
const BUDGET: Budget = Budget::new(2 << 20, 4);

fuzz_target!(|data: &[u8]| {
    within_budget(data.len(), BUDGET, || run(data));
});

fn run(data: &[u8]) {
    let cfg = Config { recv_window: WINDOW, send_buffer: 64 * 1024, cork: data.first().is_some_and(|b| b & 1 == 1), ..Config::default() };
    let start = Instant::now();
    let mut now = start;
    let mut conn = Conn::new(now, 7, cfg);
    let mut out = [0u8; 2048];
    let mut read = [0u8; 4096];
    let mut rest = data.get(1..).unwrap_or(&[]);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 6 {
            // A datagram: a header from the next 16 bytes, then a length byte of payload
            // (SACK blocks, padding or data as the flags say).
            0 | 1 => {
                let Some((fields, tail)) = take(rest, 17) else { break };
                let r = |i: usize| u32::from_le_bytes([fields[i], fields[i + 1], fields[i + 2], fields[i + 3]]);
                let header = Header { flags: fields[0], data_offset: fields[1], stream_id: 1, recv_window: r(2), seq: r(6) % 64, ack: r(10) % 64, };
                let len = fields[16] as usize;
                let Some((payload, tail)) = take(tail, len) else { break };
                rest = tail;
                let mut datagram = header.to_bytes().to_vec();
                datagram.extend_from_slice(payload);
                if let Some(pkt) = Packet::parse(&datagram) {
                    conn.handle_packet(now, &pkt);
                }
            }
            2 => {
                let n = rest.first().map_or(0, |&b| b as usize * 64);
                conn.write(&vec![0xAB; n]);
            }
            3 => {
                let _ = conn.read(&mut read);
            }
            4 => {
                let step = rest.first().map_or(1, |&b| u64::from(b));
                now += Duration::from_micros(step * step * 16);
                conn.handle_timeout(now);
            }
            _ => {
                if rest.first().is_some_and(|&b| b == 0xEE) {
                    conn.destroy();
                } else {
                    conn.end();
                }
            }
        }
        // Everything it wants to send is well-formed and addressed to its peer.
        for _ in 0..64 {
            let Some(n) = conn.poll_transmit(now, &mut out) else { break };
            assert!(n >= HEADER_SIZE && n <= 1500);
            let sent = Packet::parse(&out[..n]).expect("a UDX packet");
            assert_eq!(sent.header.stream_id, 7);
        }
        assert!(conn.readable_bytes() <= WINDOW as usize + 1500);
        assert!(conn.buffered_bytes() <= 64 * 1024);
        if let Some(at) = conn.poll_timeout() {
            assert!(at >= start);
        }
    }
}

fn take(data: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (data.len() >= n).then(|| data.split_at(n))
}
