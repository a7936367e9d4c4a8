//! The runtime edge: the [`Sfu`] handle and the driver that owns the sockets.
//!
//! `Sfu` is a cloneable handle; requests travel over a bounded channel to one
//! driver thread that owns the UDP (and ICE-TCP) sockets and the sans-IO
//! [`crate::engine`], and `select!`s over socket readiness, requests and the
//! engine's next deadline.
//!
//! STATUS: interface only. The sfu-core work fills in the bodies; the
//! signatures here are what `firmware-app` and `cloud-bridge` build against.

use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc};

use crate::auth::TokenVerifier;
use crate::config::SfuConfig;
use crate::error::SfuError;
use crate::local::{LocalEvent, LocalJoin, LocalPacket};
use crate::protocol::{ParticipantInfo, TrackInfo, TrackKind};

/// Room lifecycle events, for the daemon's store and metrics.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// The first participant arrived: a meeting starts.
    RoomOpened {
        room: String,
        at: SystemTime,
    },
    /// The last participant left: the meeting ends.
    RoomClosed {
        room: String,
        at: SystemTime,
    },
    ParticipantJoined {
        room: String,
        identity: String,
        session: u64,
        local: bool,
        at: SystemTime,
    },
    ParticipantLeft {
        room: String,
        identity: String,
        session: u64,
        reason: LeaveReason,
        duration: Duration,
        at: SystemTime,
    },
    TrackPublished {
        room: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        room: String,
        track: String,
    },
    TrackMuted {
        room: String,
        track: String,
        muted: bool,
    },
    ActiveSpeaker {
        room: String,
        identity: Option<String>,
    },
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// Said goodbye (WS `leave`, WHIP/WHEP `DELETE`, local `leave`).
    Left,
    /// ICE/DTLS failed or timed out.
    ConnectionLost,
    Kicked,
    /// The SFU shut down.
    Shutdown,
}

/// A snapshot of one room for the REST API and the admin page.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSnapshot {
    pub name: String,
    pub participants: Vec<ParticipantInfo>,
    pub active_speaker: Option<String>,
    pub opened_at: SystemTime,
}

/// Traffic counters, for metrics and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SfuStats {
    pub rooms: usize,
    pub participants: usize,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_packets: u64,
}

/// A cloneable handle to a running SFU.
#[derive(Clone)]
pub struct Sfu {
    _private: (),
}

/// A running in-process participant. Dropping it leaves the room.
pub struct LocalParticipant {
    /// Events from the engine: keyframe requests, bitrate targets, media, signaling.
    pub events: mpsc::Receiver<LocalEvent>,
    _private: (),
}

impl LocalParticipant {
    /// Hand a packet to the engine. Never blocks: when the engine is behind the
    /// packet is dropped (and counted) and `false` is returned.
    pub fn send(&self, _packet: LocalPacket) -> bool {
        false
    }

    /// Mark one of this participant's tracks muted or unmuted (signaled to the room).
    pub async fn set_muted(&self, _track: usize, _muted: bool) -> Result<(), SfuError> {
        Err(SfuError::NotRunning)
    }

    /// Leave the room now.
    pub async fn leave(self) {}
}

impl Sfu {
    /// Bind the sockets, start the driver thread and return the handle.
    /// `registry` receives the SFU's metrics.
    pub async fn start(
        _config: SfuConfig,
        _verifier: TokenVerifier,
        _registry: &prometheus::Registry,
    ) -> Result<Sfu, SfuError> {
        Err(SfuError::NotRunning)
    }

    /// The signaling routes (WHIP, WHEP, `/ws/{room}`), with CORS and body limits,
    /// to mount in an axum server.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
    }

    /// The token verifier the SFU checks every request with.
    pub fn verifier(&self) -> &TokenVerifier {
        unimplemented!("interface stub")
    }

    /// Join a room with an in-process participant (room camera, recorder, cascade).
    pub async fn join_local(&self, _join: LocalJoin) -> Result<LocalParticipant, SfuError> {
        Err(SfuError::NotRunning)
    }

    /// Room lifecycle events.
    pub fn events(&self) -> broadcast::Receiver<RoomEvent> {
        broadcast::channel(1).1
    }

    pub async fn rooms(&self) -> Result<Vec<RoomSnapshot>, SfuError> {
        Err(SfuError::NotRunning)
    }

    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        Err(SfuError::NotRunning)
    }

    /// Remove a participant; it is told why.
    pub async fn kick(&self, _room: &str, _identity: &str, _reason: &str) -> Result<(), SfuError> {
        Err(SfuError::NotRunning)
    }

    /// Server-side mute of a participant's tracks of `kind`: forwarding stops and
    /// the participant is told (`muted_by_admin`).
    pub async fn mute(
        &self,
        _room: &str,
        _identity: &str,
        _kind: TrackKind,
        _muted: bool,
    ) -> Result<(), SfuError> {
        Err(SfuError::NotRunning)
    }

    /// Tell every peer, close every connection, stop the driver.
    pub async fn shutdown(&self) {}
}
