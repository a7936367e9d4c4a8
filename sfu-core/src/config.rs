//! Typed SFU configuration. Defaults suit an air-gapped room: no public STUN, no
//! mDNS, host candidates from the machine's own non-loopback interfaces.
//!
//! The `sfu` binary reads it from TOML (unknown keys rejected); the daemon embeds
//! it as its `[sfu]` table. Always call [`SfuConfig::validate`] before use.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::protocol::IceServer;

/// Everything the SFU needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SfuConfig {
    /// The one UDP port every peer uses (demultiplexed by ICE ufrag / address).
    pub udp_bind: SocketAddr,
    /// Passive ICE-TCP on one port; `None` disables it.
    pub tcp_bind: Option<SocketAddr>,
    /// IPs to advertise as host candidates. Empty: every non-loopback
    /// interface address of the machine.
    pub candidate_ips: Vec<IpAddr>,
    /// Public address(es) of a 1:1 NAT in front of the box, advertised instead
    /// of (not in addition to) the interface addresses.
    pub announce_ips: Vec<IpAddr>,
    /// Also advertise loopback addresses (tests, single-host setups).
    pub include_loopback: bool,
    /// TURN servers handed to clients (coturn on-prem). Empty by default.
    pub ice_servers: Vec<IceServer>,
    pub limits: Limits,
    pub media: MediaConfig,
    /// Per-room overrides, by room name.
    pub rooms: BTreeMap<String, RoomConfig>,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 50000)),
            tcp_bind: Some(SocketAddr::from(([0, 0, 0, 0], 50000))),
            candidate_ips: Vec::new(),
            announce_ips: Vec::new(),
            include_loopback: false,
            ice_servers: Vec::new(),
            limits: Limits::default(),
            media: MediaConfig::default(),
            rooms: BTreeMap::new(),
        }
    }
}

/// Capacity limits; past one, the client gets a clear refusal and the room goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_rooms: usize,
    pub max_participants_per_room: usize,
    pub max_tracks_per_participant: usize,
    /// Ingress bitrate cap per publisher (all its tracks), bits/s.
    pub max_publish_bitrate_bps: u64,
    /// Joins accepted per second across the SFU; beyond, 503 + Retry-After.
    pub max_joins_per_second: u32,
    /// Largest signaling body (SDP, JSON), bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rooms: 16,
            max_participants_per_room: 32,
            max_tracks_per_participant: 6,
            max_publish_bitrate_bps: 8_000_000,
            max_joins_per_second: 20,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Codec names as configured; matched case-insensitively against SDP names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    Opus,
    Vp8,
    H264,
    Vp9,
    Av1,
}

/// Media defaults for every room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Codecs offered and accepted, in preference order.
    pub codecs: Vec<CodecName>,
    /// Minimum interval between keyframe requests sent to one publisher, ms.
    pub keyframe_request_interval_ms: u64,
    /// Initial downlink estimate for a new subscriber, bits/s.
    pub initial_bitrate_bps: u64,
    /// Forward this simulcast layer (0 = lowest; clamped to the publisher's
    /// top layer) to every video subscriber whatever its estimate, loss or
    /// tile size. For benchmarks (`roombox-bench run --callgrind` pins it so
    /// instruction counts compare across runs, not the estimator's reaction
    /// to valgrind's slowdown) and tests; leave unset in production.
    pub pin_layer: Option<u8>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            codecs: vec![CodecName::Opus, CodecName::Vp8, CodecName::H264, CodecName::Vp9, CodecName::Av1],
            keyframe_request_interval_ms: 500,
            initial_bitrate_bps: 1_500_000,
            pin_layer: None,
        }
    }
}

/// Per-room overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomConfig {
    /// Restrict this room's codecs (e.g. `["opus", "h264"]` for rooms that record).
    pub codecs: Option<Vec<CodecName>>,
    pub max_participants: Option<usize>,
}

/// A problem found by [`SfuConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `limits.max_rooms`.
    pub key: String,
    pub problem: String,
}

impl SfuConfig {
    /// Every problem at once (not just the first), so an operator fixes them in one go.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Vec::new();
        let mut bad = |key: &str, problem: String| p.push(ConfigProblem { key: key.into(), problem });
        if self.limits.max_rooms == 0 {
            bad("limits.max_rooms", "must be at least 1".into());
        }
        if self.limits.max_participants_per_room < 2 {
            bad("limits.max_participants_per_room", "must be at least 2".into());
        }
        if self.limits.max_tracks_per_participant == 0 {
            bad("limits.max_tracks_per_participant", "must be at least 1".into());
        }
        if self.limits.max_body_bytes < 4096 {
            bad("limits.max_body_bytes", "must be at least 4096 (an SDP offer is several KiB)".into());
        }
        if self.media.codecs.is_empty() {
            bad("media.codecs", "list at least one codec".into());
        }
        if self.media.pin_layer.is_some_and(|l| l > 2) {
            bad("media.pin_layer", "a simulcast layer index: 0, 1 or 2".into());
        }
        if !self.media.codecs.contains(&CodecName::Opus) {
            bad("media.codecs", "opus is required (WebRTC's mandatory audio codec)".into());
        }
        for (name, room) in &self.rooms {
            if let Some(codecs) = &room.codecs {
                for c in codecs {
                    if !self.media.codecs.contains(c) {
                        bad(&format!("rooms.{name}.codecs"), format!("{c:?} is not enabled in media.codecs"));
                    }
                }
            }
            if room.max_participants == Some(0) {
                bad(&format!("rooms.{name}.max_participants"), "must be at least 1".into());
            }
        }
        for (i, s) in self.ice_servers.iter().enumerate() {
            if s.urls.is_empty() {
                bad(&format!("ice_servers[{i}].urls"), "list at least one turn:/turns:/stun: URL".into());
            }
            for u in &s.urls {
                if !(u.starts_with("turn:") || u.starts_with("turns:") || u.starts_with("stun:")) {
                    bad(
                        &format!("ice_servers[{i}].urls"),
                        format!("{u:?} is not a turn:, turns: or stun: URL"),
                    );
                }
            }
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }

    /// The codecs a room may use (its override, else the global list).
    pub fn room_codecs(&self, room: &str) -> &[CodecName] {
        self.rooms.get(room).and_then(|r| r.codecs.as_deref()).unwrap_or(&self.media.codecs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_air_gapped() {
        let c = SfuConfig::default();
        assert!(c.validate().is_ok());
        assert!(c.ice_servers.is_empty(), "no public STUN by default");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<SfuConfig>("udp_bnd = \"0.0.0.0:1\"").unwrap_err();
        assert!(err.to_string().contains("udp_bnd"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let mut c = SfuConfig::default();
        c.limits.max_rooms = 0;
        c.media.codecs = vec![CodecName::Vp8];
        let p = c.validate().unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn a_room_can_restrict_codecs() {
        let c: SfuConfig = toml::from_str("[rooms.board]\ncodecs = [\"opus\", \"h264\"]\n").unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.room_codecs("board"), &[CodecName::Opus, CodecName::H264]);
        assert_eq!(c.room_codecs("other").len(), 5);
    }
}
