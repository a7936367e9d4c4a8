#![no_main]
// Desired-config payloads: envelope round-trip, applied once (harness: cloud_bridge::fuzzing::fleet_desired).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloud_bridge::fuzzing::fleet_desired(data));
