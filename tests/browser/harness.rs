//! Self-tests of the browser harness, with no server of ours involved: headless
//! Chromium's fake devices, ICE on the namespace's veth address, the DevTools
//! driver, statistics, screenshots, a second namespace and a tc squeeze.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use roombox_tests::netns::{LAN_IP, LinkedNetns, Squeeze};
use roombox_tests::stats::{RateMeter, total_inbound};
use roombox_tests::{Browser, LaunchOptions, Tab, WebServer, artifacts_dir, wait_until};

roombox_tests::browser_test_main!(
    loopback_call_decodes_fake_media,
    squeezed_link_lowers_the_received_rate,
    web_client_pages_load_cleanly,
);

/// Two peer connections in one page: the fake camera is decoded (frames rise),
/// the fake microphone's packets arrive, ICE used the veth address, and a
/// screenshot shows the picture.
async fn loopback_call_decodes_fake_media() -> anyhow::Result<()> {
    let web = WebServer::start(([127, 0, 0, 1], 0).into(), None).await?;
    let browser = Browser::launch(LaunchOptions { label: "loopback".into(), ..Default::default() }).await?;
    let tab = browser.new_tab(&web.url("/pages/loopback.html")).await?;
    tab.wait_for("the call to be set up", "window.ready === true", Duration::from_secs(20)).await?;

    let first = wait_frames(&tab, 10, Duration::from_secs(20)).await?;
    let later = wait_frames(&tab, first.0 + 30, Duration::from_secs(20)).await?;
    ensure!(later.1 > first.1, "audio packets did not rise: {} then {}", first.1, later.1);

    let candidates: Vec<String> = tab.eval_as("window.candidates").await?;
    ensure!(
        candidates.iter().any(|c| c.contains(&LAN_IP.to_string())),
        "no ICE candidate on {LAN_IP}: {candidates:?}"
    );
    // The fake camera gives the size asked for; the picture decoded is that
    // size or a scaled-down one while the bandwidth estimate ramps up.
    let source: (u32, u32) = tab
        .eval_as("(() => { const s = window.localVideo.getSettings(); return [s.width, s.height]; })()")
        .await?;
    ensure!(source == (1280, 720), "the fake camera gave {source:?}, not the 1280x720 asked for");
    let stats = tab.stats().await?;
    let width = stats.iter().flat_map(|p| p.inbound_of("video")).map(|i| i.frame_width).max().unwrap_or(0);
    ensure!(width > 0 && width <= 1280, "decoded width {width}");

    let played: u64 =
        tab.eval_as("document.getElementById('remote').getVideoPlaybackQuality().totalVideoFrames").await?;
    ensure!(played > 0, "the <video> element rendered no frame");

    let png = artifacts_dir().join("harness/loopback.png");
    tab.screenshot(&png).await?;
    println!(
        "    decoded {} frames at {width} px, {} audio packets; screenshot {}",
        later.0,
        later.1,
        png.display()
    );
    Ok(())
}

/// (video frames decoded, audio packets received) once frames reach `at_least`.
async fn wait_frames(tab: &Tab, at_least: u64, timeout: Duration) -> anyhow::Result<(u64, u64)> {
    wait_until(&format!("{at_least} frames decoded"), timeout, async || {
        let s = tab.stats().await?;
        let frames = total_inbound(&s, "video", |i| i.frames_decoded);
        let packets = total_inbound(&s, "audio", |i| i.packets_received);
        ensure!(frames >= at_least, "{frames} frames, {packets} audio packets");
        Ok((frames, packets))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tab.console_tail(20)))
}

/// A sender in our namespace, a receiver in a second one behind a veth pair:
/// a 200 kbit/s tbf on our end pulls the received rate down, lifting it lets
/// the rate climb back (well over the squeeze: it is gone).
async fn squeezed_link_lowers_the_received_rate() -> anyhow::Result<()> {
    let link = LinkedNetns::create(1)?;
    let web = WebServer::start((link.host_ip, 0).into(), None).await?;
    let origin = format!("--unsafely-treat-insecure-origin-as-secure={}", web.url(""));
    let sender_browser =
        Browser::launch(LaunchOptions { label: "sender".into(), args: vec![origin.clone()], netns: None })
            .await?;
    let receiver_browser = Browser::launch(LaunchOptions {
        label: "receiver".into(),
        args: vec![origin],
        netns: Some(link.name.clone()),
    })
    .await?;
    let url = web.url("/pages/peer.html");
    let sender = sender_browser.new_tab(&url).await?;
    let receiver = receiver_browser.new_tab(&url).await?;
    for t in [&sender, &receiver] {
        t.wait_for("page ready", "window.ready === true", Duration::from_secs(20)).await?;
    }
    let offer: String = sender.eval_as("window.startSender(1500)").await?;
    let answer: String =
        receiver.eval_as(&format!("window.startReceiver({})", serde_json::to_string(&offer)?)).await?;
    sender.eval(&format!("window.accept({})", serde_json::to_string(&answer)?)).await?;

    let rate = |tab: Tab| async move {
        let s = tab.stats().await?;
        anyhow::Ok(total_inbound(&s, "video", |i| i.bytes_received))
    };
    let mut meter = RateMeter::new(Duration::from_secs(2));
    let free = wait_until("the receiver to get over 450 kbit/s", Duration::from_secs(40), async || {
        let r = meter.push(Instant::now(), rate(receiver.clone()).await?);
        match r {
            Some(bps) if bps > 450_000.0 => Ok(bps),
            other => anyhow::bail!("rate {other:?}"),
        }
    })
    .await?;

    let squeeze = Squeeze::apply(&link.host_dev, 200).context("tc tbf")?;
    let t0 = Instant::now();
    meter.reset();
    let squeezed =
        wait_until("the received rate to fall under 300 kbit/s", Duration::from_secs(30), async || {
            let r = meter.push(Instant::now(), rate(receiver.clone()).await?);
            match r {
                Some(bps) if bps < 300_000.0 => Ok(bps),
                other => anyhow::bail!("rate {other:?}"),
            }
        })
        .await?;
    let fell_after = t0.elapsed();

    squeeze.lift()?;
    let t1 = Instant::now();
    meter.reset();
    let recovered = wait_until(
        "the received rate to climb over 320 kbit/s (1.6x the squeeze)",
        Duration::from_secs(60),
        async || {
            let r = meter.push(Instant::now(), rate(receiver.clone()).await?);
            match r {
                Some(bps) if bps > 320_000.0 => Ok(bps),
                other => anyhow::bail!("rate {other:?}"),
            }
        },
    )
    .await?;
    println!(
        "    free {:.0} kbit/s; squeezed to 200 kbit/s: {:.0} kbit/s after {:.1} s; lifted: {:.0} kbit/s after {:.1} s",
        free / 1e3,
        squeezed / 1e3,
        fell_after.as_secs_f64(),
        recovered / 1e3,
        t1.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The web client's pages load without a server behind them and say what is
/// wrong; the service worker installs and caches every shell file (so none is
/// missing); the token helpers behave.
async fn web_client_pages_load_cleanly() -> anyhow::Result<()> {
    let web = WebServer::start(([127, 0, 0, 1], 0).into(), None).await?;
    let browser = Browser::launch(LaunchOptions { label: "web-client".into(), ..Default::default() }).await?;

    // No link: the start screen asks for one.
    let tab = browser.new_tab(&web.url("/")).await?;
    tab.wait_for("the start screen", "!document.getElementById('start').hidden", Duration::from_secs(10))
        .await?;
    let cached: u64 = tab
        .eval_as(
            "(async () => { await navigator.serviceWorker.ready; \
              const c = await caches.open('roombox-shell-v2'); return (await c.keys()).length; })()",
        )
        .await?;
    ensure!(cached >= 19, "the service worker cached {cached} shell files");
    let manifest: serde_json::Value =
        tab.eval_as("fetch('/manifest.webmanifest').then(r => r.json())").await?;
    ensure!(manifest["icons"].as_array().is_some_and(|i| !i.is_empty()), "manifest: {manifest}");

    // Pure helpers, in the browser that runs them.
    let checks: serde_json::Value = tab
        .eval_as(
            r#"(async () => {
              const { jwtClaims } = await import('/js/auth.js');
              const { scoreFrom } = await import('/js/quality.js');
              const b64 = (o) => btoa(String.fromCharCode(...new TextEncoder().encode(JSON.stringify(o)))).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
              const tok = `${b64({ alg: 'HS256' })}.${b64({ sub: 'zoë', room: 'r1', exp: 5 })}.sig`;
              return {
                claims: jwtClaims(tok),
                garbage: jwtClaims('not-a-token'),
                good: scoreFrom({ connected: true, rttMs: 20, lossFraction: 0, bandwidthLimited: false }),
                lossy: scoreFrom({ connected: true, rttMs: 20, lossFraction: 0.05, bandwidthLimited: false }),
                lost: scoreFrom({ connected: false, rttMs: 0, lossFraction: 0, bandwidthLimited: false }),
              };
            })()"#,
        )
        .await?;
    ensure!(checks["claims"]["sub"] == "zoë" && checks["claims"]["room"] == "r1", "{checks}");
    ensure!(checks["garbage"].is_null(), "{checks}");
    ensure!(checks["good"] == 3 && checks["lossy"] == 2 && checks["lost"] == 0, "{checks}");

    // A link but no room server: the preview plays, joining says it is reconnecting,
    // and the token is gone from the address bar.
    let tab = browser.new_tab(&web.url("/?room=r1&token=abc.def.ghi")).await?;
    tab.wait_for("the preview", "document.getElementById('preview').videoWidth > 0", Duration::from_secs(15))
        .await?;
    tab.screenshot(&artifacts_dir().join("harness/prejoin.png")).await?;
    let href: String = tab.eval_as("location.href").await?;
    ensure!(!href.contains("token"), "the token is still in the address bar: {href}");
    tab.eval("document.getElementById('join').click()").await?;
    tab.wait_for(
        "a reconnecting message",
        "document.body.dataset.state === 'reconnecting' && /Trying again/.test(document.getElementById('status').textContent)",
        Duration::from_secs(15),
    )
    .await?;

    // The TV page without a link, and the admin page without a session.
    let tab = browser.new_tab(&web.url("/display")).await?;
    tab.wait_for(
        "the display's error",
        "/display link/.test(document.getElementById('status').textContent)",
        Duration::from_secs(10),
    )
    .await?;
    let tab2 = browser.new_tab(&web.url("/admin")).await?;
    tab2.wait_for("the admin login", "!document.getElementById('login').hidden", Duration::from_secs(10))
        .await?;

    tab2.screenshot(&artifacts_dir().join("harness/admin-login.png")).await?;
    for t in [&tab, &tab2] {
        let uncaught: Vec<String> = t.console().into_iter().filter(|l| l.starts_with("[uncaught]")).collect();
        ensure!(uncaught.is_empty(), "{}: {uncaught:?}", t.label());
    }
    Ok(())
}
