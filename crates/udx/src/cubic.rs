//! CUBIC congestion control (RFC 9438), in bytes.
//!
//! Why CUBIC rather than the BBR the C libudx runs: CUBIC's state is a window and two
//! numbers, reacts only to loss events this crate detects precisely (RACK + SACK), and is
//! exact to unit-test on a virtual clock; BBR's bandwidth model depends on delivery-rate
//! samples whose quality on a microsecond loopback RTT is what made other ports stall.
//! Pacing at 1.25× (2× in slow start) of cwnd/srtt keeps bursts off the receiver's socket
//! buffer, which is where loopback transfers lose packets. Wire compatibility does not
//! depend on the controller: a UDX peer sees only packets and ACKs.

use std::time::{Duration, Instant};

/// RFC 9438's C (window growth constant, in MSS/s^3).
const C: f64 = 0.4;
/// Multiplicative decrease factor.
const BETA: f64 = 0.7;
pub const INITIAL_WINDOW_PACKETS: u64 = 10;
const MIN_WINDOW_PACKETS: u64 = 2;
/// No window beyond this: a runaway value would only feed bursts.
const MAX_WINDOW: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct Cubic {
    mss: u64,
    cwnd: u64,
    ssthresh: u64,
    /// Window before the last reduction (bytes).
    w_max: f64,
    k: f64,
    /// The Reno-friendly estimate (bytes).
    w_est: f64,
    epoch: Option<Instant>,
}

impl Cubic {
    pub fn new(mss: usize) -> Self {
        let mss = mss as u64;
        Self { mss, cwnd: INITIAL_WINDOW_PACKETS * mss, ssthresh: u64::MAX, w_max: 0.0, k: 0.0, w_est: 0.0, epoch: None }
    }

    pub fn window(&self) -> u64 {
        self.cwnd
    }

    pub fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    pub fn set_mss(&mut self, mss: usize) {
        self.mss = mss as u64;
    }

    /// Bytes newly delivered by an ACK. `cwnd_limited`: the sender was using its window;
    /// an application-limited sender must not grow it (small RPCs would otherwise inflate
    /// the window that the next bulk transfer then dumps at once).
    pub fn on_ack(&mut self, now: Instant, acked: u64, srtt: Duration, cwnd_limited: bool) {
        if !cwnd_limited || acked == 0 {
            return;
        }
        if self.in_slow_start() {
            self.cwnd = (self.cwnd + acked).min(MAX_WINDOW);
            return;
        }
        let mss = self.mss as f64;
        let cwnd = self.cwnd as f64;
        let epoch = *self.epoch.get_or_insert_with(|| {
            self.k = if self.w_max > cwnd { ((self.w_max - cwnd) / mss / C).cbrt() } else { 0.0 };
            self.w_est = cwnd;
            now
        });
        let t = (now.saturating_duration_since(epoch) + srtt).as_secs_f64();
        // W_cubic(t + RTT) = C·(t − K)³ + W_max (RFC 9438 §4.2), growing at most 1.5× per RTT.
        let target = (C * (t - self.k).powi(3) * mss + self.w_max).clamp(cwnd, cwnd * 1.5);
        // Reno-friendly region: grow at least as fast as AIMD with the same beta would.
        let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
        self.w_est += alpha * mss * acked as f64 / cwnd;
        let target = target.max(self.w_est);
        let grow = (target - cwnd) * acked as f64 / cwnd;
        self.cwnd = ((cwnd + grow.max(0.0)) as u64).min(MAX_WINDOW);
    }

    /// A loss detected by RACK/SACK: once per recovery period.
    pub fn on_congestion_event(&mut self) {
        let cwnd = self.cwnd as f64;
        // Fast convergence: give up bandwidth to newer flows when below the last maximum.
        self.w_max = if cwnd < self.w_max { cwnd * (1.0 + BETA) / 2.0 } else { cwnd };
        self.cwnd = ((cwnd * BETA) as u64).max(MIN_WINDOW_PACKETS * self.mss);
        self.ssthresh = self.cwnd;
        self.epoch = None;
    }

    /// A retransmission timeout: the path may be gone; restart from a minimal window.
    pub fn on_rto(&mut self) {
        self.w_max = self.cwnd as f64;
        self.ssthresh = ((self.cwnd as f64 * BETA) as u64).max(MIN_WINDOW_PACKETS * self.mss);
        self.cwnd = MIN_WINDOW_PACKETS * self.mss;
        self.epoch = None;
    }

    /// Pacing rate in bytes/s for the window spread over `srtt`.
    pub fn pacing_rate(&self, srtt: Duration) -> u64 {
        let gain = if self.in_slow_start() { 2.0 } else { 1.25 };
        let secs = srtt.as_secs_f64().max(1e-6);
        (self.cwnd as f64 * gain / secs) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    #[test]
    fn slow_start_doubles_per_round_when_limited() {
        let now = Instant::now();
        let mut c = Cubic::new(MSS);
        c.on_ack(now, 10_000, Duration::from_millis(1), true);
        assert_eq!(c.window(), 20_000);
        c.on_ack(now, 10_000, Duration::from_millis(1), false);
        assert_eq!(c.window(), 20_000, "an app-limited sender does not grow");
    }

    #[test]
    fn loss_cuts_by_beta_and_growth_returns_to_w_max() {
        let t0 = Instant::now();
        let mut c = Cubic::new(MSS);
        c.on_ack(t0, 90_000, Duration::from_millis(10), true); // cwnd 100 packets
        c.on_congestion_event();
        assert_eq!(c.window(), 70_000);
        assert!(!c.in_slow_start());
        // K = cbrt(30 / 0.4) ≈ 4.2 s: after K the window is back near w_max.
        let mut now = t0;
        for _ in 0..5000 {
            now += Duration::from_millis(1);
            let w = c.window();
            c.on_ack(now, w / 10, Duration::from_millis(10), true);
        }
        assert!(c.window() >= 100_000, "window {}", c.window());
    }

    #[test]
    fn rto_collapses_window() {
        let mut c = Cubic::new(MSS);
        c.on_rto();
        assert_eq!(c.window(), 2 * MSS as u64);
        // Back in slow start below ssthresh: paced at twice the window per RTT.
        assert!(c.in_slow_start());
        assert_eq!(c.pacing_rate(Duration::from_millis(1)), 4_000_000);
    }
}
