//! `roomboxd`, the appliance daemon. See `roomboxd --help`.
#![allow(clippy::field_reassign_with_default)]

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use roombox::config::{self, DEFAULT_CONFIG_PATH, LogFormat, Overrides};

#[derive(Parser)]
#[command(name = "roomboxd", version, about = "The roombox conference-room appliance daemon")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the appliance from its config file.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Board profile (overrides `board` in the file).
        #[arg(long)]
        board: Option<String>,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTPS listen address (overrides `http.listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run a demo: synthetic camera and microphone in room `demo`; prints a join link.
    Demo {
        /// Where the web client and API listen.
        #[arg(long, default_value = "127.0.0.1:8443")]
        http: SocketAddr,
        /// The SFU's UDP (and ICE-TCP) port for media.
        #[arg(long, default_value = "0.0.0.0:50000")]
        udp: SocketAddr,
        /// Keep data here (default: a temporary directory, removed at exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print an access token signed with a data dir's key.
    Token {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        #[arg(long)]
        publish: bool,
        #[arg(long)]
        subscribe: bool,
        #[arg(long)]
        record: bool,
        #[arg(long)]
        admin: bool,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 15m, 2h.
        #[arg(long, default_value = "15m")]
        ttl: humantime::Duration,
    },
    /// Check a config file; print every problem with its line.
    CheckConfig { file: PathBuf },
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Set a local user's password (read from standard input); creates the user if missing.
    Passwd {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[arg(long, default_value = "admin")]
        user: String,
        /// Role for a new user.
        #[arg(long, default_value = "admin", value_parser = ["admin", "member"])]
        role: String,
    },
    /// Print the OpenAPI document of the REST API.
    Openapi,
    /// Install a signed A/B update bundle from URL with RAUC (what the fleet's "install update"
    /// command does); reboot afterwards to run it.
    Update {
        url: String,
        #[arg(long, default_value = "/data/roombox")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Write a consistent copy of the database to FILE (safe while the daemon runs).
    Backup {
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Use this data dir's database instead of the config's.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

/// The store path from `--data-dir` or else from the config file.
fn store_path(data_dir: Option<&Path>, config: &Path) -> anyhow::Result<PathBuf> {
    let cfg = match data_dir {
        Some(d) => {
            let mut c = config::DaemonConfig::default();
            c.data_dir = d.to_owned();
            c
        }
        None => config::load_file(config)?,
    };
    Ok(cfg.store_path())
}

fn main() -> ExitCode {
    pin_mmap_threshold();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("roomboxd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keep glibc from holding on to big freed blocks. An argon2 password hash
/// (first boot, every login) allocates ~19 MiB; glibc's dynamic mmap threshold
/// then rises past it, and the next hashes come from a malloc arena that stays
/// resident after they are freed: +20 MB RSS for good on a box that idles at
/// ~17 MB. A fixed threshold keeps such blocks mmapped and returns them on free.
fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called first in main, before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Under systemd: report what became of the last A/B update, tell systemd the daemon is ready
/// (`Type=notify`), and ping its watchdog while the store answers. Returns the watchdog task.
fn systemd_ready(
    running: &roombox::daemon::Running,
    data_dir: std::path::PathBuf,
) -> tokio::task::JoinHandle<()> {
    // Runs `rauc status` when an install is recorded: off the runtime's threads.
    tokio::task::spawn_blocking(move || roombox::update::check_boot(&data_dir));
    match roombox::notify::notify("READY=1") {
        Ok(true) => tracing::info!("told systemd the daemon is ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
    }
    let store = running.state.store.clone();
    tokio::spawn(async move {
        let Some(every) = roombox::notify::watchdog_interval() else { return };
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            // A daemon whose store thread hangs is not healthy: let systemd restart it.
            let alive = tokio::time::timeout(
                every,
                store.call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if alive {
                let _ = roombox::notify::notify("WATCHDOG=1");
            } else {
                tracing::error!("the store does not answer: withholding the systemd watchdog ping");
            }
        }
    })
}

/// Re-exec now (nothing is running), telling systemd a reload started. Returns only on failure.
fn restart_now() -> std::io::Error {
    roombox::config_apply::notify_reloading();
    roombox::config_apply::reexec()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::CheckConfig { file } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            match config::load_str(&text, &Overrides::default()) {
                Ok(_) => {
                    println!("{}: OK", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for p in &problems {
                        println!("{}:{p}", file.display());
                    }
                    println!("{} problem(s)", problems.len());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Update { url, data_dir } => match roombox::update::install(&url, &data_dir) {
            Ok(out) => {
                println!("{}", out.message);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("update: {e}");
                Ok(ExitCode::from(1))
            }
        },
        Cmd::Openapi => {
            print!("{}", roombox::http::api::openapi_json_text());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Token { data_dir, room, identity, publish, subscribe, record, admin, name, ttl } => {
            if room != "*" && !roombox::names::valid_room(&room) {
                bail!("--room: {}", roombox::names::ROOM_RULE);
            }
            if !roombox::names::valid_identity(&identity) {
                bail!("--identity: {}", roombox::names::IDENTITY_RULE);
            }
            if room == "*" && !admin {
                bail!("--room '*' (every room) needs --admin");
            }
            let key_path = data_dir.join(roombox::auth::KEY_FILE);
            if !key_path.exists() {
                bail!(
                    "{} does not exist: start roomboxd with this data dir once to create the key",
                    key_path.display()
                );
            }
            let key = roombox::auth::load_or_create_key(&data_dir)?;
            let grants = sfu_core::Grants { publish, subscribe, record, admin };
            let now = roombox::auth::unix_now();
            let mut claims = sfu_core::Claims::new(&identity, &room, grants, now, ttl.as_secs());
            claims.iss = Some(roombox::auth::ISSUER.into());
            claims.name = name;
            println!("{}", roombox::auth::sign_access(&key, &claims)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Db { cmd: DbCmd::Backup { file, config, data_dir } } => {
            let src = store_path(data_dir.as_deref(), &config)?;
            let bytes = roombox::store::backup(&src, &file)?;
            println!("backed up {} to {} ({bytes} bytes)", src.display(), file.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Passwd { data_dir, config, user, role } => {
            init_logging("warn", LogFormat::Text);
            let path = store_path(data_dir.as_deref(), &config)?;
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("New password for {user} (at least 10 characters), then Enter:");
            }
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\n', '\r']);
            let store = roombox::store::Store::open(&path, Default::default())?;
            let role =
                if role == "member" { roombox::store::Role::Member } else { roombox::store::Role::Admin };
            roombox::auth::set_password_offline(&store, &user, password, role)?;
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_file(dir.join(roombox::auth::INITIAL_PASSWORD_FILE));
            }
            println!("password set for {user}; every earlier token of {user} is revoked");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { config, board, data_dir, listen } => {
            // A desired config being applied (config_apply): the marker beside the file is read
            // first, so a trial that died has its previous config back before the file is read.
            let apply = roombox::config_apply::ConfigApply::at_start(&config);
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read the config {}", config.display()))?;
            let overrides = Overrides { board, data_dir, listen };
            let mut cfg = match config::load_str(&text, &overrides) {
                Ok(c) => c,
                Err(problems) => {
                    for p in &problems {
                        eprintln!("{}:{p}", config.display());
                    }
                    let why = format!("{} problem(s) in {}", problems.len(), config.display());
                    if apply.start_failed(&why) {
                        return Err(restart_now()).context("re-executing roomboxd with the previous config");
                    }
                    bail!(why);
                }
            };
            cfg.config_file = Some(config.clone());
            init_logging(&cfg.log.level, cfg.log.format);
            if let Some(v) = apply.trial() {
                tracing::info!(version = %v, "starting with a new desired config (on trial)");
            }
            let ready_within =
                cfg.cloud.fleet.as_ref().map(|f| f.apply_ready_within).unwrap_or(Duration::from_secs(60));
            let rt = runtime()?;
            let restart = rt.block_on(async move {
                let data_dir = cfg.data_dir.clone();
                let running = match roombox::daemon::start(cfg).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "roomboxd cannot start");
                        if apply.start_failed(&e.to_string()) {
                            roombox::config_apply::notify_reloading();
                            return Ok(true);
                        }
                        return Err(e.into());
                    }
                };
                let watchdog = systemd_ready(&running, data_dir);
                apply.started(&running.state, ready_within);
                let restart = tokio::select! {
                    _ = roombox::daemon::wait_for_signal() => false,
                    _ = roombox::config_apply::restart_requested() => true,
                };
                if restart {
                    tracing::info!("restarting to apply a desired config (or to roll it back)");
                    roombox::config_apply::notify_reloading();
                } else {
                    let _ = roombox::notify::notify("STOPPING=1");
                }
                watchdog.abort();
                running.shutdown().await;
                Ok::<_, anyhow::Error>(restart)
            })?;
            // Every task and thread of the runtime is stopped before the process is replaced.
            rt.shutdown_timeout(Duration::from_secs(5));
            if restart {
                return Err(roombox::config_apply::reexec()).context("re-executing roomboxd");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo { http, udp, data_dir } => {
            init_logging("info,roombox=info", LogFormat::Text);
            let (dir, _tmp) = match data_dir {
                Some(d) => (d, None),
                None => {
                    let t = tempfile::Builder::new().prefix("roombox-demo-").tempdir()?;
                    (t.path().to_owned(), Some(t))
                }
            };
            let mut cfg = roombox::daemon::demo_config(http, dir);
            cfg.sfu.udp_bind = udp;
            cfg.sfu.tcp_bind = Some(udp);
            let rt = runtime()?;
            rt.block_on(async move {
                let (running, info) = roombox::daemon::demo(cfg).await?;
                println!();
                println!("roombox demo is running (data in {}).", info.data_dir.display());
                println!("Open:      {}/", info.url);
                println!("Join link: {}", info.join_link);
                // Say what the room's camera and microphone are only once their
                // capture threads have opened them (or after 10 s, whatever is true then).
                let device = running.state.device.clone();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !device.media_ready() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let media = device.state().media;
                println!("Room:      participant `{}` in room demo: {}", media.identity, media.detail);
                if let Some(p) = &info.admin_password {
                    println!("Admin:     user admin, password {p}  ({}/admin)", info.url);
                }
                println!(
                    "The certificate is self-signed: accept it once in the browser. Ctrl-C stops the demo."
                );
                println!();
                let watchdog = systemd_ready(&running, info.data_dir.clone());
                roombox::daemon::wait_for_signal().await;
                let _ = roombox::notify::notify("STOPPING=1");
                watchdog.abort();
                tokio::time::timeout(Duration::from_secs(20), running.shutdown()).await.ok();
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
