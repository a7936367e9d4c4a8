//! The crate's one error type.

/// Everything the compositor refuses. Frames come from decoders and audio
/// from depacketized tracks, i.e. from outside: a wrong size is an error,
/// never a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame of zero width or height, or larger than [`crate::frame::MAX_DIMENSION`].
    #[error("frame size {width}x{height} is outside 1..={max} per side")]
    FrameSize { width: u32, height: u32, max: u32 },
    /// The composite's output size must be even on both sides (I420 chroma is half size).
    #[error("output size {width}x{height} must be even and at least 2x2")]
    OddOutput { width: u32, height: u32 },
    /// A plane's stride is shorter than its row.
    #[error("plane {plane}: stride {stride} is shorter than its row of {row} bytes")]
    Stride { plane: usize, stride: usize, row: usize },
    /// A plane's buffer is shorter than stride × rows.
    #[error("plane {plane}: {len} bytes, needs {need} (stride × rows)")]
    PlaneLength { plane: usize, len: usize, need: usize },
    /// The scaler refused a plane (a bug here: sizes are checked before).
    #[error("scaling a plane failed: {0}")]
    Resize(String),
    /// An audio frame is not 20 ms of 48 kHz audio in the channel count it claims.
    #[error(
        "audio source {index}: {len} samples, expected {expected} (20 ms at 48 kHz, {channels} channel(s))"
    )]
    AudioLength { index: usize, len: usize, expected: usize, channels: u8 },
    /// Only mono and stereo are mixed.
    #[error("audio source {index}: {channels} channels, only 1 or 2 are supported")]
    AudioChannels { index: usize, channels: u8 },
    /// A gain that is negative or not a finite number.
    #[error("audio source {index}: gain {gain} is not a finite number >= 0")]
    AudioGain { index: usize, gain: f32 },
}
