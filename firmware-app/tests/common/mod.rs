//! Shared helpers for the daemon's integration tests: an in-process daemon on
//! a free loopback port with its own data dir, and an HTTPS client that trusts
//! exactly that daemon's self-signed certificate.
#![allow(dead_code, clippy::field_reassign_with_default)]

use std::path::PathBuf;

use roombox::config::DaemonConfig;
use roombox::daemon::Running;
use serde_json::Value;

pub struct TestDaemon {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub base: String,
}

pub fn config(dir: &std::path::Path) -> DaemonConfig {
    let mut cfg = DaemonConfig::default();
    cfg.data_dir = dir.to_owned();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.region = "test".into();
    cfg.server_id = "box-1".into();
    cfg.room = "demo".into();
    cfg.sfu.udp_bind = "127.0.0.1:0".parse().unwrap();
    cfg.sfu.tcp_bind = None;
    cfg.sfu.include_loopback = true;
    // Most tests need no camera: its encoder would only load the machine.
    cfg.media.enabled = false;
    cfg
}

/// [`config`] with the room's synthetic camera and microphone publishing into
/// room `demo`, small enough to be cheap (320x180 at 15 fps).
pub fn config_with_media(dir: &std::path::Path) -> DaemonConfig {
    let mut cfg = config(dir);
    cfg.media.enabled = true;
    cfg.media.width = 320;
    cfg.media.height = 180;
    cfg.media.fps = 15;
    cfg.media.start_bitrate_bps = 300_000;
    cfg
}

pub async fn start_with(cfg: DaemonConfig, dir: tempfile::TempDir) -> TestDaemon {
    let running = roombox::daemon::start(cfg).await.expect("daemon starts");
    let tls = running.tls.clone().expect("TLS is on by default");
    let pem = std::fs::read(&tls.cert).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{}", running.addr.port());
    TestDaemon { running, dir, client, base }
}

pub async fn start() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    start_with(cfg, dir).await
}

impl TestDaemon {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("initial-admin-password")).unwrap().trim().to_owned()
    }

    /// Log in as admin; returns the token pair JSON.
    pub async fn login_admin(&self) -> Value {
        let r = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": self.admin_password()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "admin login");
        r.json().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut rq = self.client.get(self.url(path));
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        rq.send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut rq = self.client.post(self.url(path)).json(&body);
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        rq.send().await.unwrap()
    }
}

/// The JSON error code of a response (asserting the error shape).
pub async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("errors are JSON");
    assert!(v["error"]["message"].is_string(), "error has a message: {v}");
    v["error"]["code"].as_str().expect("error has a code").to_owned()
}
