//! The fleet link against a real Mosquitto with TLS client certificates and a
//! pattern ACL (started by the test). The box side is the real driver and core
//! with a host that records what it is asked to do.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloud_bridge::fleet::command::{CommandClaims, Signer, generate_authority_key};
use cloud_bridge::fleet::driver::{self, Host, LinkTask, Outcome, unix_now};
use cloud_bridge::fleet::{Command, CommandRecord, ConfigReport, ConfigStatus, DesiredConfig};
use cloud_bridge::{AuthorityAlgorithm, FleetConfig};
use support::{Broker, OPERATOR, Pki, TestClient};
use tokio::sync::{Notify, watch};

#[derive(Default)]
struct TestHost {
    runs: Mutex<Vec<Command>>,
    records: Mutex<Vec<CommandRecord>>,
    /// When set, `install_update` waits for it (to finish a command while the broker is away).
    gate: Option<Arc<Notify>>,
    started: Notify,
}

impl Host for TestHost {
    async fn run(&self, cmd: Command) -> Result<Outcome, String> {
        self.runs.lock().unwrap().push(cmd.clone());
        self.started.notify_one();
        if cmd.name == "rotate_certificate" {
            // The test has put new files in place; the link reconnects with them.
            return Ok(Outcome { message: "rotated".into(), reconnect: true });
        }
        if cmd.name == "install_update"
            && let Some(g) = &self.gate
        {
            g.notified().await;
        }
        Ok(Outcome::done(format!("{} done", cmd.name)))
    }

    async fn apply_config(&self, d: DesiredConfig) -> ConfigReport {
        let bad = d.config.contains("bogus");
        ConfigReport {
            version: Some(d.version),
            status: if bad { ConfigStatus::Rejected } else { ConfigStatus::Applied },
            problems: if bad { vec!["line 1: bogus: unknown field".into()] } else { vec![] },
            at: unix_now(),
        }
    }

    async fn persist(&self, rec: CommandRecord) -> Result<(), String> {
        let mut r = self.records.lock().unwrap();
        r.retain(|x| x.id != rec.id);
        r.push(rec);
        Ok(())
    }

    async fn forget(&self, id: String) -> Result<(), String> {
        self.records.lock().unwrap().retain(|x| x.id != id);
        Ok(())
    }

    async fn telemetry(&self) -> serde_json::Value {
        serde_json::json!({"participants": 0, "at": unix_now()})
    }

    async fn state(&self) -> serde_json::Value {
        serde_json::json!({"version": "test", "rooms": ["room"]})
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    broker: Broker,
    signer: Signer,
    cfg: FleetConfig,
}

fn setup(device: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let broker = Broker::start(&pki);
    let files = pki.client(device);
    let (private, public) = generate_authority_key(AuthorityAlgorithm::EdDSA).unwrap();
    let authority = dir.path().join("authority.pub.pem");
    std::fs::write(&authority, public).unwrap();
    let cfg = FleetConfig {
        broker: broker.addr(),
        device_id: device.into(),
        ca_file: files.ca,
        cert_file: files.cert,
        key_file: files.key,
        authority_key_file: authority,
        telemetry_interval: Duration::from_secs(1),
        keep_alive: Duration::from_secs(5),
        ..FleetConfig::default()
    };
    let signer = Signer::new(private.as_bytes(), AuthorityAlgorithm::EdDSA).unwrap();
    Setup { _dir: dir, pki, broker, signer, cfg }
}

fn claims(device: &str, id: &str, name: &str, exp: u64) -> CommandClaims {
    CommandClaims {
        aud: device.into(),
        sub: None,
        jti: id.into(),
        name: name.into(),
        args: serde_json::Value::Null,
        exp,
        iat: None,
        iss: None,
    }
}

fn start_link(s: &Setup, host: Arc<TestHost>) -> (LinkTask, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    (driver::start(&s.cfg, Vec::new(), None, host, rx).unwrap(), tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_read_or_write_another_devices_topics() {
    let s = setup("box-a");
    let op = s.pki.client(OPERATOR);
    let b_files = s.pki.client("box-b");
    let mut operator = TestClient::connect(&s.broker.addr(), &op, "op").await;
    operator.subscribe("roombox/#").await;
    // box-b's retained state, which box-a must not read.
    let b = TestClient::connect(&s.broker.addr(), &b_files, "box-b").await;
    b.publish("roombox/box-b/state", r#"{"secret":1}"#, true).await;
    operator.wait_for(10, "box-b's state", |m| m.topic == "roombox/box-b/state").await;

    let a_files = s.pki.client("box-a");
    let mut a = TestClient::connect(&s.broker.addr(), &a_files, "box-a").await;
    a.subscribe("roombox/box-b/#").await;
    a.subscribe("roombox/+/state").await;
    a.subscribe("roombox/box-a/#").await;
    // Writes to another device's topics are dropped by the broker ...
    a.publish("roombox/box-b/cmd/mute", "forged", false).await;
    a.publish("roombox/box-b/state", r#"{"overwritten":1}"#, true).await;
    a.publish("roombox/other/x", "x", false).await;
    // ... and a write to its own topic after them arrives (same connection, in order).
    a.publish("roombox/box-a/state", r#"{"sentinel":1}"#, true).await;
    operator.wait_for(10, "box-a's sentinel", |m| m.topic == "roombox/box-a/state").await;
    let leaked: Vec<_> = operator
        .seen
        .iter()
        .filter(|m| m.topic != "roombox/box-a/state" && m.topic != "roombox/box-b/state")
        .collect();
    assert!(leaked.is_empty(), "box-a wrote outside its topics: {leaked:?}");
    assert_eq!(operator.seen_on("roombox/box-b/state").len(), 1, "box-b's state was not overwritten");
    // box-a read its own state back but nothing of box-b's.
    a.wait_for(10, "its own state", |m| m.topic == "roombox/box-a/state").await;
    assert!(a.seen.iter().all(|m| m.topic.starts_with("roombox/box-a/")), "box-a read: {:?}", a.seen);
    // box-b's retained state is intact for its owner.
    let mut b2 = TestClient::connect(&s.broker.addr(), &b_files, "box-b-2").await;
    b2.subscribe("roombox/box-b/state").await;
    assert_eq!(
        b2.wait_for(10, "retained state", |m| m.topic == "roombox/box-b/state").await.text(),
        r#"{"secret":1}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_state_signed_commands_refusals_and_desired_config_over_a_real_broker() {
    let s = setup("box-a");
    let op = s.pki.client(OPERATOR);
    let mut operator = TestClient::connect(&s.broker.addr(), &op, "op").await;
    operator.subscribe("roombox/box-a/#").await;
    let host = Arc::new(TestHost::default());
    let (link, stop) = start_link(&s, host.clone());

    operator.wait_for(10, "online", |m| m.topic == "roombox/box-a/status" && m.text() == "online").await;
    let st = operator.wait_for(10, "state", |m| m.topic == "roombox/box-a/state").await;
    assert_eq!(st.json()["rooms"], serde_json::json!(["room"]));
    operator.wait_for(10, "telemetry", |m| m.topic == "roombox/box-a/telemetry").await;

    // A signed command, delivered twice: it runs once, and the same result comes twice.
    let now = unix_now();
    let token = s.signer.sign(&claims("box-a", "cmd-1", "mute", now + 60)).unwrap();
    operator.publish("roombox/box-a/cmd/mute", token.clone(), false).await;
    let r1 = operator.wait_for(10, "result", |m| m.topic == "roombox/box-a/cmd/mute/result").await;
    assert_eq!(r1.json()["id"], "cmd-1");
    assert_eq!(r1.json()["ok"], true);
    operator.publish("roombox/box-a/cmd/mute", token.clone(), false).await;
    operator.wait_n(10, "the result again", 2, |m| m.topic == "roombox/box-a/cmd/mute/result").await;
    let results = operator.seen_on("roombox/box-a/cmd/mute/result");
    assert_eq!(results[0].payload, results[1].payload, "the same result bytes");
    assert_eq!(host.runs.lock().unwrap().len(), 1, "ran once");

    // Refused: unsigned, forged, expired, for another device; each reported with its reason.
    let (forger_private, _) = generate_authority_key(AuthorityAlgorithm::EdDSA).unwrap();
    let forger = Signer::new(forger_private.as_bytes(), AuthorityAlgorithm::EdDSA).unwrap();
    let bad = [
        ("unsigned", "please mute".to_string()),
        ("bad_signature", forger.sign(&claims("box-a", "cmd-2", "mute", now + 60)).unwrap()),
        ("expired", s.signer.sign(&claims("box-a", "cmd-3", "mute", now - 1)).unwrap()),
        ("wrong_device", s.signer.sign(&claims("box-b", "cmd-4", "mute", now + 60)).unwrap()),
    ];
    for (reason, payload) in &bad {
        operator.publish("roombox/box-a/cmd/mute", payload.clone(), false).await;
        let m = operator
            .wait_for(10, reason, |m| m.topic == "roombox/box-a/refused" && m.json()["reason"] == *reason)
            .await;
        assert_eq!(m.json()["name"], "mute");
    }
    assert_eq!(host.runs.lock().unwrap().len(), 1, "nothing refused ran");

    // The ack clears the retained result.
    operator.publish("roombox/box-a/cmd/mute/ack", "cmd-1", false).await;
    operator
        .wait_for(10, "cleared result", |m| {
            m.topic == "roombox/box-a/cmd/mute/result" && m.payload.is_empty()
        })
        .await;
    let mut late = TestClient::connect(&s.broker.addr(), &op, "late").await;
    late.subscribe("roombox/box-a/#").await;
    late.wait_for(10, "state", |m| m.topic == "roombox/box-a/state").await;
    assert!(late.seen_on("roombox/box-a/cmd/mute/result").is_empty(), "no retained result after the ack");

    // Desired config: a bad one is rejected with the reason; a good one applied.
    let bad = serde_json::json!({"version": "v1", "config": "bogus = 1\n"}).to_string();
    operator.publish("roombox/box-a/config/desired", bad, true).await;
    let rep = operator
        .wait_for(10, "report v1", |m| {
            m.topic == "roombox/box-a/config/reported" && m.json()["version"] == "v1"
        })
        .await;
    assert_eq!(rep.json()["status"], "rejected");
    assert!(rep.json()["problems"][0].as_str().unwrap().contains("bogus"));
    let good = serde_json::json!({"version": "v2", "config": "room = \"r\"\n"}).to_string();
    operator.publish("roombox/box-a/config/desired", good, true).await;
    let rep = operator
        .wait_for(10, "report v2", |m| {
            m.topic == "roombox/box-a/config/reported" && m.json()["version"] == "v2"
        })
        .await;
    assert_eq!(rep.json()["status"], "applied");

    let stats = link.status.lock().unwrap().stats.clone();
    assert_eq!(stats.refused.values().sum::<u64>(), 4, "{stats:?}");
    assert!(stats.messages_in >= 9 && stats.messages_out >= 6, "{stats:?}");
    assert!(stats.connected);

    // A graceful stop says offline itself.
    stop.send(true).unwrap();
    operator.wait_for(10, "offline", |m| m.topic == "roombox/box-a/status" && m.text() == "offline").await;
    link.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_for_30_s_then_back_delivers_the_buffered_result_once_and_the_link_recovers() {
    let mut s = setup("box-a");
    let op = s.pki.client(OPERATOR);
    let gate = Arc::new(Notify::new());
    let host = Arc::new(TestHost { gate: Some(gate.clone()), ..TestHost::default() });
    let (link, _stop) = start_link(&s, host.clone());
    let mut operator = TestClient::connect(&s.broker.addr(), &op, "op").await;
    operator.subscribe("roombox/box-a/#").await;
    operator.wait_for(10, "online", |m| m.topic == "roombox/box-a/status" && m.text() == "online").await;

    let token = s.signer.sign(&claims("box-a", "upd-1", "install_update", unix_now() + 600)).unwrap();
    operator.publish("roombox/box-a/cmd/install_update", token, false).await;
    tokio::time::timeout(Duration::from_secs(10), host.started.notified())
        .await
        .expect("the command started");
    drop(operator);

    // The broker goes away for 30 s; the command finishes meanwhile; telemetry keeps coming.
    s.broker.stop();
    let down_at = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while link.status.lock().unwrap().stats.connected {
        assert!(std::time::Instant::now() < deadline, "the link did not notice the broker left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while link.status.lock().unwrap().stats.buffered == 0 {
        assert!(std::time::Instant::now() < deadline, "the result was not buffered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_at.elapsed())).await;
    let held = link.status.lock().unwrap().stats.clone();
    assert!(held.buffered >= 1 && held.buffered <= s.cfg.offline_buffer, "{held:?}");
    s.broker.start_again();

    let mut operator = TestClient::connect(&s.broker.addr(), &op, "op2").await;
    operator.subscribe("roombox/box-a/#").await;
    let r = operator
        .wait_for(40, "the buffered result", |m| m.topic == "roombox/box-a/cmd/install_update/result")
        .await;
    assert_eq!((r.json()["id"].as_str(), r.json()["ok"].as_bool()), (Some("upd-1"), Some(true)));
    // Later messages from the box arrive after any duplicate would have.
    operator
        .wait_for(40, "online again", |m| m.topic == "roombox/box-a/status" && m.text() == "online")
        .await;
    operator.wait_for(10, "fresh telemetry", |m| m.topic == "roombox/box-a/telemetry").await;
    assert_eq!(operator.seen_on("roombox/box-a/cmd/install_update/result").len(), 1, "no duplicate result");
    assert_eq!(host.runs.lock().unwrap().len(), 1, "ran once");
    let st = link.status.lock().unwrap().clone();
    assert!(st.stats.reconnects >= 1 && st.stats.connected && st.stats.buffered == 0, "{st:?}");

    // The recovered link still takes commands.
    let token = s.signer.sign(&claims("box-a", "mute-2", "mute", unix_now() + 60)).unwrap();
    operator.publish("roombox/box-a/cmd/mute", token, false).await;
    let r =
        operator.wait_for(10, "result after recovery", |m| m.topic == "roombox/box-a/cmd/mute/result").await;
    assert_eq!(r.json()["id"], "mute-2");
    let rec = host.records.lock().unwrap().iter().find(|r| r.id == "upd-1").cloned().unwrap();
    assert!(rec.result.is_some_and(|r| r.ok), "the command log holds the result");
}

/// Runs the operator CLI with the operator's certificate.
fn cli(s: &Setup, op: &support::ClientFiles, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roombox-fleet"))
        .args(["--broker", &s.broker.addr()])
        .arg("--ca")
        .arg(&op.ca)
        .arg("--cert")
        .arg(&op.cert)
        .arg("--key")
        .arg(&op.key)
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_makes_keys_lists_devices_sends_commands_and_pushes_config() {
    let mut s = setup("box-a");
    let op = s.pki.client(OPERATOR);
    let keys = s.pki.dir.join("authority");
    let (code, out, err) = cli(&s, &op, &["keygen", "--out", keys.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out[0]["algorithm"], "EdDSA");
    // keygen never overwrites a private key.
    assert_ne!(cli(&s, &op, &["keygen", "--out", keys.to_str().unwrap()]).0, 0);
    // The box pins the CLI's public key.
    s.cfg.authority_key_file = keys.join("authority.pub.pem");
    let host = Arc::new(TestHost::default());
    let (_link, _stop) = start_link(&s, host.clone());
    let mut operator = TestClient::connect(&s.broker.addr(), &op, "op").await;
    operator.subscribe("roombox/box-a/#").await;
    operator.wait_for(10, "state", |m| m.topic == "roombox/box-a/state").await;

    let (code, out, err) = run_blocking(&s, &op, &["list", "--wait", "2"]).await;
    assert_eq!(code, 0, "{err}");
    let dev = out.iter().find(|d| d["device"] == "box-a").unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(
        (dev["status"].as_str(), &dev["state"]["rooms"]),
        (Some("online"), &serde_json::json!(["room"]))
    );

    let key = keys.join("authority.key.pem");
    let send = [
        "send",
        "--device",
        "box-a",
        "--authority-key",
        key.to_str().unwrap(),
        "--name",
        "mute",
        "--args",
        r#"{"mic":true}"#,
        "--id",
        "cli-1",
    ];
    let (code, out, err) = run_blocking(&s, &op, &send).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!((out[0]["id"].as_str(), out[0]["ok"].as_bool()), (Some("cli-1"), Some(true)));
    assert_eq!(host.runs.lock().unwrap()[0].args, serde_json::json!({"mic": true}));
    // The CLI acknowledged the result: the retained copy is cleared.
    operator
        .wait_for(10, "cleared", |m| m.topic == "roombox/box-a/cmd/mute/result" && m.payload.is_empty())
        .await;
    // The same id with other claims is a replay: refused, exit 1, not run.
    let mut replay = send;
    replay[8] = r#"{"mic":false}"#;
    let (code, out, _) = run_blocking(&s, &op, &replay).await;
    assert_eq!((code, out[0]["refused"].as_str()), (1, Some("replayed_id")), "{out:?}");
    assert_eq!(host.runs.lock().unwrap().len(), 1);

    let file = s.pki.dir.join("desired.toml");
    std::fs::write(&file, "room = \"r\"\n").unwrap();
    let push = [
        "push-config",
        "--devices",
        "box-a,box-z",
        "--file",
        file.to_str().unwrap(),
        "--version",
        "v9",
        "--wait",
        "3",
    ];
    let (code, out, _) = run_blocking(&s, &op, &push).await;
    assert_eq!(code, 2, "box-z does not exist: {out:?}");
    let a = out.iter().find(|o| o["device"] == "box-a").unwrap();
    assert_eq!(a["report"]["status"], "applied");
    assert_eq!(out.iter().find(|o| o["device"] == "box-z").unwrap()["error"], "no report in time");
}

async fn run_blocking(
    s: &Setup,
    op: &support::ClientFiles,
    args: &[&str],
) -> (i32, Vec<serde_json::Value>, String) {
    // The CLI is a separate process; wait for it without blocking the runtime's other worker.
    tokio::task::block_in_place(|| cli(s, op, args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_certificate_rotation_the_link_reconnects_with_the_new_certificate() {
    let s = setup("box-a");
    let op = s.pki.client(OPERATOR);
    let host = Arc::new(TestHost::default());
    let (link, _stop) = start_link(&s, host.clone());
    let mut operator = TestClient::connect(&s.broker.addr(), &op, "op").await;
    operator.subscribe("roombox/box-a/#").await;
    operator.wait_for(10, "online", |m| m.topic == "roombox/box-a/status" && m.text() == "online").await;
    let old_cert = std::fs::read(&s.cfg.cert_file).unwrap();
    // A new certificate and key for the same device, where the config points.
    let fresh = s.pki.client("box-a");
    assert_ne!(std::fs::read(&fresh.cert).unwrap(), old_cert);
    let token = s.signer.sign(&claims("box-a", "rot-1", "rotate_certificate", unix_now() + 60)).unwrap();
    operator.publish("roombox/box-a/cmd/rotate_certificate", token, false).await;
    let r =
        operator.wait_for(10, "result", |m| m.topic == "roombox/box-a/cmd/rotate_certificate/result").await;
    assert_eq!(r.json()["ok"], true);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while link.status.lock().unwrap().stats.reconnects < 1 || !link.status.lock().unwrap().stats.connected {
        assert!(std::time::Instant::now() < deadline, "no reconnect: {:?}", link.status.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still commandable over the new connection.
    let token = s.signer.sign(&claims("box-a", "m-9", "mute", unix_now() + 60)).unwrap();
    operator.publish("roombox/box-a/cmd/mute", token, false).await;
    operator
        .wait_for(10, "mute result", |m| {
            m.topic == "roombox/box-a/cmd/mute/result" && m.json()["id"] == "m-9"
        })
        .await;
    assert_eq!(host.runs.lock().unwrap().len(), 2);
}
