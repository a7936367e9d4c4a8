//! The crate's error type.

use crate::auth::AuthError;

/// Why an SFU operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("room {room:?} is full ({max} participants)")]
    RoomFull { room: String, max: usize },
    #[error("the SFU already hosts its maximum of {max} rooms")]
    TooManyRooms { max: usize },
    #[error("too many tracks for one participant (max {max})")]
    TooManyTracks { max: usize },
    #[error("too many joins right now; retry in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    #[error("participant {identity:?} is already in room {room:?}")]
    DuplicateIdentity { room: String, identity: String },
    #[error("no room {0:?}")]
    NoSuchRoom(String),
    #[error("no participant {identity:?} in room {room:?}")]
    NoSuchParticipant { room: String, identity: String },
    #[error("no track {0:?}")]
    NoSuchTrack(String),
    #[error("bad SDP: {0}")]
    BadSdp(String),
    #[error("codec not allowed in this room: {0}")]
    CodecNotAllowed(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the SFU is not running (shut down or never started)")]
    NotRunning,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebRTC error: {0}")]
    Rtc(String),
}

impl SfuError {
    /// The HTTP status the signaling edge answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            SfuError::Auth(a) => a.http_status(),
            SfuError::RoomFull { .. } | SfuError::TooManyRooms { .. } | SfuError::Overloaded { .. } => 503,
            SfuError::TooManyTracks { .. } | SfuError::CodecNotAllowed(_) | SfuError::BadSdp(_) => 400,
            SfuError::DuplicateIdentity { .. } => 409,
            SfuError::NoSuchRoom(_) | SfuError::NoSuchParticipant { .. } | SfuError::NoSuchTrack(_) => 404,
            SfuError::Config(_) | SfuError::NotRunning | SfuError::Io(_) | SfuError::Rtc(_) => 500,
        }
    }
}
