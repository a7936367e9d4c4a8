//! Chaos (issue 14): the daemon is killed with SIGKILL at random points —
//! while people join the room, while rows are written through the API, during
//! a graceful shutdown — over many iterations, restarted on the same data
//! directory each time, and after every restart a list of invariants must
//! hold: every row the API acknowledged (2xx) is still there, no meeting is
//! left open, the daemon serves and `/readyz` is green.
//!
//! The daemon is a child process: this binary re-executed with
//! `ROOMBOX_CHAOS_DAEMON=<config file>`, where it runs exactly what
//! `roomboxd run --config FILE` runs (`config::load_str`, `daemon::start`,
//! wait for a signal, `shutdown`). (`cargo test -p roombox-tests` does not
//! build the `roomboxd` binary of another package; this is the same code.)
//!
//! Bounds and knobs (environment):
//! - `ROOMBOX_CHAOS_ITERATIONS` (default 10: the CI-sized run),
//! - `ROOMBOX_CHAOS_MAX_SECS` (default 600: stop starting iterations after it),
//! - `ROOMBOX_CHAOS_SEED` (printed at the start: replays the same kill points).
//!
//! A long run: `ROOMBOX_CHAOS_ITERATIONS=300 ROOMBOX_CHAOS_MAX_SECS=3600
//! cargo test -p roombox-tests --test chaos`.
//!
//! More invariants (the recorder's files, the upload queue) go in
//! [`INVARIANTS`]: a name and an async check over the [`Ctx`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::SinkExt;
use roombox_tests::https::{get_ok, request, tls_over};
use serde::Deserialize;
use serde_json::json;

const DAEMON_ENV: &str = "ROOMBOX_CHAOS_DAEMON";
const TEST_NAME: &str = "chaos_kill_9_keeps_every_acknowledged_row_and_closes_meetings";

/// What every check sees.
pub struct Ctx {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// An administrator token (room `*`).
    pub admin: String,
    /// Rooms whose creation the API acknowledged with a 2xx.
    pub acked_rooms: Vec<String>,
}

type CheckFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;
type Check = for<'a> fn(&'a Ctx) -> CheckFuture<'a>;

/// The invariants checked after every restart, in order.
const INVARIANTS: &[(&str, Check)] = &[
    ("the daemon serves (/healthz)", check_serves),
    ("/readyz is green", check_ready),
    ("no acknowledged row lost", check_acked_rows),
    ("no meeting left open", check_meetings_closed),
];

fn check_serves(c: &Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        get_ok(c.addr, "/healthz", None).await?;
        Ok(())
    })
}

fn check_ready(c: &Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        get_ok(c.addr, "/readyz", None).await?;
        Ok(())
    })
}

#[derive(Deserialize)]
struct RoomView {
    name: String,
}

fn check_acked_rows(c: &Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        let body = get_ok(c.addr, "/api/v1/rooms", Some(&c.admin)).await?;
        let rooms: Vec<RoomView> = serde_json::from_str(&body).context("GET /api/v1/rooms")?;
        let have: std::collections::HashSet<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
        let lost: Vec<&String> = c.acked_rooms.iter().filter(|r| !have.contains(r.as_str())).collect();
        ensure!(lost.is_empty(), "{} acknowledged rooms lost: {lost:?}", lost.len());
        Ok(())
    })
}

#[derive(Deserialize)]
struct MeetingRow {
    id: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
}

fn check_meetings_closed(c: &Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        let body = get_ok(c.addr, "/api/v1/meetings?limit=500", Some(&c.admin)).await?;
        let meetings: Vec<MeetingRow> = serde_json::from_str(&body).context("GET /api/v1/meetings")?;
        let open: Vec<i64> = meetings.iter().filter(|m| m.ended_at.is_none()).map(|m| m.id).collect();
        ensure!(open.is_empty(), "meetings left open with nobody connected: {open:?}");
        Ok(())
    })
}

fn main() -> ExitCode {
    if let Some(cfg) = std::env::var_os(DAEMON_ENV) {
        return run_daemon(Path::new(&cfg));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("{TEST_NAME}: test");
        }
        return ExitCode::SUCCESS;
    }
    // libtest's options that take a value (their values are not name filters)
    let mut filters: Vec<&String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--test-threads" | "--format" | "--color" | "--logfile" | "--skip" | "-Z" | "--report-time" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            _ => filters.push(a),
        }
    }
    if args.iter().any(|a| a == "--ignored")
        || !(filters.is_empty() || filters.iter().any(|f| TEST_NAME.contains(f.as_str())))
    {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored\n");
        return ExitCode::SUCCESS;
    }
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("\nrunning 1 test");
    let start = Instant::now();
    let r = rt.block_on(chaos());
    let secs = start.elapsed().as_secs_f64();
    match r {
        Ok(()) => {
            println!("test {TEST_NAME} ... ok ({secs:.1} s)\n\ntest result: ok. 1 passed; 0 failed\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "test {TEST_NAME} ... FAILED ({secs:.1} s)\n\n{e:#}\n\ntest result: FAILED. 0 passed; 1 failed\n"
            );
            ExitCode::FAILURE
        }
    }
}

/// The child: `roomboxd run --config FILE`.
fn run_daemon(config: &Path) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let text = std::fs::read_to_string(config)?;
        let cfg = roombox::config::load_str(&text, &Default::default())
            .map_err(|p| anyhow::anyhow!("config problems: {p:?}"))?;
        let _ = tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).try_init();
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        rt.block_on(async move {
            let running = roombox::daemon::start(cfg).await?;
            println!("serving on {}", running.addr);
            roombox::daemon::wait_for_signal().await;
            running.shutdown().await;
            Ok::<_, anyhow::Error>(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daemon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// xorshift64*: reproducible kill points from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Where in an iteration the kill lands.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// While room-protocol clients join and leave.
    Joins,
    /// While rooms are created through the API (each a transaction with an audit row).
    Writes,
    /// After SIGTERM, somewhere in the graceful shutdown.
    Shutdown,
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn spawn(config: &Path, log: &Path) -> anyhow::Result<Daemon> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(std::env::current_exe()?)
            .env(DAEMON_ENV, config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the daemon")?;
        Ok(Daemon { child })
    }

    fn signal(&self, sig: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals our own child.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    fn kill_9(mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGKILL);
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(addr: SocketAddr, daemon: &mut Daemon, log: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if get_ok(addr, "/readyz", None).await.is_ok() {
            return Ok(start.elapsed());
        }
        if let Some(status) = daemon.child.try_wait()? {
            bail!("the daemon exited ({status}) before it was ready:\n{}", tail(log, 30));
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the daemon was not ready within 60 s:\n{}", tail(log, 30));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let key = roombox::auth::load_or_create_key(data_dir)?;
    let grants = sfu_core::Grants { publish: true, subscribe: true, record: false, admin: true };
    let mut claims = sfu_core::Claims::new("chaos", "*", grants, roombox::auth::unix_now(), 3600);
    claims.iss = Some(roombox::auth::ISSUER.into());
    Ok(roombox::auth::sign_access(&key, &claims)?)
}

fn room_token(data_dir: &Path, identity: &str) -> anyhow::Result<String> {
    let key = roombox::auth::load_or_create_key(data_dir)?;
    let grants = sfu_core::Grants { publish: true, subscribe: true, record: false, admin: false };
    let mut claims = sfu_core::Claims::new(identity, "demo", grants, roombox::auth::unix_now(), 3600);
    claims.iss = Some(roombox::auth::ISSUER.into());
    Ok(roombox::auth::sign_access(&key, &claims)?)
}

/// Room-protocol clients joining `demo` and leaving, until the daemon dies.
async fn joins(addr: SocketAddr, data_dir: PathBuf, it: u64) -> usize {
    use tokio_tungstenite::tungstenite::Message;
    let mut joined = 0;
    // clients kept connected: the daemon dies with them in the meeting
    let mut held = Vec::new();
    for n in 0.. {
        let Ok(token) = room_token(&data_dir, &format!("p{it}-{n}")) else { return joined };
        let Ok(Ok(tcp)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        else {
            return joined;
        };
        let Ok(tls) = tls_over(tcp).await else { return joined };
        let url = format!("wss://localhost:{}/ws/demo", addr.port());
        let Ok((mut ws, _)) = tokio_tungstenite::client_async(url, tls).await else { return joined };
        let join = json!({ "type": "join", "token": token, "auto_subscribe": true }).to_string();
        if ws.send(Message::text(join)).await.is_err() {
            return joined;
        }
        // wait for `joined`, stay a moment (a meeting row is written), leave every other time
        use futures_util::StreamExt;
        let got = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(Ok(m)) = ws.next().await {
                if m.to_text().is_ok_and(|t| t.contains("\"joined\"")) {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(got, Ok(true)) {
            return joined;
        }
        joined += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if n % 2 == 0 {
            let _ = ws.send(Message::text(json!({ "type": "leave" }).to_string())).await;
        } else {
            held.push(ws);
        }
    }
    joined
}

/// Rooms created through the API until the daemon dies; the acknowledged ones.
async fn writes(addr: SocketAddr, admin: String, it: u64) -> Vec<String> {
    let mut acked = Vec::new();
    for n in 0.. {
        let name = format!("chaos-{it}-{n}");
        match request(addr, "POST", "/api/v1/rooms", Some(&admin), Some(&json!({ "name": name }))).await {
            Ok((s, _)) if (200..300).contains(&s) => acked.push(name),
            Ok((429, _)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) | Err(_) => return acked,
        }
    }
    acked
}

async fn chaos() -> anyhow::Result<()> {
    let iterations = env_num("ROOMBOX_CHAOS_ITERATIONS", 10);
    let max = Duration::from_secs(env_num("ROOMBOX_CHAOS_MAX_SECS", 600));
    let seed = env_num("ROOMBOX_CHAOS_SEED", roombox_tests::unix_now() ^ u64::from(std::process::id()));
    let mut rng = Rng(seed | 1);
    println!("    chaos: {iterations} iterations (at most {max:?}), seed {seed} (ROOMBOX_CHAOS_SEED)");

    let dir = tempfile::Builder::new().prefix("rbx-chaos-").tempdir()?;
    let data_dir = dir.path().join("data");
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = dir.path().join("roombox.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nroom = \"demo\"\nregion = \"chaos\"\nserver_id = \"chaos-1\"\n\
             [http]\nlisten = \"{addr}\"\n\
             [sfu]\nudp_bind = \"127.0.0.1:0\"\ntcp_bind = \"127.0.0.1:0\"\ninclude_loopback = true\n\
             [media]\nenabled = false\n",
            data = data_dir.display().to_string()
        ),
    )?;
    let log = dir.path().join("daemon.log");

    let mut ctx = Ctx { addr, data_dir: data_dir.clone(), admin: String::new(), acked_rooms: Vec::new() };
    let started = Instant::now();
    let mut done = 0;
    let (mut joined_total, mut kills) = (0usize, [0usize; 3]);
    let mut ready_times = Vec::new();
    while done < iterations && started.elapsed() < max {
        let it = done;
        let mut d = Daemon::spawn(&config, &log)?;
        ready_times.push(wait_ready(addr, &mut d, &log).await.with_context(|| format!("iteration {it}"))?);
        if ctx.admin.is_empty() {
            ctx.admin = admin_token(&data_dir)?;
        }
        for (name, check) in INVARIANTS {
            check(&ctx).await.with_context(|| format!("iteration {it}, after the restart: {name}"))?;
        }
        let point = match rng.below(3) {
            0 => KillPoint::Joins,
            1 => KillPoint::Writes,
            _ => KillPoint::Shutdown,
        };
        let delay = Duration::from_millis(100 + rng.below(900));
        // the work runs in tasks; the kill lands `delay` into it
        let w = tokio::spawn(writes(addr, ctx.admin.clone(), it));
        let j = tokio::spawn(joins(addr, data_dir.clone(), it));
        match point {
            KillPoint::Joins | KillPoint::Writes => {
                tokio::time::sleep(delay).await;
                d.kill_9()?;
            }
            KillPoint::Shutdown => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                d.signal(libc::SIGTERM);
                tokio::time::sleep(delay).await;
                d.kill_9()?;
            }
        }
        kills[point as usize] += 1;
        let acked = w.await?;
        joined_total += j.await?;
        ctx.acked_rooms.extend(acked);
        done += 1;
    }
    // the last restart, and the invariants once more
    let mut d = Daemon::spawn(&config, &log)?;
    wait_ready(addr, &mut d, &log).await.context("after the last kill")?;
    for (name, check) in INVARIANTS {
        check(&ctx).await.with_context(|| format!("after the last kill: {name}"))?;
    }
    // The meeting invariant is not vacuous: the joins made meetings, and kills closed some by recovery.
    let body = get_ok(addr, "/api/v1/meetings?limit=500", Some(&ctx.admin)).await?;
    let meetings: Vec<MeetingRow> = serde_json::from_str(&body)?;
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for m in &meetings {
        *reasons.entry(m.end_reason.clone().unwrap_or_else(|| "open".into())).or_default() += 1;
    }
    d.signal(libc::SIGTERM);
    let _ = d.child.wait();
    ensure!(done > 0, "no iteration ran");
    ensure!(joined_total == 0 || !meetings.is_empty(), "{joined_total} joins but no meeting recorded");
    println!("    chaos: meetings recorded, by end reason: {reasons:?}");
    let mean_ready = ready_times.iter().sum::<Duration>() / ready_times.len().max(1) as u32;
    println!(
        "    chaos: {done} kill -9s (joins {}, writes {}, shutdown {}) in {:.1} s; {} acknowledged rooms and {joined_total} joins, \
         none lost; {} invariants held after each of {} restarts (ready in {mean_ready:.2?} on average)",
        kills[0],
        kills[1],
        kills[2],
        started.elapsed().as_secs_f64(),
        ctx.acked_rooms.len(),
        INVARIANTS.len(),
        done + 1
    );
    Ok(())
}
