#![no_main]
use std::time::{Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use sfu_core::auth::Grants;
use sfu_core::engine::{Engine, Output, PeerRole, RemoteJoin, wire};
use sfu_core::SfuConfig;
use str0m::Candidate;

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else { return };
    let media = wire::scan_sdp(sdp);
    let _ = wire::check_codecs(&media, &SfuConfig::default().media.codecs);
    let now = Instant::now();
    let c = Candidate::host("10.0.0.1:5000".parse().unwrap(), "udp").unwrap();
    let mut e = Engine::new(SfuConfig::default(), vec![c], now, SystemTime::now());
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
        // the same text as a trickle/ICE-restart fragment
        let _ = e.patch(now, j.id, sdp);
    }
    while !matches!(e.poll_output(), Output::Timeout(_)) {}
});
