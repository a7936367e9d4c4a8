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
    let fleet_table = format!(
        "[cloud.fleet]\nbroker = \"{}\"\ndevice_id = \"box-1\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         authority_key_file = \"{}\"\ntelemetry_interval = 1\nkeep_alive = 5\n",
        broker.addr(),
        files.ca.display(),
        files.cert.display(),
        files.key.display(),
        authority.display()
    );
    let config = format!(
        "data_dir = \"{}\"\nroom = \"demo\"\nserver_id = \"box-1\"\n[http]\nlisten = \"127.0.0.1:{http}\"\ntls = false\n\
         [sfu]\nudp_bind = \"127.0.0.1:0\"\ntcp_bind = \"127.0.0.1:0\"\ninclude_loopback = true\n[media]\nenabled = false\n{fleet_table}",
        data.display()
    );
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
    // A good one is written (it takes effect at the next start).
    let good = config.replace("room = \"demo\"", "room = \"board-room\"");
    let payload = serde_json::json!({"version": "v2", "config": good}).to_string();
    operator.publish("roombox/box-1/config/desired", payload, true).await;
    let rep = operator
        .wait_for(20, "report v2", |m| {
            m.topic == "roombox/box-1/config/reported" && m.json()["version"] == "v2"
        })
        .await
        .json();
    assert_eq!(rep["status"], "applied", "{rep}");
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), good);

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
    assert_eq!(f["config_version"], "v2");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in
        ["roombox_fleet_link_up 1", "roombox_fleet_commands_refused_total{reason=\"bad_signature\"} 1"]
    {
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
