//! The `roomboxd` binary: check-config, token, db backup, passwd, and the demo
//! (starts, prints its URL and join link, serves over HTTPS, stops on SIGTERM).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_roomboxd");

#[test]
fn check_config_prints_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("roombox.toml");
    std::fs::write(&f, "region = \"hq\"\n[http]\nlistne = \"0.0.0.0:443\"\n[auth]\naccess_ttl = \"5h\"\n[sfu.limits]\nmax_rooms = 0\n").unwrap();
    let out = Command::new(BIN).args(["check-config"]).arg(&f).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(":line 3: ") && text.contains("listne"), "{text}");
    assert!(text.contains(":line 5: auth.access_ttl"), "{text}");
    assert!(text.contains(":line 7: sfu.limits.max_rooms"), "{text}");
    assert!(text.contains("3 problem(s)"), "{text}");

    std::fs::write(&f, "region = \"hq\"\n").unwrap();
    let out = Command::new(BIN).args(["check-config"]).arg(&f).output().unwrap();
    assert!(out.status.success());

    // `run` refuses the same broken file with the same messages, before touching anything.
    std::fs::write(&f, "[htpp]\n").unwrap();
    let out = Command::new(BIN).args(["run", "--config"]).arg(&f).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_documented_example_config_checks_clean() {
    let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/roombox.example.toml");
    let out = Command::new(BIN).args(["check-config"]).arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

struct Demo {
    child: std::process::Child,
    url: String,
    join: String,
    admin_password: Option<String>,
    dir: tempfile::TempDir,
}

fn start_demo() -> Demo {
    start_demo_in(tempfile::tempdir().unwrap())
}

fn start_demo_in(dir: tempfile::TempDir) -> Demo {
    let mut child = Command::new(BIN)
        .args(["demo", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut join, mut admin) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("Ctrl-C stops the demo") {
            break;
        }
        if let Some(u) = line.strip_prefix("Open:") {
            url = Some(u.trim().trim_end_matches('/').to_owned());
        }
        if let Some(j) = line.strip_prefix("Join link:") {
            join = Some(j.trim().to_owned());
        }
        if let Some(a) = line.strip_prefix("Admin:") {
            admin = a.split("password ").nth(1).and_then(|s| s.split_whitespace().next()).map(str::to_owned);
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Demo {
        child,
        url: url.expect("demo prints Open: URL"),
        join: join.expect("demo prints Join link:"),
        admin_password: admin,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_its_links_serves_https_and_stops_cleanly_on_sigterm() {
    let mut demo = tokio::task::spawn_blocking(start_demo).await.unwrap();
    assert!(demo.url.starts_with("https://127.0.0.1:"), "{}", demo.url);
    assert!(demo.join.starts_with(&format!("{}/#room=demo&token=", demo.url)), "{}", demo.join);
    let pem = std::fs::read(demo.dir.path().join("tls/cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let get = |p: &str| client.get(format!("{}{p}", demo.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let page = get("/").await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("roombox"));
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("active_meetings_total{region=\"demo\""), "{metrics}");
    assert!(metrics.contains("# TYPE meeting_participants_duration histogram"));
    assert_eq!(get("/api/v1/openapi.json").await.unwrap().status(), 200);

    // The join link's token is an invite: it buys a personal guest token.
    let invite = demo.join.split("token=").nth(1).unwrap();
    let r = client
        .post(format!("{}/api/v1/rooms/demo/join", demo.url))
        .bearer_auth(invite)
        .json(&serde_json::json!({"name": "Tester"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    assert!(j["identity"].as_str().unwrap().starts_with("guest-"));

    let r = client
        .post(format!("{}/api/v1/auth/login", demo.url))
        .json(&serde_json::json!({"username": "admin", "password": demo.admin_password.clone().expect("printed on first boot")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the printed admin password works");

    // `roomboxd token` signs with the same data dir's key; the demo accepts it.
    let out = Command::new(BIN)
        .args(["token", "--room", "demo", "--identity", "scripted", "--admin", "--ttl", "2m", "--data-dir"])
        .arg(demo.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(tok.split('.').count(), 3);
    let r = client.get(format!("{}/api/v1/rooms/demo", demo.url)).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("{}/api/v1/rooms/other", demo.url)).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 403);

    // A backup while the demo runs.
    let backup = demo.dir.path().join("backup.db");
    let out = Command::new(BIN)
        .args(["db", "backup"])
        .arg(&backup)
        .arg("--data-dir")
        .arg(demo.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c = rusqlite::Connection::open(&backup).unwrap();
    let users: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)).unwrap();
    assert_eq!(users, 1);

    // SIGTERM: a clean, prompt exit.
    unsafe {
        libc::kill(demo.child.id() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || demo.child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let db = demo.dir.path().join("roombox.db");
    let wal = std::fs::metadata(db.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "checkpointed at shutdown");
}

#[test]
fn token_refuses_a_missing_key_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["token", "--room", "demo", "--identity", "x", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("jwt.key"));
    let out = Command::new(BIN)
        .args(["token", "--room", "../etc", "--identity", "x", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn passwd_sets_a_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["passwd", "--user", "operator", "--role", "member", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse battery\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c = rusqlite::Connection::open(dir.path().join("roombox.db")).unwrap();
    let (role, hash): (String, String) = c
        .query_row("SELECT role, password_hash FROM users WHERE username = 'operator'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(role, "member");
    assert!(hash.starts_with("$argon2id$"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_daemon_loses_nothing_and_the_next_start_reuses_its_state() {
    let mut demo = tokio::task::spawn_blocking(start_demo).await.unwrap();
    let password = demo.admin_password.clone().expect("first boot prints the password");
    let pem = std::fs::read(demo.dir.path().join("tls/cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let login = |url: String| {
        let c = client.clone();
        let p = password.clone();
        async move {
            let r = c
                .post(format!("{url}/api/v1/auth/login"))
                .json(&serde_json::json!({"username": "admin", "password": p}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let pair = login(demo.url.clone()).await;
    let t = pair["access_token"].as_str().unwrap().to_owned();
    for i in 0..20 {
        let r = client
            .post(format!("{}/api/v1/rooms", demo.url))
            .bearer_auth(&t)
            .json(&serde_json::json!({"name": format!("room-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "acknowledged");
    }
    unsafe {
        libc::kill(demo.child.id() as i32, libc::SIGKILL);
    }
    let dir = tokio::task::spawn_blocking(move || {
        demo.child.wait().unwrap();
        demo.dir
    })
    .await
    .unwrap();

    let mut again = tokio::task::spawn_blocking(move || start_demo_in(dir)).await.unwrap();
    assert_eq!(again.admin_password, None, "not a first boot any more");
    assert_eq!(std::fs::read(again.dir.path().join("tls/cert.pem")).unwrap(), pem, "same certificate");
    // Same key: the access token from before the crash still verifies.
    let rooms: serde_json::Value = client
        .get(format!("{}/api/v1/rooms", again.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n =
        rooms.as_array().unwrap().iter().filter(|r| r["name"].as_str().unwrap().starts_with("room-")).count();
    assert_eq!(n, 20, "every acknowledged room survived kill -9");
    // The refresh token issued before the crash still rotates.
    let r = client
        .post(format!("{}/api/v1/auth/refresh", again.url))
        .json(&serde_json::json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    unsafe {
        libc::kill(again.child.id() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || again.child.wait().unwrap()).await.unwrap();
    assert!(status.success());
}
