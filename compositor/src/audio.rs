//! Mixing the room's sound: 20 ms frames of 48 kHz i16 audio (what an Opus
//! decoder hands out) from every unmuted participant, each with its own
//! gain, summed in floating point and soft-clipped back to i16.
//!
//! Soft clip: below ±24576 (¾ of full scale) a sample passes unchanged;
//! above, it bends smoothly (`tanh`, slope 1 at the knee) towards ±32767
//! and never reaches it, so two loud talkers distort gently instead of
//! wrapping or flat-topping.

use crate::Error;

/// The mixer's (and the recording's) sample rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;

const FULL_SCALE: f32 = 32767.0;
const KNEE: f32 = 24576.0;

/// Output channel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Mono,
    Stereo,
}

impl Channels {
    pub const fn count(self) -> usize {
        match self {
            Channels::Mono => 1,
            Channels::Stereo => 2,
        }
    }
}

/// One participant's 20 ms of sound: `channels` interleaved (1 or 2).
#[derive(Debug, Clone, Copy)]
pub struct AudioIn<'a> {
    pub samples: &'a [i16],
    pub channels: u8,
    /// Linear gain (1.0 = as is); finite and ≥ 0.
    pub gain: f32,
    /// Muted sources are left out (and not checked).
    pub muted: bool,
}

/// Mixes 20 ms frames; owns its accumulator and output, reused every frame.
#[derive(Debug, Clone)]
pub struct Mixer {
    channels: Channels,
    acc: Vec<f32>,
    out: Vec<i16>,
}

/// A sample of the float sum back to i16 through the soft clip.
pub fn soft_clip(x: f32) -> i16 {
    let a = x.abs();
    let y =
        if a <= KNEE { a } else { KNEE + (FULL_SCALE - KNEE) * ((a - KNEE) / (FULL_SCALE - KNEE)).tanh() };
    // `as` saturates (and maps NaN to 0); the knee math keeps |y| < 32767 anyway.
    (y.copysign(x).round()) as i16
}

impl Mixer {
    pub fn new(channels: Channels) -> Self {
        let n = FRAME_SAMPLES * channels.count();
        Mixer { channels, acc: vec![0.0; n], out: vec![0; n] }
    }

    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// Mixes one 20 ms frame of every unmuted source. Every source is checked
    /// before anything is summed: a wrong length, channel count or gain is an
    /// error naming the source, and nothing is mixed.
    pub fn mix(&mut self, sources: &[AudioIn<'_>]) -> Result<&[i16], Error> {
        for (index, s) in sources.iter().enumerate().filter(|(_, s)| !s.muted) {
            if !(1..=2).contains(&s.channels) {
                return Err(Error::AudioChannels { index, channels: s.channels });
            }
            let expected = FRAME_SAMPLES * s.channels as usize;
            if s.samples.len() != expected {
                return Err(Error::AudioLength {
                    index,
                    len: s.samples.len(),
                    expected,
                    channels: s.channels,
                });
            }
            if !s.gain.is_finite() || s.gain < 0.0 {
                return Err(Error::AudioGain { index, gain: s.gain });
            }
        }
        self.acc.fill(0.0);
        for s in sources.iter().filter(|s| !s.muted) {
            let g = s.gain;
            match (s.channels, self.channels) {
                (1, Channels::Mono) | (2, Channels::Stereo) => {
                    for (a, &x) in self.acc.iter_mut().zip(s.samples) {
                        *a += x as f32 * g;
                    }
                }
                (1, Channels::Stereo) => {
                    for (a, &x) in self.acc.chunks_exact_mut(2).zip(s.samples) {
                        a[0] += x as f32 * g;
                        a[1] += x as f32 * g;
                    }
                }
                _ => {
                    // stereo into mono: the average of the two channels
                    for (a, lr) in self.acc.iter_mut().zip(s.samples.chunks_exact(2)) {
                        *a += (lr[0] as f32 + lr[1] as f32) * 0.5 * g;
                    }
                }
            }
        }
        for (o, &a) in self.out.iter_mut().zip(&self.acc) {
            *o = soft_clip(a);
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mono(v: i16) -> Vec<i16> {
        vec![v; FRAME_SAMPLES]
    }

    fn src(samples: &[i16]) -> AudioIn<'_> {
        AudioIn { samples, channels: 1, gain: 1.0, muted: false }
    }

    #[test]
    fn one_source_below_the_knee_passes_unchanged() {
        let ramp: Vec<i16> = (0..FRAME_SAMPLES as i32).map(|i| (i * 50 - 24_000) as i16).collect();
        let mut m = Mixer::new(Channels::Mono);
        assert_eq!(m.mix(&[src(&ramp)]).unwrap(), &ramp[..]);
    }

    #[test]
    fn sources_are_summed_with_their_gains() {
        let (a, b, c) = (mono(1000), mono(-300), mono(4000));
        let mut m = Mixer::new(Channels::Mono);
        let out = m.mix(&[src(&a), src(&b), AudioIn { gain: 0.25, ..src(&c) }]).unwrap();
        assert!(out.iter().all(|&s| s == 1000 - 300 + 1000), "{}", out[0]);
    }

    #[test]
    fn muted_sources_are_left_out_even_when_malformed() {
        let (a, loud) = (mono(1234), mono(20_000));
        let short = [1i16; 3];
        let mut m = Mixer::new(Channels::Mono);
        let out = m
            .mix(&[
                src(&a),
                AudioIn { muted: true, ..src(&loud) },
                AudioIn { muted: true, channels: 7, ..src(&short) },
            ])
            .unwrap();
        assert!(out.iter().all(|&s| s == 1234));
        assert!(m.mix(&[]).unwrap().iter().all(|&s| s == 0), "nobody unmuted: silence");
    }

    #[test]
    fn mono_goes_to_both_channels_and_stereo_is_averaged_into_mono() {
        let a = mono(500);
        let lr: Vec<i16> = (0..FRAME_SAMPLES).flat_map(|_| [1000i16, 3000]).collect();
        let mut st = Mixer::new(Channels::Stereo);
        let out = st.mix(&[src(&a), AudioIn { channels: 2, ..src(&lr) }]).unwrap();
        assert_eq!(out.len(), 2 * FRAME_SAMPLES);
        assert!(out.chunks_exact(2).all(|f| f == [1500, 3500]), "{:?}", &out[..4]);
        let mut mo = Mixer::new(Channels::Mono);
        let out = mo.mix(&[AudioIn { channels: 2, ..src(&lr) }]).unwrap();
        assert!(out.iter().all(|&s| s == 2000));
    }

    #[test]
    fn loud_sums_bend_towards_full_scale_and_never_wrap() {
        let mut m = Mixer::new(Channels::Mono);
        let (p20, p30, max, neg) = (mono(20_000), mono(30_000), mono(i16::MAX), mono(-30_000));
        let two_20k = m.mix(&[src(&p20), src(&p20)]).unwrap()[0];
        let two_30k = m.mix(&[src(&p30), src(&p30)]).unwrap()[0];
        let nine_max = m.mix(&[src(&max); 9]).unwrap()[0];
        let two_neg = m.mix(&[src(&neg), src(&neg)]).unwrap()[0];
        assert!(
            KNEE as i16 <= two_20k && two_20k < two_30k && two_30k <= nine_max,
            "{two_20k} {two_30k} {nine_max}"
        );
        assert!(nine_max > 32_000, "positive: no wrap ({nine_max})");
        assert_eq!(two_neg, -two_30k, "symmetric");
        // continuous at the knee
        assert_eq!(soft_clip(KNEE), KNEE as i16);
        assert!(soft_clip(KNEE + 100.0) - KNEE as i16 >= 98);
    }

    #[test]
    fn malformed_sources_are_refused_by_index() {
        let good = mono(1);
        let short = vec![0i16; FRAME_SAMPLES - 1];
        let mut m = Mixer::new(Channels::Stereo);
        assert!(matches!(
            m.mix(&[src(&good), src(&short)]),
            Err(Error::AudioLength { index: 1, len: 959, expected: 960, channels: 1 })
        ));
        assert!(matches!(
            m.mix(&[AudioIn { channels: 3, ..src(&good) }]),
            Err(Error::AudioChannels { index: 0, channels: 3 })
        ));
        assert!(matches!(
            m.mix(&[AudioIn { gain: f32::NAN, ..src(&good) }]),
            Err(Error::AudioGain { index: 0, .. })
        ));
        assert!(matches!(
            m.mix(&[AudioIn { gain: -1.0, ..src(&good) }]),
            Err(Error::AudioGain { index: 0, .. })
        ));
        // a stereo source of mono length
        assert!(matches!(
            m.mix(&[AudioIn { channels: 2, ..src(&good) }]),
            Err(Error::AudioLength { index: 0, expected: 1920, .. })
        ));
    }
}
