//! The media pipeline's error type.

/// Why a media operation failed. Device errors carry the device name; the
/// pipeline itself survives them (a lost device becomes a slate or silence).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    #[error("invalid media configuration: {0}")]
    Config(String),
    /// The OS error is part of the message (and not a `source()`), so a report
    /// that prints the chain does not say it twice.
    #[error("video device {device}: {error}")]
    VideoDevice { device: String, error: std::io::Error },
    #[error("video device {device}: no usable format ({detail})")]
    NoUsableFormat { device: String, detail: String },
    #[error("audio device {device}: {detail}")]
    AudioDevice { device: String, detail: String },
    #[error("file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("H.264 encoder: {0}")]
    H264(String),
    #[error("Opus codec: {0}")]
    Opus(String),
    #[error("echo canceller: {0}")]
    Aec(String),
    #[error("bad frame: {0}")]
    BadFrame(String),
    #[error("malformed RTP payload: {0}")]
    Depacketize(&'static str),
    #[error("metrics registration: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("joining the room: {0}")]
    Sfu(#[from] sfu_core::SfuError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the {0} device was lost")]
    DeviceLost(&'static str),
}

impl From<openh264::Error> for MediaError {
    fn from(e: openh264::Error) -> Self {
        MediaError::H264(e.to_string())
    }
}

impl From<opus::Error> for MediaError {
    fn from(e: opus::Error) -> Self {
        MediaError::Opus(e.to_string())
    }
}
