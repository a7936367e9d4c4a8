//! Harnesses shared by the fuzz targets in `fuzz/` (nightly, libFuzzer) and
//! the stable unit tests that replay the committed seeds through them
//! (`fuzzing::tests`), so CI exercises every path a target reaches without a
//! nightly toolchain. Each function must never panic on any input; it panics
//! only when an invariant it checks is broken (a crash is a bug).

use std::time::{Duration, Instant, SystemTime};

use crate::SfuConfig;
use crate::auth::{Claims, Grants, TokenVerifier, bearer, sign_hs256};
use crate::engine::{Engine, Output, PeerRole, RemoteJoin};
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
