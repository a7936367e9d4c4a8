//! H.264: the openh264 encoder (constrained baseline) and an RFC 6184
//! packetization-mode 1 packetizer (single NAL unit, STAP-A, FU-A) with the
//! matching depacketizer.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, UsageType,
};

use super::MediaError;
use super::frame::VideoFrame;

/// RTP payload budget per packet: fits a 1280-byte-ish datagram after
/// RTP/SRTP headers and extensions on any path we meet.
pub const DEFAULT_MTU: usize = 1200;

const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// Strip an Annex B start code (`00 00 01` or `00 00 00 01`) from one NAL unit.
pub fn strip_start_code(nal: &[u8]) -> &[u8] {
    if nal.starts_with(&[0, 0, 0, 1]) {
        &nal[4..]
    } else if nal.starts_with(&[0, 0, 1]) {
        &nal[3..]
    } else {
        nal
    }
}

/// Split an Annex B byte stream into NAL units without their start codes.
pub fn annexb_nals(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    openh264::nal_units(stream).map(strip_start_code).map(|n| {
        // trailing zero bytes belong to the next start code
        let mut end = n.len();
        while end > 1 && n[end - 1] == 0 {
            end -= 1;
        }
        &n[..end]
    })
}

/// The `profile-level-id` for constrained baseline at the level a size needs.
pub fn profile_level_id(width: u32, height: u32) -> String {
    if width * height > 1280 * 720 { "42e028".into() } else { "42e01f".into() }
}

/// Packetizes one access unit's NAL units (no start codes) into RTP payloads.
pub struct H264Packetizer {
    mtu: usize,
    buf: BytesMut,
    pending: Vec<(usize, usize)>,
}

impl H264Packetizer {
    pub fn new(mtu: usize) -> H264Packetizer {
        assert!(mtu >= 64, "MTU too small for H.264");
        H264Packetizer { mtu, buf: BytesMut::with_capacity(64 * 1024), pending: Vec::new() }
    }

    /// Append the payloads for one access unit to `out`, in order; the last
    /// one carries the RTP marker. Small NAL units (SPS, PPS, small slices)
    /// are aggregated into STAP-A, large ones fragmented into FU-A.
    pub fn packetize<'a>(&mut self, nals: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<Bytes>) {
        let nals: Vec<&[u8]> = nals.into_iter().filter(|n| !n.is_empty()).collect();
        let total: usize = nals.iter().map(|n| n.len() + 16).sum();
        self.buf.reserve(total + total / self.mtu * 2);
        self.pending.clear();
        let mut agg_size = 1usize;
        for (i, nal) in nals.iter().enumerate() {
            if nal.len() > self.mtu {
                self.flush(&nals, out);
                agg_size = 1;
                self.fragment(nal, out);
                continue;
            }
            if !self.pending.is_empty() && agg_size + 2 + nal.len() > self.mtu {
                self.flush(&nals, out);
                agg_size = 1;
            }
            self.pending.push((i, nal.len()));
            agg_size += 2 + nal.len();
        }
        self.flush(&nals, out);
    }

    fn flush(&mut self, nals: &[&[u8]], out: &mut Vec<Bytes>) {
        match self.pending.len() {
            0 => {}
            1 => {
                self.buf.extend_from_slice(nals[self.pending[0].0]);
                out.push(self.buf.split().freeze());
            }
            _ => {
                let f = self.pending.iter().map(|&(i, _)| nals[i][0] & 0x80).max().unwrap_or(0);
                let nri = self.pending.iter().map(|&(i, _)| nals[i][0] & 0x60).max().unwrap_or(0);
                self.buf.put_u8(f | nri | NAL_STAP_A);
                for &(i, len) in &self.pending {
                    self.buf.put_u16(len as u16);
                    self.buf.extend_from_slice(nals[i]);
                }
                out.push(self.buf.split().freeze());
            }
        }
        self.pending.clear();
    }

    fn fragment(&mut self, nal: &[u8], out: &mut Vec<Bytes>) {
        let indicator = (nal[0] & 0xe0) | NAL_FU_A;
        let typ = nal[0] & 0x1f;
        let body = &nal[1..];
        let chunk = self.mtu - 2;
        let n = body.len().div_ceil(chunk);
        for (k, part) in body.chunks(chunk).enumerate() {
            let mut header = typ;
            if k == 0 {
                header |= 0x80;
            }
            if k == n - 1 {
                header |= 0x40;
            }
            self.buf.put_u8(indicator);
            self.buf.put_u8(header);
            self.buf.extend_from_slice(part);
            out.push(self.buf.split().freeze());
        }
    }
}

/// Reassembles access units (Annex B, start code before every NAL unit)
/// from RTP payloads. A gap in sequence numbers or a malformed payload drops
/// the access unit being built; the next marker starts a fresh one.
#[derive(Default)]
pub struct H264Depacketizer {
    au: Vec<u8>,
    in_fu: bool,
    broken: bool,
    pending_clear: bool,
    last_seq: Option<u16>,
}

impl H264Depacketizer {
    pub fn new() -> H264Depacketizer {
        H264Depacketizer::default()
    }

    /// Feed one payload. Returns the finished access unit on the marker packet
    /// (`Ok(None)` before it, or when the unit was dropped).
    pub fn push(&mut self, seq: u16, payload: &[u8], marker: bool) -> Result<Option<&[u8]>, MediaError> {
        if std::mem::take(&mut self.pending_clear) {
            self.au.clear();
        }
        if let Some(last) = self.last_seq
            && seq != last.wrapping_add(1)
        {
            self.broken = true;
        }
        self.last_seq = Some(seq);
        let r = if self.broken { Ok(()) } else { self.parse(payload) };
        if r.is_err() {
            self.broken = true;
        }
        if !marker {
            return r.map(|_| None);
        }
        let ok = !self.broken && !self.in_fu && !self.au.is_empty();
        self.in_fu = false;
        self.broken = false;
        self.pending_clear = true;
        r?;
        Ok(if ok { Some(&self.au) } else { None })
    }

    fn parse(&mut self, p: &[u8]) -> Result<(), MediaError> {
        let &first = p.first().ok_or(MediaError::Depacketize("empty payload"))?;
        if first & 0x80 != 0 {
            return Err(MediaError::Depacketize("forbidden bit set"));
        }
        match first & 0x1f {
            0 | 30 | 31 => Err(MediaError::Depacketize("reserved NAL unit type")),
            1..=23 => {
                if self.in_fu {
                    return Err(MediaError::Depacketize("NAL unit inside an unfinished FU-A"));
                }
                self.au.extend_from_slice(&[0, 0, 0, 1]);
                self.au.extend_from_slice(p);
                Ok(())
            }
            NAL_STAP_A => {
                if self.in_fu {
                    return Err(MediaError::Depacketize("STAP-A inside an unfinished FU-A"));
                }
                let mut rest = &p[1..];
                if rest.is_empty() {
                    return Err(MediaError::Depacketize("empty STAP-A"));
                }
                while !rest.is_empty() {
                    if rest.len() < 2 {
                        return Err(MediaError::Depacketize("truncated STAP-A size"));
                    }
                    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    let nal = rest
                        .get(2..2 + len)
                        .ok_or(MediaError::Depacketize("STAP-A unit runs past the payload"))?;
                    if nal.is_empty() {
                        return Err(MediaError::Depacketize("empty STAP-A unit"));
                    }
                    self.au.extend_from_slice(&[0, 0, 0, 1]);
                    self.au.extend_from_slice(nal);
                    rest = &rest[2 + len..];
                }
                Ok(())
            }
            NAL_FU_A => {
                let &header = p.get(1).ok_or(MediaError::Depacketize("truncated FU-A header"))?;
                let (start, end) = (header & 0x80 != 0, header & 0x40 != 0);
                if start && end {
                    return Err(MediaError::Depacketize("FU-A with both start and end"));
                }
                if start {
                    if self.in_fu {
                        return Err(MediaError::Depacketize("FU-A start inside an unfinished FU-A"));
                    }
                    self.au.extend_from_slice(&[0, 0, 0, 1]);
                    self.au.push((first & 0xe0) | (header & 0x1f));
                    self.in_fu = true;
                } else if !self.in_fu {
                    return Err(MediaError::Depacketize("FU-A continuation without a start"));
                }
                self.au.extend_from_slice(&p[2..]);
                if end {
                    self.in_fu = false;
                }
                Ok(())
            }
            _ => Err(MediaError::Depacketize("unsupported packetization (STAP-B/MTAP/FU-B)")),
        }
    }
}

/// One encoded picture.
pub struct EncodedPicture<'a> {
    /// NAL units without start codes.
    pub nals: Vec<&'a [u8]>,
    pub keyframe: bool,
    pub encode_time: Duration,
}

/// openh264 set up for real-time conferencing: constrained baseline, one
/// slice, bitrate rate control, no frame skipping (the pipeline decides
/// drops), keyframes only when asked (and a safety IDR every 60 s).
pub struct H264Encoder {
    encoder: Encoder,
    width: usize,
    height: usize,
    bitrate: u32,
    force_key: bool,
    nal_buf: Vec<u8>,
    nal_ranges: Vec<std::ops::Range<usize>>,
    initialised: bool,
    bitrate_pending: bool,
    initial_bitrate: u32,
}

impl H264Encoder {
    pub fn new(width: usize, height: usize, fps: u32, bitrate_bps: u32) -> Result<H264Encoder, MediaError> {
        let level = if width * height > 1280 * 720 { Level::Level_4_0 } else { Level::Level_3_1 };
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .level(level)
            .complexity(Complexity::Low)
            // keyframes only when a viewer asks (PLI/FIR): a scene cut is no reason to spend an IDR
            .scene_change_detect(false)
            // pre-analysis a conference camera does not need; ~15 % of encode time at 720p
            .background_detection(false)
            .adaptive_quantization(false)
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 60))
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
        Ok(H264Encoder {
            encoder,
            width,
            height,
            bitrate: bitrate_bps,
            force_key: true,
            nal_buf: Vec::with_capacity(256 * 1024),
            nal_ranges: Vec::with_capacity(16),
            initialised: false,
            bitrate_pending: false,
            initial_bitrate: bitrate_bps,
        })
    }

    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    /// Change the target bitrate without a new keyframe.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), MediaError> {
        if bps == self.bitrate {
            return Ok(());
        }
        let raising = bps > self.bitrate;
        self.bitrate = bps;
        if !self.initialised {
            // openh264 is set up by the first encode; apply then
            self.bitrate_pending = true;
            return Ok(());
        }
        // Per-layer max first when raising, target first when lowering: openh264
        // refuses a layer whose target exceeds its max.
        let layer = openh264_sys2::SPATIAL_LAYER_0;
        let order = if raising {
            [openh264_sys2::ENCODER_OPTION_MAX_BITRATE, openh264_sys2::ENCODER_OPTION_BITRATE]
        } else {
            [openh264_sys2::ENCODER_OPTION_BITRATE, openh264_sys2::ENCODER_OPTION_MAX_BITRATE]
        };
        for option in order {
            let mut info = openh264_sys2::SBitrateInfo { iLayer: layer, iBitrate: bps as i32 };
            // SAFETY: the option reads an `SBitrateInfo` that lives across the call; the
            // encoder is initialised (the crate initialises it in `with_api_config`'s first
            // encode, and `set_bitrate` before any encode only records the value below).
            let code = unsafe { self.encoder.raw_api().set_option(option, (&raw mut info).cast()) };
            if code != 0 {
                return Err(MediaError::H264(format!(
                    "set bitrate {bps}: option {option} failed with {code}"
                )));
            }
        }
        Ok(())
    }

    /// The next picture will be an IDR.
    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Encode one frame (it must have this encoder's size).
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedPicture<'_>>, MediaError> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(MediaError::BadFrame(format!(
                "frame {}x{} for a {}x{} encoder",
                frame.width, frame.height, self.width, self.height
            )));
        }
        let started = Instant::now();
        if std::mem::take(&mut self.force_key) {
            // before the first frame the encoder is not initialised; the first frame is an IDR anyway
            self.encoder.force_intra_frame();
        }
        if !self.initialised {
            self.encoder.encode(frame)?;
            self.initialised = true;
            if std::mem::take(&mut self.bitrate_pending) {
                let want = std::mem::replace(&mut self.bitrate, self.initial_bitrate);
                self.set_bitrate(want)?;
            }
            // encode the first frame again as the stream's real start (an IDR)
            self.encoder.force_intra_frame();
        }
        let bs = self.encoder.encode(frame)?;
        let encode_time = started.elapsed();
        // only an IDR (with SPS/PPS before it) lets a new viewer start decoding
        let keyframe = match bs.frame_type() {
            FrameType::IDR => true,
            FrameType::I | FrameType::P | FrameType::IPMixed => false,
            FrameType::Skip | FrameType::Invalid => return Ok(None),
        };
        // copy out of openh264's buffer (it is reused by the next call)
        self.nal_buf.clear();
        self.nal_ranges.clear();
        for l in 0..bs.num_layers() {
            let Some(layer) = bs.layer(l) else { continue };
            for n in 0..layer.nal_count() {
                if let Some(nal) = layer.nal_unit(n) {
                    let nal = strip_start_code(nal);
                    if !nal.is_empty() {
                        let start = self.nal_buf.len();
                        self.nal_buf.extend_from_slice(nal);
                        self.nal_ranges.push(start..self.nal_buf.len());
                    }
                }
            }
        }
        let nals = self.nal_ranges.iter().map(|r| &self.nal_buf[r.clone()]).collect();
        Ok(Some(EncodedPicture { nals, keyframe, encode_time }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(typ: u8, len: usize, fill: u8) -> Vec<u8> {
        let mut v = vec![fill; len];
        v[0] = 0x60 | typ;
        v
    }

    fn roundtrip(nals: &[Vec<u8>], mtu: usize) -> (Vec<Bytes>, Vec<u8>) {
        let mut p = H264Packetizer::new(mtu);
        let mut out = Vec::new();
        p.packetize(nals.iter().map(|n| n.as_slice()), &mut out);
        let mut d = H264Depacketizer::new();
        let mut au = None;
        for (i, pkt) in out.iter().enumerate() {
            assert!(pkt.len() <= mtu, "packet {} of {} bytes over MTU {mtu}", i, pkt.len());
            au = d.push(i as u16, pkt, i == out.len() - 1).unwrap().map(|a| a.to_vec());
        }
        (out, au.unwrap())
    }

    fn annexb(nals: &[Vec<u8>]) -> Vec<u8> {
        nals.iter().flat_map(|n| [0, 0, 0, 1].iter().copied().chain(n.iter().copied())).collect()
    }

    #[test]
    fn sps_pps_and_a_small_slice_share_one_stap_a() {
        let nals = vec![nal(7, 12, 1), nal(8, 4, 2), nal(5, 300, 3)];
        let (pkts, au) = roundtrip(&nals, 1200);
        assert_eq!(pkts.len(), 1);
        assert_eq!(pkts[0][0] & 0x1f, NAL_STAP_A);
        assert_eq!(au, annexb(&nals));
    }

    #[test]
    fn a_large_slice_is_fragmented_with_fu_a() {
        let nals = vec![nal(7, 12, 1), nal(8, 4, 2), nal(5, 5000, 3)];
        let (pkts, au) = roundtrip(&nals, 1200);
        assert_eq!(pkts[0][0] & 0x1f, NAL_STAP_A);
        assert!(pkts[1..].iter().all(|p| p[0] & 0x1f == NAL_FU_A));
        assert_eq!(pkts[1][1] & 0xc0, 0x80, "start bit on the first fragment");
        assert_eq!(pkts.last().unwrap()[1] & 0xc0, 0x40, "end bit on the last");
        assert_eq!(pkts.len(), 1 + 5000usize.div_ceil(1198));
        assert_eq!(au, annexb(&nals));
    }

    #[test]
    fn a_single_small_nal_goes_alone() {
        let nals = vec![nal(1, 700, 9)];
        let (pkts, au) = roundtrip(&nals, 1200);
        assert_eq!(pkts.len(), 1);
        assert_eq!(&pkts[0][..], &nals[0][..]);
        assert_eq!(au, annexb(&nals));
    }

    #[test]
    fn exact_mtu_boundaries() {
        for len in [1199, 1200, 1201, 2396, 2397] {
            let nals = vec![nal(1, len, 7)];
            let (_, au) = roundtrip(&nals, 1200);
            assert_eq!(au, annexb(&nals), "len {len}");
        }
    }

    #[test]
    fn a_lost_fragment_drops_the_unit_and_the_next_one_decodes() {
        let nals = [nal(5, 4000, 3)];
        let mut p = H264Packetizer::new(1200);
        let mut out = Vec::new();
        p.packetize(nals.iter().map(|n| n.as_slice()), &mut out);
        let mut d = H264Depacketizer::new();
        let mut seq = 0u16;
        let mut results = Vec::new();
        for (i, pkt) in out.iter().enumerate() {
            seq += 1;
            if i == 1 {
                continue; // lost
            }
            results.push(d.push(seq, pkt, i == out.len() - 1).unwrap().is_some());
        }
        assert!(results.iter().all(|r| !r));
        let next = vec![nal(1, 100, 4)];
        let mut out2 = Vec::new();
        p.packetize(next.iter().map(|n| n.as_slice()), &mut out2);
        seq += 1;
        assert_eq!(d.push(seq, &out2[0], true).unwrap().map(|a| a.to_vec()), Some(annexb(&next)));
    }

    #[test]
    fn malformed_payloads_are_errors_and_do_not_poison_the_next_unit() {
        let bad: &[&[u8]] = &[
            &[],
            &[0x80 | 1, 0],
            &[24, 0],
            &[24, 0, 9, 1, 2],
            &[24, 0, 0],
            &[28],
            &[28, 0x40, 1],
            &[28, 0xc0, 1],
            &[25, 1, 2],
            &[0, 1],
        ];
        for (i, p) in bad.iter().enumerate() {
            let mut d = H264Depacketizer::new();
            assert!(d.push(i as u16, p, true).is_err(), "payload {p:?}");
            let good = nal(1, 10, 1);
            assert_eq!(d.push(i as u16 + 1, &good, true).unwrap().map(|a| a.to_vec()), Some(annexb(&[good])));
        }
        // random garbage never panics
        let mut d = H264Depacketizer::new();
        let mut x = 0x1234_5678u32;
        for seq in 0..5000u16 {
            let len = (x % 40) as usize;
            let p: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = d.push(seq, &p, x.is_multiple_of(3));
        }
    }

    #[test]
    fn profile_level_ids() {
        assert_eq!(profile_level_id(1280, 720), "42e01f");
        assert_eq!(profile_level_id(1920, 1080), "42e028");
    }
}
