#![no_main]
// Fleet command payloads into the link with a pinned key (harness: cloud_bridge::fuzzing::fleet_command).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloud_bridge::fuzzing::fleet_command(data));
