//! Applying a desired config live: restart roomboxd into it, keep it only if it
//! comes up ready in time, else put the previous file back. Sans-IO.
//!
//! The daemon validates a desired config with its config file's code and writes
//! it over `FILE` (the previous one kept as `FILE.prev`). Then [`Apply`] decides,
//! from what the driver tells it ([`Input`]), what to do ([`Action`]):
//!
//! 1. `Written` → the marker `FILE.apply` says `written`; restart (graceful
//!    shutdown, then re-exec of the same binary with the same argv, same pid).
//! 2. At the next start, before `FILE` is read, `Starting(marker)`:
//!    * `written` → this start is the new config's **trial**: the marker says
//!      `trial`; the daemon starts with it;
//!    * `trial` → the process died during the trial (crash, `kill -9`, power
//!      loss): `FILE.prev` goes back to `FILE`, the marker says `rolled_back`;
//!    * `rolled_back` → a rollback not reported yet.
//! 3. In the trial: `StartFailed` (e.g. the new listen port is held) or
//!    `Timeout` (not ready within `apply_ready_within`) → restore `FILE.prev`,
//!    marker `rolled_back` with the reason, restart into the old config;
//!    `Ready` → the marker goes, the link reports `applied`.
//! 4. After a rollback, once the daemon runs (`Started`) the link reports
//!    `rolled_back` with the reason, and the marker goes.
//!
//! The engine never reads the clock or touches a file: `now` is an argument
//! (unix seconds) and every effect is an [`Action`].

use serde::{Deserialize, Serialize};

use super::{ConfigReport, ConfigStatus};

/// Where an apply stands, as kept in the marker file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerState {
    /// The new config is on disk; the daemon is restarting into it.
    Written,
    /// The daemon is starting with it and has not been ready yet.
    Trial,
    /// It failed; the previous config is back. Not reported yet.
    RolledBack,
}

/// The marker file `FILE.apply` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The desired config's version.
    pub version: String,
    pub state: MarkerState,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds of the last change.
    pub at: u64,
}

/// What the driver tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A validated desired config was written over the config file (the previous kept as `.prev`).
    Written { version: String },
    /// The process starts, before it reads its config file: the marker it found.
    Starting(Option<Marker>),
    /// The daemon runs (it listens); readiness is due within `ready_within_s` seconds.
    Started { ready_within_s: u64 },
    /// The daemon could not start with the config file.
    StartFailed(String),
    /// Readiness (`/readyz`) is green.
    Ready,
    /// The deadline of [`Action::WatchReadiness`] passed without [`Input::Ready`].
    Timeout,
}

/// What the driver does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the marker file (atomically).
    WriteMarker(Marker),
    /// Delete the marker file.
    RemoveMarker,
    /// Copy `FILE.prev` over `FILE` (atomically).
    RestorePrevious,
    /// Stop gracefully and re-exec roomboxd (systemd is told `RELOADING=1`).
    Restart,
    /// Feed [`Input::Ready`] when readiness is green, or [`Input::Timeout`] at this unix second.
    WatchReadiness { deadline: u64 },
    /// Hand this report to the fleet link (retained on `config/reported`).
    Report(ConfigReport),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Nothing being applied.
    Idle,
    /// Restarting into a written config (this process is about to go).
    Restarting,
    /// Starting with a new config.
    Trial { version: String, started_at: u64, deadline: Option<(u64, u64)> },
    /// Rolled back: report once the daemon runs.
    Unreported { version: String, reason: String },
}

/// The apply engine of one process.
#[derive(Debug)]
pub struct Apply {
    phase: Phase,
}

impl Default for Apply {
    fn default() -> Self {
        Apply::new()
    }
}

impl Apply {
    pub fn new() -> Apply {
        Apply { phase: Phase::Idle }
    }

    /// The version on trial, if this start is one.
    pub fn trial(&self) -> Option<&str> {
        match &self.phase {
            Phase::Trial { version, .. } => Some(version),
            _ => None,
        }
    }

    pub fn handle(&mut self, input: Input, now: u64) -> Vec<Action> {
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        let (next, out) = step(phase, input, now);
        self.phase = next;
        out
    }
}

fn marker(version: &str, state: MarkerState, reason: Option<&str>, now: u64) -> Marker {
    Marker { version: version.to_owned(), state, reason: reason.map(str::to_owned), at: now }
}

fn report(version: &str, status: ConfigStatus, problems: Vec<String>, now: u64) -> ConfigReport {
    ConfigReport { version: Some(version.to_owned()), status, problems, at: now }
}

/// Put the previous config back and restart into it.
fn roll_back(version: String, reason: String, now: u64) -> (Phase, Vec<Action>) {
    let out = vec![
        Action::RestorePrevious,
        Action::WriteMarker(marker(&version, MarkerState::RolledBack, Some(&reason), now)),
        Action::Restart,
    ];
    (Phase::Restarting, out)
}

fn step(phase: Phase, input: Input, now: u64) -> (Phase, Vec<Action>) {
    match (phase, input) {
        // A restart is under way: this process does nothing more.
        (Phase::Restarting, _) => (Phase::Restarting, Vec::new()),

        (Phase::Idle, Input::Written { version }) => {
            let out =
                vec![Action::WriteMarker(marker(&version, MarkerState::Written, None, now)), Action::Restart];
            (Phase::Restarting, out)
        }
        (Phase::Idle, Input::Starting(None)) => (Phase::Idle, Vec::new()),
        (Phase::Idle, Input::Starting(Some(m))) => match m.state {
            MarkerState::Written => {
                let out = vec![Action::WriteMarker(marker(&m.version, MarkerState::Trial, None, now))];
                (Phase::Trial { version: m.version, started_at: now, deadline: None }, out)
            }
            MarkerState::Trial => {
                let reason =
                    "roomboxd stopped while starting with the new config (crash, kill or power loss)";
                let out = vec![
                    Action::RestorePrevious,
                    Action::WriteMarker(marker(&m.version, MarkerState::RolledBack, Some(reason), now)),
                ];
                (Phase::Unreported { version: m.version, reason: reason.to_owned() }, out)
            }
            MarkerState::RolledBack => {
                let reason = m.reason.unwrap_or_else(|| "rolled back".to_owned());
                (Phase::Unreported { version: m.version, reason }, Vec::new())
            }
        },

        (Phase::Trial { version, started_at, deadline: None }, Input::Started { ready_within_s }) => {
            let deadline = started_at + ready_within_s;
            let out = vec![Action::WatchReadiness { deadline }];
            (Phase::Trial { version, started_at, deadline: Some((deadline, ready_within_s)) }, out)
        }
        (Phase::Trial { version, started_at, .. }, Input::Ready) => {
            let note =
                format!("roomboxd restarted with it and was ready in {} s", now.saturating_sub(started_at));
            let out = vec![
                Action::RemoveMarker,
                Action::Report(report(&version, ConfigStatus::Applied, vec![note], now)),
            ];
            (Phase::Idle, out)
        }
        (Phase::Trial { version, .. }, Input::StartFailed(why)) => {
            roll_back(version, format!("roomboxd did not start with the new config: {why}"), now)
        }
        (Phase::Trial { version, deadline: Some((deadline, within)), .. }, Input::Timeout)
            if now >= deadline =>
        {
            roll_back(
                version,
                format!("roomboxd was not ready (/readyz) within {within} s with the new config"),
                now,
            )
        }

        (Phase::Unreported { version, reason }, Input::Started { .. }) => {
            let out = vec![
                Action::RemoveMarker,
                Action::Report(report(&version, ConfigStatus::RolledBack, vec![reason], now)),
            ];
            (Phase::Idle, out)
        }

        // Anything else (an early timeout, a second `Started`, a start failure with the
        // previous config, a desired config while one is on trial) changes nothing.
        (phase, _) => (phase, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn found(state: MarkerState, reason: Option<&str>) -> Option<Marker> {
        Some(marker("v2", state, reason, T0 - 5))
    }

    fn reports(actions: &[Action]) -> Vec<&ConfigReport> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_written_config_leaves_a_written_marker_then_restarts() {
        let mut a = Apply::new();
        let out = a.handle(Input::Written { version: "v2".into() }, T0);
        assert_eq!(
            out,
            vec![Action::WriteMarker(marker("v2", MarkerState::Written, None, T0)), Action::Restart]
        );
        // The process is going: nothing else happens in it.
        assert!(a.handle(Input::Written { version: "v3".into() }, T0).is_empty());
        assert!(a.handle(Input::Ready, T0).is_empty());
    }

    #[test]
    fn a_start_without_a_marker_is_a_plain_start() {
        let mut a = Apply::new();
        assert!(a.handle(Input::Starting(None), T0).is_empty());
        assert!(a.handle(Input::Started { ready_within_s: 60 }, T0).is_empty());
        assert!(
            a.handle(Input::StartFailed("port held".into()), T0).is_empty(),
            "no rollback without a trial"
        );
        assert_eq!(a.trial(), None);
    }

    #[test]
    fn a_start_after_a_written_marker_is_a_trial_that_reports_applied_when_ready() {
        let mut a = Apply::new();
        let out = a.handle(Input::Starting(found(MarkerState::Written, None)), T0);
        assert_eq!(out, vec![Action::WriteMarker(marker("v2", MarkerState::Trial, None, T0))]);
        assert_eq!(a.trial(), Some("v2"));
        let out = a.handle(Input::Started { ready_within_s: 60 }, T0 + 1);
        assert_eq!(out, vec![Action::WatchReadiness { deadline: T0 + 60 }]);
        let out = a.handle(Input::Ready, T0 + 3);
        assert_eq!(out[0], Action::RemoveMarker);
        let r = reports(&out);
        assert_eq!((r[0].version.as_deref(), r[0].status), (Some("v2"), ConfigStatus::Applied));
        assert!(r[0].problems[0].contains("ready in 3 s"), "{:?}", r[0].problems);
        assert_eq!(a.trial(), None);
        assert!(a.handle(Input::Timeout, T0 + 100).is_empty(), "a late timeout changes nothing");
    }

    #[test]
    fn a_trial_that_cannot_start_restores_the_previous_config_and_restarts() {
        let mut a = Apply::new();
        a.handle(Input::Starting(found(MarkerState::Written, None)), T0);
        let out = a.handle(Input::StartFailed("binding 127.0.0.1:8443: address in use".into()), T0 + 1);
        assert_eq!(out[0], Action::RestorePrevious);
        let Action::WriteMarker(m) = &out[1] else { panic!("{out:?}") };
        assert_eq!(m.state, MarkerState::RolledBack);
        assert!(m.reason.as_deref().unwrap().contains("address in use"));
        assert_eq!(out[2], Action::Restart);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn a_trial_not_ready_by_its_deadline_is_rolled_back() {
        let mut a = Apply::new();
        a.handle(Input::Starting(found(MarkerState::Written, None)), T0);
        a.handle(Input::Started { ready_within_s: 20 }, T0 + 2);
        assert!(a.handle(Input::Timeout, T0 + 19).is_empty(), "a timeout before the deadline is ignored");
        let out = a.handle(Input::Timeout, T0 + 20);
        assert_eq!(out[0], Action::RestorePrevious);
        let Action::WriteMarker(m) = &out[1] else { panic!("{out:?}") };
        assert!(m.reason.as_deref().unwrap().contains("not ready (/readyz) within 20 s"), "{m:?}");
        assert_eq!(out[2], Action::Restart);
    }

    #[test]
    fn a_start_that_finds_a_trial_marker_rolls_back_before_reading_the_config() {
        // The process died during the trial (kill -9): the next start finds `trial`.
        let mut a = Apply::new();
        let out = a.handle(Input::Starting(found(MarkerState::Trial, None)), T0);
        assert_eq!(out[0], Action::RestorePrevious, "the old file is back before it is read");
        let Action::WriteMarker(m) = &out[1] else { panic!("{out:?}") };
        assert_eq!(m.state, MarkerState::RolledBack);
        assert_eq!(a.trial(), None, "this start runs the previous config");
        // Reported once the daemon (and its fleet link) runs.
        let out = a.handle(Input::Started { ready_within_s: 60 }, T0 + 1);
        assert_eq!(out[0], Action::RemoveMarker);
        let r = reports(&out);
        assert_eq!(r[0].status, ConfigStatus::RolledBack);
        assert!(r[0].problems[0].contains("stopped while starting"), "{:?}", r[0].problems);
    }

    #[test]
    fn a_rollback_is_reported_with_its_reason_at_the_next_start() {
        let mut a = Apply::new();
        let out = a.handle(Input::Starting(found(MarkerState::RolledBack, Some("port held"))), T0);
        assert!(out.is_empty(), "the previous config is already back");
        let out = a.handle(Input::Started { ready_within_s: 60 }, T0 + 1);
        let r = reports(&out);
        assert_eq!((r[0].version.as_deref(), r[0].status), (Some("v2"), ConfigStatus::RolledBack));
        assert_eq!(r[0].problems, vec!["port held".to_string()]);
        assert!(a.handle(Input::Started { ready_within_s: 60 }, T0 + 2).is_empty(), "reported once");
    }

    #[test]
    fn the_previous_config_failing_too_is_not_rolled_back_again() {
        // After a rollback the old config is started; if that fails as well there
        // is nothing older to go back to: no restore, no restart loop.
        let mut a = Apply::new();
        a.handle(Input::Starting(found(MarkerState::RolledBack, Some("port held"))), T0);
        assert!(a.handle(Input::StartFailed("disk gone".into()), T0 + 1).is_empty());
    }

    #[test]
    fn the_marker_reads_back_as_written() {
        let m = marker("2026-12-04a", MarkerState::RolledBack, Some("port held"), T0);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"version":"2026-12-04a","state":"rolled_back","reason":"port held","at":1800000000}"#
        );
        assert_eq!(serde_json::from_str::<Marker>(&json).unwrap(), m);
        let w: Marker = serde_json::from_str(r#"{"version":"v","state":"written","at":1}"#).unwrap();
        assert_eq!((w.state, w.reason), (MarkerState::Written, None));
    }
}
