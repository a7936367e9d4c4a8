//! One track's recorder: RTP packets in, fMP4 bytes out.

use std::io::Write;
use std::time::Duration;

use crate::Error;
use crate::depack::{Frame, H264Depacketizer, Vp8Depacketizer};
use crate::mux::{Codec, Muxer, Params, Patch, Written as MuxWritten};
use crate::reorder::{Released, Reorder};

pub use crate::mux::Written;

/// One RTP packet of the track, as a local subscriber receives it.
#[derive(Debug, Clone, Copy)]
pub struct RtpIn<'a> {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

/// The end of a track's recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The last fragment.
    pub written: Written,
    /// Write this at its offset (the duration in `mehd`), then sync: the file is final.
    /// `None` when nothing was ever written (no keyframe arrived).
    pub patch: Option<Patch>,
    /// Media time from the first sample to the end of the last.
    pub duration: Duration,
    /// The end of the last sample on the recording's timeline (time since
    /// the recording started, the origin every track of it shares).
    pub end: Duration,
}

/// Counters of what was refused or lost (for logs and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub frames: u64,
    /// Payloads that did not parse (their frame was dropped).
    pub malformed: u64,
    /// Video frames before the first keyframe (not decodable alone).
    pub before_keyframe: u64,
    /// Times the RTP clock jumped and the track was rebased on the arrival clock.
    pub rebased: u64,
    /// Duplicates and late packets the reorder buffer dropped.
    pub late: u64,
}

struct Packet {
    timestamp: u32,
    marker: bool,
    arrival: Duration,
    payload: Vec<u8>,
}

enum Depack {
    H264(H264Depacketizer),
    Vp8(Vp8Depacketizer),
    Opus,
}

/// Maps RTP timestamps onto one monotonic decode timeline per track.
struct Clock {
    timescale: u64,
    last: Option<(u32, u64)>,
    rebased: u64,
}

/// An RTP timestamp step larger than this (either way) is a discontinuity.
const MAX_STEP_SECONDS: u64 = 10;

impl Clock {
    fn ticks(&self, d: Duration) -> u64 {
        (d.as_nanos() * self.timescale as u128 / 1_000_000_000) as u64
    }

    /// Decode time for a sample; `None` for a duplicate timestamp.
    fn map(&mut self, ts: u32, arrival: Duration) -> Option<u64> {
        let dts = match self.last {
            // the first sample sits at its arrival since the recording started: lip-sync across files
            None => self.ticks(arrival),
            Some((last_ts, last_dts)) => {
                let step = ts.wrapping_sub(last_ts) as i32 as i64;
                if step == 0 {
                    return None;
                }
                if step < 0 || step as u64 > MAX_STEP_SECONDS * self.timescale {
                    // a restarted publisher or a new SSRC: follow the arrival clock
                    self.rebased += 1;
                    self.ticks(arrival).max(last_dts + 1)
                } else {
                    last_dts + step as u64
                }
            }
        };
        self.last = Some((ts, dts));
        Some(dts)
    }
}

/// Records one track. Feed it every packet with its arrival time since the
/// recording started; sync the output whenever [`Written::fragments`] > 0.
pub struct TrackRecorder {
    codec: Codec,
    reorder: Reorder<Packet>,
    depack: Depack,
    mux: Muxer,
    clock: Clock,
    ready: Vec<Released<Packet>>,
    spare: Vec<Vec<u8>>,
    stats: Stats,
}

impl TrackRecorder {
    /// One fragment per second.
    pub fn new(codec: Codec) -> TrackRecorder {
        TrackRecorder::with_fragment(codec, Duration::from_secs(1))
    }

    pub fn with_fragment(codec: Codec, fragment: Duration) -> TrackRecorder {
        let (depack, window) = match codec {
            Codec::H264 => (Depack::H264(H264Depacketizer::new()), 128),
            Codec::Vp8 => (Depack::Vp8(Vp8Depacketizer::new()), 128),
            Codec::Opus => (Depack::Opus, 16),
        };
        TrackRecorder {
            codec,
            reorder: Reorder::new(window),
            depack,
            mux: Muxer::new(codec, fragment),
            clock: Clock { timescale: codec.timescale() as u64, last: None, rebased: 0 },
            ready: Vec::new(),
            spare: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn stats(&self) -> Stats {
        Stats { rebased: self.clock.rebased, late: self.reorder.dropped(), ..self.stats }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.mux.position()
    }

    /// Feed one packet. Nothing is written until a decodable first sample arrived.
    pub fn push(
        &mut self,
        pkt: RtpIn<'_>,
        arrival: Duration,
        out: &mut impl Write,
    ) -> Result<Written, Error> {
        self.stats.packets += 1;
        let mut payload = self.spare.pop().unwrap_or_default();
        payload.clear();
        payload.extend_from_slice(pkt.payload);
        let packet = Packet { timestamp: pkt.timestamp, marker: pkt.marker, arrival, payload };
        let ready = &mut self.ready;
        self.reorder.push(pkt.seq, packet, &mut |r| ready.push(r));
        self.process(out)
    }

    fn process(&mut self, out: &mut impl Write) -> Result<Written, Error> {
        let mut written = MuxWritten::default();
        let mut failed = None;
        let TrackRecorder { ready, depack, mux, clock, stats, spare, codec, .. } = self;
        for Released { item, gap } in ready.drain(..) {
            let arrival = item.arrival;
            let mut sink = |f: Frame<'_>, params: &dyn Fn() -> Option<Params>| {
                if failed.is_some() {
                    return;
                }
                stats.frames += 1;
                if !mux.started() {
                    if codec.is_video() && !f.keyframe {
                        stats.before_keyframe += 1;
                        return;
                    }
                    let Some(p) = params() else {
                        stats.before_keyframe += 1;
                        return;
                    };
                    match mux.write_init(&p, out) {
                        Ok(w) => written += w,
                        Err(e) => {
                            failed = Some(e);
                            return;
                        }
                    }
                }
                let Some(dts) = clock.map(f.timestamp, arrival) else { return };
                match mux.push(dts, f.data, f.keyframe, out) {
                    Ok(w) => written += w,
                    Err(e) => failed = Some(e),
                }
            };
            let r = match depack {
                Depack::H264(d) => {
                    let mut frames: Vec<(u32, bool, Vec<u8>)> = Vec::new();
                    let r = d.push(item.timestamp, &item.payload, item.marker, gap, &mut |f| {
                        frames.push((f.timestamp, f.keyframe, f.data.to_vec()))
                    });
                    let (sps, pps) = (d.sps().to_vec(), d.pps().to_vec());
                    for (timestamp, keyframe, data) in frames {
                        let params = || {
                            let (width, height) = crate::h264::sps_size(&sps).unwrap_or((0, 0));
                            Some(Params::H264 { sps: sps.clone(), pps: pps.clone(), width, height })
                        };
                        sink(Frame { timestamp, data: &data, keyframe }, &params);
                    }
                    r
                }
                Depack::Vp8(d) => {
                    let mut frames: Vec<(u32, bool, Vec<u8>)> = Vec::new();
                    let r = d.push(item.timestamp, &item.payload, item.marker, gap, &mut |f| {
                        frames.push((f.timestamp, f.keyframe, f.data.to_vec()))
                    });
                    let size = d.size();
                    for (timestamp, keyframe, data) in frames {
                        let params = || size.map(|(width, height)| Params::Vp8 { width, height });
                        sink(Frame { timestamp, data: &data, keyframe }, &params);
                    }
                    r
                }
                Depack::Opus => {
                    if !item.payload.is_empty() {
                        sink(
                            Frame { timestamp: item.timestamp, data: &item.payload, keyframe: true },
                            &|| Some(Params::Opus),
                        );
                    }
                    Ok(())
                }
            };
            if r.is_err() {
                stats.malformed += 1;
            }
            if spare.len() < 64 {
                spare.push(item.payload);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Flush everything held and write the last fragment.
    pub fn finish(&mut self, out: &mut impl Write) -> Result<Finished, Error> {
        let ready = &mut self.ready;
        self.reorder.drain(&mut |r| ready.push(r));
        let mut written = self.process(out)?;
        let (w, patch) = self.mux.finish(out)?;
        written += w;
        let ts = self.codec.timescale() as u128;
        let time = |ticks: u64| Duration::from_nanos((ticks as u128 * 1_000_000_000 / ts) as u64);
        let (duration, end) = self.mux.span().map(|(a, b)| (time(b - a), time(b))).unwrap_or_default();
        Ok(Finished { written, patch, duration, end })
    }
}
