//! Secrets never reach the logs: the daemon runs a full scenario — first
//! boot, a failed and a good login, tokens issued, a refresh, an invite
//! exchanged for a join token, signaling with the token, the join link opened,
//! a password change, logout — with every crate logging at debug (roombox and
//! sfu-core at trace), and the captured log is searched for the admin
//! passwords, the refresh tokens and anything shaped like a JWT.

mod common;

use std::io::Write;
use std::sync::Mutex;

use common::{config, start_with};
use serde_json::{Value, json};

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every `eyJ….eyJ….…` run in `text` (a JWT's base64url header and payload start with `{"`).
fn jwts_in(text: &str) -> Vec<String> {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("eyJ") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_b64(c) && c != '.').unwrap_or(tail.len());
        let cand = &tail[..end];
        if cand.split('.').count() >= 2 && cand.contains(".eyJ") {
            found.push(cand.to_owned());
        }
        rest = &tail[3..];
    }
    found
}

#[test]
fn the_jwt_finder_finds_jwts() {
    let t = "x eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln y";
    assert_eq!(jwts_in(t), vec!["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"]);
    assert!(jwts_in("eyJ alone, eyJhbGci without a payload").is_empty());
}

#[tokio::test]
async fn no_password_or_token_is_logged_in_a_full_scenario_at_debug_level() {
    let filter = tracing_subscriber::EnvFilter::new("debug,roombox=trace,sfu_core=trace");
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Capture)
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber of this test binary");

    let dir = tempfile::tempdir().unwrap();
    let d = start_with(config(dir.path()), dir).await;
    let password = d.admin_password();
    let mut secrets: Vec<String> = vec![password.clone()];

    // A failed login, then a good one.
    let r = d
        .post_json("/api/v1/auth/login", None, json!({"username": "admin", "password": "wrong-password-1"}))
        .await;
    assert_eq!(r.status(), 401);
    secrets.push("wrong-password-1".into());
    let pair = d.login_admin().await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(refresh.clone());

    // An admin issues an invite token, which is exchanged for a join token.
    let r = d
        .post_json(
            "/api/v1/tokens",
            Some(&access),
            json!({"room": "demo", "identity": "invite", "grants": {"publish": true, "subscribe": true}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let invite = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let r = d.post_json("/api/v1/rooms/demo/join", Some(&invite), json!({"name": "Bob"})).await;
    assert_eq!(r.status(), 200);
    let join = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();

    // Signaling with the token (a refused offer), the join link, a bad token.
    let r = d
        .client
        .post(d.url("/whip/demo"))
        .bearer_auth(&join)
        .header("content-type", "application/sdp")
        .body("v=0\r\nnot an offer\r\n")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(d.get(&format!("/?room=demo&token={invite}"), None).await.status(), 200);
    let forged = format!("{}x", &join[..join.len() - 1]);
    assert_eq!(d.get("/api/v1/rooms", Some(&forged)).await.status(), 401);

    // Refresh (rotates the refresh token), then reuse the old one (revokes the family).
    let r = d.post_json("/api/v1/auth/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(r.status(), 200);
    let pair2: Value = r.json().await.unwrap();
    let access2 = pair2["access_token"].as_str().unwrap().to_owned();
    secrets.push(pair2["refresh_token"].as_str().unwrap().to_owned());

    // A password change, and logout.
    let r = d
        .post_json(
            "/api/v1/auth/password",
            Some(&access2),
            json!({"old_password": password, "new_password": "a-new-secret-passphrase"}),
        )
        .await;
    assert!(r.status().is_success(), "password change: {}", r.status());
    secrets.push("a-new-secret-passphrase".into());
    // The first refresh token again: a replay, refused.
    let r = d.post_json("/api/v1/auth/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(r.status(), 401);
    let _ = d.post_json("/api/v1/auth/logout", Some(&access2), json!({"refresh_token": refresh})).await;
    d.running.shutdown().await;

    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).to_string();
    assert!(log.contains("DEBUG") && log.lines().count() > 20, "the log was captured:\n{log}");
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret ({}…) is in the log", &s[..4]);
    }
    let jwts = jwts_in(&log);
    assert!(jwts.is_empty(), "JWTs in the log: {jwts:?}");
    let key = std::fs::read_to_string(d.dir.path().join(roombox::auth::KEY_FILE)).unwrap();
    assert!(!log.contains(key.trim()), "the signing key is in the log");
}
