#![no_main]
// An S3 store's answers into the upload client's scanner (harness: cloud_bridge::fuzzing::s3_xml).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cloud_bridge::fuzzing::s3_xml(data));
