//! The room's own camera, microphone and speakers.
//!
//! The camera and microphone enter the SFU **in process** as the local
//! participant `room` (no loopback WebRTC hop): frames are encoded with
//! openh264 (constrained baseline) and packetized per RFC 6184 (mode 1:
//! single NAL / STAP-A / FU-A), the microphone with Opus (20 ms, in-band
//! FEC, DTX, an RFC 6464 level on every packet). Remote participants' audio
//! comes back, is jitter-buffered per participant, mixed and played, and is
//! the reference of the echo canceller on the microphone (feature `aec`).
//!
//! ```text
//! VideoSource ─► VideoPublisher (scale, openh264 ×layers, packetize) ─┐
//! AudioSource ─► (AEC capture) ─► AudioPublisher (Opus, level) ───────┴─► PacketSink (the SFU)
//! SFU events ─► Mixer (jitter buffer per track, Opus decode) ─► (AEC render) ─► AudioSink
//! ```
//!
//! Threads: `room-camera`, `room-mic`, `room-speakers` (plain std threads,
//! never tokio workers), plus one that forwards the SFU's events. Each loop is
//! paced by the one capture clock ([`source::MediaClock`]); a device that
//! returns early (files, alsa-lib's `type file` PCM) is waited for, one that
//! falls behind is re-anchored. Video and audio RTP times count from the same
//! epoch, so the same capture instant has the same media time on both tracks.
//!
//! **Privacy.** [`RoomMedia::set_mic_muted`] stops audio at the source: the
//! microphone thread zeroes what it reads and sends **no packets** while muted
//! (the encoder is reset on unmute, so nothing from before the mute leaks
//! out), and the SFU is told the track is muted. [`RoomMedia::set_camera_off`]
//! releases the camera device and sends a "CAMERA OFF" slate instead of the
//! picture (so viewers see why). A lost camera shows "CAMERA LOST" and is
//! retried every second; a lost microphone sends nothing until it is back.
//!
//! ```no_run
//! # async fn demo(sfu: &sfu_core::Sfu) -> Result<(), roombox::media::MediaError> {
//! use roombox::media::{MediaConfig, RoomMedia};
//! let registry = prometheus::Registry::new();
//! let media = RoomMedia::start(sfu, "demo", &MediaConfig::default(), &registry).await?;
//! media.set_mic_muted(true);
//! assert!(media.status().mic_muted);
//! media.stop().await;
//! # Ok(()) }
//! ```

pub mod audio;
pub mod config;
pub mod error;
pub mod frame;
pub mod h264;
pub mod metrics;
pub mod pipeline;
pub mod slate;
pub mod source;
pub mod timecode;
pub mod v4l2;

#[cfg(feature = "aec")]
pub mod aec;
#[cfg(feature = "alsa")]
pub mod alsa_io;

use std::sync::Arc;

pub use config::{AudioSourceConfig, MediaConfig, PlaybackConfig, VideoSourceConfig};
pub use error::MediaError;
pub use pipeline::{AecState, DeviceState, Devices, MediaStatus, PacketSink, Pipeline, PipelineInput};
pub use source::MediaClock;

use sfu_core::local::{LocalCodec, LocalEvent, LocalJoin, LocalSubscription, LocalTrackSpec};
use sfu_core::protocol::{TrackKind, TrackSource};
use sfu_core::{LocalParticipant, Sfu};

/// The room's media, running: what the daemon holds.
pub struct RoomMedia {
    pipeline: Pipeline,
    clock: MediaClock,
    participant: Arc<LocalParticipant>,
    runtime: tokio::runtime::Handle,
    metrics: metrics::MediaMetrics,
    registry: prometheus::Registry,
    events: Option<std::thread::JoinHandle<()>>,
}

/// The tracks the room participant publishes (camera, microphone).
pub fn room_tracks(cfg: &MediaConfig) -> Vec<LocalTrackSpec> {
    vec![
        LocalTrackSpec {
            name: "camera".into(),
            kind: TrackKind::Video,
            source: TrackSource::RoomCamera,
            codec: LocalCodec::H264 { profile_level_id: h264::profile_level_id(cfg.width, cfg.height) },
            layers: if cfg.simulcast { vec!["h".into(), "f".into()] } else { Vec::new() },
        },
        LocalTrackSpec {
            name: "mic".into(),
            kind: TrackKind::Audio,
            source: TrackSource::RoomMicrophone,
            codec: LocalCodec::Opus,
            layers: Vec::new(),
        },
    ]
}

impl RoomMedia {
    /// Open the configured devices, join `room` as the room participant and
    /// start publishing (and playing remote audio, when speakers are set).
    /// Must be called inside a tokio runtime (the SFU's calls are async).
    pub async fn start(
        sfu: &Sfu,
        room: &str,
        cfg: &MediaConfig,
        registry: &prometheus::Registry,
    ) -> Result<RoomMedia, MediaError> {
        cfg.validate()?;
        let clock = MediaClock::new(std::time::Instant::now());
        let devices = Devices::from_config(cfg, clock)?;
        let subscribe =
            if devices.playback.is_some() { LocalSubscription::AllAudio } else { LocalSubscription::None };
        let join = LocalJoin {
            room: room.to_owned(),
            identity: cfg.identity.clone(),
            name: cfg.name.clone(),
            publish: room_tracks(cfg),
            subscribe,
        };
        let mut participant = sfu.join_local(join).await?;
        let (_, placeholder) = tokio::sync::mpsc::channel(1);
        let mut events = std::mem::replace(&mut participant.events, placeholder);
        let participant = Arc::new(participant);

        let m = metrics::MediaMetrics::new()?;
        m.register(registry)?;
        let sink: Arc<dyn PacketSink> = participant.clone();
        let pipeline = match Pipeline::start(cfg, clock, devices, sink, m.clone()) {
            Ok(p) => p,
            Err(e) => {
                m.unregister(registry);
                return Err(e);
            }
        };
        let runtime = tokio::runtime::Handle::current();
        if cfg.start_mic_muted {
            let p = participant.clone();
            runtime.spawn(async move { p.set_muted(pipeline::MIC_TRACK, true).await });
        }

        // The SFU's events, on a plain thread: it blocks on the channel and
        // ends when the participant leaves and the channel closes.
        let inputs = pipeline.input_handle();
        let events_thread =
            std::thread::Builder::new().name("room-media-events".into()).spawn(move || {
                while let Some(ev) = events.blocking_recv() {
                    match ev {
                        LocalEvent::KeyframeRequest { track } => {
                            inputs.input(PipelineInput::KeyframeRequest { track })
                        }
                        LocalEvent::TargetBitrate { track, layer, bps } => {
                            inputs.input(PipelineInput::TargetBitrate { track, layer, bps })
                        }
                        LocalEvent::Rtp(p)
                            if p.kind == TrackKind::Audio && p.codec.eq_ignore_ascii_case("opus") =>
                        {
                            inputs.input(PipelineInput::RemoteAudio {
                                track: p.track,
                                seq: p.seq,
                                payload: p.payload,
                            })
                        }
                        _ => {}
                    }
                }
            })?;
        tracing::info!(room, identity = %cfg.identity, camera = %pipeline.status().camera_description,
            "room media started");
        Ok(RoomMedia {
            pipeline,
            clock,
            participant,
            runtime,
            metrics: m,
            registry: registry.clone(),
            events: Some(events_thread),
        })
    }

    /// Mute or unmute the room microphone at the source (see the module docs).
    pub fn set_mic_muted(&self, muted: bool) {
        self.pipeline.set_mic_muted(muted);
        let p = self.participant.clone();
        self.runtime.spawn(async move {
            if let Err(e) = p.set_muted(pipeline::MIC_TRACK, muted).await {
                tracing::debug!(error = %e, "SFU not told about the microphone mute");
            }
        });
    }

    /// Turn the room camera off (privacy slate) or back on.
    pub fn set_camera_off(&self, off: bool) {
        self.pipeline.set_camera_off(off);
        let p = self.participant.clone();
        self.runtime.spawn(async move {
            if let Err(e) = p.set_muted(pipeline::CAMERA_TRACK, off).await {
                tracing::debug!(error = %e, "SFU not told about the camera mute");
            }
        });
    }

    pub fn status(&self) -> MediaStatus {
        self.pipeline.status()
    }

    /// The capture clock: the burnt-in timecode's milliseconds count from its epoch.
    pub fn clock(&self) -> MediaClock {
        self.clock
    }

    /// Stop the threads, leave the room, unregister the metrics.
    pub async fn stop(mut self) {
        let pipeline = self.pipeline;
        let _ = tokio::task::spawn_blocking(move || pipeline.stop()).await;
        match Arc::try_unwrap(self.participant) {
            Ok(p) => p.leave().await,
            Err(_) => tracing::warn!("room participant still shared at stop; it leaves when dropped"),
        }
        if let Some(t) = self.events.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.metrics.unregister(&self.registry);
    }
}
