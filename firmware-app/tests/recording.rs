//! Server-side recording through the daemon: the room's synthetic camera and
//! microphone recorded per track, checked by ffprobe (Debian `ffmpeg`);
//! grants; `kill -9` mid-recording and recovery at the next start; a full
//! disk (a small tmpfs) stopping the recording cleanly.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_with_media, error_code, start_with};
use serde_json::Value;
use sfu_core::auth::{Claims, Grants, sign_hs256};

fn token(data_dir: &Path, room: &str, grants: Grants) -> String {
    let key = roombox::auth::load_or_create_key(data_dir).unwrap();
    sign_hs256(&Claims::new("host", room, grants, roombox::auth::unix_now(), 900), &key).unwrap()
}

fn recorder_token(data_dir: &Path) -> String {
    token(data_dir, "demo", Grants { publish: true, subscribe: true, record: true, admin: false })
}

fn admin_token(data_dir: &Path) -> String {
    token(data_dir, "*", Grants { publish: false, subscribe: false, record: false, admin: true })
}

/// ffprobe's (codec, decoded frames, duration seconds) of a file; fails on any complaint.
fn probe(path: &Path) -> (String, u64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames:format=duration",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(path)
        .output()
        .expect("ffprobe is missing: install the Debian package `ffmpeg` (scripts/lib.sh TEST_PACKAGES)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffprobe complains about {}: {stderr}",
        path.display()
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("0").to_owned();
    (get("codec_name"), get("nb_read_frames").parse().unwrap_or(0), get("duration").parse().unwrap_or(0.0))
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_is_recorded_per_track_with_grants_banner_led_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_with_media(dir.path());
    cfg.recording.min_free_mib = 1;
    let d = start_with(cfg, dir).await;
    let data = d.data_dir();
    let rec = recorder_token(&data);
    let admin = admin_token(&data);

    // no record grant: 403, nothing started
    let no_grant =
        token(&data, "demo", Grants { publish: true, subscribe: true, record: false, admin: true });
    let r = d.client.post(d.url("/api/v1/rooms/demo/recording")).bearer_auth(&no_grant).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "missing_grant");
    let other_room =
        token(&data, "other", Grants { publish: true, subscribe: true, record: true, admin: false });
    let r =
        d.client.post(d.url("/api/v1/rooms/demo/recording")).bearer_auth(&other_room).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = d.client.post(d.url("/api/v1/rooms/demo/recording")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let recs: Value = d.get("/api/v1/recordings", Some(&admin)).await.json().await.unwrap();
    assert_eq!(recs.as_array().unwrap().len(), 0, "refused requests start nothing");

    let r = d.client.post(d.url("/api/v1/rooms/demo/recording")).bearer_auth(&rec).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let started: Value = r.json().await.unwrap();
    let id = started["id"].as_i64().unwrap();
    let t0 = Instant::now();
    let r = d.client.post(d.url("/api/v1/rooms/demo/recording")).bearer_auth(&rec).send().await.unwrap();
    assert_eq!(r.status(), 409, "one recording per room");
    let state: Value = d.get("/api/v1/rooms/demo/recording", Some(&rec)).await.json().await.unwrap();
    assert_eq!((state["recording"].as_bool(), state["id"].as_i64()), (Some(true), Some(id)));
    let gpio: Value = d.get("/api/v1/device/gpio", Some(&admin)).await.json().await.unwrap();
    assert!(gpio.to_string().contains("recording"), "{gpio}");

    // two tracks (camera, mic), a few seconds each
    wait_for("fragments", Duration::from_secs(30), || async {
        let m = d.get("/metrics", None).await.text().await.unwrap();
        metric(&m, "roombox_recording_fragments_synced_total") >= 10
    })
    .await;
    let m = d.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(metric(&m, "roombox_recordings_active"), 1);
    assert!(metric(&m, "roombox_recording_bytes_total") > 10_000, "{m}");

    let r = d.client.delete(d.url("/api/v1/rooms/demo/recording")).bearer_auth(&rec).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ran = t0.elapsed().as_secs_f64();
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["state"], "finalized", "{done}");
    assert_eq!(done["reason"], "stopped", "{done}");
    let files = done["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "camera and microphone: {done}");
    let mut codecs = Vec::new();
    for f in files {
        assert_eq!(f["state"], "finalized", "{f}");
        assert_eq!(f["identity"], "room", "{f}");
        let path = Path::new(f["path"].as_str().unwrap());
        assert!(path.starts_with(data.join("recordings").join(id.to_string())), "{}", path.display());
        assert_eq!(std::fs::metadata(path).unwrap().len(), f["bytes"].as_u64().unwrap());
        let (codec, frames, secs) = probe(path);
        assert!(frames > 0, "{codec}: no frames");
        assert!((secs - ran).abs() < 1.0, "{codec}: {secs} s recorded, ran {ran} s");
        codecs.push(codec);
    }
    codecs.sort();
    assert_eq!(codecs, ["h264", "opus"]);
    let r = d.client.delete(d.url("/api/v1/rooms/demo/recording")).bearer_auth(&rec).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let audit: Value = d.get("/api/v1/audit", Some(&admin)).await.json().await.unwrap();
    for action in ["recording_start", "recording_stop"] {
        assert!(audit.as_array().unwrap().iter().any(|a| a["action"] == action), "{action} in {audit}");
    }
    let m = d.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(metric(&m, "roombox_recordings_active"), 0);
    d.running.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_roomboxd");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `roomboxd run` child, killed if the test fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_daemon(config: &Path) -> Child {
    Child(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn client(data_dir: &Path) -> reqwest::Client {
    let pem = std::fs::read(data_dir.join("tls/cert.pem")).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .no_proxy()
        .build()
        .unwrap()
}

async fn wait_healthy(data_dir: &Path, base: &str) -> reqwest::Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if data_dir.join("tls/cert.pem").exists() {
            let c = client(data_dir);
            if c.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "roomboxd did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_recording_then_every_file_is_recovered_and_plays() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let config = dir.path().join("roombox.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nroom = \"demo\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [sfu]\nudp_bind = \"127.0.0.1:0\"\ninclude_loopback = true\n\
             [media]\nenabled = true\nwidth = 320\nheight = 180\nfps = 15\nstart_bitrate_bps = 300000\n\
             [recording]\nmin_free_mib = 1\n"
        ),
    )
    .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let mut child = spawn_daemon(&config);
    let c = wait_healthy(&data, &base).await;
    let rec = recorder_token(&data);
    let r = c.post(format!("{base}/api/v1/rooms/demo/recording")).bearer_auth(&rec).send().await.unwrap();
    let status = r.status();
    let started: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_i64().unwrap();
    let t0 = Instant::now();
    // about four seconds in, right after a fragment was synced
    let mut last = 0;
    loop {
        let m = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let n = metric(&m, "roombox_recording_fragments_synced_total");
        if n > last && last > 0 && t0.elapsed() > Duration::from_secs(4) {
            break;
        }
        last = n;
        assert!(t0.elapsed() < Duration::from_secs(30), "no fragments synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: our own child.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGKILL);
    }
    let ran = t0.elapsed().as_secs_f64();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "killed");

    let child = spawn_daemon(&config);
    let c = wait_healthy(&data, &base).await;
    let admin = admin_token(&data);
    let recs: Value = c
        .get(format!("{base}/api/v1/recordings"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row =
        recs.as_array().unwrap().iter().find(|r| r["id"] == id).cloned().expect("the recording row survived");
    assert_eq!(row["state"], "recovered", "{row}");
    let files: Value = c
        .get(format!("{base}/api/v1/recordings/{id}/files"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in files {
        assert_eq!(f["state"], "recovered", "{f}");
        let path = Path::new(f["path"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            f["bytes"].as_u64().unwrap(),
            "cut at the last fragment"
        );
        let (codec, frames, secs) = probe(path);
        assert!(frames > 0, "{codec}");
        assert!((secs - ran).abs() <= 1.0, "{codec}: ffprobe says {secs} s, it ran {ran} s");
        let ms = f["duration_ms"].as_f64().unwrap() / 1000.0;
        assert!((ms - ran).abs() <= 1.0, "{codec}: recovery says {ms} s, it ran {ran} s");
        println!(
            "{codec}: ran {ran:.2} s, recovered {ms:.2} s of media, ffprobe {secs:.2} s, {frames} frames"
        );
    }
    let audit: Value =
        c.get(format!("{base}/api/v1/audit")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert!(audit.as_array().unwrap().iter().any(|a| a["action"] == "recording_recovered"), "{audit}");
    // every recovered file waits in the upload queue under <room>/<id>/<file>
    let db = rusqlite::Connection::open_with_flags(
        data.join("roombox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    for f in files {
        let path = f["path"].as_str().unwrap();
        let (key, state): (String, String) = db
            .query_row("SELECT object_key, state FROM uploads WHERE path = ?1", [path], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap_or_else(|e| panic!("{path} is not in the upload queue: {e}"));
        let name = Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(key, format!("demo/{id}/{name}"));
        assert_eq!(state, "pending", "no [cloud.upload]: the file waits");
    }
    drop(child);
}

/// Mount a tmpfs of `mib` MiB on `dir`; `None` when this process may not mount.
fn mount_tmpfs(dir: &Path, mib: u64) -> Option<()> {
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .ok()?;
    st.success().then_some(())
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_recording_cleanly_and_the_daemon_serves_on() {
    let outer = tempfile::tempdir().unwrap();
    let mnt = outer.path().join("disk");
    std::fs::create_dir(&mnt).unwrap();
    if mount_tmpfs(&mnt, 32).is_none() {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN); the full-disk test did not run"
        );
        return;
    }
    let _unmount = Unmount(mnt.clone());
    let dir = tempfile::tempdir_in(&mnt).unwrap();
    let mut cfg = config_with_media(dir.path());
    cfg.recording.min_free_mib = 8;
    cfg.recording.reserve_mib = 4;
    let d = start_with(cfg, dir).await;
    let data = d.data_dir();
    let rec = recorder_token(&data);
    let admin = admin_token(&data);
    // a row from before: it must still be there at the end
    let r = d.post_json("/api/v1/rooms", Some(&admin), serde_json::json!({"name": "kept"})).await;
    assert!(r.status().is_success(), "{}", r.status());

    let r = d.client.post(d.url("/api/v1/rooms/demo/recording")).bearer_auth(&rec).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    wait_for("fragments", Duration::from_secs(30), || async {
        let m = d.get("/metrics", None).await.text().await.unwrap();
        metric(&m, "roombox_recording_fragments_synced_total") >= 6
    })
    .await;
    // something else fills the disk to 2 MiB short of full
    let free = roombox::recording::free_bytes(&mnt).unwrap();
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..(free >> 20).saturating_sub(2) {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        f.sync_all().unwrap();
    }
    wait_for("the recording to stop", Duration::from_secs(20), || async {
        let s: Value = d.get("/api/v1/rooms/demo/recording", Some(&rec)).await.json().await.unwrap();
        s["recording"] == false
    })
    .await;
    // the daemon serves on, and says why a new recording cannot start
    assert_eq!(d.get("/healthz", None).await.status(), 200);
    let r = d.client.post(d.url("/api/v1/rooms/demo/recording")).bearer_auth(&rec).send().await.unwrap();
    assert_eq!(r.status(), 507);
    assert_eq!(error_code(r).await, "insufficient_storage");
    // every row is there; the files are final and play
    let recs: Value = d.get("/api/v1/recordings", Some(&admin)).await.json().await.unwrap();
    let row = recs.as_array().unwrap().iter().find(|r| r["id"] == id).cloned().unwrap();
    assert_eq!(row["state"], "finalized", "{row}");
    let files: Value =
        d.get(&format!("/api/v1/recordings/{id}/files"), Some(&admin)).await.json().await.unwrap();
    assert_eq!(files.as_array().unwrap().len(), 2, "{files}");
    for f in files.as_array().unwrap() {
        assert_eq!(f["state"], "finalized", "{f}");
        let (codec, frames, _) = probe(Path::new(f["path"].as_str().unwrap()));
        assert!(frames > 0, "{codec}");
    }
    let audit: Value = d.get("/api/v1/audit", Some(&admin)).await.json().await.unwrap();
    let stop = audit.as_array().unwrap().iter().find(|a| a["action"] == "recording_stop").cloned().unwrap();
    assert!(stop["detail"].as_str().unwrap().contains("disk_full"), "{stop}");
    let rooms: Value = d.get("/api/v1/rooms", Some(&admin)).await.json().await.unwrap();
    assert!(rooms.to_string().contains("\"kept\""), "{rooms}");
    std::fs::remove_file(&filler).unwrap();
    d.running.shutdown().await;
}
