//! Board profiles: what the box is made of.
//!
//! One TOML file per board lives in `boards/` at the top of the repository and is compiled into
//! the binary; a profile can also be loaded from a path (a board we do not ship, or a tweaked
//! copy in `/etc/roombox`). A profile says which SoC and cores the box has, where its camera and
//! sound card are and which formats they offer, which GPIO lines carry the mute button and the
//! LEDs, which video encoder to use, and how many people and megabits the box can take.
//!
//! ```
//! use roombox::board::BoardProfile;
//!
//! let pi = BoardProfile::load("rpi4").unwrap();
//! assert_eq!(pi.cpu().cores, 4);
//! assert!(!pi.cpu().crypto_extensions); // SRTP runs in software there
//! let gpio = pi.gpio().expect("the Pi profile wires a button");
//! assert_eq!(gpio.button.line, 17);
//!
//! // The same schema, from a file of your own:
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("mine.toml");
//! # std::fs::write(&path, roombox::board::builtin_source("qemu-arm64").unwrap()).unwrap();
//! let mine = BoardProfile::load(path.to_str().unwrap()).unwrap();
//! assert_eq!(mine.name(), "qemu-arm64");
//! ```
//!
//! Loading never panics on a bad file: unknown keys, conflicting GPIO lines and formats the
//! pipeline cannot produce are reported as [`BoardError`], naming the profile, the key and the
//! problem. Everything that is wrong is reported at once.
//!
//! The `[capacity]` limits are checked against the estimate in [`capacity`]: a profile cannot
//! promise more than its own numbers support.

pub mod capacity;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use capacity::{CapacityEstimate, Estimated};

/// The profiles compiled into the binary: `(name, TOML source)`.
const BUILTIN: &[(&str, &str)] = &[
    ("rpi4", include_str!("../../../boards/rpi4.toml")),
    ("rpi5", include_str!("../../../boards/rpi5.toml")),
    ("imx8mp", include_str!("../../../boards/imx8mp.toml")),
    ("rk3588", include_str!("../../../boards/rk3588.toml")),
    ("qemu-arm64", include_str!("../../../boards/qemu-arm64.toml")),
];

/// Names of the profiles compiled into the binary, in the order `boards/` documents them.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// The TOML text of a built-in profile (for `roomboxd` to print, or to copy and edit).
pub fn builtin_source(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, src)| *src)
}

/// A validated board profile. Construct it with [`BoardProfile::load`] or
/// [`BoardProfile::from_toml`]; every value it holds has passed validation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    board: BoardInfo,
    cpu: CpuProfile,
    camera: CameraProfile,
    audio: AudioProfile,
    encoder: EncoderProfile,
    /// Absent on boards without a button and LEDs wired (the emulated board): the daemon then
    /// uses the simulated panel.
    #[serde(default)]
    gpio: Option<GpioProfile>,
    capacity: CapacityProfile,
}

/// `[board]`: what the box is.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    /// Short name, as given to `roomboxd run --board NAME`.
    pub name: String,
    /// The product, for people.
    pub description: String,
    /// The system on chip.
    pub soc: String,
}

/// `[cpu]`: the application cores.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CpuProfile {
    /// Core type, e.g. `cortex-a72`; `cortex-a76+cortex-a55` for big.LITTLE parts.
    pub core: String,
    /// Cores the daemon may use.
    pub cores: u32,
    /// Highest clock of the cores counted in `cores`, in MHz.
    pub max_mhz: u32,
    /// ARMv8 Cryptography Extensions (AES, PMULL, SHA1/SHA2 instructions). Without them SRTP's
    /// AES and HMAC run in plain software, several times slower per byte.
    pub crypto_extensions: bool,
}

/// `[camera]`: the room camera (a V4L2 capture device, usually USB/UVC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraProfile {
    /// The V4L2 device node, e.g. `/dev/video0` or a stable `/dev/v4l/by-id/...` link.
    pub device: PathBuf,
    /// Formats to ask the camera for, most preferred first. The pipeline takes the first one the
    /// camera accepts.
    pub formats: Vec<CaptureFormat>,
}

/// One capture format: pixel format, size and frame rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureFormat {
    /// V4L2 pixel format.
    pub fourcc: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{}@{}", self.fourcc, self.width, self.height, self.fps)
    }
}

/// Camera pixel formats the capture pipeline can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum PixelFormat {
    /// Packed 4:2:2, what every UVC camera offers uncompressed.
    #[serde(rename = "YUYV")]
    Yuyv,
    /// Semi-planar 4:2:0, common on SoC camera pipelines.
    #[serde(rename = "NV12")]
    Nv12,
    /// Motion JPEG: the only way most USB cameras give 1080p30 over USB 2.
    #[serde(rename = "MJPG")]
    Mjpg,
}

impl PixelFormat {
    /// The V4L2 FourCC code (`v4l::FourCC::new(&fmt.fourcc_bytes())`).
    pub fn fourcc_bytes(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Mjpg => *b"MJPG",
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.fourcc_bytes();
        // The four bytes are ASCII by construction.
        f.write_str(std::str::from_utf8(&b).unwrap_or("????"))
    }
}

/// `[audio]`: the room's microphone and speakers (ALSA PCM names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AudioProfile {
    /// ALSA PCM for the microphone, e.g. `plughw:CARD=Speakerphone,DEV=0`.
    pub capture: String,
    /// ALSA PCM for the speakers.
    pub playback: String,
    /// Hz; one Opus can encode natively (8000, 12000, 16000, 24000, 48000).
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// ALSA period and Opus frame length, in ms: 10 or 20.
    pub period_ms: u32,
}

/// `[encoder]`: how the room camera is encoded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderProfile {
    /// Which encoder the pipeline uses.
    pub video: VideoEncoder,
    /// Encoded width; must match a camera format's size.
    pub width: u32,
    /// Encoded height.
    pub height: u32,
    /// Encoded frame rate; at most the matching camera format's.
    pub fps: u32,
    /// Target bitrate of the (top) layer, kbit/s.
    pub bitrate_kbps: u32,
    /// Also send a quarter-size simulcast layer (costs about 25 % more encode CPU).
    pub simulcast: bool,
    /// The SoC's H.264 encoder block, when it has one. Informational until `video` selects it.
    #[serde(default)]
    pub hardware: Option<HardwareEncoder>,
}

/// Video encoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VideoEncoder {
    /// Cisco's openh264 in software: runs on every board.
    Openh264,
    /// A V4L2 memory-to-memory H.264 encoder (needs `[encoder.hardware]` with `api = "v4l2-m2m"`).
    V4l2M2m,
}

/// A hardware H.264 encoder block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareEncoder {
    /// How user space reaches it.
    pub api: HardwareApi,
    /// The device node, for `v4l2-m2m`.
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// Kernel driver or block name, and what it can do.
    pub driver: String,
}

/// How user space reaches a hardware encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HardwareApi {
    /// A V4L2 stateful memory-to-memory device (mainline kernels).
    V4l2M2m,
    /// Rockchip's vendor MPP library (no mainline H.264 encode driver yet).
    RockchipMpp,
}

/// `[gpio]`: the mute button and the three LEDs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpioProfile {
    /// The GPIO chip: a path (`/dev/gpiochip0`) or the chip's label (`pinctrl-bcm2711`), which
    /// survives probe-order changes between kernels.
    pub chip: String,
    /// Button level changes shorter than this are bounces, ms.
    pub debounce_ms: u32,
    /// Holding the button this long enters (or leaves) privacy mode, ms.
    pub long_press_ms: u32,
    /// Recording LED blink: on for this long, off for this long, ms.
    pub blink_ms: u32,
    /// The mute button (input).
    pub button: GpioLine,
    /// LED lit while the microphone is muted.
    pub led_muted: GpioLine,
    /// LED lit while a meeting is on.
    pub led_live: GpioLine,
    /// LED blinking while the room is recorded.
    pub led_recording: GpioLine,
}

/// One GPIO line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpioLine {
    /// Line offset on the chip (for the Raspberry Pi header: the BCM GPIO number).
    pub line: u32,
    /// The line is low when active (a button to ground with a pull-up; an LED sinking current).
    #[serde(default)]
    pub active_low: bool,
}

/// `[capacity]`: what the daemon admits, and where the numbers come from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityProfile {
    /// Participants in one meeting, the room included.
    pub max_participants: u32,
    /// Media the SFU forwards in total, Mbit/s.
    pub max_forward_mbps: u32,
    /// The inputs of the estimate the limits must not exceed (see [`capacity`]).
    pub estimate: CapacityEstimate,
}

impl BoardProfile {
    /// Loads a built-in profile by name (`rpi4`, `rpi5`, `imx8mp`, `rk3588`, `qemu-arm64`), or a
    /// TOML file when `name_or_path` contains a `/` or ends in `.toml`.
    pub fn load(name_or_path: &str) -> Result<BoardProfile, BoardError> {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            return BoardProfile::from_file(Path::new(name_or_path));
        }
        match builtin_source(name_or_path) {
            Some(src) => BoardProfile::from_toml(name_or_path, src),
            None => Err(BoardError::UnknownBoard {
                name: name_or_path.to_owned(),
                known: builtin_names().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Loads and validates a profile file.
    pub fn from_file(path: &Path) -> Result<BoardProfile, BoardError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| BoardError::Read { path: path.to_owned(), source })?;
        BoardProfile::from_toml(&path.display().to_string(), &text)
    }

    /// Parses and validates profile text; `origin` names it in errors (a board name or a path).
    pub fn from_toml(origin: &str, text: &str) -> Result<BoardProfile, BoardError> {
        let profile: BoardProfile = toml::from_str(text).map_err(|e| BoardError::Parse {
            profile: origin.to_owned(),
            message: parse_message(text, &e),
        })?;
        let problems = validate::problems(&profile);
        if problems.is_empty() {
            Ok(profile)
        } else {
            Err(BoardError::Invalid { profile: origin.to_owned(), problems })
        }
    }

    /// Short name (`rpi4`).
    pub fn name(&self) -> &str {
        &self.board.name
    }
    /// `[board]`.
    pub fn info(&self) -> &BoardInfo {
        &self.board
    }
    /// `[cpu]`.
    pub fn cpu(&self) -> &CpuProfile {
        &self.cpu
    }
    /// `[camera]`.
    pub fn camera(&self) -> &CameraProfile {
        &self.camera
    }
    /// `[audio]`.
    pub fn audio(&self) -> &AudioProfile {
        &self.audio
    }
    /// `[encoder]`.
    pub fn encoder(&self) -> &EncoderProfile {
        &self.encoder
    }
    /// `[gpio]`, or `None` when the board has no panel wired (use the simulated panel).
    pub fn gpio(&self) -> Option<&GpioProfile> {
        self.gpio.as_ref()
    }
    /// `[capacity]`.
    pub fn capacity(&self) -> &CapacityProfile {
        &self.capacity
    }
    /// The camera format the encoder reads: the first one with the encoder's size.
    pub fn encoder_input_format(&self) -> Option<&CaptureFormat> {
        self.camera.formats.iter().find(|f| f.width == self.encoder.width && f.height == self.encoder.height)
    }
    /// What the capacity estimate gives for this board (the stated limits are at most this).
    pub fn estimated_capacity(&self) -> Estimated {
        self.capacity.estimate.derive(&self.cpu)
    }
}

/// One thing wrong with a profile: the key (dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `gpio.led_live.line`.
    pub key: String,
    /// e.g. `line 17 is also gpio.button.line`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// No built-in profile has that name.
    #[error("no board profile named `{name}` (built in: {known}; or give a path to a .toml file)")]
    UnknownBoard {
        /// The name asked for.
        name: String,
        /// Built-in names, comma-separated.
        known: String,
    },
    /// The file could not be read.
    #[error("board profile {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a missing key or a value of the wrong type.
    #[error("board profile `{profile}`: {message}")]
    Parse {
        /// Name or path of the profile.
        profile: String,
        /// Line, key and problem, as the TOML parser reports them.
        message: String,
    },
    /// Well-formed, but impossible: conflicting lines, formats the pipeline cannot produce,
    /// limits beyond the estimate.
    #[error("board profile `{profile}` is invalid:{}", problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid {
        /// Name or path of the profile.
        profile: String,
        /// Everything that is wrong.
        problems: Vec<Problem>,
    },
}

/// The parser's message with a line number: `line 12, column 1: unknown field `colour`, ...`.
fn parse_message(text: &str, err: &toml::de::Error) -> String {
    let msg = err.message().trim_end();
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line} (`{snippet}`): {msg}")
        }
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests;
