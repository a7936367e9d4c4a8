#![no_main]
//! Arbitrary datagrams into an engine with one joined WHIP peer. The peer
//! first passes a valid ICE connectivity check (so its address is learnt and
//! what follows reaches its str0m session: DTLS records, RTP/RTCP before
//! SRTP, STUN), then the fuzzer's datagrams arrive from the peer's address and
//! from an unknown one, with time passing between them. The engine must drop
//! garbage without panicking and keep answering.
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use sfu_core::SfuConfig;
use sfu_core::auth::Grants;
use sfu_core::engine::{Engine, Output, PeerRole, RemoteJoin};
use str0m::ice::{StunMessage, TransId};
use str0m::media::{Direction, MediaKind};
use str0m::net::Protocol;
use str0m::{Candidate, Rtc};

/// A str0m client's offer and its ICE ufrag.
fn offer() -> &'static (String, String) {
    static OFFER: OnceLock<(String, String)> = OnceLock::new();
    OFFER.get_or_init(|| {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host("10.0.0.2:6000".parse().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let sdp = api.apply().unwrap().0.to_sdp_string();
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        (sdp, ufrag)
    })
}

fn attr<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines().find_map(|l| l.strip_prefix(name)).expect("the answer has ICE credentials").trim()
}

/// The connectivity check a browser would send first: authenticated with the
/// server's password, USE-CANDIDATE, controlling.
fn binding_request(server_ufrag: &str, server_pwd: &str, client_ufrag: &str) -> Vec<u8> {
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

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let sfu: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let peer: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let c = Candidate::host(sfu, "udp").unwrap();
    let mut e = Engine::new(SfuConfig::default(), vec![c], now, SystemTime::now());
    let grants = Grants { publish: true, subscribe: false, record: false, admin: false };
    let (sdp, client_ufrag) = offer();
    let join = RemoteJoin {
        room: "r".into(),
        identity: "a".into(),
        name: None,
        grants,
        role: PeerRole::Whip,
        offer: Some(sdp.clone()),
        resource: None,
    };
    let answer = e.join(now, join).expect("a valid offer joins").answer.expect("WHIP answers");
    let check = binding_request(attr(&answer, "a=ice-ufrag:"), attr(&answer, "a=ice-pwd:"), client_ufrag);
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
    // split the input into datagrams: [len, from-peer flag and time step, bytes...]*
    let mut rest = data;
    let mut t = now;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]).min(rest.len() - 2);
        let from = if rest[1] & 1 == 0 { peer } else { "10.9.9.9:9".parse().unwrap() };
        let d = &rest[2..2 + len];
        t += Duration::from_millis(u64::from(rest[1] >> 1));
        e.handle_receive(t, Protocol::Udp, from, sfu, d);
        e.handle_timeout(t);
        while !matches!(e.poll_output(), Output::Timeout(_)) {}
        rest = &rest[2 + len..];
    }
    let _ = e.stats();
});
