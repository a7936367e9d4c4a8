//! The thin I/O edge of the fleet link: `rumqttc` over TLS with the box's
//! client certificate, a task that polls the event loop (reconnecting with
//! backoff), and one task that feeds [`FleetLink`] and carries out its actions
//! through a [`Host`] (the daemon: store, commands, config).

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{
    Action, Command, CommandRecord, ConfigReport, DesiredConfig, Event, FleetLink, LinkSettings, LinkStats,
    Publish, Qos, Verifier,
};
use crate::FleetConfig;

/// Why the link could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    #[error("{what} {path}: {source}")]
    Pem { what: &'static str, path: String, source: rustls::pki_types::pem::Error },
    #[error("{what} {path}: {source}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("broker: {0}")]
    Broker(String),
    #[error(transparent)]
    Key(#[from] super::command::KeyError),
}

/// Unix seconds now (the driver is where the clock is read).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A rustls client config: the broker's CA, the box's certificate and key.
pub fn tls_client_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, DriverError> {
    fn pem(
        what: &'static str,
        p: &Path,
    ) -> impl FnOnce(rustls::pki_types::pem::Error) -> DriverError + use<> {
        let path = p.display().to_string();
        move |source| DriverError::Pem { what, path, source }
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(pem("CA certificate", ca))? {
        roots.add(c.map_err(pem("CA certificate", ca))?)?;
    }
    if roots.is_empty() {
        return Err(DriverError::NoCertificate { path: ca.display().to_string() });
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem("client certificate", cert))?
        .collect::<Result<_, _>>()
        .map_err(pem("client certificate", cert))?;
    if certs.is_empty() {
        return Err(DriverError::NoCertificate { path: cert.display().to_string() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem("client key", key))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?)
}

/// `HOST:PORT` split (IPv6 in brackets allowed).
pub fn split_broker(broker: &str) -> Result<(String, u16), DriverError> {
    let (host, port) =
        broker.rsplit_once(':').ok_or_else(|| DriverError::Broker(format!("{broker:?} is not HOST:PORT")))?;
    let port = port.parse().map_err(|_| DriverError::Broker(format!("{broker:?}: bad port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(DriverError::Broker(format!("{broker:?}: no host")));
    }
    Ok((host.to_owned(), port))
}

/// MQTT options for a client with a TLS client certificate. `will`: the last will.
pub fn mqtt_options(
    client_id: &str,
    broker: &str,
    keep_alive: Duration,
    tls: rustls::ClientConfig,
    will: Option<&Publish>,
    clean_session: bool,
) -> Result<MqttOptions, DriverError> {
    let (host, port) = split_broker(broker)?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(keep_alive);
    o.set_clean_session(clean_session);
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    if let Some(w) = will {
        o.set_last_will(LastWill::new(w.topic.clone(), w.payload.clone(), qos(w.qos), w.retain));
    }
    Ok(o)
}

fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

/// How a command ended, from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub message: String,
    /// The client certificate changed: reconnect with the new files.
    pub reconnect: bool,
}

impl Outcome {
    pub fn done(message: impl Into<String>) -> Outcome {
        Outcome { message: message.into(), reconnect: false }
    }
}

/// What the link needs from the daemon. Futures run on the tokio runtime;
/// blocking work belongs in `spawn_blocking` inside them.
pub trait Host: Send + Sync + 'static {
    /// Run a verified command. `Err` = it failed, with the reason.
    fn run(&self, cmd: Command) -> impl Future<Output = Result<Outcome, String>> + Send;
    /// Validate and apply a desired config; roll back on failure.
    fn apply_config(&self, desired: DesiredConfig) -> impl Future<Output = ConfigReport> + Send;
    /// Insert or replace a command record in the store.
    fn persist(&self, rec: CommandRecord) -> impl Future<Output = Result<(), String>> + Send;
    /// Delete a command record.
    fn forget(&self, id: String) -> impl Future<Output = Result<(), String>> + Send;
    /// Telemetry now (JSON).
    fn telemetry(&self) -> impl Future<Output = serde_json::Value> + Send;
    /// Retained state now (JSON).
    fn state(&self) -> impl Future<Output = serde_json::Value> + Send;
    /// An [`apply_config`](Host::apply_config) report has been handed to the MQTT client
    /// (or the offline buffer): whatever is queued later goes after it. The daemon restarts
    /// here for an `applying` report, so the report leaves before the link's goodbye.
    fn config_reported(&self, report: &ConfigReport) {
        let _ = report;
    }
}

/// The link as the admin page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// `connecting`, `connected`, `disconnected`, `stopped` or `error`.
    pub state: String,
    pub broker: String,
    pub device_id: String,
    pub last_error: Option<String>,
    /// Unix seconds of the last CONNACK.
    pub connected_at: Option<u64>,
    pub stats: LinkStats,
}

/// Shared view of the running link.
pub type SharedStatus = Arc<Mutex<LinkStatus>>;

fn set_status(s: &SharedStatus, f: impl FnOnce(&mut LinkStatus)) {
    f(&mut s.lock().unwrap_or_else(PoisonError::into_inner));
}

/// What the caller keeps of a running link.
pub struct LinkTask {
    pub status: SharedStatus,
    pub task: JoinHandle<()>,
    /// Config reports from outside the link (the outcome of an apply by restart,
    /// known only to the restarted daemon): published like any other report.
    pub reports: mpsc::Sender<ConfigReport>,
}

/// Start the link: reads the key and TLS files, then runs until `shutdown` turns true.
/// `records` and `applied_version` come from the store.
pub fn start<H: Host>(
    cfg: &FleetConfig,
    records: Vec<CommandRecord>,
    applied_version: Option<String>,
    host: Arc<H>,
    shutdown: watch::Receiver<bool>,
) -> Result<LinkTask, DriverError> {
    let read = |what: &'static str, p: &Path| {
        std::fs::read(p).map_err(|source| DriverError::Read { what, path: p.display().to_string(), source })
    };
    let authority = read("fleet authority key", &cfg.authority_key_file)?;
    let verifier =
        Verifier::new(&authority, cfg.authority_algorithm, &cfg.device_id, cfg.max_command_ttl.as_secs())?;
    let tls = tls_client_config(&cfg.ca_file, &cfg.cert_file, &cfg.key_file)?;
    let settings = LinkSettings { device_id: cfg.device_id.clone(), offline_buffer: cfg.offline_buffer };
    let (link, initial) = FleetLink::new(settings, verifier, records, applied_version, unix_now());
    let will = link.last_will();
    let opts = mqtt_options(&cfg.device_id, &cfg.broker, cfg.keep_alive, tls, Some(&will), false)?;
    let status: SharedStatus = Arc::new(Mutex::new(LinkStatus {
        state: "connecting".into(),
        broker: cfg.broker.clone(),
        device_id: cfg.device_id.clone(),
        ..LinkStatus::default()
    }));
    let (reports, reports_rx) = mpsc::channel(8);
    let task =
        tokio::spawn(drive(cfg.clone(), link, initial, opts, host, status.clone(), reports_rx, shutdown));
    Ok(LinkTask { status, task, reports })
}

enum Done {
    Command(String, Result<Outcome, String>),
    Config(ConfigReport),
}

/// Polls the event loop; reconnects with backoff (0.5 s doubling to 30 s).
fn spawn_poller(
    mut el: EventLoop,
    tx: mpsc::Sender<Result<rumqttc::Event, String>>,
    mut reload: mpsc::Receiver<Transport>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                r = el.poll() => match r {
                    Ok(ev) => {
                        if matches!(ev, rumqttc::Event::Incoming(Packet::ConnAck(_))) {
                            backoff = Duration::from_millis(500);
                        }
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if tx.send(Err(e.to_string())).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                },
                Some(t) = reload.recv() => {
                    el.mqtt_options.set_transport(t);
                    // Drop the connection; the next poll connects with the new certificate.
                    el.clean();
                    if tx.send(Err("reconnecting with a new client certificate".into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

// The link's parts, each moved into the one task that owns them.
#[allow(clippy::too_many_arguments)]
async fn drive<H: Host>(
    cfg: FleetConfig,
    mut link: FleetLink,
    initial: Vec<Action>,
    opts: MqttOptions,
    host: Arc<H>,
    status: SharedStatus,
    mut reports: mpsc::Receiver<ConfigReport>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (client, el) = AsyncClient::new(opts, 1024);
    let (ev_tx, mut ev_rx) = mpsc::channel(256);
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let poller = spawn_poller(el, ev_tx, reload_rx);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
    let mut ctx = Ctx { client: client.clone(), host: host.clone(), done_tx };
    ctx.carry_out(initial).await;
    let mut telemetry = tokio::time::interval(cfg.telemetry_interval);
    telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    loop {
        let actions = tokio::select! {
            ev = ev_rx.recv() => match ev {
                None => break,
                Some(Ok(rumqttc::Event::Incoming(Packet::ConnAck(_)))) => {
                    tracing::info!(broker = %cfg.broker, "fleet link up");
                    set_status(&status, |s| {
                        s.state = "connected".into();
                        s.connected_at = Some(unix_now());
                        s.last_error = None;
                    });
                    link.handle(Event::Connected, unix_now())
                }
                Some(Ok(rumqttc::Event::Incoming(Packet::Publish(p)))) => {
                    link.handle(Event::Message { topic: &p.topic, payload: &p.payload }, unix_now())
                }
                Some(Ok(_)) => Vec::new(),
                Some(Err(e)) => {
                    let was = link.stats().connected;
                    if was {
                        tracing::warn!(error = %e, "fleet link down; reconnecting with backoff");
                    } else {
                        tracing::debug!(error = %e, "fleet link: connect failed");
                    }
                    set_status(&status, |s| {
                        s.state = "disconnected".into();
                        s.last_error = Some(e);
                    });
                    link.handle(Event::Disconnected, unix_now())
                }
            },
            Some(done) = done_rx.recv() => match done {
                Done::Command(id, r) => {
                    let (ok, message, reconnect) = match r {
                        Ok(o) => (true, o.message, o.reconnect),
                        Err(m) => (false, m, false),
                    };
                    let a = link.command_finished(&id, ok, message, unix_now());
                    if reconnect {
                        match tls_client_config(&cfg.ca_file, &cfg.cert_file, &cfg.key_file) {
                            Ok(t) => {
                                let _ = reload_tx
                                    .send(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(t))))
                                    .await;
                            }
                            Err(e) => tracing::error!(error = %e, "fleet: the new client certificate cannot be used"),
                        }
                    }
                    a
                }
                Done::Config(report) => {
                    let a = link.config_outcome(report.clone());
                    ctx.carry_out(a).await;
                    host.config_reported(&report);
                    Vec::new()
                }
            },
            _ = telemetry.tick() => {
                let mut a = link.state(json_bytes(&host.state().await));
                a.extend(link.telemetry(json_bytes(&host.telemetry().await)));
                a
            }
            Some(report) = reports.recv() => link.config_outcome(report),
            _ = prune.tick() => link.prune(unix_now()),
            _ = shutdown.changed() => break,
        };
        ctx.carry_out(actions).await;
        set_status(&status, |s| s.stats = link.stats());
    }
    // What finished just before the stop (a config report before a restart) still goes out.
    let mut last = Vec::new();
    while let Ok(done) = done_rx.try_recv() {
        match done {
            Done::Command(id, r) => {
                let (ok, message) = match r {
                    Ok(o) => (true, o.message),
                    Err(m) => (false, m),
                };
                last.extend(link.command_finished(&id, ok, message, unix_now()));
            }
            Done::Config(report) => last.extend(link.config_outcome(report)),
        }
    }
    while let Ok(report) = reports.try_recv() {
        last.extend(link.config_outcome(report));
    }
    ctx.carry_out(last).await;
    // Graceful: say goodbye (the will is for crashes), then disconnect.
    let bye = link.goodbye();
    ctx.carry_out(bye).await;
    let _ = client.disconnect().await;
    let drain = async {
        while let Some(ev) = ev_rx.recv().await {
            if ev.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    poller.abort();
    set_status(&status, |s| {
        s.state = "stopped".into();
        s.stats = link.stats();
        s.stats.connected = false;
    });
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

struct Ctx<H: Host> {
    client: AsyncClient,
    host: Arc<H>,
    done_tx: mpsc::Sender<Done>,
}

impl<H: Host> Ctx<H> {
    async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut unrecorded: Option<String> = None;
        for a in actions {
            match a {
                Action::Subscribe(filters) => {
                    let subs =
                        filters.into_iter().map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                    if let Err(e) = self.client.subscribe_many(subs).await {
                        tracing::error!(error = %e, "fleet: subscribe failed");
                    }
                }
                Action::Publish(p) => {
                    if let Err(e) = self.client.publish(p.topic, qos(p.qos), p.retain, p.payload).await {
                        tracing::error!(error = %e, "fleet: publish failed");
                    }
                }
                Action::Persist(rec) => {
                    let id = rec.id.clone();
                    if let Err(e) = self.host.persist(rec).await {
                        tracing::error!(error = %e, id, "fleet: the command log could not be written");
                        unrecorded = Some(format!("not run: the command log could not be written ({e})"));
                    }
                }
                Action::Forget(id) => {
                    if let Err(e) = self.host.forget(id).await {
                        tracing::warn!(error = %e, "fleet: could not delete a command record");
                    }
                }
                Action::Run(cmd) => {
                    let tx = self.done_tx.clone();
                    if let Some(why) = unrecorded.take() {
                        // Without a record a restart could run it twice: do not run it.
                        let _ = tx.send(Done::Command(cmd.id, Err(why))).await;
                        continue;
                    }
                    let host = self.host.clone();
                    tokio::spawn(async move {
                        let id = cmd.id.clone();
                        let r = host.run(cmd).await;
                        let _ = tx.send(Done::Command(id, r)).await;
                    });
                }
                Action::ApplyConfig(d) => {
                    let tx = self.done_tx.clone();
                    let host = self.host.clone();
                    tokio::spawn(async move {
                        let r = host.apply_config(d).await;
                        let _ = tx.send(Done::Config(r)).await;
                    });
                }
            }
        }
    }
}
