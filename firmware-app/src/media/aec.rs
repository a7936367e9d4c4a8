//! Acoustic echo cancellation on the microphone, with what the speakers play
//! as the reference: WebRTC's audio processing module through the
//! `webrtc-audio-processing` crate (feature `aec`).
//!
//! Why version 0.5 and not 2.1: 2.1's `bundled` build asks meson for abseil
//! 20240722 or newer; Debian 12 ships 20220623, so meson falls back to its wrap
//! file, which downloads abseil from GitHub at build time — impossible on this
//! machine and on an air-gapped build host. 0.5 bundles WebRTC APM 0.3 (the
//! AEC of the same family, with delay-agnostic mode and the extended filter)
//! and builds offline with autotools.
//!
//! The processor works on 10 ms frames of f32 in [-1, 1]. One handle feeds
//! the far end (render) from the playback thread, the other cleans the near
//! end (capture) on the microphone thread; they share one processor.

use webrtc_audio_processing::{
    Config, EchoCancellation, EchoCancellationSuppressionLevel, InitializationConfig, NUM_SAMPLES_PER_FRAME,
    NoiseSuppression, NoiseSuppressionLevel, Processor,
};

use super::MediaError;

/// Samples per AEC frame (10 ms at 48 kHz).
pub const AEC_FRAME: usize = NUM_SAMPLES_PER_FRAME as usize;

/// One side of the shared echo canceller.
pub struct EchoCanceller {
    processor: Processor,
    buf: Vec<f32>,
}

impl EchoCanceller {
    /// A (render, capture) pair over one processor.
    pub fn pair() -> Result<(EchoCanceller, EchoCanceller), MediaError> {
        let init =
            InitializationConfig { num_capture_channels: 1, num_render_channels: 1, ..Default::default() };
        let mut processor = Processor::new(&init).map_err(|e| MediaError::Aec(format!("{e:?}")))?;
        processor.set_config(Config {
            echo_cancellation: Some(EchoCancellation {
                suppression_level: EchoCancellationSuppressionLevel::High,
                enable_extended_filter: true,
                enable_delay_agnostic: true,
                stream_delay_ms: None,
            }),
            noise_suppression: Some(NoiseSuppression { suppression_level: NoiseSuppressionLevel::Moderate }),
            enable_high_pass_filter: true,
            ..Config::default()
        });
        let render = EchoCanceller { processor: processor.clone(), buf: vec![0.0; AEC_FRAME] };
        let capture = EchoCanceller { processor, buf: vec![0.0; AEC_FRAME] };
        Ok((render, capture))
    }

    /// Feed what the speakers are about to play (any multiple of 10 ms).
    pub fn render(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        for chunk in pcm.chunks_exact(AEC_FRAME) {
            for (f, s) in self.buf.iter_mut().zip(chunk) {
                *f = *s as f32 / 32768.0;
            }
            self.processor
                .process_render_frame(&mut self.buf)
                .map_err(|e| MediaError::Aec(format!("{e:?}")))?;
        }
        Ok(())
    }

    /// Remove the echo from microphone samples in place (any multiple of 10 ms).
    pub fn capture(&mut self, pcm: &mut [i16]) -> Result<(), MediaError> {
        for chunk in pcm.chunks_exact_mut(AEC_FRAME) {
            for (f, s) in self.buf.iter_mut().zip(chunk.iter()) {
                *f = *s as f32 / 32768.0;
            }
            self.processor
                .process_capture_frame(&mut self.buf)
                .map_err(|e| MediaError::Aec(format!("{e:?}")))?;
            for (s, f) in chunk.iter_mut().zip(&self.buf) {
                *s = (f * 32768.0).clamp(-32768.0, 32767.0) as i16;
            }
        }
        Ok(())
    }

    /// Echo return loss enhancement in dB, when the canceller reports it.
    pub fn erle_db(&self) -> Option<f64> {
        self.processor.get_stats().echo_return_loss_enhancement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / x.len() as f64
    }

    /// A far-end talker (noise bursts shaped like syllables) played into a
    /// room that returns it to the microphone 40 ms later at half amplitude:
    /// after the canceller has converged, the microphone carries far less of it.
    #[test]
    fn echo_of_the_far_end_is_removed_from_the_microphone() {
        let (mut render, mut capture) = EchoCanceller::pair().unwrap();
        let mut x = 0x9e37_79b9u32;
        let far: Vec<i16> = (0..48_000 * 8)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let syllable = ((i / 9600) % 3 != 2) as i32; // 200 ms on, on, off
                ((x as i16 as i32 / 4) * syllable) as i16
            })
            .collect();
        let delay = 48 * 40;
        let mut mic_in = Vec::new();
        let mut mic_out = Vec::new();
        for (k, chunk) in far.chunks(AEC_FRAME).enumerate() {
            render.render(chunk).unwrap();
            let start = k * AEC_FRAME;
            let mut mic: Vec<i16> =
                (start..start + AEC_FRAME).map(|i| if i >= delay { far[i - delay] / 2 } else { 0 }).collect();
            mic_in.extend_from_slice(&mic);
            capture.capture(&mut mic).unwrap();
            mic_out.extend_from_slice(&mic);
        }
        let tail = mic_in.len() - 48_000 * 3; // the last 3 s, after convergence
        let reduction_db = 10.0 * (energy(&mic_in[tail..]) / energy(&mic_out[tail..]).max(1.0)).log10();
        assert!(reduction_db > 10.0, "echo reduced by only {reduction_db:.1} dB");
    }
}
