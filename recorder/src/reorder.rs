//! A bounded reorder buffer keyed by RTP sequence number.

use std::collections::VecDeque;

/// How far a sequence number may jump before the stream counts as restarted
/// (a new SSRC, a publisher that came back) rather than reordered.
const RESTART_DISTANCE: i64 = 3000;

/// What came out of the buffer, in sequence order.
#[derive(Debug, PartialEq, Eq)]
pub struct Released<T> {
    pub item: T,
    /// Packets were missing right before this one (lost, or given up on).
    pub gap: bool,
}

/// Holds up to `capacity` packets and releases them in sequence order; when
/// full it gives up on the missing ones and releases with `gap = true`.
/// Duplicates and packets older than what was released are dropped.
pub struct Reorder<T> {
    slots: VecDeque<Option<T>>,
    /// Extended sequence number of `slots[0]`.
    head: i64,
    last_seq: Option<(u16, i64)>,
    capacity: usize,
    gap: bool,
    dropped: u64,
}

impl<T> Reorder<T> {
    pub fn new(capacity: usize) -> Reorder<T> {
        Reorder {
            slots: VecDeque::with_capacity(capacity),
            head: 0,
            last_seq: None,
            capacity: capacity.max(1),
            gap: false,
            dropped: 0,
        }
    }

    /// Packets dropped as duplicates or too late.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn extend(&mut self, seq: u16) -> i64 {
        match self.last_seq {
            None => seq as i64,
            Some((last, ext)) => ext + seq.wrapping_sub(last) as i16 as i64,
        }
    }

    /// Insert one packet; everything that became releasable goes to `out`.
    pub fn push(&mut self, seq: u16, item: T, out: &mut impl FnMut(Released<T>)) {
        let ext = self.extend(seq);
        if self.last_seq.is_none() || (ext - self.head).abs() > RESTART_DISTANCE {
            if self.last_seq.is_some() {
                // a restarted stream: hand out what we hold, start over
                self.drain(out);
                self.gap = true;
            }
            self.slots.clear();
            self.head = ext;
        }
        if ext >= self.head {
            self.last_seq = Some((seq, ext));
        }
        if ext < self.head {
            self.dropped += 1;
            return;
        }
        let idx = (ext - self.head) as usize;
        if idx >= self.slots.len() {
            self.slots.resize_with(idx + 1, || None);
        }
        if self.slots[idx].is_some() {
            self.dropped += 1;
            return;
        }
        self.slots[idx] = Some(item);
        self.release_ready(out);
        while self.slots.len() > self.capacity {
            self.skip_one(out);
            self.release_ready(out);
        }
    }

    fn release_ready(&mut self, out: &mut impl FnMut(Released<T>)) {
        while let Some(Some(_)) = self.slots.front() {
            let Some(Some(item)) = self.slots.pop_front() else { break };
            self.head += 1;
            out(Released { item, gap: std::mem::take(&mut self.gap) });
        }
    }

    fn skip_one(&mut self, out: &mut impl FnMut(Released<T>)) {
        match self.slots.pop_front() {
            Some(Some(item)) => out(Released { item, gap: std::mem::take(&mut self.gap) }),
            Some(None) => self.gap = true,
            None => {}
        }
        self.head += 1;
        self.release_ready(out);
    }

    /// Release everything held (end of recording), gaps and all.
    pub fn drain(&mut self, out: &mut impl FnMut(Released<T>)) {
        while !self.slots.is_empty() {
            self.skip_one(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cap: usize, seqs: &[u16]) -> Vec<(u16, bool)> {
        let mut r = Reorder::new(cap);
        let mut got = Vec::new();
        for &s in seqs {
            r.push(s, s, &mut |x| got.push((x.item, x.gap)));
        }
        r.drain(&mut |x| got.push((x.item, x.gap)));
        got
    }

    #[test]
    fn in_order_packets_pass_straight_through() {
        assert_eq!(run(4, &[1, 2, 3]), vec![(1, false), (2, false), (3, false)]);
    }

    #[test]
    fn swapped_packets_come_out_in_order() {
        assert_eq!(run(4, &[1, 3, 2, 4]), vec![(1, false), (2, false), (3, false), (4, false)]);
    }

    #[test]
    fn a_lost_packet_is_given_up_when_the_buffer_fills_and_flagged() {
        assert_eq!(run(2, &[1, 3, 4, 5]), vec![(1, false), (3, true), (4, false), (5, false)]);
    }

    #[test]
    fn sequence_wrap_is_continuous() {
        assert_eq!(
            run(4, &[65534, 0, 65535, 1]),
            vec![(65534, false), (65535, false), (0, false), (1, false)]
        );
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        assert_eq!(run(4, &[1, 2, 2, 1, 3]), vec![(1, false), (2, false), (3, false)]);
    }

    #[test]
    fn a_restarted_stream_starts_over_with_a_gap() {
        assert_eq!(
            run(4, &[10, 11, 40000, 40001]),
            vec![(10, false), (11, false), (40000, true), (40001, false)]
        );
    }
}
