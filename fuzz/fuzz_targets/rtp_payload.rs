#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sfu_core::engine::wire;
use sfu_core::media::keyframe::{VideoFormat, is_keyframe};
use sfu_core::media::rewrite::{Rewriter, SeqExtender};
use sfu_core::media::vp8::{Vp8Fields, Vp8Munger};
use str0m::rtp::Vp8Descriptor;

fuzz_target!(|data: &[u8]| {
    for f in [VideoFormat::Vp8, VideoFormat::Vp9, VideoFormat::H264, VideoFormat::Av1, VideoFormat::Other] {
        let _ = is_keyframe(f, data);
    }
    let _ = wire::stun_local_ufrag(data);

    // VP8 descriptor: our parser agrees with str0m's (which builds the patches)
    let ours = Vp8Fields::parse(data);
    let theirs = Vp8Descriptor::parse(data).ok();
    assert_eq!(ours.is_some(), theirs.is_some(), "parsers disagree on {data:?}");
    if let (Some(o), Some(t)) = (ours, theirs) {
        assert_eq!(o.picture_id.map(|f| f.value), t.picture_id());
        assert_eq!(o.tl0_pic_idx.map(|f| f.value), t.tl0_pic_idx());
        assert_eq!(o.key_idx.map(|f| f.value), t.key_idx());
        // rewriting twice (a switch) and writing the result back keeps the layout
        let mut m = Vp8Munger::default();
        m.switch(&o);
        let v = m.switch(&o);
        let mut copy = data.to_vec();
        o.apply(&v, &mut copy);
        let again = Vp8Fields::parse(&copy).expect("same layout");
        assert_eq!(again.picture_id.map(|f| f.value), v.picture_id);
        assert_eq!(again.tl0_pic_idx.map(|f| f.value), v.tl0_pic_idx);
        assert_eq!(again.key_idx.map(|f| f.value), v.key_idx);
        if let Some(p) = v.picture_id {
            // str0m accepts every value the munger produces for this descriptor
            assert!(t.patch().picture_id(p).build().is_ok());
        }
    }

    // drive the rewriter with sequence numbers/timestamps taken from the input
    let t0 = Instant::now();
    let mut r = Rewriter::new(90_000, 1, 0);
    let mut ext = SeqExtender::default();
    let mut last_out: Option<u64> = None;
    for (i, c) in data.chunks_exact(7).enumerate() {
        let seq = ext.extend(u16::from_be_bytes([c[0], c[1]]));
        let ts = u32::from_be_bytes([c[2], c[3], c[4], c[5]]);
        let src = u64::from(c[6] & 3);
        let now = t0 + Duration::from_millis(i as u64 * 10);
        let w = if c[6] & 0x80 != 0 { Some(r.switch_to(src, seq, ts, now)) } else { r.rewrite(src, seq, ts, now) };
        if let (Some(w), true) = (w, c[6] & 0x80 != 0) {
            // a switch always continues right after the highest sequence sent
            if let Some(l) = last_out {
                assert!(w.seq > l || l - w.seq > (1 << 62));
            }
        }
        if let Some(w) = w {
            last_out = Some(last_out.map_or(w.seq, |l| l.max(w.seq)));
        }
    }
});
