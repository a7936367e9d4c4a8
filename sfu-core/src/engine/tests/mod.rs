//! Engine tests without sockets, on virtual time: str0m clients driven by the
//! test over a simulated network (seeded loss, reorder, delay), and local
//! participants.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Rtc};

use super::*;
use crate::auth::Grants;
use crate::local::{LocalCodec, LocalEvent, LocalJoin, LocalPacket, LocalSubscription, LocalTrackSpec};
use crate::protocol::{ClientMessage, ServerMessage, TrackKind, TrackSource};

const SFU: &str = "10.0.0.1:5000";

/// Deterministic PRNG (xorshift) for the simulated network.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

struct Packet {
    proto: Protocol,
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    timeout: Instant,
    events: Vec<Event>,
    id: Option<ParticipantId>,
    signals: Vec<ServerMessage>,
}

/// A bottleneck on the way to one address (a `tbf` qdisc in miniature):
/// packets leave one after another at `rate_bps`; one that would wait in the
/// queue longer than `queue` is dropped.
struct Link {
    to: std::net::IpAddr,
    rate_bps: u64,
    queue: Duration,
    busy_until: Instant,
    dropped: u64,
    passed: u64,
}

struct Sim {
    now: Instant,
    engine: Engine,
    clients: Vec<Client>,
    net: Vec<Packet>,
    links: Vec<Link>,
    /// Dropped by links since lifted.
    link_dropped: u64,
    rng: Rng,
    loss: f64,
    delay_ms: u64,
    jitter_ms: u64,
    locals: Vec<(ParticipantId, LocalEvent)>,
    engine_time: Duration,
    room_events: Vec<RoomEvent>,
    gone: Vec<(ParticipantId, LeaveReason)>,
}

fn grants(publish: bool, subscribe: bool) -> Grants {
    Grants { publish, subscribe, record: false, admin: false }
}

impl Sim {
    fn new(config: SfuConfig) -> Sim {
        let now = Instant::now();
        let c = Candidate::host(SFU.parse().unwrap(), "udp").unwrap();
        let engine = Engine::new(config, vec![c], now, SystemTime::now());
        Sim {
            now,
            engine,
            clients: Vec::new(),
            net: Vec::new(),
            links: Vec::new(),
            link_dropped: 0,
            rng: Rng(0x5eed_1234_abcd),
            loss: 0.0,
            delay_ms: 5,
            jitter_ms: 0,
            locals: Vec::new(),
            engine_time: Duration::ZERO,
            room_events: Vec::new(),
            gone: Vec::new(),
        }
    }

    fn add_client(&mut self) -> usize {
        let n = self.clients.len() as u8 + 2;
        let addr: SocketAddr = format!("10.0.0.{n}:6000").parse().unwrap();
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .enable_bwe(Some(str0m::bwe::Bitrate::kbps(300)))
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.clients.push(Client {
            rtc,
            addr,
            timeout: self.now,
            events: Vec::new(),
            id: None,
            signals: Vec::new(),
        });
        self.clients.len() - 1
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        // loss only hits media (RTP/RTCP), so the handshake is deterministic
        let media = data.first().is_some_and(|b| (128..192).contains(b));
        if media && self.rng.chance(self.loss) {
            return;
        }
        let jitter = if self.jitter_ms > 0 { self.rng.next() % self.jitter_ms } else { 0 };
        let mut at = self.now + Duration::from_millis(self.delay_ms + jitter);
        if let Some(l) = self.links.iter_mut().find(|l| l.to == to.ip()) {
            let start = l.busy_until.max(self.now);
            if start.saturating_duration_since(self.now) > l.queue {
                l.dropped += 1;
                return;
            }
            // 28 bytes of UDP/IPv4 header on the wire
            let bits = (data.len() as u64 + 28) * 8;
            l.passed += 1;
            l.busy_until = start + Duration::from_nanos(bits * 1_000_000_000 / l.rate_bps.max(1));
            at = l.busy_until + Duration::from_millis(self.delay_ms + jitter);
        }
        self.net.push(Packet { proto: self.proto_of(from, to), at, from, to, data });
    }

    /// Squeeze everything sent to client `ci` through a bottleneck (`None` lifts it).
    fn squeeze(&mut self, ci: usize, rate_bps: Option<u64>, queue: Duration) {
        let to = self.clients[ci].addr.ip();
        for l in self.links.iter().filter(|l| l.to == to) {
            self.link_dropped += l.dropped;
        }
        self.links.retain(|l| l.to != to);
        if let Some(rate_bps) = rate_bps {
            self.links.push(Link { to, rate_bps, queue, busy_until: self.now, dropped: 0, passed: 0 });
        }
    }

    fn proto_of(&self, from: SocketAddr, to: SocketAddr) -> Protocol {
        if from.port() == 5001 || to.port() == 5001 || from.port() == 9 || to.port() == 9 {
            Protocol::Tcp
        } else {
            Protocol::Udp
        }
    }

    fn drain_client(&mut self, i: usize) {
        loop {
            let c = &mut self.clients[i];
            match c.rtc.poll_output().unwrap() {
                str0m::Output::Timeout(t) => {
                    c.timeout = t;
                    break;
                }
                str0m::Output::Transmit(t) => {
                    let (from, to) = (t.source, t.destination);
                    self.send(from, to, t.contents.into());
                }
                str0m::Output::Event(e) => {
                    if matches!(
                        e,
                        Event::RtpPacket(_)
                            | Event::KeyframeRequest(_)
                            | Event::Connected
                            | Event::ChannelOpen(..)
                            | Event::ChannelData(_)
                            | Event::Closed
                    ) {
                        c.events.push(e);
                    }
                }
            }
        }
    }

    fn drain_engine(&mut self) {
        loop {
            match self.engine.poll_output() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let (from, to) = (t.source, t.destination);
                    self.send(from, to, t.contents.into());
                }
                Output::Signal(id, m) => {
                    if let Some(c) = self.clients.iter_mut().find(|c| c.id == Some(id)) {
                        c.signals.push(m);
                    }
                }
                Output::Local(id, e) => self.locals.push((id, e)),
                Output::Room(e) => self.room_events.push(e),
                Output::Gone(id, r) => self.gone.push((id, r)),
            }
        }
    }

    /// Advance virtual time by `d` in 1 ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(1);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        // deliver due packets (jitter reorders them)
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|p| p.at);
        let sfu: SocketAddr = SFU.parse().unwrap();
        for p in due {
            if p.to.ip() == sfu.ip() {
                let t = Instant::now();
                self.engine.handle_receive(now, p.proto, p.from, p.to, &p.data);
                self.drain_engine();
                self.engine_time += t.elapsed();
            } else if let Some(ci) = self.clients.iter().position(|c| c.addr.ip() == p.to.ip()) {
                let r = Receive::new(p.proto, p.from, p.to, &p.data).unwrap();
                self.clients[ci].rtc.handle_input(Input::Receive(now, r)).unwrap();
                self.drain_client(ci);
            }
        }
        self.engine.handle_timeout(now);
        self.drain_engine();
        for ci in 0..self.clients.len() {
            if self.clients[ci].timeout <= now {
                self.clients[ci].rtc.handle_input(Input::Timeout(now)).unwrap();
                self.drain_client(ci);
            }
        }
    }

    fn run_until(&mut self, max: Duration, mut f: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + max;
        while self.now < end {
            if f(self) {
                return true;
            }
            self.now += Duration::from_millis(1);
            self.step();
        }
        f(self)
    }

    /// Offer from client `ci` with the given media, joined as `role`.
    fn join_http(
        &mut self,
        ci: usize,
        identity: &str,
        role: PeerRole,
        media: &[(MediaKind, Direction, Option<Simulcast>)],
    ) -> Result<Vec<Mid>, SfuError> {
        let mut api = self.clients[ci].rtc.sdp_api();
        let mids: Vec<Mid> =
            media.iter().map(|(k, d, s)| api.add_media(*k, *d, None, None, s.clone())).collect();
        let (offer, pending) = api.apply().unwrap();
        let g = match role {
            PeerRole::Whip => grants(true, false),
            _ => grants(false, true),
        };
        let j = self.engine.join(
            self.now,
            RemoteJoin {
                room: "r".into(),
                identity: identity.into(),
                name: None,
                grants: g,
                role,
                offer: Some(offer.to_sdp_string()),
                resource: Some(format!("res-{identity}-{ci}")),
            },
        )?;
        self.clients[ci].id = Some(j.id);
        let answer = SdpAnswer::from_sdp_string(&j.answer.unwrap()).unwrap();
        self.clients[ci].rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.drain_client(ci);
        self.drain_engine();
        Ok(mids)
    }

    fn connected(&self, ci: usize) -> bool {
        self.clients[ci].events.iter().any(|e| matches!(e, Event::Connected))
    }

    fn rtp_received(&self, ci: usize) -> Vec<&str0m::rtp::RtpPacket> {
        self.clients[ci]
            .events
            .iter()
            .filter_map(|e| if let Event::RtpPacket(p) = e { Some(p) } else { None })
            .collect()
    }

    fn keyframe_requests(&self, ci: usize) -> usize {
        self.clients[ci].events.iter().filter(|e| matches!(e, Event::KeyframeRequest(_))).count()
    }

    fn write(
        &mut self,
        ci: usize,
        mid: Mid,
        rid: Option<&str>,
        codec: Codec,
        seq: u64,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
    ) {
        let now = self.now;
        let c = &mut self.clients[ci];
        let pt = c.rtc.codec_config().params().iter().find(|p| p.spec().codec == codec).map(|p| p.pt());
        let pt = c
            .rtc
            .media(mid)
            .and_then(|m| {
                m.remote_pts().iter().copied().find(|x| {
                    c.rtc.codec_config().params().iter().any(|p| p.pt() == *x && p.spec().codec == codec)
                })
            })
            .or(pt)
            .unwrap();
        let mut api = c.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, rid.map(|r| r.into())).unwrap();
        tx.write_rtp(RtpWrite::new(pt, seq.into(), ts, now, payload).marker(marker).nackable(true));
        self.drain_client(ci);
    }
}

/// A VP8 packet: descriptor (S=1 on the first packet), P bit 0 on a keyframe;
/// byte 2..: frame number and packet index so the receiver can check order.
fn vp8(first: bool, key: bool, frame: u32, idx: u8) -> Vec<u8> {
    let mut v = vec![if first { 0x10 } else { 0x00 }, if key { 0x00 } else { 0x01 }];
    v.extend_from_slice(&frame.to_be_bytes());
    v.push(idx);
    v.resize(200, 0xab);
    v
}

fn publisher_sends_vp8(sim: &mut Sim, ci: usize, mid: Mid, frames: u32, key_every: u32, start_frame: u32) {
    for f in start_frame..start_frame + frames {
        let key = f % key_every == 0;
        for i in 0..3u8 {
            let seq = u64::from(f) * 3 + u64::from(i) + 1;
            sim.write(ci, mid, None, Codec::Vp8, seq, f * 3000, i == 2, vp8(i == 0, key, f, i));
        }
        sim.run(Duration::from_millis(33));
    }
}

#[test]
fn whip_publisher_reaches_whep_viewer_in_order_over_a_lossy_network() {
    let mut sim = Sim::new(SfuConfig::default());
    let pubc = sim.add_client();
    let view = sim.add_client();
    let mids = sim
        .join_http(pubc, "alice", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)])
        .unwrap();
    assert!(
        sim.run_until(Duration::from_secs(5), |s| s.connected(pubc)),
        "publisher connects (ICE-lite + DTLS)"
    );
    sim.join_http(
        view,
        "bob",
        PeerRole::Whep { target: Some("alice".into()) },
        &[(MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(view)), "viewer connects");
    // the viewer's down-track asks the publisher for a keyframe
    publisher_sends_vp8(&mut sim, pubc, mids[0], 10, 1000, 1);
    assert!(sim.keyframe_requests(pubc) >= 1, "a keyframe request reached the publisher");
    assert!(sim.rtp_received(view).is_empty(), "nothing is forwarded before a keyframe");

    // now a lossy, jittery network: 5% media loss, 0-20 ms jitter (reorders)
    sim.loss = 0.05;
    sim.jitter_ms = 20;
    publisher_sends_vp8(&mut sim, pubc, mids[0], 150, 50, 50);
    sim.loss = 0.0;
    sim.run(Duration::from_secs(2));

    let got = sim.rtp_received(view);
    let mut seqs: Vec<u64> = got.iter().map(|p| *p.seq_no).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), got.len(), "no duplicates");
    let first = seqs[0];
    let span = (seqs[seqs.len() - 1] - first + 1) as usize;
    // NACK/RTX through str0m repairs nearly all of the 5% (x2 hops) loss
    assert!(seqs.len() * 100 >= span * 97, "received {} of {span}", seqs.len());
    // continuity: the rewritten numbering has no holes of its own
    assert!(span <= 150 * 3, "span {span} (gaps would mean broken rewriting)");
    // the frames arrive with their payloads intact, starting at a keyframe
    let p0 = got.iter().min_by_key(|p| *p.seq_no).unwrap();
    assert_eq!(p0.payload[0] & 0x10, 0x10);
    assert_eq!(p0.payload[1] & 0x01, 0, "the first forwarded packet is a keyframe");
    // payload order follows sequence order
    let mut by_seq: Vec<_> = got
        .iter()
        .map(|p| (*p.seq_no, u32::from_be_bytes(p.payload[2..6].try_into().unwrap()), p.payload[6]))
        .collect();
    by_seq.sort();
    for w in by_seq.windows(2) {
        assert!((w[1].1, w[1].2) > (w[0].1, w[0].2), "sequence order = frame order: {w:?}");
    }
    let st = sim.engine.stats();
    assert!(st.forwarded_packets >= 400, "{st:?}");
}

#[test]
fn garbage_datagrams_are_dropped_and_the_room_goes_on() {
    let mut sim = Sim::new(SfuConfig::default());
    let pubc = sim.add_client();
    let view = sim.add_client();
    let mids = sim
        .join_http(pubc, "alice", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)])
        .unwrap();
    sim.join_http(
        view,
        "bob",
        PeerRole::Whep { target: Some("alice".into()) },
        &[(MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(pubc) && s.connected(view)));
    let sfu: SocketAddr = SFU.parse().unwrap();
    let from = sim.clients[pubc].addr;
    let mut rng = Rng(99);
    let before = sim.engine.stats().dropped_packets;
    for n in 0..2000 {
        let len = (rng.next() % 300) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if n % 3 == 0 && !d.is_empty() {
            d[0] = 0x80 | (d[0] & 0x3f); // looks like RTP
        }
        if n % 5 == 0 && d.len() > 1 {
            d[1] = 200; // looks like RTCP
        }
        let src = if n % 2 == 0 { from } else { "10.9.9.9:1".parse().unwrap() };
        sim.engine.handle_receive(sim.now, Protocol::Udp, src, sfu, &d);
        sim.drain_engine();
    }
    // a truncated STUN with a lying length, an empty datagram
    sim.engine.handle_receive(sim.now, Protocol::Udp, from, sfu, &[0, 1, 0, 200, 0x21, 0x12, 0xa4, 0x42]);
    sim.engine.handle_receive(sim.now, Protocol::Udp, from, sfu, &[]);
    assert!(sim.engine.stats().dropped_packets > before);
    publisher_sends_vp8(&mut sim, pubc, mids[0], 60, 30, 0);
    assert!(sim.rtp_received(view).len() >= 100, "media still flows: {}", sim.rtp_received(view).len());
}

#[test]
fn bad_offers_and_refusals_are_clear_errors() {
    let mut config = SfuConfig::default();
    config.rooms.insert(
        "h264only".into(),
        crate::config::RoomConfig {
            codecs: Some(vec![crate::config::CodecName::Opus, crate::config::CodecName::H264]),
            max_participants: Some(2),
        },
    );
    let mut sim = Sim::new(config);
    let join = |role: PeerRole, room: &str, id: &str, offer: Option<String>, g: Grants| RemoteJoin {
        room: room.into(),
        identity: id.into(),
        name: None,
        grants: g,
        role,
        offer,
        resource: None,
    };
    let now = sim.now;
    for bad in
        ["", "v=0", "garbage\r\n\r\n", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"]
    {
        let e = sim
            .engine
            .join(now, join(PeerRole::Whip, "r", "a", Some(bad.into()), grants(true, true)))
            .unwrap_err();
        assert_eq!(e.http_status(), 400, "{bad:?}: {e}");
    }
    let e = sim.engine.join(now, join(PeerRole::Whip, "r", "a", None, grants(true, true))).unwrap_err();
    assert!(matches!(e, SfuError::BadSdp(_)));
    // grants
    let e = sim
        .engine
        .join(now, join(PeerRole::Whip, "r", "a", Some("v=0".into()), grants(false, true)))
        .unwrap_err();
    assert_eq!(e.http_status(), 403);
    // a VP8 offer into an H.264-only room
    let ci = sim.add_client();
    let mut api = sim.clients[ci].rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _p) = api.apply().unwrap();
    let vp8_only: String = offer
        .to_sdp_string()
        .lines()
        .filter(|l| !(l.starts_with("a=rtpmap:") && !l.contains("VP8") && !l.contains("rtx")))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let e = sim
        .engine
        .join(now, join(PeerRole::Whip, "h264only", "a", Some(vp8_only), grants(true, true)))
        .unwrap_err();
    assert!(matches!(e, SfuError::CodecNotAllowed(_)), "{e}");
    // WHEP of someone absent
    let e = sim
        .engine
        .join(
            now,
            join(
                PeerRole::Whep { target: Some("ghost".into()) },
                "r",
                "v",
                Some(offer.to_sdp_string()),
                grants(false, true),
            ),
        )
        .unwrap_err();
    assert_eq!(e.http_status(), 404);
    // room full (max 2 in h264only), then the room goes on
    for i in 0..2 {
        sim.engine
            .join(
                now,
                join(
                    PeerRole::Room { auto_subscribe: true },
                    "h264only",
                    &format!("u{i}"),
                    None,
                    grants(true, true),
                ),
            )
            .unwrap();
    }
    let e = sim
        .engine
        .join(now, join(PeerRole::Room { auto_subscribe: true }, "h264only", "u9", None, grants(true, true)))
        .unwrap_err();
    assert!(matches!(e, SfuError::RoomFull { .. }) && e.http_status() == 503, "{e}");
    assert_eq!(sim.engine.rooms().iter().find(|r| r.name == "h264only").unwrap().participants.len(), 2);
}

#[test]
fn a_join_flood_is_refused_with_retry_after_and_recovers() {
    let mut config = SfuConfig::default();
    config.limits.max_joins_per_second = 5;
    config.limits.max_participants_per_room = 1000;
    let mut sim = Sim::new(config);
    let mut ok = 0;
    let mut overloaded = 0;
    for i in 0..50 {
        let r = sim.engine.join_local(
            sim.now,
            LocalJoin {
                room: "r".into(),
                identity: format!("p{i}"),
                name: None,
                publish: vec![],
                subscribe: LocalSubscription::None,
            },
        );
        match r {
            Ok(_) => ok += 1,
            Err(SfuError::Overloaded { retry_after_secs }) => {
                assert!(retry_after_secs >= 1);
                overloaded += 1
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(overloaded, 45);
    sim.now += Duration::from_secs(1);
    assert!(
        sim.engine
            .join_local(
                sim.now,
                LocalJoin {
                    room: "r".into(),
                    identity: "late".into(),
                    name: None,
                    publish: vec![],
                    subscribe: LocalSubscription::None
                }
            )
            .is_ok()
    );
}

fn camera(layers: &[&str]) -> LocalJoin {
    LocalJoin {
        room: "r".into(),
        identity: "room".into(),
        name: Some("Room".into()),
        publish: vec![
            LocalTrackSpec {
                name: "camera".into(),
                kind: TrackKind::Video,
                source: TrackSource::RoomCamera,
                codec: LocalCodec::H264 { profile_level_id: "42e01f".into() },
                layers: layers.iter().map(|s| s.to_string()).collect(),
            },
            LocalTrackSpec {
                name: "mic".into(),
                kind: TrackKind::Audio,
                source: TrackSource::RoomMicrophone,
                codec: LocalCodec::Opus,
                layers: vec![],
            },
        ],
        subscribe: LocalSubscription::None,
    }
}

fn h264(key: bool, layer: u8, frame: u32) -> Bytes {
    // an IDR (type 5) or a non-IDR slice (type 1); then layer and frame for the checks
    let mut v = vec![if key { 0x65 } else { 0x41 }, layer];
    v.extend_from_slice(&frame.to_be_bytes());
    Bytes::from(v)
}

fn local_pkt(
    track: usize,
    layer: usize,
    seq: u16,
    ts: u32,
    key: bool,
    payload: Bytes,
    now: Instant,
) -> LocalPacket {
    LocalPacket {
        track,
        layer,
        seq,
        timestamp: ts,
        marker: true,
        keyframe: key,
        audio_level: None,
        capture_time: now,
        payload,
    }
}

fn received(sim: &Sim, id: ParticipantId) -> Vec<crate::local::ReceivedPacket> {
    sim.locals
        .iter()
        .filter(|(i, _)| *i == id)
        .filter_map(|(_, e)| if let LocalEvent::Rtp(p) = e { Some(p.clone()) } else { None })
        .filter(|p| p.kind == TrackKind::Video)
        .collect()
}

#[test]
fn simulcast_switches_layer_only_on_a_keyframe_and_keeps_sequence_continuity() {
    let mut sim = Sim::new(SfuConfig::default());
    let cam = sim.engine.join_local(sim.now, camera(&["q", "h", "f"])).unwrap();
    let rec = sim
        .engine
        .join_local(
            sim.now,
            LocalJoin {
                room: "r".into(),
                identity: "recorder".into(),
                name: None,
                publish: vec![],
                subscribe: LocalSubscription::All,
            },
        )
        .unwrap();
    sim.drain_engine();
    // only layer q flows at first, starting with a delta frame (not forwardable)
    let mut seq = [100u16, 5000, 60000];
    let mut frame = 0u32;
    let mut send = |sim: &mut Sim, layer: usize, key: bool, frame: u32| {
        let p = local_pkt(
            0,
            layer,
            seq[layer],
            frame * 3000 + layer as u32 * 7,
            key,
            h264(key, layer as u8, frame),
            sim.now,
        );
        seq[layer] = seq[layer].wrapping_add(1);
        sim.engine.local_packet(sim.now, cam, p);
        sim.drain_engine();
    };
    send(&mut sim, 0, false, frame);
    assert!(received(&sim, rec).is_empty(), "no delta frame before a keyframe");
    for _ in 0..30 {
        frame += 1;
        send(&mut sim, 0, frame == 1, frame);
        sim.run(Duration::from_millis(33));
    }
    let got = received(&sim, rec);
    assert!(got.len() >= 29 && got.iter().all(|p| p.payload[1] == 0), "layer q only: {}", got.len());
    // layers h and f start, with delta frames: the target moves up, the switch waits
    let kf_before = sim
        .locals
        .iter()
        .filter(|(i, e)| *i == cam && matches!(e, LocalEvent::KeyframeRequest { .. }))
        .count();
    for _ in 0..20 {
        frame += 1;
        send(&mut sim, 0, false, frame);
        send(&mut sim, 1, false, frame);
        send(&mut sim, 2, false, frame);
        sim.run(Duration::from_millis(33));
    }
    let got = received(&sim, rec);
    assert!(got.iter().all(|p| p.payload[1] == 0), "no switch without a keyframe");
    let kf_after = sim
        .locals
        .iter()
        .filter(|(i, e)| *i == cam && matches!(e, LocalEvent::KeyframeRequest { .. }))
        .count();
    assert!(kf_after > kf_before, "the pending switch asked the camera for a keyframe");
    assert!(kf_after - kf_before <= 2, "keyframe requests are throttled (500 ms): {}", kf_after - kf_before);
    // a keyframe on f: switch there
    frame += 1;
    send(&mut sim, 0, false, frame);
    send(&mut sim, 2, true, frame);
    for _ in 0..10 {
        frame += 1;
        send(&mut sim, 0, false, frame);
        send(&mut sim, 2, false, frame);
        sim.run(Duration::from_millis(33));
    }
    let got = received(&sim, rec);
    let first_f = got.iter().position(|p| p.payload[1] == 2).expect("switched to f");
    assert_eq!(got[first_f].payload[0] & 0x1f, 5, "the switch happens on the IDR");
    assert!(got[first_f..].iter().all(|p| p.payload[1] == 2), "f only after the switch");
    // one outgoing sequence: +1 per packet across the switch, timestamps forward
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "continuity across the switch");
        assert!(w[1].timestamp.wrapping_sub(w[0].timestamp) < 1 << 31, "time moves forward");
    }
}

#[test]
fn keyframe_requests_to_a_publisher_are_throttled() {
    let mut sim = Sim::new(SfuConfig::default());
    let cam = sim.engine.join_local(sim.now, camera(&[])).unwrap();
    // 20 subscribers join within 100 ms: each wants a keyframe
    for i in 0..20 {
        sim.engine
            .join_local(
                sim.now,
                LocalJoin {
                    room: "r".into(),
                    identity: format!("s{i}"),
                    name: None,
                    publish: vec![],
                    subscribe: LocalSubscription::All,
                },
            )
            .unwrap();
        sim.run(Duration::from_millis(5));
    }
    sim.drain_engine();
    let n = sim
        .locals
        .iter()
        .filter(|(i, e)| *i == cam && matches!(e, LocalEvent::KeyframeRequest { track: 0 }))
        .count();
    assert_eq!(n, 1, "one request per 500 ms, not one per subscriber");
    sim.run(Duration::from_millis(1000));
    let n2 = sim
        .locals
        .iter()
        .filter(|(i, e)| *i == cam && matches!(e, LocalEvent::KeyframeRequest { track: 0 }))
        .count();
    assert!(n2 <= 3, "still waiting for the keyframe: re-asked at the throttle's pace ({n2})");
}

fn mic(identity: &str) -> LocalJoin {
    LocalJoin {
        room: "r".into(),
        identity: identity.into(),
        name: None,
        publish: vec![LocalTrackSpec {
            name: "mic".into(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            codec: LocalCodec::Opus,
            layers: vec![],
        }],
        subscribe: LocalSubscription::None,
    }
}

#[test]
fn the_active_speaker_follows_the_loudest_with_hysteresis() {
    let mut sim = Sim::new(SfuConfig::default());
    let a = sim.engine.join_local(sim.now, mic("ann")).unwrap();
    let b = sim.engine.join_local(sim.now, mic("ben")).unwrap();
    let speakers = |sim: &Sim| -> Vec<Option<String>> {
        sim.room_events
            .iter()
            .filter_map(|e| {
                if let RoomEvent::ActiveSpeaker { identity, .. } = e { Some(identity.clone()) } else { None }
            })
            .collect()
    };
    let mut seq = 0u16;
    let mut talk = |sim: &mut Sim, la: u8, lb: u8, ms: u64| {
        for _ in 0..ms / 20 {
            seq = seq.wrapping_add(1);
            for (id, l) in [(a, la), (b, lb)] {
                let mut p = local_pkt(
                    0,
                    0,
                    seq,
                    u32::from(seq) * 960,
                    false,
                    Bytes::from_static(&[0xfc, 1, 2]),
                    sim.now,
                );
                p.audio_level = Some(l);
                sim.engine.local_packet(sim.now, id, p);
            }
            sim.run(Duration::from_millis(20));
        }
    };
    talk(&mut sim, 20, 90, 1000);
    assert_eq!(speakers(&sim), vec![Some("ann".to_string())]);
    // ben coughs for 150 ms: no switch
    talk(&mut sim, 30, 10, 150);
    talk(&mut sim, 25, 90, 600);
    assert_eq!(speakers(&sim), vec![Some("ann".to_string())]);
    // ben talks for a second: switch
    talk(&mut sim, 60, 15, 1000);
    assert_eq!(speakers(&sim), vec![Some("ann".to_string()), Some("ben".to_string())]);
    // ben leaves: the room says nobody
    sim.engine.leave(sim.now, b, LeaveReason::Left);
    sim.drain_engine();
    assert_eq!(speakers(&sim).last().unwrap(), &None);
    // the WS-style signal reached the other local participant too
    assert!(sim.locals.iter().any(|(i, e)| *i == a && matches!(e, LocalEvent::Signal(ServerMessage::ActiveSpeaker { identity: Some(x) }) if x == "ben")));
}

#[test]
fn join_leave_churn_leaves_nothing_behind() {
    let mut config = SfuConfig::default();
    config.limits.max_joins_per_second = 1000;
    let mut sim = Sim::new(config);
    let mut live: VecDeque<ParticipantId> = VecDeque::new();
    let mut rng = Rng(7);
    let mut joined = 0;
    for i in 0..300 {
        if live.len() < 8 && (live.is_empty() || rng.chance(0.6)) {
            let j = if i % 2 == 0 {
                mic(&format!("m{i}"))
            } else {
                LocalJoin { subscribe: LocalSubscription::AllAudio, ..mic(&format!("s{i}")) }
            };
            live.push_back(sim.engine.join_local(sim.now, j).unwrap());
            joined += 1;
        } else if let Some(id) = live.pop_front() {
            sim.engine.leave(sim.now, id, LeaveReason::Left);
        }
        sim.run(Duration::from_millis(10));
    }
    while let Some(id) = live.pop_front() {
        sim.engine.leave(sim.now, id, LeaveReason::Left);
    }
    sim.drain_engine();
    assert_eq!(sim.engine.stats().participants, 0);
    assert_eq!(sim.engine.stats().rooms, 0);
    assert!(sim.engine.tracks.is_empty() && sim.engine.by_ufrag.is_empty() && sim.engine.by_addr.is_empty());
    let joins = sim.room_events.iter().filter(|e| matches!(e, RoomEvent::ParticipantJoined { .. })).count();
    let leaves = sim.room_events.iter().filter(|e| matches!(e, RoomEvent::ParticipantLeft { .. })).count();
    let opens = sim.room_events.iter().filter(|e| matches!(e, RoomEvent::RoomOpened { .. })).count();
    let closes = sim.room_events.iter().filter(|e| matches!(e, RoomEvent::RoomClosed { .. })).count();
    assert_eq!((joins, leaves), (joined, joined));
    assert_eq!(opens, closes);
}

/// Room protocol: `c` answers every server offer (as a browser would).
fn answer_server_offers(sim: &mut Sim, ci: usize) {
    let offers: Vec<(String, u64)> = sim.clients[ci]
        .signals
        .iter()
        .filter_map(
            |m| if let ServerMessage::Offer { sdp, seq } = m { Some((sdp.clone(), *seq)) } else { None },
        )
        .collect();
    sim.clients[ci].signals.retain(|m| !matches!(m, ServerMessage::Offer { .. }));
    for (sdp, seq) in offers {
        let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
        let answer = sim.clients[ci].rtc.sdp_api().accept_offer(offer).unwrap();
        sim.drain_client(ci);
        let id = sim.clients[ci].id.unwrap();
        sim.engine.client_message(sim.now, id, ClientMessage::Answer { sdp: answer.to_sdp_string(), seq });
        sim.drain_engine();
    }
}

fn ws_join(sim: &mut Sim, ci: usize, identity: &str) {
    let j = sim
        .engine
        .join(
            sim.now,
            RemoteJoin {
                room: "r".into(),
                identity: identity.into(),
                name: None,
                grants: grants(true, true),
                role: PeerRole::Room { auto_subscribe: true },
                offer: None,
                resource: None,
            },
        )
        .unwrap();
    sim.clients[ci].id = Some(j.id);
    sim.drain_engine();
}

fn ws_publish(sim: &mut Sim, ci: usize, chat: bool) -> (Mid, SdpPendingOffer) {
    let mut api = sim.clients[ci].rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    if chat {
        api.add_channel("chat".into());
    }
    let (offer, pending) = api.apply().unwrap();
    let id = sim.clients[ci].id.unwrap();
    sim.engine.client_message(
        sim.now,
        id,
        ClientMessage::Publish {
            tracks: vec![crate::protocol::PublishTrack {
                mid: mid.to_string(),
                kind: TrackKind::Video,
                source: TrackSource::Camera,
            }],
        },
    );
    sim.engine.client_message(sim.now, id, ClientMessage::Offer { sdp: offer.to_sdp_string(), seq: 1 });
    sim.drain_engine();
    (mid, pending)
}

fn take_answer(sim: &mut Sim, ci: usize, pending: SdpPendingOffer) {
    let sdp = sim.clients[ci]
        .signals
        .iter()
        .find_map(|m| if let ServerMessage::Answer { sdp, .. } = m { Some(sdp.clone()) } else { None })
        .expect("server answered");
    sim.clients[ci].signals.retain(|m| !matches!(m, ServerMessage::Answer { .. }));
    sim.clients[ci].rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&sdp).unwrap()).unwrap();
    sim.drain_client(ci);
}

#[test]
fn room_protocol_two_clients_publish_subscribe_and_chat() {
    let mut sim = Sim::new(SfuConfig::default());
    let a = sim.add_client();
    let b = sim.add_client();
    ws_join(&mut sim, a, "ann");
    ws_join(&mut sim, b, "ben");
    assert!(matches!(sim.clients[a].signals[0], ServerMessage::Joined { .. }));
    assert!(sim.clients[a].signals.iter().any(
        |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.identity == "ben")
    ));
    // ann publishes video + opens the chat channel
    let (mid_a, pending) = ws_publish(&mut sim, a, true);
    take_answer(&mut sim, a, pending);
    // str0m reports remote media once DTLS is up: the track is announced then
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(a)));
    // ben is offered ann's track (server offer), answers like a browser
    assert!(
        sim.clients[b]
            .signals
            .iter()
            .any(|m| matches!(m, ServerMessage::TrackPublished { track } if track.participant == "ann"))
    );
    answer_server_offers(&mut sim, b);
    assert!(sim.clients[b].signals.iter().any(|m| matches!(m, ServerMessage::Subscribed { .. })));
    // ben also publishes, with a chat channel
    let (_mid_b, pending_b) = ws_publish(&mut sim, b, true);
    take_answer(&mut sim, b, pending_b);
    answer_server_offers(&mut sim, a);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(a) && s.connected(b)));
    for _ in 0..3 {
        answer_server_offers(&mut sim, a);
        answer_server_offers(&mut sim, b);
        sim.run(Duration::from_millis(50));
    }
    publisher_sends_vp8(&mut sim, a, mid_a, 60, 20, 0);
    let got = sim.rtp_received(b).len();
    assert!(got >= 150, "ben receives ann's video: {got}");
    // chat: ann -> ben, stamped by the server
    assert!(sim.run_until(Duration::from_secs(3), |s| {
        s.clients.iter().all(|c| c.events.iter().any(|e| matches!(e, Event::ChannelOpen(..))))
    }));
    let ch = sim.clients[a]
        .events
        .iter()
        .find_map(|e| if let Event::ChannelOpen(id, l) = e { (l == "chat").then_some(*id) } else { None })
        .unwrap();
    sim.clients[a].rtc.channel(ch).unwrap().write(false, br#"{"text":"hello ben"}"#).unwrap();
    sim.drain_client(a);
    assert!(sim.run_until(Duration::from_secs(2), |s| {
        s.clients[b].events.iter().any(|e| matches!(e, Event::ChannelData(_)))
    }));
    let data = sim.clients[b]
        .events
        .iter()
        .find_map(|e| if let Event::ChannelData(d) = e { Some(d.data.clone()) } else { None })
        .unwrap();
    let msg: crate::protocol::ChatMessage = serde_json::from_slice(&data).unwrap();
    assert_eq!(msg.text, "hello ben");
    assert_eq!(msg.from.as_deref(), Some("ann"));
    assert!(msg.ts.is_some());
    // glare: ben offers while a server offer is outstanding; the server rolls back and re-offers
    let c = sim.add_client();
    ws_join(&mut sim, c, "cat");
    let (_m, pending_c) = ws_publish(&mut sim, c, false);
    take_answer(&mut sim, c, pending_c);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(c)));
    assert!(
        sim.clients[a].signals.iter().any(|m| matches!(m, ServerMessage::Offer { .. })),
        "ann gets an offer for cat's track"
    );
    let mut api = sim.clients[a].rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let ida = sim.clients[a].id.unwrap();
    sim.clients[a].signals.retain(|m| !matches!(m, ServerMessage::Offer { .. })); // ann ignores the crossing offer
    sim.engine.client_message(sim.now, ida, ClientMessage::Offer { sdp: offer.to_sdp_string(), seq: 2 });
    sim.drain_engine();
    take_answer(&mut sim, a, pending);
    assert!(
        sim.clients[a].signals.iter().any(|m| matches!(m, ServerMessage::Offer { .. })),
        "the rolled-back subscription is offered again"
    );
    answer_server_offers(&mut sim, a);
}

#[test]
fn the_room_camera_reaches_a_whep_viewer_as_h264_with_the_matching_profile() {
    let mut sim = Sim::new(SfuConfig::default());
    let cam = sim.engine.join_local(sim.now, camera(&[])).unwrap();
    sim.drain_engine();
    let v = sim.add_client();
    sim.join_http(
        v,
        "viewer",
        PeerRole::Whep { target: Some("room".into()) },
        &[(MediaKind::Audio, Direction::RecvOnly, None), (MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(v)));
    sim.run(Duration::from_millis(100));
    assert!(
        sim.locals.iter().any(|(i, e)| *i == cam && matches!(e, LocalEvent::KeyframeRequest { track: 0 }))
    );
    for f in 0..30u32 {
        let p = local_pkt(0, 0, f as u16, f * 3000, f % 10 == 0, h264(f % 10 == 0, 0, f), sim.now);
        sim.engine.local_packet(sim.now, cam, p);
        let mut a = local_pkt(1, 0, f as u16, f * 960, false, Bytes::from_static(&[0xfc, 0, 0]), sim.now);
        a.audio_level = Some(30);
        sim.engine.local_packet(sim.now, cam, a);
        sim.drain_engine();
        sim.run(Duration::from_millis(33));
    }
    sim.run(Duration::from_millis(200));
    let got = sim.rtp_received(v);
    let video: Vec<_> = got.iter().filter(|p| p.payload.len() == 6).collect();
    let audio = got.len() - video.len();
    assert!(video.len() >= 29 && audio >= 29, "video {} audio {audio}", video.len());
    // the payload type the viewer got is H.264 constrained baseline, packetization-mode 1
    let pt = video[0].header.payload_type;
    let params = sim.clients[v].rtc.codec_config().params().iter().find(|p| p.pt() == pt).unwrap().spec();
    assert_eq!(params.codec, Codec::H264);
    assert_eq!(params.format.packetization_mode, Some(1));
    assert_eq!(params.format.profile_level_id.map(|p| p >> 8), Some(0x42e0));
}

#[test]
fn simulcast_whip_publisher_is_received_on_one_layer() {
    let mut sim = Sim::new(SfuConfig::default());
    let p = sim.add_client();
    let v = sim.add_client();
    let mut sc = Simulcast::new();
    for r in ["q", "h", "f"] {
        sc.add_send_layer(SimulcastLayer::new(r));
    }
    let mids = sim
        .join_http(p, "alice", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, Some(sc))])
        .unwrap();
    sim.join_http(
        v,
        "bob",
        PeerRole::Whep { target: Some("alice".into()) },
        &[(MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(p) && s.connected(v)));
    let info =
        sim.engine.rooms()[0].participants.iter().find(|x| x.identity == "alice").unwrap().tracks[0].clone();
    assert_eq!(info.layers, vec!["q", "h", "f"]);
    for f in 0..90u32 {
        for (li, rid) in ["q", "h", "f"].iter().enumerate() {
            let seq = u64::from(f) + 1 + li as u64 * 10_000;
            let mut pl = vp8(true, f % 30 == 0, f, li as u8);
            pl[6] = li as u8;
            sim.write(p, mids[0], Some(rid), Codec::Vp8, seq, f * 3000, true, pl);
        }
        sim.run(Duration::from_millis(33));
    }
    let got = sim.rtp_received(v);
    assert!(got.len() >= 40, "{}", got.len());
    let layers: std::collections::BTreeSet<u8> = got.iter().map(|p| p.payload[6]).collect();
    // one outgoing stream; whatever the layer, sequence numbers are contiguous
    let mut seqs: Vec<u64> = got.iter().map(|p| *p.seq_no).collect();
    seqs.sort();
    assert_eq!((seqs[seqs.len() - 1] - seqs[0] + 1) as usize, seqs.len(), "layers seen {layers:?}");
}

/// Prints the engine's CPU cost per forwarded packet (one VP8 publisher, 8
/// str0m viewers: SRTP, rewriting, pacing included; sfu-core at -O0 in the
/// test profile, dependencies at -O2). A number, not a pass/fail threshold.
#[test]
fn forwarding_cost_is_printed() {
    let mut config = SfuConfig::default();
    config.limits.max_joins_per_second = 100;
    let mut sim = Sim::new(config);
    let p = sim.add_client();
    let mids =
        sim.join_http(p, "alice", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)]).unwrap();
    let n = 8;
    let viewers: Vec<usize> = (0..n).map(|_| sim.add_client()).collect();
    for (i, v) in viewers.iter().enumerate() {
        sim.join_http(
            *v,
            &format!("v{i}"),
            PeerRole::Whep { target: Some("alice".into()) },
            &[(MediaKind::Video, Direction::RecvOnly, None)],
        )
        .unwrap();
    }
    assert!(
        sim.run_until(Duration::from_secs(5), |s| s.connected(p) && viewers.iter().all(|v| s.connected(*v)))
    );
    publisher_sends_vp8(&mut sim, p, mids[0], 30, 30, 0);
    let (t0, f0) = (sim.engine_time, sim.engine.stats().forwarded_packets);
    publisher_sends_vp8(&mut sim, p, mids[0], 300, 60, 30);
    let (t1, f1) = (sim.engine_time, sim.engine.stats().forwarded_packets);
    let per = (t1 - t0).as_secs_f64() * 1e6 / (f1 - f0) as f64;
    println!(
        "forwarding cost: {per:.2} µs of engine time per forwarded packet ({} packets to {n} subscribers, debug profile)",
        f1 - f0
    );
    assert!(f1 - f0 >= 300 * 3 * n as u64 * 9 / 10);
}

/// ICE-TCP: a client with only an active TCP candidate reaches the SFU's
/// passive TCP candidate (RFC 4571 framing is the edge's job; here the engine
/// sees de-framed packets with `Protocol::Tcp`).
#[test]
fn a_tcp_only_client_connects_and_publishes() {
    let now = Instant::now();
    let udp = Candidate::host(SFU.parse().unwrap(), "udp").unwrap();
    let tcp = Candidate::builder()
        .tcp()
        .host("10.0.0.1:5001".parse().unwrap())
        .tcptype(str0m::net::TcpType::Passive)
        .build()
        .unwrap();
    let mut sim = Sim::new(SfuConfig::default());
    sim.engine = Engine::new(SfuConfig::default(), vec![udp, tcp], now, SystemTime::now());
    let addr: SocketAddr = "10.0.0.50:9".parse().unwrap();
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(sim.now);
    rtc.add_local_candidate(
        Candidate::builder().tcp().host(addr).tcptype(str0m::net::TcpType::Active).build().unwrap(),
    );
    sim.clients.push(Client {
        rtc,
        addr,
        timeout: sim.now,
        events: Vec::new(),
        id: None,
        signals: Vec::new(),
    });
    let v = sim.add_client();
    let mids =
        sim.join_http(0, "alice", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)]).unwrap();
    assert!(sim.run_until(Duration::from_secs(10), |s| s.connected(0)), "connected over TCP");
    sim.join_http(
        v,
        "bob",
        PeerRole::Whep { target: Some("alice".into()) },
        &[(MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(v)));
    publisher_sends_vp8(&mut sim, 0, mids[0], 30, 10, 0);
    assert!(sim.rtp_received(v).len() >= 60, "{}", sim.rtp_received(v).len());
}

/// The room WHEP (`POST /whep/{room}`) follows the active speaker: the video
/// source switches at the new speaker's keyframe, one continuous sequence.
#[test]
fn the_speaker_view_switches_source_with_continuity() {
    let mut sim = Sim::new(SfuConfig::default());
    let mk = |id: &str| LocalJoin { identity: id.into(), subscribe: LocalSubscription::None, ..camera(&[]) };
    let a = sim.engine.join_local(sim.now, mk("ann")).unwrap();
    let b = sim.engine.join_local(sim.now, mk("ben")).unwrap();
    sim.drain_engine();
    let v = sim.add_client();
    sim.join_http(
        v,
        "viewer",
        PeerRole::Whep { target: None },
        &[(MediaKind::Audio, Direction::RecvOnly, None), (MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(v)));
    let mut f = 0u32;
    let mut talk = |sim: &mut Sim, loud: ParticipantId, frames: u32| {
        for _ in 0..frames {
            f += 1;
            for (i, id) in [a, b].into_iter().enumerate() {
                let key = f.is_multiple_of(15);
                let p = local_pkt(0, 0, f as u16, f * 3000, key, h264(key, i as u8, f), sim.now);
                sim.engine.local_packet(sim.now, id, p);
                let mut au =
                    local_pkt(1, 0, f as u16, f * 960, false, Bytes::from_static(&[0xfc, 0, 0]), sim.now);
                au.audio_level = Some(if id == loud { 10 } else { 100 });
                sim.engine.local_packet(sim.now, id, au);
            }
            sim.drain_engine();
            sim.run(Duration::from_millis(33));
        }
    };
    talk(&mut sim, a, 60);
    talk(&mut sim, b, 90);
    let video: Vec<_> = sim
        .rtp_received(v)
        .into_iter()
        .filter(|p| p.payload.len() == 6)
        .map(|p| (*p.seq_no, p.payload[1], p.payload[0] & 0x1f))
        .collect();
    let mut video = video;
    video.sort();
    let first_b = video.iter().position(|x| x.1 == 1).expect("the view switched to ben");
    assert!(video[..first_b].iter().all(|x| x.1 == 0), "ann first");
    assert!(video[first_b..].iter().all(|x| x.1 == 1), "then ben only");
    assert_eq!(video[first_b].2, 5, "switch on ben's IDR");
    let span = video[video.len() - 1].0 - video[0].0 + 1;
    assert_eq!(span as usize, video.len(), "one continuous sequence across the speaker change");
}

/// A VP8 payload with a full descriptor: X=1, I=1 (15-bit PictureID), L=1,
/// T=1 (TID 0, so every frame is a TL0 frame); then the VP8 header byte (P bit)
/// and a tag byte naming the source.
fn vp8_numbered(key: bool, pic: u16, tl0: u8, tag: u8) -> Bytes {
    Bytes::from(vec![
        0x90,
        0xe0,
        0x80 | (pic >> 8) as u8 & 0x7f,
        pic as u8,
        tl0,
        0x00,
        if key { 0x00 } else { 0x01 },
        tag,
        0xab,
        0xcd,
    ])
}

fn vp8_camera(identity: &str, layers: &[&str]) -> LocalJoin {
    LocalJoin {
        room: "r".into(),
        identity: identity.into(),
        name: None,
        publish: vec![
            LocalTrackSpec {
                name: "camera".into(),
                kind: TrackKind::Video,
                source: TrackSource::Camera,
                codec: LocalCodec::Vp8,
                layers: layers.iter().map(|s| s.to_string()).collect(),
            },
            LocalTrackSpec {
                name: "mic".into(),
                kind: TrackKind::Audio,
                source: TrackSource::Microphone,
                codec: LocalCodec::Opus,
                layers: vec![],
            },
        ],
        subscribe: LocalSubscription::None,
    }
}

/// Consecutive frames (one packet each, sorted by sequence number) must carry
/// consecutive PictureIDs (mod 2^15) and TL0PICIDX (mod 2^8).
fn assert_vp8_numbering_continuous(frames: &[(u64, Vec<u8>)]) {
    for w in frames.windows(2) {
        let a = crate::media::vp8::Vp8Fields::parse(&w[0].1).unwrap();
        let b = crate::media::vp8::Vp8Fields::parse(&w[1].1).unwrap();
        let (pa, pb) = (a.picture_id.unwrap().value, b.picture_id.unwrap().value);
        assert_eq!(
            pb,
            (pa + 1) & 0x7fff,
            "PictureID continuity at seq {} (tags {} -> {})",
            w[1].0,
            w[0].1[7],
            w[1].1[7]
        );
        let (ta, tb) = (a.tl0_pic_idx.unwrap().value, b.tl0_pic_idx.unwrap().value);
        assert_eq!(tb, ta.wrapping_add(1), "TL0PICIDX continuity at seq {}", w[1].0);
    }
}

/// The speaker view (WHEP of the room, a str0m viewer) switches between two
/// VP8 publishers whose PictureIDs live in unrelated ranges (one wraps past
/// 2^15 during the test): the viewer sees one continuous numbering.
#[test]
fn vp8_picture_ids_stay_continuous_across_a_speaker_switch() {
    let mut sim = Sim::new(SfuConfig::default());
    let a = sim.engine.join_local(sim.now, vp8_camera("ann", &[])).unwrap();
    let b = sim.engine.join_local(sim.now, vp8_camera("ben", &[])).unwrap();
    sim.drain_engine();
    let v = sim.add_client();
    sim.join_http(
        v,
        "viewer",
        PeerRole::Whep { target: None },
        &[(MediaKind::Audio, Direction::RecvOnly, None), (MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(v)));
    let mut f = 0u32;
    let mut talk = |sim: &mut Sim, loud: ParticipantId, frames: u32| {
        for _ in 0..frames {
            f += 1;
            for (i, id) in [a, b].into_iter().enumerate() {
                let key = f.is_multiple_of(15);
                // ann numbers from 32700 (wraps), ben from 500; tl0 likewise apart
                let pic = if i == 0 { (32_700 + f) as u16 & 0x7fff } else { (500 + f) as u16 };
                let tl0 = if i == 0 { (200 + f) as u8 } else { (f as u8).wrapping_mul(1).wrapping_add(17) };
                let p = LocalPacket {
                    track: 0,
                    layer: 0,
                    seq: f as u16,
                    timestamp: f * 3000,
                    marker: true,
                    keyframe: key,
                    audio_level: None,
                    capture_time: sim.now,
                    payload: vp8_numbered(key, pic, tl0, i as u8),
                };
                sim.engine.local_packet(sim.now, id, p);
                let mut au =
                    local_pkt(1, 0, f as u16, f * 960, false, Bytes::from_static(&[0xfc, 0, 0]), sim.now);
                au.audio_level = Some(if id == loud { 10 } else { 100 });
                sim.engine.local_packet(sim.now, id, au);
            }
            sim.drain_engine();
            sim.run(Duration::from_millis(33));
        }
    };
    talk(&mut sim, a, 60);
    talk(&mut sim, b, 90);
    let mut video: Vec<(u64, Vec<u8>)> = sim
        .rtp_received(v)
        .into_iter()
        .filter(|p| p.payload.len() == 10)
        .map(|p| (*p.seq_no, p.payload.to_vec()))
        .collect();
    video.sort();
    let first_b = video.iter().position(|x| x.1[7] == 1).expect("the view switched to ben");
    assert!(first_b > 10 && video.len() - first_b > 30, "both sources seen: {first_b} of {}", video.len());
    assert_eq!((video[video.len() - 1].0 - video[0].0 + 1) as usize, video.len(), "one RTP sequence");
    assert_vp8_numbering_continuous(&video);
    // the payload after the descriptor is untouched
    assert!(video.iter().all(|x| x.1[8..] == [0xab, 0xcd]));
}

/// A simulcast VP8 camera whose layers number independently, watched by an
/// in-process subscriber (the patched-copy path): the layer switch keeps the
/// PictureID/TL0PICIDX numbering continuous.
#[test]
fn vp8_picture_ids_stay_continuous_across_a_layer_switch() {
    let mut sim = Sim::new(SfuConfig::default());
    let cam = sim.engine.join_local(sim.now, vp8_camera("cam", &["q", "f"])).unwrap();
    let rec = sim
        .engine
        .join_local(
            sim.now,
            LocalJoin {
                room: "r".into(),
                identity: "recorder".into(),
                name: None,
                publish: vec![],
                subscribe: LocalSubscription::All,
            },
        )
        .unwrap();
    sim.drain_engine();
    let mut frame = 0u32;
    let send = |sim: &mut Sim, layer: usize, key: bool, frame: u32| {
        let pic = if layer == 0 { (9000 + frame) as u16 } else { (32_760 + frame) as u16 & 0x7fff };
        let tl0 = if layer == 0 { frame as u8 } else { (frame as u8).wrapping_add(128) };
        let p = LocalPacket {
            track: 0,
            layer,
            seq: (frame as u16).wrapping_add(layer as u16 * 1000),
            timestamp: frame * 3000,
            marker: true,
            keyframe: key,
            audio_level: None,
            capture_time: sim.now,
            payload: vp8_numbered(key, pic, tl0, layer as u8),
        };
        sim.engine.local_packet(sim.now, cam, p);
        sim.drain_engine();
    };
    // q alone first, then f appears; a keyframe on f lets the recorder switch up
    for _ in 0..30 {
        frame += 1;
        send(&mut sim, 0, frame == 1, frame);
        sim.run(Duration::from_millis(33));
    }
    for i in 0..40 {
        frame += 1;
        send(&mut sim, 0, false, frame);
        send(&mut sim, 1, i == 20, frame);
        sim.run(Duration::from_millis(33));
    }
    let got: Vec<(u64, Vec<u8>)> =
        received(&sim, rec).into_iter().map(|p| (u64::from(p.seq), p.payload.to_vec())).collect();
    let first_f = got.iter().position(|x| x.1[7] == 1).expect("switched to f");
    assert!(first_f >= 30 && got.len() - first_f >= 15, "{first_f} of {}", got.len());
    assert_vp8_numbering_continuous(&got);
}

fn metric(registry: &prometheus::Registry, name: &str, room: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.name() == "room" && l.value() == room))
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        .sum()
}

fn qualities(sim: &Sim, ci: usize) -> Vec<(u8, u64, u16)> {
    sim.clients[ci]
        .signals
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ConnectionQuality { score, bitrate_bps, loss_permille } => {
                Some((*score, *bitrate_bps, *loss_permille))
            }
            _ => None,
        })
        .collect()
}

/// A room-protocol client gets `connection_quality` (good on a clean link,
/// worse under loss, good again after), rate-limited; the loss shows in the
/// room's NACK and packets-lost counters.
#[test]
fn connection_quality_follows_loss_and_loss_is_counted() {
    let registry = prometheus::Registry::new();
    let mut sim = Sim::new(SfuConfig::default());
    sim.engine.set_metrics(crate::metrics::Metrics::register(&registry).unwrap());
    let p = sim.add_client();
    let mids =
        sim.join_http(p, "alice", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)]).unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(p)));
    let c = sim.add_client();
    ws_join(&mut sim, c, "carl");
    answer_server_offers(&mut sim, c);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(c)));
    let t0 = sim.now;
    publisher_sends_vp8(&mut sim, p, mids[0], 100, 30, 0); // ~3.3 s, clean
    let clean = qualities(&sim, c);
    assert!(!clean.is_empty(), "quality is sent once connected");
    assert_eq!(clean.last().unwrap().0, 3, "a clean link is good: {clean:?}");
    assert!(clean.last().unwrap().1 > 0);
    assert_eq!(metric(&registry, "sfu_nacks_total", "r"), 0.0);

    sim.loss = 0.15;
    publisher_sends_vp8(&mut sim, p, mids[0], 150, 30, 100); // 5 s at 15% loss
    let lossy = qualities(&sim, c);
    let worst = lossy[clean.len()..].iter().map(|q| q.0).min().expect("quality changed under loss");
    assert!(worst <= 2, "loss lowers the score: {lossy:?}");
    assert!(lossy[clean.len()..].iter().any(|q| q.2 >= 50), "loss is reported: {lossy:?}");
    assert!(metric(&registry, "sfu_nacks_total", "r") > 0.0, "subscriber NACKs are counted");
    assert!(metric(&registry, "sfu_packets_lost_total", "r") > 0.0, "publisher loss is counted");

    sim.loss = 0.0;
    publisher_sends_vp8(&mut sim, p, mids[0], 150, 30, 250); // 5 s clean again
    let all = qualities(&sim, c);
    assert_eq!(all.last().unwrap().0, 3, "good again: {all:?}");
    let secs = sim.now.saturating_duration_since(t0).as_secs_f64();
    assert!((all.len() as f64) <= secs / 2.0 + 2.0, "rate-limited: {} messages in {secs:.1} s", all.len());
}

fn m_lines(sdp: &str) -> usize {
    sdp.lines().filter(|l| l.starts_with("m=")).count()
}

/// Join/leave churn in a long meeting: a room-protocol client subscribed to
/// each newcomer keeps a bounded SDP, because the server reuses the inactive
/// m-lines of those who left; media flows on a reused m-line with the same
/// SSRC and one continuous sequence.
#[test]
fn churn_reuses_inactive_m_lines_and_the_sdp_stays_bounded() {
    let mut config = SfuConfig::default();
    config.limits.max_joins_per_second = 1000;
    let mut sim = Sim::new(config);
    let c = sim.add_client();
    ws_join(&mut sim, c, "carl");
    let mut last_offer = String::new();
    let mut offers = 0;
    // answer like a browser, including the offers that answers trigger
    let mut answer = |sim: &mut Sim, last_offer: &mut String| {
        while sim.clients[c].signals.iter().any(|m| matches!(m, ServerMessage::Offer { .. })) {
            for m in &sim.clients[c].signals {
                if let ServerMessage::Offer { sdp, .. } = m {
                    *last_offer = sdp.clone();
                    offers += 1;
                }
            }
            answer_server_offers(sim, c);
        }
    };
    let rounds = 12u8;
    for i in 0..rounds {
        let pid =
            sim.engine.join_local(sim.now, LocalJoin { identity: format!("p{i}"), ..camera(&[]) }).unwrap();
        sim.drain_engine();
        if i == 5 {
            // glare on a reuse: carl ignores the server's offer and offers its microphone;
            // the server rolls back (the reused m-lines go back to the parking), answers, re-offers
            assert!(sim.clients[c].signals.iter().any(|m| matches!(m, ServerMessage::Offer { .. })));
            sim.clients[c].signals.retain(|m| !matches!(m, ServerMessage::Offer { .. }));
            let mut api = sim.clients[c].rtc.sdp_api();
            api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let (offer, pending) = api.apply().unwrap();
            let id = sim.clients[c].id.unwrap();
            sim.engine.client_message(
                sim.now,
                id,
                ClientMessage::Offer { sdp: offer.to_sdp_string(), seq: 7 },
            );
            sim.drain_engine();
            take_answer(&mut sim, c, pending);
        }
        answer(&mut sim, &mut last_offer);
        if i == 0 {
            assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(c)));
        }
        sim.run(Duration::from_millis(50));
        for f in 0..20u32 {
            let key = f == 0;
            sim.engine.local_packet(
                sim.now,
                pid,
                local_pkt(0, 0, f as u16, f * 3000, key, h264(key, i, f), sim.now),
            );
            let mut a = local_pkt(1, 0, f as u16, f * 960, false, Bytes::from(vec![0xfc, i, 0]), sim.now);
            a.audio_level = Some(40);
            sim.engine.local_packet(sim.now, pid, a);
            sim.drain_engine();
            sim.run(Duration::from_millis(20));
        }
        sim.run(Duration::from_millis(100));
        let video_of_round =
            sim.rtp_received(c).iter().filter(|p| p.payload.len() == 6 && p.payload[1] == i).count();
        assert!(video_of_round >= 19, "round {i}: {video_of_round} video packets");
        sim.engine.leave(sim.now, pid, LeaveReason::Left);
        sim.drain_engine();
        answer(&mut sim, &mut last_offer);
        sim.run(Duration::from_millis(50));
    }
    assert!(offers >= 2 * rounds as usize, "{offers} offers");
    // one video and one audio m-line reused by every publisher, plus carl's own microphone
    assert!(
        m_lines(&last_offer) <= 3,
        "bounded SDP after {rounds} publishers came and went: {} m-lines",
        m_lines(&last_offer)
    );
    // one video SSRC for all rounds, one continuous sequence through the reuses
    let video: Vec<_> = sim.rtp_received(c).into_iter().filter(|p| p.payload.len() == 6).collect();
    let ssrcs: std::collections::BTreeSet<_> = video.iter().map(|p| p.header.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "the reused m-line keeps its SSRC");
    let mut seqs: Vec<u64> = video.iter().map(|p| *p.seq_no).collect();
    seqs.sort();
    assert_eq!(
        (seqs[seqs.len() - 1] - seqs[0] + 1) as usize,
        seqs.len(),
        "one continuous sequence across reuses"
    );
    let rounds_seen: std::collections::BTreeSet<u8> = video.iter().map(|p| p.payload[1]).collect();
    assert_eq!(rounds_seen.len(), rounds as usize);
}

/// The input path of `fuzz/fuzz_targets/sdp_offer.rs` (codec scan, str0m's
/// parser, `accept_offer` in a WHIP join, the same text as a PATCH fragment)
/// on hostile offers: each is a join or a clear 4xx, and the engine goes on.
#[test]
fn hostile_offers_and_patch_fragments_are_refused_cleanly() {
    let mut config = SfuConfig::default();
    config.limits.max_joins_per_second = 10_000;
    config.limits.max_participants_per_room = 10_000;
    let mut sim = Sim::new(config);
    let ci = sim.add_client();
    let mut sc = Simulcast::new();
    for r in ["q", "h", "f"] {
        sc.add_send_layer(SimulcastLayer::new(r));
    }
    let mut api = sim.clients[ci].rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, Some(sc));
    api.add_channel("chat".into());
    let (offer, _p) = api.apply().unwrap();
    let good = offer.to_sdp_string();
    let mut nasty: Vec<String> = vec![
        String::new(),
        "\0".into(),
        "v=0\r\n".repeat(5000),
        good.replace("a=fingerprint:", "a=fingerprint:md5 "),
        good.replace("a=ice-ufrag:", "a=ice-ufrag-gone:"),
        good.replace("m=video 9", "m=video 0"),
        good.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=audio 9 UDP/TLS/RTP/SAVPF"),
        good.replace("opus/48000/2", "opus/0/0"),
        good.replace("a=rtpmap:", "a=rtpmap:999999999999 "),
        good.replace(
            "a=simulcast:send q;h;f",
            &format!("a=simulcast:send {}", (0..300).map(|i| format!("r{i}")).collect::<Vec<_>>().join(";")),
        ),
        good.replace("a=ssrc:", "a=ssrc:4294967296 "),
        format!(
            "{good}{}",
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=mid:x\r\n".repeat(200)
        ),
        // one payload type, two meanings in two m-lines: str0m 0.25's answerer panicked on it
        // ("Pt locked multiple times"); found by the stable fuzz pass (firmware-app/tests/fuzz_pass.rs)
        include_str!("../../../../fuzz/seeds/sdp_offer/pt-two-meanings-str0m-panic").to_string(),
    ];
    // every prefix cut at a line boundary
    let mut cut = String::new();
    for line in good.split_inclusive("\r\n") {
        cut.push_str(line);
        nasty.push(cut.clone());
    }
    let mut joined = 0;
    for (i, sdp) in nasty.iter().enumerate() {
        let _ = wire::check_codecs(&wire::scan_sdp(sdp), &SfuConfig::default().media.codecs);
        let r = sim.engine.join(
            sim.now,
            RemoteJoin {
                room: "r".into(),
                identity: format!("n{i}"),
                name: None,
                grants: grants(true, true),
                role: PeerRole::Whip,
                offer: Some(sdp.clone()),
                resource: Some(format!("res{i}")),
            },
        );
        match r {
            Ok(j) => {
                joined += 1;
                // the same text as a PATCH fragment: refused or applied, never fatal
                if let Err(e) = sim.engine.patch(sim.now, j.id, sdp) {
                    assert_eq!(e.http_status(), 400, "{e}");
                }
            }
            Err(e) => assert!((400..500).contains(&e.http_status()), "offer {i}: {e}"),
        }
        sim.drain_engine();
    }
    assert!(joined >= 1, "the complete offer joins");
    // PATCH fragments against a live session
    let id = sim
        .engine
        .participant_by_resource(&format!("res{}", nasty.len() - 1))
        .expect("the full offer joined");
    let long = "x".repeat(300);
    let frags: Vec<(String, u16)> = vec![
        ("a=ice-ufrag:\r\na=ice-pwd:\r\n".into(), 400),
        ("a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n".into(), 400),
        (format!("a=ice-ufrag:{long}\r\na=ice-pwd:0123456789012345678901\r\n"), 400),
        ("a=candidate:garbage\r\n".repeat(1000), 204),
        ("a=candidate:garbage\r\n".repeat(5000), 400), // over max_body_bytes
        ("a=end-of-candidates\r\n".into(), 204),
        ("\0\r\n\r\n".into(), 204),
        ("a=ice-ufrag:".repeat(100_000), 400),
    ];
    for (f, want) in frags {
        match sim.engine.patch(sim.now, id, &f) {
            Ok(None) => assert_eq!(want, 204, "{:?}", &f[..f.len().min(60)]),
            Ok(Some(_)) => panic!("no restart expected"),
            Err(e) => assert_eq!(e.http_status(), want, "{e}"),
        }
    }
    assert!(sim.engine.patch(sim.now, 999_999, "a=end-of-candidates").is_err(), "unknown session");
    // the engine goes on: a fresh WHIP publisher connects
    let p = sim.add_client();
    sim.join_http(p, "fresh", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)]).unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(p)));
}

/// The input path of `fuzz/fuzz_targets/datagram.rs` with hand-made hostile
/// datagrams from a connected peer's own address (so they reach its str0m
/// session) and from strangers: dropped and counted, media goes on.
#[test]
fn hostile_datagrams_from_a_connected_peer_are_dropped() {
    let mut sim = Sim::new(SfuConfig::default());
    let pubc = sim.add_client();
    let view = sim.add_client();
    let mids = sim
        .join_http(pubc, "alice", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)])
        .unwrap();
    sim.join_http(
        view,
        "bob",
        PeerRole::Whep { target: Some("alice".into()) },
        &[(MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(pubc) && s.connected(view)));
    let sfu: SocketAddr = SFU.parse().unwrap();
    let from = sim.clients[pubc].addr;
    let mut rtp_all_csrc = vec![0x8f, 96, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4];
    rtp_all_csrc.extend_from_slice(&[0; 8]); // says 15 CSRCs, has 2
    let rtp_lying_ext = vec![0x90, 96, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4, 0xbe, 0xde, 0xff, 0xff, 1, 2];
    let rtcp_lying_len = vec![0x80, 200, 0xff, 0xff, 1, 2, 3, 4];
    let rtcp_compound_garbage =
        [vec![0x81, 205, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9], vec![0x80, 201, 0, 0]].concat();
    let dtls_lying = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 1];
    let dtls_client_hello_truncated = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 1, 0, 0, 0x80];
    let stun_lying_attr = vec![
        0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 6, 0xff, 0xff, b'a',
        b'b', b'c', b'd',
    ];
    let nasty: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x80; 11],
        rtp_all_csrc,
        rtp_lying_ext,
        rtcp_lying_len,
        rtcp_compound_garbage,
        dtls_lying,
        dtls_client_hello_truncated,
        stun_lying_attr,
        vec![0xff; 2000],
        vec![64; 300],
    ];
    let before = sim.engine.stats().dropped_packets;
    for _ in 0..3 {
        for d in &nasty {
            for src in [from, "10.9.9.9:1".parse().unwrap()] {
                sim.engine.handle_receive(sim.now, Protocol::Udp, src, sfu, d);
                sim.drain_engine();
            }
        }
        sim.run(Duration::from_millis(20));
    }
    assert!(sim.engine.stats().dropped_packets > before, "counted");
    assert!(sim.engine.is_connected(sim.clients[pubc].id.unwrap()), "the peer survives its own garbage");
    publisher_sends_vp8(&mut sim, pubc, mids[0], 40, 20, 0);
    assert!(sim.rtp_received(view).len() >= 60, "media still flows: {}", sim.rtp_received(view).len());
}

/// The input path of `fuzz/fuzz_targets/local_rtp.rs`: an in-process
/// publisher sending out-of-range track and layer indexes, empty and
/// truncated payloads, keyframe flags on audio, sequence wraps and time going
/// backwards; the recorder gets what is valid, byte for byte.
#[test]
fn hostile_local_packets_are_dropped_or_forwarded_intact() {
    let mut sim = Sim::new(SfuConfig::default());
    let cam = sim.engine.join_local(sim.now, vp8_camera("cam", &["q", "h", "f"])).unwrap();
    let rec = sim
        .engine
        .join_local(
            sim.now,
            LocalJoin {
                room: "r".into(),
                identity: "rec".into(),
                name: None,
                publish: vec![],
                subscribe: LocalSubscription::All,
            },
        )
        .unwrap();
    sim.drain_engine();
    let pkt = |track: usize, layer: usize, seq: u16, ts: u32, key: bool, payload: &[u8], now: Instant| {
        LocalPacket {
            track,
            layer,
            seq,
            timestamp: ts,
            marker: true,
            keyframe: key,
            audio_level: Some(255),
            capture_time: now,
            payload: Bytes::copy_from_slice(payload),
        }
    };
    let before = sim.engine.stats().dropped_packets;
    let now = sim.now;
    for p in [
        pkt(7, 0, 1, 0, true, &[0x10, 0], now), // no such track
        pkt(0, 9, 1, 0, true, &[0x10, 0], now), // no such layer
        pkt(usize::MAX, usize::MAX, 0, 0, true, &[], now),
    ] {
        sim.engine.local_packet(now, cam, p);
    }
    assert_eq!(sim.engine.stats().dropped_packets - before, 3, "out-of-range indexes are counted drops");
    // junk on valid indexes: empty VP8 keyframe, truncated descriptors, audio "keyframes", wraps, time backwards
    let junk: Vec<LocalPacket> = vec![
        pkt(0, 0, 65535, u32::MAX, true, &[], now),
        pkt(0, 0, 0, 0, true, &[0x90], now),
        pkt(0, 0, 1, 10, true, &[0x90, 0x80], now),
        pkt(0, 0, 2, 5, true, &[0x90, 0xf0, 0xff], now),
        pkt(1, 0, 65535, 0, true, &[], now),
        pkt(1, 0, 0, u32::MAX, false, &[0xfc], now),
        pkt(0, 2, 30000, 1, true, &[0x10, 0x00, 0x9d, 0x01, 0x2a], now),
    ];
    for p in junk {
        sim.engine.local_packet(sim.now, cam, p);
        sim.drain_engine();
    }
    let _ = sim.engine.set_local_muted(sim.now, cam, 5, true);
    sim.run(Duration::from_millis(300));
    // then a well-formed stream: the recorder gets each packet intact, numbering rewritten only
    let mut sent = Vec::new();
    for f in 0..30u32 {
        let payload = vp8_numbered(f % 10 == 0, 100 + f as u16, f as u8, 7);
        sent.push(payload.clone());
        sim.engine.local_packet(
            sim.now,
            cam,
            LocalPacket {
                track: 0,
                layer: 0,
                seq: f as u16,
                timestamp: f * 3000,
                marker: true,
                keyframe: f % 10 == 0,
                audio_level: None,
                capture_time: sim.now,
                payload,
            },
        );
        sim.drain_engine();
        sim.run(Duration::from_millis(33));
    }
    let got: Vec<_> =
        received(&sim, rec).into_iter().filter(|p| p.payload.len() == 10 && p.payload[7] == 7).collect();
    assert!(got.len() >= 20, "{}", got.len());
    for p in &got {
        assert!(
            sent.iter().any(|s| s[..2] == p.payload[..2] && s[5..] == p.payload[5..]),
            "only the numbering changed"
        );
    }
}

mod simulcast;

/// Shutdown: each room-protocol client's last word from the SFU is
/// `closing` — not the others leaving, their tracks going or being
/// unsubscribed — and every WebRTC peer (room clients, WHIP, WHEP) hears a
/// DTLS close_notify (and RTCP BYE), so it knows at once.
#[test]
fn shutdown_says_closing_last_and_closes_every_peer() {
    let mut sim = Sim::new(SfuConfig::default());
    let a = sim.add_client();
    let b = sim.add_client();
    ws_join(&mut sim, a, "ann");
    ws_join(&mut sim, b, "ben");
    let (mid_a, pending_a) = ws_publish(&mut sim, a, false);
    take_answer(&mut sim, a, pending_a);
    let (mid_b, pending_b) = ws_publish(&mut sim, b, false);
    take_answer(&mut sim, b, pending_b);
    let w = sim.add_client();
    let mids =
        sim.join_http(w, "cam", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)]).unwrap();
    let v = sim.add_client();
    sim.join_http(
        v,
        "tv",
        PeerRole::Whep { target: Some("cam".into()) },
        &[(MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    let all = [a, b, w, v];
    assert!(sim.run_until(Duration::from_secs(5), |s| all.iter().all(|c| s.connected(*c))));
    for _ in 0..5 {
        answer_server_offers(&mut sim, a);
        answer_server_offers(&mut sim, b);
        sim.run(Duration::from_millis(50));
    }
    for f in 0..30u32 {
        for (c, mid) in [(a, mid_a), (b, mid_b), (w, mids[0])] {
            sim.write(
                c,
                mid,
                None,
                Codec::Vp8,
                u64::from(f) + 1,
                f * 3000,
                true,
                vp8(true, f % 10 == 0, f, 0),
            );
        }
        sim.run(Duration::from_millis(33));
    }
    assert!(
        !sim.rtp_received(a).is_empty() && !sim.rtp_received(b).is_empty() && !sim.rtp_received(v).is_empty()
    );
    for c in all {
        sim.clients[c].signals.clear();
        assert!(!sim.clients[c].events.iter().any(|e| matches!(e, Event::Closed)));
    }

    sim.engine.shutdown(sim.now);
    sim.drain_engine();
    for c in [a, b] {
        let said: Vec<&ServerMessage> = sim.clients[c].signals.iter().collect();
        assert!(
            matches!(said[..], [ServerMessage::Closing { .. }]),
            "client {c} hears `closing` and nothing else: {said:?}"
        );
    }
    sim.run(Duration::from_millis(200));
    for c in all {
        assert!(
            sim.clients[c].events.iter().any(|e| matches!(e, Event::Closed)),
            "peer {c} was told goodbye (DTLS close_notify)"
        );
    }
    assert_eq!(sim.engine.stats().participants, 0);
}

/// (packets in the send queue, how long its oldest unsent packet has waited)
/// of `identity`'s first down-track.
fn send_queue(sim: &mut Sim, identity: &str) -> (usize, Duration) {
    let now = sim.now;
    let p = sim.engine.participants.values_mut().find(|p| &*p.identity == identity).unwrap();
    let Some(mid) = p.downtracks.first().and_then(|d| d.mid) else { return (0, Duration::ZERO) };
    let mut api = p.rtc.as_mut().unwrap().direct_api();
    let q = api.stream_tx_by_mid(mid, None).and_then(|tx| tx.queue_info());
    q.map(|q| {
        (q.packet_count(), q.first_unsent().map(|t| now.saturating_duration_since(t)).unwrap_or_default())
    })
    .unwrap_or_default()
}

/// A subscriber whose link carries far less than its stream (the bench's
/// large all-to-all rooms): str0m's pacer queue, unbounded of its own, used
/// to grow with every packet (GBs of RSS, a minute of latency). Now the
/// queue stays at its bound, what does not fit is dropped and counted, and
/// once the link is back the video goes on.
#[test]
fn a_subscriber_on_a_slow_link_costs_a_bounded_send_queue() {
    let mut sim = Sim::new(SfuConfig::default());
    let pubc = sim.add_client();
    let view = sim.add_client();
    let mids = sim
        .join_http(pubc, "alice", PeerRole::Whip, &[(MediaKind::Video, Direction::SendOnly, None)])
        .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(pubc)));
    sim.join_http(
        view,
        "bob",
        PeerRole::Whep { target: Some("alice".into()) },
        &[(MediaKind::Video, Direction::RecvOnly, None)],
    )
    .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(view)));
    // ~2.6 Mbit/s: 10 packets of 1000 bytes a frame, 30 frames/s, a keyframe every 2 s;
    // the viewer's link carries 150 kbit/s with a deep (5 s) queue of its own
    sim.squeeze(view, Some(150_000), Duration::from_secs(5));
    let (mut max_count, mut max_age) = (0usize, Duration::ZERO);
    let mut frame = 0u32;
    let mut send = |sim: &mut Sim, frames: u32, max_count: &mut usize, max_age: &mut Duration| {
        for _ in 0..frames {
            frame += 1;
            let key = frame % 60 == 1;
            for i in 0..10u8 {
                let mut p = vp8(i == 0, key, frame, i);
                p.resize(1000, 0xab);
                let seq = u64::from(frame) * 10 + u64::from(i);
                sim.write(pubc, mids[0], None, Codec::Vp8, seq, frame * 3000, i == 9, p);
            }
            sim.run(Duration::from_millis(33));
            let (n, age) = send_queue(sim, "bob");
            *max_count = (*max_count).max(n);
            *max_age = (*max_age).max(age);
        }
    };
    send(&mut sim, 30 * 12, &mut max_count, &mut max_age);
    let dropped = sim.engine.counters.send_queue_full;
    assert!(dropped > 1000, "most of 2.6 Mbit/s over a 150 kbit/s link is dropped at the SFU: {dropped}");
    // one frame of slack: the snapshot str0m keeps is taken as it polls
    assert!(max_count <= forward::SEND_QUEUE_MAX_PACKETS + 10, "queue held {max_count} packets");
    // nothing new joins a queue whose head waited SEND_QUEUE_MAX_AGE; what is
    // in it still drains at the pacer's rate (unbounded, the head would have
    // waited most of the 12 s squeeze)
    assert!(max_age <= forward::SEND_QUEUE_MAX_AGE * 5 / 2, "oldest waited {max_age:?}");
    eprintln!("squeezed: queue at most {max_count} packets, oldest waited {max_age:?}, {dropped} dropped");
    assert!(sim.engine.stats().dropped_packets >= dropped);

    // the link is back: the queue drains and video goes on from a keyframe
    sim.squeeze(view, None, Duration::ZERO);
    let before = sim.rtp_received(view).len();
    let dropped = sim.engine.counters.send_queue_full;
    send(&mut sim, 30 * 8, &mut max_count, &mut max_age);
    let got = sim.rtp_received(view);
    let late: Vec<u32> =
        got[before..].iter().map(|p| u32::from_be_bytes(p.payload[2..6].try_into().unwrap())).collect();
    assert!(late.iter().any(|f| *f > 30 * 18), "frames sent after the lift arrive ({} packets)", late.len());
    // (str0m's estimate climbs back over seconds, so the pacer drains slowly:
    // the bound keeps holding meanwhile)
    assert!(max_count <= forward::SEND_QUEUE_MAX_PACKETS + 10, "queue held {max_count} packets");
    eprintln!(
        "after the lift: {} dropped, {} packets arrived",
        sim.engine.counters.send_queue_full - dropped,
        late.len()
    );
}

#[test]
fn the_recording_flag_reaches_everyone_now_and_whoever_joins_later() {
    let mut sim = Sim::new(SfuConfig::default());
    let a = sim.add_client();
    ws_join(&mut sim, a, "ann");
    let rec = sim
        .engine
        .join_local(
            sim.now,
            LocalJoin {
                room: "r".into(),
                identity: "recorder".into(),
                name: None,
                publish: vec![],
                subscribe: LocalSubscription::All,
            },
        )
        .unwrap();
    sim.drain_engine();
    assert!(matches!(sim.engine.set_recording("nope", true), Err(SfuError::NoSuchRoom(_))));
    sim.engine.set_recording("r", true).unwrap();
    sim.engine.set_recording("r", true).unwrap(); // no change, no second message
    sim.drain_engine();
    let banners = |sim: &Sim, ci: usize| {
        sim.clients[ci]
            .signals
            .iter()
            .filter(|m| matches!(m, ServerMessage::Recording { recording: true }))
            .count()
    };
    assert_eq!(banners(&sim, a), 1);
    assert!(
        sim.locals.iter().any(|(i, e)| *i == rec
            && matches!(e, LocalEvent::Signal(ServerMessage::Recording { recording: true })))
    );
    // a late joiner learns it from `joined`
    let b = sim.add_client();
    ws_join(&mut sim, b, "ben");
    assert!(matches!(sim.clients[b].signals[0], ServerMessage::Joined { recording: true, .. }));
    let json = serde_json::to_string(&sim.clients[b].signals[0]).unwrap();
    assert!(json.contains("\"recording\":true"), "{json}");
    sim.engine.set_recording("r", false).unwrap();
    sim.drain_engine();
    for ci in [a, b] {
        assert!(matches!(
            sim.clients[ci].signals.last(),
            Some(ServerMessage::Recording { recording: false })
        ));
    }
}
