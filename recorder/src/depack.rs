//! RTP payloads into media samples: H.264 (RFC 6184) and VP8 (RFC 7741).
//! Opus needs none (one packet, one sample).
//!
//! Both take packets in sequence order with a `gap` flag (from
//! [`crate::reorder::Reorder`]); a frame a gap or a malformed payload broke is
//! dropped, the next one starts clean. Output goes to a callback so a packet
//! that closes one frame and opens the next can yield both.

/// One complete frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// RTP timestamp of the frame.
    pub timestamp: u32,
    /// H.264: length-prefixed (4-byte) NAL units; VP8: the frame.
    pub data: &'a [u8],
    /// A frame a decoder can start from (H.264 IDR, VP8 key frame).
    pub keyframe: bool,
}

/// Why a payload was refused (counted by the caller; the frame is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_IDR: u8 = 5;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// H.264 access units in AVCC form (4-byte big-endian lengths), as `avc3`
/// samples carry them; SPS/PPS stay in the samples and the latest ones are
/// kept for the sample entry's `avcC`.
#[derive(Default)]
pub struct H264Depacketizer {
    au: Vec<u8>,
    /// Offset of the length field of the NAL unit an FU-A is building.
    fu_start: Option<usize>,
    timestamp: Option<u32>,
    broken: bool,
    keyframe: bool,
    sps: Vec<u8>,
    pps: Vec<u8>,
}

impl H264Depacketizer {
    pub fn new() -> H264Depacketizer {
        H264Depacketizer::default()
    }

    /// The last sequence parameter set seen (empty before the first).
    pub fn sps(&self) -> &[u8] {
        &self.sps
    }

    /// The last picture parameter set seen (empty before the first).
    pub fn pps(&self) -> &[u8] {
        &self.pps
    }

    /// Feed one payload (in sequence order). Complete access units go to `out`.
    pub fn push(
        &mut self,
        timestamp: u32,
        payload: &[u8],
        marker: bool,
        gap: bool,
        out: &mut impl FnMut(Frame<'_>),
    ) -> Result<(), Malformed> {
        if self.timestamp.is_some_and(|t| t != timestamp) {
            // the previous unit never saw its marker: emit it if it is whole
            self.finish(out);
        }
        self.timestamp = Some(timestamp);
        if gap {
            self.broken = true;
        }
        let r = if self.broken { Ok(()) } else { self.parse(payload) };
        if r.is_err() {
            self.broken = true;
        }
        if marker {
            self.finish(out);
        }
        r
    }

    fn finish(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        if !self.broken
            && self.fu_start.is_none()
            && !self.au.is_empty()
            && let Some(timestamp) = self.timestamp
        {
            out(Frame { timestamp, data: &self.au, keyframe: self.keyframe });
        }
        self.au.clear();
        self.fu_start = None;
        self.broken = false;
        self.keyframe = false;
        self.timestamp = None;
    }

    fn nal(&mut self, nal: &[u8]) {
        self.au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        self.au.extend_from_slice(nal);
        self.saw(nal[0] & 0x1f, nal);
    }

    fn saw(&mut self, kind: u8, nal: &[u8]) {
        match kind {
            NAL_IDR => self.keyframe = true,
            NAL_SPS => {
                self.sps.clear();
                self.sps.extend_from_slice(nal);
            }
            NAL_PPS => {
                self.pps.clear();
                self.pps.extend_from_slice(nal);
            }
            _ => {}
        }
    }

    fn parse(&mut self, p: &[u8]) -> Result<(), Malformed> {
        let &first = p.first().ok_or(Malformed("empty payload"))?;
        if first & 0x80 != 0 {
            return Err(Malformed("forbidden bit set"));
        }
        match first & 0x1f {
            0 | 30 | 31 => Err(Malformed("reserved NAL unit type")),
            1..=23 => {
                if self.fu_start.is_some() {
                    return Err(Malformed("NAL unit inside an unfinished FU-A"));
                }
                self.nal(p);
                Ok(())
            }
            NAL_STAP_A => {
                if self.fu_start.is_some() {
                    return Err(Malformed("STAP-A inside an unfinished FU-A"));
                }
                let mut rest = &p[1..];
                if rest.is_empty() {
                    return Err(Malformed("empty STAP-A"));
                }
                while !rest.is_empty() {
                    if rest.len() < 2 {
                        return Err(Malformed("truncated STAP-A size"));
                    }
                    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    let nal = rest.get(2..2 + len).ok_or(Malformed("STAP-A unit runs past the payload"))?;
                    if nal.is_empty() {
                        return Err(Malformed("empty STAP-A unit"));
                    }
                    if nal[0] & 0x80 != 0 {
                        return Err(Malformed("forbidden bit set in a STAP-A unit"));
                    }
                    self.nal(nal);
                    rest = &rest[2 + len..];
                }
                Ok(())
            }
            NAL_FU_A => {
                let &header = p.get(1).ok_or(Malformed("truncated FU-A header"))?;
                let (start, end) = (header & 0x80 != 0, header & 0x40 != 0);
                if start && end {
                    return Err(Malformed("FU-A with both start and end"));
                }
                if start {
                    if self.fu_start.is_some() {
                        return Err(Malformed("FU-A start inside an unfinished FU-A"));
                    }
                    self.fu_start = Some(self.au.len());
                    self.au.extend_from_slice(&[0; 4]);
                    self.au.push((first & 0xe0) | (header & 0x1f));
                } else if self.fu_start.is_none() {
                    return Err(Malformed("FU-A continuation without a start"));
                }
                self.au.extend_from_slice(&p[2..]);
                if end && let Some(at) = self.fu_start.take() {
                    let len = (self.au.len() - at - 4) as u32;
                    self.au[at..at + 4].copy_from_slice(&len.to_be_bytes());
                    let kind = self.au[at + 4] & 0x1f;
                    if matches!(kind, NAL_SPS | NAL_PPS) {
                        let nal = self.au[at + 4..].to_vec();
                        self.saw(kind, &nal);
                    } else {
                        self.saw(kind, &[]);
                    }
                }
                Ok(())
            }
            _ => Err(Malformed("unsupported packetization (STAP-B/MTAP/FU-B)")),
        }
    }
}

/// VP8 frames from RFC 7741 payloads.
#[derive(Default)]
pub struct Vp8Depacketizer {
    frame: Vec<u8>,
    timestamp: Option<u32>,
    started: bool,
    broken: bool,
    keyframe: bool,
    size: Option<(u16, u16)>,
}

/// Length of the VP8 payload descriptor and whether the packet starts a frame.
fn vp8_descriptor(p: &[u8]) -> Result<(usize, bool), Malformed> {
    let &b0 = p.first().ok_or(Malformed("empty payload"))?;
    let mut n = 1;
    if b0 & 0x80 != 0 {
        let &x = p.get(1).ok_or(Malformed("truncated extension byte"))?;
        n = 2;
        if x & 0x80 != 0 {
            let &pid = p.get(n).ok_or(Malformed("truncated PictureID"))?;
            n += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            n += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            n += 1; // TID/Y/KEYIDX
        }
    }
    if p.len() <= n {
        return Err(Malformed("descriptor without payload"));
    }
    Ok((n, b0 & 0x10 != 0 && b0 & 0x07 == 0))
}

impl Vp8Depacketizer {
    pub fn new() -> Vp8Depacketizer {
        Vp8Depacketizer::default()
    }

    /// Width and height from the last key frame seen.
    pub fn size(&self) -> Option<(u16, u16)> {
        self.size
    }

    pub fn push(
        &mut self,
        timestamp: u32,
        payload: &[u8],
        marker: bool,
        gap: bool,
        out: &mut impl FnMut(Frame<'_>),
    ) -> Result<(), Malformed> {
        let parsed = vp8_descriptor(payload);
        let starts = matches!(parsed, Ok((_, true)));
        if self.timestamp.is_some_and(|t| t != timestamp) || (starts && self.started) {
            self.finish(out);
        }
        self.timestamp = Some(timestamp);
        if gap {
            self.broken = true;
        }
        let (n, start) = match parsed {
            Ok(x) => x,
            Err(e) => {
                self.broken = true;
                if marker {
                    self.finish(out);
                }
                return Err(e);
            }
        };
        let body = &payload[n..];
        if start {
            self.started = true;
            self.keyframe = body[0] & 0x01 == 0;
            if self.keyframe {
                if body.len() >= 10 && body[3..6] == [0x9d, 0x01, 0x2a] {
                    let w = u16::from_le_bytes([body[6], body[7]]) & 0x3fff;
                    let h = u16::from_le_bytes([body[8], body[9]]) & 0x3fff;
                    self.size = Some((w, h));
                } else {
                    self.broken = true;
                }
            }
        }
        // the frame's first packet was lost
        let headless = !self.started;
        if headless {
            self.broken = true;
        }
        self.frame.extend_from_slice(body);
        if marker {
            self.finish(out);
        }
        if headless { Err(Malformed("frame without its first packet")) } else { Ok(()) }
    }

    fn finish(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        if self.started
            && !self.broken
            && !self.frame.is_empty()
            && let Some(timestamp) = self.timestamp
        {
            out(Frame { timestamp, data: &self.frame, keyframe: self.keyframe });
        }
        self.frame.clear();
        self.started = false;
        self.broken = false;
        self.keyframe = false;
        self.timestamp = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(packets: &[(u32, &[u8], bool, bool)]) -> (Vec<(u32, Vec<u8>, bool)>, usize) {
        let mut d = H264Depacketizer::new();
        let mut got = Vec::new();
        let mut errors = 0;
        for &(ts, p, m, gap) in packets {
            if d.push(ts, p, m, gap, &mut |f| got.push((f.timestamp, f.data.to_vec(), f.keyframe))).is_err() {
                errors += 1;
            }
        }
        (got, errors)
    }

    #[test]
    fn stap_a_and_fu_a_become_one_length_prefixed_idr_access_unit() {
        let stap: &[u8] = &[24, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        let fu1: &[u8] = &[0x7c, 0x85, 1, 2];
        let fu2: &[u8] = &[0x7c, 0x45, 3];
        let (got, errors) =
            h264(&[(9000, stap, false, false), (9000, fu1, false, false), (9000, fu2, true, false)]);
        assert_eq!(errors, 0);
        assert_eq!(
            got,
            vec![(
                9000,
                vec![0, 0, 0, 2, 0x67, 0x42, 0, 0, 0, 2, 0x68, 0xce, 0, 0, 0, 4, 0x65, 1, 2, 3],
                true
            )]
        );
    }

    #[test]
    fn a_gap_inside_an_access_unit_drops_it_and_the_next_one_is_clean() {
        let (got, _) = h264(&[
            (1, &[0x7c, 0x81, 1], false, false),
            (1, &[0x7c, 0x41, 3], true, true),
            (2, &[0x41, 9], true, false),
        ]);
        assert_eq!(got, vec![(2, vec![0, 0, 0, 2, 0x41, 9], false)]);
    }

    #[test]
    fn a_lost_marker_still_yields_the_whole_previous_unit() {
        let (got, _) = h264(&[(1, &[0x41, 1], false, false), (2, &[0x41, 2], true, false)]);
        assert_eq!(got, vec![(1, vec![0, 0, 0, 2, 0x41, 1], false), (2, vec![0, 0, 0, 2, 0x41, 2], false)]);
    }

    #[test]
    fn malformed_h264_payloads_are_refused_with_a_reason() {
        let (got, errors) = h264(&[
            (1, &[], true, false),
            (2, &[24, 0, 9, 1], true, false),
            (3, &[0x7c], true, false),
            (4, &[0x9c, 1], true, false),
            (5, &[0x7c, 0x41, 1], true, false),
        ]);
        assert!(got.is_empty());
        assert_eq!(errors, 5);
    }

    #[test]
    fn vp8_frames_reassemble_and_key_frames_give_their_size() {
        let mut d = Vp8Depacketizer::new();
        let mut got = Vec::new();
        // X=1, I=1 (15-bit PictureID), S=1 PID=0; key frame header 640x360
        let first = [0x90, 0x80, 0x81, 0x02, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        let second = [0x80, 0x80, 0x81, 0x02, 0xaa, 0xbb];
        d.push(3000, &first, false, false, &mut |f| got.push((f.data.to_vec(), f.keyframe))).unwrap();
        d.push(3000, &second, true, false, &mut |f| got.push((f.data.to_vec(), f.keyframe))).unwrap();
        assert_eq!(d.size(), Some((640, 360)));
        assert_eq!(
            got,
            vec![(vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0xaa, 0xbb], true)]
        );
    }

    #[test]
    fn a_vp8_frame_missing_its_first_packet_is_dropped() {
        let mut d = Vp8Depacketizer::new();
        let mut got = 0;
        assert!(d.push(1, &[0x00, 0x01, 0x02], true, true, &mut |_| got += 1).is_err());
        d.push(2, &[0x10, 0x01, 0x02], true, false, &mut |_| got += 1).unwrap();
        assert_eq!(got, 1);
    }
}
