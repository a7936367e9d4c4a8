#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu_core::protocol::{ChatMessage, ClientMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<ClientMessage>(data) {
        // whatever parses serializes and parses back to the same message
        let s = serde_json::to_string(&m).expect("serialize");
        let back: ClientMessage = serde_json::from_str(&s).expect("roundtrip");
        assert_eq!(back, m);
    }
    let _ = serde_json::from_slice::<ChatMessage>(data);
});
