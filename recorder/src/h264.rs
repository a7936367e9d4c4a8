//! Just enough of an H.264 sequence parameter set to size the sample entry.

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(b as u32)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 { k.div_ceil(2) as i32 } else { -((k / 2) as i32) })
    }
}

/// Removes emulation-prevention bytes (00 00 03).
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Width and height (after cropping) from an SPS NAL unit (header byte included).
pub(crate) fn sps_size(sps: &[u8]) -> Option<(u16, u16)> {
    let data = rbsp(sps.get(1..)?);
    let mut r = Bits { data: &data, pos: 0 };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // sps id
    let mut chroma_format = 1;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?;
        }
        r.ue()?;
        r.ue()?;
        r.bit()?;
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            // delta_scale is -128..=127 in a valid SPS; a forged one is not
                            next = (i64::from(last) + i64::from(r.se()?)).rem_euclid(256) as i32;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?;
    // sizes from a peer's SPS: every step checked (a forged ue() is up to 2^32-1)
    let w_mbs = r.ue()?.checked_add(1)?;
    let h_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?;
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        cl = r.ue()?;
        cr = r.ue()?;
        ct = r.ue()?;
        cb = r.ue()?;
    }
    let (cx, cy) = match chroma_format {
        0 => (1, 2 - frame_mbs_only),
        1 => (2, 2 * (2 - frame_mbs_only)),
        2 => (2, 2 - frame_mbs_only),
        _ => (1, 2 - frame_mbs_only),
    };
    let w = w_mbs.checked_mul(16)?.checked_sub(cl.checked_add(cr)?.checked_mul(cx)?)?;
    let h =
        h_units.checked_mul(16 * (2 - frame_mbs_only))?.checked_sub(ct.checked_add(cb)?.checked_mul(cy)?)?;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_come_from_real_sps() {
        // x264 baseline 1280x720 and openh264 640x360 (crop to 360 from 368)
        let sps720 = [
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
            0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
        ];
        assert_eq!(super::sps_size(&sps720), Some((1280, 720)));
        assert_eq!(super::sps_size(&[0x67]), None);
    }

    #[test]
    fn a_forged_sps_with_huge_sizes_is_refused_not_a_panic() {
        // found by the `recovery` fuzz target: pic_height_in_map_units_minus1 = 2^32-2
        // overflowed `h_units * 16`. Baseline profile, every ue() before the sizes 0,
        // then width 0 (1 MB) and a 63-bit-long ue() for the height.
        let mut bits = String::from("1"); // seq_parameter_set_id = 0
        bits += "1"; // log2_max_frame_num_minus4 = 0
        bits += "1"; // pic_order_cnt_type = 0
        bits += "1"; // log2_max_pic_order_cnt_lsb_minus4 = 0
        bits += "1"; // max_num_ref_frames = 0
        bits += "0"; // gaps_in_frame_num_value_allowed_flag
        bits += "1"; // pic_width_in_mbs_minus1 = 0
        bits += &"0".repeat(31); // pic_height_in_map_units_minus1 = 2^32 - 2: 31 zeros, then
        bits += &format!("{:032b}", u32::MAX); // 1 and 31 ones
        bits += "1100000"; // frame_mbs_only, direct_8x8, no cropping, padding
        let mut sps = vec![0x67, 0x42, 0xc0, 0x1f];
        for chunk in bits.as_bytes().chunks(8) {
            let mut b = 0u8;
            for (i, c) in chunk.iter().enumerate() {
                b |= ((*c == b'1') as u8) << (7 - i);
            }
            sps.push(b);
        }
        assert_eq!(super::sps_size(&sps), None);
    }

    #[test]
    fn a_forged_scaling_list_delta_is_not_a_panic() {
        // found by the `recovery` fuzz target: a scaling-list delta of -2^31 overflowed
        // `last + delta + 256`. High profile (100), scaling matrix present, list 0
        // present with a 63-bit ue() as its first delta (se = -(2^31 - 1)).
        let mut bits = String::from("1"); // sps id 0
        bits += "010"; // chroma_format_idc = 1
        bits += "1"; // bit_depth_luma_minus8 = 0
        bits += "1"; // bit_depth_chroma_minus8 = 0
        bits += "0"; // qpprime_y_zero_transform_bypass_flag
        bits += "1"; // seq_scaling_matrix_present_flag
        bits += "1"; // seq_scaling_list_present_flag[0]
        bits += &"0".repeat(31);
        bits += &format!("{:032b}", u32::MAX - 1); // ue = 2^32 - 3 (odd: se = 2^31 - 1)
        bits += &"0".repeat(31);
        bits += &format!("{:032b}", u32::MAX); // ue = 2^32 - 2 (even: se = -(2^31 - 1))
        bits += "1111111"; // padding: more deltas of 0
        let mut sps = vec![0x67, 100, 0x00, 0x1f];
        for chunk in bits.as_bytes().chunks(8) {
            let mut b = 0u8;
            for (i, c) in chunk.iter().enumerate() {
                b |= ((*c == b'1') as u8) << (7 - i);
            }
            sps.push(b);
        }
        // no panic; the truncated SPS has no size
        assert_eq!(super::sps_size(&sps), None);
    }
}
