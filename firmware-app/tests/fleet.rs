//! roomboxd's fleet link end to end: the real daemon binary against a real
//! Mosquitto (TLS client certificates, pattern ACL) started by the test; signed
//! commands onto the device, refusals, desired config through the config file's
//! own validation, the admin API and metrics, and the last will on `kill -9`.

#[path = "../../cloud-bridge/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};

use cloud_bridge::AuthorityAlgorithm;
use cloud_bridge::fleet::command::{CommandClaims, Signer, generate_authority_key};
use support::{Broker, OPERATOR, Pki, TestClient};

const BIN: &str = env!("CARGO_BIN_EXE_roomboxd");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The box's config file: HTTP on `http`, no media, the fleet link to `broker`
/// as device box-1 (`fleet_extra`: more `[cloud.fleet]` lines).
fn box_config(
    data: &std::path::Path,
    http: u16,
    broker: &Broker,
    files: &support::ClientFiles,
    authority: &std::path::Path,
    fleet_extra: &str,
) -> String {
    format!(
        "data_dir = \"{}\"\nroom = \"demo\"\nserver_id = \"box-1\"\n[http]\nlisten = \"127.0.0.1:{http}\"\ntls = false\n\
         [sfu]\nudp_bind = \"127.0.0.1:0\"\ntcp_bind = \"127.0.0.1:0\"\ninclude_loopback = true\n[media]\nenabled = false\n\
         [cloud.fleet]\nbroker = \"{}\"\ndevice_id = \"box-1\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         authority_key_file = \"{}\"\ntelemetry_interval = 1\nkeep_alive = 5\n{fleet_extra}",
        data.display(),
        broker.addr(),
        files.ca.display(),
        files.cert.display(),
        files.key.display(),
        authority.display()
    )
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roomboxd_runs_signed_commands_applies_desired_config_and_leaves_a_last_will_on_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let broker = Broker::start(&pki);
    let files = pki.client("box-1");
    let (private, public) = generate_authority_key(AuthorityAlgorithm::EdDSA).unwrap();
    let authority = dir.path().join("authority.pub.pem");
    std::fs::write(&authority, public).unwrap();
    let signer = Signer::new(private.as_bytes(), AuthorityAlgorithm::EdDSA).unwrap();
    let data = dir.path().join("data");
    let http = free_port();
    let config = box_config(&data, http, &broker, &files, &authority, "");
    let config_path = dir.path().join("roombox.toml");
    std::fs::write(&config_path, &config).unwrap();

    let op = pki.client(OPERATOR);
    let mut operator = TestClient::connect(&broker.addr(), &op, "op").await;
    operator.subscribe("roombox/box-1/#").await;

    let log = std::fs::File::create(dir.path().join("roomboxd.log")).unwrap();
    let daemon = Killed(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info,cloud_bridge=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // Online, retained state from the daemon, telemetry.
    operator.wait_for(60, "online", |m| m.topic == "roombox/box-1/status" && m.text() == "online").await;
    let st = operator.wait_for(20, "state", |m| m.topic == "roombox/box-1/state").await.json();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!((st["room"].as_str(), st["mic_muted"].as_bool()), (Some("demo"), Some(false)));
    assert_eq!(st["cascade"], "not available");
    let t = operator.wait_for(20, "telemetry", |m| m.topic == "roombox/box-1/telemetry").await.json();
    assert_eq!(t["participants"], 0);
    assert!(
        t.get("cpu_percent").is_some() && t.get("temperature_celsius").is_some() && t["errors"].is_u64(),
        "{t}"
    );

    let sign = |id: &str, name: &str, args: serde_json::Value| {
        signer
            .sign(&CommandClaims {
                aud: "box-1".into(),
                sub: Some("box-1".into()),
                jti: id.into(),
                name: name.into(),
                args,
                exp: unix_now() + 120,
                iat: Some(unix_now()),
                iss: None,
            })
            .unwrap()
    };

    // mute, delivered twice: runs once through the Device; the same result twice.
    let mute = sign("m-1", "mute", serde_json::json!({"mic": true}));
    operator.publish("roombox/box-1/cmd/mute", mute.clone(), false).await;
    let r = operator.wait_for(20, "mute result", |m| m.topic == "roombox/box-1/cmd/mute/result").await.json();
    assert_eq!((r["id"].as_str(), r["ok"].as_bool()), (Some("m-1"), Some(true)), "{r}");
    assert_eq!(r["message"], "microphone muted, camera on");
    operator
        .wait_for(20, "muted state", |m| m.topic == "roombox/box-1/state" && m.json()["mic_muted"] == true)
        .await;
    operator.publish("roombox/box-1/cmd/mute", mute, false).await;
    operator.wait_n(20, "the same mute result", 2, |m| m.topic == "roombox/box-1/cmd/mute/result").await;
    let both = operator.seen_on("roombox/box-1/cmd/mute/result");
    assert_eq!(both[0].payload, both[1].payload);
    // The command log is in the daemon's SQLite store.
    let db = rusqlite::Connection::open(data.join("roombox.db")).unwrap();
    let rec = roombox::fleet::stored_record(&db, "m-1").unwrap().expect("the command is in the store");
    assert!(rec.result.is_some_and(|r| r.ok));

    // Recording through the fleet: the same recorder as the REST API.
    for (id, name, want) in [
        ("r-1", "start_recording", "started in room demo"),
        ("r-2", "stop_recording", "in room demo finalized"),
    ] {
        operator
            .publish(&format!("roombox/box-1/cmd/{name}"), sign(id, name, serde_json::Value::Null), false)
            .await;
        let topic = format!("roombox/box-1/cmd/{name}/result");
        let r = operator.wait_for(20, name, |m| m.topic == topic && m.json()["id"] == id).await.json();
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["message"].as_str().unwrap().contains(want), "{r}");
    }
    let recorded: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE actor = 'fleet' AND action LIKE 'recording_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, 2, "start and stop are audited as the fleet's");

    // The commands whose parts are not on this build say so.
    for (id, name, args, want) in [
        ("j-1", "join_meeting", serde_json::json!({"url": "https://x"}), "cascade not available yet"),
        ("b-1", "reboot", serde_json::Value::Null, "reboot is not allowed on this box"),
        (
            "u-1",
            "install_update",
            // The updater (update.rs) fetches first: an unreachable bundle fails with its reason.
            serde_json::json!({"bundle_url": "https://127.0.0.1:9/b.raucb"}),
            "cannot fetch the bundle",
        ),
    ] {
        operator.publish(&format!("roombox/box-1/cmd/{name}"), sign(id, name, args), false).await;
        let topic = format!("roombox/box-1/cmd/{name}/result");
        let r = operator.wait_for(20, name, |m| m.topic == topic && m.json()["id"] == id).await.json();
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["message"].as_str().unwrap().starts_with(want), "{r}");
    }

    // A forged command is refused and reported.
    let (forger, _) = generate_authority_key(AuthorityAlgorithm::EdDSA).unwrap();
    let forged = Signer::new(forger.as_bytes(), AuthorityAlgorithm::EdDSA)
        .unwrap()
        .sign(&CommandClaims {
            aud: "box-1".into(),
            sub: None,
            jti: "evil".into(),
            name: "reboot".into(),
            args: serde_json::Value::Null,
            exp: unix_now() + 60,
            iat: None,
            iss: None,
        })
        .unwrap();
    operator.publish("roombox/box-1/cmd/reboot", forged, false).await;
    operator
        .wait_for(20, "refusal", |m| {
            m.topic == "roombox/box-1/refused" && m.json()["reason"] == "bad_signature"
        })
        .await;

    // Desired config: a bad one is rejected with the config file's own messages, the file kept.
    let bad = format!("bogus = 1\nroom = \"no spaces allowed\"\n{config}");
    let bad = bad.replacen("room = \"demo\"\n", "", 1);
    let payload = serde_json::json!({"version": "v1", "config": bad}).to_string();
    operator.publish("roombox/box-1/config/desired", payload, true).await;
    let rep = operator
        .wait_for(20, "report v1", |m| {
            m.topic == "roombox/box-1/config/reported" && m.json()["version"] == "v1"
        })
        .await
        .json();
    assert_eq!(rep["status"], "rejected", "{rep}");
    let problems: Vec<String> = rep["problems"].as_array().unwrap().iter().map(|p| p.to_string()).collect();
    assert!(problems.iter().any(|p| p.contains("line 1") && p.contains("bogus")), "{problems:?}");
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), config, "the running config is kept");
    // (A good one is applied by a restart: see the next test.)

    // The admin API and the metrics show the link.
    let base = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let password = std::fs::read_to_string(data.join("initial-admin-password")).unwrap();
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": password.trim()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status: serde_json::Value = client
        .get(format!("{base}/api/v1/status"))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let f = &status["fleet"];
    assert_eq!((f["enabled"].as_bool(), f["state"].as_str()), (Some(true), Some("connected")), "{status}");
    assert_eq!(f["refused"]["bad_signature"], 1);
    assert_eq!(f["config_reports"]["rejected"], 1, "{status}");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "roombox_fleet_link_up 1",
        "roombox_fleet_commands_refused_total{reason=\"bad_signature\"} 1",
        "roombox_fleet_config_applies_total{outcome=\"rejected\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in /metrics");
    }
    let msgs_in = metrics
        .lines()
        .find(|l| l.starts_with("roombox_fleet_messages_total{direction=\"in\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!(msgs_in >= 9, "{msgs_in}");

    // kill -9: the broker publishes the last will.
    let pid = daemon.0.id();
    let status = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let killed_at = std::time::Instant::now();
    operator.wait_for(30, "last will", |m| m.topic == "roombox/box-1/status" && m.text() == "offline").await;
    eprintln!("last will seen {:.1} s after kill -9 (keep_alive 5 s)", killed_at.elapsed().as_secs_f64());
    drop(daemon);
}

/// Every notify datagram waiting on `sock`.
fn notifications(sock: &std::os::unix::net::UnixDatagram) -> Vec<String> {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

fn marker_state(config: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(roombox::config_apply::marker_path(config)).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["state"].as_str().map(str::to_owned)
}

async fn answers(port: u16) -> bool {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_config_is_applied_by_a_restart_and_rolled_back_when_it_fails_to_start_or_get_ready() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let broker = Broker::start(&pki);
    let files = pki.client("box-1");
    let (_, public) = generate_authority_key(AuthorityAlgorithm::EdDSA).unwrap();
    let authority = dir.path().join("authority.pub.pem");
    std::fs::write(&authority, public).unwrap();
    let data = dir.path().join("data");
    let http = free_port();
    let config = box_config(&data, http, &broker, &files, &authority, "apply_ready_within = 30\n");
    let config_path = dir.path().join("roombox.toml");
    std::fs::write(&config_path, &config).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();

    let op = pki.client(OPERATOR);
    let mut operator = TestClient::connect(&broker.addr(), &op, "op").await;
    operator.subscribe("roombox/box-1/#").await;
    let spawn = |log: &str| {
        let log = std::fs::File::create(dir.path().join(log)).unwrap();
        Killed(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&config_path)
                .env("RUST_LOG", "info")
                .env("NOTIFY_SOCKET", &notify_path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let mut daemon = spawn("roomboxd.log");
    let pid = daemon.0.id();
    operator.wait_for(60, "online", |m| m.topic == "roombox/box-1/status" && m.text() == "online").await;
    assert!(answers(http).await);
    let _ = notifications(&notify);

    let report = |v: &'static str, status: &'static str| {
        move |m: &support::Msg| {
            m.topic == "roombox/box-1/config/reported"
                && m.json()["version"] == v
                && m.json()["status"] == status
        }
    };

    // 1. A new listen port and room: applied by a restart of the same process.
    let http2 = free_port();
    let v2 = config
        .replace(&format!("127.0.0.1:{http}"), &format!("127.0.0.1:{http2}"))
        .replace("room = \"demo\"", "room = \"board-room\"");
    let published = std::time::Instant::now();
    let payload = serde_json::json!({"version": "v2", "config": v2}).to_string();
    operator.publish("roombox/box-1/config/desired", payload, true).await;
    operator.wait_for(20, "v2 applying", report("v2", "applying")).await;
    let rep = operator.wait_for(60, "v2 applied", report("v2", "applied")).await.json();
    let took = published.elapsed();
    eprintln!("desired config v2: published -> applied reported in {:.2} s", took.as_secs_f64());
    assert!(rep["problems"][0].as_str().unwrap().contains("restarted with it"), "{rep}");
    assert!(daemon.0.try_wait().unwrap().is_none(), "the same process (re-exec, same pid {pid})");
    assert!(answers(http2).await, "the new listen port answers");
    assert!(!answers(http).await, "the old one is closed");
    operator
        .wait_for(20, "state of the new room", |m| {
            m.topic == "roombox/box-1/state" && m.json()["room"] == "board-room"
        })
        .await;
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), v2);
    assert_eq!(marker_state(&config_path), None, "applied: no marker left");
    let told = notifications(&notify);
    let reloading = told.iter().position(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="));
    let ready = told.iter().rposition(|m| m == "READY=1");
    assert!(reloading.is_some() && ready > reloading, "systemd told RELOADING=1 then READY=1: {told:?}");

    // 2. A listen port held by someone else: valid, but roomboxd cannot start with it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let v3 = v2.replace(&format!("127.0.0.1:{http2}"), &format!("127.0.0.1:{held_port}"));
    let payload = serde_json::json!({"version": "v3", "config": v3}).to_string();
    operator.publish("roombox/box-1/config/desired", payload, true).await;
    let rep = operator.wait_for(60, "v3 rolled back", report("v3", "rolled_back")).await.json();
    let why = rep["problems"][0].as_str().unwrap();
    assert!(why.contains("did not start with the new config") && why.contains("in use"), "{rep}");
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), v2, "the previous config is back");
    assert_eq!(marker_state(&config_path), None);
    assert!(answers(http2).await, "running with the previous config again");
    assert!(daemon.0.try_wait().unwrap().is_none());

    // 3. An SFU port held: roomboxd starts but is never ready (/readyz) within apply_ready_within.
    let held_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = held_udp.local_addr().unwrap().port();
    let unready = |within: u32| {
        v2.replace("udp_bind = \"127.0.0.1:0\"", &format!("udp_bind = \"127.0.0.1:{udp_port}\""))
            .replace("apply_ready_within = 30", &format!("apply_ready_within = {within}"))
    };
    let payload = serde_json::json!({"version": "v4", "config": unready(3)}).to_string();
    operator.publish("roombox/box-1/config/desired", payload, true).await;
    let rep = operator.wait_for(60, "v4 rolled back", report("v4", "rolled_back")).await.json();
    assert!(rep["problems"][0].as_str().unwrap().contains("not ready (/readyz) within 3 s"), "{rep}");
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), v2);
    assert!(answers(http2).await);

    // 4. kill -9 during the trial: the next start (systemd's Restart=) rolls it back.
    let payload = serde_json::json!({"version": "v5", "config": unready(30)}).to_string();
    operator.publish("roombox/box-1/config/desired", payload, true).await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while marker_state(&config_path).as_deref() != Some("trial") {
        assert!(std::time::Instant::now() < until, "no trial of v5");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), unready(30), "on trial");
    assert!(Command::new("kill").args(["-9", &daemon.0.id().to_string()]).status().unwrap().success());
    let _ = daemon.0.wait();
    daemon = spawn("roomboxd-2.log");
    let rep = operator.wait_for(60, "v5 rolled back", report("v5", "rolled_back")).await.json();
    assert!(rep["problems"][0].as_str().unwrap().contains("stopped while starting"), "{rep}");
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), v2);
    assert_eq!(marker_state(&config_path), None);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !answers(http2).await {
        assert!(std::time::Instant::now() < until, "the previous config does not answer");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let metrics =
        client.get(format!("http://127.0.0.1:{http2}/metrics")).send().await.unwrap().text().await.unwrap();
    let line = "roombox_fleet_config_applies_total{outcome=\"rolled_back\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{line} not in /metrics");
    drop((held, held_udp));
    drop(daemon);
}
