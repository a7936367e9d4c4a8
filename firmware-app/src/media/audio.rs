//! Opus in and out, RFC 6464 audio levels, and the speakers' side: a jitter
//! buffer per remote participant and a mixer.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opus::{Application, Bitrate, Channels};

use super::MediaError;
use super::frame::{AUDIO_FRAME_SAMPLES, AUDIO_RATE};

/// RFC 6464 level of a frame in -dBov: 0 is a full-scale square wave, 127 is
/// silence (digital zero or below -127 dBov).
pub fn audio_level(samples: &[i16]) -> u8 {
    if samples.is_empty() {
        return 127;
    }
    let sum: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    let rms = (sum / samples.len() as f64).sqrt() / 32768.0;
    if rms <= 0.0 {
        return 127;
    }
    let db = -20.0 * rms.log10();
    db.round().clamp(0.0, 127.0) as u8
}

/// The microphone's Opus encoder: 20 ms frames, in-band FEC, DTX.
pub struct OpusEncoder {
    enc: opus::Encoder,
    out: Vec<u8>,
}

/// One encoded 20 ms frame, or nothing to send (DTX).
pub struct OpusPacket<'a> {
    pub payload: &'a [u8],
    pub level: u8,
}

impl OpusEncoder {
    pub fn new(bitrate_bps: u32, dtx: bool) -> Result<OpusEncoder, MediaError> {
        let mut enc = opus::Encoder::new(AUDIO_RATE, Channels::Mono, Application::Voip)?;
        enc.set_bitrate(Bitrate::Bits(bitrate_bps as i32))?;
        enc.set_inband_fec(true)?;
        enc.set_packet_loss_perc(10)?;
        enc.set_dtx(dtx)?;
        enc.set_complexity(5)?;
        Ok(OpusEncoder { enc, out: vec![0; 1500] })
    }

    /// Encode 960 samples. `None` when DTX decided this frame needs no packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<OpusPacket<'_>>, MediaError> {
        if pcm.len() != AUDIO_FRAME_SAMPLES {
            return Err(MediaError::BadFrame(format!("Opus frame of {} samples, need 960", pcm.len())));
        }
        let level = audio_level(pcm);
        let n = self.enc.encode(pcm, &mut self.out)?;
        // libopus in DTX emits 1–2 byte frames that WebRTC does not transmit
        if n <= 2 {
            return Ok(None);
        }
        Ok(Some(OpusPacket { payload: &self.out[..n], level }))
    }

    /// Forget the signal history (after an unmute: no old audio leaks out).
    pub fn reset(&mut self) -> Result<(), MediaError> {
        self.enc.reset_state()?;
        Ok(())
    }
}

/// A remote participant's Opus decoder (mono output; stereo is downmixed by libopus).
pub struct OpusDecoder {
    dec: opus::Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<OpusDecoder, MediaError> {
        Ok(OpusDecoder { dec: opus::Decoder::new(AUDIO_RATE, Channels::Mono)? })
    }

    /// Decode one packet into 20 ms (the output length is returned).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, MediaError> {
        Ok(self.dec.decode(payload, out, false)?)
    }

    /// Rebuild a lost frame from the FEC data in the packet after it.
    pub fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, MediaError> {
        Ok(self.dec.decode(next_payload, &mut out[..AUDIO_FRAME_SAMPLES], true)?)
    }

    /// Conceal a lost frame.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, MediaError> {
        Ok(self.dec.decode(&[], &mut out[..AUDIO_FRAME_SAMPLES], false)?)
    }
}

/// Counters of one jitter buffer, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    pub played: u64,
    pub concealed: u64,
    pub fec_recovered: u64,
    pub late: u64,
    pub overflow_dropped: u64,
}

/// A simple, robust jitter buffer for one Opus stream: packets are ordered
/// by (extended) sequence number, playout starts once `target` packets are
/// queued, each 20 ms tick plays exactly one frame — the expected packet,
/// else FEC from its successor, else concealment — and a buffer that has run
/// dry re-buffers. The depth is capped so latency cannot grow without bound.
pub struct JitterBuffer {
    packets: BTreeMap<u64, Bytes>,
    next: Option<u64>,
    highest: Option<u64>,
    playing: bool,
    target: usize,
    max: usize,
    dry_ticks: u32,
    decoder: OpusDecoder,
    pub stats: JitterStats,
}

impl JitterBuffer {
    /// `target`: frames buffered before playout (3 = 60 ms); `max`: cap.
    pub fn new(target: usize, max: usize) -> Result<JitterBuffer, MediaError> {
        Ok(JitterBuffer {
            packets: BTreeMap::new(),
            next: None,
            highest: None,
            playing: false,
            target,
            max,
            dry_ticks: 0,
            decoder: OpusDecoder::new()?,
            stats: JitterStats::default(),
        })
    }

    fn extend(&self, seq: u16) -> u64 {
        match self.highest {
            None => (1u64 << 32) + seq as u64,
            Some(h) => {
                let delta = seq.wrapping_sub(h as u16) as i16 as i64;
                (h as i64 + delta) as u64
            }
        }
    }

    pub fn push(&mut self, seq: u16, payload: Bytes) {
        let ext = self.extend(seq);
        if self.next.is_some_and(|n| ext < n) {
            self.stats.late += 1;
            return;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.packets.insert(ext, payload);
        while self.packets.len() > self.max {
            self.packets.pop_first();
            self.stats.overflow_dropped += 1;
            self.next = self.packets.keys().next().copied();
        }
    }

    /// Play one 20 ms frame into `out` (960 samples). Returns false when the
    /// stream is not playing (buffering or dry): `out` is then silence.
    pub fn pop(&mut self, out: &mut [i16]) -> bool {
        out[..AUDIO_FRAME_SAMPLES].fill(0);
        if !self.playing {
            if self.packets.len() >= self.target {
                self.playing = true;
                self.next = self.packets.keys().next().copied();
                self.dry_ticks = 0;
            } else {
                return false;
            }
        }
        let Some(next) = self.next else { return false };
        let mut advance = true;
        let r = if let Some(p) = self.packets.remove(&next) {
            self.dry_ticks = 0;
            self.stats.played += 1;
            self.decoder.decode(&p, out)
        } else if let Some(p) = self.packets.get(&(next + 1)) {
            // lost, and its successor is here: rebuild it from the successor's FEC
            self.stats.fec_recovered += 1;
            let p = p.clone();
            self.decoder.decode_fec(&p, out)
        } else if self.packets.range(next..).next().is_some() {
            // lost, later packets are here: conceal and move on
            self.stats.concealed += 1;
            self.decoder.conceal(out)
        } else {
            // nothing yet: the sender's clock is behind ours or the network
            // stalled; conceal and keep waiting for this packet (no loss)
            self.dry_ticks += 1;
            self.stats.concealed += 1;
            advance = false;
            self.decoder.conceal(out)
        };
        if r.is_err() {
            out[..AUDIO_FRAME_SAMPLES].fill(0);
        }
        if advance {
            self.next = Some(next + 1);
        }
        if self.dry_ticks >= 10 && self.packets.is_empty() {
            // 200 ms without a packet: stop and re-buffer
            self.playing = false;
            self.dry_ticks = 0;
        }
        true
    }
}

/// The speakers' mixer: one jitter buffer per remote track, summed with
/// saturation. Streams silent for `idle` are forgotten.
pub struct Mixer {
    streams: HashMap<String, (JitterBuffer, Instant)>,
    scratch: Vec<i16>,
    acc: Vec<i32>,
    idle: Duration,
}

impl Default for Mixer {
    fn default() -> Self {
        Mixer::new()
    }
}

impl Mixer {
    pub fn new() -> Mixer {
        Mixer {
            streams: HashMap::new(),
            scratch: vec![0; AUDIO_FRAME_SAMPLES * 6],
            acc: vec![0; AUDIO_FRAME_SAMPLES],
            idle: Duration::from_secs(5),
        }
    }

    /// Queue a remote Opus packet for `track`.
    pub fn push(&mut self, track: &str, seq: u16, payload: Bytes, now: Instant) -> Result<(), MediaError> {
        if let Some((jb, seen)) = self.streams.get_mut(track) {
            jb.push(seq, payload);
            *seen = now;
            return Ok(());
        }
        let mut jb = JitterBuffer::new(3, 25)?;
        jb.push(seq, payload);
        self.streams.insert(track.to_owned(), (jb, now));
        Ok(())
    }

    /// Mix the next 20 ms into `out`; returns how many streams contributed.
    pub fn mix(&mut self, out: &mut [i16], now: Instant) -> usize {
        self.acc.fill(0);
        let mut n = 0;
        let idle = self.idle;
        self.streams.retain(|_, (_, seen)| now.saturating_duration_since(*seen) < idle);
        for (jb, _) in self.streams.values_mut() {
            if jb.pop(&mut self.scratch) {
                n += 1;
                for (a, s) in self.acc.iter_mut().zip(&self.scratch[..AUDIO_FRAME_SAMPLES]) {
                    *a += *s as i32;
                }
            }
        }
        for (o, a) in out[..AUDIO_FRAME_SAMPLES].iter_mut().zip(&self.acc) {
            *o = (*a).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
        }
        n
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    pub fn stats(&self) -> JitterStats {
        let mut t = JitterStats::default();
        for (jb, _) in self.streams.values() {
            t.played += jb.stats.played;
            t.concealed += jb.stats.concealed;
            t.fec_recovered += jb.stats.fec_recovered;
            t.late += jb.stats.late;
            t.overflow_dropped += jb.stats.overflow_dropped;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, amp: f64, start: usize, n: usize) -> Vec<i16> {
        (start..start + n)
            .map(|i| (amp * 32767.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 48000.0).sin()) as i16)
            .collect()
    }

    #[test]
    fn audio_levels_follow_rfc_6464() {
        assert_eq!(audio_level(&[0; 960]), 127);
        assert_eq!(audio_level(&[i16::MAX; 960]), 0);
        // a full-scale sine is -3 dBov
        assert_eq!(audio_level(&tone(1000.0, 1.0, 0, 960)), 3);
        assert_eq!(audio_level(&tone(1000.0, 0.01, 0, 960)), 43);
        assert_eq!(audio_level(&[1; 960]), 90);
    }

    fn encode_tone(frames: usize) -> Vec<Bytes> {
        let mut enc = OpusEncoder::new(32_000, true).unwrap();
        (0..frames)
            .map(|k| {
                let pcm = tone(440.0, 0.3, k * 960, 960);
                Bytes::copy_from_slice(enc.encode(&pcm).unwrap().unwrap().payload)
            })
            .collect()
    }

    #[test]
    fn dtx_sends_nothing_for_digital_silence() {
        let mut enc = OpusEncoder::new(32_000, true).unwrap();
        let sent = (0..50).filter(|_| enc.encode(&[0; 960]).unwrap().is_some()).count();
        assert!(sent < 15, "{sent} of 50 silent frames sent");
    }

    #[test]
    fn jitter_buffer_reorders_and_recovers_a_loss_with_fec() {
        let pkts = encode_tone(20);
        let mut jb = JitterBuffer::new(3, 25).unwrap();
        let order = [1usize, 0, 3, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]; // 5 lost
        let mut out = vec![0i16; 960];
        let mut played = 0;
        for &i in &order {
            jb.push(60_000u16.wrapping_add(i as u16), pkts[i].clone()); // wraps past 65535
            if jb.pop(&mut out) {
                played += 1;
                assert!(audio_level(&out) < 40, "decoded a tone, not silence");
            }
        }
        assert_eq!(jb.stats.fec_recovered, 1);
        assert_eq!(jb.stats.late, 0);
        assert!(played >= 16);
    }

    #[test]
    fn mixer_sums_two_participants_and_saturates() {
        let a = encode_tone(10);
        let mut m = Mixer::new();
        let now = Instant::now();
        let mut out = vec![0i16; 960];
        for (i, p) in a.iter().enumerate() {
            m.push("alice/mic", i as u16, p.clone(), now).unwrap();
            m.push("bob/mic", i as u16, p.clone(), now).unwrap();
        }
        let mut one = JitterBuffer::new(3, 25).unwrap();
        for (i, p) in a.iter().enumerate() {
            one.push(i as u16, p.clone());
        }
        let mut single = vec![0i16; 960];
        for _ in 0..5 {
            assert_eq!(m.mix(&mut out, now), 2);
            one.pop(&mut single);
        }
        // both streams are identical: the mix is twice one stream (saturating)
        for (o, s) in out.iter().zip(&single) {
            assert_eq!(*o, (2 * *s as i32).clamp(-32768, 32767) as i16);
        }
        assert_eq!(m.streams(), 2);
        assert_eq!(m.mix(&mut out, now + Duration::from_secs(10)), 0);
        assert_eq!(m.streams(), 0);
    }
}
