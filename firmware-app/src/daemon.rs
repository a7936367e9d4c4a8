//! Start, run and stop the daemon; the demo.
//!
//! Start order: board profile (media defaults, capacity) → data dir → metrics
//! → store (crash leftovers closed) → auth (key, first-boot admin) → TLS files
//! → SFU → room-event task → room media (the box's camera and microphone join
//! the box's room as participant `media.identity`) → button panel (GPIO lines
//! of the board, or simulated) → HTTP(S) server. Stop order (SIGTERM/SIGINT):
//! the room media leaves and its threads stop, the panel's LEDs go off; the SFU
//! tells every peer and closes; the event task drains; open meetings and
//! sessions are closed in the store; the HTTP server drains for up to 5 s; the
//! WAL is checkpointed and the store thread ends. Every step that writes is a committed transaction, so a
//! kill at any point leaves the store consistent and the next start closes
//! what was left open.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfu_core::auth::Grants;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{Auth, AuthServiceError, unix_now};
use crate::config::DaemonConfig;
use crate::device::Device;
use crate::events::EventRecorder;
use crate::http::{AppState, SharedState};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, StoreOptions, q};
use crate::tls::{TlsError, TlsFiles};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthServiceError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Board(#[from] crate::board::BoardError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// A running daemon.
pub struct Running {
    pub state: SharedState,
    /// The address the HTTP(S) server listens on.
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// The plain-HTTP redirect listener's address, when `http.redirect_listen` is set.
    pub redirect_addr: Option<SocketAddr>,
    /// Set on first boot only: the generated admin password.
    pub first_admin_password: Option<String>,
    /// The board profile in use (`board` / `--board`).
    pub board: Option<crate::board::BoardProfile>,
    handle: axum_server::Handle<SocketAddr>,
    server: JoinHandle<std::io::Result<()>>,
    redirect: Option<(axum_server::Handle<SocketAddr>, JoinHandle<std::io::Result<()>>)>,
    shutdown_tx: watch::Sender<bool>,
    events: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// `https://HOST:PORT` (or `http://`) a browser on the LAN can open.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let ip = if self.addr.ip().is_unspecified() {
            crate::tls::local_addresses()
                .into_iter()
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
                .unwrap_or(IpAddr::from([127, 0, 0, 1]))
        } else {
            self.addr.ip()
        };
        match ip {
            IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}", self.addr.port()),
            IpAddr::V4(v4) => format!("{scheme}://{v4}:{}", self.addr.port()),
        }
    }

    /// Graceful shutdown (see the module docs). Never loses a committed row.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let _ = self.shutdown_tx.send(true);
        // Recordings first: every file finalised while the SFU still runs.
        self.state.recordings.stop_all("shutdown").await;
        // The room's camera and microphone first: they leave the room while the SFU still runs.
        self.state.device.stop().await;
        if let Some(sfu) = &self.state.sfu {
            sfu.shutdown().await;
        }
        // Let the event task record the SFU's last leaves, then stop it.
        let mut events = self.events;
        if tokio::time::timeout(Duration::from_secs(2), &mut events).await.is_err() {
            events.abort();
        }
        let now = unix_now() as i64;
        match self.state.store.call(move |c| q::close_all_open(c, now, "shutdown")).await {
            Ok((m, s)) => tracing::info!(meetings = m, sessions = s, "closed open meetings in the store"),
            Err(e) => tracing::error!(error = %e, "could not close open meetings (the next start will)"),
        }
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        if let Some((h, t)) = self.redirect {
            h.graceful_shutdown(Some(Duration::from_secs(1)));
            let _ = t.await;
        }
        let _ = self.server.await;
        for t in self.background {
            t.abort();
        }
        let store = self.state.store.clone();
        drop(self.state);
        if let Err(e) = store.close().await {
            tracing::error!(error = %e, "final checkpoint failed (the WAL still holds every commit)");
        }
        tracing::info!("stopped");
    }
}

/// Wait for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM"),
                _ = i.recv() => tracing::info!("SIGINT"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Start everything; returns once the server listens.
pub async fn start(mut cfg: DaemonConfig) -> Result<Running, DaemonError> {
    let board = crate::profile::apply_board(&mut cfg)?;
    let problems = cfg.validate();
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
        return Err(DaemonError::Config(text.join("; ")));
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cfg = Arc::new(cfg);
    let data_dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(io(format!("data dir {}", data_dir.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let server_id = if cfg.server_id.is_empty() { crate::tls::hostname() } else { cfg.server_id.clone() };
    let thermal = PathBuf::from("/sys/class/thermal");
    let metrics = Arc::new(Metrics::new(&cfg.region, &server_id, Some(thermal))?);

    // The store: opened (quick_check, migrations) off the runtime.
    let path = cfg.store_path();
    let opts = StoreOptions { synchronous: cfg.store.synchronous, max_size_mib: cfg.store.max_size_mib };
    let store = tokio::task::spawn_blocking(move || Store::open(&path, opts))
        .await
        .map_err(|e| DaemonError::Config(e.to_string()))??;
    let now = unix_now() as i64;
    let (m, s) = store.call(move |c| q::close_all_open(c, now, "crash_recovery")).await?;
    if m + s > 0 {
        tracing::warn!(meetings = m, sessions = s, "closed meetings left open by an unclean stop");
    }
    let room = cfg.room.clone();
    store.call(move |c| q::ensure_room(c, &room, now)).await?;

    let auth = Auth::new(&data_dir, cfg.auth.clone(), store.clone()).await?;
    let first_admin_password = auth.ensure_first_admin().await?;

    let tls = if cfg.http.tls {
        Some(match (&cfg.http.cert_file, &cfg.http.key_file) {
            (Some(c), Some(k)) => crate::tls::owner_files(c, k)?,
            _ => {
                let names = crate::tls::wanted_names(&cfg.http.extra_names);
                let d = data_dir.clone();
                tokio::task::spawn_blocking(move || crate::tls::ensure_self_signed(&d, &names))
                    .await
                    .map_err(|e| DaemonError::Config(e.to_string()))??
            }
        })
    } else {
        None
    };

    // The SFU. While it cannot start the daemon still serves (the API, the
    // admin page) and /readyz says why it is not ready.
    let sfu = match sfu_core::Sfu::start(cfg.sfu.clone(), auth.clone(), &metrics.registry).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "the SFU did not start; /readyz reports not ready");
            None
        }
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let device = Arc::new(Device::new(&cfg.room, &cfg.media));
    // Subscribed before the room media joins, so its join is recorded too.
    let recorder = EventRecorder::new(store.clone(), metrics.clone(), Some(device.clone()));
    let events = match &sfu {
        Some(s) => tokio::spawn(recorder.run(s.events(), Some(s.clone()))),
        None => tokio::spawn(async {}),
    };

    // The room's camera and microphone, into the box's room. A pipeline that
    // cannot start leaves the daemon serving; /readyz and the device API say why.
    match (&sfu, cfg.media.enabled) {
        (_, false) => tracing::info!("room media disabled (media.enabled = false)"),
        (None, true) => device.media_failed("the SFU is not running"),
        (Some(sfu), true) => {
            match crate::media::RoomMedia::start(sfu, &cfg.room, &cfg.media, &metrics.registry).await {
                Ok(m) => device.attach_media(m),
                Err(e) => {
                    tracing::error!(error = %e, "the room media did not start; /readyz reports not ready");
                    device.media_failed(&e.to_string());
                }
            }
        }
    }
    start_panel(board.as_ref(), &device);

    // Recordings: files a crash left open are cut after their last complete fragment first.
    let recordings = Arc::new(crate::recording::Recordings::new(
        &data_dir,
        cfg.recording.clone(),
        store.clone(),
        &metrics.registry,
        Some(device.clone()),
        sfu.clone(),
    )?);
    match recordings.recover().await {
        Ok(r) if !r.is_empty() => tracing::warn!(recordings = r.len(), "recovered recordings left open by a crash"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "recovering recordings failed; the next start tries again"),
    }

    // The fleet link (off unless `[cloud.fleet]` is configured).
    let (fleet, fleet_task) = crate::fleet::start(
        cfg.clone(),
        store.clone(),
        device.clone(),
        recordings.clone(),
        sfu.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
    )
    .await;

    let state: SharedState = Arc::new(AppState {
        cfg: cfg.clone(),
        auth: auth.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        sfu,
        device,
        started: Instant::now(),
        server_id,
        recordings,
        fleet,
    });
    let app = crate::http::router(state.clone());

    let handle = axum_server::Handle::new();
    let listen = cfg.http.listen;
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    // Connection limits and timeouts (crate::connlimit): slowloris, half-open TLS handshakes.
    let conn_metrics = crate::connlimit::ConnMetrics::register(&metrics.registry)?;
    let admit = crate::connlimit::Admit::new(
        cfg.http.max_connections,
        cfg.http.max_connections_per_ip,
        conn_metrics.clone(),
    );
    let on_accept_error = {
        let m = conn_metrics.clone();
        move |_: Option<&SocketAddr>, e: &std::io::Error| m.accept_error(e)
    };
    let redirect_admit = admit.clone();
    let server = match &tls {
        Some(files) => {
            let rc = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
                .map_err(io(format!("TLS certificate {}", files.cert.display())))?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rc)
                .handshake_timeout(cfg.http.tls_handshake_timeout)
                .acceptor(admit);
            let mut srv = axum_server::bind(listen)
                .acceptor(crate::connlimit::Watch::new(acceptor, &conn_metrics))
                .accept_error_handler(on_accept_error)
                .first_request_timeout(cfg.http.header_read_timeout)
                .handle(handle.clone());
            srv.http_builder().http1().header_read_timeout(cfg.http.header_read_timeout);
            tokio::spawn(srv.serve(make))
        }
        None => {
            let mut srv = axum_server::bind(listen)
                .acceptor(crate::connlimit::Watch::new(admit, &conn_metrics))
                .accept_error_handler(on_accept_error)
                .first_request_timeout(cfg.http.header_read_timeout)
                .handle(handle.clone());
            srv.http_builder().http1().header_read_timeout(cfg.http.header_read_timeout);
            tokio::spawn(srv.serve(make))
        }
    };
    let addr = match handle.listening().await {
        Some(a) => a,
        None => {
            let err = match server.await {
                Ok(Err(e)) => e,
                _ => std::io::Error::other("the server stopped"),
            };
            return Err(DaemonError::Io { what: format!("listen on {listen}"), source: err });
        }
    };

    let redirect = match (cfg.http.redirect_listen, tls.is_some()) {
        (Some(r), true) => {
            let h = axum_server::Handle::new();
            let port = addr.port();
            let app = axum::Router::new()
                .fallback(move |req: axum::extract::Request| async move { redirect_to_https(&req, port) });
            // The same edge as the main listener: security headers (no HSTS on plain HTTP), a clean
            // 413 for a body over the limit (a smaller one is drained, so the 308 reaches the client),
            // the header-read timeout, and a place in the same connection limits.
            let app = sfu_core::httpguard::Guard::new(sfu_core::httpguard::GuardConfig {
                max_body_bytes: cfg.http.max_body_bytes,
                https: false,
                rate_limit: None,
                limited: sfu_core::httpguard::GuardConfig::default_surfaces,
                rate_limited: None,
            })
            .layer(app);
            let mut srv = axum_server::bind(r)
                .acceptor(crate::connlimit::Watch::new(redirect_admit, &conn_metrics))
                .accept_error_handler({
                    let m = conn_metrics.clone();
                    move |_: Option<&SocketAddr>, e: &std::io::Error| m.accept_error(e)
                })
                .first_request_timeout(cfg.http.header_read_timeout)
                .handle(h.clone());
            srv.http_builder().http1().header_read_timeout(cfg.http.header_read_timeout);
            let t = tokio::spawn(srv.serve(app.into_make_service()));
            match h.listening().await {
                Some(a) => Some((h, t, a)),
                None => {
                    let err = match t.await {
                        Ok(Err(e)) => e,
                        _ => std::io::Error::other("the redirect listener stopped"),
                    };
                    return Err(DaemonError::Io { what: format!("listen on {r}"), source: err });
                }
            }
        }
        _ => None,
    };

    let mut background = Vec::new();
    background.extend(fleet_task);
    background.push(tokio::spawn(crate::auth::jwks_refresher(auth.clone(), shutdown_rx.clone())));
    // Recording upload: metrics always, the driver when [cloud.upload] is set.
    if let Some(t) =
        crate::upload::start(cfg.cloud.upload.as_ref(), store.clone(), &metrics.registry, shutdown_rx.clone()).await?
    {
        background.push(t);
    }
    {
        let store = store.clone();
        let days = cfg.store.retention_days;
        let mut stop = shutdown_rx.clone();
        background.push(tokio::spawn(async move {
            loop {
                let now = unix_now() as i64;
                if let Err(e) = store.call(move |c| q::prune(c, now, days)).await {
                    tracing::warn!(error = %e, "pruning old rows failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(6 * 3600)) => {}
                    _ = stop.changed() => return,
                }
            }
        }));
    }

    tracing::info!(%addr, tls = tls.is_some(), sfu = state.sfu.is_some(), "roomboxd is serving");
    Ok(Running {
        state,
        addr,
        tls,
        first_admin_password,
        board,
        handle,
        server,
        redirect_addr: redirect.as_ref().map(|r| r.2),
        redirect: redirect.map(|(h, t, _)| (h, t)),
        shutdown_tx,
        events,
        background,
    })
}

/// The button panel: the board's GPIO lines when it has them (feature `gpio`),
/// else a simulated panel the admin page can press. A GPIO chip that cannot be
/// opened falls back to the simulated panel (logged), so the box still runs.
fn start_panel(board: Option<&crate::board::BoardProfile>, device: &Arc<Device>) {
    use crate::device::Panel;
    use crate::gpio::{PanelConfig, SimulatedPanel};
    let gpio = board.and_then(|b| b.gpio());
    #[cfg(feature = "gpio")]
    if let Some(g) = gpio {
        match crate::gpio::linux::open_panel(g, device.control()) {
            Ok(handle) => {
                tracing::info!(chip = %g.chip, button = g.button.line, "button panel on GPIO lines");
                device.attach_panel(Panel::Gpio { handle, chip: g.chip.clone() });
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "the board's GPIO lines cannot be used; the panel is simulated")
            }
        }
    }
    #[cfg(not(feature = "gpio"))]
    if gpio.is_some() {
        tracing::warn!("this build has no GPIO support (feature `gpio`); the panel is simulated");
    }
    let cfg = gpio.map(PanelConfig::from_profile).unwrap_or_default();
    match SimulatedPanel::spawn(cfg, device.control()) {
        Ok(p) => device.attach_panel(Panel::Simulated(p)),
        Err(e) => tracing::error!(error = %e, "no button panel"),
    }
}

fn redirect_to_https(req: &axum::extract::Request, port: u16) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            // Strip a port; keep IPv6 brackets.
            if h.starts_with('[') {
                h.split(']').next().map(|s| format!("{s}]")).unwrap_or_default()
            } else {
                h.split(':').next().unwrap_or("").to_owned()
            }
        })
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b)));
    let Some(host) = host else {
        return (axum::http::StatusCode::BAD_REQUEST, "a Host header is needed\n").into_response();
    };
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target =
        if port == 443 { format!("https://{host}{path}") } else { format!("https://{host}:{port}{path}") };
    axum::response::Redirect::permanent(&target).into_response()
}

/// What `roomboxd demo` prints.
#[derive(Debug, Clone)]
pub struct DemoInfo {
    pub url: String,
    /// Opens the web client in room `demo` with an invite token.
    pub join_link: String,
    pub invite_token: String,
    pub admin_password: Option<String>,
    pub data_dir: PathBuf,
}

/// The demo's config: room `demo`, loopback candidates allowed, data in `data_dir`.
pub fn demo_config(http: SocketAddr, data_dir: PathBuf) -> DaemonConfig {
    let mut cfg = DaemonConfig::default();
    cfg.data_dir = data_dir;
    cfg.http.listen = http;
    cfg.room = "demo".into();
    cfg.region = "demo".into();
    cfg.sfu.include_loopback = true;
    cfg
}

/// Start the demo and make its join link.
pub async fn demo(cfg: DaemonConfig) -> Result<(Running, DemoInfo), DaemonError> {
    let data_dir = cfg.data_dir.clone();
    let running = start(cfg).await?;
    let url = running.url();
    let grants = Grants { publish: true, subscribe: true, record: false, admin: false };
    let (invite, _) = running.state.auth.issue_access(
        "invite",
        "demo",
        grants,
        Duration::from_secs(12 * 3600),
        None,
        None,
        unix_now(),
    )?;
    let join_link = format!("{url}/#room=demo&token={invite}");
    let info = DemoInfo {
        url,
        join_link,
        invite_token: invite,
        admin_password: running.first_admin_password.clone(),
        data_dir,
    };
    Ok((running, info))
}
