//! The daemon over real HTTPS: health, metrics, web files, the REST API, and
//! every kind of bad input the issue lists.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{error_code, start};
use serde_json::{Value, json};
use sfu_core::auth::{Claims, Grants, sign_hs256};

fn key(d: &common::TestDaemon) -> Vec<u8> {
    roombox::auth::load_or_create_key(&d.data_dir()).unwrap()
}

fn token(d: &common::TestDaemon, claims: &Claims) -> String {
    sign_hs256(claims, &key(d)).unwrap()
}

fn now() -> u64 {
    roombox::auth::unix_now()
}

fn room_admin(room: &str) -> Claims {
    Claims::new(
        "alice",
        room,
        Grants { publish: true, subscribe: true, record: false, admin: true },
        now(),
        900,
    )
}

#[tokio::test]
async fn health_readiness_and_the_web_client_are_served_over_https() {
    let d = start().await;
    let r = d.get("/healthz", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "alive");

    // Without the SFU merged in this build, readiness says exactly what is missing.
    let r = d.get("/readyz", None).await;
    let code = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["store"], true, "{v}");
    assert_eq!(code == 200, v["ready"] == true, "{v}");

    let r = d.get("/", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(r.text().await.unwrap().contains("<title>roombox</title>"));
    let r = d.client.get(d.url("/")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304, "revalidation with the ETag");
    for page in ["/display", "/admin"] {
        assert_eq!(d.get(page, None).await.status(), 200, "{page}");
    }
    let r = d.client.head(d.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    d.running.shutdown().await;
}

#[tokio::test]
async fn path_tricks_reach_no_file() {
    let d = start().await;
    for p in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/..%2f..%2fetc/passwd",
        "//etc/passwd",
        "/web/index.html",
        "/src/main.rs",
        "/index.html%00.js",
        "/.%2e/.%2e/etc/passwd",
        "/jwt.key",
        "/roombox.db",
    ] {
        let r = d.client.get(format!("{}{p}", d.base)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{p}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("[package]") && !body.contains("root:"), "{p} leaked: {body}");
    }
    // API paths: names are validated before they reach the store or the SFU.
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap();
    for p in ["/api/v1/rooms/..%2f..%2fetc", "/api/v1/rooms/a%00b", "/api/v1/rooms/a%20b/participants"] {
        let r = d.get(p, Some(t)).await;
        assert_eq!(r.status(), 400, "{p}");
        assert_eq!(error_code(r).await, "bad_room_name", "{p}");
    }
    let r = d.get("/api/v1/nope", Some(t)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "not_found");
    d.running.shutdown().await;
}

#[tokio::test]
async fn malformed_json_wrong_content_type_and_oversized_bodies_get_json_errors() {
    let d = start().await;
    let login = d.url("/api/v1/auth/login");
    let r = d
        .client
        .post(&login)
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "bad_json");

    let r = d.client.post(&login).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(error_code(r).await, "unsupported_media_type");

    let r = d.client.post(&login).json(&json!({"username": 5, "password": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await, "invalid_body");

    let r = d
        .client
        .post(&login)
        .json(&json!({"username": "a", "password": "b", "extra": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "unknown fields are refused");

    let big = "x".repeat(200 * 1024);
    let r = d.client.post(&login).json(&json!({"username": big, "password": "b"})).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "body_too_large");

    let r = d.client.delete(d.url("/api/v1/auth/login")).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // The daemon is still alive and answers.
    assert_eq!(d.get("/healthz", None).await.status(), 200);
    d.running.shutdown().await;
}

#[tokio::test]
async fn login_refresh_rotation_reuse_and_logout() {
    let d = start().await;
    let pair = d.login_admin().await;
    assert_eq!(pair["room"], "*");
    assert_eq!(pair["expires_in"], 900);
    assert_eq!(pair["refresh_expires_in"], 7 * 24 * 3600);
    let access = pair["access_token"].as_str().unwrap();
    assert_eq!(d.get("/api/v1/rooms", Some(access)).await.status(), 200);

    // Rotation: the refresh token gives a new pair once.
    let r1 = pair["refresh_token"].as_str().unwrap().to_owned();
    let r = d.post_json("/api/v1/auth/refresh", None, json!({"refresh_token": r1})).await;
    assert_eq!(r.status(), 200);
    let pair2: Value = r.json().await.unwrap();
    let r2 = pair2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);

    // Reuse of the spent token: refused, and the whole family (r2 too) is revoked.
    let r = d.post_json("/api/v1/auth/refresh", None, json!({"refresh_token": r1})).await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "refresh_token_reused");
    let r = d.post_json("/api/v1/auth/refresh", None, json!({"refresh_token": r2})).await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "invalid_refresh_token");

    // Logout revokes the session's refresh token.
    let p3 = d.login_admin().await;
    let r3 = p3["refresh_token"].as_str().unwrap();
    assert_eq!(d.post_json("/api/v1/auth/logout", None, json!({"refresh_token": r3})).await.status(), 204);
    assert_eq!(d.post_json("/api/v1/auth/refresh", None, json!({"refresh_token": r3})).await.status(), 401);

    // Junk refresh tokens are plain 401s.
    for junk in ["", "rbr_", "rbr_AAAA", "not-a-token"] {
        assert_eq!(
            d.post_json("/api/v1/auth/refresh", None, json!({"refresh_token": junk})).await.status(),
            401
        );
    }
    d.running.shutdown().await;
}

#[tokio::test]
async fn revoking_a_user_refuses_its_access_and_refresh_tokens() {
    let d = start().await;
    let pair = d.login_admin().await;
    let old_access = pair["access_token"].as_str().unwrap().to_owned();
    let old_refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    // An independent admin session does the revoking, then is itself revoked.
    let r = d.post_json("/api/v1/users/admin/revoke", Some(&old_access), json!({})).await;
    assert_eq!(r.status(), 204);
    let r = d.get("/api/v1/rooms", Some(&old_access)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "token_revoked");
    assert_eq!(
        d.post_json("/api/v1/auth/refresh", None, json!({"refresh_token": old_refresh})).await.status(),
        401
    );
    // A new login works and carries the new version.
    let fresh = d.login_admin().await;
    assert_eq!(d.get("/api/v1/rooms", fresh["access_token"].as_str()).await.status(), 200);
    let r = d.post_json("/api/v1/users/nobody/revoke", fresh["access_token"].as_str(), json!({})).await;
    assert_eq!(r.status(), 404);
    d.running.shutdown().await;
}

#[tokio::test]
async fn brute_force_logins_are_rate_limited_with_retry_after() {
    let d = start().await;
    let mut codes = Vec::new();
    for _ in 0..7 {
        let r = d
            .post_json("/api/v1/auth/login", None, json!({"username": "admin", "password": "guess-guess"}))
            .await;
        let status = r.status().as_u16();
        if status == 429 {
            let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry > 0 && retry <= 15 * 60, "{retry}");
            assert_eq!(error_code(r).await, "rate_limited");
        }
        codes.push(status);
    }
    assert_eq!(codes, vec![401, 401, 401, 401, 401, 429, 429], "5 failures per user, then locked");
    // Even the right password is refused while locked.
    let r = d
        .post_json("/api/v1/auth/login", None, json!({"username": "admin", "password": d.admin_password()}))
        .await;
    assert_eq!(r.status(), 429);
    // Unknown users fail the same way (no user enumeration).
    let r = d
        .post_json("/api/v1/auth/login", None, json!({"username": "ghost", "password": "guess-guess"}))
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "bad_credentials");
    let m = d.get("/metrics", None).await.text().await.unwrap();
    assert!(m.contains("roombox_logins_total{outcome=\"rate_limited\"} 3"), "{m}");
    d.running.shutdown().await;
}

#[tokio::test]
async fn expired_tampered_alg_none_wrong_room_and_garbage_tokens_are_refused() {
    let d = start().await;
    let path = "/api/v1/rooms/demo";
    let good = room_admin("demo");
    assert_eq!(d.get(path, Some(&token(&d, &good))).await.status(), 200);

    let mut expired = good.clone();
    expired.iat = now() - 7200;
    expired.exp = now() - 3600;
    let r = d.get(path, Some(&token(&d, &expired))).await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "token_expired");

    let t = token(&d, &good);
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    let mut evil = good.clone();
    evil.room = "*".into();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
    let r = d.get("/api/v1/rooms", Some(&parts.join("."))).await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "invalid_token");

    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
    let r = d.get("/api/v1/rooms", Some(&format!("{header}.{payload}."))).await;
    assert_eq!(r.status(), 401, "alg none");

    let r = d.get("/api/v1/rooms/boardroom", Some(&token(&d, &good))).await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "wrong_room");

    let other_key = b"an-entirely-different-secret-key-0123456789";
    let r = d.get(path, Some(&sign_hs256(&good, other_key).unwrap())).await;
    assert_eq!(r.status(), 401, "signed by another box");

    for junk in ["", "abc", "a.b.c", "Basic Zm9vOmJhcg=="] {
        let r =
            d.client.get(d.url(path)).header("authorization", format!("Bearer {junk}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{junk:?}");
    }
    let r = d.client.get(d.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");

    // A participant token is not an admin token.
    let guest = Claims::new(
        "bob",
        "demo",
        Grants { publish: true, subscribe: true, ..Grants::default() },
        now(),
        900,
    );
    let r = d
        .post_json("/api/v1/tokens", Some(&token(&d, &guest)), json!({"room": "demo", "identity": "eve"}))
        .await;
    assert_eq!(r.status(), 403);
    d.running.shutdown().await;
}

#[tokio::test]
async fn tokens_rooms_meetings_device_and_openapi() {
    let d = start().await;
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap();

    let r = d
        .post_json("/api/v1/rooms", Some(t), json!({"name": "boardroom", "display_name": "Board room"}))
        .await;
    assert_eq!(r.status(), 201);
    let r = d.post_json("/api/v1/rooms", Some(t), json!({"name": "boardroom"})).await;
    assert_eq!(r.status(), 409);
    let rooms: Value = d.get("/api/v1/rooms", Some(t)).await.json().await.unwrap();
    let names: Vec<&str> = rooms.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["boardroom", "demo"]);

    // Issue a participant token and use it.
    let r = d
        .post_json(
            "/api/v1/tokens",
            Some(t),
            json!({"room": "boardroom", "identity": "carol", "grants": {"publish": true, "subscribe": true}, "ttl_secs": 600}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let issued: Value = r.json().await.unwrap();
    let carol = issued["token"].as_str().unwrap();
    let claims = roombox::auth::Auth::new(&d.data_dir(), Default::default(), d.running.state.store.clone())
        .await
        .unwrap()
        .verify(carol, now())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.room.as_str(), claims.exp - claims.iat),
        ("carol", "boardroom", 600)
    );
    assert!(claims.grants.publish && !claims.grants.admin);
    let r = d.get("/api/v1/rooms", Some(carol)).await;
    let visible: Value = r.json().await.unwrap();
    assert_eq!(visible.as_array().unwrap().len(), 1, "a participant sees only its room");
    let r = d
        .post_json("/api/v1/tokens", Some(t), json!({"room": "demo", "identity": "x", "ttl_secs": 999999999}))
        .await;
    assert_eq!(r.status(), 400);

    // Invite exchange: unique guest identities from one link.
    let invite = Claims::new(
        "invite",
        "demo",
        Grants { publish: true, subscribe: true, ..Grants::default() },
        now(),
        3600,
    );
    let inv = token(&d, &invite);
    let a: Value = d
        .post_json("/api/v1/rooms/demo/join", Some(&inv), json!({"name": "Ann"}))
        .await
        .json()
        .await
        .unwrap();
    let b: Value = d.post_json("/api/v1/rooms/demo/join", Some(&inv), json!({})).await.json().await.unwrap();
    assert_ne!(a["identity"], b["identity"]);
    assert!(a["identity"].as_str().unwrap().starts_with("guest-"));
    let renew: Value = d
        .post_json("/api/v1/rooms/demo/join", Some(&inv), json!({"identity": a["identity"]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renew["identity"], a["identity"]);
    let r = d.post_json("/api/v1/rooms/demo/join", Some(a["token"].as_str().unwrap()), json!({})).await;
    assert_eq!(r.status(), 403, "a guest token is not an invite");

    // Participants need the SFU; without it, a clear 503.
    let r = d.get("/api/v1/rooms/demo/participants", Some(t)).await;
    if r.status() == 503 {
        assert_eq!(error_code(r).await, "sfu_unavailable");
    } else {
        assert_eq!(r.status(), 200);
    }

    // Device state: readable in the box's room, writable by its admins.
    let dev: Value = d.get("/api/v1/device", Some(t)).await.json().await.unwrap();
    assert_eq!(dev["mic_muted"], false);
    let r = d
        .client
        .patch(d.url("/api/v1/device"))
        .bearer_auth(t)
        .json(&json!({"mic_muted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dev: Value = d.get("/api/v1/device", Some(t)).await.json().await.unwrap();
    assert_eq!((dev["mic_muted"].as_bool(), dev["camera_off"].as_bool()), (Some(true), Some(false)));
    let guest = Claims::new("g", "demo", Grants { subscribe: true, ..Grants::default() }, now(), 900);
    let r = d
        .client
        .patch(d.url("/api/v1/device"))
        .bearer_auth(token(&d, &guest))
        .json(&json!({"camera_off": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let meetings = d.get("/api/v1/meetings", Some(t)).await;
    assert_eq!(meetings.status(), 200);
    let audit: Value = d.get("/api/v1/audit", Some(t)).await.json().await.unwrap();
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(
        actions.contains(&"room_created") && actions.contains(&"token_issued") && actions.contains(&"login")
    );

    let st: Value = d.get("/api/v1/status", Some(t)).await.json().await.unwrap();
    assert_eq!((st["server_id"].as_str(), st["store"].as_bool()), (Some("box-1"), Some(true)), "{st}");
    assert_eq!(st["device"]["mic_muted"], true);
    assert_eq!(d.get("/api/v1/status", Some(carol)).await.status(), 403);

    let spec: Value = d.get("/api/v1/openapi.json", None).await.json().await.unwrap();
    assert!(spec["paths"]["/api/v1/rooms/{room}/participants/{identity}/kick"]["post"].is_object());
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    d.running.shutdown().await;
}

#[tokio::test]
async fn password_change_revokes_old_sessions_and_removes_the_first_boot_file() {
    let d = start().await;
    let pair = d.login_admin().await;
    let t = pair["access_token"].as_str().unwrap();
    let old = d.admin_password();
    let r = d
        .post_json("/api/v1/auth/password", Some(t), json!({"old_password": old, "new_password": "short"}))
        .await;
    assert_eq!(r.status(), 400);
    let r = d
        .post_json(
            "/api/v1/auth/password",
            Some(t),
            json!({"old_password": old, "new_password": "a much longer secret"}),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert!(!d.data_dir().join("initial-admin-password").exists());
    assert_eq!(d.get("/api/v1/rooms", Some(t)).await.status(), 401, "old session revoked");
    let r = d
        .post_json(
            "/api/v1/auth/login",
            None,
            json!({"username": "admin", "password": "a much longer secret"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    d.running.shutdown().await;
}

#[test]
fn docs_openapi_json_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let generated = roombox::http::api::openapi_json_text();
    if std::env::var_os("ROOMBOX_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run `ROOMBOX_BLESS=1 cargo test -p firmware-app --test http_api docs_openapi` \
         (or `roomboxd openapi > docs/openapi.json`)"
    );
}

#[tokio::test]
async fn plain_http_redirects_to_https_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.http.redirect_listen = Some("127.0.0.1:0".parse().unwrap());
    let d = common::start_with(cfg, dir).await;
    let plain = d.running.redirect_addr.expect("redirect listener");
    let client =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap();
    let r = client.get(format!("http://{plain}/admin?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("https://127.0.0.1:{}/admin?x=1", d.running.addr.port()));
    // A hostile Host header does not become the redirect target.
    let r =
        client.get(format!("http://{plain}/")).header("host", "evil.example/<script>").send().await.unwrap();
    assert_eq!(r.status(), 400);
    d.running.shutdown().await;
}

/// The plain-HTTP redirect listener is as hardened as the main one: security
/// headers (no HSTS over plain HTTP), a clean 413 for a 10 MB body, a body
/// under the limit drained so the 308 arrives, and the header-read timeout.
#[tokio::test]
async fn the_redirect_listener_has_the_main_listeners_headers_body_limit_and_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.http.redirect_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.http.header_read_timeout = std::time::Duration::from_secs(1);
    let limit = cfg.http.max_body_bytes;
    let d = common::start_with(cfg, dir).await;
    let plain = d.running.redirect_addr.expect("redirect listener");
    let client =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap();
    let r = client.get(format!("http://{plain}/")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    let h = r.headers();
    assert_eq!(h["content-security-policy"], sfu_core::httpguard::CSP);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain HTTP");

    let r = client.post(format!("http://{plain}/whip/demo")).body(vec![b'v'; 10 << 20]).send().await.unwrap();
    assert_eq!(r.status(), 413, "10 MB: a clean 413");
    assert_eq!(r.headers()["content-security-policy"], sfu_core::httpguard::CSP);
    let r = client.post(format!("http://{plain}/whip/demo")).body(vec![b'v'; limit / 2]).send().await.unwrap();
    assert_eq!(r.status(), 308, "under the limit: redirected");

    // slowloris: half a request, then nothing; cut off after the header timeout
    let mut slow = tokio::net::TcpStream::connect(plain).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(8), slow.read(&mut buf))
        .await
        .expect("the listener closes a slow client")
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "closed (or a 408): {head:?}");
    assert!(t0.elapsed() >= std::time::Duration::from_millis(800), "not before the timeout: {:?}", t0.elapsed());
    d.running.shutdown().await;
}

#[tokio::test]
async fn a_full_database_gives_507_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.store.max_size_mib = 1;
    let d = common::start_with(cfg, dir).await;
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap();
    assert_eq!(d.post_json("/api/v1/rooms", Some(t), json!({"name": "before"})).await.status(), 201);
    // Fill the database to its cap: big rows, then ever smaller ones for the last free bytes.
    let store = d.running.state.store.clone();
    let mut filled = 0;
    for size in [4000usize, 500, 50, 0] {
        loop {
            let r = store
                .call(move |c| roombox::store::q::audit(c, 0, "f", "f", None, Some(&"f".repeat(size)), None))
                .await;
            match r {
                Ok(_) => filled += 1,
                Err(roombox::store::StoreError::Full) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(filled < 100_000);
        }
    }
    let r = d.post_json("/api/v1/rooms", Some(t), json!({"name": "after"})).await;
    assert_eq!(r.status(), 507);
    assert_eq!(error_code(r).await, "storage_full");
    // Alive, and nothing stored before is lost.
    assert_eq!(d.get("/healthz", None).await.status(), 200);
    let rooms: Value = d.get("/api/v1/rooms", Some(t)).await.json().await.unwrap();
    let names: Vec<&str> = rooms.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["before", "demo"]);
    d.running.shutdown().await;
}
