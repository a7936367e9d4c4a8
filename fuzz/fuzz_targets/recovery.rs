#![no_main]
//! The recovery reader on arbitrary files: never panics, and what it calls
//! valid scans again to the same result (cutting there loses nothing more).
//! The same bytes, split into RTP packets, go through each track recorder:
//! whatever the depacketizers accept must make a file recovery accepts whole.
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use recorder::{Codec, RtpIn, TrackRecorder, scan};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = scan(data) {
        assert!(r.valid_len <= data.len() as u64);
        let again = scan(&data[..r.valid_len as usize]).expect("the valid part scans");
        assert_eq!((again.valid_len, again.fragments, again.end_dts), (r.valid_len, r.fragments, r.end_dts));
    }
    for codec in [Codec::H264, Codec::Vp8, Codec::Opus] {
        let mut rec = TrackRecorder::with_fragment(codec, Duration::from_millis(100));
        let mut file = Vec::new();
        // packet = [seq_lo, ts_step, flags, len, payload...]
        let mut rest = data;
        let (mut seq, mut ts, mut t) = (0u16, 0u32, 0u64);
        while rest.len() >= 4 {
            let len = (rest[3] as usize).min(rest.len() - 4);
            let payload = &rest[4..4 + len];
            seq = seq.wrapping_add(rest[0] as u16 % 4);
            ts = ts.wrapping_add(rest[1] as u32 * 300);
            t += rest[1] as u64;
            let pkt = RtpIn { seq, timestamp: ts, marker: rest[2] & 1 != 0, payload };
            let _ = rec.push(pkt, Duration::from_millis(t), &mut file);
            rest = &rest[4 + len..];
        }
        if rec.finish(&mut file).is_ok() && !file.is_empty() {
            let r = scan(&file).expect("a recorded file scans");
            assert_eq!(r.valid_len, file.len() as u64);
        }
    }
});
