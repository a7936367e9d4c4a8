//! Headless Chromium as a real WebRTC peer, driven over the DevTools protocol.
//!
//! [`Browser::launch`] starts Debian's `chromium` with the flags measured in
//! `RECIPES.md` (fake camera and microphone, no sandbox, no background
//! networking), a fresh profile directory and `--remote-debugging-port=0`; the
//! port is read from the profile's `DevToolsActivePort`. Chromium runs in its
//! own process group, killed (with its renderers) when the [`Browser`] drops;
//! the profile directory goes with it.
//!
//! A [`Tab`] evaluates JavaScript (promises awaited), waits on conditions with
//! a deadline, collects WebRTC statistics through [`crate::stats`] and takes
//! screenshots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::cdp::Cdp;
use crate::netns::sh;
use crate::stats::{PcStats, STATS_JS};
use crate::wait::wait_until;

/// The flags every test browser gets (RECIPES.md), plus the ones that keep
/// background tabs running at full speed.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--ignore-certificate-errors",
    // Several tabs share one browser: none of them may be throttled as "hidden".
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
];

static INSTALL: Mutex<()> = Mutex::new(());

/// The Chromium binary, installing Debian's `chromium` package when it is
/// missing and we are root. `ROOMBOX_CHROMIUM` overrides the path.
/// Call it before entering a network namespace (apt needs the network).
pub fn chromium_path() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("ROOMBOX_CHROMIUM") {
        let p = PathBuf::from(p);
        if !p.exists() {
            bail!("ROOMBOX_CHROMIUM={} does not exist", p.display());
        }
        return Ok(p);
    }
    let _g = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let find = || {
        ["/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "Chromium is not installed. Install Debian's package: `sudo apt-get install -y chromium` \
             (or set ROOMBOX_CHROMIUM to a Chromium binary)"
        );
    }
    eprintln!("chromium is missing: running `apt-get install -y chromium`");
    if sh("apt-get", &["install", "-y", "chromium"]).is_err() {
        sh("apt-get", &["update"]).context("apt-get update (needed to install chromium)")?;
        sh("apt-get", &["install", "-y", "chromium"]).context("apt-get install -y chromium")?;
    }
    find().ok_or_else(|| anyhow!("`apt-get install -y chromium` ran but no chromium binary was found"))
}

/// How to start one browser.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Run inside this named network namespace (`ip netns exec NAME`).
    pub netns: Option<String>,
    /// Extra command-line flags (e.g. `--unsafely-treat-insecure-origin-as-secure=…`).
    pub args: Vec<String>,
    /// A name for log lines.
    pub label: String,
}

/// A running headless Chromium; killed with its whole process group on drop.
pub struct Browser {
    child: Child,
    cdp: Cdp,
    label: String,
    log_path: PathBuf,
    // Dropped after the child is killed (field order), removing the profile.
    _dir: tempfile::TempDir,
}

impl Browser {
    pub async fn launch(opts: LaunchOptions) -> anyhow::Result<Browser> {
        let chromium = chromium_path()?;
        let dir = tempfile::Builder::new().prefix("rbx-chromium-").tempdir().context("temp dir")?;
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile)?;
        let log_path = dir.path().join("chromium.log");
        let log = std::fs::File::create(&log_path)?;

        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&chromium);
                c
            }
            None => Command::new(&chromium),
        };
        cmd.args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .args(&opts.args)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", chromium.display()))?;

        let port_file = profile.join("DevToolsActivePort");
        let started = Instant::now();
        let (port, path) = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                let mut lines = s.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && let Ok(port) = port.trim().parse::<u16>()
                {
                    break (port, path.trim().to_owned());
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!("chromium exited ({status}) before DevTools was up:\n{}", tail(&log_path, 30));
            }
            if started.elapsed() > Duration::from_secs(30) {
                kill_group(&mut child);
                bail!("chromium wrote no DevToolsActivePort within 30 s:\n{}", tail(&log_path, 30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = match &opts.netns {
            Some(ns) => {
                let s = crate::netns::connect_in_netns(ns, addr)?;
                s.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(s)?
            }
            None => tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?,
        };
        let cdp = match Cdp::connect(stream, &format!("ws://127.0.0.1:{port}{path}")).await {
            Ok(c) => c,
            Err(e) => {
                kill_group(&mut child);
                return Err(e);
            }
        };
        let label = if opts.label.is_empty() { "chromium".to_owned() } else { opts.label };
        Ok(Browser { child, cdp, label, log_path, _dir: dir })
    }

    /// Open a tab on `url` and wait until its document has loaded.
    pub async fn new_tab(&self, url: &str) -> anyhow::Result<Tab> {
        self.new_tab_with(url, &[]).await
    }

    /// Open a tab whose documents run `init_scripts` before their own scripts
    /// (e.g. to replace `getUserMedia`), then load `url`.
    pub async fn new_tab_with(&self, url: &str, init_scripts: &[&str]) -> anyhow::Result<Tab> {
        let r = self.cdp.call("Target.createTarget", json!({ "url": "about:blank" }), None).await?;
        let target = r["targetId"].as_str().ok_or_else(|| anyhow!("createTarget: no targetId"))?.to_owned();
        let r = self
            .cdp
            .call("Target.attachToTarget", json!({ "targetId": target, "flatten": true }), None)
            .await?;
        let session =
            r["sessionId"].as_str().ok_or_else(|| anyhow!("attachToTarget: no sessionId"))?.to_owned();
        let tab = Tab { cdp: self.cdp.clone(), session, target, label: self.label.clone() };
        for m in ["Runtime.enable", "Page.enable", "Log.enable"] {
            tab.call(m, json!({})).await?;
        }
        tab.call("Emulation.setFocusEmulationEnabled", json!({ "enabled": true })).await?;
        tab.add_init_script(STATS_JS).await?;
        for s in init_scripts {
            tab.add_init_script(s).await?;
        }
        tab.goto(url).await?;
        Ok(tab)
    }

    /// The last lines Chromium printed on stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signals the process group we created for this child (pgid == its pid).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// One page, attached over the browser's DevTools connection.
#[derive(Clone)]
pub struct Tab {
    cdp: Cdp,
    session: String,
    target: String,
    label: String,
}

impl Tab {
    /// A DevTools command to this tab.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.cdp.call(method, params, Some(&self.session)).await
    }

    /// Run `source` at the start of every document this tab loads from now on.
    pub async fn add_init_script(&self, source: &str) -> anyhow::Result<()> {
        self.call("Page.addScriptToEvaluateOnNewDocument", json!({ "source": source })).await?;
        Ok(())
    }

    /// Navigate and wait until the document is complete.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        let r = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            bail!("{}: loading {url} failed: {e}", self.label);
        }
        self.wait_for(
            &format!("page {url} loaded"),
            "document.readyState === 'complete'",
            Duration::from_secs(30),
        )
        .await?;
        Ok(())
    }

    /// Evaluate `expr` (promises are awaited) and return its value as JSON.
    /// A thrown exception is an error carrying its message.
    pub async fn eval(&self, expr: &str) -> anyhow::Result<Value> {
        let r = self
            .cdp
            .call_timeout(
                "Runtime.evaluate",
                json!({
                    "expression": expr,
                    "awaitPromise": true,
                    "returnByValue": true,
                    "userGesture": true,
                }),
                Some(&self.session),
                Duration::from_secs(60),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            let desc = ex["exception"]["description"].as_str().or(ex["text"].as_str()).unwrap_or("exception");
            bail!("{}: `{}` threw: {desc}", self.label, short(expr));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// [`eval`](Self::eval) into a typed value.
    pub async fn eval_as<T: DeserializeOwned>(&self, expr: &str) -> anyhow::Result<T> {
        let v = self.eval(expr).await?;
        serde_json::from_value(v.clone())
            .with_context(|| format!("{}: `{}` returned {v}", self.label, short(expr)))
    }

    /// Evaluate `expr` until it is truthy (returns that value) or `timeout`
    /// passes (an error naming `what`, the last value and the page's console).
    pub async fn wait_for(&self, what: &str, expr: &str, timeout: Duration) -> anyhow::Result<Value> {
        let r = wait_until(what, timeout, async || {
            let v = self.eval(expr).await?;
            if truthy(&v) { Ok(v) } else { Err(anyhow!("last value: {v}")) }
        })
        .await;
        r.map_err(|e| anyhow!("{e}\n{}", self.console_tail(25)))
    }

    /// Statistics of every `RTCPeerConnection` the page created (open ones).
    pub async fn stats(&self) -> anyhow::Result<Vec<PcStats>> {
        self.eval_as("window.__rbx.allStats()").await
    }

    /// Bring the tab to the front and write a PNG screenshot to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        self.call("Page.bringToFront", json!({})).await?;
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" })).await?;
        let data = r["data"].as_str().ok_or_else(|| anyhow!("captureScreenshot: no data"))?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// What the page logged (console calls, uncaught exceptions).
    pub fn console(&self) -> Vec<String> {
        self.cdp.console(&self.session)
    }

    /// The last `n` console lines, labelled, for error messages.
    pub fn console_tail(&self, n: usize) -> String {
        let c = self.console();
        let from = c.len().saturating_sub(n);
        let mut s =
            format!("--- console of {} (last {} of {} lines) ---", self.label, c.len() - from, c.len());
        for l in &c[from..] {
            s.push('\n');
            s.push_str(l);
        }
        s
    }

    pub async fn close(&self) -> anyhow::Result<()> {
        self.cdp.call("Target.closeTarget", json!({ "targetId": self.target }), None).await?;
        Ok(())
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The same tab with another name in messages.
    pub fn named(mut self, label: impl Into<String>) -> Tab {
        self.label = label.into();
        self
    }
}

/// JavaScript's notion of truthiness, for JSON values.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn short(expr: &str) -> String {
    let one: String = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 { format!("{}…", one.chars().take(120).collect::<String>()) } else { one }
}
