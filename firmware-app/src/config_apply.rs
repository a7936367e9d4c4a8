//! Applying a desired config live: the files, the restart and the readiness
//! watch around the sans-IO engine `cloud_bridge::fleet::apply` (which decides).
//!
//! The fleet host writes a validated desired config over `FILE` (the previous
//! kept as `FILE.prev`); [`ConfigApply::written`] leaves the marker `FILE.apply`
//! and asks `roomboxd run` to restart: systemd is told `RELOADING=1`, the
//! runtime stops gracefully, and the process re-execs itself (`/proc/self/exe`,
//! same argv, same pid). The next start reads the marker *before* `FILE`
//! ([`ConfigApply::at_start`]): a trial of the new config that must reach
//! `/readyz` green within `cloud.fleet.apply_ready_within`, else (or if it does
//! not start, or dies during the trial) `FILE.prev` goes back, roomboxd
//! restarts into it, and the fleet link reports `rolled_back` with the reason.
//!
//! Only `roomboxd run` does this (it calls [`ConfigApply::at_start`]); a daemon
//! started otherwise (tests, the demo) writes the file and says it takes effect
//! at the next start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use cloud_bridge::fleet::ConfigReport;
use cloud_bridge::fleet::apply::{Action, Apply, Input, Marker};
use cloud_bridge::fleet::driver::unix_now;

use crate::http::SharedState;

/// `FILE.apply`: where an apply by restart stands.
pub fn marker_path(config: &Path) -> PathBuf {
    with_suffix(config, ".apply")
}

/// `FILE.prev`: the config before the last desired config.
pub fn previous_path(config: &Path) -> PathBuf {
    with_suffix(config, ".prev")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// This process's apply engine, once `roomboxd run` has set it up.
static CURRENT: OnceLock<Arc<ConfigApply>> = OnceLock::new();
/// Wakes `roomboxd run` to restart (a permit is kept if it is not waiting yet).
static RESTART: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The engine of `roomboxd run`; `None` in a daemon that cannot restart itself.
pub fn current() -> Option<Arc<ConfigApply>> {
    CURRENT.get().cloned()
}

/// Resolves when an apply asks `roomboxd run` to restart.
pub async fn restart_requested() {
    RESTART.notified().await
}

/// Ask `roomboxd run` to restart (after [`ConfigApply::written`], once the
/// `applying` report is queued on the fleet link).
pub fn request_restart() {
    RESTART.notify_one();
}

/// The engine and the config file it works on.
pub struct ConfigApply {
    file: PathBuf,
    engine: Mutex<Apply>,
}

/// What the engine's actions leave for the caller.
#[derive(Debug, Default)]
struct Next {
    restart: bool,
    report: Option<ConfigReport>,
    watch: Option<u64>,
}

impl ConfigApply {
    /// At the start of `roomboxd run`, before `file` is read: act on the marker
    /// (a trial, or put `FILE.prev` back after a trial that died).
    pub fn at_start(file: &Path) -> Arc<ConfigApply> {
        let ca = Arc::new(ConfigApply { file: file.to_owned(), engine: Mutex::new(Apply::new()) });
        let found = read_marker(&marker_path(file));
        if let Some(m) = &found {
            tracing::info!(version = %m.version, state = ?m.state, "fleet: desired config apply marker found");
        }
        // Restart is never asked at start; reports wait for `started`.
        let _ = ca.feed(Input::Starting(found));
        let _ = CURRENT.set(ca.clone());
        ca
    }

    /// The desired config version this start is a trial of.
    pub fn trial(&self) -> Option<String> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner).trial().map(str::to_owned)
    }

    /// A validated desired config is on disk (the previous in `FILE.prev`):
    /// leave the marker. `true`: restart into it ([`request_restart`], once
    /// the `applying` report is on its way).
    pub fn written(&self, version: &str) -> bool {
        self.feed(Input::Written { version: version.to_owned() }).restart
    }

    /// The daemon did not start. `true`: the previous config is back, re-exec now.
    pub fn start_failed(&self, why: &str) -> bool {
        self.feed(Input::StartFailed(why.to_owned())).restart
    }

    /// The daemon runs: report a rollback, or watch the trial's readiness.
    pub fn started(self: &Arc<Self>, state: &SharedState, ready_within: Duration) {
        let next = self.feed(Input::Started { ready_within_s: ready_within.as_secs() });
        if let Some(r) = next.report {
            state.fleet.report(r);
        }
        if let Some(deadline) = next.watch {
            let (me, state) = (self.clone(), state.clone());
            tokio::spawn(async move { me.watch(state, deadline).await });
        }
    }

    async fn watch(&self, state: SharedState, deadline: u64) {
        loop {
            if crate::http::readiness(&state).await.ready {
                let next = self.feed(Input::Ready);
                if let Some(r) = next.report {
                    tracing::info!(version = ?r.version, "fleet: desired config applied (ready)");
                    state.fleet.report(r);
                }
                return;
            }
            if unix_now() >= deadline {
                let next = self.feed(Input::Timeout);
                if next.restart {
                    tracing::error!("fleet: not ready in time with the new config; rolling back");
                    RESTART.notify_one();
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Hand `input` to the engine and carry out its file actions.
    fn feed(&self, input: Input) -> Next {
        let actions = self.engine.lock().unwrap_or_else(PoisonError::into_inner).handle(input, unix_now());
        let mut next = Next::default();
        for a in actions {
            match a {
                Action::WriteMarker(m) => {
                    let json = serde_json::to_vec(&m).unwrap_or_default();
                    if let Err(e) = crate::fleet::write_atomically(&marker_path(&self.file), &json) {
                        tracing::error!(error = %e, "fleet: cannot write the apply marker");
                    }
                }
                Action::RemoveMarker => match std::fs::remove_file(marker_path(&self.file)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::error!(error = %e, "fleet: cannot remove the apply marker"),
                },
                Action::RestorePrevious => {
                    let prev = previous_path(&self.file);
                    match std::fs::read(&prev).and_then(|b| crate::fleet::write_atomically(&self.file, &b)) {
                        Ok(()) => {
                            tracing::warn!(file = %self.file.display(), "fleet: the previous config is back")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, prev = %prev.display(), "fleet: cannot put the previous config back")
                        }
                    }
                }
                Action::Restart => next.restart = true,
                Action::WatchReadiness { deadline } => next.watch = Some(deadline),
                Action::Report(r) => next.report = Some(r),
            }
        }
        next
    }
}

/// The marker, if there is one; a garbled one is removed (and ignored).
fn read_marker(path: &Path) -> Option<Marker> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "fleet: cannot read the apply marker");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "fleet: garbled apply marker removed");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Tell systemd a reload started (`RELOADING=1` with `MONOTONIC_USEC`, as
/// `Type=notify-reload` wants); `READY=1` follows from the restarted daemon.
pub fn notify_reloading() {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only into `ts`, a valid timespec.
    let usec = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
    } else {
        0
    };
    if let Err(e) = crate::notify::notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Replace this process with a fresh roomboxd: `/proc/self/exe`, the same argv
/// (and so the same config path), the same pid. Returns only on failure.
pub fn reexec() -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "roomboxd".into());
    tracing::info!("re-executing roomboxd");
    std::process::Command::new("/proc/self/exe").arg0(argv0).args(args).exec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_bridge::fleet::apply::MarkerState;

    #[test]
    fn a_start_after_a_trial_that_died_puts_the_previous_file_back_and_marks_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roombox.toml");
        std::fs::write(&file, "new").unwrap();
        std::fs::write(previous_path(&file), "old").unwrap();
        let m = Marker { version: "v9".into(), state: MarkerState::Trial, reason: None, at: 1 };
        std::fs::write(marker_path(&file), serde_json::to_vec(&m).unwrap()).unwrap();
        let ca = ConfigApply { file: file.clone(), engine: Mutex::new(Apply::new()) };
        let next = ca.feed(Input::Starting(read_marker(&marker_path(&file))));
        assert!(!next.restart);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "old");
        let now = read_marker(&marker_path(&file)).unwrap();
        assert_eq!((now.version.as_str(), now.state), ("v9", MarkerState::RolledBack));
        let next = ca.feed(Input::Started { ready_within_s: 60 });
        assert!(next.report.is_some_and(|r| r.problems[0].contains("stopped while starting")));
        assert!(!marker_path(&file).exists(), "reported: the marker is gone");
    }

    #[test]
    fn a_garbled_marker_is_removed_and_the_start_is_plain() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roombox.toml");
        std::fs::write(marker_path(&file), "{not json").unwrap();
        assert_eq!(read_marker(&marker_path(&file)), None);
        assert!(!marker_path(&file).exists());
    }
}
