//! The room's own devices as the API sees them: microphone mute, camera off,
//! and the media pipeline's status.
//!
//! MEDIA SEAM: until `roombox::media::RoomMedia` lands, [`Device`] keeps the
//! switches itself and reports the pipeline as not running. When it lands,
//! `Device::attach` takes the `RoomMedia` and the setters forward to
//! `RoomMedia::set_mic_muted` / `set_camera_off` (which stop audio at the
//! source and send a privacy slate); `status()` comes from `RoomMedia::status()`.

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// What the API returns for `GET /api/v1/device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceState {
    /// The room microphone is muted (no audio leaves the box).
    pub mic_muted: bool,
    /// The room camera is off (a privacy slate is sent).
    pub camera_off: bool,
    pub media: MediaStatus,
}

/// The capture pipeline's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaStatus {
    /// Capturing and publishing into the room.
    pub running: bool,
    /// Human-readable detail (sources, errors).
    pub detail: String,
}

/// A change to the device switches (`PATCH /api/v1/device`); absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    pub mic_muted: Option<bool>,
    pub camera_off: Option<bool>,
}

/// The room's devices.
#[derive(Debug)]
pub struct Device {
    state: RwLock<DeviceState>,
}

impl Device {
    /// No pipeline attached (yet).
    pub fn detached(detail: &str) -> Device {
        Device {
            state: RwLock::new(DeviceState {
                mic_muted: false,
                camera_off: false,
                media: MediaStatus { running: false, detail: detail.to_owned() },
            }),
        }
    }

    pub fn state(&self) -> DeviceState {
        self.state.read().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn media_running(&self) -> bool {
        self.state().media.running
    }

    /// Apply a patch; returns the new state.
    pub fn apply(&self, patch: &DevicePatch) -> DeviceState {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = patch.mic_muted {
            s.mic_muted = m;
        }
        if let Some(c) = patch.camera_off {
            s.camera_off = c;
        }
        s.clone()
    }
}
