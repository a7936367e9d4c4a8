#![no_main]
// In-process publishers into an engine with an in-process recorder (harness: sfu_core::fuzzing::local_rtp).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu_core::fuzzing::local_rtp(data));
