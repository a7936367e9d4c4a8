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
//! [`upload`] is the first: a sans-IO multipart state machine, a token bucket,
//! retry with jitter, and the S3 edge (SigV4 over `reqwest`).

use serde::{Deserialize, Serialize};

pub mod upload;

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

/// Where recordings go and how fast: the `[cloud.upload]` table. See [`upload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// The S3-compatible store, `http(s)://host[:port]` (path-style requests).
    pub endpoint: String,
    pub bucket: String,
    /// SigV4 region (`us-east-1` suits most on-prem stores).
    pub region: String,
    /// A file holding `access_key_id = "…"` and `secret_access_key = "…"` (TOML);
    /// it must not be readable by group or others (mode 0600 or stricter).
    pub credentials_file: String,
    /// Prefix put before every object key (e.g. `"room-1/"`).
    pub key_prefix: String,
    /// Multipart part size, MiB (S3's floor is 5). Files no larger are PUT whole.
    pub part_size_mib: u64,
    /// Upload bandwidth cap, kbit/s, so a live meeting is never starved; 0 = no cap.
    pub max_kbit_per_s: u64,
    /// First retry delay, ms; doubled per consecutive failure, with jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay, s.
    pub retry_max_s: u64,
    /// Consecutive failures before an upload is set aside (it is retried after `park_s`).
    pub retry_max_attempts: u32,
    /// How long an upload set aside (or refused: credentials, permissions) waits, s.
    pub park_s: u64,
    /// One request's time limit, s, on top of the time the bandwidth cap needs for its body.
    pub request_timeout_s: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            credentials_file: String::new(),
            key_prefix: String::new(),
            part_size_mib: 8,
            max_kbit_per_s: 8_000,
            retry_base_ms: 1_000,
            retry_max_s: 300,
            retry_max_attempts: 12,
            park_s: 3_600,
            request_timeout_s: 60,
        }
    }
}

impl UploadConfig {
    /// Every problem as `(key under [cloud.upload], problem)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut bad = |k: &str, m: &str| p.push((k.to_owned(), m.to_owned()));
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            bad("endpoint", "an http:// or https:// URL of the S3-compatible store");
        }
        if self.bucket.is_empty() || self.bucket.contains('/') {
            bad("bucket", "a bucket name (no '/')");
        }
        if self.region.is_empty() {
            bad("region", "must not be empty (SigV4 signs it; us-east-1 suits most on-prem stores)");
        }
        if self.credentials_file.is_empty() {
            bad("credentials_file", "path of a 0600 TOML file with access_key_id and secret_access_key");
        }
        if !(5..=5 * 1024).contains(&self.part_size_mib) {
            bad("part_size_mib", "between 5 (S3's minimum part) and 5120");
        }
        if self.retry_base_ms == 0 || self.retry_max_s == 0 || self.retry_max_s * 1000 < self.retry_base_ms {
            bad("retry_max_s", "retry_base_ms >= 1 and retry_max_s >= retry_base_ms");
        }
        if self.retry_max_attempts == 0 {
            bad("retry_max_attempts", "at least 1");
        }
        if self.request_timeout_s == 0 {
            bad("request_timeout_s", "at least 1");
        }
        p
    }
}

/// The MQTT broker (filled in by the fleet issue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    pub broker: String,
    pub device_id: String,
}
