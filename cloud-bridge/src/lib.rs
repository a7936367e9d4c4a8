//! `cloud-bridge`: the box's links to the outside world.
//!
//! Three links, each opt-in and idle until configured, so an air-gapped site
//! runs with none of them:
//!
//! * **cascade** — publish the room to a cloud SFU (WHIP) and pull remote
//!   people down (WHEP), over one outbound link with reconnect and ICE restart;
//! * **upload** — move finished recordings to an S3-compatible store
//!   (resumable multipart, driven by the SQLite upload queue);
//! * **fleet** — MQTT telemetry, commands, desired config and last will.
//!
//! The links arrive with their own issues; this crate holds their shared
//! configuration shape so the daemon's config file already has a place for them.

use serde::{Deserialize, Serialize};

/// The daemon's `[cloud]` table. Every link is off unless configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// Media cascade into a cloud SFU; `None` = off.
    pub cascade: Option<CascadeConfig>,
    /// Recording upload; `None` = recordings stay on the box.
    pub upload: Option<UploadConfig>,
    /// Fleet management over MQTT; `None` = off.
    pub fleet: Option<FleetConfig>,
}

/// Where the cascade connects (filled in by the cascade issue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CascadeConfig {
    /// WHIP endpoint of the cloud SFU.
    pub whip_url: String,
    /// WHEP endpoint of the cloud SFU.
    pub whep_url: String,
}

/// Where recordings go (filled in by the upload issue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
}

/// The MQTT broker (filled in by the fleet issue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    pub broker: String,
    pub device_id: String,
}
