//! VP8 payload descriptor continuity (RFC 7741 §4.2).
//!
//! A VP8 stream carries its own frame numbering in the payload descriptor:
//! the PictureID (7 or 15 bits), TL0PICIDX (temporal layer 0 index) and
//! KEYIDX. Each simulcast layer and each publisher numbers independently, so
//! when a down-track switches source (a layer switch, a publisher restart, the
//! speaker view following a new speaker) the receiver would see those numbers
//! jump — and a decoder that tracks references by PictureID drops frames it
//! believes are old. [`Vp8Munger`] keeps one continuous numbering per
//! down-track: at a switch the new source's numbers are offset so they continue
//! right after the last ones sent, and every later packet gets the same offset.
//!
//! [`Vp8Fields::parse`] is total over arbitrary bytes (fuzzed by
//! `fuzz/fuzz_targets/rtp_payload.rs`); nothing here allocates.

const PIC_MOD: u16 = 1 << 15;
const PIC_MASK: u16 = PIC_MOD - 1;
const KEY_MASK: u8 = 0x1f;

/// A field of the descriptor: its value and byte offset in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<T> {
    pub value: T,
    pub offset: u8,
}

/// The numbering fields of one VP8 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Fields {
    /// PictureID (without the M bit).
    pub picture_id: Option<Field<u16>>,
    /// Whether the PictureID is the 15-bit form (M bit set).
    pub long_picture_id: bool,
    pub tl0_pic_idx: Option<Field<u8>>,
    /// KEYIDX (5 bits; the TID/Y bits of the same octet are kept when patching).
    pub key_idx: Option<Field<u8>>,
}

impl Vp8Fields {
    /// Parse the descriptor at the start of a VP8 RTP payload. `None` when it is
    /// truncated, malformed (TL0PICIDX without TID, as str0m refuses it too), or
    /// leaves no VP8 payload after it.
    pub fn parse(p: &[u8]) -> Option<Vp8Fields> {
        let b0 = *p.first()?;
        let mut f = Vp8Fields::default();
        let mut i = 1usize;
        if b0 & 0x80 != 0 {
            let x = *p.get(1)?;
            i = 2;
            let (has_i, has_l, has_t, has_k) = (x & 0x80 != 0, x & 0x40 != 0, x & 0x20 != 0, x & 0x10 != 0);
            if has_l && !has_t {
                return None;
            }
            if has_i {
                let hi = *p.get(i)?;
                if hi & 0x80 != 0 {
                    let lo = *p.get(i + 1)?;
                    f.picture_id =
                        Some(Field { value: (u16::from(hi & 0x7f) << 8) | u16::from(lo), offset: i as u8 });
                    f.long_picture_id = true;
                    i += 2;
                } else {
                    f.picture_id = Some(Field { value: u16::from(hi), offset: i as u8 });
                    i += 1;
                }
            }
            if has_l {
                f.tl0_pic_idx = Some(Field { value: *p.get(i)?, offset: i as u8 });
                i += 1;
            }
            if has_t || has_k {
                let v = *p.get(i)?;
                if has_k {
                    f.key_idx = Some(Field { value: v & KEY_MASK, offset: i as u8 });
                }
                i += 1;
            }
        }
        (i < p.len()).then_some(f)
    }

    /// Write `values` into a copy of the payload these fields were parsed from
    /// (the in-process path; str0m's `Vp8Patch` does the same for remote peers
    /// while it serializes, without a copy).
    pub fn apply(&self, values: &Vp8Values, payload: &mut [u8]) {
        if let (Some(f), Some(v)) = (self.picture_id, values.picture_id) {
            let at = usize::from(f.offset);
            if self.long_picture_id {
                if let Some(b) = payload.get_mut(at..at + 2) {
                    b[0] = 0x80 | ((v >> 8) as u8 & 0x7f);
                    b[1] = v as u8;
                }
            } else if let Some(b) = payload.get_mut(at) {
                *b = v as u8 & 0x7f;
            }
        }
        if let (Some(f), Some(v)) = (self.tl0_pic_idx, values.tl0_pic_idx)
            && let Some(b) = payload.get_mut(usize::from(f.offset))
        {
            *b = v;
        }
        if let (Some(f), Some(v)) = (self.key_idx, values.key_idx)
            && let Some(b) = payload.get_mut(usize::from(f.offset))
        {
            *b = (*b & !KEY_MASK) | (v & KEY_MASK);
        }
    }
}

/// The numbering one forwarded packet gets (fields the packet does not carry
/// stay `None`). Values fit their field: a 7-bit PictureID is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Values {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    pub key_idx: Option<u8>,
}

/// Per-down-track VP8 numbering state. See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vp8Munger {
    started: bool,
    /// out = in + offset (mod 2^15 / 2^8 / 2^5).
    pic_offset: u16,
    tl0_offset: u8,
    key_offset: u8,
    /// Highest values sent so far.
    last_pic: Option<u16>,
    last_tl0: Option<u8>,
    last_key: Option<u8>,
}

/// `a` is after `b` in 15-bit serial-number arithmetic.
fn pic_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b) & PIC_MASK;
    d != 0 && d < PIC_MOD / 2
}

fn u8_newer(a: u8, b: u8, modulo_mask: u8) -> bool {
    let d = a.wrapping_sub(b) & modulo_mask;
    d != 0 && u16::from(d) < u16::from(modulo_mask).div_ceil(2)
}

impl Vp8Munger {
    /// The down-track starts a new source at this packet (a keyframe): its
    /// numbers continue right after the last ones sent (the first source keeps
    /// its own numbering).
    pub fn switch(&mut self, f: &Vp8Fields) -> Vp8Values {
        if let Some(p) = f.picture_id {
            let out = match (self.started, self.last_pic) {
                (true, Some(last)) => last.wrapping_add(1) & PIC_MASK,
                _ => p.value,
            };
            self.pic_offset = out.wrapping_sub(p.value) & PIC_MASK;
        } else {
            self.pic_offset = 0;
        }
        if let Some(t) = f.tl0_pic_idx {
            let out = match (self.started, self.last_tl0) {
                (true, Some(last)) => last.wrapping_add(1),
                _ => t.value,
            };
            self.tl0_offset = out.wrapping_sub(t.value);
        } else {
            self.tl0_offset = 0;
        }
        if let Some(k) = f.key_idx {
            let out = match (self.started, self.last_key) {
                (true, Some(last)) => last.wrapping_add(1) & KEY_MASK,
                _ => k.value,
            };
            self.key_offset = out.wrapping_sub(k.value) & KEY_MASK;
        } else {
            self.key_offset = 0;
        }
        self.started = true;
        self.rewrite(f)
    }

    /// Numbering for a packet of the current source.
    #[inline]
    pub fn rewrite(&mut self, f: &Vp8Fields) -> Vp8Values {
        let mut v = Vp8Values::default();
        if let Some(p) = f.picture_id {
            let out = p.value.wrapping_add(self.pic_offset) & PIC_MASK;
            if self.last_pic.is_none_or(|l| pic_newer(out, l)) {
                self.last_pic = Some(out);
            }
            v.picture_id = Some(if f.long_picture_id { out } else { out & 0x7f });
        }
        if let Some(t) = f.tl0_pic_idx {
            let out = t.value.wrapping_add(self.tl0_offset);
            if self.last_tl0.is_none_or(|l| u8_newer(out, l, 0xff)) {
                self.last_tl0 = Some(out);
            }
            v.tl0_pic_idx = Some(out);
        }
        if let Some(k) = f.key_idx {
            let out = k.value.wrapping_add(self.key_offset) & KEY_MASK;
            if self.last_key.is_none_or(|l| u8_newer(out, l, KEY_MASK)) {
                self.last_key = Some(out);
            }
            v.key_idx = Some(out);
        }
        v
    }

    /// Whether packets currently pass unchanged (no offset in force).
    pub fn is_identity(&self) -> bool {
        self.pic_offset == 0 && self.tl0_offset == 0 && self.key_offset == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X=1, I=1 (15-bit PictureID), L=1, T=1, K=1; S=1 on `first`; P bit per `key`.
    fn desc(first: bool, key: bool, pic: u16, tl0: u8, keyidx: u8) -> Vec<u8> {
        vec![
            0x80 | if first { 0x10 } else { 0 },
            0xf0,
            0x80 | (pic >> 8) as u8,
            pic as u8,
            tl0,
            0x20 | keyidx, // TID=0, Y=1, KEYIDX
            if key { 0x00 } else { 0x01 },
            0xaa,
        ]
    }

    #[test]
    fn parse_finds_every_field_and_refuses_truncation() {
        let p = desc(true, true, 0x1234, 7, 3);
        let f = Vp8Fields::parse(&p).unwrap();
        assert_eq!(f.picture_id, Some(Field { value: 0x1234, offset: 2 }));
        assert!(f.long_picture_id);
        assert_eq!(f.tl0_pic_idx, Some(Field { value: 7, offset: 4 }));
        assert_eq!(f.key_idx, Some(Field { value: 3, offset: 5 }));
        for n in 0..7 {
            assert_eq!(Vp8Fields::parse(&p[..n]), None, "truncated at {n}");
        }
        // 7-bit PictureID, no other field
        let f = Vp8Fields::parse(&[0x90, 0x80, 0x05, 0x00]).unwrap();
        assert_eq!(f.picture_id, Some(Field { value: 5, offset: 2 }));
        assert!(!f.long_picture_id);
        // no extension at all
        assert_eq!(Vp8Fields::parse(&[0x10, 0x00]), Some(Vp8Fields::default()));
        // L without T is malformed
        assert_eq!(Vp8Fields::parse(&[0x90, 0x40, 0x01, 0x00]), None);
        assert_eq!(Vp8Fields::parse(&[]), None);
    }

    #[test]
    fn numbering_continues_across_a_switch_and_wraps() {
        let mut m = Vp8Munger::default();
        // source A: pictures 32765.. (wraps at 2^15), tl0 254.., keyidx 30..
        let mut out = Vec::new();
        for n in 0..4u16 {
            let f = Vp8Fields::parse(&desc(
                true,
                n == 0,
                32765u16.wrapping_add(n) & PIC_MASK,
                254u8.wrapping_add(n as u8),
                (30 + n as u8) & 0x1f,
            ))
            .unwrap();
            out.push(if n == 0 { m.switch(&f) } else { m.rewrite(&f) });
        }
        assert_eq!(out[0].picture_id, Some(32765), "the first source keeps its numbers");
        assert!(m.is_identity());
        // source B starts at picture 10, tl0 100, keyidx 5
        let f = Vp8Fields::parse(&desc(true, true, 10, 100, 5)).unwrap();
        out.push(m.switch(&f));
        let f = Vp8Fields::parse(&desc(true, false, 11, 101, 5)).unwrap();
        out.push(m.rewrite(&f));
        let pics: Vec<u16> = out.iter().map(|v| v.picture_id.unwrap()).collect();
        assert_eq!(pics, vec![32765, 32766, 32767, 0, 1, 2]);
        let tl0: Vec<u8> = out.iter().map(|v| v.tl0_pic_idx.unwrap()).collect();
        assert_eq!(tl0, vec![254, 255, 0, 1, 2, 3]);
        let keys: Vec<u8> = out.iter().map(|v| v.key_idx.unwrap()).collect();
        assert_eq!(keys, vec![30, 31, 0, 1, 2, 2]);
        assert!(!m.is_identity());
        // a late packet of the same picture keeps its (rewritten) number
        let f = Vp8Fields::parse(&desc(false, false, 11, 101, 5)).unwrap();
        assert_eq!(m.rewrite(&f).picture_id, Some(2));
    }

    /// The input path of `fuzz/fuzz_targets/rtp_payload.rs` as a sweep: on
    /// every two-byte start followed by several tails, our parser agrees with
    /// str0m's (which builds the patches for remote peers), and a switch
    /// written back keeps the descriptor's layout.
    #[test]
    fn agrees_with_str0m_on_every_short_descriptor() {
        use str0m::rtp::Vp8Descriptor;
        let tails: [&[u8]; 4] =
            [&[], &[0x80, 0x01, 0xff, 0x20, 0x00, 0x9d], &[0x7f, 0x00, 0x00, 0x00], &[0xff; 6]];
        let mut parsed = 0;
        for b0 in 0..=255u8 {
            for b1 in 0..=255u8 {
                for tail in tails {
                    for cut in 0..=tail.len() {
                        let mut p = vec![b0, b1];
                        p.extend_from_slice(&tail[..cut]);
                        for input in [&p[..1], &p[..]] {
                            let ours = Vp8Fields::parse(input);
                            let theirs = Vp8Descriptor::parse(input).ok();
                            assert_eq!(ours.is_some(), theirs.is_some(), "{input:02x?}");
                            let (Some(o), Some(t)) = (ours, theirs) else { continue };
                            parsed += 1;
                            assert_eq!(o.picture_id.map(|f| f.value), t.picture_id(), "{input:02x?}");
                            assert_eq!(o.tl0_pic_idx.map(|f| f.value), t.tl0_pic_idx());
                            assert_eq!(o.key_idx.map(|f| f.value), t.key_idx());
                            let mut m = Vp8Munger::default();
                            m.switch(&o);
                            let v = m.switch(&o);
                            let mut copy = input.to_vec();
                            o.apply(&v, &mut copy);
                            let again = Vp8Fields::parse(&copy).unwrap();
                            assert_eq!(again.picture_id.map(|f| f.value), v.picture_id);
                            assert_eq!(again.tl0_pic_idx.map(|f| f.value), v.tl0_pic_idx);
                            assert_eq!(again.key_idx.map(|f| f.value), v.key_idx);
                            if let Some(p) = v.picture_id {
                                assert!(t.patch().picture_id(p).build().is_ok());
                            }
                        }
                    }
                }
            }
        }
        assert!(parsed > 100_000, "{parsed}");
    }

    #[test]
    fn apply_writes_the_values_in_place() {
        let p = desc(true, true, 0x1234, 7, 3);
        let f = Vp8Fields::parse(&p).unwrap();
        let mut q = p.clone();
        f.apply(&Vp8Values { picture_id: Some(0x0102), tl0_pic_idx: Some(9), key_idx: Some(31) }, &mut q);
        let g = Vp8Fields::parse(&q).unwrap();
        assert_eq!(g.picture_id.unwrap().value, 0x0102);
        assert!(g.long_picture_id);
        assert_eq!(g.tl0_pic_idx.unwrap().value, 9);
        assert_eq!(g.key_idx.unwrap().value, 31);
        assert_eq!(q[5] & 0xe0, 0x20, "TID/Y kept");
        assert_eq!(&q[6..], &p[6..], "the VP8 payload is untouched");
        // a 7-bit PictureID field gets the low 7 bits
        let mut s = vec![0x90, 0x80, 0x05, 0x00];
        Vp8Fields::parse(&s)
            .unwrap()
            .apply(&Vp8Values { picture_id: Some(0x1ff), ..Default::default() }, &mut s);
        assert_eq!(s[2], 0x7f);
    }
}
