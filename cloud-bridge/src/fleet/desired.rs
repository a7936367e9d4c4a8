//! Desired config: the operator's retained message on `config/desired`, and the
//! box's answer on `config/reported`.
//!
//! The payload is JSON `{"version": "...", "config": "<the whole roombox.toml>"}`.
//! This module checks only the envelope; the TOML is validated by the daemon
//! with the same code that reads its config file.

use serde::{Deserialize, Serialize};

/// Largest desired-config payload, bytes.
pub const MAX_DESIRED_BYTES: usize = 64 * 1024;

/// A desired config as published by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredConfig {
    /// The operator's name for this config (1-64 printable characters); a box
    /// applies each version once.
    pub version: String,
    /// The complete config file (TOML).
    pub config: String,
}

/// What happened to a desired config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigStatus {
    /// Valid, written and in use (see `problems` for what needs a restart).
    Applied,
    /// Invalid: the running config is kept.
    Rejected,
    /// Valid, but applying failed: the previous config was put back.
    RolledBack,
    /// Valid and written; roomboxd is restarting into it (`applied` or
    /// `rolled_back` follows from the restarted daemon).
    Applying,
}

impl ConfigStatus {
    /// Every status, for metric labels.
    pub const ALL: [ConfigStatus; 4] =
        [ConfigStatus::Applied, ConfigStatus::Rejected, ConfigStatus::RolledBack, ConfigStatus::Applying];

    /// The status as in the JSON (`applied`, `rejected`, `rolled_back`, `applying`).
    pub fn label(self) -> &'static str {
        match self {
            ConfigStatus::Applied => "applied",
            ConfigStatus::Rejected => "rejected",
            ConfigStatus::RolledBack => "rolled_back",
            ConfigStatus::Applying => "applying",
        }
    }
}

/// The box's answer (retained on `config/reported`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// `None` when the envelope itself could not be read.
    pub version: Option<String>,
    pub status: ConfigStatus,
    /// Every problem, `key: what` (empty when applied cleanly); notes when applied.
    pub problems: Vec<String>,
    pub at: u64,
}

/// Read the envelope. The error is the reason, for the report.
pub fn parse(payload: &[u8]) -> Result<DesiredConfig, String> {
    if payload.len() > MAX_DESIRED_BYTES {
        return Err(format!("payload: larger than {MAX_DESIRED_BYTES} bytes"));
    }
    let d: DesiredConfig = serde_json::from_slice(payload).map_err(|e| format!("payload: {e}"))?;
    if d.version.is_empty() || d.version.chars().count() > 64 || d.version.chars().any(char::is_control) {
        return Err("version: 1-64 printable characters".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_desired_config_envelope_parses() {
        let d = parse(br#"{"version":"v7","config":"room = \"r\"\n"}"#).unwrap();
        assert_eq!(d, DesiredConfig { version: "v7".into(), config: "room = \"r\"\n".into() });
    }

    #[test]
    fn each_bad_desired_config_payload_is_refused_with_its_reason() {
        let big = format!(r#"{{"version":"v","config":"{}"}}"#, "a".repeat(MAX_DESIRED_BYTES));
        let cases: [(&[u8], &str); 8] = [
            (b"", "payload: EOF"),
            (b"not json", "payload: expected"),
            (b"\xff\xfe", "payload: expected"),
            (br#"{"version":"v1"}"#, "missing field `config`"),
            (br#"{"version":"","config":""}"#, "version: 1-64"),
            (br#"{"version":"a\nb","config":""}"#, "version: 1-64"),
            (br#"{"version":"v","config":"","extra":1}"#, "unknown field `extra`"),
            (big.as_bytes(), "larger than"),
        ];
        for (payload, want) in cases {
            let e = parse(payload).unwrap_err();
            assert!(
                e.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(&payload[..payload.len().min(40)])
            );
        }
        let long = format!(r#"{{"version":"{}","config":""}}"#, "v".repeat(65));
        assert!(parse(long.as_bytes()).unwrap_err().starts_with("version"));
    }
}
