//! Prometheus metrics. Per-room counters keep their label handles
//! ([`RoomMetrics`]) so the hot path never looks labels up; packet counts are
//! summed in plain integers and flushed on the engine's tick.

use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The SFU's metric families.
#[derive(Clone)]
pub struct Metrics {
    forwarded_packets: IntCounterVec,
    forwarded_bytes: IntCounterVec,
    nacks: IntCounterVec,
    plis: IntCounterVec,
    lost: IntCounterVec,
    rtt: GaugeVec,
    pub rooms: IntGauge,
    pub participants: IntGauge,
    pub dropped: IntCounterVec,
    /// `dropped{reason="garbage"}` and `dropped{reason="unknown_peer"}`,
    /// resolved once: a flood of junk datagrams must not hash a label per packet.
    pub dropped_garbage: IntCounter,
    pub dropped_unknown_peer: IntCounter,
    /// `dropped{reason="unknown_ufrag"}`: STUN from an unknown address whose
    /// username names no ICE session of ours (a scan or a flood).
    pub dropped_unknown_ufrag: IntCounter,
    /// `dropped{reason="signaling_backlog"}`: room-protocol clients dropped
    /// because they did not read their WebSocket (queue full or send timed out).
    pub dropped_signaling_backlog: IntCounter,
    /// `dropped{reason="send_queue_full"}`: not queued towards a subscriber
    /// whose send queue was at its bound.
    pub dropped_send_queue_full: IntCounter,
}

/// Cached handles for one room.
#[derive(Clone)]
pub struct RoomMetrics {
    pub forwarded_packets: IntCounter,
    pub forwarded_bytes: IntCounter,
    pub nacks: IntCounter,
    pub plis: IntCounter,
    pub lost: IntCounter,
    pub rtt_seconds: Gauge,
}

impl Metrics {
    /// Register every family into `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let room = &["room"];
        let dropped = IntCounterVec::new(
            Opts::new("sfu_dropped_total", "input dropped, by reason (garbage, unknown peer, ...)"),
            &["reason"],
        )?;
        let m = Metrics {
            forwarded_packets: IntCounterVec::new(
                Opts::new("sfu_forwarded_packets_total", "RTP packets forwarded to subscribers"),
                room,
            )?,
            forwarded_bytes: IntCounterVec::new(
                Opts::new("sfu_forwarded_bytes_total", "RTP payload bytes forwarded to subscribers"),
                room,
            )?,
            nacks: IntCounterVec::new(
                Opts::new("sfu_nacks_total", "NACK requests (RTCP) received from subscribers"),
                room,
            )?,
            plis: IntCounterVec::new(
                Opts::new("sfu_plis_total", "keyframe requests sent to publishers"),
                room,
            )?,
            lost: IntCounterVec::new(
                Opts::new(
                    "sfu_packets_lost_total",
                    "packets from publishers lost and not recovered in time (receiver-report fraction lost x packets received)",
                ),
                room,
            )?,
            rtt: GaugeVec::new(Opts::new("sfu_rtt_seconds", "latest round-trip time to a peer"), room)?,
            rooms: IntGauge::new("sfu_rooms", "open rooms")?,
            participants: IntGauge::new("sfu_participants", "participants in all rooms")?,
            dropped_garbage: dropped.with_label_values(&["garbage"]),
            dropped_unknown_peer: dropped.with_label_values(&["unknown_peer"]),
            dropped_unknown_ufrag: dropped.with_label_values(&["unknown_ufrag"]),
            dropped_signaling_backlog: dropped.with_label_values(&["signaling_backlog"]),
            dropped_send_queue_full: dropped.with_label_values(&["send_queue_full"]),
            dropped,
        };
        // Reasons counted by name elsewhere read 0 from the start (a dashboard's `rate()` needs the series).
        for reason in ["too_many_tracks", "chat_too_large", "chat_garbage"] {
            m.dropped.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.forwarded_packets.clone()))?;
        registry.register(Box::new(m.forwarded_bytes.clone()))?;
        registry.register(Box::new(m.nacks.clone()))?;
        registry.register(Box::new(m.plis.clone()))?;
        registry.register(Box::new(m.lost.clone()))?;
        registry.register(Box::new(m.rtt.clone()))?;
        registry.register(Box::new(m.rooms.clone()))?;
        registry.register(Box::new(m.participants.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        Ok(m)
    }

    /// Handles for one room (created when the room opens).
    pub fn room(&self, room: &str) -> RoomMetrics {
        RoomMetrics {
            forwarded_packets: self.forwarded_packets.with_label_values(&[room]),
            forwarded_bytes: self.forwarded_bytes.with_label_values(&[room]),
            nacks: self.nacks.with_label_values(&[room]),
            plis: self.plis.with_label_values(&[room]),
            lost: self.lost.with_label_values(&[room]),
            rtt_seconds: self.rtt.with_label_values(&[room]),
        }
    }

    /// Drop a closed room's series.
    pub fn remove_room(&self, room: &str) {
        let _ = self.forwarded_packets.remove_label_values(&[room]);
        let _ = self.forwarded_bytes.remove_label_values(&[room]);
        let _ = self.nacks.remove_label_values(&[room]);
        let _ = self.plis.remove_label_values(&[room]);
        let _ = self.lost.remove_label_values(&[room]);
        let _ = self.rtt.remove_label_values(&[room]);
    }
}
