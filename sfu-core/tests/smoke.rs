//! Real sockets on loopback: the `Sfu` with its router on an axum server, a
//! str0m WHIP publisher and a str0m WHEP viewer talking HTTP and UDP to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sfu_core::auth::{Claims, Grants, sign_hs256};
use sfu_core::{Sfu, SfuConfig, TokenVerifier};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

const SECRET: &[u8] = b"smoke-test-secret-smoke-test-secret";

fn token(identity: &str, room: &str, publish: bool, subscribe: bool, ttl: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let c = Claims::new(identity, room, Grants { publish, subscribe, record: false, admin: false }, now, ttl);
    sign_hs256(&c, SECRET).unwrap()
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sfu\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    HttpResponse { status, headers, body: body.to_string() }
}

/// A str0m peer on a real UDP socket, driven on its own thread in real time.
struct Peer {
    rtc: Rtc,
    sock: UdpSocket,
}

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
        Peer { rtc, sock }
    }

    /// Drain, then wait for a datagram or the timeout (at most `max`); returns events.
    fn turn(&mut self, max: Duration, events: &mut Vec<Event>) {
        let timeout = loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Event(e) => events.push(e),
            }
        };
        let now = Instant::now();
        let wait = timeout.saturating_duration_since(now).min(max).max(Duration::from_millis(1));
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 2000];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Ok(r) = Receive::new(Protocol::Udp, from, self.sock.local_addr().unwrap(), &buf[..n]) {
                    self.rtc.handle_input(Input::Receive(Instant::now(), r)).unwrap();
                }
            }
            Err(_) => self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap(),
        }
    }
}

fn vp8(first: bool, key: bool, n: u32) -> Vec<u8> {
    let mut v = vec![if first { 0x10 } else { 0x00 }, if key { 0x00 } else { 0x01 }];
    v.extend_from_slice(&n.to_be_bytes());
    v.resize(600, 0x5a);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publish_and_whep_watch_over_real_sockets() {
    let config = SfuConfig {
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        tcp_bind: None,
        include_loopback: true,
        ..Default::default()
    };
    let registry = prometheus::Registry::new();
    let sfu = Sfu::start(config, TokenVerifier::hs256(SECRET).unwrap(), &registry).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, sfu.router()).into_future());

    let stop = Arc::new(AtomicBool::new(false));
    let keyframe_requests = Arc::new(AtomicUsize::new(0));

    // ---- publisher (WHIP)
    let (stop_p, kf) = (stop.clone(), keyframe_requests.clone());
    let publisher = std::thread::spawn(move || {
        let mut p = Peer::new();
        let mut api = p.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let tok = token("alice", "smoke", true, false, 300);
        let r = http(
            http_addr,
            "POST",
            "/whip/smoke",
            &[("Authorization", &format!("Bearer {tok}")), ("Content-Type", "application/sdp")],
            offer.to_sdp_string().as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/sdp"));
        let location = r.header("location").unwrap().to_string();
        assert!(location.starts_with("/whip/smoke/session/"), "{location}");
        p.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&r.body).unwrap()).unwrap();
        let pt = p.rtc.codec_config().params().iter().find(|x| x.spec().codec == Codec::Vp8).unwrap().pt();
        let mut events = Vec::new();
        let (mut frame, mut next, mut want_key) = (0u32, Instant::now(), true);
        let mut connected = false;
        while !stop_p.load(Ordering::Relaxed) {
            p.turn(Duration::from_millis(5), &mut events);
            for e in events.drain(..) {
                match e {
                    Event::Connected => connected = true,
                    Event::KeyframeRequest(_) => {
                        kf.fetch_add(1, Ordering::Relaxed);
                        want_key = true;
                    }
                    _ => {}
                }
            }
            if connected && Instant::now() >= next {
                next += Duration::from_millis(33);
                frame += 1;
                let key = want_key || frame % 60 == 0;
                want_key = false;
                let now = Instant::now();
                let mut d = p.rtc.direct_api();
                let tx = d.stream_tx_by_mid(mid, None).unwrap();
                for i in 0..2u32 {
                    let seq = u64::from(frame) * 2 + u64::from(i);
                    tx.write_rtp(
                        RtpWrite::new(pt, seq.into(), frame * 3000, now, vp8(i == 0, key, frame))
                            .marker(i == 1)
                            .nackable(true),
                    );
                }
            }
        }
        location
    });

    // ---- viewer (WHEP), once alice is in the room
    let deadline = Instant::now() + Duration::from_secs(10);
    while sfu.rooms().await.unwrap().iter().all(|r| r.participants.iter().all(|p| p.tracks.is_empty())) {
        assert!(Instant::now() < deadline, "publisher never published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let viewer = std::thread::spawn(move || {
        let mut p = Peer::new();
        let mut api = p.rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let tok = token("bob", "smoke", false, true, 300);
        let r = http(
            http_addr,
            "POST",
            "/whep/smoke/alice",
            &[("Authorization", &format!("Bearer {tok}")), ("Content-Type", "application/sdp")],
            offer.to_sdp_string().as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        p.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&r.body).unwrap()).unwrap();
        let mut events = Vec::new();
        let mut seqs = Vec::new();
        let end = Instant::now() + Duration::from_secs(15);
        while seqs.len() < 120 && Instant::now() < end {
            p.turn(Duration::from_millis(5), &mut events);
            for e in events.drain(..) {
                if let Event::RtpPacket(pkt) = e {
                    seqs.push((*pkt.seq_no, pkt.payload[1] & 1 == 0 && pkt.payload[0] & 0x10 != 0));
                }
            }
        }
        seqs
    });
    let seqs = tokio::task::spawn_blocking(move || viewer.join().unwrap()).await.unwrap();
    assert!(seqs.len() >= 120, "viewer got {} packets", seqs.len());
    assert!(seqs[0].1, "the first packet the viewer sees starts a keyframe");
    let mut sorted: Vec<u64> = seqs.iter().map(|s| s.0).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "no duplicates");
    assert!(keyframe_requests.load(Ordering::Relaxed) >= 1, "the SFU asked the publisher for a keyframe");

    // ---- refusals, each a clear HTTP error
    let offer = "v=0\r\n";
    let good = token("carl", "smoke", true, true, 300);
    let r = http(http_addr, "POST", "/whip/smoke", &[("Content-Type", "application/sdp")], offer.as_bytes());
    assert_eq!(r.status, 401, "no token");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let expired = {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let c = Claims::new(
            "carl",
            "smoke",
            Grants { publish: true, subscribe: true, record: false, admin: false },
            now - 3600,
            60,
        );
        sign_hs256(&c, SECRET).unwrap()
    };
    let r = http(
        http_addr,
        "POST",
        "/whip/smoke",
        &[("Authorization", &format!("Bearer {expired}")), ("Content-Type", "application/sdp")],
        offer.as_bytes(),
    );
    assert_eq!(r.status, 401, "expired: {}", r.body);
    let forged = format!("{}x", &good[..good.len() - 1]);
    let r = http(
        http_addr,
        "POST",
        "/whip/smoke",
        &[("Authorization", &format!("Bearer {forged}")), ("Content-Type", "application/sdp")],
        offer.as_bytes(),
    );
    assert_eq!(r.status, 401, "forged: {}", r.body);
    let other_room = token("carl", "elsewhere", true, true, 300);
    let r = http(
        http_addr,
        "POST",
        "/whip/smoke",
        &[("Authorization", &format!("Bearer {other_room}")), ("Content-Type", "application/sdp")],
        offer.as_bytes(),
    );
    assert_eq!(r.status, 403, "wrong room: {}", r.body);
    let r = http(
        http_addr,
        "POST",
        "/whip/smoke",
        &[("Authorization", &format!("Bearer {good}")), ("Content-Type", "text/plain")],
        offer.as_bytes(),
    );
    assert_eq!(r.status, 415);
    let r = http(
        http_addr,
        "POST",
        "/whip/smoke",
        &[("Authorization", &format!("Bearer {good}")), ("Content-Type", "application/sdp")],
        offer.as_bytes(),
    );
    assert_eq!(r.status, 400, "malformed SDP: {}", r.body);
    let huge = vec![b'a'; 200 * 1024];
    let r = http(
        http_addr,
        "POST",
        "/whip/smoke",
        &[("Authorization", &format!("Bearer {good}")), ("Content-Type", "application/sdp")],
        &huge,
    );
    assert_eq!(r.status, 413, "oversized body");
    // CORS preflight from another origin
    let r = http(
        http_addr,
        "OPTIONS",
        "/whip/smoke",
        &[
            ("Origin", "http://other.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization,content-type"),
        ],
        b"",
    );
    assert!(r.status == 200 || r.status == 204, "{}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // ---- leave
    stop.store(true, Ordering::Relaxed);
    let location = tokio::task::spawn_blocking(move || publisher.join().unwrap()).await.unwrap();
    let auth = format!("Bearer {}", token("alice", "smoke", true, false, 300));
    let r = http(http_addr, "DELETE", &location, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200);
    let r = http(http_addr, "DELETE", &location, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 404, "already gone");

    let stats = sfu.stats().await.unwrap();
    assert!(stats.forwarded_packets >= 120, "{stats:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = {
        let mut s = String::new();
        prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut s).unwrap();
        s
    };
    assert!(
        text.contains("sfu_forwarded_packets_total{room=\"smoke\"}") || text.contains("sfu_rooms"),
        "{text}"
    );
    sfu.shutdown().await;
    assert!(sfu.stats().await.is_err(), "stopped");
}
