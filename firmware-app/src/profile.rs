//! A board profile applied to the daemon's configuration.
//!
//! `roomboxd run --board NAME` (or `board = "NAME"` in the file) loads the
//! profile ([`crate::board`]) and:
//!
//! 1. fills the `[media]` defaults from the profile's camera, audio and encoder
//!    sections ([`media_defaults`]): the V4L2 device and its formats, the
//!    encoded size, rate, bitrate and simulcast choice, the ALSA capture and
//!    playback PCMs and their period. Keys written in the config file's
//!    `[media]` table still win ([`resolve_media`]);
//! 2. lowers the SFU's limits to the profile's capacity when the profile is
//!    stricter ([`apply_capacity`]): participants per room (also per-room
//!    overrides), and the per-publisher ingress cap so that one publisher
//!    forwarded to everyone else fits the board's forwarding budget;
//! 3. names the GPIO lines of the button panel (used by [`crate::device`]).
//!
//! All of it is plain data in, plain data out: tested without a board.

use crate::board::{BoardError, BoardProfile};
use crate::config::DaemonConfig;
use crate::media::{AudioSourceConfig, MediaConfig, PlaybackConfig, VideoSourceConfig};

/// The `[media]` defaults a board gives (before the file's own `[media]` keys).
pub fn media_defaults(board: &BoardProfile) -> MediaConfig {
    let mut m = MediaConfig::default();
    let mut formats: Vec<String> = Vec::new();
    // The encoder's input format first, then the others in the profile's order.
    let first = board.encoder_input_format().map(|f| f.fourcc.to_string());
    for f in first.into_iter().chain(board.camera().formats.iter().map(|f| f.fourcc.to_string())) {
        if !formats.contains(&f) {
            formats.push(f);
        }
    }
    m.video = VideoSourceConfig::V4l2 { device: board.camera().device.clone(), formats };
    let enc = board.encoder();
    m.width = enc.width;
    m.height = enc.height;
    m.fps = enc.fps;
    let bps = enc.bitrate_kbps.saturating_mul(1000);
    m.start_bitrate_bps = bps;
    m.max_bitrate_bps = bps;
    m.min_bitrate_bps = m.min_bitrate_bps.min(bps);
    m.simulcast = enc.simulcast;
    let audio = board.audio();
    m.audio = AudioSourceConfig::Alsa { device: audio.capture.clone() };
    m.playback = PlaybackConfig::Alsa { device: audio.playback.clone() };
    m.period_ms = audio.period_ms;
    m
}

/// The `[media]` the daemon runs with: the board's defaults (when a board is
/// given), with every key the config file wrote (`cfg.media_keys`) taken from
/// the file.
pub fn resolve_media(cfg: &DaemonConfig, board: Option<&BoardProfile>) -> MediaConfig {
    let Some(board) = board else {
        return cfg.media.clone();
    };
    let defaults = media_defaults(board);
    if cfg.media_keys.is_empty() {
        return defaults;
    }
    let (Ok(mut table), Ok(file)) = (toml::Table::try_from(&defaults), toml::Table::try_from(&cfg.media))
    else {
        return cfg.media.clone();
    };
    for key in &cfg.media_keys {
        match file.get(key) {
            Some(v) => {
                table.insert(key.clone(), v.clone());
            }
            // a key written in the file but serialized as absent (an optional left unset)
            None => {
                table.remove(key);
            }
        }
    }
    table.try_into().unwrap_or_else(|_| cfg.media.clone())
}

/// Every top-level key of `[media]`.
pub fn media_key_names() -> Vec<String> {
    let mut full = MediaConfig::default();
    full.name = Some(String::new());
    toml::Table::try_from(&full).map(|t| t.keys().cloned().collect()).unwrap_or_default()
}

/// What [`apply_capacity`] changed, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapacityApplied {
    pub max_participants_per_room: Option<usize>,
    pub max_publish_bitrate_bps: Option<u64>,
}

/// Lower the SFU's limits to the board's capacity where the board is stricter.
pub fn apply_capacity(cfg: &mut DaemonConfig, board: &BoardProfile) -> CapacityApplied {
    let cap = board.capacity();
    let mut out = CapacityApplied::default();
    let max_p = cap.max_participants as usize;
    let limits = &mut cfg.sfu.limits;
    if max_p >= 2 && max_p < limits.max_participants_per_room {
        limits.max_participants_per_room = max_p;
        out.max_participants_per_room = Some(max_p);
    }
    for room in cfg.sfu.rooms.values_mut() {
        if let Some(n) = room.max_participants
            && n > max_p
            && max_p >= 2
        {
            room.max_participants = Some(max_p);
        }
    }
    // One publisher is forwarded to everyone else: that must fit the forwarding budget.
    let others = u64::from(cap.max_participants.saturating_sub(1).max(1));
    let per_publisher = u64::from(cap.max_forward_mbps) * 1_000_000 / others;
    let limits = &mut cfg.sfu.limits;
    if per_publisher > 0 && per_publisher < limits.max_publish_bitrate_bps {
        limits.max_publish_bitrate_bps = per_publisher;
        out.max_publish_bitrate_bps = Some(per_publisher);
    }
    out
}

/// Load the board the config names (if any) and apply it: media defaults and
/// capacity. Returns the profile for the GPIO panel.
pub fn apply_board(cfg: &mut DaemonConfig) -> Result<Option<BoardProfile>, BoardError> {
    let Some(name) = cfg.board.clone() else {
        return Ok(None);
    };
    let board = BoardProfile::load(&name)?;
    cfg.media = resolve_media(cfg, Some(&board));
    // From now on every `[media]` value is the one to use (validation resolves the same).
    cfg.media_keys = media_key_names();
    let applied = apply_capacity(cfg, &board);
    tracing::info!(board = board.name(), soc = %board.info().soc, ?applied, camera = ?cfg.media.video,
        "board profile applied");
    Ok(Some(board))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, load_str};

    #[test]
    fn every_board_gives_valid_media_defaults() {
        for name in crate::board::builtin_names() {
            let b = BoardProfile::load(name).unwrap();
            let m = media_defaults(&b);
            assert_eq!(m.validate().map_err(|e| e.to_string()), Ok(()), "{name}");
            assert_eq!((m.width, m.height, m.fps), (b.encoder().width, b.encoder().height, b.encoder().fps));
            assert_eq!(m.audio, AudioSourceConfig::Alsa { device: b.audio().capture.clone() }, "{name}");
            let VideoSourceConfig::V4l2 { device, formats } = &m.video else { panic!("{name}: not V4L2") };
            assert_eq!(device, &b.camera().device);
            assert_eq!(formats[0], b.encoder_input_format().unwrap().fourcc.to_string(), "{name}");
        }
    }

    #[test]
    fn file_values_win_over_the_board() {
        let text = "board = \"rpi4\"\n[media]\nfps = 15\naudio = { source = \"synthetic\" }\n";
        let cfg = load_str(text, &Overrides::default()).unwrap();
        assert_eq!(cfg.media_keys, ["audio", "fps"]);
        let b = BoardProfile::load("rpi4").unwrap();
        let m = resolve_media(&cfg, Some(&b));
        assert_eq!(m.fps, 15, "the file's fps");
        assert_eq!(m.audio, AudioSourceConfig::Synthetic, "the file's microphone");
        assert_eq!((m.width, m.height), (1280, 720), "the board's size");
        assert_eq!(m.playback, PlaybackConfig::Alsa { device: "plughw:CARD=Speakerphone,DEV=0".into() });
        assert_eq!(m.start_bitrate_bps, 1_500_000);
        assert!(matches!(m.video, VideoSourceConfig::V4l2 { .. }));
        // No board: the file over the compiled defaults, as before.
        let cfg = load_str("[media]\nfps = 15\n", &Overrides::default()).unwrap();
        assert_eq!(resolve_media(&cfg, None), MediaConfig { fps: 15, ..MediaConfig::default() });
    }

    #[test]
    fn capacity_lowers_limits_only_when_stricter() {
        let mut cfg = DaemonConfig::default();
        cfg.sfu
            .rooms
            .insert("big".into(), sfu_core::config::RoomConfig { max_participants: Some(30), codecs: None });
        let qemu = BoardProfile::load("qemu-arm64").unwrap();
        let a = apply_capacity(&mut cfg, &qemu);
        assert_eq!(cfg.sfu.limits.max_participants_per_room, 4);
        assert_eq!(cfg.sfu.rooms["big"].max_participants, Some(4));
        // 20 Mbit/s forwarded to the 3 others: 6.67 Mbit/s per publisher (default 8).
        assert_eq!(cfg.sfu.limits.max_publish_bitrate_bps, 6_666_666);
        assert_eq!(a.max_participants_per_room, Some(4));
        // A config already stricter than the board stays as it is.
        let mut cfg = DaemonConfig::default();
        cfg.sfu.limits.max_participants_per_room = 3;
        cfg.sfu.limits.max_publish_bitrate_bps = 1_000_000;
        let a = apply_capacity(&mut cfg, &BoardProfile::load("rpi5").unwrap());
        assert_eq!(
            (cfg.sfu.limits.max_participants_per_room, cfg.sfu.limits.max_publish_bitrate_bps),
            (3, 1_000_000)
        );
        assert_eq!(a, CapacityApplied::default());
    }

    #[test]
    fn apply_board_fills_media_and_an_unknown_board_is_an_error() {
        let mut cfg = load_str("board = \"qemu-arm64\"\n", &Overrides::default()).unwrap();
        let b = apply_board(&mut cfg).unwrap().unwrap();
        assert_eq!(b.name(), "qemu-arm64");
        assert_eq!((cfg.media.width, cfg.media.height), (640, 360));
        assert!(b.gpio().is_none(), "the emulated board has no panel: the daemon simulates one");
        let mut cfg = DaemonConfig::default();
        cfg.board = Some("nosuchboard".into());
        assert!(apply_board(&mut cfg).unwrap_err().to_string().contains("nosuchboard"));
    }
}
