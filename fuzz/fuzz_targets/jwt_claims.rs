#![no_main]
// Bearer headers, JWTs and claims JSON into the token verifier (HS256 and an
// Ed25519 JWKS); the harness is shared with a stable unit test that replays
// seeds/jwt_claims (sfu_core::fuzzing::tests).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu_core::fuzzing::jwt(data));
