#![no_main]
// UDP datagrams into an engine with a connected WHIP peer (harness: sfu_core::fuzzing::datagram).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu_core::fuzzing::datagram(data));
