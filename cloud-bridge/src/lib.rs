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
//!
//! The fleet link lives in [`fleet`]: a sans-IO core ([`fleet::FleetLink`]: MQTT
//! events, commands and ticks in with `now`, publishes / commands to run /
//! configs to apply out), JWT command verification ([`fleet::command`]) and a
//! thin `rumqttc` driver ([`fleet::driver`]). The operator's side is the
//! `roombox-fleet` binary.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
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

/// `[cloud.fleet]`: fleet control over MQTT (see `docs/fleet.md`). Absent = off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// The on-prem broker, `HOST:PORT` (TLS always; 8883 is MQTT over TLS).
    pub broker: String,
    /// This box's id: its topics are `roombox/{device_id}/...`; the broker's
    /// ACL ties it to the client certificate's common name.
    pub device_id: String,
    /// CA certificate (PEM) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// This box's client certificate (PEM; common name = `device_id`).
    pub cert_file: PathBuf,
    /// Its private key (PEM). `rotate_certificate` replaces both files.
    pub key_file: PathBuf,
    /// The fleet authority's public key (PEM): commands must be JWTs it signed.
    pub authority_key_file: PathBuf,
    /// `EdDSA` (Ed25519) or `ES256` (P-256).
    pub authority_algorithm: AuthorityAlgorithm,
    /// How often telemetry is published (retained state is re-published when it changes).
    #[serde(with = "secs")]
    pub telemetry_interval: Duration,
    /// MQTT keep-alive; the broker publishes the last will after 1.5 x this without a word.
    #[serde(with = "secs")]
    pub keep_alive: Duration,
    /// Commands whose `exp` is further away than this are refused (bounds the replay log).
    #[serde(with = "secs")]
    pub max_command_ttl: Duration,
    /// Messages held while the broker is unreachable; telemetry is dropped first, results never.
    pub offline_buffer: usize,
    /// Let the `reboot` command run `systemctl reboot`. Off: the command reports that it is not allowed.
    pub allow_reboot: bool,
    /// A desired config is applied by restarting roomboxd into it; unless the
    /// restarted daemon is ready (`/readyz`) within this, the previous config is
    /// put back and the apply reported `rolled_back`.
    #[serde(with = "secs")]
    pub apply_ready_within: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            broker: String::new(),
            device_id: String::new(),
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            authority_key_file: PathBuf::new(),
            authority_algorithm: AuthorityAlgorithm::EdDSA,
            telemetry_interval: Duration::from_secs(30),
            keep_alive: Duration::from_secs(30),
            max_command_ttl: Duration::from_secs(24 * 3600),
            offline_buffer: 256,
            allow_reboot: false,
            apply_ready_within: Duration::from_secs(60),
        }
    }
}

/// The fleet authority's signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthorityAlgorithm {
    EdDSA,
    ES256,
}

impl FleetConfig {
    /// Every problem, as `(key relative to [cloud.fleet], problem)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut bad = |k: &str, m: &str| p.push((k.to_owned(), m.to_owned()));
        if !fleet::valid_device_id(&self.device_id) {
            bad("device_id", "1-64 characters: letters, digits, '-', '_' and '.'");
        }
        match self.broker.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => bad("broker", "HOST:PORT of the MQTT broker (TLS), e.g. mqtt.example.internal:8883"),
        }
        for (k, v) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("authority_key_file", &self.authority_key_file),
        ] {
            if v.as_os_str().is_empty() {
                bad(k, "required (a PEM file)");
            }
        }
        if self.telemetry_interval < Duration::from_secs(1) {
            bad("telemetry_interval", "at least 1 (seconds)");
        }
        if self.keep_alive < Duration::from_secs(5) || self.keep_alive > Duration::from_secs(3600) {
            bad("keep_alive", "between 5 and 3600 (seconds)");
        }
        if self.max_command_ttl < Duration::from_secs(10)
            || self.max_command_ttl > Duration::from_secs(30 * 24 * 3600)
        {
            bad("max_command_ttl", "between 10 and 2592000 (seconds)");
        }
        if self.offline_buffer < 8 {
            bad("offline_buffer", "at least 8");
        }
        if self.apply_ready_within < Duration::from_secs(1)
            || self.apply_ready_within > Duration::from_secs(3600)
        {
            bad("apply_ready_within", "between 1 and 3600 (seconds)");
        }
        p
    }
}

/// Durations written as whole seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}
