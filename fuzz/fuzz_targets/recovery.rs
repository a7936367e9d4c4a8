#![no_main]
// Arbitrary files into the recovery scan and RTP into the track recorders (harness: recorder::fuzzing::recovery).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| recorder::fuzzing::recovery(data));
