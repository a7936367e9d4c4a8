#![no_main]
// Room-protocol JSON: what parses round-trips (harness: sfu_core::fuzzing::signaling_json).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu_core::fuzzing::signaling_json(data));
