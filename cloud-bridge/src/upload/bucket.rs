//! A token bucket: the upload's bandwidth cap. Time is a parameter.

use std::time::{Duration, Instant};

/// Bytes per second with a burst allowance. `rate == 0` means no cap.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// `rate` bytes/s, holding at most `burst` bytes of credit (starts full).
    pub fn new(rate: u64, burst: u64) -> TokenBucket {
        TokenBucket { rate, burst: burst.max(1), tokens: burst.max(1) as f64, last: None }
    }

    /// A bucket for a cap in kbit/s (0 = none), with a burst of 64 KiB or 50 ms of
    /// the rate, whichever is larger: small enough that a live meeting never sees
    /// more than a few packets' worth of upload at line rate.
    pub fn from_kbit(kbit_per_s: u64) -> TokenBucket {
        let rate = kbit_per_s * 1000 / 8;
        TokenBucket::new(rate, (rate / 20).max(64 * 1024))
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The largest single take that can ever succeed.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst as f64);
        }
        self.last = Some(now);
    }

    /// Take `n` bytes (at most [`burst`](Self::burst)) at `now`: `Ok(())` if
    /// sent now, else `Err(wait)` — call again after `wait`.
    pub fn take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let n = n.min(self.burst) as f64;
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            let missing = n - self.tokens;
            Err(Duration::from_secs_f64(missing / self.rate as f64).max(Duration::from_micros(100)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cap_never_waits() {
        let mut b = TokenBucket::from_kbit(0);
        let t = Instant::now();
        for _ in 0..1000 {
            assert!(b.take(1 << 20, t).is_ok());
        }
    }

    #[test]
    fn a_capped_bucket_sends_at_its_rate_over_virtual_time() {
        // 8 Mbit/s = 1,000,000 B/s; send 10 MB in 64 KiB chunks on a virtual clock.
        let mut b = TokenBucket::from_kbit(8_000);
        let start = Instant::now();
        let mut now = start;
        let mut sent = 0u64;
        while sent < 10_000_000 {
            match b.take(65_536, now) {
                Ok(()) => sent += 65_536,
                Err(wait) => now += wait,
            }
        }
        let secs = (now - start).as_secs_f64();
        // the initial burst (64 KiB) is the only free credit
        assert!((9.9..10.1).contains(&secs), "10 MB at 1 MB/s took {secs} s of virtual time");
    }

    #[test]
    fn credit_never_exceeds_the_burst() {
        let mut b = TokenBucket::new(1000, 500);
        let t = Instant::now();
        assert!(b.take(500, t).is_ok());
        // an hour idle still only refills the burst
        let later = t + Duration::from_secs(3600);
        assert!(b.take(500, later).is_ok());
        assert!(b.take(500, later).is_err());
    }
}
