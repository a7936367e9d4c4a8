//! The whole suite: both scaling curves against every server, repeats of the
//! headline loads, then tables, ratios, targets, JSON, SVG, and the marked
//! sections of `docs/PERFORMANCE.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::measure;
use crate::report::{self, cpu};
use crate::scenario::{self, Env, Kind, RunResult, Spec, Workload};

pub const FANOUT: &[usize] = &[1, 2, 4, 8, 16, 32, 64];
pub const ROOMS: &[usize] = &[2, 4, 8, 12, 16, 24, 32];
/// Loads repeated `repeat` times; their medians are the headline numbers.
pub const HEADLINE: &[Workload] = &[Workload::Fanout(64), Workload::Room(16)];
/// The suite's own time limit (the issue asks for the whole suite in under 10
/// minutes): no run starts unless it can finish, at its cap, within this.
pub const SUITE_BUDGET: Duration = Duration::from_secs(540);
/// A hard cap on one run (server start, joins, warmup, window, stop); a run
/// that exceeds it is dropped, which kills its server process.
pub const RUN_CAP: Duration = Duration::from_secs(60);
/// The subscribe phase of one run, within the cap.
pub const SUBSCRIBE_BUDGET: Duration = Duration::from_secs(25);

/// The order of the suite: both curves up to the sizes every server handles,
/// the headline repeats, then the largest rooms (the likeliest to collapse or
/// meet the time budget).
pub fn plan(repeat: usize) -> Vec<Workload> {
    let mut plan: Vec<Workload> = FANOUT.iter().map(|&n| Workload::Fanout(n)).collect();
    plan.extend(ROOMS.iter().filter(|&&n| n <= 16).map(|&n| Workload::Room(n)));
    for _ in 1..repeat.max(1) {
        plan.extend(HEADLINE.iter().copied());
    }
    plan.extend(ROOMS.iter().filter(|&&n| n > 16).map(|&n| Workload::Room(n)));
    plan
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub date_utc: String,
    pub load_at_start: String,
    pub commit: String,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        cpu: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel: sh("uname", &["-r"]),
        date_utc: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        load_at_start: std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        commit: sh("git", &["rev-parse", "--short", "HEAD"]),
    }
}

/// Idle RSS of `roomboxd demo` (its synthetic room camera and microphone
/// running, nobody joined): the binary from `ROOMBOX_ROOMBOXD`, else the one
/// next to this one. Waits (bounded) until its HTTPS port answers, lets it settle
/// 3 s, samples `VmRSS`. `Err` says why it was not measured.
pub fn idle_roomboxd_rss(env: &Env) -> Result<u64, String> {
    let bin = match std::env::var_os("ROOMBOX_ROOMBOXD") {
        Some(p) => PathBuf::from(p),
        None => env.self_exe.parent().map(|d| d.join("roomboxd")).ok_or("no directory for roomboxd")?,
    };
    if !bin.exists() {
        return Err(format!("no roomboxd at {} (build it, or set ROOMBOX_ROOMBOXD)", bin.display()));
    }
    let dir = env.work.join("roomboxd");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let free = |udp: bool| -> Result<u16, String> {
        let ip = std::net::Ipv4Addr::LOCALHOST;
        let port = if udp {
            std::net::UdpSocket::bind((ip, 0)).and_then(|s| s.local_addr())
        } else {
            std::net::TcpListener::bind((ip, 0)).and_then(|s| s.local_addr())
        };
        port.map(|a| a.port()).map_err(|e| e.to_string())
    };
    let http: std::net::SocketAddr = ([127, 0, 0, 1], free(false)?).into();
    let udp: std::net::SocketAddr = ([127, 0, 0, 1], free(true)?).into();
    let log = dir.join("roomboxd.log");
    let mut child = Command::new(&bin)
        .args(["demo", "--http", &http.to_string(), "--udp", &udp.to_string(), "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut up = false;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        if std::net::TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss = if up {
        std::thread::sleep(Duration::from_secs(3));
        match child.try_wait() {
            Ok(None) => measure::sample(child.id()).map(|s| s.rss_kb).map_err(|e| e.to_string()),
            _ => Err(format!("roomboxd demo exited; see {}", log.display())),
        }
    } else {
        Err(format!("roomboxd demo did not listen on {http} within 30 s; see {}", log.display()))
    };
    let _ = child.kill();
    let _ = child.wait();
    rss
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    machine: &'a Machine,
    elapsed_s: f64,
    medians: Vec<&'a RunResult>,
    rss_mb_per_connection: Vec<(String, String, f64)>,
    idle_roomboxd_kb: Option<u64>,
    not_measured: &'a [String],
}

pub async fn suite(
    env: Env,
    kinds: Vec<Kind>,
    doc: Option<PathBuf>,
    repeat: usize,
    spec: impl Fn(Workload) -> Spec,
    out: &Path,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let m = machine();
    println!(
        "machine: {} × {} cores, kernel {}, {}, load {}",
        m.cpu, m.cores, m.kernel, m.date_utc, m.load_at_start
    );
    println!("{}", report::header());
    let mut all: Vec<RunResult> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    // Which servers collapsed in which family, and at what size: larger loads
    // of that family are not asked of them (they only take longer to fail).
    let mut collapsed: std::collections::BTreeMap<(Kind, &'static str), usize> = Default::default();
    for w in plan(repeat) {
        for &k in &kinds {
            if let Some(&at) = collapsed.get(&(k, w.family()))
                && w.n() > at
            {
                skipped.push(format!("{} {}: collapsed at {}", k.name(), w.label(), at));
                continue;
            }
            if t0.elapsed() + RUN_CAP > SUITE_BUDGET {
                skipped.push(format!(
                    "{} {}: suite time budget ({} s) spent",
                    k.name(),
                    w.label(),
                    SUITE_BUDGET.as_secs()
                ));
                continue;
            }
            let mut sp = spec(w);
            sp.subscribe_budget = sp.subscribe_budget.min(SUBSCRIBE_BUDGET);
            let started = Instant::now();
            match tokio::time::timeout(RUN_CAP, scenario::run(k, &env, &sp)).await {
                Ok(Ok(r)) => {
                    println!("{}", report::row(&r));
                    if r.subscriptions_flowing < r.subscriptions {
                        collapsed.entry((k, w.family())).or_insert(w.n());
                    }
                    all.push(r);
                }
                Ok(Err(e)) => {
                    eprintln!("{} {}: {e:#}", k.name(), w.label());
                    skipped.push(format!("{} {}: failed ({e})", k.name(), w.label()));
                    collapsed.entry((k, w.family())).or_insert(w.n());
                }
                Err(_) => {
                    eprintln!(
                        "{} {}: stopped after {} s (run cap)",
                        k.name(),
                        w.label(),
                        started.elapsed().as_secs()
                    );
                    skipped.push(format!(
                        "{} {}: stopped at the {} s run cap",
                        k.name(),
                        w.label(),
                        RUN_CAP.as_secs()
                    ));
                    collapsed.entry((k, w.family())).or_insert(w.n());
                }
            }
        }
    }
    for s in &skipped {
        println!("not measured: {s}");
    }
    let idle_r = idle_roomboxd_rss(&env);
    let idle = idle_r.as_ref().ok().copied();
    let med = report::medians(&all);
    let ratios = report::ratios(&med);
    let slopes = report::rss_slopes(&all);
    println!("\nCPU-µs per forwarded packet (schedstat; medians), and ratios:\n{ratios}");
    for ((k, fam), s) in &slopes {
        println!("RSS per peer connection, {} {fam}: {s:.3} MB", k.name());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    match &idle_r {
        Ok(kb) => println!("idle roomboxd RSS: {:.1} MB (target ≤ 25 MB)", *kb as f64 / 1024.0),
        Err(why) => println!("idle roomboxd RSS: not measured: {why}"),
    }
    println!("suite took {elapsed:.0} s");

    // Files.
    report::write_json(&out.join("results.json"), &all)?;
    let summary = Summary {
        machine: &m,
        elapsed_s: elapsed,
        medians: med.values().collect(),
        rss_mb_per_connection: slopes
            .iter()
            .map(|((k, f), s)| (k.name().to_string(), f.clone(), *s))
            .collect(),
        idle_roomboxd_kb: idle,
        not_measured: &skipped,
    };
    report::write_json(&out.join("summary.json"), &summary)?;
    let charts = [
        (
            "fanout-cpu.svg",
            "fanout",
            "CPU-µs per forwarded packet, 1 publisher → N subscribers",
            "CPU-µs / packet",
            0,
        ),
        ("room-cpu.svg", "room", "CPU-µs per forwarded packet, rooms of N all-to-all", "CPU-µs / packet", 0),
        (
            "fanout-latency.svg",
            "fanout",
            "added latency p99, 1 publisher → N subscribers",
            "p99 latency, µs",
            1,
        ),
        ("room-latency.svg", "room", "added latency p99, rooms of N all-to-all", "p99 latency, µs", 1),
    ];
    let svg_dir = doc.as_ref().and_then(|d| d.parent()).map(|d| d.join("bench"));
    for (file, fam, title, ylabel, which) in charts {
        let metric: &dyn Fn(&RunResult) -> f64 =
            if which == 0 { &cpu } else { &|r: &RunResult| r.lat_p99_us as f64 };
        let svg = report::svg_chart(&med, fam, title, ylabel, metric);
        std::fs::write(out.join(file), &svg)?;
        if let Some(d) = &svg_dir {
            std::fs::create_dir_all(d)?;
            std::fs::write(d.join(file), &svg)?;
        }
    }
    if let Some(doc) = doc {
        rewrite_doc(&doc, &m, &all, &med, &ratios, &slopes, idle, elapsed, &skipped)
            .with_context(|| format!("rewriting {}", doc.display()))?;
        println!("rewrote the bench sections of {}", doc.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn rewrite_doc(
    doc: &Path,
    m: &Machine,
    all: &[RunResult],
    med: &std::collections::BTreeMap<(Kind, String, usize), RunResult>,
    ratios: &str,
    slopes: &std::collections::BTreeMap<(Kind, String), f64>,
    idle: Option<u64>,
    elapsed: f64,
    skipped: &[String],
) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(doc)?;
    let machine = format!(
        "Measured **{}** on {} ({} cores, Linux {}), load average at start {}, commit `{}`; the suite took {:.0} s. \
Clients and servers share the machine; each CPU figure is the server process's own time over a steady window \
(per-thread `schedstat`; `/proc/PID/stat` ticks in the JSON), divided by the packets its subscribers received.",
        m.date_utc, m.cpu, m.cores, m.kernel, m.load_at_start, m.commit, elapsed
    );
    let mut results = report::header() + "\n";
    for r in med.values() {
        results.push_str(&report::row(r));
        results.push('\n');
    }
    let _ = write!(
        results,
        "\n({} runs; repeated loads show medians; `*` marks a run where not every subscription carried media — the \
server refused or timed out joins, or was too loaded to forward; `sys%` is the kernel's share of the server's CPU. \
Raw numbers: `target/bench/results.json`.)",
        all.len()
    );
    if !skipped.is_empty() {
        let _ = write!(
            results,
            "\n\nNot measured (a server that collapsed at a size is not asked for larger ones of that family; each run is \
capped at {} s and the suite at {} s): {}.",
            RUN_CAP.as_secs(),
            SUITE_BUDGET.as_secs(),
            skipped.join("; ")
        );
    }
    let targets = targets(med, slopes, idle);
    let cap = capacity(med);
    for (name, body) in [
        ("machine", machine),
        ("results", results),
        ("ratios", ratios.to_string()),
        ("targets", targets),
        ("capacity", cap),
    ] {
        match report::replace_section(&text, name, &body) {
            Some(t) => text = t,
            None => {
                eprintln!("{}: no <!-- bench:{name}:begin/end --> markers; section left alone", doc.display())
            }
        }
    }
    std::fs::write(doc, text)?;
    Ok(())
}

/// The brief's targets against what was measured.
pub fn targets(
    med: &std::collections::BTreeMap<(Kind, String, usize), RunResult>,
    slopes: &std::collections::BTreeMap<(Kind, String), f64>,
    idle: Option<u64>,
) -> String {
    let rb: Vec<&RunResult> = med.values().filter(|r| r.server == Kind::Roombox).collect();
    let mut s = String::from("| target | measured (roombox) | met |\n|---|---|:-:|\n");
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    let heavy = rb.iter().filter(|r| r.pps >= 20_000.0).max_by(|a, b| a.pps.total_cmp(&b.pps));
    match heavy {
        Some(r) => {
            let _ = writeln!(
                s,
                "| ≤ 2.5 CPU-µs/packet at ≥ 20 000 packets/s | {:.2} µs at {:.0} packets/s ({}) | {} |",
                cpu(r),
                r.pps,
                r.workload.label(),
                yes(cpu(r) <= 2.5)
            );
            let _ = writeln!(
                s,
                "| added latency p99 ≤ 1 ms at that load | p99 {} µs, max {} µs | {} |",
                r.lat_p99_us,
                r.lat_max_us,
                yes(r.lat_p99_us <= 1000)
            );
            let _ = writeln!(
                s,
                "| 0 loss on loopback at that load | {} lost ({:.3} %) | {} |",
                r.lost,
                r.loss_pct,
                yes(r.lost == 0)
            );
        }
        None => {
            let _ = writeln!(
                s,
                "| ≤ 2.5 CPU-µs/packet at ≥ 20 000 packets/s | no roombox run reached 20 000 packets/s | **no** |"
            );
        }
    }
    if let Some(v) = slopes.get(&(Kind::Roombox, "fanout".into())) {
        let _ = writeln!(
            s,
            "| ≤ 0.5 MB RSS per participant | {v:.3} MB (slope over the fanout curve, one connection each) | {} |",
            yes(*v <= 0.5)
        );
    }
    if let Some(v) = slopes.get(&(Kind::Roombox, "room".into())) {
        let _ =
            writeln!(s, "| (rooms: RSS per peer connection) | {v:.3} MB (slope over N² connections) | — |");
    }
    match idle {
        Some(kb) => {
            let _ = writeln!(
                s,
                "| idle `roomboxd` ≤ 25 MB RSS | {:.1} MB | {} |",
                kb as f64 / 1024.0,
                yes(kb <= 25 * 1024)
            );
        }
        None => s.push_str("| idle `roomboxd` ≤ 25 MB RSS | not measured (see the suite's output) | — |\n"),
    }
    let join = rb.iter().map(|r| r.join_max_ms).filter(|v| v.is_finite()).fold(f64::NAN, f64::max);
    let _ = writeln!(s, "| join ≤ 250 ms | worst {join:.0} ms | {} |", yes(join <= 250.0));
    let mut min_ratio: Option<(f64, String)> = None;
    for r in &rb {
        if let Some(j) = med.get(&(Kind::Janus, r.workload.family().into(), r.workload.n())) {
            let q = cpu(j) / cpu(r);
            if min_ratio.as_ref().is_none_or(|(m, _)| q < *m) {
                min_ratio = Some((q, r.workload.label()));
            }
        }
    }
    match min_ratio {
        Some((q, w)) => {
            let _ = writeln!(
                s,
                "| Janus ÷ roombox ≥ 5 at every load | lowest {q:.1} ({w}) | {} |",
                yes(q >= 5.0)
            );
        }
        None => s.push_str("| Janus ÷ roombox ≥ 5 at every load | not measured | — |\n"),
    }
    s
}

/// Time the floor's SRTP `protect` of a `payload`-byte packet on this machine, µs.
pub fn cipher_us(profile: str0m::crypto::dtls::SrtpProfile, payload: usize) -> f64 {
    use crate::floor::srtp::Srtp;
    use crate::tap::Keys;
    use str0m::crypto::dtls::SrtpProfile as P;
    let len = match profile {
        P::AES128_CM_SHA1_80 => 60,
        P::AEAD_AES_128_GCM => 56,
        _ => 88,
    };
    let cp = str0m::crypto::from_feature_flags();
    let Some(mut s) = Srtp::new(&cp, &Keys { material: vec![7; len], profile, active: true }) else {
        return f64::NAN;
    };
    let header = [0x80, 96, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4];
    let body = vec![0x5au8; payload];
    let mut out = vec![0u8; payload + 64];
    for i in 0..2000u64 {
        let _ = s.protect(&header, &body, 1, i, &mut out);
    }
    let n = 20_000u64;
    let t = Instant::now();
    for i in 0..n {
        let _ = s.protect(&header, &body, 1, 2000 + i, &mut out);
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// One ARM board of the capacity estimate.
struct Board {
    name: &'static str,
    mhz: f64,
    /// Time for the non-cipher work relative to this machine.
    rest_factor: f64,
    /// (cipher, cycles per byte).
    ciphers: &'static [(&'static str, f64)],
}

const BOARDS: &[Board] = &[
    Board {
        name: "Pi 4: 4× Cortex-A72 1.5 GHz, no AES instructions",
        mhz: 1500.0,
        rest_factor: 2.6,
        ciphers: &[("AES-128-GCM (sw, ≈21 c/B)", 21.0), ("AES-256-GCM (sw, ≈26 c/B)", 26.0)],
    },
    Board {
        name: "4× Cortex-A76 2.4 GHz with Crypto Extensions",
        mhz: 2400.0,
        rest_factor: 1.5,
        ciphers: &[("AES-GCM (CE, ≤1.75 c/B)", 1.75)],
    },
];

/// The capacity section: the measured split and the arithmetic per board.
pub fn capacity(med: &std::collections::BTreeMap<(Kind, String, usize), RunResult>) -> String {
    let pick = |k: Kind| {
        med.values()
            .filter(|r| r.server == k && r.workload.family() == "room")
            .max_by(|a, b| a.pps.total_cmp(&b.pps))
            .or_else(|| med.values().filter(|r| r.server == k).max_by(|a, b| a.pps.total_cmp(&b.pps)))
            .cloned()
    };
    let mut s = String::new();
    let Some(rb) = pick(Kind::Roombox).or_else(|| pick(Kind::Floor)) else {
        return "(no runs to compute from)".into();
    };
    let who = rb.server.name();
    // Mean forwarded payload: datagram bytes per packet minus RTP header+extensions+tag (~40 B).
    let datagram = rb.mbps * 1e6 / 8.0 / rb.pps.max(1.0);
    let payload = (datagram - 40.0).max(100.0);
    let fan = match rb.workload {
        Workload::Room(n) => (n - 1) as f64,
        Workload::Fanout(n) => n as f64,
    };
    let enc_us = cipher_us(str0m::crypto::dtls::SrtpProfile::AEAD_AES_256_GCM, payload as usize);
    let cipher_x86 = enc_us * (1.0 + 1.0 / fan);
    let total = cpu(&rb);
    let rest = (total - cipher_x86).max(0.0);
    let _ = writeln!(
        s,
        "Measured here ({who}, {}): {total:.2} CPU-µs per forwarded packet; mean datagram {datagram:.0} B \
(payload ≈ {payload:.0} B); the floor's AES-256-GCM protect of that payload takes {enc_us:.3} µs, so the cipher is \
{cipher_x86:.3} µs per forwarded packet (one encrypt + 1/{fan:.0} decrypt) and the rest is **{rest:.2} µs**.\n",
        rb.workload.label()
    );
    s.push_str("| board | cipher | rest µs | cipher µs | µs/packet | packets/s (3 of 4 cores) | fanout: subscribers at 170 pkt/s | room: N×N at 110 pkt/s per pair |\n|---|---|--:|--:|--:|--:|--:|--:|\n");
    for b in BOARDS {
        for (cname, cpb) in b.ciphers {
            let r = rest * b.rest_factor;
            let c = payload * (1.0 + 1.0 / fan) * cpb / b.mhz;
            let per = r + c;
            let pps = 3.0 * 1e6 / per;
            let subs = pps / 170.0;
            // N(N-1)·110 = pps
            let n = (1.0 + (1.0 + 4.0 * pps / 110.0).sqrt()) / 2.0;
            let _ = writeln!(
                s,
                "| {} | {cname} | {rest:.2}×{} = {r:.2} | {payload:.0} B×{:.2}×{cpb}/{} MHz = {c:.2} | {per:.2} | {pps:.0} | {subs:.0} | {:.0} |",
                b.name,
                b.rest_factor,
                1.0 + 1.0 / fan,
                b.mhz,
                n.floor()
            );
        }
    }
    s.push_str(
        "\nFormula: µs/packet = rest × core factor + payload × (1 + 1/fan-out) × cycles-per-byte ÷ MHz; \
packets/s = 3 cores × 10⁶ ÷ µs/packet; a room of N all-to-all forwards N(N−1) × 110 packets/s.",
    );
    s
}
