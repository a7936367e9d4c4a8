//! Hostile clients against a running `roomboxd` (issue 14): each one is bounded
//! by a limit and counted in a metric, and the room is unharmed — a real
//! Chromium participant in the same room keeps decoding the room camera at
//! close to the frame rate it had before, and still gets chat.
//!
//! One daemon (the demo: HTTPS with its self-signed certificate, the synthetic
//! room camera publishing as `room`) and one Chromium for every case, in turn:
//! a room-protocol client that never reads its WebSocket, a slowloris on
//! HTTPS, 1000 half-open TLS handshakes, a flood of STUN binding requests with
//! wrong ufrags, RTP from an address that never did ICE, a participant that
//! publishes 50 tracks, and oversized chat messages on the data channel.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::SinkExt;
use roombox_tests::https::{get_ok, tls_over};
use roombox_tests::stats::fake_mic_script;
use roombox_tests::{Browser, LaunchOptions, Tab, wait_until};
use serde::Deserialize;
use sfu_core::auth::Grants;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

roombox_tests::browser_test_main!(hostile_clients_are_bounded_counted_and_the_room_plays_on);

/// The limits the daemon runs with here: the defaults' shape, shorter times
/// (so the test waits seconds, not the production values).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 400;
const MAX_PER_IP: usize = 200;

/// How long the room's frame rate is measured for, before and during each case.
const WINDOW: Duration = Duration::from_secs(4);

struct Daemon {
    running: Option<roombox::daemon::Running>,
    info: roombox::daemon::DemoInfo,
    _dir: tempfile::TempDir,
}

impl Daemon {
    async fn start() -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("rbx-hostile-").tempdir()?;
        let mut cfg = roombox::daemon::demo_config("127.0.0.1:0".parse()?, dir.path().to_owned());
        cfg.sfu.udp_bind = "0.0.0.0:0".parse()?;
        cfg.sfu.tcp_bind = None;
        cfg.http.tls_handshake_timeout = HANDSHAKE_TIMEOUT;
        cfg.http.header_read_timeout = HEADER_TIMEOUT;
        cfg.http.max_connections = MAX_CONNECTIONS;
        cfg.http.max_connections_per_ip = MAX_PER_IP;
        let (running, info) = roombox::daemon::demo(cfg).await.context("starting the demo")?;
        Ok(Daemon { running: Some(running), info, _dir: dir })
    }

    fn running(&self) -> &roombox::daemon::Running {
        self.running.as_ref().expect("running until stop")
    }

    fn addr(&self) -> SocketAddr {
        self.running().addr
    }

    fn udp(&self) -> anyhow::Result<SocketAddr> {
        let sfu = self.running().state.sfu.as_ref().context("the demo's SFU is not running")?;
        Ok(SocketAddr::from(([127, 0, 0, 1], sfu.udp_addr().port())))
    }

    fn metrics(&self) -> anyhow::Result<Metrics> {
        Ok(Metrics(self.running().state.metrics.render()?))
    }

    /// A room token for `identity` in `demo`.
    fn token(&self, identity: &str, publish: bool) -> anyhow::Result<String> {
        let grants = Grants { publish, subscribe: true, record: false, admin: false };
        let (t, _) = self.running().state.auth.issue_access(
            identity,
            "demo",
            grants,
            Duration::from_secs(900),
            None,
            None,
            roombox_tests::unix_now(),
        )?;
        Ok(t)
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A `/metrics` text.
struct Metrics(String);

impl Metrics {
    /// The sum of the series of `name` whose labels contain `label` (e.g. `reason="x"`).
    fn get(&self, name: &str, label: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let (labels, value) = match rest.strip_prefix('{') {
                    Some(r) => r.split_once("} ")?,
                    None => ("", rest.strip_prefix(' ')?),
                };
                labels.contains(label).then(|| value.trim().parse::<f64>().ok())?
            })
            .sum()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomMediaStats {
    frames_decoded: u64,
}

/// Frames the tab decoded from the room camera (matched by mid through the
/// session's track list).
const ROOM_FRAMES_JS: &str = r#"(async () => {
  const s = window.roombox.session;
  const cam = [...s.subscribed.entries()]
    .filter(([id]) => (s.trackInfo(id) || {}).source === 'room_camera').map(([, mid]) => String(mid));
  let framesDecoded = 0;
  for (const pc of await window.__rbx.allStats())
    for (const i of pc.inbound)
      if (i.kind === 'video' && cam.includes(String(i.mid))) framesDecoded += i.framesDecoded;
  return { framesDecoded };
})()"#;

/// The room camera's decoded frames per second in the viewer over [`WINDOW`],
/// while `attack` runs (it is polled alongside; its result is returned).
async fn fps_during<T>(
    viewer: &Tab,
    attack: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(f64, T)> {
    let frames = async || -> anyhow::Result<u64> {
        Ok(viewer.eval_as::<RoomMediaStats>(ROOM_FRAMES_JS).await?.frames_decoded)
    };
    let measure = async {
        let f0 = frames().await?;
        let t0 = Instant::now();
        tokio::time::sleep(WINDOW).await;
        let f1 = frames().await?;
        anyhow::Ok((f1.saturating_sub(f0)) as f64 / t0.elapsed().as_secs_f64())
    };
    let (fps, r) = tokio::join!(measure, attack);
    Ok((fps?, r?))
}

/// The viewer kept a frame rate close to the one it had before: at least half
/// (the machine is shared; a room that is harmed drops to 0).
fn check_fps(case: &str, before: f64, during: f64) -> anyhow::Result<()> {
    println!("    {case}: room camera {during:.1} frames/s in the viewer (before: {before:.1})");
    ensure!(
        during >= before * 0.5,
        "{case}: the viewer's frame rate fell from {before:.1} to {during:.1} frames/s"
    );
    Ok(())
}

async fn hostile_clients_are_bounded_counted_and_the_room_plays_on() -> anyhow::Result<()> {
    raise_fd_limit();
    let daemon = Daemon::start().await?;
    let browser = Browser::launch(LaunchOptions { label: "hostile".into(), ..Default::default() }).await?;
    let viewer = join(&browser, &daemon.info.join_link, "Viewer").await?;
    wait_until("the viewer decoding the room camera", Duration::from_secs(60), async || {
        let f = viewer.eval_as::<RoomMediaStats>(ROOM_FRAMES_JS).await?.frames_decoded;
        ensure!(f > 30, "{f} frames");
        Ok(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", viewer.console_tail(40)))?;
    let (before, ()) = fps_during(&viewer, async { Ok(()) }).await?;
    println!("    the viewer decodes the room camera at {before:.1} frames/s before any attack");
    ensure!(before > 3.0, "the room camera plays at {before:.1} frames/s before any attack");
    let participants = daemon.metrics()?.get("sfu_participants", "");

    // 1. A room-protocol client that never reads its WebSocket.
    let m0 = daemon.metrics()?;
    let token = daemon.token("never-reads", false)?;
    let (fps, sent) = fps_during(&viewer, ws_never_reads(daemon.addr(), &token)).await?;
    let dropped =
        wait_until("the server to drop the client that never reads", Duration::from_secs(40), async || {
            let m = daemon.metrics()?;
            let d = m.get("sfu_dropped_total", "reason=\"signaling_backlog\"")
                - m0.get("sfu_dropped_total", "reason=\"signaling_backlog\"");
            ensure!(d >= 1.0, "signaling_backlog +{d}");
            ensure!(
                m.get("sfu_participants", "") <= participants,
                "participants {}",
                m.get("sfu_participants", "")
            );
            Ok(d)
        })
        .await?;
    println!(
        "    never-reads: wrote {} kB of requests, dropped by the server (signaling_backlog +{dropped})",
        sent / 1000
    );
    check_fps("never-reads", before, fps)?;

    // 2. A slowloris on HTTPS: one header byte a second.
    let m0 = daemon.metrics()?;
    let (fps, held) = fps_during(&viewer, slowloris(daemon.addr())).await?;
    ensure!(held < HEADER_TIMEOUT + Duration::from_secs(3), "the slowloris connection stayed open {held:?}");
    let m = wait_until("the slowloris counted", Duration::from_secs(10), async || {
        let m = daemon.metrics()?;
        let d = m.get("roombox_http_requests_incomplete_total", "")
            - m0.get("roombox_http_requests_incomplete_total", "");
        ensure!(d >= 1.0, "incomplete +{d}");
        Ok(d)
    })
    .await?;
    println!(
        "    slowloris: closed by the server after {held:.1?} (header timeout {HEADER_TIMEOUT:?}; incomplete +{m})"
    );
    check_fps("slowloris", before, fps)?;

    // 3. 1000 half-open TLS handshakes.
    let m0 = daemon.metrics()?;
    let open0 = m0.get("roombox_http_connections", "");
    let (fps, conns) = fps_during(&viewer, half_open_tls(daemon.addr(), 1000)).await?;
    let (refused, timeouts) = wait_until(
        "every half-open handshake refused or timed out",
        HANDSHAKE_TIMEOUT + Duration::from_secs(20),
        async || {
            let m = daemon.metrics()?;
            let refused = m.get("roombox_http_connections_refused_total", "")
                - m0.get("roombox_http_connections_refused_total", "");
            let timeouts = m.get("roombox_http_tls_handshakes_failed_total", "reason=\"timeout\"")
                - m0.get("roombox_http_tls_handshakes_failed_total", "reason=\"timeout\"");
            ensure!(
                refused + timeouts >= conns.len() as f64,
                "refused {refused} + timed out {timeouts} < {}",
                conns.len()
            );
            ensure!(
                m.get("roombox_http_connections", "") <= open0,
                "open {}",
                m.get("roombox_http_connections", "")
            );
            Ok((refused, timeouts))
        },
    )
    .await?;
    ensure!(refused >= (conns.len() - MAX_PER_IP) as f64, "only {refused} refused past the per-IP limit");
    ensure!(timeouts <= MAX_PER_IP as f64, "{timeouts} handshakes held past the per-IP limit");
    drop(conns);
    check_fps("half-open TLS", before, fps)?;
    println!(
        "    half-open TLS: 1000 connections, {refused} refused at once, {timeouts} timed out after {HANDSHAKE_TIMEOUT:?}"
    );
    // and the daemon serves again
    get_ok(daemon.addr(), "/readyz", None).await.context("GET /readyz after the flood")?;

    // 4. STUN binding requests with wrong ufrags, 5. RTP from an address that never did ICE.
    let udp = daemon.udp()?;
    for (case, reason, packet) in [
        ("STUN with wrong ufrags", "unknown_ufrag", stun_binding(b"nobody:x")),
        ("RTP without ICE", "unknown_peer", rtp_packet()),
    ] {
        let m0 = daemon.metrics()?;
        let kernel0 = udp_socket_drops(udp.port())?;
        let label = format!("reason=\"{reason}\"");
        let (fps, sent) = fps_during(&viewer, udp_flood(udp, packet, 20_000)).await?;
        // Every datagram is counted by the SFU, or was dropped by the kernel
        // before it (a full socket buffer on a loaded machine): none vanish.
        let (counted, kernel) =
            wait_until(&format!("{case}: counted"), Duration::from_secs(10), async || {
                let d =
                    daemon.metrics()?.get("sfu_dropped_total", &label) - m0.get("sfu_dropped_total", &label);
                let k = udp_socket_drops(udp.port())?.saturating_sub(kernel0);
                ensure!(
                    d + k as f64 >= sent as f64,
                    "{reason} +{d} and {k} dropped by the kernel, of {sent} sent"
                );
                Ok((d, k))
            })
            .await?;
        ensure!(counted >= sent as f64 / 2.0, "{case}: only {counted} of {sent} reached the SFU");
        println!(
            "    {case}: {sent} datagrams sent, {counted} dropped and counted ({reason}), {kernel} dropped by the kernel (socket buffer full)"
        );
        check_fps(case, before, fps)?;
    }

    // 6. A participant that publishes 50 tracks, 7. and sends oversized chat.
    let m0 = daemon.metrics()?;
    let token = daemon.token("many-tracks", true)?;
    let hostile = browser.new_tab(&format!("{}/healthz", daemon.info.url)).await?.named("many-tracks");
    let (fps, r) = fps_during(&viewer, async {
        let r: HostileTab = hostile.eval_as(&hostile_tab_js(&token, 50, 100)).await?;
        Ok(r)
    })
    .await?;
    ensure!(r.errors.iter().any(|e| e == "too_many_tracks"), "no too_many_tracks error: {:?}", r.errors);
    let max = 6; // sfu limits.max_tracks_per_participant (default)
    let (tracks, big) =
        wait_until("too many tracks and oversized chat counted", Duration::from_secs(15), async || {
            let m = daemon.metrics()?;
            let d = |l: &str| m.get("sfu_dropped_total", l) - m0.get("sfu_dropped_total", l);
            let (tracks, big) = (d("reason=\"too_many_tracks\""), d("reason=\"chat_too_large\""));
            ensure!(tracks >= (50 - max) as f64, "too_many_tracks +{tracks}");
            ensure!(big >= r.big_sent as f64, "chat_too_large +{big} of {} sent", r.big_sent);
            Ok((tracks, big))
        })
        .await?;
    let sfu = daemon.running().state.sfu.clone().context("no SFU")?;
    let published: usize = sfu
        .rooms()
        .await?
        .iter()
        .flat_map(|r| &r.participants)
        .filter(|p| p.identity == "many-tracks")
        .map(|p| p.tracks.len())
        .sum();
    ensure!(published <= max, "{published} tracks published, past the limit of {max}");
    println!(
        "    50 tracks: refused past {max} with {:?} (too_many_tracks +{tracks}); {} oversized chat messages dropped (chat_too_large +{big})",
        r.errors.iter().find(|e| *e == "too_many_tracks"),
        r.big_sent
    );
    check_fps("50 tracks + oversized chat", before, fps)?;
    // the chat that fits still reaches the viewer
    viewer
        .wait_for(
            "the small chat message from the hostile tab",
            "[...document.querySelectorAll('.chat-log li')].some(li => li.textContent.includes('small and polite'))",
            Duration::from_secs(15),
        )
        .await?;
    hostile.close().await?;

    // After it all: the viewer still plays, /readyz is green.
    let (after, ()) = fps_during(&viewer, async { Ok(()) }).await?;
    check_fps("after every case", before, after)?;
    get_ok(daemon.addr(), "/readyz", None).await?;
    daemon.stop().await;
    Ok(())
}

/// Open the join link as `name` through the device preview and Join.
async fn join(browser: &Browser, link: &str, name: &str) -> anyhow::Result<Tab> {
    let tab =
        browser.new_tab_with(&format!("{link}&name={name}"), &[&fake_mic_script(0.0)]).await?.named(name);
    tab.wait_for(
        "the device preview",
        "!document.getElementById('prejoin').hidden && document.getElementById('preview').videoWidth > 0",
        Duration::from_secs(20),
    )
    .await?;
    tab.eval("document.getElementById('join').click(); true").await?;
    tab.wait_for(
        "joined",
        "window.roombox.session && window.roombox.session.you?.identity",
        Duration::from_secs(20),
    )
    .await?;
    Ok(tab)
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < 8192 {
            r.rlim_cur = r.rlim_max.min(8192);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

// ---------------------------------------------------------------- the cases

/// Join the room over `wss://…/ws/demo` from a socket with a tiny receive
/// buffer, then write requests whose replies are as large as they are (an
/// unknown message type is echoed in the error), never reading: until the
/// writes block (the server stopped reading us) or 32 MB. Returns the bytes written.
async fn ws_never_reads(addr: SocketAddr, token: &str) -> anyhow::Result<usize> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    let tcp = sock.connect(addr).await?;
    let tls = tls_over(tcp).await?;
    let url = format!("wss://localhost:{}/ws/demo", addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.context("WebSocket handshake")?;
    use tokio_tungstenite::tungstenite::Message;
    let join = serde_json::json!({ "type": "join", "token": token, "auto_subscribe": false }).to_string();
    ws.send(Message::text(join)).await?;
    let junk = format!("{{\"type\":\"{}\"}}", "x".repeat(8000));
    let mut sent = 0;
    while sent < 32_000_000 {
        match tokio::time::timeout(Duration::from_secs(2), ws.send(Message::text(junk.clone()))).await {
            Ok(Ok(())) => sent += junk.len(),
            Ok(Err(_)) | Err(_) => break, // the server stopped reading us, or closed
        }
    }
    // Hold the socket (never reading) until the server gives up on us.
    let deadline = Instant::now() + Duration::from_secs(30);
    let fd = {
        use std::os::fd::AsRawFd;
        ws.get_ref().get_ref().0.as_raw_fd()
    };
    while Instant::now() < deadline && socket_open(fd) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(sent)
}

/// Whether the peer has not closed (or reset) the connection, without reading it.
fn socket_open(fd: i32) -> bool {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt into a local struct of the size given.
    let r =
        unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len) };
    r == 0 && info.tcpi_state == 1 // TCP_ESTABLISHED
}

/// A TLS connection that sends a request's headers one byte a second; returns
/// how long the server kept it open.
async fn slowloris(addr: SocketAddr) -> anyhow::Result<Duration> {
    let mut s = tls_over(TcpStream::connect(addr).await?).await?;
    let start = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in head {
        if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
            return Ok(start.elapsed());
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Err(_) => {}                                          // still open, nothing said
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(start.elapsed()), // closed by the server
            Ok(Ok(_)) => bail!("the server answered a request whose headers never ended"),
        }
    }
    bail!("the server kept a slowloris connection open for {:?}", start.elapsed())
}

/// `n` TCP connections that send the first bytes of a TLS ClientHello and stop.
async fn half_open_tls(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        match TcpStream::connect(addr).await {
            Ok(mut s) => {
                // a handshake record header announcing 512 bytes, and 4 of them
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]).await;
                conns.push(s);
            }
            Err(_) => failed += 1,
        }
    }
    ensure!(failed == 0, "{failed} of {n} TCP connections failed to connect");
    Ok(conns)
}

/// Datagrams the kernel dropped at the UDP socket bound to `port` (receive
/// buffer full), from `/proc/net/udp` of this namespace.
fn udp_socket_drops(port: u16) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/net/udp").context("/proc/net/udp")?;
    let want = format!(":{port:04X}");
    let drops: Vec<u64> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1)?.ends_with(&want)).then(|| f.last()?.parse::<u64>().ok())?
        })
        .collect();
    ensure!(!drops.is_empty(), "no UDP socket on port {port} in /proc/net/udp");
    Ok(drops.iter().sum())
}

/// A STUN binding request with `username` (RFC 5389 header, one USERNAME attribute).
fn stun_binding(username: &[u8]) -> Vec<u8> {
    let pad = username.len().div_ceil(4) * 4;
    let mut p = Vec::with_capacity(20 + 4 + pad);
    p.extend_from_slice(&0x0001u16.to_be_bytes());
    p.extend_from_slice(&((4 + pad) as u16).to_be_bytes());
    p.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    p.extend_from_slice(&[7u8; 12]);
    p.extend_from_slice(&0x0006u16.to_be_bytes());
    p.extend_from_slice(&(username.len() as u16).to_be_bytes());
    p.extend_from_slice(username);
    p.resize(20 + 4 + pad, 0);
    p
}

/// An RTP packet (VP8 payload type 96) of 1000 bytes.
fn rtp_packet() -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    p.resize(1000, 0x55);
    p
}

/// `n` copies of `packet` from one new socket, in bursts the receiver can take.
async fn udp_flood(to: SocketAddr, packet: Vec<u8>, n: usize) -> anyhow::Result<usize> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for i in 0..n {
        s.send_to(&packet, to).await?;
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(n)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HostileTab {
    errors: Vec<String>,
    big_sent: usize,
}

/// A participant written by hand in the page: it joins over the room
/// protocol, announces and offers `tracks` video tracks (VP8 only, header
/// extensions and feedback lines left out so the offer stays under the
/// 64 KiB message limit), opens the `chat` channel, sends `big` oversized
/// messages and one that fits.
fn hostile_tab_js(token: &str, tracks: usize, big: usize) -> String {
    format!(
        r#"(async () => {{
  const ws = new WebSocket(`wss://${{location.host}}/ws/demo`);
  const msgs = [];
  ws.onmessage = e => msgs.push(JSON.parse(e.data));
  await new Promise((res, rej) => {{ ws.onopen = res; ws.onerror = () => rej(new Error('ws failed')); }});
  const wait = async (pred, what, ms) => {{
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {{
      const m = msgs.find(pred); if (m) return m;
      await new Promise(r => setTimeout(r, 50));
    }}
    throw new Error('no ' + what + '; got ' + JSON.stringify(msgs.map(m => m.type + (m.code ? ':' + m.code : ''))));
  }};
  ws.send(JSON.stringify({{ type: 'join', token: {token:?}, auto_subscribe: false }}));
  await wait(m => m.type === 'joined', 'joined', 10000);
  const pc = new RTCPeerConnection();
  pc.onicecandidate = e => ws.send(JSON.stringify({{ type: 'candidate',
    candidate: e.candidate ? e.candidate.candidate : null, sdpMid: e.candidate ? e.candidate.sdpMid : null }}));
  let seq = 0;
  ws.addEventListener('message', async e => {{
    const m = JSON.parse(e.data);
    if (m.type !== 'offer') return;
    await pc.setRemoteDescription({{ type: 'offer', sdp: m.sdp }});
    await pc.setLocalDescription();
    ws.send(JSON.stringify({{ type: 'answer', sdp: pc.localDescription.sdp, seq: m.seq }}));
  }});
  const canvas = document.createElement('canvas'); canvas.width = 64; canvas.height = 48;
  const ctx = canvas.getContext('2d');
  setInterval(() => {{ ctx.fillStyle = '#' + Math.floor(Math.random() * 0xffffff).toString(16).padStart(6, '0'); ctx.fillRect(0, 0, 64, 48); }}, 100);
  const track = canvas.captureStream(10).getVideoTracks()[0];
  const chat = pc.createDataChannel('chat');
  const vp8 = RTCRtpSender.getCapabilities('video').codecs.filter(c => c.mimeType === 'video/VP8');
  for (let i = 0; i < {tracks}; i++) {{
    const t = pc.addTransceiver(track.clone(), {{ direction: 'sendonly' }});
    t.setCodecPreferences(vp8);
  }}
  await pc.setLocalDescription(await pc.createOffer());
  const announced = pc.getTransceivers().map(t => ({{ mid: t.mid, kind: 'video', source: 'camera' }}));
  ws.send(JSON.stringify({{ type: 'publish', tracks: announced }}));
  const sdp = pc.localDescription.sdp.split('\r\n')
    .filter(l => !l.startsWith('a=extmap') && !l.startsWith('a=rtcp-fb')).join('\r\n');
  seq += 1;
  ws.send(JSON.stringify({{ type: 'offer', sdp, seq }}));
  const answer = await wait(m => m.type === 'answer', 'answer', 15000);
  await pc.setRemoteDescription({{ type: 'answer', sdp: answer.sdp }});
  const t0 = Date.now();
  while (chat.readyState !== 'open' && Date.now() - t0 < 20000) await new Promise(r => setTimeout(r, 50));
  if (chat.readyState !== 'open') throw new Error('the chat channel did not open: ' + pc.connectionState);
  // wait for the refusals of the offer's m-lines past the limit
  await new Promise(r => setTimeout(r, 1000));
  let bigSent = 0;
  const oversized = JSON.stringify({{ text: 'x'.repeat(9000) }});
  for (let i = 0; i < {big}; i++) {{
    while (chat.bufferedAmount > 256 * 1024) await new Promise(r => setTimeout(r, 10));
    chat.send(oversized); bigSent += 1;
  }}
  chat.send(JSON.stringify({{ text: 'small and polite' }}));
  while (chat.bufferedAmount > 0) await new Promise(r => setTimeout(r, 20));
  await new Promise(r => setTimeout(r, 500));
  return {{
    errors: msgs.filter(m => m.type === 'error').map(m => m.code),
    bigSent,
  }};
}})()"#
    )
}
