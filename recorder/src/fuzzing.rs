//! The harness of the `recovery` fuzz target in `fuzz/`: the target is one
//! call into [`recovery`], so the stable mutation pass
//! (`firmware-app/tests/fuzz_pass.rs`, part of `cargo test`) runs exactly
//! what the target runs.

use std::time::Duration;

use crate::{Codec, RtpIn, TrackRecorder, scan};

/// Arbitrary bytes as a recording file into the recovery scan (never a
/// panic; what it calls valid scans again to the same result), and the same
/// bytes cut into RTP packets (`[seq step, ts step, flags, len, payload…]*`)
/// through the H.264, VP8 and Opus track recorders: whatever they write must
/// scan whole.
pub fn recovery(data: &[u8]) {
    if let Ok(r) = scan(data) {
        assert!(r.valid_len <= data.len() as u64);
        let valid = usize::try_from(r.valid_len).expect("within the input");
        let again = scan(&data[..valid]).expect("the valid part scans");
        assert_eq!((again.valid_len, again.fragments, again.end_dts), (r.valid_len, r.fragments, r.end_dts));
    }
    for codec in [Codec::H264, Codec::Vp8, Codec::Opus] {
        let mut rec = TrackRecorder::with_fragment(codec, Duration::from_millis(100));
        let mut file = Vec::new();
        let mut rest = data;
        let (mut seq, mut ts, mut t) = (0u16, 0u32, 0u64);
        while rest.len() >= 4 {
            let len = usize::from(rest[3]).min(rest.len() - 4);
            let payload = &rest[4..4 + len];
            seq = seq.wrapping_add(u16::from(rest[0]) % 4);
            ts = ts.wrapping_add(u32::from(rest[1]) * 300);
            t += u64::from(rest[1]);
            let pkt = RtpIn { seq, timestamp: ts, marker: rest[2] & 1 != 0, payload };
            let _ = rec.push(pkt, Duration::from_millis(t), &mut file);
            rest = &rest[4 + len..];
        }
        if rec.finish(&mut file).is_ok() && !file.is_empty() {
            let r = scan(&file).expect("a recorded file scans");
            assert_eq!(r.valid_len, file.len() as u64);
        }
    }
}
