//! The threads that move media: camera → H.264 → RTP, microphone → (AEC) →
//! Opus → RTP, remote Opus → jitter buffers → mix → speakers (and the AEC's
//! reference). None of them runs on a tokio worker; none relies on a device
//! to pace it: every loop is paced by the capture clock.
//!
//! The pipeline talks to the SFU only through [`PacketSink`] and
//! [`PipelineInput`], so it is tested without one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use sfu_core::LocalPacket;

use super::audio::{Mixer, OpusEncoder};
use super::config::{
    AudioSourceConfig, MAX_CAPTURE_BUFFER_MS, MediaConfig, PlaybackConfig, VideoSourceConfig,
};
use super::frame::{AUDIO_FRAME_SAMPLES, AUDIO_RATE, VideoFrame, scale_into};
use super::h264::{DEFAULT_MTU, H264Encoder, H264Packetizer};
use super::metrics::MediaMetrics;
use super::slate::{self, Slate};
use super::source::{
    AudioSink, AudioSource, FileSink, MediaClock, SyntheticAudio, SyntheticVideo, VideoSource, WavAudio,
    Y4mVideo,
};
use super::{MediaError, timecode};

/// Track indices in the room participant's publish list.
pub const CAMERA_TRACK: usize = 0;
pub const MIC_TRACK: usize = 1;

/// Where the pipeline's RTP goes: the SFU's local participant, or a test.
pub trait PacketSink: Send + Sync {
    /// Never blocks; `false` when the packet was refused (queue full).
    fn send(&self, packet: LocalPacket) -> bool;
}

impl PacketSink for sfu_core::LocalParticipant {
    fn send(&self, packet: LocalPacket) -> bool {
        sfu_core::LocalParticipant::send(self, packet)
    }
}

/// A sink that collects packets with their arrival time (tests, benchmarks).
#[derive(Default)]
pub struct CollectSink {
    pub packets: Mutex<Vec<(Instant, LocalPacket)>>,
}

impl PacketSink for CollectSink {
    fn send(&self, packet: LocalPacket) -> bool {
        self.packets.lock().push((Instant::now(), packet));
        true
    }
}

/// What the room tells the pipeline.
#[derive(Debug, Clone)]
pub enum PipelineInput {
    KeyframeRequest {
        track: usize,
    },
    TargetBitrate {
        track: usize,
        layer: usize,
        bps: u64,
    },
    /// A remote participant's Opus packet for the speakers.
    RemoteAudio {
        track: Arc<str>,
        seq: u16,
        payload: Bytes,
    },
}

/// The sources and sinks a pipeline runs with.
pub struct Devices {
    pub video: Box<dyn VideoSource>,
    pub audio: Box<dyn AudioSource>,
    pub playback: Option<Box<dyn AudioSink>>,
}

impl Devices {
    /// Open what the configuration names. A camera, microphone or speakers
    /// missing now are not an error: they start lost and are retried every
    /// second (the room stays up); a missing file is an error.
    pub fn from_config(cfg: &MediaConfig, clock: MediaClock) -> Result<Devices, MediaError> {
        let (w, h) = (cfg.width as usize, cfg.height as usize);
        let video: Box<dyn VideoSource> = match &cfg.video {
            VideoSourceConfig::Synthetic => Box::new(SyntheticVideo::new(clock, w, h)),
            VideoSourceConfig::File { path } => Box::new(Y4mVideo::open(path)?),
            #[cfg(feature = "v4l")]
            VideoSourceConfig::V4l2 { device, formats } => {
                let prefs: Vec<_> =
                    formats.iter().filter_map(|f| super::v4l2::PixelFormat::from_fourcc_str(f)).collect();
                Box::new(super::v4l2::V4l2Source::open_path(
                    device,
                    &prefs,
                    (cfg.width, cfg.height, cfg.fps),
                )?)
            }
            #[cfg(not(feature = "v4l"))]
            VideoSourceConfig::V4l2 { .. } => {
                return Err(MediaError::Config("this build has no V4L2 support (feature `v4l`)".into()));
            }
        };
        let period = (cfg.period_ms * AUDIO_RATE / 1000) as usize;
        let audio: Box<dyn AudioSource> = match &cfg.audio {
            AudioSourceConfig::Synthetic => Box::new(SyntheticAudio::new(clock)),
            AudioSourceConfig::File { path } => Box::new(WavAudio::open(path)?),
            #[cfg(feature = "alsa")]
            AudioSourceConfig::Alsa { device } => Box::new(super::alsa_io::AlsaCapture::open_buffered(
                device,
                period,
                super::alsa_io::frames_in_ms(cfg.capture_buffer_ms),
            )?),
            #[cfg(not(feature = "alsa"))]
            AudioSourceConfig::Alsa { .. } => {
                return Err(MediaError::Config("this build has no ALSA support (feature `alsa`)".into()));
            }
        };
        let playback: Option<Box<dyn AudioSink>> = match &cfg.playback {
            PlaybackConfig::None => None,
            PlaybackConfig::File { path } => Some(Box::new(FileSink::create(path)?)),
            #[cfg(feature = "alsa")]
            PlaybackConfig::Alsa { device } => {
                Some(Box::new(super::alsa_io::AlsaPlayback::open(device, period)?))
            }
            #[cfg(not(feature = "alsa"))]
            PlaybackConfig::Alsa { .. } => {
                return Err(MediaError::Config("this build has no ALSA support (feature `alsa`)".into()));
            }
        };
        let _ = period;
        Ok(Devices { video, audio, playback })
    }
}

/// State of one device, for status pages and LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Ok,
    Lost,
    /// Not configured (no speakers) or switched off (camera off).
    Off,
}

/// Echo cancellation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AecState {
    /// Running with the speakers' signal as reference.
    Active,
    /// Off in the configuration.
    Disabled,
    /// Wanted but impossible: no speakers to take a reference from.
    NoReference,
    /// Wanted but this build has no `aec` feature.
    NotBuilt,
}

/// A snapshot for the REST API, the admin page and the LEDs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MediaStatus {
    pub mic_muted: bool,
    pub camera_off: bool,
    pub camera: DeviceState,
    pub microphone: DeviceState,
    pub speakers: DeviceState,
    pub aec: AecState,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub simulcast: bool,
    pub video_bitrate_bps: u32,
    pub capture_fps: f64,
    pub video_frames_sent: u64,
    pub audio_frames_sent: u64,
    pub camera_description: String,
    pub microphone_description: String,
}

struct Shared {
    stop: AtomicBool,
    mic_muted: AtomicBool,
    camera_off: AtomicBool,
    camera_state: AtomicU32,
    mic_state: AtomicU32,
    speaker_state: AtomicU32,
    video_bitrate: AtomicU32,
    capture_fps_milli: AtomicU64,
    video_frames: AtomicU64,
    audio_frames: AtomicU64,
    camera_desc: Mutex<String>,
    mic_desc: Mutex<String>,
}

fn state_code(s: DeviceState) -> u32 {
    match s {
        DeviceState::Ok => 0,
        DeviceState::Lost => 1,
        DeviceState::Off => 2,
    }
}

fn state_of(c: u32) -> DeviceState {
    match c {
        0 => DeviceState::Ok,
        1 => DeviceState::Lost,
        _ => DeviceState::Off,
    }
}

/// Sleep until `t` (returns at once if it has passed); never longer than
/// 50 ms at a time so a stop is noticed.
fn sleep_until(t: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= t || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((t - now).min(Duration::from_millis(50)));
    }
}

/// Retry a lost device at most this often.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Video

/// Encode and packetize frames for the camera track: one encoder per layer
/// (layer 0 is half size when simulcast is on), RTP timestamps from the
/// capture clock, keyframes on request no more often than the minimum
/// interval.
pub struct VideoPublisher {
    clock: MediaClock,
    /// (encoder, scaled frame for that layer, next RTP sequence number)
    layers: Vec<(H264Encoder, VideoFrame, u16)>,
    packetizer: H264Packetizer,
    payloads: Vec<Bytes>,
    min_bps: u32,
    max_bps: u32,
    key_min_interval: Duration,
    last_key: Option<Instant>,
    key_pending: bool,
}

impl VideoPublisher {
    pub fn new(cfg: &MediaConfig, clock: MediaClock) -> Result<VideoPublisher, MediaError> {
        let (w, h) = (cfg.width as usize, cfg.height as usize);
        let mut layers = Vec::new();
        if cfg.simulcast {
            let (hw, hh) = ((w / 2) & !1, (h / 2) & !1);
            let bps = (cfg.start_bitrate_bps / 4).max(cfg.min_bitrate_bps);
            layers.push((
                H264Encoder::new(hw, hh, cfg.fps, bps)?,
                VideoFrame::black(hw, hh, clock.epoch()),
                0u16,
            ));
        }
        layers.push((
            H264Encoder::new(w, h, cfg.fps, cfg.start_bitrate_bps)?,
            VideoFrame::black(w, h, clock.epoch()),
            0u16,
        ));
        Ok(VideoPublisher {
            clock,
            layers,
            packetizer: H264Packetizer::new(DEFAULT_MTU),
            payloads: Vec::with_capacity(64),
            min_bps: cfg.min_bitrate_bps,
            max_bps: cfg.max_bitrate_bps,
            key_min_interval: Duration::from_millis(cfg.keyframe_min_interval_ms),
            last_key: None,
            key_pending: false,
        })
    }

    /// Simulcast rids, lowest first (empty for one layer).
    pub fn rids(&self) -> Vec<String> {
        if self.layers.len() > 1 { vec!["h".into(), "f".into()] } else { Vec::new() }
    }

    pub fn request_keyframe(&mut self) {
        self.key_pending = true;
    }

    /// Apply the room's estimate for a layer, clamped to the configured bounds.
    pub fn set_target_bitrate(&mut self, layer: usize, bps: u64) -> Result<u32, MediaError> {
        let bps = (bps.min(u32::MAX as u64) as u32).clamp(self.min_bps, self.max_bps);
        // the half-size layer never needs more than a third of the top
        let bps = if self.layers.len() > 1 && layer == 0 {
            bps.min(self.max_bps / 3).max(self.min_bps)
        } else {
            bps
        };
        match self.layers.get_mut(layer) {
            Some((enc, _, _)) => {
                enc.set_bitrate(bps)?;
                Ok(bps)
            }
            None => Err(MediaError::Config(format!("no video layer {layer}"))),
        }
    }

    pub fn bitrate(&self) -> u32 {
        self.layers.last().map_or(0, |(e, _, _)| e.bitrate())
    }

    /// Encode `frame` (any size; scaled per layer) and hand the packets to
    /// `sink`. Returns (packets sent, packets refused, keyframe).
    pub fn publish(
        &mut self,
        frame: &VideoFrame,
        sink: &dyn PacketSink,
        metrics: Option<&MediaMetrics>,
    ) -> Result<(usize, usize, bool), MediaError> {
        let now = Instant::now();
        if self.key_pending && self.last_key.is_none_or(|t| now.duration_since(t) >= self.key_min_interval) {
            for (enc, _, _) in &mut self.layers {
                enc.request_keyframe();
            }
            self.key_pending = false;
        }
        let ts = self.clock.rtp_video(frame.capture_time);
        let (mut sent, mut refused, mut any_key) = (0, 0, false);
        for (layer, (enc, scaled, seq)) in self.layers.iter_mut().enumerate() {
            // The full-size layer encodes the captured frame itself: a copy of a
            // 720p frame is ~1.4 MB of memory traffic per frame for nothing.
            let input = if frame.width == scaled.width && frame.height == scaled.height {
                frame
            } else {
                scale_into(frame, scaled);
                &*scaled
            };
            let Some(pic) = enc.encode(input)? else { continue };
            if let Some(m) = metrics {
                m.encode_seconds
                    .with_label_values(&["h264", &layer.to_string()])
                    .observe(pic.encode_time.as_secs_f64());
            }
            let keyframe = pic.keyframe;
            any_key |= keyframe;
            self.payloads.clear();
            self.packetizer.packetize(pic.nals.iter().copied(), &mut self.payloads);
            let n = self.payloads.len();
            for (i, payload) in self.payloads.drain(..).enumerate() {
                let packet = LocalPacket {
                    track: CAMERA_TRACK,
                    layer,
                    seq: *seq,
                    timestamp: ts,
                    marker: i + 1 == n,
                    keyframe,
                    audio_level: None,
                    capture_time: frame.capture_time,
                    payload,
                };
                *seq = seq.wrapping_add(1);
                if sink.send(packet) { sent += 1 } else { refused += 1 }
            }
        }
        if any_key {
            self.last_key = Some(now);
        }
        Ok((sent, refused, any_key))
    }
}

enum VideoControl {
    Keyframe,
    Bitrate { layer: usize, bps: u64 },
}

#[allow(clippy::too_many_arguments)]
fn video_thread(
    cfg: MediaConfig,
    mut source: Box<dyn VideoSource>,
    mut publisher: VideoPublisher,
    sink: Arc<dyn PacketSink>,
    control: Receiver<VideoControl>,
    shared: Arc<Shared>,
    metrics: MediaMetrics,
) {
    let period = Duration::from_secs_f64(1.0 / cfg.fps as f64);
    let (w, h) = (cfg.width as usize, cfg.height as usize);
    let mut raw = VideoFrame::black(w, h, Instant::now());
    let mut out = VideoFrame::black(w, h, Instant::now());
    let mut next_due = Instant::now();
    let mut lost = false;
    let mut was_off = false;
    let mut next_reopen = Instant::now();
    let mut slate_no = 0u32;
    let mut fps_window = (Instant::now(), 0u32);
    let captured = metrics.captured_frames.with_label_values(&["camera"]);
    *shared.camera_desc.lock() = source.describe();
    metrics.device_up.with_label_values(&["camera"]).set(1.0);
    metrics.video_bitrate_bps.with_label_values(&["top"]).set(publisher.bitrate() as f64);

    while !shared.stop.load(Ordering::Relaxed) {
        while let Ok(c) = control.try_recv() {
            match c {
                VideoControl::Keyframe => publisher.request_keyframe(),
                VideoControl::Bitrate { layer, bps } => match publisher.set_target_bitrate(layer, bps) {
                    Ok(set) => {
                        let label = if layer + 1 == publisher.layers.len() { "top" } else { "low" };
                        metrics.video_bitrate_bps.with_label_values(&[label]).set(set as f64);
                        if label == "top" {
                            shared.video_bitrate.store(set, Ordering::Relaxed);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, layer, bps, "bitrate not applied"),
                },
            }
        }
        let camera_off = shared.camera_off.load(Ordering::Relaxed);
        let frame: &VideoFrame = if camera_off {
            if !was_off {
                source.suspend();
                publisher.request_keyframe();
                shared.camera_state.store(state_code(DeviceState::Off), Ordering::Relaxed);
                was_off = true;
            }
            sleep_until(next_due, &shared.stop);
            out.reshape(w, h);
            slate::render(&mut out, Slate::Privacy);
            out.capture_time = next_due;
            timecode::burn(&mut out, slate_no, publisher.clock.ms(next_due));
            slate_no = slate_no.wrapping_add(1);
            &out
        } else {
            if was_off {
                was_off = false;
                lost = false;
                if let Err(e) = source.reopen() {
                    tracing::warn!(error = %e, "camera did not come back after camera-off");
                    lost = true;
                }
                if !lost {
                    shared.camera_state.store(state_code(DeviceState::Ok), Ordering::Relaxed);
                }
                publisher.request_keyframe();
            }
            if lost && Instant::now() >= next_reopen {
                next_reopen = Instant::now() + REOPEN_EVERY;
                if source.reopen().is_ok() {
                    tracing::info!(camera = %source.describe(), "camera back");
                    lost = false;
                    *shared.camera_desc.lock() = source.describe();
                    shared.camera_state.store(state_code(DeviceState::Ok), Ordering::Relaxed);
                    metrics.device_up.with_label_values(&["camera"]).set(1.0);
                    publisher.request_keyframe();
                }
            }
            if lost {
                sleep_until(next_due, &shared.stop);
                out.reshape(w, h);
                slate::render(&mut out, Slate::CameraLost);
                out.capture_time = next_due;
                timecode::burn(&mut out, slate_no, publisher.clock.ms(next_due));
                slate_no = slate_no.wrapping_add(1);
                &out
            } else {
                if !source.paced() {
                    sleep_until(next_due, &shared.stop);
                }
                match source.next_frame(&mut raw, next_due) {
                    Ok(()) => {
                        captured.inc();
                        fps_window.1 += 1;
                        &raw
                    }
                    Err(MediaError::DeviceLost(_)) => {
                        lost = true;
                        next_reopen = Instant::now() + REOPEN_EVERY;
                        shared.camera_state.store(state_code(DeviceState::Lost), Ordering::Relaxed);
                        metrics.device_up.with_label_values(&["camera"]).set(0.0);
                        publisher.request_keyframe();
                        next_due = Instant::now();
                        continue;
                    }
                    Err(MediaError::BadFrame(detail)) => {
                        tracing::debug!(%detail, "bad camera frame dropped");
                        metrics.dropped_frames.with_label_values(&["bad_frame"]).inc();
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "camera read failed");
                        metrics.dropped_frames.with_label_values(&["device"]).inc();
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
            }
        };
        // the next frame's slot; a backlog (a slow encode, a stall) is dropped, not queued
        let now = Instant::now();
        next_due += period;
        if next_due + period < now {
            let behind = ((now - next_due).as_secs_f64() / period.as_secs_f64()) as u64;
            metrics.dropped_frames.with_label_values(&["late"]).inc_by(behind);
            next_due = now;
        }
        match publisher.publish(frame, &*sink, Some(&metrics)) {
            Ok((sent, refused, _)) => {
                metrics.packets_sent.with_label_values(&["camera"]).inc_by(sent as u64);
                metrics.packets_refused.with_label_values(&["camera"]).inc_by(refused as u64);
                shared.video_frames.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "encode failed");
                metrics.dropped_frames.with_label_values(&["encoder"]).inc();
            }
        }
        if now.duration_since(fps_window.0) >= Duration::from_secs(1) {
            let fps = fps_window.1 as f64 / now.duration_since(fps_window.0).as_secs_f64();
            metrics.capture_fps.set(fps);
            shared.capture_fps_milli.store((fps * 1000.0) as u64, Ordering::Relaxed);
            fps_window = (now, 0);
        }
    }
    source.suspend();
}

// ---------------------------------------------------------------------------
// Audio

/// Encode microphone audio for the mic track: 20 ms Opus frames, RTP time
/// counted in samples from the capture clock, RFC 6464 level per packet.
pub struct AudioPublisher {
    encoder: OpusEncoder,
    seq: u16,
    frame: Vec<i16>,
    fill: usize,
    frame_ts: u32,
    frame_time: Instant,
    marker_next: bool,
}

impl AudioPublisher {
    pub fn new(cfg: &MediaConfig, clock: MediaClock) -> Result<AudioPublisher, MediaError> {
        Ok(AudioPublisher {
            encoder: OpusEncoder::new(cfg.opus_bitrate_bps, cfg.opus_dtx)?,
            seq: 0,
            frame: vec![0; AUDIO_FRAME_SAMPLES],
            fill: 0,
            frame_ts: 0,
            frame_time: clock.epoch(),
            marker_next: true,
        })
    }

    /// Drop any partial frame and the encoder's memory (on mute: nothing
    /// captured before the mute can leak out after the unmute).
    pub fn reset(&mut self) -> Result<(), MediaError> {
        self.fill = 0;
        self.marker_next = true;
        self.encoder.reset()
    }

    /// Push `pcm` whose first sample has RTP time `ts` and capture time `at`;
    /// full 20 ms frames are encoded and sent. Returns (sent, refused).
    pub fn push(
        &mut self,
        pcm: &[i16],
        ts: u32,
        at: Instant,
        sink: &dyn PacketSink,
        metrics: Option<&MediaMetrics>,
    ) -> Result<(usize, usize), MediaError> {
        let (mut sent, mut refused) = (0, 0);
        let mut off = 0;
        while off < pcm.len() {
            if self.fill == 0 {
                self.frame_ts = ts.wrapping_add(off as u32);
                self.frame_time = at + Duration::from_micros(off as u64 * 1_000_000 / AUDIO_RATE as u64);
            }
            let n = (AUDIO_FRAME_SAMPLES - self.fill).min(pcm.len() - off);
            self.frame[self.fill..self.fill + n].copy_from_slice(&pcm[off..off + n]);
            self.fill += n;
            off += n;
            if self.fill == AUDIO_FRAME_SAMPLES {
                self.fill = 0;
                let started = Instant::now();
                let encoded = self.encoder.encode(&self.frame)?;
                if let Some(m) = metrics {
                    m.encode_seconds
                        .with_label_values(&["opus", "0"])
                        .observe(started.elapsed().as_secs_f64());
                }
                match encoded {
                    // DTX: nothing to send; the next packet after a gap carries the marker
                    None => self.marker_next = true,
                    Some(p) => {
                        let packet = LocalPacket {
                            track: MIC_TRACK,
                            layer: 0,
                            seq: self.seq,
                            timestamp: self.frame_ts,
                            marker: std::mem::take(&mut self.marker_next),
                            keyframe: false,
                            audio_level: Some(p.level),
                            capture_time: self.frame_time,
                            payload: Bytes::copy_from_slice(p.payload),
                        };
                        self.seq = self.seq.wrapping_add(1);
                        if sink.send(packet) { sent += 1 } else { refused += 1 }
                    }
                }
            }
        }
        Ok((sent, refused))
    }
}

#[cfg(feature = "aec")]
type Aec = super::aec::EchoCanceller;
#[cfg(not(feature = "aec"))]
type Aec = ();

#[allow(clippy::too_many_arguments)]
fn mic_thread(
    cfg: MediaConfig,
    clock: MediaClock,
    mut source: Box<dyn AudioSource>,
    mut publisher: AudioPublisher,
    #[allow(unused_mut, unused_variables)] mut aec: Option<Aec>,
    sink: Arc<dyn PacketSink>,
    shared: Arc<Shared>,
    metrics: MediaMetrics,
) {
    let period = (cfg.period_ms * AUDIO_RATE / 1000) as usize;
    let period_dur = Duration::from_millis(cfg.period_ms as u64);
    let mut buf = vec![0i16; period];
    // capture time of sample n = anchor + n / 48 kHz; RTP time = anchor_ts + n
    let mut anchor = Instant::now();
    let mut anchor_ts = clock.rtp_audio(anchor);
    let mut n: u64 = 0;
    let mut lost = false;
    let mut next_reopen = Instant::now();
    let mut was_muted = false;
    let mut xruns_seen = 0u64;
    let at = |anchor: Instant, n: u64| anchor + Duration::from_nanos(n * 1_000_000_000 / AUDIO_RATE as u64);
    *shared.mic_desc.lock() = source.describe();
    metrics.device_up.with_label_values(&["microphone"]).set(1.0);

    while !shared.stop.load(Ordering::Relaxed) {
        let due = at(anchor, n);
        if lost {
            // keep the clock running; try the device again now and then
            sleep_until(due + period_dur, &shared.stop);
            n += period as u64;
            if Instant::now() >= next_reopen {
                next_reopen = Instant::now() + REOPEN_EVERY;
                if source.reopen().is_ok() {
                    lost = false;
                    shared.mic_state.store(state_code(DeviceState::Ok), Ordering::Relaxed);
                    metrics.device_up.with_label_values(&["microphone"]).set(1.0);
                    anchor = Instant::now();
                    anchor_ts = clock.rtp_audio(anchor);
                    n = 0;
                    let _ = publisher.reset();
                }
            }
            continue;
        }
        match source.read(&mut buf, due) {
            Ok(()) => {}
            Err(MediaError::DeviceLost(_)) => {
                tracing::warn!("microphone lost; sending nothing until it is back");
                lost = true;
                next_reopen = Instant::now() + REOPEN_EVERY;
                shared.mic_state.store(state_code(DeviceState::Lost), Ordering::Relaxed);
                metrics.device_up.with_label_values(&["microphone"]).set(0.0);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "microphone read failed");
                std::thread::sleep(period_dur);
                continue;
            }
        }
        let x = source.xruns();
        let overran = x > xruns_seen;
        if overran {
            metrics.audio_xruns.with_label_values(&["capture"]).inc_by(x - xruns_seen);
            xruns_seen = x;
        }
        // Pace a source that returned early. A short stall of this thread is
        // caught up (the device buffered those samples, or a generated source
        // makes them now), keeping every sample at its capture time; samples
        // really lost (an overrun) or a device clock drifted far from ours
        // re-anchor the sample clock to now. A device buffer longer than this
        // catch-up window could hold a backlog that re-anchoring would keep
        // as delay, hence config's MAX_CAPTURE_BUFFER_MS.
        let end = at(anchor, n + period as u64);
        let now = Instant::now();
        if end > now + Duration::from_millis(2) {
            sleep_until(end, &shared.stop);
        } else if overran || now > end + Duration::from_millis(MAX_CAPTURE_BUFFER_MS as u64) {
            // samples were lost or the clocks drifted apart: this chunk ends now
            anchor = now - period_dur;
            anchor_ts = clock.rtp_audio(anchor);
            n = 0;
        }
        let capture_time = at(anchor, n);
        let ts = anchor_ts.wrapping_add(n as u32);
        n += period as u64;

        // privacy: a muted microphone's samples end here, zeroed, never encoded
        let muted = shared.mic_muted.load(Ordering::Relaxed);
        if muted {
            buf.fill(0);
            was_muted = true;
            continue;
        }
        if was_muted {
            was_muted = false;
            let _ = publisher.reset();
        }
        #[cfg(feature = "aec")]
        if let Some(aec) = aec.as_mut() {
            if let Err(e) = aec.capture(&mut buf) {
                tracing::warn!(error = %e, "echo canceller failed on capture");
            }
            if let Some(erle) = aec.erle_db() {
                metrics.aec_erle_db.set(erle);
            }
        }
        match publisher.push(&buf, ts, capture_time, &*sink, Some(&metrics)) {
            Ok((sent, refused)) => {
                metrics.packets_sent.with_label_values(&["microphone"]).inc_by(sent as u64);
                metrics.packets_refused.with_label_values(&["microphone"]).inc_by(refused as u64);
                shared.audio_frames.fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "Opus encode failed"),
        }
    }
}

fn speaker_thread(
    mut sink: Box<dyn AudioSink>,
    #[allow(unused_mut, unused_variables)] mut aec: Option<Aec>,
    remote: Receiver<(Arc<str>, u16, Bytes)>,
    shared: Arc<Shared>,
    metrics: MediaMetrics,
) {
    let mut mixer = Mixer::new();
    let mut out = vec![0i16; AUDIO_FRAME_SAMPLES];
    let frame = Duration::from_millis(20);
    let mut anchor = Instant::now();
    let mut k: u32 = 0;
    let mut lost = false;
    let mut next_reopen = Instant::now();
    let mut xruns_seen = 0u64;
    let mut last_stats = mixer.stats();
    metrics.device_up.with_label_values(&["speakers"]).set(1.0);
    while !shared.stop.load(Ordering::Relaxed) {
        let due = anchor + frame * k;
        // take packets until this frame is due
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            match remote.recv_timeout(due - now) {
                Ok((track, seq, payload)) => {
                    if let Err(e) = mixer.push(&track, seq, payload, now) {
                        tracing::warn!(error = %e, "cannot decode remote audio");
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        while let Ok((track, seq, payload)) = remote.try_recv() {
            let _ = mixer.push(&track, seq, payload, Instant::now());
        }
        let now = Instant::now();
        k += 1;
        if now > due + Duration::from_millis(100) {
            anchor = now;
            k = 1;
        }
        mixer.mix(&mut out, now);
        #[cfg(feature = "aec")]
        if let Some(aec) = aec.as_mut()
            && let Err(e) = aec.render(&out)
        {
            tracing::warn!(error = %e, "echo canceller failed on render");
        }
        if lost {
            if now >= next_reopen {
                next_reopen = now + REOPEN_EVERY;
                if sink.reopen().is_ok() {
                    lost = false;
                    shared.speaker_state.store(state_code(DeviceState::Ok), Ordering::Relaxed);
                    metrics.device_up.with_label_values(&["speakers"]).set(1.0);
                }
            }
            continue;
        }
        match sink.write(&out) {
            Ok(()) => {}
            Err(MediaError::DeviceLost(_)) => {
                lost = true;
                next_reopen = now + REOPEN_EVERY;
                shared.speaker_state.store(state_code(DeviceState::Lost), Ordering::Relaxed);
                metrics.device_up.with_label_values(&["speakers"]).set(0.0);
            }
            Err(e) => tracing::warn!(error = %e, "speaker write failed"),
        }
        let x = sink.xruns();
        if x > xruns_seen {
            metrics.audio_xruns.with_label_values(&["playback"]).inc_by(x - xruns_seen);
            xruns_seen = x;
        }
        let s = mixer.stats();
        metrics
            .playback_concealed
            .with_label_values(&["decoded"])
            .inc_by(s.played.saturating_sub(last_stats.played));
        metrics
            .playback_concealed
            .with_label_values(&["fec"])
            .inc_by(s.fec_recovered.saturating_sub(last_stats.fec_recovered));
        metrics
            .playback_concealed
            .with_label_values(&["concealed"])
            .inc_by(s.concealed.saturating_sub(last_stats.concealed));
        last_stats = s;
        metrics.playback_streams.set(mixer.streams() as i64);
    }
}

// ---------------------------------------------------------------------------

/// A cloneable handle that feeds the room's events to a running pipeline.
#[derive(Clone)]
pub struct PipelineInputs {
    video_ctl: SyncSender<VideoControl>,
    remote_audio: Option<SyncSender<(Arc<str>, u16, Bytes)>>,
}

impl PipelineInputs {
    /// Feed what the room says. Never blocks; a full queue drops the input
    /// (a newer keyframe request or bitrate comes soon; audio conceals).
    pub fn input(&self, input: PipelineInput) {
        match input {
            PipelineInput::KeyframeRequest { track } if track == CAMERA_TRACK => {
                let _ = self.video_ctl.try_send(VideoControl::Keyframe);
            }
            PipelineInput::TargetBitrate { track, layer, bps } if track == CAMERA_TRACK => {
                let _ = self.video_ctl.try_send(VideoControl::Bitrate { layer, bps });
            }
            PipelineInput::RemoteAudio { track, seq, payload } => {
                if let Some(tx) = &self.remote_audio
                    && let Err(TrySendError::Full(_)) = tx.try_send((track, seq, payload))
                {
                    tracing::debug!("speaker queue full; remote audio packet dropped");
                }
            }
            _ => {}
        }
    }
}

/// The running pipeline: three threads and their controls.
pub struct Pipeline {
    shared: Arc<Shared>,
    inputs: PipelineInputs,
    threads: Vec<JoinHandle<()>>,
    metrics: MediaMetrics,
    cfg: MediaConfig,
    aec: AecState,
    rids: Vec<String>,
}

impl Pipeline {
    /// Start the threads. `metrics` should already be registered (or not:
    /// tests run with unregistered metrics).
    pub fn start(
        cfg: &MediaConfig,
        clock: MediaClock,
        devices: Devices,
        sink: Arc<dyn PacketSink>,
        metrics: MediaMetrics,
    ) -> Result<Pipeline, MediaError> {
        cfg.validate()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            mic_muted: AtomicBool::new(cfg.start_mic_muted),
            camera_off: AtomicBool::new(cfg.start_camera_off),
            camera_state: AtomicU32::new(state_code(DeviceState::Ok)),
            mic_state: AtomicU32::new(state_code(DeviceState::Ok)),
            speaker_state: AtomicU32::new(state_code(if devices.playback.is_some() {
                DeviceState::Ok
            } else {
                DeviceState::Off
            })),
            video_bitrate: AtomicU32::new(cfg.start_bitrate_bps),
            capture_fps_milli: AtomicU64::new(0),
            video_frames: AtomicU64::new(0),
            audio_frames: AtomicU64::new(0),
            camera_desc: Mutex::new(String::new()),
            mic_desc: Mutex::new(String::new()),
        });
        metrics.mic_muted.set(cfg.start_mic_muted as i64);
        metrics.camera_off.set(cfg.start_camera_off as i64);

        let (aec_state, aec_render, aec_capture) = make_aec(cfg, devices.playback.is_some())?;
        metrics.aec_active.set((aec_state == AecState::Active) as i64);

        let video_pub = VideoPublisher::new(cfg, clock)?;
        let rids = video_pub.rids();
        let audio_pub = AudioPublisher::new(cfg, clock)?;
        let (video_ctl, video_rx) = sync_channel(64);
        let mut threads = Vec::new();
        {
            let (cfg, shared, sink, metrics) = (cfg.clone(), shared.clone(), sink.clone(), metrics.clone());
            let source = devices.video;
            threads.push(
                std::thread::Builder::new()
                    .name("room-camera".into())
                    .spawn(move || video_thread(cfg, source, video_pub, sink, video_rx, shared, metrics))?,
            );
        }
        {
            let (cfg, shared, sink, metrics) = (cfg.clone(), shared.clone(), sink.clone(), metrics.clone());
            let source = devices.audio;
            threads.push(std::thread::Builder::new().name("room-mic".into()).spawn(move || {
                mic_thread(cfg, clock, source, audio_pub, aec_capture, sink, shared, metrics)
            })?);
        }
        let mut remote_audio = None;
        if let Some(speakers) = devices.playback {
            let (tx, rx) = sync_channel(512);
            remote_audio = Some(tx);
            let (shared, metrics) = (shared.clone(), metrics.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("room-speakers".into())
                    .spawn(move || speaker_thread(speakers, aec_render, rx, shared, metrics))?,
            );
        }
        let inputs = PipelineInputs { video_ctl, remote_audio };
        Ok(Pipeline { shared, inputs, threads, metrics, cfg: cfg.clone(), aec: aec_state, rids })
    }

    /// Simulcast rids of the camera track (empty for one layer).
    pub fn rids(&self) -> &[String] {
        &self.rids
    }

    /// Feed what the room says (see [`PipelineInputs::input`]).
    pub fn input(&self, input: PipelineInput) {
        self.inputs.input(input)
    }

    /// A handle for another thread to feed inputs.
    pub fn input_handle(&self) -> PipelineInputs {
        self.inputs.clone()
    }

    pub fn set_mic_muted(&self, muted: bool) {
        self.shared.mic_muted.store(muted, Ordering::Relaxed);
        self.metrics.mic_muted.set(muted as i64);
    }

    pub fn set_camera_off(&self, off: bool) {
        self.shared.camera_off.store(off, Ordering::Relaxed);
        self.metrics.camera_off.set(off as i64);
    }

    pub fn status(&self) -> MediaStatus {
        let s = &self.shared;
        let camera_off = s.camera_off.load(Ordering::Relaxed);
        MediaStatus {
            mic_muted: s.mic_muted.load(Ordering::Relaxed),
            camera_off,
            camera: if camera_off {
                DeviceState::Off
            } else {
                state_of(s.camera_state.load(Ordering::Relaxed))
            },
            microphone: state_of(s.mic_state.load(Ordering::Relaxed)),
            speakers: state_of(s.speaker_state.load(Ordering::Relaxed)),
            aec: self.aec,
            width: self.cfg.width,
            height: self.cfg.height,
            fps: self.cfg.fps,
            simulcast: self.cfg.simulcast,
            video_bitrate_bps: s.video_bitrate.load(Ordering::Relaxed),
            capture_fps: s.capture_fps_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            video_frames_sent: s.video_frames.load(Ordering::Relaxed),
            audio_frames_sent: s.audio_frames.load(Ordering::Relaxed),
            camera_description: s.camera_desc.lock().clone(),
            microphone_description: s.mic_desc.lock().clone(),
        }
    }

    /// Stop every thread and wait for them (at most a device timeout).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.inputs.remote_audio = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(feature = "aec")]
fn make_aec(cfg: &MediaConfig, speakers: bool) -> Result<(AecState, Option<Aec>, Option<Aec>), MediaError> {
    if !cfg.aec {
        return Ok((AecState::Disabled, None, None));
    }
    if !speakers {
        return Ok((AecState::NoReference, None, None));
    }
    let (r, c) = super::aec::EchoCanceller::pair()?;
    Ok((AecState::Active, Some(r), Some(c)))
}

#[cfg(not(feature = "aec"))]
fn make_aec(cfg: &MediaConfig, speakers: bool) -> Result<(AecState, Option<Aec>, Option<Aec>), MediaError> {
    let state = match (cfg.aec, speakers) {
        (false, _) => AecState::Disabled,
        (true, false) => AecState::NoReference,
        (true, true) => AecState::NotBuilt,
    };
    Ok((state, None, None))
}
