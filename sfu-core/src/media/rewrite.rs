//! The down-track's RTP rewriting: one outgoing stream per subscriber and
//! track whose sequence numbers and timestamps stay continuous while its
//! source changes (a simulcast layer switch, a publisher restart with a new
//! SSRC, the active-speaker stream following a new speaker).
//!
//! The forwarder decides *when* to switch (on a keyframe); this does the
//! arithmetic. Nothing here allocates.

use std::time::{Duration, Instant};

/// Identifies one incoming source stream (e.g. a publisher layer's SSRC plus a
/// generation counter, so a restarted publisher reusing an SSRC still counts
/// as new).
pub type SourceId = u64;

/// Outgoing numbering for one down-track.
#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    source: Option<SourceId>,
    /// out_seq = in_seq + seq_offset (wrapping, extended 64-bit numbers).
    seq_offset: u64,
    /// out_ts = in_ts + ts_offset (wrapping 32-bit).
    ts_offset: u32,
    /// First incoming sequence number of the current source: older packets
    /// (late retransmissions from before the switch) are dropped.
    first_in_seq: u64,
    last_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
    started: bool,
}

/// What a packet becomes on the wire to this subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended outgoing sequence number (str0m takes the extended form).
    pub seq: u64,
    pub timestamp: u32,
}

impl Rewriter {
    /// `initial_seq` and `initial_ts` are the first outgoing values (kept below
    /// 2^16 for the sequence number, as str0m asks for a fresh receiver).
    pub fn new(clock_rate: u32, initial_seq: u16, initial_ts: u32) -> Self {
        Rewriter {
            clock_rate: clock_rate.max(1),
            source: None,
            seq_offset: 0,
            ts_offset: 0,
            first_in_seq: 0,
            last_out_seq: u64::from(initial_seq).wrapping_sub(1),
            last_out_ts: initial_ts,
            last_out_at: None,
            started: false,
        }
    }

    /// The source currently forwarded, if any.
    pub fn source(&self) -> Option<SourceId> {
        self.source
    }

    /// Forget the current source: the next packet forwarded must come through
    /// [`Rewriter::switch_to`] (used after a pause or mute, and when the
    /// down-track's source track changes).
    pub fn detach(&mut self) {
        self.source = None;
    }

    /// Change the codec clock (a new source track with another codec).
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate.max(1);
    }

    /// Start forwarding `source` at this packet (a keyframe for video). The
    /// outgoing sequence continues at last+1; the timestamp advances by the
    /// wall-clock time since the last packet sent (at least one tick), so the
    /// receiver's jitter buffer sees time move forward, never back.
    pub fn switch_to(&mut self, source: SourceId, in_seq: u64, in_ts: u32, now: Instant) -> Rewritten {
        let out_seq = self.last_out_seq.wrapping_add(1);
        let out_ts = if self.started {
            let elapsed =
                self.last_out_at.map(|t| now.saturating_duration_since(t)).unwrap_or(Duration::ZERO);
            let ticks = (elapsed.as_micros() as u64 * u64::from(self.clock_rate) / 1_000_000).max(1);
            self.last_out_ts.wrapping_add(ticks as u32)
        } else {
            self.last_out_ts
        };
        self.source = Some(source);
        self.seq_offset = out_seq.wrapping_sub(in_seq);
        self.ts_offset = out_ts.wrapping_sub(in_ts);
        self.first_in_seq = in_seq;
        self.started = true;
        self.last_out_seq = out_seq;
        self.last_out_ts = out_ts;
        self.last_out_at = Some(now);
        Rewritten { seq: out_seq, timestamp: out_ts }
    }

    /// Rewrite a packet of the current source; `None` when it is from another
    /// source or from before the switch (the caller drops it).
    #[inline]
    pub fn rewrite(&mut self, source: SourceId, in_seq: u64, in_ts: u32, now: Instant) -> Option<Rewritten> {
        if self.source != Some(source) || in_seq < self.first_in_seq {
            return None;
        }
        let seq = in_seq.wrapping_add(self.seq_offset);
        let timestamp = in_ts.wrapping_add(self.ts_offset);
        if seq > self.last_out_seq || self.last_out_seq.wrapping_sub(seq) > (1 << 62) {
            self.last_out_seq = seq;
            self.last_out_ts = timestamp;
            self.last_out_at = Some(now);
        }
        Some(Rewritten { seq, timestamp })
    }
}

/// Extends 16-bit sequence numbers (local packets) to 64 bits, RFC 3550 style.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            // start high enough that a few reordered packets cannot underflow
            let v = (1u64 << 16) + u64::from(seq);
            self.last = Some(v);
            return v;
        };
        let roc = last >> 16;
        let candidates = [roc.wrapping_sub(1), roc, roc + 1];
        let mut best = (roc << 16) | u64::from(seq);
        let mut best_d = u64::MAX;
        for r in candidates {
            let v = (r << 16) | u64::from(seq);
            let d = v.abs_diff(last);
            if d < best_d {
                best = v;
                best_d = d;
            }
        }
        if best > last {
            self.last = Some(best);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_continues_sequence_and_advances_time() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 100, 5000);
        assert_eq!(r.switch_to(1, 7000, 111, t0), Rewritten { seq: 100, timestamp: 5000 });
        assert_eq!(r.rewrite(1, 7001, 111, t0).unwrap().seq, 101);
        let w = r.rewrite(1, 7002, 111 + 3000, t0).unwrap();
        assert_eq!(w, Rewritten { seq: 102, timestamp: 8000 });
        // packets of another source are not ours until switched
        assert!(r.rewrite(2, 40000, 9, t0).is_none());
        let t1 = t0 + Duration::from_millis(40);
        let w = r.switch_to(2, 40000, 9, t1);
        assert_eq!(w.seq, 103);
        assert_eq!(w.timestamp, 8000 + 3600, "40 ms at 90 kHz");
        assert_eq!(r.rewrite(2, 40001, 9, t1).unwrap().seq, 104);
        // a late retransmission from before the switch is dropped
        assert!(r.rewrite(2, 39999, 9, t1).is_none());
        assert!(r.rewrite(1, 7003, 111, t1).is_none());
    }

    #[test]
    fn reordered_packets_keep_their_slot() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000, 10, 0);
        r.switch_to(9, 100, 0, t0);
        assert_eq!(r.rewrite(9, 102, 1920, t0).unwrap().seq, 12);
        assert_eq!(r.rewrite(9, 101, 960, t0).unwrap().seq, 11);
        assert_eq!(r.rewrite(9, 103, 2880, t0).unwrap().seq, 13);
        let w = r.switch_to(10, 5, 0, t0);
        assert_eq!(w.seq, 14);
        assert_eq!(w.timestamp, 2881, "at least one tick forward");
    }

    #[test]
    fn sequence_extension_handles_wrap_and_reorder() {
        let mut e = SeqExtender::default();
        let a = e.extend(65534);
        let b = e.extend(65535);
        let c = e.extend(0);
        let d = e.extend(65533);
        assert_eq!(b, a + 1);
        assert_eq!(c, a + 2);
        assert_eq!(d, a - 1);
    }
}
