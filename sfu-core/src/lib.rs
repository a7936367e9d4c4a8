//! # sfu-core — roombox's trimmed WebRTC SFU
//!
//! (The sfu-core work writes this manual: the engine, the media plane, the
//! edge, with a runnable example.)

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod auth;
pub mod config;
pub mod edge;
pub mod engine;
pub mod error;
pub mod local;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod signal;

pub use auth::{Claims, Grants, TokenVerifier};
pub use config::SfuConfig;
pub use error::SfuError;
pub use local::{LocalCodec, LocalEvent, LocalJoin, LocalPacket, LocalSubscription, LocalTrackSpec};
pub use server::LocalParticipant;
pub use server::{LeaveReason, RoomEvent, RoomSnapshot, Sfu, SfuStats};
