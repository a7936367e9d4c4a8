#![no_main]
//! Fleet command payloads (what arrives on `roombox/{id}/cmd/{name}`) into the
//! link's core with a pinned key: arbitrary bytes, and a valid signed token with
//! the input XORed over it. Nothing runs unless the verifier accepted it.
use std::sync::OnceLock;

use cloud_bridge::AuthorityAlgorithm;
use cloud_bridge::fleet::command::{CommandClaims, Signer, Verifier, generate_authority_key};
use cloud_bridge::fleet::{Action, Event, FleetLink, LinkSettings};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;
const NAMES: [&str; 4] = ["mute", "reboot", "install_update", "x"];

fn keys() -> &'static (String, String) {
    static K: OnceLock<(String, String)> = OnceLock::new();
    K.get_or_init(|| generate_authority_key(AuthorityAlgorithm::EdDSA).expect("keygen"))
}

fn token() -> &'static String {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| {
        let s = Signer::new(keys().0.as_bytes(), AuthorityAlgorithm::EdDSA).expect("signer");
        s.sign(&CommandClaims {
            aud: "box-1".into(),
            sub: None,
            jti: "c-1".into(),
            name: "mute".into(),
            args: serde_json::json!({"mic": true}),
            exp: NOW + 60,
            iat: Some(NOW),
            iss: None,
        })
        .expect("sign")
    })
}

fn verifier() -> Verifier {
    Verifier::new(keys().1.as_bytes(), AuthorityAlgorithm::EdDSA, "box-1", 3600).expect("verifier")
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let name = NAMES[(sel & 3) as usize];
    let payload: Vec<u8> = if sel & 4 != 0 {
        let mut t = token().clone().into_bytes();
        for (i, b) in rest.iter().enumerate() {
            let n = t.len();
            t[i % n] ^= b;
        }
        t
    } else {
        rest.to_vec()
    };
    let verdict = verifier().verify(&payload, name, NOW);
    let settings = LinkSettings { device_id: "box-1".into(), offline_buffer: 8 };
    let (mut link, _) = FleetLink::new(settings, verifier(), Vec::new(), None, NOW);
    let _ = link.handle(Event::Connected, NOW);
    let topic = format!("roombox/box-1/cmd/{name}");
    for round in 0..2 {
        let actions = link.handle(Event::Message { topic: &topic, payload: &payload }, NOW);
        let ran = actions.iter().filter(|a| matches!(a, Action::Run(_))).count();
        match &verdict {
            Ok(c) if round == 0 => {
                assert_eq!(ran, 1);
                assert_eq!(c.name, name);
            }
            _ => assert_eq!(ran, 0, "a refused or repeated command must not run"),
        }
    }
    // The ack path with the same bytes.
    let _ = link.handle(Event::Message { topic: &format!("{topic}/ack"), payload: &payload }, NOW);
});
