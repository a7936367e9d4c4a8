//! Secure defaults of the daemon's HTTP edge, against the real server:
//! oversized bodies get a clean 413 (sent by curl, a real client, over HTTPS
//! and plain HTTP), security headers on every response, per-address rate
//! limits, the token leeway key, readiness that waits for the real devices,
//! and secret files readable by the owner only.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{TestDaemon, config, config_with_media, start_with};
use serde_json::Value;
use sfu_core::auth::{Claims, Grants, sign_hs256};

const TEN_MB: usize = 10 * 1024 * 1024;

/// A daemon over plain HTTP (`http.tls = false`).
async fn start_http(mut cfg: roombox::config::DaemonConfig, dir: tempfile::TempDir) -> TestDaemon {
    cfg.http.tls = false;
    let running = roombox::daemon::start(cfg).await.expect("daemon starts");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{}", running.addr.port());
    TestDaemon { running, dir, client, base }
}

struct CurlResult {
    status: String,
    uploaded: f64,
    stderr: String,
}

/// POST the file at `body` to `url` with curl; `extra`: more curl arguments.
async fn curl_post(d: &TestDaemon, url: &str, body: &Path, extra: &[&str]) -> CurlResult {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_upload}",
        "--max-time",
        "60",
        "-X",
        "POST",
    ])
    .args(["-H", "Content-Type: application/sdp", "--data-binary"])
    .arg(format!("@{}", body.display()))
    .args(extra);
    if let Some(tls) = &d.running.tls {
        cmd.arg("--cacert").arg(&tls.cert);
    }
    let out = cmd.arg(url).output().await.expect("curl runs (apt install curl)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = stdout.split_whitespace();
    let status = it.next().unwrap_or("").to_owned();
    let uploaded = it.next().and_then(|s| s.parse().ok()).unwrap_or(-1.0);
    CurlResult { status, uploaded, stderr: String::from_utf8_lossy(&out.stderr).into() }
}

/// `proto`: curl's protocol switch (`--http1.1`, or `--http2` over HTTPS).
async fn ten_mb_whip_gets_413(d: &TestDaemon, proto: &str) {
    let file = d.dir.path().join("ten-mb.sdp");
    std::fs::write(&file, vec![b'v'; TEN_MB]).unwrap();
    let url = d.url("/whip/demo");

    // The whole 10 MB sent without waiting (no `Expect`), with a Content-Length.
    let r = curl_post(d, &url, &file, &[proto, "-H", "Expect:"]).await;
    assert_eq!(r.status, "413", "{proto}, Content-Length, no Expect: curl said {:?}", r.stderr);

    if proto == "--http1.1" {
        // Chunked (HTTP/1.1 only): no Content-Length, the limit is hit while reading.
        let r =
            curl_post(d, &url, &file, &[proto, "-H", "Expect:", "-H", "Transfer-Encoding: chunked"]).await;
        assert_eq!(r.status, "413", "chunked: curl said {:?}", r.stderr);

        // `Expect: 100-continue`: the 413 comes instead of `100 Continue`, and the body is never sent.
        let r =
            curl_post(d, &url, &file, &[proto, "-H", "Expect: 100-continue", "--expect100-timeout", "30"])
                .await;
        assert_eq!(r.status, "413", "Expect: 100-continue: curl said {:?}", r.stderr);
        assert_eq!(r.uploaded, 0.0, "the client was told before it uploaded anything");
    }

    // The same on the API, and the daemon still answers afterwards.
    let r = curl_post(d, &d.url("/api/v1/auth/login"), &file, &[proto, "-H", "Expect:"]).await;
    assert_eq!(r.status, "413", "{proto}, API: curl said {:?}", r.stderr);
    assert_eq!(d.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn a_10_mb_whip_body_gets_a_clean_413_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_with(config(dir.path()), dir).await;
    ten_mb_whip_gets_413(&d, "--http1.1").await;
    ten_mb_whip_gets_413(&d, "--http2").await;
    d.running.shutdown().await;
}

#[tokio::test]
async fn a_10_mb_whip_body_gets_a_clean_413_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_http(config(dir.path()), dir).await;
    ten_mb_whip_gets_413(&d, "--http1.1").await;
    d.running.shutdown().await;
}

fn assert_security_headers(r: &reqwest::Response, https: bool, what: &str) {
    let h = r.headers();
    let csp = h.get("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP")).to_str().unwrap();
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{what}: {csp}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h.get("strict-transport-security").is_some(), https, "{what}: HSTS only over HTTPS");
}

async fn every_response_has_security_headers(d: &TestDaemon, https: bool) {
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap();
    for (path, token, status) in [
        ("/", None, 200),
        ("/admin", None, 200),
        ("/js/app.js", None, 200),
        ("/healthz", None, 200),
        ("/metrics", None, 200),
        ("/api/v1/rooms", Some(t), 200),
        ("/api/v1/rooms", None, 401),
        ("/nope", None, 404),
    ] {
        let r = d.get(path, token).await;
        assert_eq!(r.status(), status, "{path}");
        assert_security_headers(&r, https, path);
    }
    let r = d
        .client
        .post(d.url("/whip/demo"))
        .header("content-type", "application/sdp")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "signaling without a token");
    assert_security_headers(&r, https, "POST /whip/demo");
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_hsts_only_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_with(config(dir.path()), dir).await;
    every_response_has_security_headers(&d, true).await;
    d.running.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let d = start_http(config(dir.path()), dir).await;
    every_response_has_security_headers(&d, false).await;
    d.running.shutdown().await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test]
async fn api_and_signaling_are_rate_limited_per_address_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.http.rate_limit_per_minute = 6;
    cfg.http.rate_limit_burst = 4;
    let d = start_with(cfg, dir).await;
    for i in 0..4 {
        assert_eq!(d.get("/api/v1/rooms", None).await.status(), 401, "request {i} is within the burst");
    }
    let r = d.get("/api/v1/rooms", None).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "one request every 10 s: retry in {retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    let r = d
        .client
        .post(d.url("/whip/demo"))
        .header("content-type", "application/sdp")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "signaling shares the address's budget");
    // Health, metrics and the web client are not limited.
    for p in ["/healthz", "/", "/metrics"] {
        assert_eq!(d.get(p, None).await.status(), 200, "{p}");
    }
    let m = d.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(metric(&m, "roombox_http_rate_limited_total{surface=\"api\"}"), 1.0);
    assert_eq!(metric(&m, "roombox_http_rate_limited_total{surface=\"signaling\"}"), 1.0);
    d.running.shutdown().await;
}

#[tokio::test]
async fn the_token_leeway_is_a_config_key_with_a_small_default() {
    assert_eq!(
        roombox::config::DaemonConfig::default().auth.token_leeway,
        Duration::from_secs(sfu_core::auth::DEFAULT_LEEWAY_SECS)
    );
    const { assert!(sfu_core::auth::DEFAULT_LEEWAY_SECS <= 10) };
    let now = roombox::auth::unix_now();
    // A token that expired 3 s ago.
    let mut claims = Claims::new("alice", "*", Grants { admin: true, ..Grants::default() }, now - 903, 900);
    claims.iss = Some(roombox::auth::ISSUER.into());
    for (leeway, want) in [(None, 200), (Some(0), 401)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        if let Some(l) = leeway {
            cfg.auth.token_leeway = Duration::from_secs(l);
        }
        let d = start_with(cfg, dir).await;
        let key = roombox::auth::load_or_create_key(&d.data_dir()).unwrap();
        let t = sign_hs256(&claims, &key).unwrap();
        let r = d.get("/api/v1/rooms", Some(&t)).await;
        assert_eq!(r.status(), want, "leeway {leeway:?}");
        d.running.shutdown().await;
    }
    let mut cfg = roombox::config::DaemonConfig::default();
    cfg.auth.token_leeway = Duration::from_secs(3600);
    assert!(cfg.validate().iter().any(|(k, _)| k == "auth.token_leeway"), "an hour of leeway is refused");
}

#[tokio::test]
async fn readiness_and_the_device_report_only_what_the_capture_threads_opened() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_with(config_with_media(dir.path()), dir).await;
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready: Value = d.get("/readyz", None).await.json().await.unwrap();
        let dev: Value = d.get("/api/v1/device", Some(&t)).await.json().await.unwrap();
        let detail = dev["media"]["detail"].as_str().unwrap().to_owned();
        let p = &dev["media"]["pipeline"];
        let cam = p["camera_description"].as_str().unwrap_or("");
        let mic = p["microphone_description"].as_str().unwrap_or("");
        assert!(!detail.contains("  ") && !detail.ends_with(" and") && !detail.ends_with(' '), "{detail:?}");
        if detail.starts_with("publishing") {
            assert!(!cam.is_empty() && !mic.is_empty(), "{detail:?} while {p}");
            assert_eq!(detail, format!("publishing {cam} and {mic}"));
        }
        if ready["media"] == true {
            assert!(!cam.is_empty() && !mic.is_empty(), "ready before the sources were open: {p}");
            assert!(detail.starts_with("publishing "), "{detail:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "media never became ready: {ready} {dev}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.running.shutdown().await;
}

#[tokio::test]
async fn every_file_the_daemon_writes_that_holds_a_secret_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_with(config(dir.path()), dir).await;
    // Make the store write (WAL): a login creates a refresh token.
    d.login_admin().await;
    let data = d.data_dir();
    let tls = d.running.tls.clone().unwrap();
    let mut secret_files = vec![
        data.join(roombox::auth::KEY_FILE),
        data.join(roombox::auth::INITIAL_PASSWORD_FILE),
        tls.key.clone(),
        data.join("roombox.db"),
    ];
    for extra in ["roombox.db-wal", "roombox.db-shm"] {
        if data.join(extra).exists() {
            secret_files.push(data.join(extra));
        }
    }
    for f in &secret_files {
        let mode =
            std::fs::metadata(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", f.display(), mode & 0o777);
    }
    d.running.shutdown().await;

    // A database left readable by others (an older version, a restore) is tightened on start.
    let db = data.join("roombox.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg = config(&data);
    cfg.data_dir = data.clone();
    let d = start_with(cfg, dir2).await;
    assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
    d.running.shutdown().await;
}

/// The config fuzz target's committed seeds (`fuzz/seeds/daemon_config`)
/// through its check on stable: CI's bounded form of that target.
#[test]
fn the_daemon_config_fuzz_seeds_replay_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/daemon_config");
    let mut loaded = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(f.unwrap().path()).unwrap();
        roombox::config::fuzz_check(&data);
        let text = String::from_utf8_lossy(&data);
        loaded += roombox::config::load_str(&text, &Default::default()).is_ok() as u32;
    }
    assert!(loaded >= 2, "the example and a small config load, so the check reaches the round trip");
}

fn kid_of(token: &str) -> Option<String> {
    use base64::Engine as _;
    let head = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).ok()?;
    serde_json::from_slice::<Value>(&json).ok()?["kid"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn the_signing_key_rotates_without_downtime_and_the_old_key_retires() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let d = start_with(config(&data), dir).await;
    let before = d.login_admin().await;
    let old_access = before["access_token"].as_str().unwrap().to_owned();
    let old_kid = kid_of(&old_access).expect("tokens name their key");
    let old_key = std::fs::read(data.join(roombox::auth::KEY_FILE)).unwrap();

    // Only a box admin may rotate.
    let r = d.client.post(d.url("/api/v1/auth/rotate-key")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = d.client.post(d.url("/api/v1/auth/rotate-key")).bearer_auth(&old_access).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let rot: Value = r.json().await.unwrap();
    assert_eq!(rot["previous_kid"], old_kid.as_str());
    let new_kid = rot["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let until = rot["previous_valid_until"].as_u64().unwrap();
    assert!(until >= roombox::auth::unix_now() + 900, "the old key outlives the tokens it signed");

    // No downtime: the token signed before the rotation still works, in the API and signaling.
    assert_eq!(d.get("/api/v1/rooms", Some(&old_access)).await.status(), 200);
    let r = d
        .client
        .post(d.url("/whip/demo"))
        .bearer_auth(&old_access)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 401, "signaling takes the old key's token");
    // New tokens come from the new key.
    let r = d
        .post_json(
            "/api/v1/auth/refresh",
            None,
            serde_json::json!({"refresh_token": before["refresh_token"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let new_access = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid_of(&new_access).as_deref(), Some(new_kid.as_str()));
    assert_eq!(d.get("/api/v1/rooms", Some(&new_access)).await.status(), 200);

    // Both key files are private; the key file holds the new key.
    for f in [roombox::auth::KEY_FILE, roombox::auth::PREVIOUS_KEY_FILE] {
        let mode = std::fs::metadata(data.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert_ne!(std::fs::read(data.join(roombox::auth::KEY_FILE)).unwrap(), old_key);

    // The old key cannot mint tokens that outlive it: one expiring after `until` is refused.
    let old_secret = hex::decode(String::from_utf8(old_key).unwrap().trim()).unwrap();
    let now = roombox::auth::unix_now();
    let mut c = Claims::new("admin", "*", Grants { admin: true, ..Grants::default() }, now, until - now + 60);
    c.iss = Some(roombox::auth::ISSUER.into());
    let forged = sign_hs256(&c, &old_secret).unwrap();
    assert_eq!(d.get("/api/v1/rooms", Some(&forged)).await.status(), 401);
    d.running.shutdown().await;

    // After a restart the old key's tokens still verify (the retired key is on disk).
    let dir2 = tempfile::tempdir().unwrap();
    let d = start_with(config(&data), dir2).await;
    assert_eq!(d.get("/api/v1/rooms", Some(&old_access)).await.status(), 200);
    assert_eq!(d.get("/api/v1/rooms", Some(&new_access)).await.status(), 200);
    d.running.shutdown().await;
}
