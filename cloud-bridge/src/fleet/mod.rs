//! The fleet link: MQTT telemetry, retained state, signed commands, desired
//! config and the last will, for one box.
//!
//! [`FleetLink`] is the sans-IO core: the driver feeds it MQTT events
//! ([`Event`]), finished commands, config outcomes and telemetry, each with
//! `now` (unix seconds); it returns [`Action`]s (publish, subscribe, persist a
//! command record, run a command, apply a config). It never touches a socket or
//! the clock. [`driver`] runs it over `rumqttc` with TLS.
//!
//! Topics (all under `roombox/{device_id}/`):
//!
//! | topic | direction | QoS / retain | payload |
//! | --- | --- | --- | --- |
//! | `status` | box → | 1, retained | `online`; the last will is `offline` |
//! | `telemetry` | box → | 0 | JSON, every `telemetry_interval` |
//! | `state` | box → | 1, retained | JSON, when it changes |
//! | `cmd/{name}` | → box | 1 | a JWT signed by the fleet authority |
//! | `cmd/{name}/result` | box → | 1, retained until acked | [`CommandResult`] JSON |
//! | `cmd/{name}/ack` | → box | 1 | the command id: clears the retained result |
//! | `refused` | box → | 1 | [`RefusalReport`] JSON |
//! | `config/desired` | → box | 1, retained | [`DesiredConfig`] JSON |
//! | `config/reported` | box → | 1, retained | [`ConfigReport`] JSON |

pub mod apply;
pub mod command;
pub mod desired;
pub mod driver;

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

pub use command::{CommandClaims, Refusal, Verifier};
pub use desired::{ConfigReport, ConfigStatus, DesiredConfig};

/// A device id: 1-64 of letters, digits, `-`, `_`, `.` (no MQTT wildcards or levels).
pub fn valid_device_id(id: &str) -> bool {
    command::valid_command_id(id)
}

/// The box's topics.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(device_id: &str) -> Topics {
        Topics { prefix: format!("roombox/{device_id}") }
    }
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    pub fn telemetry(&self) -> String {
        format!("{}/telemetry", self.prefix)
    }
    pub fn state(&self) -> String {
        format!("{}/state", self.prefix)
    }
    pub fn refused(&self) -> String {
        format!("{}/refused", self.prefix)
    }
    pub fn result(&self, name: &str) -> String {
        format!("{}/cmd/{name}/result", self.prefix)
    }
    pub fn desired(&self) -> String {
        format!("{}/config/desired", self.prefix)
    }
    pub fn reported(&self) -> String {
        format!("{}/config/reported", self.prefix)
    }
    /// What the box subscribes to.
    pub fn subscriptions(&self) -> Vec<String> {
        vec![format!("{}/cmd/+", self.prefix), format!("{}/cmd/+/ack", self.prefix), self.desired()]
    }

    /// What an incoming topic is for.
    fn classify<'t>(&self, topic: &'t str) -> Incoming<'t> {
        let Some(rest) = topic.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_prefix('/')) else {
            return Incoming::Other;
        };
        if rest == "config/desired" {
            return Incoming::Desired;
        }
        let Some(cmd) = rest.strip_prefix("cmd/") else {
            return Incoming::Other;
        };
        match cmd.split_once('/') {
            None if !cmd.is_empty() => Incoming::Command(cmd),
            Some((name, "ack")) if !name.is_empty() => Incoming::Ack(name),
            _ => Incoming::Other,
        }
    }
}

enum Incoming<'t> {
    Command(&'t str),
    Ack(&'t str),
    Desired,
    Other,
}

/// MQTT quality of service the link uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

/// What a publish carries (decides what the offline buffer drops first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Status,
    Telemetry,
    State,
    Result,
    Refusal,
    Report,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub retain: bool,
    pub kind: Kind,
}

/// An MQTT event from the driver.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// CONNACK received: the session is up.
    Connected,
    /// The connection is gone (the driver reconnects with backoff).
    Disconnected,
    Message {
        topic: &'a str,
        payload: &'a [u8],
    },
}

/// A verified command to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub name: String,
    pub args: serde_json::Value,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: String,
    pub name: String,
    pub ok: bool,
    pub message: String,
    /// Unix seconds.
    pub finished_at: u64,
}

/// One command the box has seen: the replay log and the result until acked.
/// Kept in the daemon's SQLite store (the driver writes every
/// [`Action::Persist`] before it acts on what follows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: String,
    pub name: String,
    /// The token's `exp`: the record is kept at least until then.
    pub expires_at: u64,
    /// SHA-256 of the token, hex: the same id with another token is a replay.
    pub token_sha256: String,
    pub result: Option<CommandResult>,
    pub acked: bool,
}

/// What the box says about a refused command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalReport {
    /// The topic's command name.
    pub name: String,
    /// The command id, when the token got far enough to say it.
    pub id: Option<String>,
    pub reason: Refusal,
    pub at: u64,
}

/// What the core asks the driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Subscribe(Vec<String>),
    Publish(Publish),
    /// Write this record to the store (insert or replace) before the next action.
    Persist(CommandRecord),
    /// Delete the record (acked and past its expiry).
    Forget(String),
    /// Run the command, then call [`FleetLink::command_finished`].
    Run(Command),
    /// Validate and apply, then call [`FleetLink::config_outcome`].
    ApplyConfig(DesiredConfig),
}

/// Tunables of the core.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub device_id: String,
    pub offline_buffer: usize,
}

/// Counters and the link's state, for the admin page and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    pub connected: bool,
    pub messages_in: u64,
    pub messages_out: u64,
    pub reconnects: u64,
    pub connects: u64,
    pub refused: BTreeMap<String, u64>,
    pub commands_run: u64,
    pub telemetry_dropped: u64,
    pub buffered: usize,
    pub config_version: Option<String>,
    /// Config reports by status (`applied`, `rejected`, `rolled_back`, `applying`).
    pub config_reports: BTreeMap<String, u64>,
}

/// The sans-IO fleet link of one box.
#[derive(Debug)]
pub struct FleetLink {
    topics: Topics,
    verifier: Verifier,
    settings: LinkSettings,
    connected: bool,
    outbox: VecDeque<Publish>,
    records: HashMap<String, CommandRecord>,
    /// Which command id's result is retained on `cmd/{name}/result` now.
    retained: HashMap<String, String>,
    /// Results loaded at start that are not acked: re-published on the first connect.
    republish: Vec<CommandResult>,
    last_state: Option<Vec<u8>>,
    applied_version: Option<String>,
    applying: Option<String>,
    stats: LinkStats,
}

impl FleetLink {
    /// `records`: the store's command log; `applied_version`: the desired config version last applied.
    pub fn new(
        settings: LinkSettings,
        verifier: Verifier,
        records: Vec<CommandRecord>,
        applied_version: Option<String>,
        now: u64,
    ) -> (FleetLink, Vec<Action>) {
        let mut out = Vec::new();
        let mut map = HashMap::new();
        let mut republish = Vec::new();
        for mut r in records {
            if r.result.is_none() {
                // The box stopped while it ran: it is never run again, and says so.
                r.result = Some(CommandResult {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    ok: false,
                    message: "interrupted: the box restarted while the command ran".into(),
                    finished_at: now,
                });
                out.push(Action::Persist(r.clone()));
            }
            if !r.acked
                && let Some(res) = &r.result
            {
                republish.push(res.clone());
            }
            map.insert(r.id.clone(), r);
        }
        republish.sort_by_key(|r| r.finished_at);
        let stats = LinkStats { config_version: applied_version.clone(), ..LinkStats::default() };
        let link = FleetLink {
            topics: Topics::new(&settings.device_id),
            verifier,
            settings,
            connected: false,
            outbox: VecDeque::new(),
            records: map,
            retained: HashMap::new(),
            republish,
            last_state: None,
            applied_version,
            applying: None,
            stats,
        };
        (link, out)
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn stats(&self) -> LinkStats {
        let mut s = self.stats.clone();
        s.connected = self.connected;
        s.buffered = self.outbox.len();
        s
    }

    /// The record of a command id (tests, the admin page).
    pub fn record(&self, id: &str) -> Option<&CommandRecord> {
        self.records.get(id)
    }

    /// The payload of the last will: published by the broker when the box vanishes.
    pub fn last_will(&self) -> Publish {
        Publish {
            topic: self.topics.status(),
            payload: b"offline".to_vec(),
            qos: Qos::AtLeastOnce,
            retain: true,
            kind: Kind::Status,
        }
    }

    /// The clean goodbye before a graceful disconnect (the will is not sent then).
    pub fn goodbye(&mut self) -> Vec<Action> {
        if !self.connected {
            return Vec::new();
        }
        self.stats.messages_out += 1;
        vec![Action::Publish(self.last_will())]
    }

    /// Feed one MQTT event.
    pub fn handle(&mut self, ev: Event<'_>, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Connected => {
                if self.stats.connects > 0 {
                    self.stats.reconnects += 1;
                }
                self.stats.connects += 1;
                self.connected = true;
                out.push(Action::Subscribe(self.topics.subscriptions()));
                let status = Publish {
                    topic: self.topics.status(),
                    payload: b"online".to_vec(),
                    qos: Qos::AtLeastOnce,
                    retain: true,
                    kind: Kind::Status,
                };
                self.send(status, &mut out);
                if let Some(s) = self.last_state.clone() {
                    // Retained, so a broker that lost it (restarted without persistence) has it again.
                    self.outbox.retain(|p| p.kind != Kind::State);
                    self.send(self.state_publish(s), &mut out);
                }
                for r in std::mem::take(&mut self.republish) {
                    let p = self.result_publish(&r);
                    self.send(p, &mut out);
                }
                while let Some(p) = self.outbox.pop_front() {
                    self.stats.messages_out += 1;
                    out.push(Action::Publish(p));
                }
            }
            Event::Disconnected => self.connected = false,
            Event::Message { topic, payload } => {
                self.stats.messages_in += 1;
                match self.topics.classify(topic) {
                    Incoming::Command(name) => self.on_command(name, payload, now, &mut out),
                    Incoming::Ack(name) => self.on_ack(name, payload, now, &mut out),
                    Incoming::Desired => self.on_desired(payload, now, &mut out),
                    Incoming::Other => {
                        tracing::debug!(topic, "fleet: message on a topic the box does not use")
                    }
                }
            }
        }
        out
    }

    fn on_command(&mut self, name: &str, payload: &[u8], now: u64, out: &mut Vec<Action>) {
        let claims = match self.verifier.verify(payload, name, now) {
            Ok(c) => c,
            Err(reason) => return self.refuse(name, None, reason, now, out),
        };
        let hash = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, payload.trim_ascii()));
        if let Some(rec) = self.records.get(&claims.jti) {
            if rec.token_sha256 != hash {
                return self.refuse(name, Some(claims.jti), Refusal::ReplayedId, now, out);
            }
            // Delivered again (QoS 1, a re-sent message): it ran once; say the same result again.
            if let Some(res) = rec.result.clone() {
                tracing::info!(id = %res.id, name, "fleet: command delivered again; re-publishing its result");
                let p = self.result_publish(&res);
                self.retained.insert(res.name.clone(), res.id.clone());
                self.send(p, out);
            }
            return;
        }
        let rec = CommandRecord {
            id: claims.jti.clone(),
            name: claims.name.clone(),
            expires_at: claims.exp,
            token_sha256: hash,
            result: None,
            acked: false,
        };
        self.records.insert(rec.id.clone(), rec.clone());
        self.stats.commands_run += 1;
        tracing::info!(id = %claims.jti, name, "fleet: running a signed command");
        out.push(Action::Persist(rec));
        out.push(Action::Run(Command { id: claims.jti, name: claims.name, args: claims.args }));
    }

    fn refuse(&mut self, name: &str, id: Option<String>, reason: Refusal, now: u64, out: &mut Vec<Action>) {
        tracing::warn!(name, id = id.as_deref(), reason = reason.label(), "fleet: command refused");
        *self.stats.refused.entry(reason.label().to_owned()).or_default() += 1;
        // The name is echoed only when it is a plain topic level (it is ours: the broker's ACL let it in).
        let report = RefusalReport { name: name.chars().take(64).collect(), id, reason, at: now };
        let payload = serde_json::to_vec(&report).unwrap_or_default();
        self.send(
            Publish {
                topic: self.topics.refused(),
                payload,
                qos: Qos::AtLeastOnce,
                retain: false,
                kind: Kind::Refusal,
            },
            out,
        );
    }

    fn on_ack(&mut self, name: &str, payload: &[u8], now: u64, out: &mut Vec<Action>) {
        let Ok(id) = std::str::from_utf8(payload).map(str::trim) else { return };
        let Some(rec) = self.records.get_mut(id) else { return };
        if rec.name != name || rec.result.is_none() || rec.acked {
            return;
        }
        rec.acked = true;
        let rec = rec.clone();
        out.push(Action::Persist(rec.clone()));
        if self.retained.get(name).is_some_and(|r| r == id) {
            self.retained.remove(name);
            // An empty retained message clears the topic.
            let p = Publish {
                topic: self.topics.result(name),
                payload: Vec::new(),
                qos: Qos::AtLeastOnce,
                retain: true,
                kind: Kind::Result,
            };
            self.send(p, out);
        }
        if rec.expires_at < now {
            self.records.remove(id);
            out.push(Action::Forget(id.to_owned()));
        }
    }

    fn on_desired(&mut self, payload: &[u8], now: u64, out: &mut Vec<Action>) {
        if payload.is_empty() {
            return; // the operator cleared the retained desired config
        }
        match desired::parse(payload) {
            Err(problem) => {
                let report = ConfigReport {
                    version: None,
                    status: ConfigStatus::Rejected,
                    problems: vec![problem],
                    at: now,
                };
                self.report(report, out);
            }
            Ok(d) => {
                if self.applied_version.as_deref() == Some(d.version.as_str())
                    || self.applying.as_deref() == Some(d.version.as_str())
                {
                    return; // re-delivered (retained, reconnect): already applied or being applied
                }
                self.applying = Some(d.version.clone());
                out.push(Action::ApplyConfig(d));
            }
        }
    }

    /// The driver applied (or could not apply) a desired config.
    pub fn config_outcome(&mut self, report: ConfigReport) -> Vec<Action> {
        let mut out = Vec::new();
        if report.version.is_some() && self.applying == report.version {
            self.applying = None;
        }
        // A rejected version is remembered too: the same retained message is not retried on every reconnect.
        if report.version.is_some() {
            self.applied_version = report.version.clone();
            if report.status == ConfigStatus::Applied {
                self.stats.config_version = report.version.clone();
            }
        }
        self.report(report, &mut out);
        out
    }

    fn report(&mut self, report: ConfigReport, out: &mut Vec<Action>) {
        *self.stats.config_reports.entry(report.status.label().to_owned()).or_default() += 1;
        let payload = serde_json::to_vec(&report).unwrap_or_default();
        self.send(
            Publish {
                topic: self.topics.reported(),
                payload,
                qos: Qos::AtLeastOnce,
                retain: true,
                kind: Kind::Report,
            },
            out,
        );
    }

    /// A command the driver ran has ended.
    pub fn command_finished(&mut self, id: &str, ok: bool, message: String, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(rec) = self.records.get_mut(id) else { return out };
        if rec.result.is_some() {
            return out;
        }
        let res = CommandResult { id: id.to_owned(), name: rec.name.clone(), ok, message, finished_at: now };
        rec.result = Some(res.clone());
        out.push(Action::Persist(rec.clone()));
        self.retained.insert(res.name.clone(), res.id.clone());
        let p = self.result_publish(&res);
        self.send(p, &mut out);
        out
    }

    /// Periodic telemetry (QoS 0; the first thing dropped while offline).
    pub fn telemetry(&mut self, payload: Vec<u8>) -> Vec<Action> {
        let mut out = Vec::new();
        let p = Publish {
            topic: self.topics.telemetry(),
            payload,
            qos: Qos::AtMostOnce,
            retain: false,
            kind: Kind::Telemetry,
        };
        self.send(p, &mut out);
        out
    }

    /// The box's state; published (retained) only when it changed.
    pub fn state(&mut self, payload: Vec<u8>) -> Vec<Action> {
        let mut out = Vec::new();
        if self.last_state.as_ref() == Some(&payload) {
            return out;
        }
        self.last_state = Some(payload.clone());
        // Only the newest state matters.
        self.outbox.retain(|p| p.kind != Kind::State);
        let p = self.state_publish(payload);
        self.send(p, &mut out);
        out
    }

    /// Forget acked records past their expiry (call now and then).
    pub fn prune(&mut self, now: u64) -> Vec<Action> {
        let gone: Vec<String> =
            self.records.values().filter(|r| r.acked && r.expires_at < now).map(|r| r.id.clone()).collect();
        gone.into_iter()
            .map(|id| {
                self.records.remove(&id);
                Action::Forget(id)
            })
            .collect()
    }

    fn state_publish(&self, payload: Vec<u8>) -> Publish {
        Publish {
            topic: self.topics.state(),
            payload,
            qos: Qos::AtLeastOnce,
            retain: true,
            kind: Kind::State,
        }
    }

    fn result_publish(&self, r: &CommandResult) -> Publish {
        Publish {
            topic: self.topics.result(&r.name),
            payload: serde_json::to_vec(r).unwrap_or_default(),
            qos: Qos::AtLeastOnce,
            retain: true,
            kind: Kind::Result,
        }
    }

    /// Publish now, or hold while offline (bounded: telemetry goes first, results never).
    fn send(&mut self, p: Publish, out: &mut Vec<Action>) {
        if self.connected {
            self.stats.messages_out += 1;
            out.push(Action::Publish(p));
            return;
        }
        if self.outbox.len() >= self.settings.offline_buffer {
            if let Some(i) = self.outbox.iter().position(|q| q.kind == Kind::Telemetry) {
                self.outbox.remove(i);
                self.stats.telemetry_dropped += 1;
            } else if p.kind == Kind::Telemetry {
                self.stats.telemetry_dropped += 1;
                return;
            } else if let Some(i) =
                self.outbox.iter().position(|q| matches!(q.kind, Kind::Refusal | Kind::Status))
            {
                self.outbox.remove(i);
            }
            // Results, reports and state stay even past the bound: they are few and must not be lost.
        }
        self.outbox.push_back(p);
    }
}

#[cfg(test)]
mod tests;
