//! The daemon's configuration: one TOML file, layered.
//!
//! 1. compiled defaults ([`DaemonConfig::default`]) that suit an air-gapped room;
//! 2. the file (`/etc/roombox/roombox.toml`): unknown keys and wrong types are
//!    rejected, each with its line number;
//! 3. command-line flags (applied by `main` through [`Overrides`]);
//! 4. [`DaemonConfig::validate`], which reports *every* problem at once.
//!
//! [`load_str`] collects all problems of a file in one pass so that
//! `roomboxd check-config` can print them together: after a deserialization error
//! the offending entry is dropped from the parsed document and parsing resumes.
//! `docs/roombox.example.toml` documents every key (a test parses it).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where the appliance's config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/roombox/roombox.toml";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Board profile name (`boards/NAME.toml`); `None` = generic (no GPIO, synthetic media allowed).
    pub board: Option<String>,
    /// Where state lives: the SQLite store, the signing key, the TLS certificate.
    pub data_dir: PathBuf,
    /// `region` label of the seed's metrics.
    pub region: String,
    /// `server_id` label of the seed's metrics; empty = the machine's hostname.
    pub server_id: String,
    /// The room the box's own camera and microphone publish into (and whose
    /// state the button panel and its LEDs show).
    pub room: String,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    /// The SFU (sfu-core's own table).
    pub sfu: sfu_core::SfuConfig,
    /// The room's camera, microphone and speakers. With a `board`, the board
    /// profile gives the defaults and the keys written here win.
    pub media: crate::media::MediaConfig,
    /// Links to the outside (all off by default).
    pub cloud: cloud_bridge::CloudConfig,
    /// Server-side recording: where files go, the free-space floor.
    pub recording: crate::recording::RecordingConfig,
    /// The `[media]` keys the file wrote (filled by [`load_str`]); with a board
    /// profile these keep the file's values, the others take the board's.
    #[serde(skip)]
    pub media_keys: Vec<String>,
    /// The file this config was read from (`roomboxd run --config`); the fleet
    /// link writes a desired config there. `None` when built in code.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            board: None,
            data_dir: PathBuf::from("/var/lib/roombox"),
            region: "on-prem".into(),
            server_id: String::new(),
            room: "room".into(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            sfu: sfu_core::SfuConfig::default(),
            media: crate::media::MediaConfig::default(),
            cloud: cloud_bridge::CloudConfig::default(),
            recording: crate::recording::RecordingConfig::default(),
            media_keys: Vec::new(),
            config_file: None,
        }
    }
}

/// `[http]`: the HTTPS server (API, web client, signaling).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// HTTPS (default). Off only behind a TLS-terminating proxy: browsers
    /// allow the camera only on a secure origin.
    pub tls: bool,
    /// The owner's certificate chain (PEM). Unset: a self-signed one made on first boot.
    pub cert_file: Option<PathBuf>,
    /// The owner's private key (PEM); set together with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Extra DNS names for the self-signed certificate (hostname and IPs are always in).
    pub extra_names: Vec<String>,
    /// Also listen here with plain HTTP and redirect to HTTPS (e.g. `0.0.0.0:80`).
    pub redirect_listen: Option<SocketAddr>,
    /// Largest request body on the API, bytes.
    pub max_body_bytes: usize,
    /// Requests per minute one client address may make to the API and the
    /// signaling routes (`/api/`, `/whip/`, `/whep/`, `/ws/`); beyond, 429 +
    /// `Retry-After`. 0 = no limit.
    pub rate_limit_per_minute: u32,
    /// Requests one client address may make at once before the per-minute rate applies.
    pub rate_limit_burst: u32,
    /// Connections open at once (TLS handshakes included); past it a new one is closed at once.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// A TLS handshake must finish within this time (half-open handshakes).
    #[serde(with = "human_duration")]
    pub tls_handshake_timeout: Duration,
    /// A request's headers must arrive within this time (slowloris).
    #[serde(with = "human_duration")]
    pub header_read_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            tls: true,
            cert_file: None,
            key_file: None,
            extra_names: Vec::new(),
            redirect_listen: None,
            max_body_bytes: 64 * 1024,
            rate_limit_per_minute: 1200,
            rate_limit_burst: 300,
            max_connections: 512,
            max_connections_per_ip: 128,
            tls_handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// `[auth]`: tokens, logins, an optional on-prem identity provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(with = "human_duration")]
    pub access_ttl: Duration,
    #[serde(with = "human_duration")]
    pub refresh_ttl: Duration,
    /// Longest lifetime an admin may ask for when issuing a token through the API.
    #[serde(with = "human_duration")]
    pub max_issued_ttl: Duration,
    /// Failed logins per user within `login_window` before that user is locked out.
    pub login_max_failures_per_user: u32,
    /// Login attempts per client IP within `login_window`.
    pub login_max_attempts_per_ip: u32,
    #[serde(with = "human_duration")]
    pub login_window: Duration,
    /// Clock skew tolerated on a token's `exp`/`nbf` (the box's own tokens and
    /// the identity provider's): a token is still taken this long after it expired.
    #[serde(with = "human_duration")]
    pub token_leeway: Duration,
    /// Verify tokens of an on-prem OpenID Connect provider through its JWKS.
    pub oidc: Option<OidcConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            max_issued_ttl: Duration::from_secs(24 * 3600),
            login_max_failures_per_user: 5,
            login_max_attempts_per_ip: 30,
            login_window: Duration::from_secs(15 * 60),
            token_leeway: Duration::from_secs(sfu_core::auth::DEFAULT_LEEWAY_SECS),
            oidc: None,
        }
    }
}

/// `[auth.oidc]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// Required `iss` of the provider's tokens.
    pub issuer: String,
    /// Required `aud`; empty = not checked.
    pub audience: String,
    /// A JWKS file on the box.
    pub jwks_file: Option<PathBuf>,
    /// Or the provider's JWKS URL (on-prem; `https://` unless `allow_http`).
    pub jwks_url: Option<String>,
    /// CA certificate (PEM) that signed the provider's TLS certificate.
    pub ca_file: Option<PathBuf>,
    /// Allow a plain `http://` JWKS URL (lab setups only).
    pub allow_http: bool,
    /// How often the JWKS is fetched again.
    #[serde(with = "human_duration")]
    pub refresh: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_file: None,
            jwks_url: None,
            ca_file: None,
            allow_http: false,
            refresh: Duration::from_secs(3600),
        }
    }
}

/// How SQLite syncs commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync the WAL on every commit: a power cut loses nothing committed (default).
    Full,
    /// fsync only at checkpoints: consistent after a power cut, but the last
    /// commits may be lost. Fewer writes to an SD card.
    Normal,
}

/// `[store]`: the SQLite file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The database file; relative paths are under `data_dir`.
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// Upper bound on the database size, MiB (0 = only the disk limits it).
    pub max_size_mib: u64,
    /// Closed meetings, sessions and audit entries older than this are deleted (0 = keep).
    pub retention_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("roombox.db"),
            synchronous: Synchronous::Full,
            max_size_mib: 0,
            retention_days: 365,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `roombox=debug,sfu_core=info`, …). `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Values from the command line that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub board: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

impl DaemonConfig {
    /// Apply command-line overrides (layer 3).
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(b) = &o.board {
            self.board = Some(b.clone());
        }
        if let Some(d) = &o.data_dir {
            self.data_dir = d.clone();
        }
        if let Some(l) = o.listen {
            self.http.listen = l;
        }
    }

    /// The store's file, resolved against `data_dir`.
    pub fn store_path(&self) -> PathBuf {
        if self.store.path.is_absolute() {
            self.store.path.clone()
        } else {
            self.data_dir.join(&self.store.path)
        }
    }

    /// Every semantic problem, as `(dotted key, problem)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |k: &str, m: &str| p.push((k.to_owned(), m.to_owned()));
        if let Some(b) = &self.board
            && (b.is_empty() || !b.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            bad("board", "a board profile name: letters, digits, '-' and '_'");
        }
        if self.data_dir.as_os_str().is_empty() {
            bad("data_dir", "must not be empty");
        }
        if !crate::names::valid_room(&self.room) {
            bad("room", crate::names::ROOM_RULE);
        }
        if self.region.is_empty() {
            bad("region", "must not be empty (it labels the metrics)");
        }
        if self.http.cert_file.is_some() != self.http.key_file.is_some() {
            bad("http.cert_file", "set cert_file and key_file together");
        }
        if self.http.max_connections < 8 || self.http.max_connections_per_ip == 0 {
            bad("http.max_connections", "max_connections must be at least 8 and max_connections_per_ip at least 1");
        }
        if self.http.tls_handshake_timeout.is_zero() || self.http.header_read_timeout.is_zero() {
            bad("http.header_read_timeout", "tls_handshake_timeout and header_read_timeout must be above 0");
        }
        if self.http.max_body_bytes < 1024 {
            bad("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.rate_limit_per_minute > 0 && self.http.rate_limit_burst == 0 {
            bad("http.rate_limit_burst", "at least 1 when http.rate_limit_per_minute is set");
        }
        if let Some(r) = self.http.redirect_listen {
            if r == self.http.listen && r.port() != 0 {
                bad("http.redirect_listen", "must differ from http.listen");
            }
            if !self.http.tls {
                bad("http.redirect_listen", "redirecting to HTTPS needs http.tls = true");
            }
        }
        let a = &self.auth;
        if a.access_ttl < Duration::from_secs(60) || a.access_ttl > Duration::from_secs(3600) {
            bad("auth.access_ttl", "between 1m and 1h (short-lived; refresh tokens renew it)");
        }
        if a.refresh_ttl < a.access_ttl || a.refresh_ttl > Duration::from_secs(90 * 24 * 3600) {
            bad("auth.refresh_ttl", "between auth.access_ttl and 90d");
        }
        if a.max_issued_ttl < Duration::from_secs(60) {
            bad("auth.max_issued_ttl", "at least 1m");
        }
        if a.login_max_failures_per_user == 0 {
            bad("auth.login_max_failures_per_user", "at least 1");
        }
        if a.login_max_attempts_per_ip == 0 {
            bad("auth.login_max_attempts_per_ip", "at least 1");
        }
        if a.login_window < Duration::from_secs(1) {
            bad("auth.login_window", "at least 1s");
        }
        if a.token_leeway > Duration::from_secs(sfu_core::auth::MAX_LEEWAY_SECS) {
            bad("auth.token_leeway", "at most 5m (it extends every token's life)");
        }
        if let Some(o) = &a.oidc {
            if o.issuer.is_empty() {
                bad("auth.oidc.issuer", "the provider's issuer URL is required");
            }
            match (&o.jwks_file, &o.jwks_url) {
                (None, None) => bad("auth.oidc.jwks_file", "set jwks_file or jwks_url"),
                (Some(_), Some(_)) => bad("auth.oidc.jwks_url", "set only one of jwks_file and jwks_url"),
                _ => {}
            }
            if let Some(u) = &o.jwks_url {
                let https = u.starts_with("https://");
                let http = u.starts_with("http://");
                if !(https || (http && o.allow_http)) {
                    bad("auth.oidc.jwks_url", "must be an https:// URL (or http:// with allow_http = true)");
                }
            }
            if o.refresh < Duration::from_secs(60) {
                bad("auth.oidc.refresh", "at least 1m");
            }
        }
        if self.store.path.as_os_str().is_empty() {
            bad("store.path", "must not be empty");
        }
        if self.log.level.trim().is_empty()
            || tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err()
        {
            bad("log.level", "not a valid tracing filter (e.g. \"info\" or \"roombox=debug\")");
        }
        if let Some(u) = &self.cloud.upload {
            for (k, m) in u.validate() {
                p.push((format!("cloud.upload.{k}"), m));
            }
        }
        if let Some(f) = &self.cloud.fleet {
            for (k, m) in f.validate() {
                p.push((format!("cloud.fleet.{k}"), m));
            }
        }
        if let Err(problems) = self.sfu.validate() {
            for pr in problems {
                p.push((format!("sfu.{}", pr.key), pr.problem));
            }
        }
        // The media the daemon will run: with a board, its defaults under the file's keys.
        let board = match &self.board {
            Some(name) if !p.iter().any(|(k, _)| k == "board") => {
                match crate::board::BoardProfile::load(name) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        p.push(("board".into(), e.to_string()));
                        None
                    }
                }
            }
            _ => None,
        };
        let media = crate::profile::resolve_media(self, board.as_ref());
        if self.media.enabled {
            for (key, problem) in media.problems() {
                p.push((format!("media.{key}"), problem));
            }
        }
        p
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line; `None` when the problem has no place in the file.
    pub line: Option<usize>,
    /// Dotted key, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: ")?,
            None => write!(f, "(no line): ")?,
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// Read, parse and validate a config file.
pub fn load_file(path: &Path) -> Result<DaemonConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    load_str(&text, &Overrides::default())
        .map_err(|problems| ConfigError::Invalid { path: path.to_owned(), problems })
}

/// The config file fuzz target's check (`fuzz/fuzz_targets/daemon_config.rs`,
/// replayed on stable by `tests/security.rs`): any bytes are refused with
/// problems or load into a valid config that writes out and loads back
/// unchanged. Panics only when that breaks.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = load_str(text, &Overrides::default()) else { return };
    assert!(cfg.validate().is_empty(), "a loaded config is valid");
    let written = toml::to_string(&cfg).expect("a loaded config writes out");
    match load_str(&written, &Overrides::default()) {
        Ok(mut back) => {
            // which [media] keys the file named (for the board profile): the written file names them all
            back.media_keys = cfg.media_keys.clone();
            assert_eq!(back, cfg, "written and loaded back unchanged");
        }
        Err(p) => panic!("a written config loads back: {p:?}\n{written}"),
    }
}

/// Parse `text` over the defaults, apply `overrides`, validate. Returns every problem.
pub fn load_str(text: &str, overrides: &Overrides) -> Result<DaemonConfig, Vec<Problem>> {
    let lines = LineIndex::new(text);
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            // A syntax error: the parser stops; report what it can.
            let (_, errs) = DeTable::parse_recoverable(text);
            let mut out: Vec<Problem> = errs
                .iter()
                .map(|e| Problem {
                    line: e.span().map(|s| lines.line(s.start)),
                    key: None,
                    message: format!("TOML syntax: {}", e.message().trim()),
                })
                .collect();
            if out.is_empty() {
                out.push(Problem {
                    line: e.span().map(|s| lines.line(s.start)),
                    key: None,
                    message: format!("TOML syntax: {}", e.message().trim()),
                });
            }
            return Err(out);
        }
    };
    let mut doc = doc;
    let mut problems = Vec::new();
    let mut cfg = None;
    for _ in 0..200 {
        let de = toml::de::Deserializer::from(doc.clone());
        match DaemonConfig::deserialize(de) {
            Ok(c) => {
                cfg = Some(c);
                break;
            }
            Err(e) => {
                let span = e.span();
                let (key, removed) = match &span {
                    Some(s) => remove_entry_at(doc.get_mut(), s.clone(), ""),
                    None => (None, false),
                };
                problems.push(Problem {
                    line: span.map(|s| lines.line(s.start)),
                    key: key.filter(|k| !k.is_empty()),
                    message: e.message().trim().replace('\n', " "),
                });
                if !removed {
                    break;
                }
            }
        }
    }
    let Some(mut cfg) = cfg else {
        return Err(problems);
    };
    cfg.media_keys = match doc.get_ref().iter().find(|(k, _)| k.get_ref().as_ref() == "media") {
        Some((_, v)) => match v.get_ref() {
            DeValue::Table(t) => {
                let mut keys: Vec<String> = t.iter().map(|(k, _)| k.get_ref().to_string()).collect();
                keys.sort();
                keys
            }
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    cfg.apply(overrides);
    for (key, message) in cfg.validate() {
        problems.push(Problem { line: find_key_line(doc.get_ref(), &key, &lines), key: Some(key), message });
    }
    if problems.is_empty() { Ok(cfg) } else { Err(problems) }
}

/// Remove the entry of `table` (recursively) whose key or value span covers
/// `span`; returns its dotted key and whether something was removed.
fn remove_entry_at(
    table: &mut DeTable<'_>,
    span: std::ops::Range<usize>,
    prefix: &str,
) -> (Option<String>, bool) {
    let covers = |s: std::ops::Range<usize>| s.start <= span.start && span.end <= s.end.max(s.start + 1);
    let mut hit: Option<Spanned<std::borrow::Cow<'_, str>>> = None;
    let mut descend: Option<String> = None;
    for (k, v) in table.iter() {
        let key_hit = covers(k.span());
        let val = v.span();
        if key_hit || (covers(val.clone()) && !matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_))) {
            hit = Some(k.clone());
            break;
        }
        if covers(val) || matches!(v.get_ref(), DeValue::Table(_)) {
            // A table's span may be just its header; look inside for any table.
            if let DeValue::Table(_) | DeValue::Array(_) = v.get_ref()
                && descend.is_none()
                && contains_span(v, &span)
            {
                descend = Some(k.get_ref().to_string());
            }
        }
    }
    if let Some(k) = hit {
        let name = k.get_ref().to_string();
        table.remove(&k);
        return (Some(join(prefix, &name)), true);
    }
    if let Some(name) = descend {
        let key = table.keys().find(|k| k.get_ref().as_ref() == name).cloned();
        if let Some(key) = key {
            let sub_prefix = join(prefix, &name);
            if let Some(v) = table.get_mut(&key) {
                match v.get_mut() {
                    DeValue::Table(t) => {
                        let (k, removed) = remove_entry_at(t, span.clone(), &sub_prefix);
                        if removed {
                            return (k, true);
                        }
                    }
                    DeValue::Array(a) => {
                        for (i, item) in a.iter_mut().enumerate() {
                            if let DeValue::Table(t) = item.get_mut() {
                                let (k, removed) =
                                    remove_entry_at(t, span.clone(), &format!("{sub_prefix}[{i}]"));
                                if removed {
                                    return (k, true);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            // The error is about the value as a whole (e.g. a table where a string belongs).
            table.remove(&key);
            return (Some(sub_prefix), true);
        }
    }
    (None, false)
}

fn contains_span(v: &Spanned<DeValue<'_>>, span: &std::ops::Range<usize>) -> bool {
    let s = v.span();
    if s.start <= span.start && span.end <= s.end {
        return true;
    }
    match v.get_ref() {
        DeValue::Table(t) => t.iter().any(|(k, v)| {
            let ks = k.span();
            (ks.start <= span.start && span.end <= ks.end) || contains_span(v, span)
        }),
        DeValue::Array(a) => a.iter().any(|v| contains_span(v, span)),
        _ => false,
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
}

/// The line of a dotted key in the parsed document (the nearest existing parent
/// when the key itself is not written, i.e. a default is at fault).
fn find_key_line(doc: &DeTable<'_>, dotted: &str, lines: &LineIndex) -> Option<usize> {
    let mut table = doc;
    let mut found = None;
    for part in dotted.split('.') {
        let part = part.split('[').next().unwrap_or(part);
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part) else {
            break;
        };
        found = Some(lines.line(k.span().start));
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found
}

/// Byte offset → 1-based line.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.char_indices().filter(|(_, c)| *c == '\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }
    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

/// Durations written as `"15m"`, `"7d"`, `"90s"` (humantime).
pub mod human_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"15m\" or \"7d\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_suit_an_air_gapped_room() {
        let c = DaemonConfig::default();
        assert_eq!(c.validate(), Vec::<(String, String)>::new());
        assert!(c.http.tls);
        assert!(c.auth.oidc.is_none());
        assert!(c.cloud.cascade.is_none() && c.cloud.upload.is_none() && c.cloud.fleet.is_none());
        assert!(c.sfu.ice_servers.is_empty());
        assert_eq!(c.store.synchronous, Synchronous::Full);
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(load_str("", &Overrides::default()).unwrap(), DaemonConfig::default());
    }

    #[test]
    fn a_typo_is_reported_with_its_line() {
        let text = "region = \"hq\"\n\n[http]\nlisten = \"0.0.0.0:8443\"\nlistne = \"x\"\n";
        let p = load_str(text, &Overrides::default()).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(5));
        assert!(p[0].message.contains("listne"), "{}", p[0]);
    }

    #[test]
    fn every_problem_is_reported_each_with_its_line() {
        let text = r#"# a config with three mistakes
regoin = "hq"
[http]
listen = "not an address"
[auth]
access_ttl = "2h"
[sfu.limits]
max_rooms = 0
"#;
        let p = load_str(text, &Overrides::default()).unwrap_err();
        let lines: Vec<_> = p.iter().map(|p| p.line).collect();
        assert!(lines.contains(&Some(2)), "unknown key: {p:#?}");
        assert!(lines.contains(&Some(4)), "bad address: {p:#?}");
        assert!(lines.contains(&Some(6)), "ttl out of range: {p:#?}");
        assert!(lines.contains(&Some(8)), "sfu validate: {p:#?}");
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn media_problems_have_their_lines() {
        let text = r#"room = "demo"
[media]
fps = 0
widht = 640
period_ms = 15
video = { source = "v4l2", device = "/dev/video0", formats = ["H264"] }
audio = { source = "webcam" }
"#;
        let p = load_str(text, &Overrides::default()).unwrap_err();
        let at = |line: usize| p.iter().find(|p| p.line == Some(line)).map(|p| p.to_string());
        assert!(at(3).is_some_and(|m| m.contains("media.fps")), "{p:#?}");
        assert!(at(4).is_some_and(|m| m.contains("widht")), "unknown key: {p:#?}");
        assert!(at(5).is_some_and(|m| m.contains("media.period_ms")), "{p:#?}");
        assert!(at(6).is_some_and(|m| m.contains("H264")), "{p:#?}");
        assert!(at(7).is_some_and(|m| m.contains("webcam")), "{p:#?}");
        // A board that does not exist is a problem of `board`.
        let p = load_str("board = \"nosuch\"\n", &Overrides::default()).unwrap_err();
        assert_eq!((p[0].line, p[0].key.as_deref()), (Some(1), Some("board")), "{p:#?}");
        // Media switched off is not checked.
        assert!(load_str("[media]\nenabled = false\nfps = 0\n", &Overrides::default()).is_ok());
    }

    #[test]
    fn an_unknown_table_is_reported() {
        let p = load_str("[htpp]\nlisten = \"0.0.0.0:1\"\n", &Overrides::default()).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(1));
    }

    #[test]
    fn a_syntax_error_has_a_line() {
        let p = load_str("a = 1\nb = \n", &Overrides::default()).unwrap_err();
        assert_eq!(p[0].line, Some(2), "{p:?}");
    }

    #[test]
    fn flags_override_the_file() {
        let o = Overrides {
            board: Some("rpi5".into()),
            data_dir: Some("/tmp/x".into()),
            listen: Some("127.0.0.1:9".parse().unwrap()),
        };
        let c = load_str("board = \"rpi4\"\n", &o).unwrap();
        assert_eq!(c.board.as_deref(), Some("rpi5"));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.http.listen.port(), 9);
    }

    #[test]
    fn the_documented_example_parses_and_says_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/roombox.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = load_str(&text, &Overrides::default()).unwrap_or_else(|p| panic!("{p:#?}"));
        // Every key of the defaults is written in the example (commented or not).
        let defaults = toml::Table::try_from(DaemonConfig::default()).unwrap();
        fn walk(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match v {
                    toml::Value::Table(sub) if !sub.is_empty() => walk(sub, &key, out),
                    _ => out.push(key),
                }
            }
        }
        let mut keys = Vec::new();
        walk(&defaults, "", &mut keys);
        // Tables that are absent by default (off) still document their keys.
        walk(&toml::Table::try_from(cloud_bridge::FleetConfig::default()).unwrap(), "cloud.fleet", &mut keys);
        for key in keys {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(text.contains(&format!("{leaf} =")), "docs/roombox.example.toml does not document {key}");
        }
        assert!(c.validate().is_empty());
    }
}
