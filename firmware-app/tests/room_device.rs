//! The daemon with its room media and button panel running for real: the
//! synthetic camera and microphone publish into the box's room through the
//! SFU, the simulated panel's button drives the same switches as the API, and
//! the LEDs follow the room whoever changed it. Also: a board profile applied
//! to a running daemon, and the TV's display credential.

mod common;

use std::time::{Duration, Instant};

use roombox::config::{Overrides, load_str};
use serde_json::{Value, json};
use sfu_core::protocol::{TrackKind, TrackSource};

/// Poll `f` until it returns `Some`, for up to `secs`.
async fn wait<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The room participant's tracks as the SFU sees them: (source, muted).
async fn sfu_tracks(d: &common::TestDaemon) -> Vec<(TrackSource, TrackKind, bool)> {
    let sfu = d.running.state.sfu.as_ref().expect("the SFU runs");
    let rooms = sfu.rooms().await.unwrap();
    rooms
        .iter()
        .filter(|r| r.name == "demo")
        .flat_map(|r| r.participants.iter())
        .filter(|p| p.identity == "room")
        .flat_map(|p| p.tracks.iter().map(|t| (t.source, t.kind, t.muted)))
        .collect()
}

fn mic_muted_in_sfu(tracks: &[(TrackSource, TrackKind, bool)]) -> Option<bool> {
    tracks.iter().find(|t| t.0 == TrackSource::RoomMicrophone).map(|t| t.2)
}

fn camera_muted_in_sfu(tracks: &[(TrackSource, TrackKind, bool)]) -> Option<bool> {
    tracks.iter().find(|t| t.0 == TrackSource::RoomCamera).map(|t| t.2)
}

fn led(g: &Value, name: &str) -> bool {
    g["leds"].as_array().unwrap().iter().find(|l| l["name"] == name).unwrap()["on"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_button_mutes_the_room_and_the_leds_follow_whoever_changed_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config_with_media(dir.path());
    let d = common::start_with(cfg, dir).await;
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap().to_owned();

    // The media runs: ready, frames published, the room participant in the SFU.
    let r = d.get("/readyz", None).await;
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready, json!({"ready": true, "store": true, "sfu": true, "media": true}));
    let dev = wait("video frames published", 20, async || {
        let v: Value = d.get("/api/v1/device", Some(&t)).await.json().await.unwrap();
        (v["media"]["pipeline"]["video_frames_sent"].as_u64() > Some(5)).then_some(v)
    })
    .await;
    assert_eq!(dev["media"]["running"], true, "{dev}");
    assert_eq!(dev["media"]["pipeline"]["camera"], "ok", "{dev}");
    assert_eq!((dev["room"].as_str(), dev["live"].as_bool()), (Some("demo"), Some(false)), "{dev}");
    let tracks = wait("the room's tracks in the SFU", 10, async || {
        let t = sfu_tracks(&d).await;
        (t.len() == 2).then_some(t)
    })
    .await;
    assert_eq!((mic_muted_in_sfu(&tracks), camera_muted_in_sfu(&tracks)), (Some(false), Some(false)));

    // The API lists the tracks with their source (the admin page labels them).
    let people: Value = d.get("/api/v1/rooms/demo/participants", Some(&t)).await.json().await.unwrap();
    let room = people.as_array().unwrap().iter().find(|p| p["identity"] == "room").expect("room listed");
    let mut sources: Vec<&str> =
        room["tracks"].as_array().unwrap().iter().map(|t| t["source"].as_str().unwrap()).collect();
    sources.sort();
    assert_eq!(sources, ["room_camera", "room_microphone"], "{people}");
    assert_eq!(room["local"], true);

    // The simulated panel, as the admin page shows it.
    let g: Value = d.get("/api/v1/device/gpio", Some(&t)).await.json().await.unwrap();
    assert_eq!(g["simulated"], true, "{g}");
    assert_eq!(g["buttons"], json!([{"name": "mute", "pressed": false}]));
    assert!(!led(&g, "muted") && !led(&g, "live") && !led(&g, "recording"), "{g}");

    // A click of the button mutes the room microphone at the source and in the SFU.
    let r = d.post_json("/api/v1/device/gpio/buttons/mute", Some(&t), json!({"action": "click"})).await;
    assert_eq!(r.status(), 200);
    let media = d.running.state.device.media_status().unwrap();
    let sent_before = media.audio_frames_sent;
    wait("the pipeline's microphone muted", 10, async || {
        d.running.state.device.media_status().unwrap().mic_muted.then_some(())
    })
    .await;
    wait("the SFU's microphone track muted", 10, async || {
        (mic_muted_in_sfu(&sfu_tracks(&d).await) == Some(true)).then_some(())
    })
    .await;
    wait("the muted LED lit", 10, async || {
        let g: Value = d.get("/api/v1/device/gpio", Some(&t)).await.json().await.unwrap();
        led(&g, "muted").then_some(())
    })
    .await;
    // Nothing leaves the box while muted (an encoded frame may be in flight).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = d.running.state.device.media_status().unwrap().audio_frames_sent;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = d.running.state.device.media_status().unwrap().audio_frames_sent;
    assert!(a >= sent_before && b == a, "audio frames sent while muted: {a} -> {b}");
    let dev: Value = d.get("/api/v1/device", Some(&t)).await.json().await.unwrap();
    assert_eq!((dev["mic_muted"].as_bool(), dev["camera_off"].as_bool()), (Some(true), Some(false)), "{dev}");

    // Unmute through the API (as the admin page does): the LED goes out, the SFU unmutes.
    let r = d
        .client
        .patch(d.url("/api/v1/device"))
        .bearer_auth(&t)
        .json(&json!({"mic_muted": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait("the muted LED off after the API's unmute", 10, async || {
        let g: Value = d.get("/api/v1/device/gpio", Some(&t)).await.json().await.unwrap();
        (!led(&g, "muted")).then_some(())
    })
    .await;
    wait("the SFU's microphone unmuted", 10, async || {
        (mic_muted_in_sfu(&sfu_tracks(&d).await) == Some(false)).then_some(())
    })
    .await;
    // A mute through the API lights the LED.
    let r = d
        .client
        .patch(d.url("/api/v1/device"))
        .bearer_auth(&t)
        .json(&json!({"mic_muted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait("the muted LED lit by the API's mute", 10, async || {
        let g: Value = d.get("/api/v1/device/gpio", Some(&t)).await.json().await.unwrap();
        led(&g, "muted").then_some(())
    })
    .await;
    // The live-meeting list's mute of the room participant is the same switch.
    let r = d
        .post_json(
            "/api/v1/rooms/demo/participants/room/mute",
            Some(&t),
            json!({"kind": "audio", "muted": false}),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert!(!d.running.state.device.state().mic_muted);
    wait("the pipeline unmuted", 10, async || {
        (!d.running.state.device.media_status().unwrap().mic_muted).then_some(())
    })
    .await;

    // The room participant cannot be kicked out of its own box.
    let r = d.post_json("/api/v1/rooms/demo/participants/room/kick", Some(&t), json!({})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(sfu_tracks(&d).await.len(), 2, "still in the room");

    // A long press: privacy (microphone and camera off, at the source and in the SFU).
    let r = d.post_json("/api/v1/device/gpio/buttons/mute", Some(&t), json!({"action": "press"})).await;
    assert_eq!(r.status(), 200);
    wait("privacy mode", 15, async || {
        let m = d.running.state.device.media_status().unwrap();
        (m.mic_muted && m.camera_off && m.camera == roombox::media::DeviceState::Off).then_some(())
    })
    .await;
    let r = d.post_json("/api/v1/device/gpio/buttons/mute", Some(&t), json!({"action": "release"})).await;
    assert_eq!(r.status(), 200);
    wait("both tracks muted in the SFU", 10, async || {
        let tr = sfu_tracks(&d).await;
        (mic_muted_in_sfu(&tr) == Some(true) && camera_muted_in_sfu(&tr) == Some(true)).then_some(())
    })
    .await;
    let dev: Value = d.get("/api/v1/device", Some(&t)).await.json().await.unwrap();
    assert_eq!(dev["privacy"], true, "{dev}");
    // Privacy sends the slate: frames keep flowing with the camera released.
    let f0 = d.running.state.device.media_status().unwrap().video_frames_sent;
    wait("slate frames", 10, async || {
        (d.running.state.device.media_status().unwrap().video_frames_sent > f0 + 3).then_some(())
    })
    .await;
    // A click leaves privacy.
    wait("the button up", 10, async || {
        let g: Value = d.get("/api/v1/device/gpio", Some(&t)).await.json().await.unwrap();
        (g["buttons"][0]["pressed"] == false).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.post_json("/api/v1/device/gpio/buttons/mute", Some(&t), json!({"action": "click"})).await;
    wait("privacy left", 10, async || {
        let m = d.running.state.device.media_status().unwrap();
        (!m.mic_muted && !m.camera_off).then_some(())
    })
    .await;

    // Bad requests: no such button, bad action, a guest may look but not press.
    let r = d.post_json("/api/v1/device/gpio/buttons/volume", Some(&t), json!({"action": "click"})).await;
    assert_eq!(r.status(), 404);
    let r = d.post_json("/api/v1/device/gpio/buttons/mute", Some(&t), json!({"action": "smash"})).await;
    assert_eq!(r.status(), 422);
    let guest = roombox::auth::Auth::new(&d.data_dir(), Default::default(), d.running.state.store.clone())
        .await
        .unwrap()
        .issue_access(
            "g",
            "demo",
            sfu_core::Grants { subscribe: true, ..Default::default() },
            Duration::from_secs(60),
            None,
            None,
            roombox::auth::unix_now(),
        )
        .unwrap()
        .0;
    assert_eq!(d.get("/api/v1/device/gpio", Some(&guest)).await.status(), 200);
    let r = d.post_json("/api/v1/device/gpio/buttons/mute", Some(&guest), json!({"action": "click"})).await;
    assert_eq!(r.status(), 403);

    // Media metrics are in the daemon's registry.
    let metrics = d.get("/metrics", None).await.text().await.unwrap();
    for name in ["roombox_media_captured_frames_total", "roombox_media_mic_muted", "sfu_participants"] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    // Shutdown: the media leaves first; nothing is left open in the store.
    let store_path = d.running.state.cfg.store_path();
    d.running.shutdown().await;
    let c = rusqlite::Connection::open(&store_path).unwrap();
    let open: i64 = c
        .query_row("SELECT COUNT(*) FROM participant_sessions WHERE left_at IS NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_profile_gives_media_defaults_capacity_and_the_panel() {
    let dir = tempfile::tempdir().unwrap();
    // The emulated board: V4L2 camera and ALSA sound that this machine lacks;
    // the file's [media] keys win (a synthetic camera), the rest is the board's.
    let text = r#"
board = "qemu-arm64"
room = "demo"
[media]
video = { source = "synthetic" }
audio = { source = "synthetic" }
playback = { sink = "none" }
fps = 15
"#;
    let overrides = Overrides { data_dir: Some(dir.path().to_owned()), ..Default::default() };
    let mut cfg = load_str(text, &overrides).unwrap();
    let base = common::config(dir.path());
    cfg.http = base.http.clone();
    cfg.sfu.udp_bind = base.sfu.udp_bind;
    cfg.sfu.tcp_bind = None;
    cfg.sfu.include_loopback = true;
    let d = common::start_with(cfg, dir).await;
    assert_eq!(d.running.board.as_ref().map(|b| b.name()), Some("qemu-arm64"));
    let cfg = &d.running.state.cfg;
    assert_eq!((cfg.media.width, cfg.media.height, cfg.media.fps), (640, 360, 15), "board size, file fps");
    assert_eq!(cfg.media.start_bitrate_bps, 600_000, "the board's bitrate");
    assert_eq!(cfg.media.period_ms, 20, "the board's ALSA period");
    let sfu = d.running.state.sfu.as_ref().unwrap();
    assert_eq!(sfu.config().limits.max_participants_per_room, 4, "the board's capacity");
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap();
    let dev = wait("the board's camera size publishing", 20, async || {
        let v: Value = d.get("/api/v1/device", Some(t)).await.json().await.unwrap();
        (v["media"]["pipeline"]["video_frames_sent"].as_u64() > Some(3)).then_some(v)
    })
    .await;
    assert_eq!(
        (dev["media"]["pipeline"]["width"].as_u64(), dev["media"]["pipeline"]["height"].as_u64()),
        (Some(640), Some(360))
    );
    // No GPIO lines on this board: the panel is simulated.
    let g: Value = d.get("/api/v1/device/gpio", Some(t)).await.json().await.unwrap();
    assert_eq!(g["simulated"], true);
    let st: Value = d.get("/api/v1/status", Some(t)).await.json().await.unwrap();
    assert_eq!(st["board"], "qemu-arm64");
    d.running.shutdown().await;

    // Without the file's keys the board's devices are used; missing ones start "lost"
    // and the daemon still serves.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.board = Some("qemu-arm64".into());
    cfg.media.enabled = true;
    let d = common::start_with(cfg, dir).await;
    let m = &d.running.state.cfg.media;
    assert!(
        matches!(&m.video, roombox::media::VideoSourceConfig::V4l2 { device, .. } if device.to_str() == Some("/dev/video0")),
        "{m:?}"
    );
    let st = d.running.state.device.state();
    if st.media.running {
        let p = st.media.pipeline.unwrap();
        println!(
            "qemu-arm64 on this machine: camera {:?} ({}), microphone {:?}",
            p.camera, p.camera_description, p.microphone
        );
    } else {
        println!("qemu-arm64 on this machine: media not running: {}", st.media.detail);
    }
    assert_eq!(d.get("/healthz", None).await.status(), 200);
    d.running.shutdown().await;
}

#[tokio::test]
async fn a_tv_keeps_its_display_credential_until_it_is_revoked() {
    let d = common::start().await;
    let admin = d.login_admin().await;
    let t = admin["access_token"].as_str().unwrap();

    let r = d.post_json("/api/v1/displays", Some(t), json!({"room": "demo", "name": "Board room TV"})).await;
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let cred = made["credential"].as_str().unwrap().to_owned();
    assert!(cred.starts_with("rbd_") && cred.len() > 40, "{made}");
    assert_eq!(made["path"], format!("/display#room=demo&display={cred}"));
    let id = made["display"]["id"].as_i64().unwrap();

    // The credential is exchanged for short subscribe-only tokens, again and again.
    let verify = roombox::auth::Auth::new(&d.data_dir(), Default::default(), d.running.state.store.clone())
        .await
        .unwrap();
    let mut held = String::new();
    for _ in 0..2 {
        let r = d.post_json("/api/v1/displays/token", None, json!({"credential": cred})).await;
        assert_eq!(r.status(), 200);
        let tok: Value = r.json().await.unwrap();
        assert_eq!(
            (tok["identity"].as_str(), tok["room"].as_str()),
            (Some(&*format!("display-{id}")), Some("demo"))
        );
        assert_eq!(tok["expires_in"], 900);
        let c = verify.verify(tok["token"].as_str().unwrap(), roombox::auth::unix_now()).unwrap();
        assert!(c.grants.subscribe && !c.grants.publish && !c.grants.admin);
        assert_eq!(c.name.as_deref(), Some("Room display"));
        held = tok["token"].as_str().unwrap().to_owned();
    }
    // The token works in its room (the same verifier the SFU uses).
    assert_eq!(d.get("/api/v1/rooms/demo", Some(&held)).await.status(), 200);
    let list: Value = d.get("/api/v1/displays", Some(t)).await.json().await.unwrap();
    let row = &list.as_array().unwrap()[0];
    assert!(row["last_used_at"].is_i64() && row["revoked_at"].is_null(), "{list}");
    assert!(!list.to_string().contains(&cred), "the secret is never listed");

    // Bad credentials: a clear 401, nothing else.
    for bad in ["", "rbd_nope", "rbr_x", &"rbd_".repeat(40)] {
        let r = d.post_json("/api/v1/displays/token", None, json!({"credential": bad})).await;
        assert_eq!(r.status(), 401, "{bad:?}");
        assert_eq!(common::error_code(r).await, "invalid_display_credential");
    }
    // A guest cannot make or list displays.
    let guest = verify
        .issue_access(
            "g",
            "demo",
            sfu_core::Grants { subscribe: true, ..Default::default() },
            Duration::from_secs(60),
            None,
            None,
            roombox::auth::unix_now(),
        )
        .unwrap()
        .0;
    assert_eq!(d.post_json("/api/v1/displays", Some(&guest), json!({"room": "demo"})).await.status(), 403);
    assert_eq!(d.get("/api/v1/displays", Some(&guest)).await.status(), 403);

    // Revoked: no more tokens; a restart does not bring it back.
    let r = d.client.delete(d.url(&format!("/api/v1/displays/{id}"))).bearer_auth(t).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = d.post_json("/api/v1/displays/token", None, json!({"credential": cred})).await;
    assert_eq!(r.status(), 401);
    // The token it still held is refused at once, not in 15 minutes.
    let r = d.get("/api/v1/rooms/demo", Some(&held)).await;
    assert_eq!((r.status().as_u16(), common::error_code(r).await.as_str()), (401, "token_revoked"));
    let r = d.client.delete(d.url("/api/v1/displays/999")).bearer_auth(t).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let audit: Value = d.get("/api/v1/audit", Some(t)).await.json().await.unwrap();
    let actions: Vec<&str> =
        audit.as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"display_created") && actions.contains(&"display_revoked"), "{actions:?}");
    let dir = d.dir;
    d.running.shutdown().await;
    let cfg = common::config(dir.path());
    let d = common::start_with(cfg, dir).await;
    let r = d.post_json("/api/v1/displays/token", None, json!({"credential": cred})).await;
    assert_eq!(r.status(), 401);
    d.running.shutdown().await;
}
