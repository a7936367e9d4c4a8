//! A synthetic media source with the shape of a real camera and microphone.
//!
//! Video is VP8-shaped 3-layer simulcast (rids `q`, `h`, `f`) at 30 fps: each
//! frame of each layer is split into packets of at most [`MAX_PAYLOAD`] bytes,
//! each payload starts with a VP8 payload descriptor (15-bit picture id) and the
//! first packet of a frame with a VP8 frame header (a keyframe carries the start
//! code and the layer's size), so forwarders that parse VP8 (keyframe detection,
//! picture id rewriting) see what a browser would send. A keyframe every two
//! seconds and on request. Audio is Opus-sized: 50 packets/s of 80 bytes.
//! The last 16 bytes of every payload are left for [`crate::stamp`].

use std::time::{Duration, Instant};

use crate::stamp::STAMP_LEN;

/// Largest RTP payload the source produces (leaves room for header, extensions and tag).
pub const MAX_PAYLOAD: usize = 1150;

/// One simulcast layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub rid: &'static str,
    pub bps: u64,
    pub width: u16,
    pub height: u16,
}

/// What a publisher sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub fps: u32,
    /// Lowest first.
    pub layers: Vec<Layer>,
    pub audio_payload: usize,
    pub audio_interval: Duration,
    pub keyframe_interval: Duration,
    /// A keyframe is this many times the size of a delta frame.
    pub keyframe_factor: u64,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            fps: 30,
            layers: vec![
                Layer { rid: "q", bps: 150_000, width: 320, height: 180 },
                Layer { rid: "h", bps: 350_000, width: 640, height: 360 },
                Layer { rid: "f", bps: 1_000_000, width: 1280, height: 720 },
            ],
            audio_payload: 80,
            audio_interval: Duration::from_millis(20),
            keyframe_interval: Duration::from_secs(2),
            keyframe_factor: 2,
        }
    }
}

impl Profile {
    /// Packets per second a subscriber of `layer` (plus audio) receives, keyframes aside.
    pub fn pps_for_layer(&self, layer: usize) -> f64 {
        let l = &self.layers[layer];
        let frame = (l.bps / 8 / self.fps as u64) as usize;
        let per_frame = frame.div_ceil(MAX_PAYLOAD).max(1);
        (per_frame as f64) * self.fps as f64 + 1.0 / self.audio_interval.as_secs_f64()
    }

    /// Total video bits per second the publisher sends (all layers).
    pub fn video_bps(&self) -> u64 {
        self.layers.iter().map(|l| l.bps).sum()
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

/// One packet to send, payload without the stamp (its last 16 bytes are zero).
#[derive(Debug, Clone)]
pub struct Packet {
    pub kind: Kind,
    /// Simulcast layer index (0 for audio).
    pub layer: usize,
    /// Extended sequence number (starts below 2^16; str0m takes the ROC from the high bits).
    pub seq: u64,
    /// RTP timestamp (90 kHz video, 48 kHz audio).
    pub ts: u32,
    pub marker: bool,
    pub keyframe: bool,
    pub payload: Vec<u8>,
}

/// The source: call [`Source::poll`] at or after [`Source::next_due`].
#[derive(Debug)]
pub struct Source {
    profile: Profile,
    start: Instant,
    next_video: Instant,
    next_audio: Instant,
    last_key: Option<Instant>,
    force_key: bool,
    frame: u64,
    audio_n: u64,
    video_seq: Vec<u64>,
    audio_seq: u64,
    pic_id: Vec<u16>,
    /// Layers to send (a publisher may send fewer than the profile has).
    pub send_layers: usize,
}

impl Source {
    pub fn new(profile: Profile, start: Instant, seed: u16) -> Source {
        let n = profile.layers.len();
        Source {
            start,
            next_video: start,
            next_audio: start,
            last_key: None,
            force_key: true,
            frame: 0,
            audio_n: 0,
            video_seq: (0..n as u64).map(|i| (seed as u64 * 31 + i * 1000) % 30_000).collect(),
            audio_seq: (seed as u64 * 17) % 30_000,
            pic_id: vec![seed & 0x7fff; n],
            send_layers: n,
            profile,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The next instant something is due.
    pub fn next_due(&self) -> Instant {
        self.next_video.min(self.next_audio)
    }

    /// A subscriber asked for a keyframe: the next video frame is one.
    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Produce everything due at `now` into `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Packet>) {
        while self.next_audio <= now {
            self.audio(out);
            self.audio_n += 1;
            self.next_audio = self.start + self.profile.audio_interval * self.audio_n as u32;
        }
        while self.next_video <= now {
            let at = self.next_video;
            self.video(at, out);
            self.frame += 1;
            let period = Duration::from_secs(1) / self.profile.fps;
            self.next_video = self.start + period * self.frame as u32;
        }
    }

    fn audio(&mut self, out: &mut Vec<Packet>) {
        let mut payload = vec![0u8; self.profile.audio_payload.max(STAMP_LEN + 1)];
        payload[0] = 0x78; // Opus TOC: CELT FB 20 ms, one frame
        let ts = (self.audio_n as u32).wrapping_mul(960);
        out.push(Packet {
            kind: Kind::Audio,
            layer: 0,
            seq: self.audio_seq,
            ts,
            marker: false,
            keyframe: false,
            payload,
        });
        self.audio_seq += 1;
    }

    fn video(&mut self, at: Instant, out: &mut Vec<Packet>) {
        let key = self.force_key
            || self.last_key.is_none_or(|k| at.duration_since(k) >= self.profile.keyframe_interval);
        if key {
            self.force_key = false;
            self.last_key = Some(at);
        }
        let ts = (self.frame as u32).wrapping_mul(90_000 / self.profile.fps);
        for li in 0..self.send_layers.min(self.profile.layers.len()) {
            let layer = &self.profile.layers[li];
            let mut bytes = (layer.bps / 8 / self.profile.fps as u64) as usize;
            if key {
                bytes *= self.profile.keyframe_factor as usize;
            }
            let n = bytes.div_ceil(MAX_PAYLOAD).max(1);
            let each = (bytes / n).clamp(32, MAX_PAYLOAD);
            let pic = self.pic_id[li];
            for i in 0..n {
                let mut p = vec![0u8; each];
                // VP8 payload descriptor: X=1, S on the first packet, PID 0; I=1; M=1 + 15-bit picture id.
                p[0] = 0x80 | if i == 0 { 0x10 } else { 0 };
                p[1] = 0x80;
                p[2] = 0x80 | ((pic >> 8) as u8 & 0x7f);
                p[3] = pic as u8;
                if i == 0 {
                    // VP8 frame tag: P bit (0 = keyframe), version 0, show_frame 1, first partition size.
                    let first_part: u32 = 200;
                    let tag: u32 = (if key { 0 } else { 1 }) | (1 << 4) | (first_part << 5);
                    p[4] = tag as u8;
                    p[5] = (tag >> 8) as u8;
                    p[6] = (tag >> 16) as u8;
                    if key {
                        p[7] = 0x9d;
                        p[8] = 0x01;
                        p[9] = 0x2a;
                        p[10..12].copy_from_slice(&layer.width.to_le_bytes());
                        p[12..14].copy_from_slice(&layer.height.to_le_bytes());
                    }
                }
                out.push(Packet {
                    kind: Kind::Video,
                    layer: li,
                    seq: self.video_seq[li],
                    ts,
                    marker: i == n - 1,
                    keyframe: key,
                    payload: p,
                });
                self.video_seq[li] += 1;
            }
            self.pic_id[li] = (pic + 1) & 0x7fff;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_has_the_profiles_rates() {
        let t0 = Instant::now();
        let mut s = Source::new(Profile::default(), t0, 1);
        let mut out = Vec::new();
        s.poll(t0 + Duration::from_millis(999), &mut out);
        let audio = out.iter().filter(|p| p.kind == Kind::Audio).count();
        assert_eq!(audio, 50);
        let f: Vec<_> = out.iter().filter(|p| p.kind == Kind::Video && p.layer == 2).collect();
        // 30 frames, 4 packets each, the first (key)frame twice as large.
        assert_eq!(f.len(), 30 * 4 + 4);
        let bytes: usize = f.iter().map(|p| p.payload.len()).sum();
        assert!((120_000..140_000).contains(&bytes), "{bytes} bytes of f in 1 s");
        assert!(f.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
        // Keyframe flag only on the first frame; its first packet has the VP8 start code.
        assert!(f[0].keyframe && f[0].payload[4] & 1 == 0 && f[0].payload[7..10] == [0x9d, 0x01, 0x2a]);
        assert!(!f[8].keyframe && f[12].payload[4] & 1 == 1);
        // Sequence numbers are consecutive per layer, markers close frames.
        assert!(f.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(f.iter().filter(|p| p.marker).count(), 30);
    }

    #[test]
    fn a_keyframe_request_makes_the_next_frame_a_keyframe() {
        let t0 = Instant::now();
        let mut s = Source::new(Profile::default(), t0, 1);
        let mut out = Vec::new();
        s.poll(t0 + Duration::from_millis(100), &mut out);
        out.clear();
        s.request_keyframe();
        s.poll(t0 + Duration::from_millis(140), &mut out);
        assert!(out.iter().any(|p| p.kind == Kind::Video && p.keyframe));
    }

    #[test]
    fn rates_match_the_brief() {
        let p = Profile::default();
        assert_eq!(p.video_bps(), 1_500_000);
        assert_eq!(p.pps_for_layer(2), 170.0);
    }
}
