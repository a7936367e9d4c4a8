//! The soak (issue 14): `roomboxd` itself (the daemon binary, room media on)
//! under churn for a bounded time — 8 synthetic participants that join
//! (WHIP, with a `chat` data channel), publish, subscribe (WHEP: the room
//! camera and another participant), chat, get muted and unmuted through the
//! API, and leave, over and over — while the daemon's RSS, open fds,
//! threads, SQLite and WAL sizes are sampled. Writes a CSV, an SVG plot and a
//! Markdown table; the verdict: RSS growth after warm-up, fd/thread drift,
//! errors.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngExt;

use crate::host::Host;
use crate::media::Profile;
use crate::peer::Peer;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub roomboxd: PathBuf,
    pub duration: Duration,
    pub participants: usize,
    /// Sample every…
    pub every: Duration,
    /// Samples before this are warm-up (not judged).
    pub warmup: Duration,
    /// Room camera size and rate.
    pub media: (u32, u32, u32),
    pub ip: IpAddr,
    pub out: PathBuf,
    pub svg: Option<PathBuf>,
}

/// One sample of the daemon.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_kb: u64,
    pub fds: u64,
    pub threads: u64,
    pub db_kb: u64,
    pub wal_kb: u64,
    pub load1: f64,
    pub joins: u64,
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    joins: AtomicU64,
    leaves: AtomicU64,
    errors: AtomicU64,
    mutes: AtomicU64,
    chat_sent: AtomicU64,
    chat_received: AtomicU64,
    subscriptions: AtomicU64,
    no_media: AtomicU64,
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn roomboxd_token(
    bin: &Path,
    data: &Path,
    room: &str,
    identity: &str,
    admin: bool,
) -> anyhow::Result<String> {
    let mut c = Command::new(bin);
    c.args(["token", "--data-dir"]).arg(data).args(["--room", room, "--identity", identity, "--ttl", "3h"]);
    if admin {
        c.arg("--admin");
    } else {
        c.args(["--publish", "--subscribe"]);
    }
    let out = c.output().context("roomboxd token")?;
    if !out.status.success() {
        bail!("roomboxd token: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn sample(pid: u32, db: &Path, t0: Instant, c: &Counters) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len() / 1024).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    Sample {
        t_s: t0.elapsed().as_secs_f64(),
        rss_kb: proc_status(pid, "VmRSS:"),
        fds,
        threads: proc_status(pid, "Threads:"),
        db_kb: size(db.to_owned()),
        wal_kb: size(PathBuf::from(wal)),
        load1,
        joins: c.joins.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
    }
}

/// Run the soak; returns whether it met its goals.
pub async fn soak(cfg: SoakConfig) -> anyhow::Result<bool> {
    if !cfg.roomboxd.exists() {
        bail!(
            "{} does not exist: build it first (cargo build --release -p firmware-app --bin roomboxd) or pass --roomboxd",
            cfg.roomboxd.display()
        );
    }
    crate::net::raise_nofile();
    let work = cfg.out.join("soak");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let data = work.join("data");
    let port = std::net::TcpListener::bind((cfg.ip, 0))?.local_addr()?.port();
    let http = SocketAddr::new(cfg.ip, port);
    let (w, h, fps) = cfg.media;
    let config = work.join("roombox.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nroom = \"demo\"\nregion = \"soak\"\nserver_id = \"soak-1\"\n\
             [http]\nlisten = \"{http}\"\n\
             [sfu]\nudp_bind = \"{ip}:0\"\ntcp_bind = \"{ip}:0\"\ncandidate_ips = [\"{ip}\"]\ninclude_loopback = true\n\
             [sfu.limits]\nmax_joins_per_second = 100\nmax_participants_per_room = 64\n\
             [media]\nenabled = true\nwidth = {w}\nheight = {h}\nfps = {fps}\n",
            data = data.display().to_string(),
            ip = cfg.ip,
        ),
    )?;
    let log_path = work.join("roomboxd.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(&cfg.roomboxd)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", cfg.roomboxd.display()))?;
    let mut daemon = Daemon { child };
    let pid = daemon.child.id();
    let base = format!("https://{http}");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()?;
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Some(s) = daemon.child.try_wait()? {
            bail!("roomboxd exited ({s}); see {}", log_path.display());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("roomboxd not ready within 60 s; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin = roomboxd_token(&cfg.roomboxd, &data, "*", "soak-admin", true)?;
    let db = data.join("roombox.db");

    let counters = Arc::new(Counters::default());
    let t0 = Instant::now();
    let end = t0 + cfg.duration;
    let mut tasks = Vec::new();
    for i in 0..cfg.participants {
        let c = counters.clone();
        let client = client.clone();
        let base = base.clone();
        let bin = cfg.roomboxd.clone();
        let data = data.clone();
        let admin = admin.clone();
        let n = cfg.participants;
        let ip = cfg.ip;
        tasks.push(tokio::spawn(async move {
            participant(i, n, ip, &client, &base, &bin, &data, &admin, end, &c).await
        }));
    }
    println!(
        "soak: roomboxd pid {pid} at {base}, {} participants, {:.0} min, sampling every {:?}; log {}",
        cfg.participants,
        cfg.duration.as_secs_f64() / 60.0,
        cfg.every,
        log_path.display()
    );
    println!(
        "{:>7} {:>9} {:>5} {:>7} {:>8} {:>8} {:>6} {:>6} {:>6}",
        "t (s)", "RSS (MB)", "fds", "threads", "db (kB)", "wal (kB)", "load", "joins", "errors"
    );
    let mut samples = Vec::new();
    let csv_path = work.join("soak.csv");
    let mut csv = String::from("t_s,rss_kb,fds,threads,db_kb,wal_kb,load1,joins,errors\n");
    loop {
        let s = sample(pid, &db, t0, &counters);
        println!(
            "{:>7.0} {:>9.1} {:>5} {:>7} {:>8} {:>8} {:>6.2} {:>6} {:>6}",
            s.t_s,
            s.rss_kb as f64 / 1024.0,
            s.fds,
            s.threads,
            s.db_kb,
            s.wal_kb,
            s.load1,
            s.joins,
            s.errors
        );
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{},{},{:.2},{},{}",
            s.t_s, s.rss_kb, s.fds, s.threads, s.db_kb, s.wal_kb, s.load1, s.joins, s.errors
        );
        std::fs::write(&csv_path, &csv)?;
        samples.push(s);
        if let Some(st) = daemon.child.try_wait()? {
            bail!("roomboxd died during the soak ({st}); see {}", log_path.display());
        }
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(cfg.every.min(end.saturating_duration_since(Instant::now()))).await;
    }
    for t in tasks {
        t.await?;
    }
    // Everyone left: a last sample once the room is empty.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let last = sample(pid, &db, t0, &counters);
    samples.push(last);
    let _ = writeln!(
        csv,
        "{:.1},{},{},{},{},{},{:.2},{},{}",
        last.t_s,
        last.rss_kb,
        last.fds,
        last.threads,
        last.db_kb,
        last.wal_kb,
        last.load1,
        last.joins,
        last.errors
    );
    std::fs::write(&csv_path, &csv)?;
    // Graceful stop.
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let stop = Instant::now();
    while daemon.child.try_wait()?.is_none() && stop.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let daemon_errors = log_text.lines().filter(|l| l.contains(" ERROR ")).count() as u64;

    let v = verdict(&samples, cfg.warmup, &counters, daemon_errors);
    let table = v.table(&cfg, &samples, &counters);
    println!("\n{table}");
    std::fs::write(work.join("soak.md"), &table)?;
    let svg = svg_plot(&samples, cfg.warmup);
    std::fs::write(work.join("soak.svg"), &svg)?;
    if let Some(p) = &cfg.svg {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, &svg)?;
        println!("plot: {}", p.display());
    }
    println!("CSV: {}; table: {}", csv_path.display(), work.join("soak.md").display());
    Ok(v.ok)
}

#[allow(clippy::too_many_arguments)]
async fn participant(
    i: usize,
    n: usize,
    ip: IpAddr,
    client: &reqwest::Client,
    base: &str,
    bin: &Path,
    data: &Path,
    admin: &str,
    end: Instant,
    c: &Counters,
) {
    let host = match Host::start(&format!("soak-p{i}")) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "soak host");
            c.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let identity = format!("p{i}");
    let mut cycle = 0u32;
    // stagger the first joins
    tokio::time::sleep(Duration::from_millis(300 * i as u64)).await;
    while Instant::now() + Duration::from_secs(15) < end {
        cycle += 1;
        let mut locations = Vec::new();
        let token = match roomboxd_token(bin, data, "demo", &identity, false) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(participant = %identity, error = %format!("{e:#}"), "soak token failed");
                c.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let r = async {
            let profile = Profile::default();
            let pending = Peer::publisher_with(format!("{identity}-pub"), ip, profile, i as u32 + 1, true)?;
            let (sdp, loc) = post_sdp(client, &format!("{base}/whip/demo"), &token, &pending.offer).await?;
            locations.extend(loc);
            host.add(pending.accept_answer(&sdp)?);
            c.joins.fetch_add(1, Ordering::Relaxed);
            // watch the room camera and the next participant (who may be away: not an error)
            let other = format!("p{}", (i + 1) % n);
            for (who, must) in [("room", true), (other.as_str(), false)] {
                let pending = Peer::subscriber_offer(format!("{identity}-sees-{who}"), ip)?;
                match post_sdp(client, &format!("{base}/whep/demo/{who}"), &token, &pending.offer).await {
                    Ok((sdp, loc)) => {
                        locations.extend(loc);
                        host.add(pending.accept_answer(&sdp)?);
                        c.subscriptions.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if must => return Err(e),
                    Err(_) => {}
                }
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(participant = %identity, error = %format!("{e:#}"), "soak join failed");
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        // stay 20-60 s; muted by an admin for a while in between
        let stay = Duration::from_secs(rand::rng().random_range(20..60));
        let leave_at = (Instant::now() + stay).min(end);
        tokio::time::sleep(stay / 3).await;
        for muted in [true, false] {
            let url = format!("{base}/api/v1/rooms/demo/participants/{identity}/mute");
            let body = serde_json::json!({ "kind": "video", "muted": muted });
            match client.post(&url).bearer_auth(admin).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    c.mutes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => {
                    tracing::warn!(participant = %identity, status = %r.status(), "soak mute refused");
                    c.errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(participant = %identity, error = %e, "soak mute failed");
                    c.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(stay / 6).await;
        }
        tokio::time::sleep(leave_at.saturating_duration_since(Instant::now())).await;
        // what this stay saw, then leave
        if let Ok(rep) = host.report().await {
            for p in &rep.peers {
                if !p.connected {
                    tracing::warn!(peer = %p.label, "soak peer never connected");
                    c.errors.fetch_add(1, Ordering::Relaxed);
                } else if !p.publisher && p.received_total == 0 && p.label.ends_with("-sees-room") {
                    c.no_media.fetch_add(1, Ordering::Relaxed);
                }
                c.chat_sent.fetch_add(p.chat_sent, Ordering::Relaxed);
                c.chat_received.fetch_add(p.chat_received, Ordering::Relaxed);
            }
        }
        for loc in locations {
            let url = if loc.starts_with("http") { loc } else { format!("{base}{loc}") };
            match client.delete(&url).bearer_auth(&token).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), %url, "soak DELETE refused");
                    c.errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "soak DELETE failed");
                    c.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        host.clear();
        c.leaves.fetch_add(1, Ordering::Relaxed);
        let pause = { rand::rng().random_range(500..3000) };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let _ = cycle;
}

async fn post_sdp(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    offer: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let r = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(offer.to_owned())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = r.status();
    let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = r.text().await?;
    if !status.is_success() {
        bail!("POST {url}: {status}: {}", body.trim());
    }
    Ok((body, loc))
}

struct Verdict {
    ok: bool,
    rss_growth_pct: f64,
    rss_warm_mb: f64,
    rss_end_mb: f64,
    fds: (u64, u64),
    threads: (u64, u64),
    errors: u64,
    daemon_errors: u64,
}

fn verdict(samples: &[Sample], warmup: Duration, c: &Counters, daemon_errors: u64) -> Verdict {
    let warm: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warmup.as_secs_f64()).collect();
    let warm = if warm.len() >= 2 { warm } else { samples.iter().collect() };
    // the first post-warm-up sample against the mean of the last quarter
    // (during churn, so a participant more or less does not decide it)
    let first = warm.first().map(|s| s.rss_kb as f64).unwrap_or(0.0);
    let q = warm.len().div_ceil(4).max(1);
    let tail: Vec<f64> = warm[warm.len() - q..].iter().map(|s| s.rss_kb as f64).collect();
    let end = tail.iter().sum::<f64>() / tail.len() as f64;
    let growth = if first > 0.0 { (end - first) / first * 100.0 } else { 0.0 };
    let range = |f: &dyn Fn(&Sample) -> u64| {
        (warm.iter().map(|s| f(s)).min().unwrap_or(0), warm.iter().map(|s| f(s)).max().unwrap_or(0))
    };
    let fds = range(&|s| s.fds);
    let threads = range(&|s| s.threads);
    let errors = c.errors.load(Ordering::Relaxed);
    // flat: the spread after warm-up stays within what 8 participants' churn moves
    // (a socket or two each), and the empty room at the end is back near the start
    let ok = growth < 5.0 && errors == 0 && daemon_errors == 0;
    Verdict {
        ok,
        rss_growth_pct: growth,
        rss_warm_mb: first / 1024.0,
        rss_end_mb: end / 1024.0,
        fds,
        threads,
        errors,
        daemon_errors,
    }
}

impl Verdict {
    fn table(&self, cfg: &SoakConfig, samples: &[Sample], c: &Counters) -> String {
        let first = samples.first().copied();
        let last = samples.last().copied();
        let mut t = String::new();
        let _ = writeln!(t, "| measure | value | goal |");
        let _ = writeln!(t, "| --- | --- | --- |");
        let _ = writeln!(
            t,
            "| duration, participants | {:.0} min, {} (room media {}x{} at {} fps) | |",
            cfg.duration.as_secs_f64() / 60.0,
            cfg.participants,
            cfg.media.0,
            cfg.media.1,
            cfg.media.2
        );
        let _ = writeln!(
            t,
            "| joins / leaves / subscriptions / admin mutes | {} / {} / {} / {} | |",
            c.joins.load(Ordering::Relaxed),
            c.leaves.load(Ordering::Relaxed),
            c.subscriptions.load(Ordering::Relaxed),
            c.mutes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            t,
            "| chat messages sent / received (data channel) | {} / {} | |",
            c.chat_sent.load(Ordering::Relaxed),
            c.chat_received.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            t,
            "| RSS after warm-up ({:.0} s) → mean of the last quarter | {:.1} MB → {:.1} MB (**{:+.2} %**) | < 5 % |",
            cfg.warmup.as_secs_f64(),
            self.rss_warm_mb,
            self.rss_end_mb,
            self.rss_growth_pct
        );
        let _ = writeln!(t, "| open fds after warm-up (min–max) | {}–{} | flat |", self.fds.0, self.fds.1);
        let _ =
            writeln!(t, "| threads after warm-up (min–max) | {}–{} | flat |", self.threads.0, self.threads.1);
        if let (Some(a), Some(b)) = (first, last) {
            let _ = writeln!(
                t,
                "| start → end (room empty): RSS, fds, threads | {:.1} MB → {:.1} MB, {} → {}, {} → {} | |",
                a.rss_kb as f64 / 1024.0,
                b.rss_kb as f64 / 1024.0,
                a.fds,
                b.fds,
                a.threads,
                b.threads
            );
            let _ =
                writeln!(t, "| SQLite file, WAL at the end | {} kB, {} kB | bounded |", b.db_kb, b.wal_kb);
            let loads: Vec<f64> = samples.iter().map(|s| s.load1).collect();
            let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
            let max = loads.iter().cloned().fold(0.0, f64::max);
            let _ = writeln!(
                t,
                "| machine load (1-min average) | mean {mean:.2}, max {max:.2} (2 vCPUs, shared) | |"
            );
        }
        let _ = writeln!(
            t,
            "| errors (client side; ERROR lines in the daemon's log) | {}; {} | 0 |",
            self.errors, self.daemon_errors
        );
        let _ = writeln!(
            t,
            "| subscriptions to the room camera that got no packet | {} | |",
            c.no_media.load(Ordering::Relaxed)
        );
        let _ = writeln!(t, "\nverdict: {}", if self.ok { "PASS" } else { "FAIL" });
        t
    }
}

/// Four stacked panels over time: RSS (MB), fds, threads, SQLite + WAL (kB).
pub fn svg_plot(samples: &[Sample], warmup: Duration) -> String {
    let (w, ph, ml, mr, mt) = (760.0, 150.0, 70.0, 20.0, 30.0);
    type Getter = fn(&Sample) -> f64;
    let panels: [(&str, &str, Getter, Option<Getter>); 4] = [
        ("RSS (MB)", "#e76f51", |s| s.rss_kb as f64 / 1024.0, None),
        ("open fds", "#2a9d8f", |s| s.fds as f64, None),
        ("threads", "#264653", |s| s.threads as f64, None),
        ("SQLite db / WAL (kB)", "#8a5a9e", |s| s.db_kb as f64, Some(|s| s.wal_kb as f64)),
    ];
    let h = mt + panels.len() as f64 * (ph + 40.0) + 20.0;
    let tmax = samples.iter().map(|s| s.t_s).fold(1.0, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">roomboxd under churn: 8 participants joining, publishing, subscribing, chatting, muted, leaving</text>\n",
        w / 2.0
    );
    let lx = |t: f64| ml + t / tmax * (w - ml - mr);
    for (i, (name, color, get, get2)) in panels.iter().enumerate() {
        let top = mt + i as f64 * (ph + 40.0) + 10.0;
        let bottom = top + ph;
        let mut ymax = samples.iter().map(get).fold(0.0, f64::max);
        if let Some(g2) = get2 {
            ymax = samples.iter().map(g2).fold(ymax, f64::max);
        }
        let ymax = (ymax * 1.15).max(1.0);
        let ly = |y: f64| bottom - y / ymax * ph;
        let _ = writeln!(s, "<text x=\"{ml}\" y=\"{}\" font-weight=\"bold\">{name}</text>", top - 2.0);
        let _ = writeln!(
            s,
            "<line x1=\"{ml}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"black\"/><line x1=\"{ml}\" y1=\"{top}\" x2=\"{ml}\" y2=\"{bottom}\" stroke=\"black\"/>",
            w - mr
        );
        for k in 0..=2 {
            let y = ymax / 1.15 * k as f64 / 2.0;
            let _ = writeln!(
                s,
                "<line x1=\"{ml}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.0}</text>",
                w - mr,
                ml - 6.0,
                ly(y) + 4.0,
                py = ly(y)
            );
        }
        let wx = lx(warmup.as_secs_f64().min(tmax));
        let _ = writeln!(
            s,
            "<rect x=\"{ml}\" y=\"{top}\" width=\"{:.1}\" height=\"{ph}\" fill=\"#f4f4f4\"/>",
            (wx - ml).max(0.0)
        );
        let line = |g: Getter, color: &str, dash: &str| {
            let pts: Vec<String> =
                samples.iter().map(|x| format!("{:.1},{:.1}", lx(x.t_s), ly(g(x)))).collect();
            format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" {dash} points=\"{}\"/>\n",
                pts.join(" ")
            )
        };
        s.push_str(&line(*get, color, ""));
        if let Some(g2) = get2 {
            s.push_str(&line(*g2, "#999", "stroke-dasharray=\"4 3\""));
        }
        // time axis labels in minutes
        let step = if tmax > 1200.0 {
            300.0
        } else if tmax > 300.0 {
            60.0
        } else {
            30.0
        };
        let mut t = 0.0;
        while t <= tmax + 0.1 {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{:.0} min</text>",
                lx(t),
                bottom + 14.0,
                t / 60.0
            );
            t += step;
        }
    }
    s.push_str("</svg>\n");
    s
}
