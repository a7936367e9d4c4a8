//! When each peer's `Rtc` wants its next timeout, as a min-heap, so the
//! engine finds the next deadline and the peers that are due without
//! looking at every peer on every loop turn (O(P) per turn, N² for rooms of
//! WHEP pairs).
//!
//! Lazy deletion: a peer's deadline moves by pushing a new entry; an entry
//! counts only while it matches the peer's current deadline (the caller says
//! which ones do), stale ones are dropped when they reach the top. The heap
//! is rebuilt from the live deadlines when stale entries outnumber them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::ParticipantId;

#[derive(Default)]
pub(super) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
}

impl Deadlines {
    /// `id`'s `Rtc` wants a timeout at `at` (its previous entry, if any, goes stale).
    #[inline]
    pub(super) fn schedule(&mut self, id: ParticipantId, at: Instant) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest live deadline. `live(id, at)`: is `at` still `id`'s deadline?
    pub(super) fn next(&mut self, live: impl Fn(ParticipantId, Instant) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if live(id, at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Take every live deadline at or before `now` into `due` (each peer once).
    pub(super) fn pop_due(
        &mut self,
        now: Instant,
        live: impl Fn(ParticipantId, Instant) -> bool,
        due: &mut Vec<ParticipantId>,
    ) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if live(id, at) && !due.contains(&id) {
                due.push(id);
            }
        }
    }

    /// Entries held, stale ones included.
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Start again from the live deadlines only.
    pub(super) fn rebuild(&mut self, live: impl Iterator<Item = (ParticipantId, Instant)>) {
        self.heap.clear();
        self.heap.extend(live.map(|(id, at)| Reverse((at, id))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn next_and_due_follow_moved_deadlines_and_skip_stale_ones() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut current: HashMap<ParticipantId, Instant> = HashMap::new();
        let mut d = Deadlines::default();
        for (id, at) in [(1, ms(30)), (2, ms(10)), (3, ms(20))] {
            current.insert(id, at);
            d.schedule(id, at);
        }
        // 2 moves later, 3 moves earlier
        current.insert(2, ms(50));
        d.schedule(2, ms(50));
        current.insert(3, ms(5));
        d.schedule(3, ms(5));
        let live = |c: &HashMap<ParticipantId, Instant>| {
            let c = c.clone();
            move |id, at| c.get(&id) == Some(&at)
        };
        assert_eq!(d.next(live(&current)), Some(ms(5)));
        let mut due = Vec::new();
        d.pop_due(ms(30), live(&current), &mut due);
        assert_eq!(due, vec![3, 1], "2's stale 10 ms entry is not due");
        // 1 and 3 were handled: their Rtcs want 100 and 40 ms now
        current.insert(1, ms(100));
        d.schedule(1, ms(100));
        current.insert(3, ms(40));
        d.schedule(3, ms(40));
        assert_eq!(d.next(live(&current)), Some(ms(40)));
        current.remove(&3); // gone
        assert_eq!(d.next(live(&current)), Some(ms(50)));
        d.rebuild(current.iter().map(|(k, v)| (*k, *v)));
        assert_eq!(d.len(), 2);
        due.clear();
        d.pop_due(ms(1000), live(&current), &mut due);
        due.sort();
        assert_eq!(due, vec![1, 2]);
        assert_eq!(d.next(live(&current)), None);
    }
}
