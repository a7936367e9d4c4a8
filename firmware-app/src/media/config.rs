//! `[media]`: the room's camera, microphone and speakers, as plain data.
//!
//! The daemon embeds [`MediaConfig`] as its `[media]` table and the board
//! profiles fill its defaults; unknown keys are rejected. The defaults suit the
//! demo: a synthetic camera and microphone, no speakers.
//!
//! ```toml
//! [media]
//! video = { source = "v4l2", device = "/dev/video0", formats = ["MJPG", "YUYV"] }
//! width = 1280
//! height = 720
//! fps = 30
//! audio = { source = "alsa", device = "hw:0" }
//! playback = { sink = "alsa", device = "hw:0" }
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::MediaError;

/// The microphone's default ALSA buffer (ms). 8 periods (the first version)
/// overran under emulation whenever the capture thread was descheduled for
/// 160 ms; 400 ms rides through such stalls at no cost in latency.
pub const DEFAULT_CAPTURE_BUFFER_MS: u32 = 400;
/// The largest microphone buffer (ms): the pipeline catches up a backlog of
/// up to this long and re-anchors its sample clock beyond it
/// ([`super::pipeline`]'s microphone thread), so a larger buffer could turn a
/// long stall into permanent delay.
pub const MAX_CAPTURE_BUFFER_MS: u32 = 500;

/// The whole media section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Publish the room's camera and microphone at all.
    pub enabled: bool,
    /// Participant identity of the room in the SFU.
    pub identity: String,
    /// Display name of the room participant.
    pub name: Option<String>,
    pub video: VideoSourceConfig,
    /// Encoded (and, for synthetic sources, generated) size and rate.
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Encoder bitrate bounds; the room's estimate is clamped into them.
    pub min_bitrate_bps: u32,
    pub start_bitrate_bps: u32,
    pub max_bitrate_bps: u32,
    /// Fewest milliseconds between two keyframes sent for keyframe requests.
    pub keyframe_min_interval_ms: u64,
    /// A second, half-size simulcast layer (only when the board's CPU allows).
    pub simulcast: bool,
    pub audio: AudioSourceConfig,
    pub playback: PlaybackConfig,
    /// ALSA period for capture and playback: 10 or 20 ms.
    pub period_ms: u32,
    /// ALSA buffer of the microphone, in ms: how long the capture thread may
    /// stall (a loaded board, a slow SD card, an emulator) before samples are
    /// lost. It costs no steady-state latency: each period is read as soon as
    /// the device has it, and a backlog after a stall is sent at once with its
    /// own capture times. At least 4 periods, at most
    /// [`MAX_CAPTURE_BUFFER_MS`] (beyond that the pipeline re-anchors its
    /// clock instead of catching up, and the backlog would become latency).
    pub capture_buffer_ms: u32,
    /// Opus target bitrate.
    pub opus_bitrate_bps: u32,
    /// Opus discontinuous transmission: no packets while the room is quiet.
    pub opus_dtx: bool,
    /// Acoustic echo cancellation on the microphone (needs the `aec` feature).
    pub aec: bool,
    /// Start with the microphone muted / the camera off.
    pub start_mic_muted: bool,
    pub start_camera_off: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            enabled: true,
            identity: "room".into(),
            name: Some("Room".into()),
            video: VideoSourceConfig::Synthetic,
            width: 1280,
            height: 720,
            fps: 30,
            min_bitrate_bps: 150_000,
            start_bitrate_bps: 1_200_000,
            max_bitrate_bps: 2_500_000,
            keyframe_min_interval_ms: 500,
            simulcast: false,
            audio: AudioSourceConfig::Synthetic,
            playback: PlaybackConfig::None,
            period_ms: 10,
            capture_buffer_ms: DEFAULT_CAPTURE_BUFFER_MS,
            opus_bitrate_bps: 32_000,
            opus_dtx: true,
            aec: true,
            start_mic_muted: false,
            start_camera_off: false,
        }
    }
}

/// Where the room's picture comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum VideoSourceConfig {
    /// A moving test pattern with a burnt-in timecode.
    Synthetic,
    /// A Y4M file (4:2:0), looped; frames are scaled to `width`×`height` if needed.
    File { path: PathBuf },
    /// A V4L2 camera.
    V4l2 {
        device: PathBuf,
        /// Pixel formats in order of preference (`"MJPG"`, `"YUYV"`, `"NV12"`).
        #[serde(default = "default_formats")]
        formats: Vec<String>,
    },
}

fn default_formats() -> Vec<String> {
    vec!["YUYV".into(), "NV12".into(), "MJPG".into()]
}

/// Where the room's microphone signal comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum AudioSourceConfig {
    /// A quiet tone with a beep every second.
    Synthetic,
    /// A WAV file (16-bit PCM, 48 kHz, mono or stereo), looped.
    File { path: PathBuf },
    /// An ALSA capture PCM (`"default"`, `"hw:1,0"`, `"plughw:…"`).
    Alsa { device: String },
}

/// Where remote participants' audio is played.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "sink", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlaybackConfig {
    /// Nobody is played (the demo, a box without speakers).
    None,
    /// An ALSA playback PCM.
    Alsa { device: String },
    /// Raw 48 kHz mono s16le to a file, paced in real time (tests).
    File { path: PathBuf },
}

impl MediaConfig {
    /// Check the values; every problem is named.
    pub fn validate(&self) -> Result<(), MediaError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            let list: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
            Err(MediaError::Config(list.join("; ")))
        }
    }

    /// Every problem with the key it is about (`width`, `fps`, `video.formats`, …),
    /// so a config checker can point at the line.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.width < 64 || self.height < 64 || self.width > 3840 || self.height > 2160 {
            let key = if self.width < 64 || self.width > 3840 { "width" } else { "height" };
            problems.push((key, format!("size {}x{} outside 64x64..3840x2160", self.width, self.height)));
        }
        if !self.width.is_multiple_of(4) || !self.height.is_multiple_of(4) {
            let key = if !self.width.is_multiple_of(4) { "width" } else { "height" };
            problems.push((key, format!("size {}x{} must be a multiple of 4", self.width, self.height)));
        }
        if self.fps == 0 || self.fps > 60 {
            problems.push(("fps", format!("fps {} outside 1..=60", self.fps)));
        }
        if !(self.min_bitrate_bps <= self.start_bitrate_bps && self.start_bitrate_bps <= self.max_bitrate_bps)
        {
            problems.push(("start_bitrate_bps", "bitrates must satisfy min <= start <= max".into()));
        }
        if self.min_bitrate_bps < 30_000 {
            problems.push(("min_bitrate_bps", "min_bitrate_bps below 30000".into()));
        }
        if self.period_ms != 10 && self.period_ms != 20 {
            problems.push(("period_ms", format!("period_ms {} must be 10 or 20", self.period_ms)));
        }
        if self.capture_buffer_ms < 4 * self.period_ms || self.capture_buffer_ms > MAX_CAPTURE_BUFFER_MS {
            problems.push((
                "capture_buffer_ms",
                format!(
                    "capture_buffer_ms {} outside {}..={MAX_CAPTURE_BUFFER_MS} (4 periods to the pipeline's catch-up limit)",
                    self.capture_buffer_ms,
                    4 * self.period_ms
                ),
            ));
        }
        if !(6_000..=510_000).contains(&self.opus_bitrate_bps) {
            problems.push((
                "opus_bitrate_bps",
                format!("opus_bitrate_bps {} outside 6000..=510000", self.opus_bitrate_bps),
            ));
        }
        if self.identity.is_empty() {
            problems.push(("identity", "identity is empty".into()));
        }
        if let VideoSourceConfig::V4l2 { formats, .. } = &self.video {
            for f in formats {
                if super::v4l2::PixelFormat::from_fourcc_str(f).is_none() {
                    problems
                        .push(("video.formats", format!("video format {f:?} not one of YUYV, NV12, MJPG")));
                }
            }
            if formats.is_empty() {
                problems.push(("video.formats", "video formats list is empty".into()));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_synthetic() {
        let c = MediaConfig::default();
        c.validate().unwrap();
        assert_eq!(c.video, VideoSourceConfig::Synthetic);
        assert_eq!(c.playback, PlaybackConfig::None);
    }

    #[test]
    fn parses_a_board_style_table() {
        let c: MediaConfig = toml::from_str(
            r#"
            width = 640
            height = 360
            video = { source = "v4l2", device = "/dev/video2", formats = ["MJPG"] }
            audio = { source = "alsa", device = "hw:1,0" }
            playback = { sink = "file", path = "/tmp/out.raw" }
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.video,
            VideoSourceConfig::V4l2 { device: "/dev/video2".into(), formats: vec!["MJPG".into()] }
        );
        assert_eq!(c.audio, AudioSourceConfig::Alsa { device: "hw:1,0".into() });
        assert_eq!(c.fps, 30);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_a_message() {
        assert!(toml::from_str::<MediaConfig>("widht = 640").unwrap_err().to_string().contains("widht"));
        assert!(
            toml::from_str::<MediaConfig>(
                r#"video = { source = "v4l2", device = "/dev/video0", fromats = [] }"#
            )
            .is_err()
        );
        assert!(toml::from_str::<MediaConfig>(r#"video = { source = "webcam" }"#).is_err());
        let c = MediaConfig { fps: 0, period_ms: 5, ..MediaConfig::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("fps 0") && e.contains("period_ms 5"), "{e}");
        for ms in [79, 501] {
            let c = MediaConfig { period_ms: 20, capture_buffer_ms: ms, ..MediaConfig::default() };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("capture_buffer_ms {ms} outside 80..=500")), "{e}");
        }
        let c = MediaConfig { period_ms: 20, capture_buffer_ms: 80, ..MediaConfig::default() };
        c.validate().unwrap();
        let c = MediaConfig {
            video: VideoSourceConfig::V4l2 { device: "/dev/video0".into(), formats: vec!["H264".into()] },
            ..MediaConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("H264"));
    }
}
