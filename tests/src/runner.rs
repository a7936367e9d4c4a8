//! The `main` of a browser test binary (`harness = false`).
//!
//! Browser tests must run inside a network namespace of their own, and a
//! process can only move all its threads there if it does so before it has
//! any: so these binaries bring their own `main` ([`crate::browser_test_main!`])
//! that installs Chromium if needed, enters the namespace, then starts tokio
//! and runs the tests one after another (two cores: browsers in parallel would
//! measure the machine, not the code), printing each one's run time.
//!
//! It speaks enough of libtest's command line for `cargo test` and
//! `cargo nextest` (`--list`, `--exact`, `--ignored`, name filters).
//!
//! Not root: the tests fail, saying why — unless `ROOMBOX_SKIP_BROWSER=1`, which
//! skips them (exit 0) with the reason printed.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What a browser test returns.
pub type TestFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

/// A browser test: its name and its body.
pub type Test = (&'static str, fn() -> TestFuture);

/// Longest a single test may run before it is failed (`ROOMBOX_BROWSER_TEST_TIMEOUT` seconds).
fn test_timeout() -> Duration {
    let secs = std::env::var("ROOMBOX_BROWSER_TEST_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    Duration::from_secs(secs)
}

/// Define `main` for a browser test binary from a list of `async fn name() -> anyhow::Result<()>`.
#[macro_export]
macro_rules! browser_test_main {
    ($($name:ident),+ $(,)?) => {
        fn main() -> ::std::process::ExitCode {
            $crate::runner::run(&[$((stringify!($name), || -> $crate::runner::TestFuture { Box::pin($name()) })),+])
        }
    };
}

struct Args {
    list: bool,
    ignored_only: bool,
    exact: bool,
    filters: Vec<String>,
    skip: Vec<String>,
}

fn parse_args() -> Args {
    let mut a =
        Args { list: false, ignored_only: false, exact: false, filters: Vec::new(), skip: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--list" => a.list = true,
            "--ignored" => a.ignored_only = true,
            "--exact" => a.exact = true,
            "--skip" => a.skip.extend(it.next()),
            // libtest options that take a value, which we accept and ignore.
            "--format" | "--color" | "--logfile" | "--test-threads" | "-Z" | "--report-time" => {
                it.next();
            }
            s if s.starts_with("--") || s.starts_with('-') => {}
            s => a.filters.push(s.to_owned()),
        }
    }
    a
}

/// Run the selected tests; see the module docs.
pub fn run(tests: &[Test]) -> ExitCode {
    let args = parse_args();
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|(name, _)| {
            let hit = |f: &String| if args.exact { name == f } else { name.contains(f.as_str()) };
            (args.filters.is_empty() || args.filters.iter().any(hit)) && !args.skip.iter().any(hit)
        })
        .collect();

    if args.list {
        if !args.ignored_only {
            for (name, _) in &selected {
                println!("{name}: test");
            }
        }
        return ExitCode::SUCCESS;
    }
    if args.ignored_only || selected.is_empty() {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored\n");
        return ExitCode::SUCCESS;
    }

    if std::env::var("ROOMBOX_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        println!("\nskipping {} browser test(s): ROOMBOX_SKIP_BROWSER=1\n", selected.len());
        return ExitCode::SUCCESS;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "\nbrowser tests need root: they make network namespaces (unshare, veth, tc) so Chromium \
             has a non-loopback address to gather ICE candidates on.\nRun them as root, or set \
             ROOMBOX_SKIP_BROWSER=1 to skip them on purpose.\n"
        );
        return ExitCode::FAILURE;
    }
    // Before the namespace: apt needs the network, and threads must not exist yet.
    if let Err(e) = preflight() {
        eprintln!("\nbrowser tests cannot start: {e:#}\n");
        return ExitCode::FAILURE;
    }
    if let Err(e) = crate::netns::enter_private_netns() {
        eprintln!("\nbrowser tests cannot make their network namespace: {e:#}\n");
        return ExitCode::FAILURE;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();

    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    println!("\nrunning {} browser test(s) in a private network namespace\n", selected.len());
    let all = Instant::now();
    let mut failed = Vec::new();
    let timeout = test_timeout();
    for (name, body) in &selected {
        let start = Instant::now();
        // A local task: test bodies need not be `Send`, and a panic is caught as a JoinError.
        let local = tokio::task::LocalSet::new();
        let result = local.block_on(&rt, async {
            match tokio::time::timeout(timeout, tokio::task::spawn_local(body())).await {
                Ok(Ok(r)) => r,
                Ok(Err(join)) => Err(anyhow::anyhow!("the test panicked: {join}")),
                Err(_) => Err(anyhow::anyhow!("the test ran longer than {timeout:?}")),
            }
        });
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("test {name} ... ok ({secs:.1} s)"),
            Err(e) => {
                println!("test {name} ... FAILED ({secs:.1} s)");
                failed.push((name, e));
            }
        }
    }
    // Whatever a test left running (servers, browsers in detached tasks) ends here.
    rt.shutdown_timeout(Duration::from_secs(5));

    for (name, e) in &failed {
        println!("\n---- {name} ----\n{e:#}");
    }
    let passed = selected.len() - failed.len();
    println!(
        "\ntest result: {}. {passed} passed; {} failed; finished in {:.1} s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        all.elapsed().as_secs_f64()
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Tools the browser tests need, installed when missing (as root, with apt).
fn preflight() -> anyhow::Result<()> {
    crate::browser::chromium_path()?;
    for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2")] {
        if which(tool).is_none() {
            eprintln!("`{tool}` is missing: running `apt-get install -y {package}`");
            if crate::netns::sh("apt-get", &["install", "-y", package]).is_err() {
                crate::netns::sh("apt-get", &["update"])?;
                crate::netns::sh("apt-get", &["install", "-y", package])?;
            }
        }
    }
    Ok(())
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
