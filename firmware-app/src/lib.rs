//! # roombox — the library behind `roomboxd`, the appliance daemon
//!
//! `roomboxd` is the one process a roombox appliance runs. It embeds the SFU
//! (`sfu-core`) and the room's camera and microphone pipeline, and adds what the
//! room's owner touches:
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | one TOML file, layered: defaults → file → flags → `validate()` |
//! | [`store`] | SQLite (WAL, `synchronous=FULL`), migrations, one owning thread |
//! | [`auth`] | access JWTs, rotating refresh tokens, users, login limits, OIDC |
//! | [`http`] | axum: `/api/v1` (OpenAPI), `/metrics`, `/healthz`, `/readyz`, web client |
//! | [`metrics`] | Prometheus registry, the seed's meeting metrics |
//! | [`tls`] | the owner's certificate or a self-signed one made on first boot |
//! | [`events`] | SFU room events → store rows and metrics |
//! | [`media`] | the room camera, microphone and speakers: capture, H.264/Opus, AEC, in-process publish |
//! | [`profile`] | a board profile applied to the config: media defaults, SFU capacity |
//! | [`board`] | board profiles (`boards/*.toml`): SoC, camera, audio, GPIO lines, capacity |
//! | [`gpio`] | the mute button and LEDs: a sans-IO panel over `embedded-hal` |
//! | [`daemon`] | start, run, graceful shutdown; the demo |
//! | [`update`] | A/B updates through RAUC: download, install, rollback detection at start |
//! | [`notify`] | systemd's notify protocol: `READY=1`, watchdog pings, `STOPPING=1` |
//! | [`fleet`] | the MQTT fleet link wired in: signed commands, desired config, telemetry, state |
//! | [`config_apply`] | a desired config applied by restarting roomboxd into it, rolled back unless ready in time |
//!
//! ```no_run
//! # async fn run() -> Result<(), roombox::daemon::DaemonError> {
//! let mut cfg = roombox::config::DaemonConfig::default();
//! cfg.data_dir = "/tmp/roombox-example".into();
//! cfg.http.listen = "127.0.0.1:0".parse().unwrap();
//! let running = roombox::daemon::start(cfg).await?;
//! println!("serving on {}", running.url());
//! running.shutdown().await;
//! # Ok(()) }
//! ```

// Configs are built as `default()` plus the few fields a caller sets.
#![allow(clippy::field_reassign_with_default)]

pub mod auth;
pub mod board;
pub mod config;
pub mod config_apply;
pub mod connlimit;
pub mod daemon;
pub mod device;
pub mod events;
pub mod fleet;
pub mod gpio;
pub mod http;
pub mod media;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod profile;
pub mod recording;
pub mod store;
pub mod tls;
pub mod update;
pub mod upload;
