//! The `sfu` binary's logic as functions: read a TOML config, start the SFU
//! with its signaling routes and `/metrics` on one HTTP listener, serve until
//! SIGTERM or Ctrl-C. The `sfu` binary is a thin wrapper (arguments, logging)
//! over [`run_from_config`]; another binary that must run *exactly* this
//! server as its own process — the benchmark suite's `roombox-bench sfu` —
//! calls the same function instead of copying it.
//!
//! This is the binary edge, so errors are `anyhow` with context, worded for
//! the operator who wrote the file.
//!
//! ```toml
//! [http]
//! listen = "0.0.0.0:8080"
//! rate_limit_per_minute = 1200   # per client address, signaling; 0 = no limit
//! rate_limit_burst = 300
//! max_connections = 512          # open HTTP connections; beyond, new ones are closed at once
//! header_read_timeout_secs = 10  # a request's headers must arrive within this (slowloris)
//! [auth]
//! hs256_secret_file = "/etc/roombox/jwt.secret"   # and/or
//! jwks_file = "/etc/roombox/jwks.json"
//! leeway_secs = 5        # clock skew tolerated on exp/nbf (default 5, at most 300)
//! [sfu]
//! udp_bind = "0.0.0.0:50000"
//! include_loopback = true
//! ```
//! Unknown keys are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Sfu, SfuConfig, TokenVerifier};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: HttpConfig,
    auth: AuthConfig,
    #[serde(default)]
    sfu: SfuConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    listen: SocketAddr,
    /// Signaling requests per minute per client address (0 = no limit); beyond, 429.
    #[serde(default = "default_rate_per_minute")]
    rate_limit_per_minute: u32,
    /// Signaling requests one client address may make at once.
    #[serde(default = "default_rate_burst")]
    rate_limit_burst: u32,
    /// Open HTTP connections at most; a connection beyond is closed at once (counted in
    /// `sfu_http_connections_refused_total`).
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// A connection's first request, and each request's headers, must arrive within this (slowloris).
    #[serde(default = "default_header_read_timeout_secs")]
    header_read_timeout_secs: u64,
}

fn default_max_connections() -> usize {
    512
}

fn default_header_read_timeout_secs() -> u64 {
    10
}

fn default_rate_per_minute() -> u32 {
    1200
}

fn default_rate_burst() -> u32 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthConfig {
    hs256_secret_file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds (default [`crate::auth::DEFAULT_LEEWAY_SECS`]).
    leeway_secs: Option<u64>,
}

fn load(path: &Path) -> anyhow::Result<(FileConfig, TokenVerifier)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: FileConfig = toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
    if let Err(problems) = cfg.sfu.validate() {
        let list: Vec<String> = problems.iter().map(|p| format!("  sfu.{p}")).collect();
        bail!("invalid configuration in {}:\n{}", path.display(), list.join("\n"));
    }
    if cfg.http.max_connections == 0 {
        bail!("http.max_connections = 0 in {}: at least 1", path.display());
    }
    if !(1..=300).contains(&cfg.http.header_read_timeout_secs) {
        bail!(
            "http.header_read_timeout_secs = {} in {}: 1 to 300",
            cfg.http.header_read_timeout_secs,
            path.display()
        );
    }
    let mut v = TokenVerifier::new();
    if let Some(f) = &cfg.auth.hs256_secret_file {
        let secret = std::fs::read(f).with_context(|| format!("auth.hs256_secret_file {}", f.display()))?;
        let secret = secret.trim_ascii();
        v = v.with_secret(secret).with_context(|| format!("auth.hs256_secret_file {}", f.display()))?;
    }
    if let Some(f) = &cfg.auth.jwks_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("auth.jwks_file {}", f.display()))?;
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&text).with_context(|| format!("auth.jwks_file {}", f.display()))?;
        v = v.with_jwks(&set).with_context(|| format!("auth.jwks_file {}", f.display()))?;
    }
    if cfg.auth.hs256_secret_file.is_none() && cfg.auth.jwks_file.is_none() {
        bail!("[auth] needs hs256_secret_file and/or jwks_file");
    }
    if let Some(i) = &cfg.auth.issuer {
        v = v.with_issuer(i.clone());
    }
    if let Some(a) = &cfg.auth.audience {
        v = v.with_audience(a.clone());
    }
    if let Some(l) = cfg.auth.leeway_secs {
        if l > crate::auth::MAX_LEEWAY_SECS {
            bail!(
                "auth.leeway_secs = {l}: at most {} (it extends every token's life)",
                crate::auth::MAX_LEEWAY_SECS
            );
        }
        v = v.with_leeway(l);
    }
    Ok((cfg, v))
}

/// Check the configuration file (syntax, unknown keys, values, key files) without starting anything.
pub fn check_config(path: &Path) -> anyhow::Result<()> {
    load(path).map(|_| ())
}

/// Run the SFU from the configuration file at `path` until SIGTERM or Ctrl-C,
/// on a tokio runtime of its own (two workers for HTTP; the SFU's driver
/// thread owns the media sockets). Returns after a graceful shutdown.
pub fn run_from_config(path: &Path) -> anyhow::Result<()> {
    let (cfg, verifier) = load(path)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let registry = prometheus::Registry::new();
        let sfu = Sfu::start(cfg.sfu, verifier, &registry).await?;
        let metrics_registry = registry.clone();
        let app = sfu.router().route(
            "/metrics",
            axum::routing::get(move || {
                let r = metrics_registry.clone();
                async move {
                    let mut buf = String::new();
                    let _ = prometheus::TextEncoder::new().encode_utf8(&r.gather(), &mut buf);
                    buf
                }
            }),
        );
        let rate_limited = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "sfu_http_rate_limited_total",
                "Requests refused (429) by the per-address rate limit, by surface.",
            ),
            &["surface"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        let guard = crate::httpguard::Guard::new(crate::httpguard::GuardConfig {
            max_body_bytes: sfu.config().limits.max_body_bytes,
            https: false,
            rate_limit: (cfg.http.rate_limit_per_minute > 0).then_some(crate::httpguard::RateLimit {
                per_minute: cfg.http.rate_limit_per_minute,
                burst: cfg.http.rate_limit_burst.max(1),
            }),
            limited: crate::httpguard::GuardConfig::default_surfaces,
            rate_limited: Some(rate_limited),
        });
        let app = guard.layer(app);
        let refused = prometheus::IntCounter::new(
            "sfu_http_connections_refused_total",
            "HTTP connections closed at once because http.max_connections were open.",
        )?;
        registry.register(Box::new(refused.clone()))?;
        let header_timeout = std::time::Duration::from_secs(cfg.http.header_read_timeout_secs);
        let handle = axum_server::Handle::new();
        let mut server = axum_server::bind(cfg.http.listen)
            .acceptor(ConnLimit { slots: Arc::new(Semaphore::new(cfg.http.max_connections)), refused })
            .first_request_timeout(header_timeout)
            .handle(handle.clone());
        server.http_builder().http1().header_read_timeout(header_timeout);
        let serving = tokio::spawn(server.serve(app.into_make_service_with_connect_info::<SocketAddr>()));
        let Some(addr) = handle.listening().await else {
            let err = match serving.await {
                Ok(Err(e)) => anyhow::Error::from(e),
                Ok(Ok(())) => anyhow::anyhow!("the server stopped"),
                Err(e) => anyhow::Error::from(e),
            };
            return Err(err.context(format!("binding http.listen {}", cfg.http.listen)));
        };
        tracing::info!(http = %addr, udp = %sfu.udp_addr(), "sfu listening");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("shutting down");
        sfu.shutdown().await;
        handle.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        serving.await??;
        anyhow::Ok(())
    })
}

/// The listener's connection limit: a TCP connection is admitted while a slot
/// is free and holds it until it closes; beyond, it is closed at once (the
/// accept error drops it) and counted, so idle or slow connections cannot pile
/// up past `http.max_connections`.
#[derive(Clone)]
struct ConnLimit {
    slots: Arc<Semaphore>,
    refused: prometheus::IntCounter,
}

impl<S> axum_server::accept::Accept<TcpStream, S> for ConnLimit {
    type Stream = Admitted;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Admitted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Ok((Admitted { stream, _slot: slot }, service)),
            Err(_) => {
                self.refused.inc();
                Err(std::io::Error::other("http.max_connections reached"))
            }
        })
    }
}

/// An admitted connection: the stream and its slot, released when it drops.
struct Admitted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
