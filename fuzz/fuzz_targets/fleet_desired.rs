#![no_main]
//! Desired-config payloads (retained on `roombox/{id}/config/desired`): the
//! envelope parser (what parses round-trips) and the link's core (a valid
//! envelope is applied once; anything else is reported, never applied).
use cloud_bridge::AuthorityAlgorithm;
use cloud_bridge::fleet::command::{Verifier, generate_authority_key};
use cloud_bridge::fleet::{Action, Event, FleetLink, LinkSettings, desired};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn public() -> &'static String {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| generate_authority_key(AuthorityAlgorithm::EdDSA).expect("keygen").1)
}

fuzz_target!(|data: &[u8]| {
    let parsed = desired::parse(data);
    if let Ok(d) = &parsed {
        let again = serde_json::to_vec(d).expect("serialize");
        assert_eq!(desired::parse(&again).as_ref(), Ok(d));
    }
    let v = Verifier::new(public().as_bytes(), AuthorityAlgorithm::EdDSA, "box-1", 3600).expect("verifier");
    let settings = LinkSettings { device_id: "box-1".into(), offline_buffer: 8 };
    let (mut link, _) = FleetLink::new(settings, v, Vec::new(), None, 0);
    let _ = link.handle(Event::Connected, 0);
    let a = link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: data }, 0);
    let applied = a.iter().filter(|a| matches!(a, Action::ApplyConfig(_))).count();
    assert_eq!(applied, usize::from(parsed.is_ok()));
    let b = link.handle(Event::Message { topic: "roombox/box-1/config/desired", payload: data }, 0);
    assert!(b.iter().all(|a| !matches!(a, Action::ApplyConfig(_))), "applied twice");
});
