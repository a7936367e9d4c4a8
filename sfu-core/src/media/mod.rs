//! The media plane, split the LiveKit way: the [`forwarder`] decides (which
//! layer, when to switch, when to ask for a keyframe), the down-track's
//! [`rewrite`]r does (SSRC, sequence and timestamp continuity; [`vp8`] keeps
//! the VP8 PictureID/TL0PICIDX numbering continuous too). [`keyframe`] parses
//! payloads, [`speaker`] finds who talks.

pub mod forwarder;
pub mod keyframe;
pub mod rewrite;
pub mod speaker;
pub mod vp8;

use std::time::{Duration, Instant};

/// At most one event per `interval` (keyframe requests to a publisher).
#[derive(Debug, Clone, Copy, Default)]
pub struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    /// True (and armed) when the last allowed event is older than `interval`.
    pub fn allow(&mut self, now: Instant, interval: Duration) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// Bitrate of a stream: one-second windows, smoothed (each window weighs a
/// quarter), so a keyframe's burst does not read as a new rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    bps: u64,
    last_packet: Option<Instant>,
}

impl RateMeter {
    #[inline]
    pub fn add(&mut self, now: Instant, bytes: usize) {
        self.bytes += bytes as u64;
        self.last_packet = Some(now);
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
    }

    /// Close the window if it is at least a second old; returns the current rate.
    pub fn roll(&mut self, now: Instant) -> u64 {
        if let Some(start) = self.window_start {
            let age = now.saturating_duration_since(start);
            if age >= Duration::from_secs(1) {
                let window = self.bytes * 8 * 1000 / (age.as_millis() as u64).max(1);
                self.bps = if self.bps == 0 { window } else { (self.bps * 3 + window) / 4 };
                self.bytes = 0;
                self.window_start = Some(now);
            }
        }
        if self.last_packet.is_none_or(|t| now.saturating_duration_since(t) > Duration::from_millis(1500)) {
            self.bps = 0;
        }
        self.bps
    }

    pub fn bps(&self) -> u64 {
        self.bps
    }

    pub fn last_packet(&self) -> Option<Instant> {
        self.last_packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_allows_one_per_interval() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        let i = Duration::from_millis(500);
        assert!(t.allow(t0, i));
        assert!(!t.allow(t0 + Duration::from_millis(100), i));
        assert!(!t.allow(t0 + Duration::from_millis(499), i));
        assert!(t.allow(t0 + Duration::from_millis(500), i));
    }

    #[test]
    fn rate_meter_measures_and_decays() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..100 {
            m.add(t0 + Duration::from_millis(i * 10), 1250);
        }
        assert_eq!(m.roll(t0 + Duration::from_millis(1000)), 1_000_000);
        // a burst of twice the rate moves the reading by a quarter of the difference
        for i in 0..100 {
            m.add(t0 + Duration::from_millis(1000 + i * 10), 2500);
        }
        assert_eq!(m.roll(t0 + Duration::from_millis(2000)), 1_250_000);
        assert_eq!(m.roll(t0 + Duration::from_secs(5)), 0);
    }
}
