//! Keyframe detection on RTP payloads (network input: every function here is
//! total over arbitrary bytes and is fuzzed by `fuzz/fuzz_targets/rtp_payload.rs`).

/// The video payload formats the SFU inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoFormat {
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Not inspected: every packet is treated as a possible switch point.
    Other,
}

/// Whether this RTP payload starts (or belongs to) a keyframe that a decoder
/// can start from. Never panics, whatever the bytes.
pub fn is_keyframe(format: VideoFormat, payload: &[u8]) -> bool {
    match format {
        VideoFormat::Vp8 => vp8_keyframe(payload),
        VideoFormat::Vp9 => vp9_keyframe(payload),
        VideoFormat::H264 => h264_keyframe(payload),
        VideoFormat::Av1 => av1_keyframe(payload),
        VideoFormat::Other => true,
    }
}

/// RFC 7741: payload descriptor, then the VP8 payload header whose P bit is 0
/// on a key frame. Only the first packet of partition 0 (S=1, PID=0) tells.
fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let x = b0 & 0x80 != 0;
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !s || pid != 0 {
        return false;
    }
    let mut i = 1;
    if x {
        let Some(&b1) = p.get(1) else { return false };
        i = 2;
        if b1 & 0x80 != 0 {
            // I: picture id, 7 or 15 bits
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if b1 & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if b1 & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    match p.get(i) {
        Some(&h) => h & 0x01 == 0,
        None => false,
    }
}

/// VP9 payload descriptor (RFC 9628): a key frame is a frame that is not
/// inter-predicted (P=0), starting (B=1), on spatial layer 0.
fn vp9_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let i_bit = b0 & 0x80 != 0;
    let p_bit = b0 & 0x40 != 0;
    let l_bit = b0 & 0x20 != 0;
    let b_bit = b0 & 0x08 != 0;
    if p_bit || !b_bit {
        return false;
    }
    if l_bit {
        let mut i = 1;
        if i_bit {
            let Some(&pic) = p.get(1) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        let Some(&layer) = p.get(i) else { return false };
        let sid = (layer >> 1) & 0x07;
        return sid == 0;
    }
    true
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// RFC 6184: single NAL unit, STAP-A (aggregated units, each with a 16-bit
/// size) and FU-A (fragment; only the start fragment names the type). A
/// packet carrying an SPS or an IDR slice starts a keyframe.
fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        NAL_IDR | NAL_SPS => true,
        NAL_STAP_A => {
            let mut rest = &p[1..];
            while rest.len() >= 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                rest = &rest[2..];
                if size == 0 || size > rest.len() {
                    return false;
                }
                let t = rest[0] & 0x1f;
                if t == NAL_IDR || t == NAL_SPS {
                    return true;
                }
                rest = &rest[size..];
            }
            false
        }
        NAL_FU_A => match p.get(1) {
            Some(&fu) => fu & 0x80 != 0 && matches!(fu & 0x1f, NAL_IDR | NAL_SPS),
            None => false,
        },
        _ => false,
    }
}

/// AV1 RTP payload: the aggregation header's N bit marks the first packet of a
/// coded video sequence (a keyframe with its sequence header); Z must be 0.
fn av1_keyframe(p: &[u8]) -> bool {
    match p.first() {
        Some(&h) => h & 0x08 != 0 && h & 0x80 == 0,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_key_and_delta_frames_are_told_apart() {
        // X=1,S=1,PID=0; I=1 with a 15-bit picture id; then P=0 (key)
        assert!(is_keyframe(VideoFormat::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00]));
        // same with P=1 (delta)
        assert!(!is_keyframe(VideoFormat::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00]));
        // continuation packet (S=0) never tells
        assert!(!is_keyframe(VideoFormat::Vp8, &[0x80, 0x80, 0x81, 0x23, 0x10]));
        // no extension: descriptor is one byte
        assert!(is_keyframe(VideoFormat::Vp8, &[0x10, 0x00]));
        assert!(!is_keyframe(VideoFormat::Vp8, &[0x90]));
    }

    #[test]
    fn h264_idr_sps_stap_a_and_fu_a_are_keyframes() {
        assert!(is_keyframe(VideoFormat::H264, &[0x65, 0x88])); // IDR
        assert!(is_keyframe(VideoFormat::H264, &[0x67, 0x42])); // SPS
        assert!(!is_keyframe(VideoFormat::H264, &[0x41, 0x9a])); // non-IDR slice
        // STAP-A with SPS (size 2) and PPS (size 2)
        assert!(is_keyframe(VideoFormat::H264, &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]));
        // STAP-A with only a PPS
        assert!(!is_keyframe(VideoFormat::H264, &[0x78, 0, 2, 0x68, 0xce]));
        // STAP-A with a lying size
        assert!(!is_keyframe(VideoFormat::H264, &[0x78, 0, 200, 0x67]));
        // FU-A start of an IDR, then its middle part
        assert!(is_keyframe(VideoFormat::H264, &[0x7c, 0x85, 0x88]));
        assert!(!is_keyframe(VideoFormat::H264, &[0x7c, 0x05, 0x88]));
        assert!(!is_keyframe(VideoFormat::H264, &[0x7c]));
    }

    #[test]
    fn vp9_and_av1_keyframes() {
        assert!(is_keyframe(VideoFormat::Vp9, &[0x08])); // B=1, P=0
        assert!(!is_keyframe(VideoFormat::Vp9, &[0x48])); // P=1
        assert!(is_keyframe(VideoFormat::Vp9, &[0xa8, 0x05, 0x00])); // I, L, sid 0
        assert!(!is_keyframe(VideoFormat::Vp9, &[0xa8, 0x05, 0x02])); // sid 1
        assert!(is_keyframe(VideoFormat::Av1, &[0x18]));
        assert!(!is_keyframe(VideoFormat::Av1, &[0x10]));
        assert!(!is_keyframe(VideoFormat::Av1, &[]));
    }
}
