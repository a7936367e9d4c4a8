//! The harnesses of the fuzz targets in `fuzz/` (nightly, libFuzzer): each
//! target is one call into a function here, so the stable mutation pass
//! (`firmware-app/tests/fuzz_pass.rs`, part of `cargo test`) and the unit
//! tests that replay the committed seeds (`fuzzing::tests`) run exactly what
//! the target runs, without a nightly toolchain. Each function must never panic on any input; it panics
//! only when an invariant it checks is broken (a crash is a bug).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::SfuConfig;
use crate::auth::{Claims, Grants, TokenVerifier, bearer, sign_hs256};
use crate::engine::{Engine, Output, PeerRole, RemoteJoin, wire};
use crate::protocol::{ClientMessage, ServerMessage};

/// The HS256 secret of [`jwt`]'s verifier.
pub const JWT_SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-fuzzing-secret";
/// The time [`jwt`] verifies at.
pub const JWT_NOW: u64 = 1_764_000_100;
const IDP_X: &str = "k6Ertbvo8fkMgXlp0BXpQFvQk76Zuw300INL5BLs7GA";

/// A bearer header value, a JWT or a claims JSON document: parsed and
/// verified (HS256 secret and an Ed25519 JWKS in one verifier) at a fixed
/// time. What verifies re-signs and verifies to the same claims; claims JSON
/// that parses serializes and parses back unchanged.
pub fn jwt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        if let Ok(c) = serde_json::from_slice::<Claims>(data) {
            claims_round_trip(&c);
        }
        return;
    };
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "idp", "x": IDP_X, "alg": "EdDSA", "use": "sig"}
    ]}))
    .expect("a valid JWKS");
    let v = TokenVerifier::hs256(JWT_SECRET)
        .expect("a long secret")
        .with_jwks_for(&jwks, crate::auth::KeyScope::new("https://idp", None))
        .expect("an Ed25519 key");
    let token = bearer(text).unwrap_or(text);
    if let Ok(c) = v.verify(token, JWT_NOW) {
        assert!(!c.sub.is_empty() && !c.room.is_empty(), "verified claims name a subject and a room");
        assert!(c.exp.saturating_add(crate::auth::DEFAULT_LEEWAY_SECS) >= JWT_NOW, "not expired");
        if c.iss.as_deref() != Some("https://idp") {
            let again = sign_hs256(&c, JWT_SECRET).expect("sign");
            assert_eq!(v.verify(&again, JWT_NOW).expect("re-signed verifies"), c);
        }
        let _ = v.verify_for_room(token, &c.room, JWT_NOW);
    }
    if let Ok(c) = serde_json::from_str::<Claims>(text) {
        claims_round_trip(&c);
    }
}

fn claims_round_trip(c: &Claims) {
    let s = serde_json::to_string(c).expect("serialize claims");
    let back: Claims = serde_json::from_str(&s).expect("claims round-trip");
    assert_eq!(&back, c);
}

/// A room-protocol WebSocket session: two room clients (`a` publishes and
/// subscribes, `b` subscribes) joined to one engine; `data` is lines, each a
/// one-byte header (bit 0: which client sends; the rest: milliseconds that
/// pass first) and a text frame. Frames that parse as [`ClientMessage`] go to
/// the engine exactly as the WebSocket edge sends them; every message the
/// engine answers with must serialize and parse back unchanged.
pub fn room_ws(data: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let c = str0m::Candidate::host("10.0.0.1:5000".parse().expect("addr"), "udp").expect("candidate");
    let mut cfg = SfuConfig::default();
    cfg.limits.max_joins_per_second = 1000;
    let mut e = Engine::new(cfg, vec![c], now, SystemTime::now());
    let mut ids = Vec::new();
    for (name, publish) in [("a", true), ("b", false)] {
        let join = RemoteJoin {
            room: "r".into(),
            identity: name.into(),
            name: None,
            grants: Grants { publish, subscribe: true, record: false, admin: false },
            role: PeerRole::Room { auto_subscribe: true },
            offer: None,
            resource: None,
        };
        match e.join(now, join) {
            Ok(j) => ids.push(j.id),
            Err(err) => panic!("a room client joins: {err}"),
        }
    }
    drain(&mut e);
    for line in data.split(|b| *b == b'\n').take(256) {
        let Some((&head, frame)) = line.split_first() else { continue };
        now += Duration::from_millis(u64::from(head >> 1));
        e.handle_timeout(now);
        let Ok(text) = std::str::from_utf8(frame) else { continue };
        if text.len() > crate::protocol::MAX_MESSAGE_BYTES {
            continue;
        }
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Leave {}) => {}
            Ok(msg) => e.client_message(now, ids[usize::from(head & 1)], msg),
            Err(_) => {}
        }
        drain(&mut e);
    }
}

fn drain(e: &mut Engine) {
    for _ in 0..100_000 {
        match e.poll_output() {
            Output::Timeout(_) => return,
            Output::Signal(_, m) => {
                let s = serde_json::to_string(&m).expect("serialize a server message");
                let back: ServerMessage = serde_json::from_str(&s).expect("server message round-trip");
                assert_eq!(back, m);
            }
            _ => {}
        }
    }
    panic!("the engine never ran out of output");
}

/// Room-protocol JSON (`ClientMessage`, chat): whatever parses serializes
/// and parses back to the same message.
pub fn signaling_json(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<ClientMessage>(data) {
        let s = serde_json::to_string(&m).expect("serialize");
        let back: ClientMessage = serde_json::from_str(&s).expect("roundtrip");
        assert_eq!(back, m);
    }
    let _ = serde_json::from_slice::<crate::protocol::ChatMessage>(data);
}

/// An SDP offer into the engine (codec scan, str0m's parser, `accept_offer`
/// via a WHIP join), and the same text as a WHIP `PATCH` fragment.
pub fn sdp_offer(data: &[u8]) {
    let Ok(sdp) = std::str::from_utf8(data) else { return };
    let media = wire::scan_sdp(sdp);
    let _ = wire::check_codecs(&media, &SfuConfig::default().media.codecs);
    let now = Instant::now();
    let mut e = Engine::new(SfuConfig::default(), vec![candidate(SFU_ADDR)], now, SystemTime::now());
    let grants = Grants { publish: true, subscribe: true, record: false, admin: false };
    let join = RemoteJoin {
        room: "r".into(),
        identity: "a".into(),
        name: None,
        grants,
        role: PeerRole::Whip,
        offer: Some(sdp.to_string()),
        resource: Some("x".into()),
    };
    if let Ok(j) = e.join(now, join) {
        let _ = e.patch(now, j.id, sdp);
    }
    drain_all(&mut e);
}

/// RTP payloads into the keyframe detectors, the STUN USERNAME parser, the
/// VP8 descriptor parser (differentially against str0m's, and a rewritten
/// descriptor keeps its layout and is a patch str0m accepts) and the
/// down-track rewriter (a switch continues after the highest sequence sent).
pub fn rtp_payload(data: &[u8]) {
    use crate::media::keyframe::{VideoFormat, is_keyframe};
    use crate::media::rewrite::{Rewriter, SeqExtender};
    use crate::media::vp8::{Vp8Fields, Vp8Munger};
    use str0m::rtp::Vp8Descriptor;

    for f in [VideoFormat::Vp8, VideoFormat::Vp9, VideoFormat::H264, VideoFormat::Av1, VideoFormat::Other] {
        let _ = is_keyframe(f, data);
    }
    let _ = wire::stun_local_ufrag(data);

    let ours = Vp8Fields::parse(data);
    let theirs = Vp8Descriptor::parse(data).ok();
    assert_eq!(ours.is_some(), theirs.is_some(), "parsers disagree on {data:?}");
    if let (Some(o), Some(t)) = (ours, theirs) {
        assert_eq!(o.picture_id.map(|f| f.value), t.picture_id());
        assert_eq!(o.tl0_pic_idx.map(|f| f.value), t.tl0_pic_idx());
        assert_eq!(o.key_idx.map(|f| f.value), t.key_idx());
        // rewriting twice (a switch) and writing the result back keeps the layout
        let mut m = Vp8Munger::default();
        m.switch(&o);
        let v = m.switch(&o);
        let mut copy = data.to_vec();
        o.apply(&v, &mut copy);
        let again = Vp8Fields::parse(&copy).expect("same layout");
        assert_eq!(again.picture_id.map(|f| f.value), v.picture_id);
        assert_eq!(again.tl0_pic_idx.map(|f| f.value), v.tl0_pic_idx);
        assert_eq!(again.key_idx.map(|f| f.value), v.key_idx);
        if let Some(p) = v.picture_id {
            // str0m accepts every value the munger produces for this descriptor
            assert!(t.patch().picture_id(p).build().is_ok());
        }
    }

    // the rewriter, with sequence numbers and timestamps taken from the input
    let t0 = Instant::now();
    let mut r = Rewriter::new(90_000, 1, 0);
    let mut ext = SeqExtender::default();
    let mut last_out: Option<u64> = None;
    for (i, c) in data.chunks_exact(7).enumerate() {
        let seq = ext.extend(u16::from_be_bytes([c[0], c[1]]));
        let ts = u32::from_be_bytes([c[2], c[3], c[4], c[5]]);
        let src = u64::from(c[6] & 3);
        let now = t0 + Duration::from_millis(i as u64 * 10);
        let switch = c[6] & 0x80 != 0;
        let w = if switch { Some(r.switch_to(src, seq, ts, now)) } else { r.rewrite(src, seq, ts, now) };
        if let (Some(w), true, Some(l)) = (w, switch, last_out) {
            // a switch always continues right after the highest sequence sent
            assert!(w.seq > l || l - w.seq > (1 << 62));
        }
        if let Some(w) = w {
            last_out = Some(last_out.map_or(w.seq, |l| l.max(w.seq)));
        }
    }
}

const SFU_ADDR: &str = "10.0.0.1:5000";
const PEER_ADDR: &str = "10.0.0.2:6000";

fn candidate(addr: &str) -> str0m::Candidate {
    str0m::Candidate::host(addr.parse().expect("addr"), "udp").expect("candidate")
}

/// A str0m client's offer (audio and video, send-only) and its ICE ufrag.
fn client_offer() -> &'static (String, String) {
    static OFFER: OnceLock<(String, String)> = OnceLock::new();
    OFFER.get_or_init(|| {
        use str0m::media::{Direction, MediaKind};
        let mut rtc = str0m::Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(candidate(PEER_ADDR));
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let sdp = api.apply().expect("an offer").0.to_sdp_string();
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        (sdp, ufrag)
    })
}

fn sdp_attr<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines().find_map(|l| l.strip_prefix(name)).expect("the answer has ICE credentials").trim()
}

/// The connectivity check a browser sends first: authenticated with the
/// server's password, USE-CANDIDATE, controlling.
fn binding_request(server_ufrag: &str, server_pwd: &str, client_ufrag: &str) -> Vec<u8> {
    use str0m::ice::{StunMessage, TransId};
    let username = format!("{server_ufrag}:{client_ufrag}");
    let msg = StunMessage::binding_request(&username, TransId::new(), true, 0x1234_5678, 2_130_706_431, true);
    let provider = str0m::crypto::from_feature_flags();
    let mut buf = vec![0u8; 1200];
    let n = msg
        .to_bytes(Some(server_pwd.as_bytes()), &mut buf, |k, p| provider.sha1_hmac_provider.sha1_hmac(k, p))
        .expect("a binding request fits");
    buf.truncate(n);
    buf
}

/// Arbitrary datagrams into an engine with one joined WHIP peer that first
/// passed a valid ICE check (so its address is learnt and what follows
/// reaches its str0m session: DTLS records, RTP/RTCP before SRTP, STUN).
/// `data` is `[len, flags, bytes…]*`: flag bit 0 picks the peer's address or
/// an unknown one, the rest is milliseconds that pass first.
pub fn datagram(data: &[u8]) {
    use str0m::net::Protocol;
    let now = Instant::now();
    let sfu: SocketAddr = SFU_ADDR.parse().expect("addr");
    let peer: SocketAddr = PEER_ADDR.parse().expect("addr");
    let stranger: SocketAddr = "10.9.9.9:9".parse().expect("addr");
    let mut e = Engine::new(SfuConfig::default(), vec![candidate(SFU_ADDR)], now, SystemTime::now());
    let grants = Grants { publish: true, subscribe: false, record: false, admin: false };
    let (sdp, client_ufrag) = client_offer();
    let join = RemoteJoin {
        room: "r".into(),
        identity: "a".into(),
        name: None,
        grants,
        role: PeerRole::Whip,
        offer: Some(sdp.clone()),
        resource: None,
    };
    let answer = match e.join(now, join) {
        Ok(j) => j.answer.expect("WHIP answers"),
        Err(err) => panic!("a valid offer joins: {err}"),
    };
    let check =
        binding_request(sdp_attr(&answer, "a=ice-ufrag:"), sdp_attr(&answer, "a=ice-pwd:"), client_ufrag);
    e.handle_receive(now, Protocol::Udp, peer, sfu, &check);
    let mut answered = false;
    loop {
        match e.poll_output() {
            Output::Timeout(_) => break,
            Output::Transmit(t) => answered |= t.destination == peer,
            _ => {}
        }
    }
    assert!(answered, "the valid check is answered");
    let mut rest = data;
    let mut t = now;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]).min(rest.len() - 2);
        let from = if rest[1] & 1 == 0 { peer } else { stranger };
        t += Duration::from_millis(u64::from(rest[1] >> 1));
        e.handle_receive(t, Protocol::Udp, from, sfu, &rest[2..2 + len]);
        e.handle_timeout(t);
        drain_all(&mut e);
        rest = &rest[2 + len..];
    }
    let _ = e.stats();
}

/// In-process publishers (VP8 simulcast ×3, H.264, Opus) into an engine with
/// an in-process recorder; `data` is ops (a packet with out-of-range
/// track/layer indexes, arbitrary payload, numbering and flags; time steps;
/// mute toggles; the recorder leaving and rejoining). The recorder gets the
/// packet just sent byte for byte, except the VP8 descriptor's numbering
/// fields, which keep their layout.
pub fn local_rtp(data: &[u8]) {
    use crate::LeaveReason;
    use crate::local::{LocalCodec, LocalEvent, LocalJoin, LocalPacket, LocalSubscription, LocalTrackSpec};
    use crate::media::vp8::Vp8Fields;
    use crate::protocol::{TrackKind, TrackSource};

    fn spec(name: &str, kind: TrackKind, codec: LocalCodec, layers: &[&str]) -> LocalTrackSpec {
        LocalTrackSpec {
            name: name.into(),
            kind,
            source: if kind == TrackKind::Audio {
                TrackSource::RoomMicrophone
            } else {
                TrackSource::RoomCamera
            },
            codec,
            layers: layers.iter().map(|s| s.to_string()).collect(),
        }
    }
    let rec_join = || LocalJoin {
        room: "r".into(),
        identity: "rec".into(),
        name: None,
        publish: vec![],
        subscribe: LocalSubscription::All,
    };

    let mut now = Instant::now();
    let mut config = SfuConfig::default();
    config.limits.max_joins_per_second = 1_000_000; // the recorder may rejoin at every op
    let mut e = Engine::new(config, vec![], now, SystemTime::now());
    let cam = e
        .join_local(
            now,
            LocalJoin {
                room: "r".into(),
                identity: "cam".into(),
                name: None,
                publish: vec![
                    spec("vp8", TrackKind::Video, LocalCodec::Vp8, &["q", "h", "f"]),
                    spec(
                        "h264",
                        TrackKind::Video,
                        LocalCodec::H264 { profile_level_id: "42e01f".into() },
                        &[],
                    ),
                    spec("mic", TrackKind::Audio, LocalCodec::Opus, &[]),
                ],
                subscribe: LocalSubscription::None,
            },
        )
        .expect("the camera joins");
    let mut rec = e.join_local(now, rec_join()).expect("the recorder joins");
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let mut sent: Option<(usize, Vec<u8>)> = None;
        match op % 8 {
            0..=4 => {
                // track, layer (index 3 is one past the end), seq (2), ts (2),
                // flags (marker, keyframe, audio level), payload length, payload
                let Some(h) = rest.get(..8) else { break };
                rest = &rest[8..];
                let len = usize::from(h[7]).min(rest.len());
                let payload = &rest[..len];
                rest = &rest[len..];
                let track = usize::from(h[0] % 4);
                sent = Some((track, payload.to_vec()));
                e.local_packet(
                    now,
                    cam,
                    LocalPacket {
                        track,
                        layer: usize::from(h[1] % 4),
                        seq: u16::from_be_bytes([h[2], h[3]]),
                        timestamp: u32::from(u16::from_be_bytes([h[4], h[5]])) * 1500,
                        marker: h[6] & 1 != 0,
                        keyframe: h[6] & 2 != 0,
                        audio_level: (h[6] & 4 != 0).then_some(op),
                        capture_time: now,
                        payload: bytes::Bytes::copy_from_slice(payload),
                    },
                );
            }
            5 => {
                let step = rest.first().copied().unwrap_or(0);
                rest = rest.get(1..).unwrap_or(&[]);
                now += Duration::from_millis(u64::from(step) * 4);
                e.handle_timeout(now);
            }
            6 => {
                let b = rest.first().copied().unwrap_or(0);
                rest = rest.get(1..).unwrap_or(&[]);
                let _ = e.set_local_muted(now, cam, usize::from(b % 4), b & 0x80 != 0);
            }
            _ => {
                e.leave(now, rec, LeaveReason::Left);
                rec = e.join_local(now, rec_join()).expect("the recorder rejoins");
            }
        }
        loop {
            match e.poll_output() {
                Output::Timeout(_) => break,
                Output::Local(id, LocalEvent::Rtp(p)) if id == rec => {
                    let (track, input) = sent.as_ref().expect("the recorder only gets the packet just sent");
                    assert_eq!(p.payload.len(), input.len());
                    match (*track, Vp8Fields::parse(input)) {
                        (0, Some(f)) => {
                            let g = Vp8Fields::parse(&p.payload).expect("the descriptor stays well-formed");
                            assert_eq!(f.picture_id.map(|x| x.offset), g.picture_id.map(|x| x.offset));
                            assert_eq!(f.long_picture_id, g.long_picture_id);
                            assert_eq!(f.tl0_pic_idx.map(|x| x.offset), g.tl0_pic_idx.map(|x| x.offset));
                            assert_eq!(f.key_idx.map(|x| x.offset), g.key_idx.map(|x| x.offset));
                            // the bytes the numbering may occupy: PictureID (1 or 2), TL0PICIDX, KEYIDX
                            let mut numbering: Vec<usize> = Vec::new();
                            if let Some(p) = f.picture_id {
                                numbering.push(usize::from(p.offset));
                                if f.long_picture_id {
                                    numbering.push(usize::from(p.offset) + 1);
                                }
                            }
                            numbering.extend(f.tl0_pic_idx.map(|x| usize::from(x.offset)));
                            numbering.extend(f.key_idx.map(|x| usize::from(x.offset)));
                            for (i, (a, b)) in input.iter().zip(p.payload.iter()).enumerate() {
                                assert!(a == b || numbering.contains(&i), "byte {i} changed");
                            }
                        }
                        _ => assert_eq!(&p.payload[..], &input[..], "forwarded byte for byte"),
                    }
                }
                _ => {}
            }
        }
    }
}

/// Polls until the engine has nothing more to say; a loop that never ends is a bug.
fn drain_all(e: &mut Engine) {
    for _ in 0..1_000_000 {
        if let Output::Timeout(_) = e.poll_output() {
            return;
        }
    }
    panic!("the engine never ran out of output");
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.expect("dir entry").path())
            .map(|p| {
                let bytes = std::fs::read(&p).expect("seed");
                (p, bytes)
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out
    }

    /// The committed seeds of `fuzz/seeds/jwt_claims` through the target's harness.
    #[test]
    fn the_jwt_claims_seeds_replay_cleanly() {
        let mut verified = 0;
        for (p, data) in seeds("jwt_claims") {
            super::jwt(&data);
            let text = String::from_utf8_lossy(&data);
            let v = crate::auth::TokenVerifier::hs256(super::JWT_SECRET).unwrap();
            if v.verify(crate::auth::bearer(&text).unwrap_or(&text), super::JWT_NOW).is_ok() {
                verified += 1;
            }
            let _ = p;
        }
        assert!(verified >= 1, "a seed is a valid token, so the harness reaches past the signature");
    }

    /// The committed seeds of `fuzz/seeds/room_ws` through the target's harness.
    #[test]
    fn the_room_ws_seeds_replay_cleanly() {
        for (_, data) in seeds("room_ws") {
            super::room_ws(&data);
        }
    }

    /// The older targets' seeds that are room-protocol JSON replay through `room_ws` too.
    #[test]
    fn the_signaling_json_seeds_replay_as_room_ws_frames() {
        for (_, data) in seeds("signaling_json") {
            let mut framed = vec![0u8];
            framed.extend_from_slice(&data);
            super::room_ws(&framed);
        }
    }
}
