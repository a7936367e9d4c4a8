//! Active speaker detection from RFC 6464 audio levels.
//!
//! Each audio source reports levels in -dBov (0 loudest, 127 silence). Per
//! tick the mean linear amplitude is folded into an exponential average; the
//! loudest source above a floor becomes the speaker only when it beats the
//! current one by a margin for several ticks in a row (hysteresis), so a
//! cough does not flip the room's main video.

use std::sync::LazyLock;

/// Linear amplitude for each -dBov level.
static AMPLITUDE: LazyLock<[f32; 128]> = LazyLock::new(|| {
    let mut t = [0f32; 128];
    for (i, v) in t.iter_mut().enumerate() {
        *v = 10f32.powf(-(i as f32) / 20.0);
    }
    t
});

/// Linear amplitude of an RFC 6464 level in -dBov (0 loudest, 127 silence).
#[inline]
pub fn amplitude(level_dbov: u8) -> f32 {
    AMPLITUDE[usize::from(level_dbov.min(127))]
}

/// Tuning of the detector.
#[derive(Debug, Clone, Copy)]
pub struct SpeakerParams {
    /// Weight of the newest tick in the average (0..1).
    pub alpha: f32,
    /// Amplitude under which a source is silent (≈ -50 dBov).
    pub floor: f32,
    /// The challenger must be this many times louder than the speaker.
    pub margin: f32,
    /// ...for this many consecutive ticks.
    pub ticks_to_switch: u32,
}

impl Default for SpeakerParams {
    fn default() -> Self {
        SpeakerParams { alpha: 0.4, floor: 0.003, margin: 1.5, ticks_to_switch: 2 }
    }
}

#[derive(Debug, Clone)]
struct Source {
    key: u64,
    sum: f32,
    samples: u32,
    smoothed: f32,
}

/// Detector for one room; sources are keyed by participant.
#[derive(Debug, Clone, Default)]
pub struct SpeakerDetector {
    params: SpeakerParams,
    sources: Vec<Source>,
    current: Option<u64>,
    challenger: Option<(u64, u32)>,
}

impl SpeakerDetector {
    pub fn new(params: SpeakerParams) -> Self {
        SpeakerDetector { params, ..Default::default() }
    }

    pub fn current(&self) -> Option<u64> {
        self.current
    }

    /// One audio packet's level (hot path: no allocation once the source exists).
    #[inline]
    pub fn observe(&mut self, key: u64, level_dbov: u8) {
        self.observe_sum(key, amplitude(level_dbov), 1);
    }

    /// `samples` packets whose linear amplitudes ([`amplitude`]) add up to
    /// `sum`: the engine accumulates per track on the hot path and folds here
    /// once per tick.
    pub fn observe_sum(&mut self, key: u64, sum: f32, samples: u32) {
        if samples == 0 {
            return;
        }
        if let Some(s) = self.sources.iter_mut().find(|s| s.key == key) {
            s.sum += sum;
            s.samples += samples;
        } else {
            self.sources.push(Source { key, sum, samples, smoothed: 0.0 });
        }
    }

    /// A source left: forget it (and the speaker, if it was them).
    pub fn remove(&mut self, key: u64) -> Option<Option<u64>> {
        self.sources.retain(|s| s.key != key);
        if self.challenger.map(|c| c.0) == Some(key) {
            self.challenger = None;
        }
        if self.current == Some(key) {
            self.current = None;
            return Some(None);
        }
        None
    }

    /// Fold this tick's samples; `Some(new)` when the speaker changed.
    pub fn tick(&mut self) -> Option<Option<u64>> {
        let p = self.params;
        let mut loudest: Option<(u64, f32)> = None;
        let mut current_level = 0.0;
        for s in &mut self.sources {
            let avg = if s.samples > 0 { s.sum / s.samples as f32 } else { 0.0 };
            s.smoothed = (1.0 - p.alpha) * s.smoothed + p.alpha * avg;
            s.sum = 0.0;
            s.samples = 0;
            if Some(s.key) == self.current {
                current_level = s.smoothed;
            }
            if s.smoothed >= p.floor && loudest.is_none_or(|(_, l)| s.smoothed > l) {
                loudest = Some((s.key, s.smoothed));
            }
        }
        let (key, level) = loudest?;
        if Some(key) == self.current {
            self.challenger = None;
            return None;
        }
        if self.current.is_none() || current_level < p.floor * 0.5 {
            // nobody (audible) holds the floor: take it at once
            self.current = Some(key);
            self.challenger = None;
            return Some(Some(key));
        }
        if level < current_level * p.margin {
            self.challenger = None;
            return None;
        }
        let n = match self.challenger {
            Some((k, n)) if k == key => n + 1,
            _ => 1,
        };
        if n >= p.ticks_to_switch {
            self.current = Some(key);
            self.challenger = None;
            Some(Some(key))
        } else {
            self.challenger = Some((key, n));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut SpeakerDetector, key: u64, level: u8, n: usize) {
        for _ in 0..n {
            d.observe(key, level);
        }
    }

    #[test]
    fn loudest_wins_with_hysteresis() {
        let mut d = SpeakerDetector::new(SpeakerParams::default());
        feed(&mut d, 1, 20, 10);
        feed(&mut d, 2, 60, 10);
        assert_eq!(d.tick(), Some(Some(1)));
        // one loud tick from 2 is not enough
        feed(&mut d, 1, 30, 10);
        feed(&mut d, 2, 5, 10);
        assert_eq!(d.tick(), None);
        // the second in a row is
        feed(&mut d, 1, 40, 10);
        feed(&mut d, 2, 5, 10);
        assert_eq!(d.tick(), Some(Some(2)));
        // a brief blip from 1 does not switch back
        feed(&mut d, 1, 5, 10);
        feed(&mut d, 2, 5, 10);
        assert_eq!(d.tick(), None);
        assert_eq!(d.current(), Some(2));
    }

    #[test]
    fn silence_keeps_the_last_speaker_and_leaving_clears_it() {
        let mut d = SpeakerDetector::new(SpeakerParams::default());
        feed(&mut d, 7, 10, 5);
        assert_eq!(d.tick(), Some(Some(7)));
        for _ in 0..10 {
            feed(&mut d, 7, 127, 5);
            assert_eq!(d.tick(), None);
        }
        assert_eq!(d.current(), Some(7));
        assert_eq!(d.remove(7), Some(None));
    }
}
