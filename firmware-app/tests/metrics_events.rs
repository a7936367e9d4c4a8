//! Room events drive the store and the seed's metrics; `/metrics` passes
//! `promtool check metrics` (Debian package `prometheus`).

mod common;

use std::time::{Duration, SystemTime};

use roombox::events::EventRecorder;
use sfu_core::{LeaveReason, RoomEvent};

fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("promtool is needed (apt-get install prometheus; scripts/test installs it): {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let problems =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && problems.trim().is_empty(),
        "promtool check metrics:\n{problems}\n---\n{text}"
    );
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn seed_metrics_move_with_joins_and_leaves_and_meetings_are_stored() {
    let d = common::start().await;
    let metrics_text = || async { d.get("/metrics", None).await.text().await.unwrap() };
    let gauge = "active_meetings_total{region=\"test\",server_id=\"box-1\"}";
    let count = "meeting_participants_duration_count{region=\"test\",server_id=\"box-1\"}";

    let before = metrics_text().await;
    promtool_check(&before);
    assert_eq!(value(&before, gauge), 0.0);
    assert_eq!(value(&before, count), 0.0);

    // A recorder of its own, fed by hand (the daemon's sees only the real SFU).
    let mut rec = EventRecorder::new(d.running.state.store.clone(), d.running.state.metrics.clone(), None);
    let t0 = SystemTime::now() - Duration::from_secs(1000);
    let at = |s: u64| t0 + Duration::from_secs(s);
    rec.handle(RoomEvent::RoomOpened { room: "demo".into(), at: at(0) }).await;
    rec.handle(RoomEvent::ParticipantJoined {
        room: "demo".into(),
        identity: "room".into(),
        session: 1,
        local: true,
        at: at(0),
    })
    .await;
    rec.handle(RoomEvent::ParticipantJoined {
        room: "demo".into(),
        identity: "alice".into(),
        session: 2,
        local: false,
        at: at(10),
    })
    .await;
    rec.handle(RoomEvent::ParticipantJoined {
        room: "demo".into(),
        identity: "carol".into(),
        session: 4,
        local: false,
        at: at(15),
    })
    .await;
    rec.handle(RoomEvent::RoomOpened { room: "boardroom".into(), at: at(20) }).await;
    rec.handle(RoomEvent::ParticipantJoined {
        room: "boardroom".into(),
        identity: "bob".into(),
        session: 3,
        local: false,
        at: at(20),
    })
    .await;

    let during = metrics_text().await;
    promtool_check(&during);
    assert_eq!(value(&during, gauge), 2.0);
    assert_eq!(value(&during, "roombox_active_meetings{region=\"test\",server_id=\"box-1\"}"), 2.0);
    // People: alice, carol, bob; the room camera is not one.
    assert_eq!(value(&during, "roombox_participants"), 3.0);

    rec.handle(RoomEvent::ParticipantLeft {
        room: "demo".into(),
        identity: "alice".into(),
        session: 2,
        reason: LeaveReason::Left,
        duration: Duration::from_secs(400),
        at: at(410),
    })
    .await;
    rec.handle(RoomEvent::ParticipantLeft {
        room: "boardroom".into(),
        identity: "bob".into(),
        session: 3,
        reason: LeaveReason::ConnectionLost,
        duration: Duration::from_secs(50),
        at: at(70),
    })
    .await;
    rec.handle(RoomEvent::RoomClosed { room: "boardroom".into(), at: at(70) }).await;

    let after = metrics_text().await;
    promtool_check(&after);
    assert_eq!(value(&after, gauge), 1.0);
    assert_eq!(value(&after, count), 2.0);
    assert_eq!(
        value(&after, "meeting_participants_duration_bucket{region=\"test\",server_id=\"box-1\",le=\"60\"}"),
        1.0
    );
    assert_eq!(
        value(&after, "meeting_participants_duration_bucket{region=\"test\",server_id=\"box-1\",le=\"900\"}"),
        2.0
    );
    assert_eq!(
        value(&after, "meeting_participants_duration_sum{region=\"test\",server_id=\"box-1\"}"),
        450.0
    );

    // The same events are rows in the store, visible through the API.
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap();
    let meetings: serde_json::Value = d.get("/api/v1/meetings", Some(t)).await.json().await.unwrap();
    let list = meetings.as_array().unwrap();
    assert_eq!(list.len(), 2, "{meetings}");
    let board = list.iter().find(|m| m["room"] == "boardroom").unwrap();
    assert!(board["ended_at"].is_i64() && board["sessions"] == 1);
    let demo = list.iter().find(|m| m["room"] == "demo").unwrap();
    // The room (local), alice and carol; carol is still there.
    assert!(demo["ended_at"].is_null() && demo["sessions"] == 3, "{demo}");
    let sessions: serde_json::Value =
        d.get(&format!("/api/v1/meetings/{}/sessions", demo["id"]), Some(t)).await.json().await.unwrap();
    let alice = sessions.as_array().unwrap().iter().find(|s| s["identity"] == "alice").unwrap();
    assert_eq!(alice["leave_reason"], "left");
    assert_eq!(alice["left_at"].as_i64().unwrap() - alice["joined_at"].as_i64().unwrap(), 400);

    // Shutdown closes what is still open: nothing stays "live" in the store.
    let store_path = d.running.state.cfg.store_path();
    d.running.shutdown().await;
    let c = rusqlite::Connection::open(&store_path).unwrap();
    let open: i64 =
        c.query_row("SELECT COUNT(*) FROM meetings WHERE ended_at IS NULL", [], |r| r.get(0)).unwrap();
    let open_s: i64 = c
        .query_row("SELECT COUNT(*) FROM participant_sessions WHERE left_at IS NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!((open, open_s), (0, 0));
    let reason: String = c
        .query_row(
            "SELECT end_reason FROM meetings m JOIN rooms r ON r.id = m.room_id WHERE r.name = 'demo'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reason, "shutdown");
    let wal = std::fs::metadata(store_path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "the WAL was checkpointed at shutdown");
}

/// Every series the dashboard queries is in `/metrics` of a running daemon
/// with its room media (the SFU's and the capture pipeline's included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_uses_only_metrics_the_daemon_exposes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = common::start_with(common::config_with_media(dir.path()), dir).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exposed = loop {
        let text = d.get("/metrics", None).await.text().await.unwrap();
        if text.contains("roombox_media_encode_seconds_bucket") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    promtool_check(&exposed);
    // Series that exist only on some hardware (a board with thermal zones):
    // checked against their definitions instead. Counters of events that have not
    // happened yet (xruns, dropped or refused packets) are exposed at 0.
    let later = [("roombox_board_temperature_celsius", include_str!("../src/metrics.rs"))];
    let mut seen = 0;
    let mut families = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let is_metric = ["active_", "meeting_", "roombox_", "process_", "sfu_"]
                    .iter()
                    .any(|p| word.starts_with(p));
                if !is_metric {
                    continue;
                }
                seen += 1;
                families.insert(word.split('_').take(2).collect::<Vec<_>>().join("_"));
                if let Some((_, src)) = later.iter().find(|(n, _)| word.ends_with(n)) {
                    let short = word.trim_start_matches("roombox_media_");
                    assert!(src.contains(short), "dashboard uses {word}, which no code defines");
                    continue;
                }
                assert!(
                    exposed.contains(&format!("\n{word}")),
                    "dashboard uses {word}, which /metrics lacks"
                );
            }
        }
    }
    assert!(seen >= 30, "{seen}");
    for fam in [
        "sfu_forwarded",
        "sfu_rtt",
        "roombox_media",
        "active_meetings",
        "meeting_participants",
        "roombox_upload",
        "roombox_fleet",
    ] {
        assert!(families.contains(fam), "no {fam} panel: {families:?}");
    }
    let text = dash.to_string();
    assert!(text.contains("active_meetings_total") && text.contains("meeting_participants_duration_bucket"));
    d.running.shutdown().await;
}
