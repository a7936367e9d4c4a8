//! `roombox-bench`: the benchmark suite, its smoke test, one-off runs, and the
//! floor relay process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use roombox_bench::floor::{self, FloorConfig};
use roombox_bench::media::Profile;
use roombox_bench::report;
use roombox_bench::scenario::{self, Env, Kind, Spec, Workload};

#[derive(Parser)]
#[command(
    about = "roombox's measuring instruments: the same WebRTC load against roombox, the floor and Janus"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Seconds, tiny load: check that packets flow through every available server.
    Smoke(Common),
    /// One workload against the chosen servers.
    Run {
        #[command(flatten)]
        c: Common,
        /// `fanout` or `room`.
        #[arg(long, default_value = "fanout")]
        family: String,
        #[arg(long, default_value_t = 8)]
        n: usize,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// The whole suite: scaling curves, repeats of the headline loads, tables, JSON, SVG, docs.
    Suite {
        #[command(flatten)]
        c: Common,
        /// docs/PERFORMANCE.md to rewrite (marked sections only).
        #[arg(long)]
        doc: Option<PathBuf>,
        /// Repeats of the headline loads (medians are reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// roombox itself: the very server code of sfu-core's `sfu` binary
    /// (`sfu_core::standalone`), so the bench measures the sfu-core this binary
    /// was built with (started by the bench as its own process).
    Sfu {
        /// TOML configuration file (the `sfu` binary's format).
        #[arg(long)]
        config: PathBuf,
    },
    /// Soak `roomboxd` (the daemon binary, room media on): participants joining,
    /// publishing, subscribing, chatting, muted and leaving for a bounded time;
    /// RSS, fds, threads, SQLite and WAL sampled; a table, a CSV and an SVG plot.
    Soak {
        /// How long (bounded: at most 240).
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        #[arg(long, default_value_t = 8)]
        participants: usize,
        /// The daemon binary; default: `roomboxd` next to this binary.
        #[arg(long)]
        roomboxd: Option<PathBuf>,
        /// Sampling interval, seconds.
        #[arg(long, default_value_t = 10.0)]
        every: f64,
        /// Warm-up not judged, seconds (default: a sixth of the run, at most 300).
        #[arg(long)]
        warmup: Option<f64>,
        /// Room camera WIDTHxHEIGHT@FPS.
        #[arg(long, default_value = "640x360@15")]
        media: String,
        #[arg(long, default_value = "127.0.0.1")]
        ip: IpAddr,
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Also write the plot here (e.g. docs/bench/soak.svg).
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// The floor relay itself (started by the bench as its own process).
    Floor {
        #[arg(long, default_value = "127.0.0.1:0")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:0")]
        udp: SocketAddr,
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Servers to run, comma separated (floor,roombox,janus). Unavailable ones are skipped.
    #[arg(long, default_value = "floor,roombox,janus")]
    servers: String,
    /// Address for media (loopback, or a veth address inside a namespace).
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Where JSON, SVG and logs go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Steady measurement window, seconds.
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// Settling time before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Run roombox and the floor under callgrind and report instructions per forwarded packet.
    #[arg(long)]
    callgrind: bool,
}

impl Common {
    fn env(&self) -> anyhow::Result<Env> {
        let self_exe = std::env::current_exe()?;
        std::fs::create_dir_all(&self.out)?;
        Ok(Env { ip: self.ip, self_exe, work: self.out.join("work"), callgrind: self.callgrind })
    }

    fn kinds(&self) -> Vec<Kind> {
        self.servers
            .split(',')
            .filter_map(|s| Kind::parse(s.trim()))
            .filter(|k| match k {
                Kind::Janus => {
                    let ok = roombox_bench::janus::Janus::available();
                    if !ok {
                        eprintln!("skipping janus: not installed (apt-get install -y janus)");
                    }
                    ok
                }
                Kind::Floor | Kind::Roombox => true,
            })
            .collect()
    }

    fn spec(&self, w: Workload) -> Spec {
        Spec {
            workload: w,
            warmup: Duration::from_secs_f64(self.warmup),
            window: Duration::from_secs_f64(self.window),
            profile: Profile::default(),
            join_deadline: Duration::from_secs(if self.callgrind { 60 } else { 15 }),
            subscribe_budget: Duration::from_secs(if self.callgrind { 360 } else { 90 }),
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,str0m=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Sfu { config } => sfu_core::standalone::run_from_config(&config),
        Cmd::Floor { http, udp, batch } => floor::run(FloorConfig { http, udp, batch }),
        Cmd::Soak { minutes, participants, roomboxd, every, warmup, media, ip, out, svg } => {
            let minutes = minutes.clamp(0.5, 240.0);
            let roomboxd = match roomboxd {
                Some(p) => p,
                None => std::env::current_exe()?.with_file_name("roomboxd"),
            };
            let parse = || -> Option<(u32, u32, u32)> {
                let (size, fps) = media.split_once('@')?;
                let (w, h) = size.split_once('x')?;
                Some((w.parse().ok()?, h.parse().ok()?, fps.parse().ok()?))
            };
            let media = parse().with_context(|| format!("--media {media:?}: want WIDTHxHEIGHT@FPS"))?;
            let duration = Duration::from_secs_f64(minutes * 60.0);
            let warmup = warmup.map(Duration::from_secs_f64).unwrap_or((duration / 6).min(Duration::from_secs(300)));
            let cfg = roombox_bench::soak::SoakConfig {
                roomboxd,
                duration,
                participants,
                every: Duration::from_secs_f64(every.max(1.0)),
                warmup,
                media,
                ip,
                out,
                svg,
            };
            if !runtime()?.block_on(roombox_bench::soak::soak(cfg))? {
                bail!("the soak missed its goals (see the table)");
            }
            Ok(())
        }
        Cmd::Smoke(c) => runtime()?.block_on(smoke(c)),
        Cmd::Run { c, family, n, repeat } => runtime()?.block_on(run_one(c, &family, n, repeat)),
        Cmd::Suite { c, doc, repeat } => runtime()?.block_on(roombox_bench::suite::suite(
            c.env()?,
            c.kinds(),
            doc,
            repeat,
            |w| c.spec(w),
            &c.out,
        )),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

async fn smoke(c: Common) -> anyhow::Result<()> {
    let env = c.env()?;
    let mut bad = Vec::new();
    println!("{}", report::header());
    // A requested server this machine cannot run is a failure here, never a silent pass.
    let runnable = c.kinds();
    for name in c.servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match Kind::parse(name) {
            None => bad.push(format!("{name}: unknown server (floor, roombox, janus)")),
            Some(k) if !runnable.contains(&k) => {
                bad.push(format!("{name}: not runnable here (janus: apt-get install -y janus)"))
            }
            Some(_) => {}
        }
    }
    for k in runnable {
        let mut spec = c.spec(Workload::Fanout(2));
        spec.window = Duration::from_secs_f64(c.window.min(2.0));
        spec.warmup = Duration::from_millis(300);
        match scenario::run(k, &env, &spec).await {
            Ok(r) => {
                println!("{}", report::row(&r));
                if r.forwarded_packets == 0 || r.subscriptions_flowing < r.subscriptions {
                    bad.push(format!(
                        "{}: {} of {} subscriptions got packets",
                        k.name(),
                        r.subscriptions_flowing,
                        r.subscriptions
                    ));
                }
            }
            Err(e) => bad.push(format!("{}: {e:#}", k.name())),
        }
    }
    if !bad.is_empty() {
        bail!("smoke failed:\n  {}", bad.join("\n  "));
    }
    println!("smoke: packets flowed through every server");
    Ok(())
}

async fn run_one(c: Common, family: &str, n: usize, repeat: usize) -> anyhow::Result<()> {
    let env = c.env()?;
    let w = match family {
        "fanout" => Workload::Fanout(n),
        "room" => Workload::Room(n),
        other => bail!("unknown workload family {other:?}"),
    };
    println!("{}", report::header());
    let mut all = Vec::new();
    for _ in 0..repeat {
        for k in c.kinds() {
            let r = scenario::run(k, &env, &c.spec(w))
                .await
                .with_context(|| format!("{} {}", k.name(), w.label()))?;
            println!("{}", report::row(&r));
            println!(
                "  RSS: server {:.1} MB, bench clients {:.1} MB",
                r.rss_kb as f64 / 1024.0,
                r.client_rss_kb as f64 / 1024.0
            );
            if let Some(i) = r.instructions_per_pkt {
                println!("  {}: {i:.0} instructions per forwarded packet (callgrind, window only)", k.name());
            }
            all.push(r);
        }
    }
    println!("\n{}", report::ratios(&report::medians(&all)));
    report::write_json(&c.out.join("run.json"), &all)?;
    Ok(())
}
