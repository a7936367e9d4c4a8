//! A thin fragmented-MP4 muxer for one track on `mp4-atom` boxes.
//!
//! Layout: `ftyp` + `moov` (with `mvex`/`mehd`/`trex`, empty sample tables)
//! once, then `moof` + `mdat` per fragment. Every fragment is written with a
//! single `write_all` of one buffer, so a crash leaves at most one partial
//! fragment at the end, which [`crate::recover`] cuts off. The total duration
//! goes into `mehd` at the end as a [`Patch`] (the core never seeks).

use std::io::Write;

use mp4_atom::{
    Audio, Avc3, Avcc, Codec as SampleEntry, Dinf, Dops, Dref, DrefEntry, Encode, FixedPoint, FourCC, Ftyp,
    Hdlr, Mdhd, Mdia, Mehd, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd,
    Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd, Vp08, VpcC,
};

use crate::Error;

/// The codec of a recorded track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    H264,
    Vp8,
    Opus,
}

impl Codec {
    /// From the SDP codec name (`"H264"`, `"VP8"`, `"opus"`), any case.
    pub fn from_sdp_name(name: &str) -> Option<Codec> {
        match name.to_ascii_lowercase().as_str() {
            "h264" => Some(Codec::H264),
            "vp8" => Some(Codec::Vp8),
            "opus" => Some(Codec::Opus),
            _ => None,
        }
    }

    /// RTP clock rate, used as the track's timescale.
    pub fn timescale(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::H264 | Codec::Vp8 => 90_000,
        }
    }

    pub fn is_video(self) -> bool {
        !matches!(self, Codec::Opus)
    }

    /// A sample's nominal duration when nothing better is known.
    fn nominal_duration(self) -> u32 {
        match self {
            Codec::Opus => 960,                // 20 ms
            Codec::H264 | Codec::Vp8 => 3_000, // 30 fps
        }
    }
}

/// What the sample entry needs from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Params {
    H264 { sps: Vec<u8>, pps: Vec<u8>, width: u16, height: u16 },
    Vp8 { width: u16, height: u16 },
    Opus,
}

/// Bytes to write at an absolute file offset (the duration in `mehd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl Patch {
    /// Apply to an in-memory file (tests, the doc example).
    pub fn apply_to(&self, file: &mut [u8]) {
        let at = self.offset as usize;
        if let Some(dst) = file.get_mut(at..at + self.bytes.len()) {
            dst.copy_from_slice(&self.bytes);
        }
    }

    /// Apply to a file on disk (no sync; the caller syncs).
    pub fn apply_to_file(&self, file: &std::fs::File) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&self.bytes, self.offset)
    }
}

/// What one call wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    pub bytes: u64,
    /// Fragments completed (the edge syncs after each); the init segment
    /// counts as one too, so it is on disk before the first fragment.
    pub fragments: u32,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, o: Written) {
        self.bytes += o.bytes;
        self.fragments += o.fragments;
    }
}

pub(crate) const MOVIE_TIMESCALE: u32 = 1000;
const TRACK_ID: u32 = 1;
const FLAGS_SYNC: u32 = 0x0200_0000;
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

struct Pending {
    dts: u64,
    size: u32,
    keyframe: bool,
}

/// One track's fMP4 writer.
pub struct Muxer {
    codec: Codec,
    fragment_ticks: u64,
    /// Byte offset and width (4 or 8) of `mehd`'s duration field.
    mehd: Option<(u64, usize)>,
    sequence: u32,
    pending: Vec<Pending>,
    data: Vec<u8>,
    buf: Vec<u8>,
    position: u64,
    first_dts: Option<u64>,
    end_dts: u64,
    last_delta: u32,
}

impl Muxer {
    /// A muxer cutting a fragment every `fragment` of media (one second in the daemon).
    pub fn new(codec: Codec, fragment: std::time::Duration) -> Muxer {
        let fragment_ticks = (fragment.as_micros() as u64 * codec.timescale() as u64 / 1_000_000).max(1);
        Muxer {
            codec,
            fragment_ticks,
            mehd: None,
            sequence: 0,
            pending: Vec::new(),
            data: Vec::new(),
            buf: Vec::new(),
            position: 0,
            first_dts: None,
            end_dts: 0,
            last_delta: codec.nominal_duration(),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// True once the init segment is written.
    pub fn started(&self) -> bool {
        self.mehd.is_some()
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Decode time of the first sample and the end of the last, in the track timescale.
    pub fn span(&self) -> Option<(u64, u64)> {
        self.first_dts.map(|f| (f, self.end_dts))
    }

    /// Write `ftyp` + `moov`. Call once, before the first sample.
    pub fn write_init(&mut self, params: &Params, out: &mut impl Write) -> Result<Written, Error> {
        self.buf.clear();
        init_segment(self.codec, params, &mut self.buf)?;
        let (at, width) =
            crate::recover::find_mehd(&self.buf).ok_or(Error::NotARecording("no mehd written"))?;
        out.write_all(&self.buf)?;
        self.mehd = Some((self.position + at as u64, width));
        self.position += self.buf.len() as u64;
        Ok(Written { bytes: self.buf.len() as u64, fragments: 1 })
    }

    /// Add one sample (decode times strictly increasing). A fragment is cut
    /// and written first when this sample starts a new second.
    pub fn push(
        &mut self,
        dts: u64,
        data: &[u8],
        keyframe: bool,
        out: &mut impl Write,
    ) -> Result<Written, Error> {
        let mut w = Written::default();
        if let Some(first) = self.pending.first()
            && dts.saturating_sub(first.dts) >= self.fragment_ticks
        {
            w += self.flush(Some(dts), out)?;
        }
        if self.first_dts.is_none() {
            self.first_dts = Some(dts);
        }
        self.pending.push(Pending { dts, size: data.len() as u32, keyframe });
        self.data.extend_from_slice(data);
        Ok(w)
    }

    /// Write what is pending; the last sample lasts until `next_dts`, or as
    /// long as the one before it.
    fn flush(&mut self, next_dts: Option<u64>, out: &mut impl Write) -> Result<Written, Error> {
        if self.pending.is_empty() {
            return Ok(Written::default());
        }
        let mut entries = Vec::with_capacity(self.pending.len());
        for (i, s) in self.pending.iter().enumerate() {
            let duration = match self.pending.get(i + 1).map(|n| n.dts).or(next_dts) {
                Some(next) => u32::try_from(next - s.dts).unwrap_or(u32::MAX),
                None => self.last_delta,
            };
            if i + 1 < self.pending.len() || next_dts.is_some() {
                self.last_delta = duration;
            }
            let flags = if s.keyframe || !self.codec.is_video() { FLAGS_SYNC } else { FLAGS_NON_SYNC };
            entries.push(TrunEntry {
                duration: Some(duration),
                size: Some(s.size),
                flags: Some(flags),
                cts: None,
            });
        }
        let base = self.pending[0].dts;
        let last = self.pending.last().map(|s| s.dts).unwrap_or(base);
        let end = last + entries.last().and_then(|e| e.duration).unwrap_or(0) as u64;
        self.sequence += 1;
        let mut moof = Moof {
            mfhd: Mfhd { sequence_number: self.sequence },
            traf: vec![Traf {
                tfhd: Tfhd { track_id: TRACK_ID, default_base_is_moof: true, ..Default::default() },
                tfdt: Some(Tfdt { base_media_decode_time: base }),
                trun: vec![Trun { data_offset: Some(0), samples: TrunSamples::Explicit(entries) }],
                ..Default::default()
            }],
        };
        self.buf.clear();
        moof.encode(&mut self.buf).map_err(Error::Encode)?;
        let moof_len = self.buf.len();
        moof.traf[0].trun[0].data_offset = Some((moof_len + 8) as i32);
        self.buf.clear();
        moof.encode(&mut self.buf).map_err(Error::Encode)?;
        let mdat_len =
            u32::try_from(self.data.len() + 8).map_err(|_| Error::NotARecording("fragment over 4 GiB"))?;
        self.buf.extend_from_slice(&mdat_len.to_be_bytes());
        self.buf.extend_from_slice(b"mdat");
        self.buf.extend_from_slice(&self.data);
        out.write_all(&self.buf)?;
        self.pending.clear();
        self.data.clear();
        self.end_dts = end;
        self.position += self.buf.len() as u64;
        Ok(Written { bytes: self.buf.len() as u64, fragments: 1 })
    }

    /// Write the last fragment; returns it and the `mehd` patch carrying the
    /// duration (from the start of the recording, in the movie timescale).
    pub fn finish(&mut self, out: &mut impl Write) -> Result<(Written, Option<Patch>), Error> {
        let w = self.flush(None, out)?;
        let patch =
            self.mehd.map(|(offset, width)| mehd_patch(offset, width, self.end_dts, self.codec.timescale()));
        Ok((w, patch))
    }
}

pub(crate) fn mehd_patch(offset: u64, width: usize, end_dts: u64, timescale: u32) -> Patch {
    let movie = end_dts.saturating_mul(MOVIE_TIMESCALE as u64) / timescale.max(1) as u64;
    let bytes = if width == 8 {
        movie.to_be_bytes().to_vec()
    } else {
        (movie.min(u32::MAX as u64) as u32).to_be_bytes().to_vec()
    };
    Patch { offset, bytes }
}

fn init_segment(codec: Codec, params: &Params, buf: &mut Vec<u8>) -> Result<(), Error> {
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![FourCC::new(b"iso6"), FourCC::new(b"isom"), FourCC::new(b"mp41")],
    };
    let (width, height) = match params {
        Params::H264 { width, height, .. } | Params::Vp8 { width, height } => (*width, *height),
        Params::Opus => (0, 0),
    };
    let visual = Visual { width, height, ..Default::default() };
    let entry: SampleEntry = match params {
        Params::H264 { sps, pps, .. } => {
            let (profile, compat, level) = match sps.get(1..4) {
                Some(&[p, c, l]) => (p, c, l),
                _ => (66, 0xc0, 31),
            };
            Avc3 {
                visual,
                avcc: Avcc {
                    configuration_version: 1,
                    avc_profile_indication: profile,
                    profile_compatibility: compat,
                    avc_level_indication: level,
                    length_size: 4,
                    sequence_parameter_sets: if sps.is_empty() { vec![] } else { vec![sps.clone()] },
                    picture_parameter_sets: if pps.is_empty() { vec![] } else { vec![pps.clone()] },
                    ext: None,
                },
                ..Default::default()
            }
            .into()
        }
        Params::Vp8 { .. } => Vp08 {
            visual,
            vpcc: VpcC { profile: 0, level: 10, bit_depth: 8, chroma_subsampling: 1, ..Default::default() },
            ..Default::default()
        }
        .into(),
        Params::Opus => Opus {
            audio: Audio {
                data_reference_index: 1,
                channel_count: 2,
                sample_size: 16,
                sample_rate: FixedPoint::from(48_000u16),
            },
            dops: Dops {
                output_channel_count: 2,
                pre_skip: 0,
                input_sample_rate: 48_000,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        }
        .into(),
    };
    let video = codec.is_video();
    let trak = Trak {
        tkhd: Tkhd {
            track_id: TRACK_ID,
            enabled: true,
            in_movie: true,
            volume: if video { FixedPoint::from(0) } else { FixedPoint::from(1) },
            width: FixedPoint::from(width),
            height: FixedPoint::from(height),
            ..Default::default()
        },
        edts: None,
        mdia: Mdia {
            mdhd: Mdhd { timescale: codec.timescale(), language: "und".into(), ..Default::default() },
            hdlr: Hdlr {
                handler: FourCC::new(if video { b"vide" } else { b"soun" }),
                name: if video { "roombox video".into() } else { "roombox audio".into() },
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf { dref: Dref { entries: vec![DrefEntry::Url(Url { location: String::new() })] } },
                stbl: Stbl {
                    stsd: Stsd { codecs: vec![entry] },
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        senc: None,
        tref: None,
        udta: None,
        meta: None,
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: MOVIE_TIMESCALE,
            rate: FixedPoint::from(1),
            volume: FixedPoint::from(1),
            next_track_id: TRACK_ID + 1,
            ..Default::default()
        },
        meta: None,
        mvex: Some(Mvex {
            // version 1 so the patched duration never outgrows the field
            mehd: Some(Mehd { fragment_duration: u64::from(u32::MAX) + 1 }),
            trex: vec![Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                default_sample_duration: 0,
                default_sample_size: 0,
                default_sample_flags: 0,
            }],
        }),
        trak: vec![trak],
        udta: None,
        ainf: None,
    };
    ftyp.encode(buf).map_err(Error::Encode)?;
    moov.encode(buf).map_err(Error::Encode)?;
    // the placeholder duration reads as zero until the recording is finalised
    if let Some((at, width)) = crate::recover::find_mehd(buf) {
        buf[at..at + width].fill(0);
    }
    Ok(())
}
