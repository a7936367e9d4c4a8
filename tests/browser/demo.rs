//! The appliance's demo with real browsers (issue 4, item 1): the same
//! `roombox::daemon::demo` that `roomboxd demo` runs — HTTPS with its
//! self-signed certificate, room `demo`, the synthetic room camera and
//! microphone publishing as participant `room` — opened through its printed
//! join link in headless Chromium tabs with the real web client; the meeting
//! metrics move with those real joins and leaves; the TV view (with its
//! display credential) and the admin page against the same daemon; and a
//! plain WHEP viewer that decodes the room camera and reads its burnt-in
//! timecode back from the picture (capture-to-browser latency, printed).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use roombox_tests::stats::fake_mic_script;
use roombox_tests::{Browser, LaunchOptions, Tab, artifacts_dir, wait_until};
use serde::Deserialize;

roombox_tests::browser_test_main!(
    demo_in_three_tabs_shows_everyone_and_follows_the_speaker,
    tv_and_admin_pages_drive_the_demo,
    whep_viewer_decodes_the_room_camera_and_reads_its_timecode
);

/// Loud enough to be the active speaker; the other tabs send silence.
const LOUD: f32 = 0.8;

struct Demo {
    running: Option<roombox::daemon::Running>,
    info: roombox::daemon::DemoInfo,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn start() -> anyhow::Result<Demo> {
        let dir = tempfile::Builder::new().prefix("rbx-demo-").tempdir()?;
        // As `roomboxd demo --data-dir DIR`, with ports the namespace picks.
        let mut cfg = roombox::daemon::demo_config("127.0.0.1:0".parse()?, dir.path().to_owned());
        cfg.sfu.udp_bind = "0.0.0.0:0".parse()?;
        cfg.sfu.tcp_bind = None;
        let (running, info) = roombox::daemon::demo(cfg).await.context("starting the demo")?;
        ensure!(
            info.join_link.starts_with("https://") && info.join_link.contains("#room=demo&token="),
            "unexpected join link {}",
            info.join_link
        );
        Ok(Demo { running: Some(running), info, _dir: dir })
    }

    fn running(&self) -> &roombox::daemon::Running {
        self.running.as_ref().expect("running until stop")
    }

    /// The room media must run in the demo: no excuse.
    fn check_room_media(&self) -> anyhow::Result<()> {
        let media = self.running().state.device.state().media;
        ensure!(media.running, "the demo's room media is not running: {}", media.detail);
        Ok(())
    }

    /// The demo's metrics, as `/metrics` serves them.
    fn metrics_text(&self) -> anyhow::Result<String> {
        Ok(self.running().state.metrics.render()?)
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Open the join link as `name`, through the device preview and the Join button.
async fn join(browser: &Browser, link: &str, name: &str, gain: f32) -> anyhow::Result<(Tab, String)> {
    let tab =
        browser.new_tab_with(&format!("{link}&name={name}"), &[&fake_mic_script(gain)]).await?.named(name);
    tab.wait_for(
        "the device preview",
        "!document.getElementById('prejoin').hidden && document.getElementById('preview').videoWidth > 0",
        Duration::from_secs(20),
    )
    .await?;
    let shown: String = tab.eval_as("document.getElementById('display-name').value").await?;
    ensure!(shown == name, "the name field shows {shown:?}, the link said {name:?}");
    tab.eval("document.getElementById('join').click(); true").await?;
    let identity: String = tab
        .wait_for(
            "a guest identity",
            "window.roombox.session && window.roombox.session.you?.identity",
            Duration::from_secs(20),
        )
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((tab, identity))
}

#[derive(Debug, Deserialize)]
struct TileView {
    identity: String,
    source: String,
    frames: u64,
    speaking: bool,
    name: String,
}

const TILES_JS: &str = "[...document.querySelectorAll('#grid .tile')].map(t => ({ \
    identity: t.dataset.identity || '', source: t.dataset.source || '', \
    frames: t.querySelector('video').getVideoPlaybackQuality().totalVideoFrames, \
    speaking: t.classList.contains('speaking'), name: t.querySelector('.name').textContent }))";

async fn tiles(tab: &Tab) -> anyhow::Result<Vec<TileView>> {
    tab.eval_as(TILES_JS).await
}

/// What a tab receives from the room participant: its camera's codec and
/// decoded frames, its microphone's packets (matched by mid through the
/// session's track list, so the people's streams are not counted).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomMediaStats {
    video_codec: Option<String>,
    frames_decoded: u64,
    audio_packets: u64,
}

const ROOM_MEDIA_JS: &str = r#"(async () => {
  const s = window.roombox.session;
  const mids = (source) => [...s.subscribed.entries()]
    .filter(([id]) => (s.trackInfo(id) || {}).source === source).map(([, mid]) => String(mid));
  const cam = mids('room_camera'), mic = mids('room_microphone');
  const out = { videoCodec: null, framesDecoded: 0, audioPackets: 0 };
  for (const pc of await window.__rbx.allStats()) {
    for (const i of pc.inbound) {
      if (i.kind === 'video' && cam.includes(String(i.mid))) { out.videoCodec = i.codec; out.framesDecoded += i.framesDecoded; }
      if (i.kind === 'audio' && mic.includes(String(i.mid))) out.audioPackets += i.packetsReceived;
    }
  }
  return out;
})()"#;

/// The room camera decodes as H.264 and the room microphone's packets keep arriving.
async fn wait_room_media(tab: &Tab, timeout: Duration) -> anyhow::Result<RoomMediaStats> {
    let first: RoomMediaStats =
        wait_until(&format!("{}: the room's H.264 and audio", tab.label()), timeout, async || {
            let m: RoomMediaStats = tab.eval_as(ROOM_MEDIA_JS).await?;
            ensure!(m.frames_decoded > 0 && m.audio_packets > 0, "{m:?}");
            Ok(m)
        })
        .await?;
    let codec = first.video_codec.clone().unwrap_or_default();
    ensure!(
        codec.eq_ignore_ascii_case("video/H264"),
        "{}: the room camera arrives as {codec:?}",
        tab.label()
    );
    wait_until(&format!("{}: the room's media to keep coming", tab.label()), timeout, async || {
        let m: RoomMediaStats = tab.eval_as(ROOM_MEDIA_JS).await?;
        ensure!(
            m.frames_decoded >= first.frames_decoded + 10 && m.audio_packets >= first.audio_packets + 25,
            "{first:?} -> {m:?}"
        );
        Ok(m)
    })
    .await
}

/// The value of one series in a metrics text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `promtool check metrics` finds nothing to say.
fn promtool_check(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("promtool (Debian package prometheus; scripts/test installs it)")?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    Ok(())
}

/// Wait until `tab` plays video from each of `identities` and (when
/// `room_camera`) from the room camera, then until every one of those tiles
/// has shown 10 more frames.
async fn wait_tiles_playing(
    tab: &Tab,
    identities: &[&str],
    room_camera: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let playing =
        |t: &[TileView], who: &str| t.iter().find(|v| v.identity == who && v.frames > 0).map(|v| v.frames);
    let room =
        |t: &[TileView]| t.iter().find(|v| v.source == "room_camera" && v.frames > 0).map(|v| v.frames);
    let first = wait_until(
        &format!("{}: the others and the room camera playing", tab.label()),
        timeout,
        async || {
            let t = tiles(tab).await?;
            let mut frames = Vec::new();
            for who in identities {
                frames.push(playing(&t, who).with_context(|| format!("no playing tile of {who}: {t:?}"))?);
            }
            if room_camera {
                frames.push(room(&t).with_context(|| format!("no playing room camera tile: {t:?}"))?);
            }
            Ok(frames)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tab.console_tail(30)))?;
    wait_until(&format!("{}: every tile to keep playing", tab.label()), timeout, async || {
        let t = tiles(tab).await?;
        for (i, who) in identities.iter().enumerate() {
            let f = playing(&t, who).unwrap_or(0);
            ensure!(f >= first[i] + 10, "{who}: {} -> {f} frames", first[i]);
        }
        if !room_camera {
            return Ok(());
        }
        let f = room(&t).unwrap_or(0);
        ensure!(f >= first[identities.len()] + 10, "room camera: {} -> {f} frames", first[identities.len()]);
        Ok(())
    })
    .await
}

/// Every tab agrees that `speaker` speaks: its tile is the highlighted one.
async fn wait_speaker(tabs: &[(Tab, String)], speaker: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for (tab, me) in tabs {
        wait_until(&format!("{}: {speaker} highlighted as the speaker", tab.label()), timeout, async || {
            let t = tiles(tab).await?;
            let lit: Vec<&str> = t.iter().filter(|v| v.speaking).map(|v| v.identity.as_str()).collect();
            // Our own tile carries our identity too.
            ensure!(lit == [speaker] || (me == speaker && lit.contains(&speaker)), "highlighted: {lit:?}");
            Ok(())
        })
        .await?;
    }
    Ok(start.elapsed())
}

/// Three people open the demo's join link: each sees the other two and the
/// room camera playing, the highlight follows whoever speaks, and a
/// screenshot of the grid is written.
async fn demo_in_three_tabs_shows_everyone_and_follows_the_speaker() -> anyhow::Result<()> {
    let demo = Demo::start().await?;
    println!("    demo at {} (join link printed by the daemon)", demo.info.url);
    let browser = Browser::launch(LaunchOptions { label: "demo".into(), ..Default::default() }).await?;
    let mut tabs = Vec::new();
    for (name, gain) in [("Ann", LOUD), ("Bob", 0.0), ("Cid", 0.0)] {
        tabs.push(join(&browser, &demo.info.join_link, name, gain).await?);
    }
    let ids: Vec<String> = tabs.iter().map(|(_, id)| id.clone()).collect();
    demo.check_room_media()?;
    ensure!(ids.iter().all(|i| i.starts_with("guest-")), "identities {ids:?}");

    let t0 = Instant::now();
    let mut room_media = Vec::new();
    for (i, (tab, _)) in tabs.iter().enumerate() {
        let others: Vec<&str> =
            ids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, s)| s.as_str()).collect();
        wait_tiles_playing(tab, &others, true, Duration::from_secs(60)).await?;
        room_media.push(wait_room_media(tab, Duration::from_secs(30)).await?);
    }
    let playing_after = t0.elapsed();

    // The seed's metrics with real people: one meeting, three people (the room camera is not one).
    let text = demo.metrics_text()?;
    promtool_check(&text)?;
    let l = "{region=\"demo\",server_id=";
    let meetings = text.lines().find(|x| x.starts_with(&format!("active_meetings_total{l}"))).unwrap_or("");
    ensure!(meetings.ends_with(" 1"), "active_meetings_total with three people in: {meetings:?}");
    ensure!(
        series(&text, "roombox_participants") == Some(3.0),
        "roombox_participants: {:?}",
        series(&text, "roombox_participants")
    );
    for name in [
        "roombox_media_captured_frames_total",
        "roombox_media_capture_fps",
        "roombox_media_encode_seconds_bucket",
        "roombox_media_packets_sent_total",
        "sfu_forwarded_packets_total{room=\"demo\"}",
        "sfu_participants",
        "sfu_rooms",
    ] {
        ensure!(text.contains(name), "{name} is not in /metrics");
    }
    // Names come from the invite exchange: the others see "Ann", not an identity.
    let seen_by_bob = tiles(&tabs[1].0).await?;
    ensure!(seen_by_bob.iter().any(|t| t.name == "Ann"), "Bob's tiles: {seen_by_bob:?}");

    let ann_after = wait_speaker(&tabs, &ids[0], Duration::from_secs(30)).await?;
    tabs[0].0.eval("window.__rbxAudio.set(0)").await?;
    tabs[1].0.eval(&format!("window.__rbxAudio.set({LOUD})")).await?;
    let moved = Instant::now();
    wait_speaker(&tabs, &ids[1], Duration::from_secs(30)).await?;
    let moved_after = moved.elapsed();

    let png = artifacts_dir().join("demo/grid.png");
    tabs[2].0.screenshot(&png).await?;
    println!(
        "    3 tabs: everyone and the room camera playing after {:.1} s (room H.264 frames decoded per tab: {:?}); \
         Ann highlighted after {:.1} s; the highlight moved to Bob {:.1} s after he spoke\n    screenshot of Cid's grid: {}",
        playing_after.as_secs_f64(),
        room_media.iter().map(|m| m.frames_decoded).collect::<Vec<_>>(),
        ann_after.as_secs_f64(),
        moved_after.as_secs_f64(),
        png.display()
    );

    // People leave: the histogram counts each leave, the meeting ends with the last person.
    let count = |t: &str| {
        t.lines()
            .find(|x| x.starts_with(&format!("meeting_participants_duration_count{l}")))
            .and_then(|x| x.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    let before = count(&text);
    let (cid, _) = tabs.pop().context("Cid's tab")?;
    cid.close().await?;
    wait_until("Cid's leave in the metrics", Duration::from_secs(30), async || {
        let t = demo.metrics_text()?;
        ensure!(
            series(&t, "roombox_participants") == Some(2.0) && count(&t) == before + 1.0,
            "participants {:?}, leaves {}",
            series(&t, "roombox_participants"),
            count(&t)
        );
        Ok(())
    })
    .await?;
    drop(tabs);
    drop(browser);
    let after = wait_until("the meeting's end in the metrics", Duration::from_secs(60), async || {
        let t = demo.metrics_text()?;
        let m = t.lines().find(|x| x.starts_with(&format!("active_meetings_total{l}"))).unwrap_or("");
        ensure!(m.ends_with(" 0") && count(&t) == before + 3.0, "{m:?}, leaves {}", count(&t));
        Ok(t)
    })
    .await?;
    promtool_check(&after)?;
    println!(
        "    metrics: 1 meeting with 3 people, then 0; meeting_participants_duration_count {before} -> {}",
        count(&after)
    );
    demo.stop().await;
    Ok(())
}

/// The TV link shows the person and the room camera without sound; the
/// admin page (signed in with the demo's first-boot password) lists the live
/// meeting and its mute reaches the person's tab.
async fn tv_and_admin_pages_drive_the_demo() -> anyhow::Result<()> {
    let demo = Demo::start().await?;
    let browser = Browser::launch(LaunchOptions { label: "tv-admin".into(), ..Default::default() }).await?;
    let (ann, ann_id) = join(&browser, &demo.info.join_link, "Ann", LOUD).await?;

    // The TV's display credential, as the admin page's "TV link" makes it.
    let (display, credential) = demo
        .running()
        .state
        .auth
        .create_display("demo", "TV of demo", "admin", roombox_tests::unix_now())
        .await
        .context("making the TV's display credential")?;
    let tv = browser
        .new_tab(&format!("{}/display#room=demo&display={credential}", demo.info.url))
        .await?
        .named("tv");
    wait_tiles_playing(&tv, &[ann_id.as_str()], true, Duration::from_secs(60)).await?;
    let shown: String = tv.eval_as("location.href").await?;
    ensure!(!shown.contains("rbd_"), "the credential stays in the address bar: {shown}");
    // A reload of the bare page (a power cut, a kiosk restart): the TV comes back by itself.
    tv.goto(&format!("{}/display", demo.info.url)).await?;
    wait_tiles_playing(&tv, &[ann_id.as_str()], true, Duration::from_secs(60)).await?;
    let audio: u64 = tv.eval_as("document.querySelectorAll('audio').length").await?;
    ensure!(audio == 0, "the TV plays sound ({audio} audio elements)");
    // Ann's grid does not show the TV as a person.
    wait_until("Ann's grid without the TV", Duration::from_secs(10), async || {
        let t = tiles(&ann).await?;
        ensure!(!t.iter().any(|v| v.name.contains("display")), "{t:?}");
        Ok(())
    })
    .await?;

    let password = demo.info.admin_password.clone().context("the demo printed no admin password")?;
    let admin = browser.new_tab(&format!("{}/admin", demo.info.url)).await?.named("admin");
    admin
        .wait_for("the sign-in form", "!document.getElementById('login').hidden", Duration::from_secs(10))
        .await?;
    admin
        .eval(&format!(
            "document.getElementById('login-user').value = 'admin'; \
             document.getElementById('login-pass').value = {}; \
             document.getElementById('login-form').requestSubmit(); true",
            serde_json::to_string(&password)?
        ))
        .await?;
    admin
        .wait_for(
            "Ann in the live meeting",
            "[...document.querySelectorAll('#live .who')].some(w => w.textContent.startsWith('Ann'))",
            Duration::from_secs(20),
        )
        .await?;
    admin
        .eval(
            "[...document.querySelectorAll('#live button')].find(b => b.getAttribute('aria-label') === 'Mute Ann').click(); true",
        )
        .await?;
    ann.wait_for(
        "Ann's mute button to show she was muted",
        "document.getElementById('btn-mic').getAttribute('aria-pressed') === 'true'",
        Duration::from_secs(15),
    )
    .await?;
    let health: String = admin.eval_as("document.getElementById('device').textContent").await?;
    ensure!(!health.is_empty() && !health.contains("Not available"), "device panel: {health:?}");
    // The simulated panel: the live LED is lit (Ann is in), its button mutes the room.
    admin
        .wait_for(
            "the live LED lit on the admin page",
            "document.querySelector('#gpio .led[aria-label^=\"live\"]')?.dataset.on === 'true'",
            Duration::from_secs(15),
        )
        .await?;
    admin
        .eval("document.querySelector('#gpio .gpio-button').dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true })); true")
        .await?;
    wait_until("the panel's button to mute the room", Duration::from_secs(15), async || {
        let st = demo.running().state.device.state();
        ensure!(st.mic_muted, "{st:?}");
        Ok(())
    })
    .await?;
    admin
        .wait_for(
            "the muted LED lit on the admin page",
            "document.querySelector('#gpio .led[aria-label^=\"muted\"]')?.dataset.on === 'true'",
            Duration::from_secs(15),
        )
        .await?;
    admin
        .wait_for(
            "the TV listed under TV displays",
            "document.getElementById('displays').textContent.includes('TV of demo')",
            Duration::from_secs(15),
        )
        .await?;
    let png = artifacts_dir().join("demo/admin.png");
    admin.screenshot(&png).await?;
    let png_tv = artifacts_dir().join("demo/tv.png");
    tv.screenshot(&png_tv).await?;
    // Revoked (as the admin page's Revoke button does): the TV leaves the room.
    let status: u64 = admin
        .eval_as(&format!(
            "fetch('/api/v1/displays/{}', {{ method: 'DELETE', headers: {{ Authorization: 'Bearer ' + window.roombox.keeper.access }} }}).then(r => r.status)",
            display.id
        ))
        .await?;
    ensure!(status == 204, "revoking the TV answered {status}");
    wait_until("the TV out of the room", Duration::from_secs(20), async || {
        let rooms = demo.running().state.sfu.as_ref().context("sfu")?.rooms().await?;
        let ids: Vec<String> =
            rooms.iter().flat_map(|r| r.participants.iter().map(|p| p.identity.clone())).collect();
        ensure!(!ids.iter().any(|i| i.starts_with("display-")), "{ids:?}");
        Ok(())
    })
    .await?;
    println!(
        "    TV (display credential, back after a reload, revoked) and admin pages work; screenshots {} and {}",
        png_tv.display(),
        png.display()
    );
    drop(browser);
    demo.stop().await;
    Ok(())
}

/// A plain WHEP viewer (fetch + RTCPeerConnection, as any third-party client):
/// `POST /whep/demo/room` with a subscribe-only token, non-trickle.
const WHEP_VIEWER_JS: &str = r#"
window.whepView = async (path, token) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.replaceChildren(video);
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
  await pc.setLocalDescription();
  await new Promise((ok) => {
    if (pc.iceGatheringState === 'complete') return ok();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && ok());
  });
  const res = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` }, body: pc.localDescription.sdp });
  const body = await res.text();
  if (res.status !== 201) throw new Error(`${path}: ${res.status} ${body}`);
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  // Read the burnt-in timecode (two rows of 32 bits + a black/white guard, see
  // firmware-app/src/media/timecode.rs) from every frame shown, with the time it was.
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const samples = [];
  window.__tc = { samples, unreadable: 0 };
  const read = (now, meta) => {
    const w = meta.width, h = meta.height;
    const b = Math.max(4, Math.min(32, Math.floor(Math.floor(w / 2) / 34))) & ~1;
    if (w >= 34 * b && h >= 2 * b) {
      canvas.width = 34 * b; canvas.height = 2 * b;
      ctx.drawImage(video, 0, 0, canvas.width, canvas.height, 0, 0, canvas.width, canvas.height);
      const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      const bit = (row, i) => {
        const q = Math.max(1, b >> 2), cx = i * b + (b >> 1), cy = row * b + (b >> 1);
        let sum = 0, n = 0;
        for (let y = cy - q; y < cy + q; y++) for (let x = cx - q; x < cx + q; x++) {
          const o = (y * canvas.width + x) * 4;
          sum += 0.299 * px[o] + 0.587 * px[o + 1] + 0.114 * px[o + 2]; n++;
        }
        return sum / n > 128;
      };
      const value = (row) => {
        if (bit(row, 32) || !bit(row, 33)) return null;
        let v = 0;
        for (let i = 0; i < 32; i++) v = v * 2 + (bit(row, i) ? 1 : 0);
        return v;
      };
      const frame = value(0), ms = value(1);
      if (frame !== null && ms !== null && samples.length < 2000) {
        samples.push({ frame, ms, shownAt: performance.timeOrigin + meta.presentationTime,
          receivedAt: meta.receiveTime ? performance.timeOrigin + meta.receiveTime : null, w, h });
      } else if (frame === null || ms === null) {
        window.__tc.unreadable++;
      }
    }
    video.requestVideoFrameCallback(read);
  };
  video.requestVideoFrameCallback(read);
  window.__whep = { pc, video };
  return true;
};
true
"#;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimecodeSample {
    frame: u32,
    ms: u32,
    shown_at: f64,
    received_at: Option<f64>,
    w: u32,
    h: u32,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Issue 3, item 4: a headless Chromium WHEP viewer of the demo's room
/// participant decodes its synthetic camera (H.264) and receives its audio;
/// the burnt-in timecode is read back from the picture and turned into the
/// capture-to-browser latency (printed, never judged).
async fn whep_viewer_decodes_the_room_camera_and_reads_its_timecode() -> anyhow::Result<()> {
    let demo = Demo::start().await?;
    demo.check_room_media()?;
    let clock = demo.running().state.device.media_clock().context("the room media's clock")?;
    let epoch_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64()
        * 1000.0
        - clock.epoch().elapsed().as_secs_f64() * 1000.0;
    let (token, _) = demo.running().state.auth.issue_access(
        "viewer",
        "demo",
        sfu_core::Grants { subscribe: true, ..Default::default() },
        Duration::from_secs(600),
        None,
        None,
        roombox_tests::unix_now(),
    )?;
    let browser = Browser::launch(LaunchOptions { label: "whep".into(), ..Default::default() }).await?;
    // Any page of the daemon's origin (HTTPS: a secure context) will do.
    let tab = browser.new_tab(&format!("{}/healthz", demo.info.url)).await?.named("whep");
    tab.eval(WHEP_VIEWER_JS).await?;
    tab.eval(&format!("window.whepView('/whep/demo/room', {})", serde_json::to_string(&token)?)).await?;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Seen {
        codec: Option<String>,
        frames: u64,
        audio: u64,
        width: u64,
    }
    const SEEN_JS: &str = "(async () => { const [s] = await window.__rbx.allStats(); \
        const v = s.inbound.find(i => i.kind === 'video') || {}; const a = s.inbound.find(i => i.kind === 'audio') || {}; \
        return { codec: v.codec || null, frames: v.framesDecoded || 0, audio: a.packetsReceived || 0, width: v.frameWidth || 0 }; })()";
    let seen: Seen =
        wait_until("the room camera decoded and its audio received", Duration::from_secs(45), async || {
            let s: Seen = tab.eval_as(SEEN_JS).await?;
            let n: u64 = tab.eval_as("window.__tc.samples.length").await?;
            ensure!(s.frames >= 90 && s.audio >= 100 && n >= 60, "{s:?}, {n} timecodes read");
            Ok(s)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", tab.console_tail(20)))?;
    ensure!(seen.codec.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("video/H264")), "{seen:?}");

    let samples: Vec<TimecodeSample> = tab.eval_as("window.__tc.samples").await?;
    let unreadable: u64 = tab.eval_as("window.__tc.unreadable").await?;
    // The frame numbers read back go up: the pixels really are the room camera's.
    let rising = samples.windows(2).filter(|w| w[1].frame > w[0].frame).count();
    ensure!(
        rising * 10 >= samples.len().saturating_sub(1) * 9,
        "timecode frame numbers do not rise: {:?}",
        &samples[..samples.len().min(10)]
    );
    let mut shown: Vec<f64> =
        samples.iter().map(|s| s.shown_at - (epoch_unix_ms + f64::from(s.ms))).collect();
    shown.sort_by(f64::total_cmp);
    let mut received: Vec<f64> =
        samples.iter().filter_map(|s| Some(s.received_at? - (epoch_unix_ms + f64::from(s.ms)))).collect();
    received.sort_by(f64::total_cmp);
    let last = samples.last().context("no timecode")?;
    println!(
        "    WHEP viewer: {} H.264 frames decoded ({} px wide; timecodes read at {}x{}), {} audio packets; {} timecodes read ({} frames unreadable)\n    \
         capture -> browser latency (load average {:.2}): shown p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms; \
         last packet received p50 {:.0} ms ({} samples)",
        seen.frames,
        seen.width,
        last.w,
        last.h,
        seen.audio,
        samples.len(),
        unreadable,
        load_average(),
        percentile(&shown, 0.5),
        percentile(&shown, 0.9),
        shown.last().copied().unwrap_or(f64::NAN),
        percentile(&received, 0.5),
        received.len(),
    );
    drop(browser);
    demo.stop().await;
    Ok(())
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
