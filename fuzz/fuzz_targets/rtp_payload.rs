#![no_main]
// RTP payloads: keyframe detectors, STUN USERNAME, VP8 descriptor against str0m's, the rewriter (harness: sfu_core::fuzzing::rtp_payload).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu_core::fuzzing::rtp_payload(data));
