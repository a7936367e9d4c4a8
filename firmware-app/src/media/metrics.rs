//! The media pipeline's Prometheus metrics, registered into the daemon's registry.

use prometheus::{Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::MediaError;

/// Every media metric; cheap to clone (the collectors are shared).
#[derive(Clone)]
pub struct MediaMetrics {
    /// Frames taken from the camera source (slates not counted), by track.
    pub captured_frames: IntCounterVec,
    /// Camera frames per second over the last second.
    pub capture_fps: Gauge,
    /// Frames not sent, by reason (`late`, `bad_frame`, `device`, `encoder`).
    pub dropped_frames: IntCounterVec,
    /// Time to encode one frame, by codec and layer.
    pub encode_seconds: HistogramVec,
    /// RTP packets handed to the SFU and packets it refused (queue full), by track.
    pub packets_sent: IntCounterVec,
    pub packets_refused: IntCounterVec,
    /// ALSA over/underruns recovered, by direction (`capture`, `playback`).
    pub audio_xruns: IntCounterVec,
    /// 1 when echo cancellation runs on the microphone.
    pub aec_active: IntGauge,
    /// Echo return loss enhancement reported by the canceller.
    pub aec_erle_db: Gauge,
    /// 1 when a device works, 0 when it is lost, by device.
    pub device_up: GaugeVec,
    pub mic_muted: IntGauge,
    pub camera_off: IntGauge,
    /// Current encoder target, by layer.
    pub video_bitrate_bps: GaugeVec,
    /// Remote audio streams being mixed to the speakers.
    pub playback_streams: IntGauge,
    /// Remote audio frames concealed (lost or late).
    pub playback_concealed: IntCounterVec,
}

impl MediaMetrics {
    pub fn new() -> Result<MediaMetrics, MediaError> {
        let p = "roombox_media_";
        let m = MediaMetrics {
            captured_frames: IntCounterVec::new(
                Opts::new(format!("{p}captured_frames_total"), "Frames taken from the camera source"),
                &["track"],
            )?,
            capture_fps: Gauge::new(
                format!("{p}capture_fps"),
                "Camera frames per second over the last second",
            )?,
            dropped_frames: IntCounterVec::new(
                Opts::new(format!("{p}dropped_frames_total"), "Camera frames not sent, by reason"),
                &["reason"],
            )?,
            encode_seconds: HistogramVec::new(
                HistogramOpts::new(format!("{p}encode_seconds"), "Time to encode one frame")
                    .buckets(vec![0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.1]),
                &["codec", "layer"],
            )?,
            packets_sent: IntCounterVec::new(
                Opts::new(format!("{p}packets_sent_total"), "RTP packets handed to the SFU"),
                &["track"],
            )?,
            packets_refused: IntCounterVec::new(
                Opts::new(format!("{p}packets_refused_total"), "RTP packets the SFU refused (queue full)"),
                &["track"],
            )?,
            audio_xruns: IntCounterVec::new(
                Opts::new(format!("{p}audio_xruns_total"), "ALSA overruns and underruns recovered"),
                &["direction"],
            )?,
            aec_active: IntGauge::new(
                format!("{p}aec_active"),
                "1 when echo cancellation runs on the microphone",
            )?,
            aec_erle_db: Gauge::new(format!("{p}aec_erle_db"), "Echo return loss enhancement (dB)")?,
            device_up: GaugeVec::new(
                Opts::new(format!("{p}device_up"), "1 when the device works"),
                &["device"],
            )?,
            mic_muted: IntGauge::new(format!("{p}mic_muted"), "1 when the room microphone is muted")?,
            camera_off: IntGauge::new(format!("{p}camera_off"), "1 when the room camera is off")?,
            video_bitrate_bps: GaugeVec::new(
                Opts::new(format!("{p}video_bitrate_bps"), "H.264 encoder target bitrate"),
                &["layer"],
            )?,
            playback_streams: IntGauge::new(
                format!("{p}playback_streams"),
                "Remote audio streams mixed to the speakers",
            )?,
            playback_concealed: IntCounterVec::new(
                Opts::new(format!("{p}playback_frames_total"), "Remote audio frames played, by how"),
                &["how"],
            )?,
        };
        // Every series whose labels are known exists from the start at 0, so a
        // dashboard's `rate()` sees the first refused packet or xrun as an increase
        // instead of a series appearing from nowhere.
        for track in ["camera", "microphone"] {
            m.packets_sent.with_label_values(&[track]);
            m.packets_refused.with_label_values(&[track]);
        }
        m.captured_frames.with_label_values(&["camera"]);
        for reason in ["late", "bad_frame", "device", "encoder"] {
            m.dropped_frames.with_label_values(&[reason]);
        }
        for direction in ["capture", "playback"] {
            m.audio_xruns.with_label_values(&[direction]);
        }
        Ok(m)
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.captured_frames.clone()),
            Box::new(self.capture_fps.clone()),
            Box::new(self.dropped_frames.clone()),
            Box::new(self.encode_seconds.clone()),
            Box::new(self.packets_sent.clone()),
            Box::new(self.packets_refused.clone()),
            Box::new(self.audio_xruns.clone()),
            Box::new(self.aec_active.clone()),
            Box::new(self.aec_erle_db.clone()),
            Box::new(self.device_up.clone()),
            Box::new(self.mic_muted.clone()),
            Box::new(self.camera_off.clone()),
            Box::new(self.video_bitrate_bps.clone()),
            Box::new(self.playback_streams.clone()),
            Box::new(self.playback_concealed.clone()),
        ]
    }

    /// Register every collector; undone by [`MediaMetrics::unregister`].
    pub fn register(&self, registry: &Registry) -> Result<(), MediaError> {
        for c in self.collectors() {
            registry.register(c)?;
        }
        Ok(())
    }

    pub fn unregister(&self, registry: &Registry) {
        for c in self.collectors() {
            let _ = registry.unregister(c);
        }
    }
}
