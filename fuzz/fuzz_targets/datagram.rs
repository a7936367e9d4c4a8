#![no_main]
//! Arbitrary datagrams into an engine that has one joined WHIP peer, from the
//! peer's (learnt) address and from an unknown one. The engine must drop
//! garbage without panicking and keep answering.
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use sfu_core::auth::Grants;
use sfu_core::engine::{Engine, Output, PeerRole, RemoteJoin};
use sfu_core::SfuConfig;
use str0m::media::{Direction, MediaKind};
use str0m::net::Protocol;
use str0m::{Candidate, Rtc};

fn offer() -> &'static str {
    static OFFER: OnceLock<String> = OnceLock::new();
    OFFER.get_or_init(|| {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host("10.0.0.2:6000".parse().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        api.apply().unwrap().0.to_sdp_string()
    })
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let sfu: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let peer: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let c = Candidate::host(sfu, "udp").unwrap();
    let mut e = Engine::new(SfuConfig::default(), vec![c], now, SystemTime::now());
    let grants = Grants { publish: true, subscribe: false, record: false, admin: false };
    let join = RemoteJoin {
        room: "r".into(),
        identity: "a".into(),
        name: None,
        grants,
        role: PeerRole::Whip,
        offer: Some(offer().to_string()),
        resource: None,
    };
    e.join(now, join).expect("a valid offer joins");
    // split the input into datagrams: [len, from-peer flag, bytes...]*
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
