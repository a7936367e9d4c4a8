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

use anyhow::{Context, bail};
use serde::Deserialize;

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
        let listener = tokio::net::TcpListener::bind(cfg.http.listen)
            .await
            .with_context(|| format!("binding http.listen {}", cfg.http.listen))?;
        tracing::info!(http = %cfg.http.listen, udp = %sfu.udp_addr(), "sfu listening");
        let stop = sfu.clone();
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                }
                tracing::info!("shutting down");
                stop.shutdown().await;
            })
            .await?;
        anyhow::Ok(())
    })
}
