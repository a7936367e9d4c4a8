//! A/B system updates through RAUC: download a signed bundle from an on-prem URL, install it
//! into the other slot, and notice at the next start whether the box booted it or fell back.
//!
//! The fleet's "install update" command calls [`install`] (blocking; run it from
//! `spawn_blocking`). RAUC checks the bundle's signature against the keyring in its
//! `system.conf` and refuses an unsigned or tampered bundle; this module reports what it said.
//! After a reboot into the new slot a health gate (`roombox-health-gate`, in the image) marks
//! the slot good only when `/readyz` passes within a deadline, else marks it bad and reboots so
//! the bootloader falls back. At the next start of the daemon, [`check_boot`] compares the slot
//! RAUC says was booted with the one the last install wrote, and reports a rollback.
//!
//! The decisions (which slot the install targets, whether a boot is the update or a fallback,
//! what an exit of `rauc` means) are sans-IO functions over text, tested without RAUC; the edge
//! (HTTP download, running `rauc`, files under `data_dir/update/`) is thin.
//!
//! ```no_run
//! # fn main() -> Result<(), roombox::update::UpdateError> {
//! let out = roombox::update::install("http://updates.lan/roombox-rpi4.raucb", std::path::Path::new("/data/roombox"))?;
//! println!("{}", out.message);
//! # Ok(()) }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What an install did, for the command's result.
#[derive(Debug, Clone)]
pub struct UpdateOutcome {
    pub message: String,
}

/// Why an install did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("no updater on this system")]
    NoUpdater,
    #[error("{0}")]
    Failed(String),
}

/// The folder under `data_dir` that holds the downloaded bundle and the install record.
pub const UPDATE_DIR: &str = "update";
/// The record of the last install that succeeded (JSON, [`InstallRecord`]).
pub const PENDING_FILE: &str = "pending.json";
/// The record of the last detected rollback (JSON, [`BootVerdict`]).
pub const ROLLBACK_FILE: &str = "last-rollback.json";
/// Largest bundle accepted (a rootfs image plus its signature).
pub const MAX_BUNDLE_BYTES: u64 = 4 << 30;
/// Environment variable naming the `rauc` binary (tests; default `rauc` on `PATH`).
pub const RAUC_ENV: &str = "ROOMBOX_RAUC";

// ---------------------------------------------------------------------------------------------
// Sans-IO: decisions over text.

/// A bundle URL the box may fetch: `http` or `https` with a host. Returns a clear reason otherwise.
pub fn check_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("`{url}` is not a URL"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("bundle URL scheme `{scheme}` is not http or https"));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(format!("bundle URL `{url}` has no host (or carries credentials)"));
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err("bundle URL contains spaces or control characters".into());
    }
    Ok(())
}

/// One slot as `rauc status --output-format=json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// `rootfs.0`
    pub name: String,
    pub class: String,
    /// The bootloader's name for it (`A`, `B`); empty when RAUC gives none.
    pub bootname: String,
    /// `booted`, `active`, `inactive`
    pub state: String,
}

/// What `rauc status` says about the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaucStatus {
    pub compatible: String,
    /// The booted slot's bootname.
    pub booted: String,
    pub slots: Vec<Slot>,
}

impl RaucStatus {
    /// The rootfs slot an install writes: the one not booted (A/B: exactly one).
    pub fn install_target(&self) -> Option<&Slot> {
        let mut others = self.slots.iter().filter(|s| s.class == "rootfs" && s.bootname != self.booted);
        let first = others.next()?;
        if others.next().is_some() { None } else { Some(first) }
    }
}

/// Parse `rauc status --output-format=json` (RAUC 1.x): `{"compatible", "booted", "slots":
/// [{"rootfs.0": {"class", "bootname", "state", ...}}, ...]}`.
pub fn parse_status(json: &str) -> Result<RaucStatus, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("rauc status is not JSON: {e}"))?;
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let booted = s(&v, "booted");
    if booted.is_empty() {
        return Err("rauc status names no booted slot".into());
    }
    let mut slots = Vec::new();
    for entry in v.get("slots").and_then(|x| x.as_array()).into_iter().flatten() {
        let Some(obj) = entry.as_object() else { continue };
        for (name, slot) in obj {
            slots.push(Slot {
                name: name.clone(),
                class: s(slot, "class"),
                bootname: s(slot, "bootname"),
                state: s(slot, "state"),
            });
        }
    }
    if slots.is_empty() {
        return Err("rauc status lists no slots".into());
    }
    Ok(RaucStatus { compatible: s(&v, "compatible"), booted, slots })
}

/// Written after an install succeeds; read at the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// The slot the box ran when it installed (bootname).
    pub from: String,
    /// The slot the bundle went into (bootname).
    pub to: String,
    pub bundle_url: String,
    /// `/proc/sys/kernel/random/boot_id` at install time: a start within the same boot is not
    /// a reboot yet.
    pub boot_id: String,
    pub installed_at_unix: u64,
}

/// What a start of the daemon concludes about the last install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum BootVerdict {
    /// No install is waiting.
    NoUpdate,
    /// Installed, but the box has not rebooted since.
    AwaitingReboot { to: String },
    /// The box runs the slot the update went into (the health gate decides whether it stays).
    UpdateBooted { to: String },
    /// The box runs the old slot again after a reboot: the bootloader fell back.
    RolledBack { expected: String, booted: String, bundle_url: String },
}

/// Compare the install record with what RAUC says was booted now.
pub fn decide_boot(record: Option<&InstallRecord>, booted: &str, boot_id: &str) -> BootVerdict {
    let Some(r) = record else { return BootVerdict::NoUpdate };
    if !r.boot_id.is_empty() && r.boot_id == boot_id {
        return BootVerdict::AwaitingReboot { to: r.to.clone() };
    }
    if booted == r.to {
        BootVerdict::UpdateBooted { to: r.to.clone() }
    } else {
        BootVerdict::RolledBack {
            expected: r.to.clone(),
            booted: booted.to_string(),
            bundle_url: r.bundle_url.clone(),
        }
    }
}

/// The message of a failed `rauc install`: its last error lines, without progress noise.
pub fn install_failure(code: Option<i32>, stdout: &str, stderr: &str) -> String {
    let mut lines: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('%') && !l.starts_with("installing"))
        .collect();
    // Keep the tail: RAUC prints the reason last.
    if lines.len() > 4 {
        lines.drain(..lines.len() - 4);
    }
    let code = code.map_or_else(|| "a signal".to_string(), |c| c.to_string());
    if lines.is_empty() {
        format!("rauc install failed (exit {code})")
    } else {
        format!("rauc install failed (exit {code}): {}", lines.join(" | "))
    }
}

// ---------------------------------------------------------------------------------------------
// The edge.

fn rauc_bin() -> PathBuf {
    std::env::var_os(RAUC_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("rauc"))
}

fn run_rauc(args: &[&str]) -> Result<std::process::Output, UpdateError> {
    match Command::new(rauc_bin()).args(args).output() {
        Ok(o) => Ok(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(UpdateError::NoUpdater),
        Err(e) => Err(UpdateError::Failed(format!("cannot run rauc: {e}"))),
    }
}

/// Whether a `rauc` binary can be run here.
pub fn updater_present() -> bool {
    !matches!(run_rauc(&["--version"]), Err(UpdateError::NoUpdater))
}

/// `rauc status` parsed.
pub fn status() -> Result<RaucStatus, UpdateError> {
    let out = run_rauc(&["status", "--output-format=json"])?;
    if !out.status.success() {
        return Err(UpdateError::Failed(format!(
            "rauc status failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_status(&String::from_utf8_lossy(&out.stdout)).map_err(UpdateError::Failed)
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Download `url` into `dir/bundle.raucb` (through a `.part` file), at most [`MAX_BUNDLE_BYTES`].
/// Runs its own small runtime on a thread of its own, so it works from `spawn_blocking` too.
pub fn download(url: &str, dir: &Path) -> Result<PathBuf, UpdateError> {
    check_url(url).map_err(UpdateError::Failed)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| UpdateError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let dest = dir.join("bundle.raucb");
    let part = dir.join("bundle.raucb.part");
    let (url_s, part_c) = (url.to_string(), part.clone());
    let joined = std::thread::Builder::new()
        .name("roombox-update-dl".into())
        .spawn(move || -> Result<u64, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))?;
            rt.block_on(fetch(&url_s, &part_c))
        })
        .map_err(|e| UpdateError::Failed(format!("cannot start the download thread: {e}")))?
        .join();
    let res = joined.unwrap_or_else(|_| Err("the download thread panicked".into()));
    match res {
        Ok(bytes) => {
            std::fs::rename(&part, &dest)
                .map_err(|e| UpdateError::Failed(format!("cannot move the bundle into place: {e}")))?;
            tracing::info!(bytes, path = %dest.display(), "update bundle downloaded");
            Ok(dest)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(UpdateError::Failed(e))
        }
    }
}

async fn fetch(url: &str, part: &Path) -> Result<u64, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let mut resp = client.get(url).send().await.map_err(|e| format!("cannot fetch the bundle: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("cannot fetch the bundle: HTTP {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_BUNDLE_BYTES) {
        return Err(format!("the bundle is larger than {MAX_BUNDLE_BYTES} bytes"));
    }
    let mut file =
        std::fs::File::create(part).map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    let mut total = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("download interrupted: {e}"))? {
        total += chunk.len() as u64;
        if total > MAX_BUNDLE_BYTES {
            return Err(format!("the bundle is larger than {MAX_BUNDLE_BYTES} bytes"));
        }
        file.write_all(&chunk).map_err(|e| format!("cannot write the bundle: {e}"))?;
    }
    file.sync_all().map_err(|e| format!("cannot write the bundle: {e}"))?;
    if total == 0 {
        return Err("the bundle is empty".into());
    }
    Ok(total)
}

/// Download the bundle at `bundle_url` into `data_dir/update/`, install it with `rauc install`
/// (which checks its signature and writes the other slot), record the install for
/// [`check_boot`], and delete the download. Blocking; call it from `spawn_blocking`.
pub fn install(bundle_url: &str, data_dir: &Path) -> Result<UpdateOutcome, UpdateError> {
    check_url(bundle_url).map_err(UpdateError::Failed)?;
    if !updater_present() {
        return Err(UpdateError::NoUpdater);
    }
    // The slot we run now and the one the bundle will go into (best effort: a system whose
    // status cannot be read still installs; the record then names no slots).
    let st = status().ok();
    let from = st.as_ref().map(|s| s.booted.clone()).unwrap_or_default();
    let to = st.as_ref().and_then(|s| s.install_target()).map(|s| s.bootname.clone()).unwrap_or_default();
    let dir = data_dir.join(UPDATE_DIR);
    let bundle = download(bundle_url, &dir)?;
    let path = bundle.to_string_lossy().into_owned();
    tracing::info!(url = bundle_url, from = %from, to = %to, "installing update bundle");
    let out = run_rauc(&["install", &path]);
    let _ = std::fs::remove_file(&bundle);
    let out = out?;
    if !out.status.success() {
        let msg = install_failure(
            out.status.code(),
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        );
        tracing::error!(url = bundle_url, error = %msg, "update refused or failed");
        return Err(UpdateError::Failed(msg));
    }
    let record = InstallRecord {
        from: from.clone(),
        to: to.clone(),
        bundle_url: bundle_url.to_string(),
        boot_id: boot_id(),
        installed_at_unix: now_unix(),
    };
    write_json(&dir.join(PENDING_FILE), &record)?;
    let message = if to.is_empty() {
        "bundle installed; reboot to run it".to_string()
    } else {
        format!("bundle installed into slot {to} (running {from}); reboot to run it")
    };
    tracing::info!(url = bundle_url, to = %to, "update installed");
    Ok(UpdateOutcome { message })
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), UpdateError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| UpdateError::Failed(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| UpdateError::Failed(format!("cannot write {}: {e}", path.display())))
}

/// At start: what became of the last install. A rollback is logged as an error, written to
/// `data_dir/update/last-rollback.json` (for the fleet link and the admin page) and the install
/// record is cleared; an update that booted keeps its record until the next install.
/// `NoUpdate` on a system without RAUC.
pub fn check_boot(data_dir: &Path) -> BootVerdict {
    let dir = data_dir.join(UPDATE_DIR);
    let pending = dir.join(PENDING_FILE);
    let record: Option<InstallRecord> =
        std::fs::read_to_string(&pending).ok().and_then(|t| serde_json::from_str(&t).ok());
    if record.is_none() {
        return BootVerdict::NoUpdate;
    }
    let booted = match status() {
        Ok(s) => s.booted,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read rauc status; the last update's outcome is unknown");
            return BootVerdict::NoUpdate;
        }
    };
    let verdict = decide_boot(record.as_ref(), &booted, &boot_id());
    match &verdict {
        BootVerdict::RolledBack { expected, booted, bundle_url } => {
            tracing::error!(expected = %expected, booted = %booted, url = %bundle_url,
                "update rolled back: the bootloader fell back to the previous slot");
            let _ = write_json(&dir.join(ROLLBACK_FILE), &verdict);
            let _ = std::fs::remove_file(&pending);
        }
        BootVerdict::UpdateBooted { to } => tracing::info!(slot = %to, "running the updated slot"),
        BootVerdict::AwaitingReboot { to } => {
            tracing::info!(slot = %to, "an installed update waits for a reboot")
        }
        BootVerdict::NoUpdate => {}
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = r#"{"compatible":"roombox-qemuarm64","variant":"","booted":"A","boot_primary":"rootfs.0",
      "slots":[{"rootfs.0":{"class":"rootfs","device":"/dev/vda2","type":"ext4","bootname":"A","state":"booted",
        "parent":null,"mountpoint":"/","boot_status":"good"}},
       {"rootfs.1":{"class":"rootfs","device":"/dev/vda3","type":"ext4","bootname":"B","state":"inactive",
        "parent":null,"mountpoint":null,"boot_status":"bad"}}]}"#;

    fn record(to: &str, boot: &str) -> InstallRecord {
        InstallRecord {
            from: "A".into(),
            to: to.into(),
            bundle_url: "http://u/b".into(),
            boot_id: boot.into(),
            installed_at_unix: 1,
        }
    }

    #[test]
    fn status_names_the_booted_slot_and_the_install_target() {
        let s = parse_status(STATUS).unwrap();
        assert_eq!(s.booted, "A");
        assert_eq!(s.compatible, "roombox-qemuarm64");
        assert_eq!(s.slots.len(), 2);
        let t = s.install_target().unwrap();
        assert_eq!((t.name.as_str(), t.bootname.as_str()), ("rootfs.1", "B"));
    }

    #[test]
    fn status_that_is_not_rauc_json_is_a_clear_error() {
        assert!(parse_status("not json").unwrap_err().contains("not JSON"));
        assert!(parse_status(r#"{"slots":[]}"#).unwrap_err().contains("no booted slot"));
        assert!(parse_status(r#"{"booted":"A","slots":[]}"#).unwrap_err().contains("no slots"));
    }

    #[test]
    fn three_rootfs_slots_have_no_single_target() {
        let s = RaucStatus {
            compatible: String::new(),
            booted: "A".into(),
            slots: ["A", "B", "C"]
                .iter()
                .enumerate()
                .map(|(i, b)| Slot {
                    name: format!("rootfs.{i}"),
                    class: "rootfs".into(),
                    bootname: (*b).into(),
                    state: String::new(),
                })
                .collect(),
        };
        assert_eq!(s.install_target(), None);
    }

    #[test]
    fn a_boot_into_the_installed_slot_is_the_update() {
        assert_eq!(
            decide_boot(Some(&record("B", "x")), "B", "y"),
            BootVerdict::UpdateBooted { to: "B".into() }
        );
    }

    #[test]
    fn a_boot_into_the_old_slot_after_a_reboot_is_a_rollback() {
        assert_eq!(
            decide_boot(Some(&record("B", "x")), "A", "y"),
            BootVerdict::RolledBack {
                expected: "B".into(),
                booted: "A".into(),
                bundle_url: "http://u/b".into()
            }
        );
    }

    #[test]
    fn a_restart_without_a_reboot_is_not_a_rollback() {
        assert_eq!(
            decide_boot(Some(&record("B", "x")), "A", "x"),
            BootVerdict::AwaitingReboot { to: "B".into() }
        );
        assert_eq!(decide_boot(None, "A", "x"), BootVerdict::NoUpdate);
    }

    #[test]
    fn only_http_urls_with_a_host_are_fetched() {
        assert!(check_url("http://updates.lan/b.raucb").is_ok());
        assert!(check_url("https://10.0.0.2:8443/x").is_ok());
        assert!(check_url("file:///etc/shadow").unwrap_err().contains("scheme"));
        assert!(check_url("http:///x").unwrap_err().contains("no host"));
        assert!(check_url("http://user:pw@h/x").unwrap_err().contains("credentials"));
        assert!(check_url("updates.lan/b").unwrap_err().contains("not a URL"));
        assert!(check_url("http://h/a b").is_err());
    }

    #[test]
    fn a_refused_bundle_reports_raucs_reason() {
        let stderr = "installing /data/b.raucb\n  0% Installing\n 20% Checking bundle\nLastError: Failed to check bundle signature: signature verification failed\n";
        let m = install_failure(Some(1), "", stderr);
        assert!(m.starts_with("rauc install failed (exit 1): "), "{m}");
        assert!(m.contains("signature verification failed"), "{m}");
        assert!(!m.contains('%'), "{m}");
        assert_eq!(install_failure(None, "", ""), "rauc install failed (exit a signal)");
    }

    #[test]
    fn the_verdict_serialises_with_its_name() {
        let v = BootVerdict::RolledBack { expected: "B".into(), booted: "A".into(), bundle_url: "u".into() };
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["verdict"], "rolled_back");
        assert_eq!(j["expected"], "B");
    }
}
