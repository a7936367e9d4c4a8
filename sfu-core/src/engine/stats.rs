//! str0m's periodic statistics (every [`super::STATS_INTERVAL`] per peer,
//! see `RtcConfig::set_stats_interval`) turned into the downlink view the
//! layer choice uses (raw estimate and loss, see
//! [`crate::media::forwarder::LinkEstimate`]), the per-room metrics (NACKs,
//! packets lost, round-trip time) and the room protocol's
//! `connection_quality` message. Nothing here runs per packet.

use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use super::*;

/// At most one `connection_quality` per client this often (a score that
/// drops to 0 on an ICE disconnect is sent at once).
pub const QUALITY_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// Per-peer memory of str0m's cumulative counters, to turn them into deltas.
#[derive(Default)]
pub(super) struct StatsState {
    /// (mid, rid) -> NACKs received so far on that outgoing stream.
    nacks: SmallVec<[(Mid, Option<Rid>, u64); 4]>,
    /// (mid, rid) -> packets received so far on that incoming stream, and the
    /// fraction of a lost packet carried to the next estimate.
    rx: SmallVec<[(Mid, Option<Rid>, u64, f64); 4]>,
    /// The last `connection_quality` sent and when.
    quality_sent: Option<(Quality, Instant)>,
}

/// What `connection_quality` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quality {
    pub score: u8,
    pub bitrate_bps: u64,
    pub loss_permille: u16,
}

/// The score shown as a badge: 0 lost, 1 poor, 2 fair, 3 good (the web
/// client's own thresholds, so both sides agree on what "good" means).
pub fn quality_score(connected: bool, rtt: Option<Duration>, loss: f32, bandwidth_limited: bool) -> u8 {
    if !connected {
        return 0;
    }
    let rtt_ms = rtt.map(|r| r.as_millis()).unwrap_or(0);
    if rtt_ms < 150 && loss < 0.02 && !bandwidth_limited {
        3
    } else if rtt_ms < 400 && loss < 0.08 {
        2
    } else {
        1
    }
}

impl Quality {
    /// Worth telling the client again: the score moved, or the numbers behind it did markedly.
    fn differs(&self, o: &Quality) -> bool {
        self.score != o.score
            || self.loss_permille.abs_diff(o.loss_permille) >= 20
            || self.bitrate_bps.abs_diff(o.bitrate_bps) > o.bitrate_bps / 4
    }
}

impl Engine {
    pub(super) fn on_egress_stats(&mut self, id: ParticipantId, s: MediaEgressStats) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        let prev = match p.stats.nacks.iter_mut().find(|e| e.0 == s.mid && e.1 == s.rid) {
            Some(e) => std::mem::replace(&mut e.2, s.nacks),
            None => {
                if p.stats.nacks.len() >= 64 {
                    p.stats.nacks.remove(0);
                }
                p.stats.nacks.push((s.mid, s.rid, s.nacks));
                0
            }
        };
        let delta = s.nacks.saturating_sub(prev);
        if let Some(m) = self.rooms.get(&p.room).and_then(|r| r.metrics.as_ref()) {
            if delta > 0 {
                m.nacks.inc_by(delta);
            }
            if let Some(rtt) = s.rtt {
                m.rtt_seconds.set(rtt.as_secs_f64());
            }
        }
    }

    pub(super) fn on_ingress_stats(&mut self, id: ParticipantId, s: MediaIngressStats) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        let (prev, carry) = match p.stats.rx.iter_mut().find(|e| e.0 == s.mid && e.1 == s.rid) {
            Some(e) => (std::mem::replace(&mut e.2, s.packets), &mut e.3),
            None => {
                if p.stats.rx.len() >= 64 {
                    p.stats.rx.remove(0);
                }
                p.stats.rx.push((s.mid, s.rid, s.packets, 0.0));
                let e = p.stats.rx.last_mut().expect("just pushed");
                (0, &mut e.3)
            }
        };
        // received = sent * (1 - loss)  =>  lost = received * loss / (1 - loss)
        let received = s.packets.saturating_sub(prev) as f64;
        let loss = f64::from(s.loss.unwrap_or(0.0)).clamp(0.0, 0.5);
        let lost = received * loss / (1.0 - loss) + *carry;
        let whole = lost.floor();
        *carry = lost - whole;
        if let Some(m) = self.rooms.get(&p.room).and_then(|r| r.metrics.as_ref()) {
            if whole >= 1.0 {
                m.lost.inc_by(whole as u64);
            }
            if let Some(rtt) = s.rtt {
                m.rtt_seconds.set(rtt.as_secs_f64());
            }
        }
    }

    /// Every statistics interval per peer: the downlink view (and at once a
    /// new layer choice), then the room-protocol client's connection
    /// quality, sent when it changed and at most every [`QUALITY_MIN_INTERVAL`].
    pub(super) fn on_peer_stats(&mut self, now: Instant, id: ParticipantId, s: PeerStats) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        p.link.on_stats(now, s.bwe_tx.map(|b| b.as_u64()), s.egress_loss_fraction);
        // a fresh view of the downlink: choose layers now, not at the next tick
        if p.downtracks.iter().any(|d| d.kind == TrackKind::Video && d.source.is_some()) {
            self.allocate_one(now, id);
        }
        let Some(p) = self.participants.get_mut(&id) else { return };
        if !p.is_room_client() {
            return;
        }
        let receives_video =
            p.downtracks.iter().any(|d| d.kind == TrackKind::Video && d.ready && d.source.is_some());
        let loss =
            s.egress_loss_fraction.unwrap_or(0.0).max(s.ingress_loss_fraction.unwrap_or(0.0)).clamp(0.0, 1.0);
        // Bandwidth-limited: the downlink estimate is well below what its subscriptions want.
        let limited = receives_video
            && p.last_desired_bps > 0
            && p.link.smoothed().saturating_mul(10) < p.last_desired_bps * 8;
        let connected = p.connected && p.disconnected_at.is_none();
        let q = Quality {
            score: quality_score(connected, s.rtt, loss, limited),
            // towards the client when it receives video; else what it sends us
            bitrate_bps: if receives_video { p.link.smoothed() } else { p.publish_bytes.bps() },
            loss_permille: (loss * 1000.0).round() as u16,
        };
        let due = match &p.stats.quality_sent {
            None => true,
            Some((last, at)) => q.differs(last) && now.saturating_duration_since(*at) >= QUALITY_MIN_INTERVAL,
        };
        if due {
            self.send_quality(now, id, q);
        }
    }

    /// ICE lost the peer: tell a room-protocol client at once (score 0).
    pub(super) fn quality_lost(&mut self, now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else { return };
        if !p.is_room_client() || p.stats.quality_sent.is_some_and(|(q, _)| q.score == 0) {
            return;
        }
        let q = Quality { score: 0, bitrate_bps: 0, loss_permille: 1000 };
        self.send_quality(now, id, q);
    }

    fn send_quality(&mut self, now: Instant, id: ParticipantId, q: Quality) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        p.stats.quality_sent = Some((q, now));
        self.out.push_back(Output::Signal(
            id,
            ServerMessage::ConnectionQuality {
                score: q.score,
                bitrate_bps: q.bitrate_bps,
                loss_permille: q.loss_permille,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_web_clients_thresholds() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(quality_score(false, ms(10), 0.0, false), 0);
        assert_eq!(quality_score(true, ms(10), 0.0, false), 3);
        assert_eq!(quality_score(true, None, 0.01, false), 3);
        assert_eq!(quality_score(true, ms(10), 0.0, true), 2, "bandwidth-limited is at most fair");
        assert_eq!(quality_score(true, ms(200), 0.0, false), 2);
        assert_eq!(quality_score(true, ms(10), 0.05, false), 2);
        assert_eq!(quality_score(true, ms(500), 0.0, false), 1);
        assert_eq!(quality_score(true, ms(10), 0.2, false), 1);
    }

    #[test]
    fn small_changes_are_not_resent() {
        let q = Quality { score: 3, bitrate_bps: 1_000_000, loss_permille: 5 };
        assert!(!q.differs(&Quality { bitrate_bps: 1_100_000, loss_permille: 10, ..q }));
        assert!(q.differs(&Quality { score: 2, ..q }));
        assert!(q.differs(&Quality { loss_permille: 40, ..q }));
        assert!(q.differs(&Quality { bitrate_bps: 500_000, ..q }));
    }
}
