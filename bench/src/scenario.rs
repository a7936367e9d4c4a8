//! Workloads and how one run against one server goes.
//!
//! A run starts the server fresh, joins the publishers, then the subscribers
//! (eight signaling exchanges at a time), waits until every subscriber has its
//! first packet, lets the load settle, then measures a steady window: server
//! CPU and RSS from `/proc` at both ends, client-side counts, latency and loss
//! over the same window.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::host::Host;
use crate::janus::{self, Janus};
use crate::measure;
use crate::media::Profile;
use crate::peer::Peer;
use crate::roombox::{self, Roombox};
use crate::signal::Whip;

/// The three servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Floor,
    Roombox,
    Janus,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::Roombox => "roombox",
            Kind::Janus => "janus",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "floor" => Some(Kind::Floor),
            "roombox" => Some(Kind::Roombox),
            "janus" => Some(Kind::Janus),
            _ => None,
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "n", rename_all = "lowercase")]
pub enum Workload {
    /// One publisher, `n` subscribers of its top layer.
    Fanout(usize),
    /// `n` participants, each publishing and watching every other one. Bigger
    /// rooms watch smaller layers, as a gallery view would: f up to 4, h up to 16, q beyond.
    Room(usize),
}

impl Workload {
    pub fn label(&self) -> String {
        match self {
            Workload::Fanout(n) => format!("fanout 1→{n}"),
            Workload::Room(n) => format!("room {n}×{n}"),
        }
    }
    pub fn n(&self) -> usize {
        match self {
            Workload::Fanout(n) | Workload::Room(n) => *n,
        }
    }
    pub fn family(&self) -> &'static str {
        match self {
            Workload::Fanout(_) => "fanout",
            Workload::Room(_) => "room",
        }
    }
    /// Participants the server hosts (publishers + subscribing clients).
    pub fn participants(&self) -> usize {
        match self {
            Workload::Fanout(n) => n + 1,
            Workload::Room(n) => *n,
        }
    }
    /// The simulcast layer subscribers ask for (index into the profile, 2 = f).
    pub fn layer(&self) -> usize {
        match self {
            Workload::Fanout(_) => 2,
            Workload::Room(n) if *n <= 4 => 2,
            Workload::Room(n) if *n <= 16 => 1,
            Workload::Room(_) => 0,
        }
    }
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Env {
    /// The address clients and servers use (loopback, or a veth address in a namespace).
    pub ip: IpAddr,
    /// This binary: it starts the floor (`roombox-bench floor`) and roombox
    /// (`roombox-bench sfu`, sfu-core's own server code) as their own processes.
    pub self_exe: PathBuf,
    /// Scratch directory for configs and logs.
    pub work: PathBuf,
    /// Run roombox and the floor under `valgrind --tool=callgrind` and count
    /// instructions over the window (repeatable on a noisy machine).
    pub callgrind: bool,
}

/// `bin`, or `valgrind --tool=callgrind … bin` writing its profile into `dir`.
pub fn wrapped(bin: &std::path::Path, dir: &std::path::Path, callgrind: bool) -> Command {
    if callgrind {
        let mut c = Command::new("valgrind");
        c.arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}/callgrind.out.%p", dir.display()))
            .arg("--dump-instr=no")
            .arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// `callgrind_control ARG PID` (zero the counters, or dump them).
fn callgrind_control(arg: &str, pid: u32) -> anyhow::Result<()> {
    let st =
        Command::new("callgrind_control").arg(arg).arg(pid.to_string()).stdout(Stdio::null()).status()?;
    if !st.success() {
        bail!("callgrind_control {arg} {pid} failed");
    }
    Ok(())
}

/// Instructions in the newest callgrind dump for `pid` in `dir` (its `summary:`/`totals:` line).
fn callgrind_instructions(dir: &std::path::Path, pid: u32) -> Option<u64> {
    let prefix = format!("callgrind.out.{pid}");
    let newest = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?;
    let text = std::fs::read_to_string(newest.path()).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Timing of one run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub workload: Workload,
    pub warmup: Duration,
    pub window: Duration,
    pub profile: Profile,
    /// Give up waiting for every subscriber's first packet after this long.
    pub join_deadline: Duration,
    /// The whole subscribe phase (every WHEP/Janus subscription) gets at most
    /// this long; later subscriptions are skipped and the run is marked.
    pub subscribe_budget: Duration,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub server: Kind,
    pub workload: Workload,
    pub participants: usize,
    pub subscriptions: usize,
    pub subscriptions_flowing: usize,
    pub window_s: f64,
    pub forwarded_packets: u64,
    pub pps: f64,
    pub mbps: f64,
    /// Server CPU-µs per forwarded packet, from /proc/PID/stat utime+stime.
    pub cpu_us_per_pkt: f64,
    /// The same from per-thread schedstat (ns resolution).
    pub cpu_us_per_pkt_sched: f64,
    /// Server CPU in cores over the window.
    pub cpu_cores: f64,
    /// Share of the server's CPU time spent in the kernel (stime ÷ utime+stime), %.
    pub sys_pct: f64,
    pub lat_p50_us: u64,
    pub lat_p99_us: u64,
    pub lat_max_us: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub join_p50_ms: f64,
    pub join_max_ms: f64,
    pub rss_kb_idle: u64,
    pub rss_kb: u64,
    /// The bench process's own RSS (every client) at the end of the window:
    /// tells a server-side backlog (server RSS grows) from a client-side one.
    pub client_rss_kb: u64,
    pub client_errors: u64,
    pub unstamped: u64,
    pub sent_by_publishers: u64,
    /// Instructions the server executed per forwarded packet (callgrind runs only).
    pub instructions_per_pkt: Option<f64>,
}

enum Proc {
    Floor(Child),
    Roombox(Roombox),
    Janus(Janus),
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Proc::Floor(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A server under test, with what clients need to reach it.
pub struct Server {
    pub kind: Kind,
    proc_: Proc,
    pub pid: u32,
    whip: Option<Whip>,
    janus: Option<janus::Session>,
    /// Janus handles stay alive for the run.
    handles: Mutex<Vec<janus::Handle>>,
    /// Janus numeric room ids by name.
    rooms: Mutex<Vec<(String, u64)>>,
}

/// A published participant, as subscribers address it.
#[derive(Debug, Clone)]
pub struct PubRef {
    pub room: String,
    pub identity: String,
    pub feed: Option<u64>,
}

fn free_port_tcp(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}
fn free_port_udp(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind((ip, 0))?.local_addr()?.port())
}

impl Server {
    /// `pin_layer`: roombox forwards this simulcast layer whatever its
    /// estimate says (callgrind runs: valgrind's slowdown must not move the
    /// layer, or instruction counts do not compare).
    pub async fn start(kind: Kind, env: &Env, pin_layer: Option<usize>) -> anyhow::Result<Server> {
        let dir = env.work.join(kind.name());
        std::fs::create_dir_all(&dir)?;
        let loopback: IpAddr = [127, 0, 0, 1].into();
        match kind {
            Kind::Floor => {
                let mut child = wrapped(&env.self_exe, &dir, env.callgrind)
                    .args(["floor", "--http", "127.0.0.1:0", "--udp"])
                    .arg(SocketAddr::new(env.ip, 0).to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("starting the floor relay")?;
                let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
                let line = tokio::task::spawn_blocking(move || {
                    let mut l = String::new();
                    BufReader::new(out).read_line(&mut l).map(|_| l)
                })
                .await??;
                let http = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("http="))
                    .ok_or_else(|| anyhow!("floor said {line:?}"))?
                    .to_string();
                let pid = child.id();
                Ok(Server {
                    kind,
                    proc_: Proc::Floor(child),
                    pid,
                    whip: Some(Whip::new(format!("http://{http}"))?),
                    janus: None,
                    handles: Mutex::default(),
                    rooms: Mutex::default(),
                })
            }
            Kind::Roombox => {
                let bin = env.self_exe.clone();
                let http = SocketAddr::new(loopback, free_port_tcp(loopback)?);
                let udp = SocketAddr::new(env.ip, free_port_udp(env.ip)?);
                let cg = env.callgrind;
                let rb =
                    tokio::task::spawn_blocking(move || Roombox::start(&bin, &dir, http, udp, cg, pin_layer))
                        .await??;
                let pid = rb.pid();
                let base = rb.base_url();
                Ok(Server {
                    kind,
                    proc_: Proc::Roombox(rb),
                    pid,
                    whip: Some(Whip::new(base)?),
                    janus: None,
                    handles: Mutex::default(),
                    rooms: Mutex::default(),
                })
            }
            Kind::Janus => {
                let port = free_port_tcp(loopback)?;
                let ip = env.ip;
                let j = tokio::task::spawn_blocking(move || Janus::start(&dir, port, ip, (42000, 44999)))
                    .await??;
                let pid = j.pid();
                let session = janus::Session::create(&format!("http://{}", j.http)).await?;
                Ok(Server {
                    kind,
                    proc_: Proc::Janus(j),
                    pid,
                    whip: None,
                    janus: Some(session),
                    handles: Mutex::default(),
                    rooms: Mutex::default(),
                })
            }
        }
    }

    pub fn stop(mut self) {
        match &mut self.proc_ {
            Proc::Roombox(r) => r.stop(),
            Proc::Janus(j) => j.stop(),
            Proc::Floor(_) => {}
        }
    }

    /// Create `room` where the server needs it (Janus).
    pub async fn open_room(&self, room: &str, publishers: usize) -> anyhow::Result<()> {
        if let Some(s) = &self.janus {
            let mut rooms = self.rooms.lock().await;
            let id = 1000 + rooms.len() as u64;
            janus::create_room(s, id, publishers.max(2)).await?;
            rooms.push((room.to_string(), id));
        }
        Ok(())
    }

    async fn janus_room(&self, room: &str) -> anyhow::Result<u64> {
        self.rooms
            .lock()
            .await
            .iter()
            .find(|(n, _)| n == room)
            .map(|(_, id)| *id)
            .ok_or_else(|| anyhow!("room {room} not opened"))
    }

    /// Publish `identity` into `room`; the peer goes to `host`.
    pub async fn publish(
        &self,
        room: &str,
        identity: &str,
        pub_id: u32,
        profile: &Profile,
        ip: IpAddr,
        host: &Host,
    ) -> anyhow::Result<PubRef> {
        let pending =
            Peer::publisher(format!("{}:{identity}", self.kind.name()), ip, profile.clone(), pub_id)?;
        let mut feed = None;
        let answer = match self.kind {
            Kind::Janus => {
                let s = self.janus.as_ref().ok_or_else(|| anyhow!("no janus session"))?;
                let jroom = self.janus_room(room).await?;
                let (f, sdp, h) = janus::publish(s, jroom, identity, &pending.offer).await?;
                self.handles.lock().await.push(h);
                feed = Some(f);
                sdp
            }
            Kind::Roombox | Kind::Floor => {
                let w = self.whip.as_ref().ok_or_else(|| anyhow!("no WHIP client"))?;
                let token =
                    if self.kind == Kind::Roombox { Some(roombox::token(room, identity)?) } else { None };
                w.offer(&format!("/whip/{room}"), &pending.offer, token.as_deref(), Some(identity)).await?.sdp
            }
        };
        tracing::debug!(server = self.kind.name(), %answer, "publisher answer");
        let peer = pending.accept_answer(&answer)?;
        host.add(peer);
        Ok(PubRef { room: room.to_string(), identity: identity.to_string(), feed })
    }

    /// Subscribe `who` to `publisher` at `layer` (0 = q … 2 = f); the peer goes to `host`.
    pub async fn subscribe(
        &self,
        publisher: &PubRef,
        who: &str,
        layer: usize,
        ip: IpAddr,
        host: &Host,
    ) -> anyhow::Result<()> {
        let label = format!("{}:{who}<-{}", self.kind.name(), publisher.identity);
        match self.kind {
            Kind::Janus => {
                let started = Instant::now();
                let s = self.janus.as_ref().ok_or_else(|| anyhow!("no janus session"))?;
                let jroom = self.janus_room(&publisher.room).await?;
                let feed = publisher.feed.ok_or_else(|| anyhow!("no feed id"))?;
                let (offer, mut h) = janus::subscribe_offer(s, jroom, feed).await?;
                let (peer, answer) = Peer::subscriber_answer(label, ip, &offer, started)?;
                host.add(peer);
                janus::subscribe_start(s, &mut h, &answer, layer as u8).await?;
                self.handles.lock().await.push(h);
            }
            Kind::Roombox | Kind::Floor => {
                let w = self.whip.as_ref().ok_or_else(|| anyhow!("no WHIP client"))?;
                let pending = Peer::subscriber_offer(label, ip)?;
                let rid = ["q", "h", "f"].get(layer).copied().unwrap_or("f");
                let (path, token) = if self.kind == Kind::Roombox {
                    (
                        format!("/whep/{}/{}", publisher.room, publisher.identity),
                        Some(roombox::token(&publisher.room, who)?),
                    )
                } else {
                    (format!("/whep/{}/{}?layer={rid}", publisher.room, publisher.identity), None)
                };
                let ans = w.offer(&path, &pending.offer, token.as_deref(), Some(who)).await?;
                host.add(pending.accept_answer(&ans.sdp)?);
            }
        }
        Ok(())
    }
}

/// Run one workload against one server and measure it.
pub async fn run(kind: Kind, env: &Env, spec: &Spec) -> anyhow::Result<RunResult> {
    let pin = env.callgrind.then(|| spec.workload.layer());
    let server = Arc::new(Server::start(kind, env, pin).await?);
    let idle = measure::sample(server.pid)?;
    let host = Arc::new(Host::start("clients")?);
    let res = run_on(&server, &host, env, spec, idle).await;
    host.clear();
    drop(host);
    if let Ok(s) = Arc::try_unwrap(server) {
        s.stop();
    }
    res
}

async fn run_on(
    server: &Arc<Server>,
    host: &Arc<Host>,
    env: &Env,
    spec: &Spec,
    idle: measure::Sample,
) -> anyhow::Result<RunResult> {
    let ip = env.ip;
    let w = spec.workload;
    let layer = w.layer();
    // Who publishes, and who watches whom.
    let (pubs, pairs): (Vec<(String, String)>, Vec<(usize, String)>) = match w {
        Workload::Fanout(n) => {
            (vec![("bench".into(), "p0".into())], (0..n).map(|i| (0, format!("s{i}"))).collect())
        }
        Workload::Room(n) => (
            (0..n).map(|i| ("bench".to_string(), format!("p{i}"))).collect(),
            // Each watching session gets its own identity: servers keep one session per identity.
            (0..n)
                .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (j, format!("p{i}-sees-p{j}"))))
                .collect(),
        ),
    };
    server.open_room("bench", pubs.len()).await?;
    let mut refs = Vec::new();
    for (i, (room, id)) in pubs.iter().enumerate() {
        refs.push(
            server
                .publish(room, id, i as u32 + 1, &spec.profile, ip, host)
                .await
                .with_context(|| format!("publishing {id}"))?,
        );
    }
    let refs = Arc::new(refs);
    // Subscribers join once the publishers' connections are up (Janus refuses a
    // feed without media; for the others it keeps join time about the subscriber).
    let deadline = Instant::now() + spec.join_deadline;
    loop {
        let r = host.report().await?;
        if r.peers.iter().filter(|p| p.publisher).all(|p| p.connected) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A server that is overloaded stops being asked: after many refusals or past
    // the join budget the rest of the subscriptions are skipped (and reported).
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let give_up_after = (pairs.len() / 10).max(8);
    let join_budget = Instant::now() + spec.subscribe_budget;
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(pairs.iter().cloned())
        .map(|(p, who)| {
            let server = server.clone();
            let host = host.clone();
            let refs = refs.clone();
            let failures = failures.clone();
            async move {
                if failures.load(std::sync::atomic::Ordering::Relaxed) >= give_up_after
                    || Instant::now() > join_budget
                {
                    bail!("skipped {who}: the server refused or timed out too many joins");
                }
                let r = server
                    .subscribe(&refs[p], &who, layer, ip, &host)
                    .await
                    .with_context(|| format!("subscribing {who}"));
                if r.is_err() {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                r
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failed: Vec<String> =
        results.iter().filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}"))).collect();
    if failed.len() == results.len() && !results.is_empty() {
        bail!("every subscription failed; first: {}", failed[0]);
    }
    for f in failed.iter().take(3) {
        tracing::warn!(error = %f, "a subscription failed");
    }
    // Wait for media everywhere (or the deadline).
    let deadline = Instant::now() + spec.join_deadline;
    loop {
        let r = host.report().await?;
        let subs: Vec<_> = r.peers.iter().filter(|p| !p.publisher).collect();
        if subs.len() == pairs.len() - failed.len() && subs.iter().all(|p| p.join.is_some()) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(spec.warmup).await;
    let cg_dir = env.work.join(server.kind.name());
    if env.callgrind && server.kind != Kind::Janus {
        callgrind_control("-z", server.pid)?;
    }
    host.reset();
    let a = measure::sample(server.pid)?;
    tokio::time::sleep(spec.window).await;
    let b = measure::sample(server.pid)?;
    let r = host.report().await?;
    let instructions = if env.callgrind && server.kind != Kind::Janus {
        callgrind_control("-d", server.pid)?;
        callgrind_instructions(&cg_dir, server.pid)
    } else {
        None
    };
    let window = b.at.duration_since(a.at).as_secs_f64();
    let (cpu_stat, cpu_sched) = measure::cpu_us(&a, &b);
    let subs: Vec<_> = r.peers.iter().filter(|p| !p.publisher).collect();
    let forwarded: u64 = subs.iter().map(|p| p.received).sum();
    let bytes: u64 = subs.iter().map(|p| p.bytes_in).sum();
    let lost: u64 = subs.iter().map(|p| p.lost).sum();
    let mut joins: Vec<f64> = subs.iter().filter_map(|p| p.join.map(|d| d.as_secs_f64() * 1000.0)).collect();
    let join_max = joins.iter().cloned().fold(f64::NAN, f64::max);
    let per = |us: f64| if forwarded > 0 { us / forwarded as f64 } else { f64::NAN };
    Ok(RunResult {
        server: server.kind,
        workload: w,
        participants: w.participants(),
        subscriptions: pairs.len(),
        subscriptions_flowing: subs.iter().filter(|p| p.received > 0).count(),
        window_s: window,
        forwarded_packets: forwarded,
        pps: forwarded as f64 / window,
        mbps: bytes as f64 * 8.0 / window / 1e6,
        cpu_us_per_pkt: per(cpu_stat),
        cpu_us_per_pkt_sched: per(cpu_sched),
        cpu_cores: cpu_sched.max(cpu_stat) / 1e6 / window,
        sys_pct: {
            let t = b.ticks.saturating_sub(a.ticks);
            if t > 0 { b.sys_ticks.saturating_sub(a.sys_ticks) as f64 * 100.0 / t as f64 } else { f64::NAN }
        },
        lat_p50_us: r.latency_us.value_at_quantile(0.50),
        lat_p99_us: r.latency_us.value_at_quantile(0.99),
        lat_max_us: r.latency_us.max(),
        lost,
        loss_pct: if forwarded + lost > 0 { lost as f64 * 100.0 / (forwarded + lost) as f64 } else { 0.0 },
        join_p50_ms: measure::median(&mut joins),
        join_max_ms: join_max,
        rss_kb_idle: idle.rss_kb,
        rss_kb: b.rss_kb,
        client_rss_kb: measure::sample(std::process::id()).map(|s| s.rss_kb).unwrap_or(0),
        client_errors: r.peers.iter().map(|p| p.errors).sum(),
        unstamped: subs.iter().map(|p| p.unstamped).sum(),
        sent_by_publishers: r.peers.iter().filter(|p| p.publisher).map(|p| p.sent).sum(),
        instructions_per_pkt: instructions.filter(|_| forwarded > 0).map(|i| i as f64 / forwarded as f64),
    })
}
