//! Janus 1.1 (Debian's package) as the peer reference: its VideoRoom plugin
//! over the plain HTTP API on loopback, driven by the same synthetic clients.
//!
//! The config is a copy of `/etc/janus` with `configs_folder` pointed at the
//! copy, only the VideoRoom plugin and the HTTP transport loaded (the
//! streaming plugin would bind UDP on every interface), the HTTP API on
//! `127.0.0.1`, ICE restricted to the bench's interface, a fixed number of
//! event loops (one per core, Janus's advice for many handles), and logging at
//! warnings.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

pub const JANUS_BIN: &str = "/usr/bin/janus";

/// A running Janus process.
pub struct Janus {
    pub child: Child,
    pub http: SocketAddr,
    pub dir: PathBuf,
}

impl Janus {
    pub fn available() -> bool {
        Path::new(JANUS_BIN).exists() && Path::new("/etc/janus/janus.jcfg").exists()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Prepare the config in `dir` and start Janus; waits until its HTTP API answers.
    pub fn start(dir: &Path, http_port: u16, ice_ip: IpAddr, rtp_ports: (u16, u16)) -> anyhow::Result<Janus> {
        let conf = dir.join("conf");
        let _ = std::fs::remove_dir_all(&conf);
        std::fs::create_dir_all(&conf)?;
        for e in std::fs::read_dir("/etc/janus").context("reading /etc/janus (apt-get install janus)")? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".jcfg") && name != "janus.plugin.streaming.jcfg" {
                std::fs::copy(e.path(), conf.join(&*name))?;
            }
        }
        let ice = if ice_ip.is_loopback() { "lo".to_string() } else { ice_ip.to_string() };
        std::fs::write(
            conf.join("janus.jcfg"),
            format!(
                r#"general: {{
    configs_folder = "{conf}"
    plugins_folder = "/usr/lib/x86_64-linux-gnu/janus/plugins"
    transports_folder = "/usr/lib/x86_64-linux-gnu/janus/transports"
    events_folder = "/usr/lib/x86_64-linux-gnu/janus/events"
    loggers_folder = "/usr/lib/x86_64-linux-gnu/janus/loggers"
    debug_level = {debug}
    session_timeout = 120
    event_loops = 2
}}
media: {{
    rtp_port_range = "{lo}-{hi}"
}}
nat: {{
    nice_debug = false
    ice_enforce_list = "{ice}"
    ignore_mdns = true
}}
plugins: {{
    disable = "libjanus_streaming.so,libjanus_audiobridge.so,libjanus_sip.so,libjanus_nosip.so,libjanus_lua.so,libjanus_duktape.so,libjanus_recordplay.so,libjanus_voicemail.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_echotest.so"
}}
transports: {{
    disable = "libjanus_websockets.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so"
}}
events: {{
    broadcast = false
}}
"#,
                conf = conf.display(),
                debug = std::env::var("BENCH_JANUS_DEBUG").unwrap_or_else(|_| "2".into()),
                lo = rtp_ports.0,
                hi = rtp_ports.1,
            ),
        )?;
        std::fs::write(
            conf.join("janus.transport.http.jcfg"),
            format!(
                "general: {{\n    json = \"compact\"\n    base_path = \"/janus\"\n    http = true\n    port = {http_port}\n    ip = \"127.0.0.1\"\n    https = false\n}}\nadmin: {{\n    admin_http = false\n}}\n"
            ),
        )?;
        std::fs::write(conf.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
        let log = std::fs::File::create(dir.join("janus.log"))?;
        let child = Command::new(JANUS_BIN)
            .arg("--configs-folder")
            .arg(&conf)
            .arg("--config")
            .arg(conf.join("janus.jcfg"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting janus")?;
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let mut j = Janus { child, http, dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_err() {
            if let Ok(Some(st)) = j.child.try_wait() {
                bail!("janus exited with {st}; see {}", dir.join("janus.log").display());
            }
            if Instant::now() > deadline {
                j.stop();
                bail!("janus did not listen on {http} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(j)
    }

    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// A Janus API session with a long-poll event pump.
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
    base: String,
    pub id: u64,
    tx_n: Arc<AtomicU64>,
    /// Per handle: where its asynchronous events go.
    routes: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>,
}

/// One plugin handle and its event queue.
pub struct Handle {
    pub id: u64,
    events: mpsc::UnboundedReceiver<Value>,
}

impl Session {
    pub async fn create(base: &str) -> anyhow::Result<Session> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(40)).build()?;
        let mut s = Session {
            http,
            base: base.to_string(),
            id: 0,
            tx_n: Arc::new(AtomicU64::new(1)),
            routes: Arc::default(),
        };
        let r = s.post("/janus".into(), json!({"janus": "create"})).await?;
        s.id = r["data"]["id"].as_u64().ok_or_else(|| anyhow!("janus create: {r}"))?;
        let pump = s.clone();
        tokio::spawn(async move { pump.pump().await });
        Ok(s)
    }

    fn transaction(&self) -> String {
        format!("t{}", self.tx_n.fetch_add(1, Ordering::Relaxed))
    }

    async fn post(&self, path: String, body: Value) -> anyhow::Result<Value> {
        let t = self.transaction();
        self.post_as(path, body, &t).await
    }

    async fn post_as(&self, path: String, mut body: Value, transaction: &str) -> anyhow::Result<Value> {
        body["transaction"] = json!(transaction);
        let r: Value = self
            .http
            .post(format!("{}{}", self.base, path))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?
            .json()
            .await?;
        if r["janus"] == "error" {
            bail!("janus error: {}", r["error"]);
        }
        Ok(r)
    }

    async fn pump(self) {
        loop {
            let url = format!("{}/janus/{}?maxev=20", self.base, self.id);
            let Ok(resp) = self.http.get(&url).send().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(v) = resp.json::<Value>().await else { continue };
            let events = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            for ev in events {
                if ev["janus"] == "keepalive" {
                    continue;
                }
                if let Some(sender) = ev["sender"].as_u64()
                    && let Some(tx) = self.routes.lock().await.get(&sender)
                {
                    let _ = tx.send(ev);
                }
            }
        }
    }

    pub async fn attach(&self) -> anyhow::Result<Handle> {
        let r = self
            .post(
                format!("/janus/{}", self.id),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        let id = r["data"]["id"].as_u64().ok_or_else(|| anyhow!("janus attach: {r}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.lock().await.insert(id, tx);
        Ok(Handle { id, events: rx })
    }

    /// A synchronous plugin request (e.g. `create`): the plugin's reply data.
    pub async fn request(&self, h: &Handle, body: Value) -> anyhow::Result<Value> {
        let r = self
            .post(format!("/janus/{}/{}", self.id, h.id), json!({"janus": "message", "body": body}))
            .await?;
        Ok(r["plugindata"]["data"].clone())
    }

    /// An asynchronous plugin request: waits for the event it causes (plugin
    /// data and, when there is one, the JSEP).
    pub async fn message(
        &self,
        h: &mut Handle,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<(Value, Option<Value>)> {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let transaction = self.transaction();
        let r = self.post_as(format!("/janus/{}/{}", self.id, h.id), msg, &transaction).await?;
        if r["janus"] == "success" {
            return Ok((r["plugindata"]["data"].clone(), None));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = tokio::time::timeout(left, h.events.recv())
                .await
                .map_err(|_| anyhow!("no janus event within 20 s"))?
                .ok_or_else(|| anyhow!("janus event pump stopped"))?;
            // Only the reply to this request carries its transaction; notifications
            // (another publisher joined, …) do not.
            if ev["janus"] == "event" && ev["transaction"].as_str() == Some(transaction.as_str()) {
                let data = ev["plugindata"]["data"].clone();
                if data["error"].is_string() {
                    bail!("videoroom: {}", data["error"]);
                }
                let jsep = ev.get("jsep").cloned();
                return Ok((data, jsep));
            }
            // webrtcup, media, slowlink, hangup: not the reply we wait for.
        }
    }
}

/// Create a VideoRoom that takes `publishers` publishers with 3-layer simulcast VP8 and Opus.
pub async fn create_room(s: &Session, room: u64, publishers: usize) -> anyhow::Result<()> {
    let h = s.attach().await?;
    let r = s
        .request(
            &h,
            json!({"request": "create", "room": room, "publishers": publishers, "videocodec": "vp8",
                   "audiocodec": "opus", "bitrate": 0, "fir_freq": 0, "audiolevel_ext": true,
                   "notify_joining": false, "permanent": false}),
        )
        .await?;
    if r["videoroom"] != "created" {
        bail!("videoroom create: {r}");
    }
    Ok(())
}

/// Join `room` as a publisher with `offer`; returns (feed id, answer SDP, handle).
pub async fn publish(
    s: &Session,
    room: u64,
    display: &str,
    offer: &str,
) -> anyhow::Result<(u64, String, Handle)> {
    let mut h = s.attach().await?;
    let (data, jsep) = s
        .message(
            &mut h,
            json!({"request": "joinandconfigure", "ptype": "publisher", "room": room, "display": display,
                   "audio": true, "video": true}),
            // Our a=simulcast lists rids lowest first; Janus assumes highest first unless told.
            Some(json!({"type": "offer", "sdp": offer, "rid_order": "lmh"})),
        )
        .await?;
    let feed = data["id"].as_u64().ok_or_else(|| anyhow!("no feed id in {data}"))?;
    let sdp = jsep
        .and_then(|j| j["sdp"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("no answer from janus for {display}"))?;
    Ok((feed, sdp, h))
}

/// Subscribe to `feed`: Janus offers; returns (offer SDP, handle).
pub async fn subscribe_offer(s: &Session, room: u64, feed: u64) -> anyhow::Result<(String, Handle)> {
    let mut h = s.attach().await?;
    let (_data, jsep) = s
        .message(
            &mut h,
            json!({"request": "join", "ptype": "subscriber", "room": room,
                   "streams": [{"feed": feed}]}),
            None,
        )
        .await?;
    let sdp = jsep
        .and_then(|j| j["sdp"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("janus made no offer for feed {feed}"))?;
    Ok((sdp, h))
}

/// Complete a subscription with the client's answer, and pick the simulcast layer.
pub async fn subscribe_start(s: &Session, h: &mut Handle, answer: &str, substream: u8) -> anyhow::Result<()> {
    let (data, _) =
        s.message(h, json!({"request": "start"}), Some(json!({"type": "answer", "sdp": answer}))).await?;
    if data["started"] != "ok" && data["videoroom"] != "event" {
        bail!("subscriber start: {data}");
    }
    // Janus 1.x picks the layer per stream, by the subscriber-side mid of the video m-line.
    let video_mid =
        crate::sdp::summarize(answer).mlines.into_iter().find(|m| m.kind == "video").map(|m| m.mid);
    if let Some(mid) = video_mid {
        s.message(
            h,
            json!({"request": "configure", "streams": [{"mid": mid, "substream": substream}]}),
            None,
        )
        .await?;
    }
    Ok(())
}
