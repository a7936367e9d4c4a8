//! Wires cloud-bridge's fleet link into the daemon: commands onto the `Device`
//! and friends, the command log in SQLite, desired config through the same
//! config code as the file, telemetry and state from what the daemon has, the
//! admin page's view and the metrics.
//!
//! Off unless `[cloud.fleet]` is configured. See `docs/fleet.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use cloud_bridge::FleetConfig;
use cloud_bridge::fleet::command::Refusal;
use cloud_bridge::fleet::driver::{self, Host, Outcome, SharedStatus, unix_now};
use cloud_bridge::fleet::{Command, CommandRecord, CommandResult, ConfigReport, ConfigStatus, DesiredConfig};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, Opts};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{DaemonConfig, Overrides};
use crate::device::Device;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// `start_recording` / `stop_recording`: the same recorder as the REST API
/// (`args.room`, default the box's own room), audited with actor `fleet`.
async fn recording_command(
    recordings: &Arc<crate::recording::Recordings>,
    default_room: &str,
    start: bool,
    args: &serde_json::Value,
) -> Result<String, String> {
    let room = match args.get("room") {
        None | Some(serde_json::Value::Null) => default_room.to_owned(),
        Some(serde_json::Value::String(r)) if !r.is_empty() => r.clone(),
        Some(_) => return Err("args.room must be a room name".into()),
    };
    if start {
        let v = recordings.start(&room, "fleet").await.map_err(|e| e.to_string())?;
        Ok(format!("recording {} started in room {}", v.id, v.room))
    } else {
        let v = recordings.stop(&room, "fleet").await.map_err(|e| e.to_string())?;
        Ok(format!("recording {} in room {} {}", v.id, v.room, v.state))
    }
}

/// What the cascade commands say until the cascade lands.
pub fn cascade_command(join: bool, args: &serde_json::Value) -> Result<String, String> {
    let _ = (join, args);
    Err("cascade not available yet".into())
}

/// The fleet link as `GET /api/v1/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetStatus {
    /// `[cloud.fleet]` is configured.
    pub enabled: bool,
    /// `off`, `connecting`, `connected`, `disconnected`, `stopped` or `error`.
    pub state: String,
    pub broker: Option<String>,
    pub device_id: Option<String>,
    pub last_error: Option<String>,
    /// Unix seconds of the last connect.
    pub connected_at: Option<u64>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub reconnects: u64,
    /// Refused commands by reason.
    pub refused: BTreeMap<String, u64>,
    /// Messages held while the broker is unreachable.
    pub buffered: usize,
    /// The desired config version last applied or rejected.
    pub config_version: Option<String>,
    /// Desired config reports since start, by status (`applied`, `rejected`, `rolled_back`, `applying`).
    pub config_reports: BTreeMap<String, u64>,
}

/// A cheap handle on the link's state (off when not configured).
#[derive(Clone, Default)]
pub struct FleetView {
    status: Option<SharedStatus>,
    error: Option<String>,
    reports: Option<tokio::sync::mpsc::Sender<ConfigReport>>,
}

impl FleetView {
    pub fn status(&self) -> FleetStatus {
        match (&self.status, &self.error) {
            (Some(s), _) => {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner).clone();
                FleetStatus {
                    enabled: true,
                    state: s.state,
                    broker: Some(s.broker),
                    device_id: Some(s.device_id),
                    last_error: s.last_error,
                    connected_at: s.connected_at,
                    messages_in: s.stats.messages_in,
                    messages_out: s.stats.messages_out,
                    reconnects: s.stats.reconnects,
                    refused: s.stats.refused,
                    buffered: s.stats.buffered,
                    config_version: s.stats.config_version,
                    config_reports: s.stats.config_reports,
                }
            }
            (None, Some(e)) => FleetStatus {
                enabled: true,
                state: "error".into(),
                last_error: Some(e.clone()),
                ..FleetStatus::default()
            },
            (None, None) => FleetStatus { state: "off".into(), ..FleetStatus::default() },
        }
    }

    /// Publish a config report the link did not make itself (an apply by restart's outcome).
    pub fn report(&self, r: ConfigReport) {
        match &self.reports {
            Some(tx) => {
                if let Err(e) = tx.try_send(r) {
                    tracing::error!(error = %e, "fleet: a config report could not be queued");
                }
            }
            None => tracing::warn!(report = ?r, "fleet: no link to report the desired config's outcome on"),
        }
    }
}

/// What the link's host needs from the daemon.
struct DaemonHost {
    cfg: Arc<DaemonConfig>,
    fleet: FleetConfig,
    store: Store,
    device: Arc<Device>,
    recordings: Arc<crate::recording::Recordings>,
    sfu: Option<sfu_core::Sfu>,
    metrics: Arc<Metrics>,
    sampler: Mutex<Sampler>,
}

/// Start the fleet link when configured; register its metrics either way.
pub async fn start(
    cfg: Arc<DaemonConfig>,
    store: Store,
    device: Arc<Device>,
    recordings: Arc<crate::recording::Recordings>,
    sfu: Option<sfu_core::Sfu>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> (FleetView, Option<JoinHandle<()>>) {
    let Some(fleet) = cfg.cloud.fleet.clone() else {
        register_metrics(&metrics, FleetView::default());
        return (FleetView::default(), None);
    };
    let loaded = store
        .call(|c| {
            let records = load_records(c)?;
            let version = crate::store::q::get_setting(c, VERSION_KEY)?;
            Ok((records, version))
        })
        .await;
    let (records, version) = match loaded {
        Ok(v) => v,
        Err(e) => return failed(&metrics, format!("the command log cannot be read: {e}")),
    };
    let host = Arc::new(DaemonHost {
        cfg: cfg.clone(),
        fleet: fleet.clone(),
        store,
        device,
        recordings,
        sfu,
        metrics: metrics.clone(),
        sampler: Mutex::new(Sampler::default()),
    });
    match driver::start(&fleet, records, version, host, shutdown) {
        Ok(t) => {
            tracing::info!(broker = %fleet.broker, device_id = %fleet.device_id, "fleet link starting");
            let view = FleetView { status: Some(t.status), error: None, reports: Some(t.reports) };
            register_metrics(&metrics, view.clone());
            (view, Some(t.task))
        }
        Err(e) => failed(&metrics, e.to_string()),
    }
}

fn failed(metrics: &Metrics, e: String) -> (FleetView, Option<JoinHandle<()>>) {
    tracing::error!(error = %e, "the fleet link cannot start; the box runs without it");
    let view = FleetView { status: None, error: Some(e), reports: None };
    register_metrics(metrics, view.clone());
    (view, None)
}

// ---------------------------------------------------------------------------
// The command log (SQLite)

// The table `fleet_commands` is store migration 5.

const VERSION_KEY: &str = "fleet.config_version";

fn load_records(c: &rusqlite::Connection) -> Result<Vec<CommandRecord>, StoreError> {
    let mut st = c.prepare("SELECT id, name, expires_at, token_sha256, result, acked FROM fleet_commands")?;
    let rows = st
        .query_map([], |r| {
            let result: Option<String> = r.get(4)?;
            Ok(CommandRecord {
                id: r.get(0)?,
                name: r.get(1)?,
                expires_at: r.get::<_, i64>(2)?.max(0) as u64,
                token_sha256: r.get(3)?,
                result: result.and_then(|j| serde_json::from_str::<CommandResult>(&j).ok()),
                acked: r.get::<_, i64>(5)? != 0,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn save_record(c: &rusqlite::Connection, r: &CommandRecord) -> Result<(), StoreError> {
    let result = r.result.as_ref().and_then(|x| serde_json::to_string(x).ok());
    c.execute(
        "INSERT INTO fleet_commands(id, name, expires_at, token_sha256, result, acked) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET result = excluded.result, acked = excluded.acked",
        params![r.id, r.name, r.expires_at as i64, r.token_sha256, result, r.acked as i64],
    )?;
    Ok(())
}

/// The stored record of a command id (tests, support).
pub fn stored_record(c: &rusqlite::Connection, id: &str) -> Result<Option<CommandRecord>, StoreError> {
    let found: Option<String> =
        c.query_row("SELECT id FROM fleet_commands WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    Ok(match found {
        Some(_) => load_records(c)?.into_iter().find(|r| r.id == id),
        None => None,
    })
}

// ---------------------------------------------------------------------------
// Commands

impl Host for DaemonHost {
    async fn run(&self, cmd: Command) -> Result<Outcome, String> {
        let a = &cmd.args;
        match cmd.name.as_str() {
            "start_recording" => {
                recording_command(&self.recordings, &self.cfg.room, true, a).await.map(Outcome::done)
            }
            "stop_recording" => {
                recording_command(&self.recordings, &self.cfg.room, false, a).await.map(Outcome::done)
            }
            "mute" => {
                let mic = arg_bool(a, "mic")?.unwrap_or(true);
                self.device.set_mic_muted(mic);
                if let Some(cam) = arg_bool(a, "camera_off")? {
                    self.device.set_camera_off(cam);
                }
                let s = self.device.state();
                Ok(Outcome::done(format!(
                    "microphone {}, camera {}",
                    if s.mic_muted { "muted" } else { "on" },
                    if s.camera_off { "off" } else { "on" }
                )))
            }
            "join_meeting" => cascade_command(true, a).map(Outcome::done),
            "leave_meeting" => cascade_command(false, a).map(Outcome::done),
            "reboot" => {
                if !self.fleet.allow_reboot {
                    return Err("reboot is not allowed on this box (cloud.fleet.allow_reboot = false)".into());
                }
                // Give the result a moment to leave before the box goes down.
                tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                    match tokio::process::Command::new("systemctl").arg("reboot").status().await {
                        Ok(s) if s.success() => {}
                        Ok(s) => tracing::error!(status = %s, "systemctl reboot failed"),
                        Err(e) => tracing::error!(error = %e, "systemctl reboot could not run"),
                    }
                });
                Ok(Outcome::done("rebooting in 3 s (systemctl reboot)"))
            }
            "rotate_certificate" => {
                let fleet = self.fleet.clone();
                let cert = a.get("certificate").and_then(|c| c.as_str()).map(str::to_owned);
                tokio::task::spawn_blocking(move || rotate_certificate(&fleet, cert.as_deref()))
                    .await
                    .map_err(|e| e.to_string())?
            }
            "install_update" => {
                let url = a
                    .get("bundle_url")
                    .and_then(|u| u.as_str())
                    .filter(|u| !u.is_empty())
                    .ok_or("args.bundle_url (a string) is required")?
                    .to_owned();
                let dir = self.cfg.data_dir.clone();
                match tokio::task::spawn_blocking(move || crate::update::install(&url, &dir)).await {
                    Ok(Ok(o)) => Ok(Outcome::done(o.message)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the updater stopped: {e}")),
                }
            }
            other => Err(format!("unknown command {other}")),
        }
    }

    async fn apply_config(&self, desired: DesiredConfig) -> ConfigReport {
        let cfg = self.cfg.clone();
        let (mut report, restart) = tokio::task::spawn_blocking(move || {
            apply_desired(&cfg, &desired, unix_now(), &|p, b| write_atomically(p, b))
        })
        .await
        .unwrap_or_else(|e| {
            let problems = vec![format!("internal: {e}")];
            (ConfigReport { version: None, status: ConfigStatus::Rejected, problems, at: unix_now() }, false)
        });
        if let Some(v) = report.version.clone() {
            let now = unix_now() as i64;
            if let Err(e) =
                self.store.call(move |c| crate::store::q::set_setting(c, VERSION_KEY, &v, now)).await
            {
                tracing::warn!(error = %e, "the applied config version could not be stored");
            }
        }
        // Live apply (crate::config_apply): restart into it, keep it only if it comes up ready.
        if restart
            && let (Some(v), Some(apply)) = (report.version.clone(), crate::config_apply::current())
            && apply.written(&v)
        {
            report.status = ConfigStatus::Applying;
            report.problems =
                vec!["written; roomboxd restarts with it (rolled back unless ready in time)".into()];
        }
        report
    }

    fn config_reported(&self, report: &ConfigReport) {
        if report.status == ConfigStatus::Applying {
            crate::config_apply::request_restart();
        }
    }

    async fn persist(&self, rec: CommandRecord) -> Result<(), String> {
        self.store.call(move |c| save_record(c, &rec)).await.map_err(|e| e.to_string())
    }

    async fn forget(&self, id: String) -> Result<(), String> {
        self.store
            .call(move |c| {
                c.execute("DELETE FROM fleet_commands WHERE id = ?1", [id])?;
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())
    }

    async fn telemetry(&self) -> serde_json::Value {
        let stats = match &self.sfu {
            Some(s) => s.stats().await.ok(),
            None => None,
        };
        let bytes = stats.as_ref().map(|s| s.forwarded_bytes).unwrap_or(0);
        let (bitrate, cpu) = self.sampler.lock().unwrap_or_else(PoisonError::into_inner).sample(
            Instant::now(),
            bytes,
            cpu_seconds(),
        );
        let m = &self.metrics;
        let errors = ["full", "closed", "other"]
            .iter()
            .map(|k| m.store_errors.with_label_values(&[k]).get())
            .sum::<u64>()
            + m.http_requests.with_label_values(&["5xx"]).get();
        let media = self.device.media_status();
        serde_json::json!({
            "at": unix_now(),
            "participants": m.people(),
            "active_meetings": m.active_meetings(),
            "sfu_participants": stats.as_ref().map(|s| s.participants),
            "forwarded_bitrate_bps": bitrate,
            "camera_bitrate_bps": media.map(|s| s.video_bitrate_bps),
            "cpu_percent": cpu,
            "temperature_celsius": max_temperature(Path::new("/sys/class/thermal")),
            "errors": errors,
        })
    }

    async fn state(&self) -> serde_json::Value {
        let rooms: Vec<serde_json::Value> = match &self.sfu {
            Some(s) => s
                .rooms()
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|r| serde_json::json!({"name": r.name, "participants": r.participants.len()}))
                .collect(),
            None => Vec::new(),
        };
        let d = self.device.state();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "board": self.cfg.board,
            "room": self.cfg.room,
            "rooms": rooms,
            "mic_muted": d.mic_muted,
            "camera_off": d.camera_off,
            "live": d.live,
            "recording": d.recording,
            "cascade": "not available",
            "media_running": d.media.running,
        })
    }
}

fn arg_bool(args: &serde_json::Value, key: &str) -> Result<Option<bool>, String> {
    match args.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("args.{key} must be true or false")),
    }
}

/// Bitrate and CPU from counter deltas between two telemetry ticks.
#[derive(Default)]
struct Sampler {
    last: Option<(Instant, u64, f64)>,
}

impl Sampler {
    fn sample(&mut self, now: Instant, bytes: u64, cpu: Option<f64>) -> (Option<u64>, Option<f64>) {
        let cpu_now = cpu.unwrap_or(0.0);
        let out = match self.last {
            Some((t, b, c)) if now > t => {
                let secs = (now - t).as_secs_f64();
                let bitrate = (bytes.saturating_sub(b) as f64 * 8.0 / secs) as u64;
                let cpu = cpu.map(|_| ((cpu_now - c).max(0.0) / secs * 100.0 * 10.0).round() / 10.0);
                (Some(bitrate), cpu)
            }
            _ => (None, None),
        };
        self.last = Some((now, bytes, cpu_now));
        out
    }
}

/// This process's CPU seconds (user + system), from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

/// The hottest thermal zone, °C.
fn max_temperature(root: &Path) -> Option<f64> {
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("temp")).ok()?.trim().parse::<f64>().ok())
        .map(|m| m / 1000.0)
        .reduce(f64::max)
}

/// `rotate_certificate`: without a certificate, make a new key and return a CSR
/// (CN = device id) for the fleet CA to sign; with `certificate` (PEM, signed
/// for that key), install both and reconnect with them.
fn rotate_certificate(fleet: &FleetConfig, certificate: Option<&str>) -> Result<Outcome, String> {
    let pending = pending_key_path(&fleet.key_file);
    match certificate {
        None => {
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
            p.distinguished_name.push(rcgen::DnType::CommonName, fleet.device_id.clone());
            let csr = p.serialize_request(&key).and_then(|c| c.pem()).map_err(|e| e.to_string())?;
            write_private(&pending, key.serialize_pem().as_bytes())
                .map_err(|e| format!("cannot keep the new key at {}: {e}", pending.display()))?;
            Ok(Outcome::done(csr))
        }
        Some(cert) => {
            if !pending.exists() {
                return Err(
                    "no pending key: send rotate_certificate without args first (it returns a CSR)".into()
                );
            }
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let cert_tmp = dir.path().join("cert.pem");
            std::fs::write(&cert_tmp, cert).map_err(|e| e.to_string())?;
            // What the link will load: a readable CA, and a certificate that matches the pending key.
            driver::tls_client_config(&fleet.ca_file, &cert_tmp, &pending)
                .map_err(|e| format!("the certificate cannot be used with the pending key: {e}"))?;
            let key = std::fs::read(&pending).map_err(|e| e.to_string())?;
            write_private(&fleet.key_file, &key).map_err(|e| e.to_string())?;
            write_atomically(&fleet.cert_file, cert.as_bytes()).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(&pending);
            Ok(Outcome { message: "certificate rotated; reconnecting with it".into(), reconnect: true })
        }
    }
}

fn pending_key_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pending");
    PathBuf::from(s)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = sibling(path, ".tmp");
    {
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Write `bytes` to `path` through a synced temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = sibling(path, ".new");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Desired config

/// Validate a desired config with the file's own code, write it over the
/// config file (the previous one kept as `FILE.prev`), read it back; put the
/// previous one back if anything after validation fails. `true` with an
/// `applied` report: the config differs from the running one, and takes effect
/// when roomboxd restarts ([`crate::config_apply`] does that right away).
pub fn apply_desired(
    running: &DaemonConfig,
    d: &DesiredConfig,
    now: u64,
    write: &dyn Fn(&Path, &[u8]) -> std::io::Result<()>,
) -> (ConfigReport, bool) {
    let version = Some(d.version.clone());
    let reject = |problems: Vec<String>| {
        (ConfigReport { version: version.clone(), status: ConfigStatus::Rejected, problems, at: now }, false)
    };
    let new = match crate::config::load_str(&d.config, &Overrides::default()) {
        Ok(c) => c,
        Err(problems) => return reject(problems.iter().map(|p| p.to_string()).collect()),
    };
    let (Some(old_fleet), Some(new_fleet)) = (&running.cloud.fleet, &new.cloud.fleet) else {
        return reject(vec![
            "cloud.fleet: the desired config must keep the fleet link (it would cut the box off)".into(),
        ]);
    };
    if old_fleet.device_id != new_fleet.device_id {
        return reject(vec![format!(
            "cloud.fleet.device_id: must stay {:?} (a box does not rename itself)",
            old_fleet.device_id
        )]);
    }
    let Some(path) = running.config_file.clone() else {
        return reject(vec![
            "this box was not started from a config file (--config); there is nothing to write".into(),
        ]);
    };
    let previous = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return reject(vec![format!("cannot read the running config {}: {e}", path.display())]),
    };
    let rolled_back = |why: String| {
        let mut problems = vec![why];
        if let Err(e) = write(&path, &previous) {
            problems.push(format!("and putting the previous config back failed: {e}"));
        }
        (
            ConfigReport { version: version.clone(), status: ConfigStatus::RolledBack, problems, at: now },
            false,
        )
    };
    if let Err(e) = write(&sibling(&path, ".prev"), &previous) {
        return reject(vec![format!("cannot keep the previous config: {e}")]);
    }
    if let Err(e) = write(&path, d.config.as_bytes()) {
        return rolled_back(format!("cannot write {}: {e}", path.display()));
    }
    // Read back what is on disk now: it must be what was validated.
    match crate::config::load_file(&path) {
        Ok(mut back) => {
            back.config_file = new.config_file.clone();
            if back != new {
                return rolled_back(format!("{} read back differs from what was validated", path.display()));
            }
        }
        Err(e) => return rolled_back(format!("{} does not read back: {e}", path.display())),
    }
    let mut notes = Vec::new();
    let mut run = running.clone();
    run.config_file = None;
    run.media_keys = new.media_keys.clone();
    let restart = run != new;
    if restart {
        notes.push("written; takes effect when roomboxd restarts".to_string());
    }
    tracing::info!(version = %d.version, file = %path.display(), restart, "fleet: desired config written");
    (ConfigReport { version, status: ConfigStatus::Applied, problems: notes, at: now }, restart)
}

// ---------------------------------------------------------------------------
// Metrics

struct FleetCollector {
    view: FleetView,
    messages: IntCounterVec,
    refused: IntCounterVec,
    reconnects: IntCounterVec,
    applies: IntCounterVec,
    up: IntGauge,
    descs: Vec<Desc>,
}

fn register_metrics(metrics: &Metrics, view: FleetView) {
    let make = || -> Result<FleetCollector, prometheus::Error> {
        let messages = IntCounterVec::new(
            Opts::new("roombox_fleet_messages_total", "Fleet link MQTT messages, by direction (in, out)."),
            &["direction"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new("roombox_fleet_commands_refused_total", "Fleet commands refused, by reason."),
            &["reason"],
        )?;
        let reconnects = IntCounterVec::new(
            Opts::new("roombox_fleet_reconnects_total", "Fleet link reconnects to the broker."),
            &[],
        )?;
        let applies = IntCounterVec::new(
            Opts::new(
                "roombox_fleet_config_applies_total",
                "Desired configs by outcome (applied, rejected, rolled_back, applying = restarting into it).",
            ),
            &["outcome"],
        )?;
        for s in ConfigStatus::ALL {
            applies.with_label_values(&[s.label()]);
        }
        let up =
            IntGauge::new("roombox_fleet_link_up", "1 while the fleet link is connected to the broker.")?;
        for d in ["in", "out"] {
            messages.with_label_values(&[d]);
        }
        for r in Refusal::ALL {
            refused.with_label_values(&[r.label()]);
        }
        reconnects.with_label_values(&[] as &[&str]);
        let descs = [messages.desc(), refused.desc(), reconnects.desc(), applies.desc(), up.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        Ok(FleetCollector { view, messages, refused, reconnects, applies, up, descs })
    };
    match make().and_then(|c| metrics.registry.register(Box::new(c))) {
        Ok(()) => {}
        Err(e) => tracing::warn!(error = %e, "fleet metrics not registered"),
    }
}

fn catch_up(c: &prometheus::IntCounter, total: u64) {
    let have = c.get();
    if total > have {
        c.inc_by(total - have);
    }
}

impl Collector for FleetCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.view.status();
        catch_up(&self.messages.with_label_values(&["in"]), s.messages_in);
        catch_up(&self.messages.with_label_values(&["out"]), s.messages_out);
        for (reason, n) in &s.refused {
            catch_up(&self.refused.with_label_values(&[reason.as_str()]), *n);
        }
        catch_up(&self.reconnects.with_label_values(&[] as &[&str]), s.reconnects);
        for (outcome, n) in &s.config_reports {
            catch_up(&self.applies.with_label_values(&[outcome.as_str()]), *n);
        }
        self.up.set((s.state == "connected") as i64);
        let mut out = self.messages.collect();
        out.extend(self.refused.collect());
        out.extend(self.reconnects.collect());
        out.extend(self.applies.collect());
        out.extend(self.up.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(dir: &Path) -> (DaemonConfig, PathBuf, String) {
        let path = dir.join("roombox.toml");
        let text = format!(
            "data_dir = \"{}\"\n[cloud.fleet]\nbroker = \"mqtt:8883\"\ndevice_id = \"box-1\"\nca_file = \"ca.pem\"\n\
             cert_file = \"c.pem\"\nkey_file = \"c.key\"\nauthority_key_file = \"a.pem\"\n",
            dir.display()
        );
        std::fs::write(&path, &text).unwrap();
        let mut cfg = crate::config::load_file(&path).unwrap();
        cfg.config_file = Some(path.clone());
        (cfg, path, text)
    }

    fn desired(version: &str, config: &str) -> DesiredConfig {
        DesiredConfig { version: version.into(), config: config.into() }
    }

    #[test]
    fn each_bad_desired_config_is_rejected_with_its_reason_and_the_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, path, text) = running(dir.path());
        let fleet = text.split_once("[cloud.fleet]").unwrap().1.to_owned();
        let cases = [
            ("room = 5\n".to_string(), "room"),
            ("bogus = 1\n".to_string(), "bogus"),
            ("[http\n".to_string(), "TOML syntax"),
            ("room = \"bad room!\"\n".to_string(), "room"),
            ("room = \"r\"\n".to_string(), "cloud.fleet"),
            (format!("[cloud.fleet]{}", fleet.replace("box-1", "box-2")), "device_id"),
            (format!("[cloud.fleet]{}telemetry_interval = 0\n", fleet), "telemetry_interval"),
        ];
        for (i, (config, want)) in cases.iter().enumerate() {
            let (r, restart) =
                apply_desired(&cfg, &desired(&format!("v{i}"), config), 1, &|p, b| write_atomically(p, b));
            assert!(!restart);
            assert_eq!(r.status, ConfigStatus::Rejected, "{config}");
            assert!(r.problems.iter().any(|p| p.contains(want)), "{config}: {:?}", r.problems);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "the running config is kept");
        }
    }

    #[test]
    fn a_good_desired_config_is_written_and_the_previous_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, path, text) = running(dir.path());
        let new = format!("room = \"board-room\"\n{text}");
        let (r, restart) = apply_desired(&cfg, &desired("v2", &new), 1, &|p, b| write_atomically(p, b));
        assert_eq!(r.status, ConfigStatus::Applied, "{:?}", r.problems);
        assert!(restart, "a changed config needs a restart");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
        assert_eq!(std::fs::read_to_string(sibling(&path, ".prev")).unwrap(), text);
        assert!(r.problems[0].contains("restart"));
        // The same config again changes nothing that runs: applied, no restart.
        let (r, restart) = apply_desired(&cfg, &desired("v2b", &text), 1, &|p, b| write_atomically(p, b));
        assert_eq!((r.status, restart), (ConfigStatus::Applied, false), "{:?}", r.problems);
    }

    #[test]
    fn a_write_that_goes_wrong_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, path, text) = running(dir.path());
        let new = format!("room = \"board-room\"\n{text}");
        // A storage that mangles the new file (a torn write): the read-back catches it.
        let torn = |p: &Path, b: &[u8]| {
            let bytes = if b.starts_with(b"room = \"board-room\"") { &b[..b.len() / 2] } else { b };
            write_atomically(p, bytes)
        };
        let (r, _) = apply_desired(&cfg, &desired("v3", &new), 1, &torn);
        assert_eq!(r.status, ConfigStatus::RolledBack, "{:?}", r.problems);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "the previous config is back");
        // A write that fails outright.
        let failing = |p: &Path, b: &[u8]| {
            if b.starts_with(b"room = \"board-room\"") {
                Err(std::io::Error::other("disk full"))
            } else {
                write_atomically(p, b)
            }
        };
        let (r, _) = apply_desired(&cfg, &desired("v4", &new), 1, &failing);
        assert_eq!(r.status, ConfigStatus::RolledBack);
        assert!(r.problems[0].contains("disk full"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn rotating_the_certificate_makes_a_csr_then_installs_the_signed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A CA, and the box's first certificate.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(d.join("ca.pem"), ca_cert.pem()).unwrap();
        let fleet = FleetConfig {
            device_id: "box-1".into(),
            ca_file: d.join("ca.pem"),
            cert_file: d.join("box.pem"),
            key_file: d.join("box.key"),
            ..FleetConfig::default()
        };
        std::fs::write(&fleet.cert_file, "old").unwrap();
        std::fs::write(&fleet.key_file, "old").unwrap();
        assert!(rotate_certificate(&fleet, Some("x")).unwrap_err().contains("no pending key"));
        let csr = rotate_certificate(&fleet, None).unwrap().message;
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"), "{csr}");
        // The "CA" signs a certificate for the pending key (the test reads it straight from the file).
        let pending =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(pending_key_path(&fleet.key_file)).unwrap())
                .unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "box-1");
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let cert = p.signed_by(&pending, &issuer).unwrap().pem();
        // A certificate for another key is refused and nothing changes.
        let other = rcgen::KeyPair::generate().unwrap();
        let wrong = p.signed_by(&other, &issuer).unwrap().pem();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        assert!(rotate_certificate(&fleet, Some(&wrong)).is_err());
        assert_eq!(std::fs::read_to_string(&fleet.cert_file).unwrap(), "old");
        let o = rotate_certificate(&fleet, Some(&cert)).unwrap();
        assert!(o.reconnect);
        assert_eq!(std::fs::read_to_string(&fleet.cert_file).unwrap(), cert);
        assert_eq!(std::fs::read_to_string(&fleet.key_file).unwrap(), pending.serialize_pem());
        assert!(!pending_key_path(&fleet.key_file).exists());
    }
}
