//! In-process participants: the appliance's own camera and microphone, the
//! recorder, and the cloud cascade enter a room without a WebRTC hop.
//!
//! A local participant publishes tracks whose RTP packets the application
//! produces (already packetized: the app owns the encoder and packetizer) and
//! may subscribe to other participants' tracks, receiving their RTP packets as
//! [`LocalEvent::Rtp`]. To the rest of the room it looks like any participant.
//!
//! Packets cross threads through a bounded channel: [`LocalParticipant::send`]
//! never blocks the capture thread; when the engine is behind, the packet is
//! dropped and counted (a video encoder then gets a keyframe request).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::{ServerMessage, TrackKind, TrackSource};

/// Codec of a locally produced track.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalCodec {
    /// Opus, 48 kHz, 2 channels in SDP (mono content is fine).
    Opus,
    /// H.264, packetization-mode 1, with this `profile-level-id` (e.g. `"42e01f"`,
    /// constrained baseline 3.1).
    H264 { profile_level_id: String },
    /// VP8.
    Vp8,
}

/// One track a local participant publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTrackSpec {
    /// Short name, unique per participant (`"camera"`, `"mic"`).
    pub name: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub codec: LocalCodec,
    /// Simulcast layers by rid, lowest first; empty for a single layer.
    pub layers: Vec<String>,
}

/// Which remote tracks a local participant receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalSubscription {
    /// Nothing (a pure publisher such as the room camera).
    #[default]
    None,
    /// Every audio track in the room except its own (the room's speakers).
    AllAudio,
    /// Every track in the room except its own (a recorder, the cascade uplink).
    All,
}

/// How a local participant joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalJoin {
    pub room: String,
    pub identity: String,
    pub name: Option<String>,
    pub publish: Vec<LocalTrackSpec>,
    pub subscribe: LocalSubscription,
}

/// One RTP packet produced locally, as payload plus the header fields the app
/// controls. The engine assigns SSRCs and rewrites numbering per subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPacket {
    /// Index into [`LocalJoin::publish`].
    pub track: usize,
    /// Simulcast layer index into [`LocalTrackSpec::layers`] (0 when single layer).
    pub layer: usize,
    /// The app's own RTP sequence number for this track/layer.
    pub seq: u16,
    /// RTP timestamp (90 kHz video, 48 kHz Opus).
    pub timestamp: u32,
    /// RTP marker bit (last packet of a video frame).
    pub marker: bool,
    /// True on every packet of a keyframe (the app knows; the engine trusts it).
    pub keyframe: bool,
    /// RFC 6464 audio level in -dBov (0 loudest, 127 silence), audio only.
    pub audio_level: Option<u8>,
    /// When the media was captured (for sender reports and latency).
    pub capture_time: Instant,
    pub payload: Bytes,
}

/// Media received by a local subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPacket {
    /// Room-unique track id (see [`crate::protocol::TrackInfo::id`]).
    /// Shared, not copied, per packet.
    pub track: Arc<str>,
    /// Identity of the publisher.
    pub from: Arc<str>,
    pub kind: TrackKind,
    /// Codec name as in SDP (`"opus"`, `"H264"`, `"VP8"`).
    pub codec: Arc<str>,
    /// Sequence number, continuous per track across layer switches.
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub audio_level: Option<u8>,
    pub payload: Bytes,
}

/// What the engine tells a local participant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LocalEvent {
    /// A subscriber needs a keyframe on this track (throttled by the engine).
    KeyframeRequest { track: usize },
    /// The bitrate the room can take for this track/layer right now.
    TargetBitrate { track: usize, layer: usize, bps: u64 },
    /// Media from a subscribed track.
    Rtp(ReceivedPacket),
    /// Room signaling, the same messages a WebSocket client gets
    /// (joins, leaves, tracks, active speaker, mute-by-admin, closing).
    Signal(ServerMessage),
}
