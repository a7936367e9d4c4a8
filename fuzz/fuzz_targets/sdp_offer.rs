#![no_main]
// SDP offers into the engine and as a WHIP PATCH fragment (harness: sfu_core::fuzzing::sdp_offer).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu_core::fuzzing::sdp_offer(data));
