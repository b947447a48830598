//! Round-trip estimation (RFC 6298) in microseconds: on loopback a round trip is tens of
//! microseconds, and in whole milliseconds it would read as zero.

use std::time::{Duration, Instant};

/// How long a minimum RTT sample stays valid (RACK's reordering window uses it).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Floor of the retransmission timeout. The C libudx uses 1 s, which is what makes its
/// transfers stall for a second now and then; tail-loss probes and RACK catch almost
/// every loss before the RTO, so 200 ms (Linux's floor) is safe.
pub const MIN_RTO: Duration = Duration::from_millis(200);
pub const MAX_RTO: Duration = Duration::from_secs(30);
const INITIAL_RTO: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Duration,
    min_rtt_at: Option<Instant>,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self { srtt: None, rttvar: Duration::ZERO, min_rtt: Duration::MAX, min_rtt_at: None }
    }
}

impl RttEstimator {
    pub fn sample(&mut self, now: Instant, rtt: Duration) {
        let rtt = rtt.min(MAX_RTO);
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = rtt.abs_diff(srtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let expired = self.min_rtt_at.is_none_or(|at| now.saturating_duration_since(at) > MIN_RTT_WINDOW);
        if rtt <= self.min_rtt || expired {
            self.min_rtt = rtt;
            self.min_rtt_at = Some(now);
        }
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt_at.map(|_| self.min_rtt)
    }

    /// The retransmission timeout before backoff.
    pub fn rto(&self) -> Duration {
        match self.srtt {
            None => INITIAL_RTO,
            Some(srtt) => (srtt + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsecond_samples_are_kept() {
        let now = Instant::now();
        let mut r = RttEstimator::default();
        r.sample(now, Duration::from_micros(40));
        r.sample(now, Duration::from_micros(60));
        assert_eq!(r.srtt(), Some(Duration::from_micros(42) + Duration::from_nanos(500)));
        assert_eq!(r.min_rtt(), Some(Duration::from_micros(40)));
        assert_eq!(r.rto(), MIN_RTO);
    }

    #[test]
    fn rto_follows_variance_and_is_capped() {
        let now = Instant::now();
        let mut r = RttEstimator::default();
        assert_eq!(r.rto(), Duration::from_secs(1));
        r.sample(now, Duration::from_millis(400));
        assert_eq!(r.rto(), Duration::from_millis(1200));
        r.sample(now, Duration::from_secs(3600));
        assert_eq!(r.rto(), MAX_RTO);
    }
}
