//! The harnesses of cloud-bridge's fuzz targets in `fuzz/` (`fleet_command`,
//! `fleet_desired`, `s3_xml`): each target is one call into a function here,
//! so the stable mutation pass (`firmware-app/tests/fuzz_pass.rs`, part of
//! `cargo test`) runs exactly what the target runs. Each function must never
//! panic on any input; it panics only when an invariant it checks is broken.

use std::sync::OnceLock;

use crate::AuthorityAlgorithm;
use crate::fleet::command::{CommandClaims, Signer, Verifier, generate_authority_key};
use crate::fleet::{Action, Event, FleetLink, LinkSettings, desired};

/// The time [`fleet_command`] verifies at.
pub const FLEET_NOW: u64 = 1_800_000_000;
const COMMAND_NAMES: [&str; 4] = ["mute", "reboot", "install_update", "x"];

/// One Ed25519 authority key pair (private PEM, public PEM) per process.
fn authority() -> &'static (String, String) {
    static K: OnceLock<(String, String)> = OnceLock::new();
    K.get_or_init(|| generate_authority_key(AuthorityAlgorithm::EdDSA).expect("keygen"))
}

/// A valid signed `mute` command for `box-1`, unexpired at [`FLEET_NOW`].
pub fn fleet_token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| {
        let s = Signer::new(authority().0.as_bytes(), AuthorityAlgorithm::EdDSA).expect("signer");
        s.sign(&CommandClaims {
            aud: "box-1".into(),
            sub: None,
            jti: "c-1".into(),
            name: "mute".into(),
            args: serde_json::json!({"mic": true}),
            exp: FLEET_NOW + 60,
            iat: Some(FLEET_NOW),
            iss: None,
        })
        .expect("sign")
    })
}

fn verifier() -> Verifier {
    Verifier::new(authority().1.as_bytes(), AuthorityAlgorithm::EdDSA, "box-1", 3600).expect("verifier")
}

/// A fleet command payload (`roombox/{id}/cmd/{name}`) into the link's core
/// with a pinned key. The first byte picks the command name (bits 0-1) and
/// whether the rest is the payload itself or XORed over a valid signed token
/// (bit 2). Only what the verifier accepts runs, and only once.
pub fn fleet_command(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let name = COMMAND_NAMES[usize::from(sel & 3)];
    let payload: Vec<u8> = if sel & 4 != 0 {
        let mut t = fleet_token().as_bytes().to_vec();
        let n = t.len();
        for (i, b) in rest.iter().enumerate() {
            t[i % n] ^= b;
        }
        t
    } else {
        rest.to_vec()
    };
    let verdict = verifier().verify(&payload, name, FLEET_NOW);
    let settings = LinkSettings { device_id: "box-1".into(), offline_buffer: 8 };
    let (mut link, _) = FleetLink::new(settings, verifier(), Vec::new(), None, FLEET_NOW);
    let _ = link.handle(Event::Connected, FLEET_NOW);
    let topic = format!("roombox/box-1/cmd/{name}");
    for round in 0..2 {
        let actions = link.handle(Event::Message { topic: &topic, payload: &payload }, FLEET_NOW);
        let ran = actions.iter().filter(|a| matches!(a, Action::Run(_))).count();
        match &verdict {
            Ok(c) if round == 0 => {
                assert_eq!(ran, 1, "an accepted command runs");
                assert_eq!(c.name, name);
            }
            _ => assert_eq!(ran, 0, "a refused or repeated command must not run"),
        }
    }
    // the ack path with the same bytes
    let _ = link.handle(Event::Message { topic: &format!("{topic}/ack"), payload: &payload }, FLEET_NOW);
}

/// A desired-config payload (retained on `roombox/{id}/config/desired`): the
/// envelope parser (what parses round-trips) and the link's core (a valid
/// envelope is applied once; anything else is reported, never applied).
pub fn fleet_desired(data: &[u8]) {
    let parsed = desired::parse(data);
    if let Ok(d) = &parsed {
        let again = serde_json::to_vec(d).expect("serialize");
        assert_eq!(desired::parse(&again).as_ref(), Ok(d));
    }
    let settings = LinkSettings { device_id: "box-1".into(), offline_buffer: 8 };
    let (mut link, _) = FleetLink::new(settings, verifier(), Vec::new(), None, 0);
    let _ = link.handle(Event::Connected, 0);
    let topic = "roombox/box-1/config/desired";
    let a = link.handle(Event::Message { topic, payload: data }, 0);
    let applied = a.iter().filter(|a| matches!(a, Action::ApplyConfig(_))).count();
    assert_eq!(applied, usize::from(parsed.is_ok()));
    let b = link.handle(Event::Message { topic, payload: data }, 0);
    assert!(b.iter().all(|a| !matches!(a, Action::ApplyConfig(_))), "applied twice");
}

/// Any answer of a (hostile) S3 store into the upload client's scanner: a
/// result or nothing, never a panic.
pub fn s3_xml(data: &[u8]) {
    use crate::upload::{composite_etag, normalize_etag, xml};
    let text = String::from_utf8_lossy(data);
    for tag in ["UploadId", "ETag", "Code", "Message", "Upload", "Key"] {
        let _ = xml::all(&text, tag);
    }
    let _ = xml::list_uploads(&text);
    let _ = xml::unescape(&text);
    let _ = normalize_etag(&text);
    let _ = composite_etag(text.split(','));
}
