//! A token bucket that spreads a congestion window over the round trip.
//!
//! Credit is kept in byte-nanoseconds, so no sub-millisecond remainder is ever thrown
//! away (pacing in whole milliseconds caps a stream at about one packet per ms). The
//! bucket holds one millisecond of the pacing rate (as the C libudx's), at least
//! `MIN_BURST_PACKETS` packets: timers fire in 1 ms ticks, so a smaller bucket would
//! leave the link idle between ticks.

use std::time::{Duration, Instant};

const NANOS: i128 = 1_000_000_000;
const MIN_BURST_PACKETS: u64 = 4;

#[derive(Debug, Clone)]
pub struct Pacer {
    /// Bytes per second; 0 = not pacing (no RTT sample yet).
    rate: u64,
    /// Available credit in byte·ns (bytes × 1e9); may go negative by one packet.
    credit: i128,
    capacity: i128,
    last: Instant,
}

impl Pacer {
    pub fn new(now: Instant) -> Self {
        Self { rate: 0, credit: 0, capacity: 0, last: now }
    }

    /// Sets the rate from the window and smoothed RTT, keeping accrued credit.
    pub fn set_rate(&mut self, now: Instant, bytes_per_sec: u64, mss: usize) {
        self.refill(now);
        self.rate = bytes_per_sec;
        let burst = (bytes_per_sec / 1000).max(MIN_BURST_PACKETS * mss as u64);
        self.capacity = burst as i128 * NANOS;
        if self.credit > self.capacity {
            self.credit = self.capacity;
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        if self.rate == 0 {
            return;
        }
        let gained = elapsed.as_nanos() as i128 * self.rate as i128;
        self.credit = (self.credit + gained).min(self.capacity);
    }

    /// Takes credit for `bytes` if the bucket is not in debt.
    pub fn try_send(&mut self, now: Instant, bytes: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        if self.credit < 0 {
            return false;
        }
        self.credit -= bytes as i128 * NANOS;
        true
    }

    /// When the bucket is out of debt again, if it is in debt now.
    pub fn next_send_time(&self) -> Option<Instant> {
        if self.rate == 0 || self.credit >= 0 {
            return None;
        }
        let wait_ns = (-self.credit + self.rate as i128 - 1) / self.rate as i128;
        Some(self.last + Duration::from_nanos(wait_ns as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sub_millisecond_credit() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        // 10 MB/s, 1000-byte packets: one packet per 100 us.
        p.set_rate(t0, 10_000_000, 1000);
        let mut sent = 0;
        let mut now = t0;
        for _ in 0..10_000 {
            now += Duration::from_micros(10);
            while p.try_send(now, 1000) {
                sent += 1;
            }
        }
        // 100 ms at 10 MB/s = 1000 packets (+ one packet of allowed debt).
        assert!((1000..=1001).contains(&sent), "sent {sent}");
    }

    #[test]
    fn burst_is_bounded_and_next_time_is_exact() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        p.set_rate(t0, 100_000_000, 1000); // 100 MB/s: 100 KB bucket
        let later = t0 + Duration::from_secs(10);
        let mut burst = 0;
        while p.try_send(later, 1000) {
            burst += 1;
        }
        assert_eq!(burst, 101);
        let next = p.next_send_time().unwrap();
        assert_eq!(next - later, Duration::from_micros(10));
        assert!(p.try_send(next, 1000));
    }

    #[test]
    fn no_rate_no_pacing() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        assert!((0..1000).all(|_| p.try_send(t0, 1500)));
        assert_eq!(p.next_send_time(), None);
    }
}
