//! The forwarder *decides*: which simulcast layer a subscriber gets, when a
//! switch may happen (only on a keyframe of the target layer), when video
//! pauses, and when a keyframe must be asked for. The down-track
//! ([`super::rewrite`]) *does*.
//!
//! Three pieces, all sans-IO and on the caller's clock:
//!
//! * [`LinkEstimate`]: one subscriber's downlink as str0m sees it — its
//!   smoothed send-side estimate (TWCC, the `EgressBitrateEstimate` event,
//!   averaged over 3 s), the raw estimate and the TWCC loss of the last
//!   second (its statistics). The budget follows the raw estimate down at
//!   once and the smoothed one up, so a squeeze is seen within a statistics
//!   interval and a probe's spike is not trusted alone.
//! * [`LayerPolicy`]: per down-track, the layer to aim for from the track's
//!   share of that budget, the *measured* layer bitrates and the wanted tile
//!   size, with hysteresis: up only when the layer fits with a margin for a
//!   while and no sooner than a hold time after the last step down (a hold
//!   that doubles when a climb had to be taken back soon); down at once when
//!   the current layer no longer fits; the size thresholds have a margin too.
//! * [`LayerSelector`]: per packet, forward / drop / switch. A switch (up or
//!   down) only happens at a keyframe of the target layer; until then the
//!   current layer keeps flowing — unless the step down is urgent (the link
//!   carries clearly less than what flows, or the send queue backs up), then
//!   the current layer stops at the end of its frame and video pauses until
//!   the keyframe: a picture that stands still briefly rather than one that
//!   freezes mid-GOP behind a growing queue.

use std::time::{Duration, Instant};

/// Number of simulcast layers the SFU handles (rids lowest first).
pub const MAX_LAYERS: usize = 3;

/// What to do with one incoming video packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not for this subscriber (another layer, paused, or waiting for a keyframe).
    Drop,
    /// Forward on the current source.
    Forward,
    /// Switch the down-track to this packet's layer, starting at this packet.
    Switch,
}

/// Per-subscriber layer state of one simulcast (or single-layer) track.
#[derive(Debug, Clone, Default)]
pub struct LayerSelector {
    current: Option<usize>,
    target: Option<usize>,
    /// Stop the current layer at the end of its frame (an urgent step down).
    pausing: bool,
    /// The last forwarded packet did not end its frame.
    mid_frame: bool,
}

impl LayerSelector {
    /// The layer being forwarded (`None`: nothing, waiting for a keyframe).
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The layer this subscriber should get (`None`: video paused).
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// Set the layer this subscriber should get. The current layer keeps
    /// flowing until the target's keyframe.
    pub fn set_target(&mut self, layer: Option<usize>) {
        if self.target != layer {
            self.pausing = false;
        }
        self.target = layer;
    }

    /// Set the target and stop the current layer at the end of its frame:
    /// nothing flows until the target's keyframe (or at all, for `None`).
    pub fn set_target_urgent(&mut self, layer: Option<usize>) {
        self.target = layer;
        self.pausing = self.current.is_some() && self.current != layer;
    }

    /// Force a new start (source changed, resumed after mute): the next
    /// forwarded packet must be a keyframe of the target.
    pub fn reset(&mut self) {
        self.current = None;
        self.pausing = false;
        self.mid_frame = false;
    }

    /// The layer a keyframe is needed on, while a switch is pending.
    pub fn wants_keyframe(&self) -> Option<usize> {
        match (self.current, self.target) {
            (c, Some(t)) if c != Some(t) => Some(t),
            _ => None,
        }
    }

    /// Decide for a packet of `layer` (`marker`: it ends its frame).
    /// Switching (up or down) happens only at a keyframe of the target
    /// layer; until then the current layer keeps flowing, or stops at a
    /// frame boundary when the step down is urgent.
    #[inline]
    pub fn decide(&mut self, layer: usize, keyframe: bool, marker: bool) -> Decision {
        if self.target == Some(layer) && self.current != Some(layer) {
            if keyframe {
                self.current = Some(layer);
                self.pausing = false;
                self.mid_frame = !marker;
                return Decision::Switch;
            }
            return Decision::Drop;
        }
        if self.current != Some(layer) {
            return Decision::Drop;
        }
        if self.pausing && !self.mid_frame {
            // a new frame of the layer we leave: stop here, at a clean boundary
            self.current = None;
            self.pausing = false;
            return Decision::Drop;
        }
        self.mid_frame = !marker;
        Decision::Forward
    }
}

/// The layer that fits a wanted tile width, for a track with `layers` layers
/// (lowest first; each layer is assumed to double the one below, the usual
/// ¼, ½, full scaling).
pub fn layer_for_size(layers: usize, full_width: Option<u32>, wanted_width: Option<u32>) -> usize {
    let top = layers.saturating_sub(1);
    let Some(w) = wanted_width else { return top };
    let full = full_width.unwrap_or(1280).max(1);
    for l in 0..=top {
        let shift = (top - l) as u32;
        let layer_w = full >> shift;
        if layer_w >= w {
            return l;
        }
    }
    top
}

/// Margin around the size thresholds: a tile must be this much wider than a
/// layer to leave it for the next one up, and this much narrower than the
/// layer below to step down.
pub const SIZE_MARGIN: f64 = 0.15;

/// [`layer_for_size`] with hysteresis around the thresholds, given the layer
/// chosen for the size before. The same size always keeps the same layer,
/// and a tile that wobbles around a threshold does not flip it.
pub fn layer_for_size_stable(
    layers: usize,
    full_width: Option<u32>,
    wanted: Option<u32>,
    previous: Option<usize>,
) -> usize {
    let plain = layer_for_size(layers, full_width, wanted);
    let (Some(prev), Some(w)) = (previous, wanted) else { return plain };
    let top = layers.saturating_sub(1);
    let prev = prev.min(top);
    let full = f64::from(full_width.unwrap_or(1280).max(1));
    let width_of = |l: usize| full / f64::from(1u32 << (top - l) as u32);
    let w = f64::from(w);
    if plain > prev {
        // up only when clearly wider than what the current layer shows
        if w > width_of(prev) * (1.0 + SIZE_MARGIN) { plain } else { prev }
    } else if plain < prev {
        // down only when clearly narrower than the layer below shows
        if w < width_of(prev - 1) * (1.0 - SIZE_MARGIN) { plain } else { prev }
    } else {
        prev
    }
}

/// The highest layer `<= max` whose bitrate fits `budget_bps`; the lowest
/// active layer when none fits. `bitrates[l]` is the measured rate of layer l
/// (0 when it is not flowing).
pub fn layer_for_budget(bitrates: &[u64], max: usize, budget_bps: u64) -> Option<usize> {
    let mut lowest_active = None;
    let mut best = None;
    for (l, &bps) in bitrates.iter().enumerate().take(max + 1) {
        if bps == 0 {
            continue;
        }
        if lowest_active.is_none() {
            lowest_active = Some(l);
        }
        if bps <= budget_bps {
            best = Some(l);
        }
    }
    best.or(lowest_active)
}

/// How eagerly layers change. The defaults suit a conference: a step down
/// within a statistics interval, a step up after a second of headroom.
#[derive(Debug, Clone, Copy)]
pub struct LayerTuning {
    /// Go up only when the layer's rate times this fits the share.
    pub up_margin: f64,
    /// ... continuously for this long.
    pub up_dwell: Duration,
    /// No step up this long after a step down (doubled when a step up had
    /// to be taken back within twice the hold, up to `max_hold`).
    pub hold: Duration,
    pub max_hold: Duration,
    /// A step down is urgent (the current layer stops at its frame's end)
    /// when the share is below this fraction of the current layer's rate.
    pub urgent_below: f64,
    /// Video pauses when the share is below this fraction of the lowest
    /// layer's rate, and resumes when that layer fits with `up_margin`.
    pub pause_below: f64,
    /// After a step up, loss alone does not count as congestion this long
    /// (the new layer starts with a keyframe, a burst).
    pub climb_grace: Duration,
}

impl Default for LayerTuning {
    fn default() -> Self {
        LayerTuning {
            up_margin: 1.3,
            up_dwell: Duration::from_secs(1),
            hold: Duration::from_secs(4),
            max_hold: Duration::from_secs(32),
            urgent_below: 0.8,
            pause_below: 0.5,
            climb_grace: Duration::from_millis(1500),
        }
    }
}

/// A step up needs no dwell when the share holds this many times the layer.
const PLENTY: f64 = 2.5;

/// What [`LayerPolicy::choose`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The layer to aim for (`None`: pause video).
    pub target: Option<usize>,
    /// Stop the current layer now (at its frame's end) rather than let it
    /// flow until the target's keyframe.
    pub urgent: bool,
    /// The next layer up this track would take if the link allowed: worth
    /// probing for (its hold has expired).
    pub probe_for: Option<usize>,
}

/// The memory behind one down-track's layer choice.
#[derive(Debug, Clone, Default)]
pub struct LayerPolicy {
    target: Option<usize>,
    size_layer: Option<usize>,
    up_since: Option<Instant>,
    hold_until: Option<Instant>,
    hold: Duration,
    last_up: Option<Instant>,
}

impl LayerPolicy {
    /// The layer the wanted size allows (with hysteresis).
    pub fn size_cap(&mut self, layers: usize, wanted_width: Option<u32>) -> usize {
        let l = layer_for_size_stable(layers, None, wanted_width, self.size_layer);
        self.size_layer = Some(l);
        l
    }

    /// Forget the past (a new source track).
    pub fn reset(&mut self) {
        *self = LayerPolicy::default();
    }

    /// The layer last chosen.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// Choose a layer `<= max` for a track whose layers measure `rates`
    /// (bits/s, 0 when a layer does not flow) given its `share` of the
    /// downlink. `congested`: the send queue backs up or loss is high — the
    /// estimate has not caught up with the link yet — so the step goes
    /// straight to the lowest layer, urgently.
    pub fn choose(
        &mut self,
        now: Instant,
        t: &LayerTuning,
        rates: &[u64],
        max: usize,
        share: u64,
        congested: bool,
    ) -> Choice {
        let max = max.min(rates.len().saturating_sub(1));
        let active = |l: usize| rates.get(l).is_some_and(|r| *r > 0);
        let Some(lowest) = (0..=max).find(|l| active(*l)).or_else(|| (0..rates.len()).find(|l| active(*l)))
        else {
            // nothing measured yet: the lowest layer, no decision remembered
            return Choice { target: Some(0), urgent: false, probe_for: None };
        };
        let fits = |l: usize, margin: f64| (rates[l] as f64) * margin <= share as f64;
        let best_fit = |margin: f64| (lowest..=max).rev().find(|l| active(*l) && fits(*l, margin));
        let held = self.hold_until.is_some_and(|h| now < h);
        let mut urgent = false;

        let next = match self.target {
            // first choice: what fits now, no margin
            None if self.hold_until.is_none() && self.last_up.is_none() => {
                if (rates[lowest] as f64) * t.pause_below > share as f64 {
                    None
                } else {
                    Some(best_fit(1.0).unwrap_or(lowest))
                }
            }
            // paused: resume on the lowest layer once it fits with the margin for a while
            None => {
                if !held && fits(lowest, t.up_margin) && self.dwelled(now, t) {
                    self.last_up = Some(now);
                    Some(lowest)
                } else {
                    if !fits(lowest, t.up_margin) {
                        self.up_since = None;
                    }
                    None
                }
            }
            Some(cur) => {
                let cur = if active(cur) { cur.min(max) } else { best_fit(1.0).unwrap_or(lowest) };
                if (rates[lowest] as f64) * t.pause_below > share as f64 {
                    // not even the lowest layer: pause video
                    self.step_down(now, t);
                    urgent = true;
                    None
                } else if congested && cur > lowest && !self.just_climbed(now, t) {
                    // loss or a backed-up queue: the estimate lags the link, go to the bottom now
                    self.step_down(now, t);
                    urgent = true;
                    Some(lowest)
                } else if !fits(cur, 1.0) {
                    let down = (lowest..cur).rev().find(|l| active(*l) && fits(*l, 1.0)).unwrap_or(lowest);
                    if down < cur {
                        self.step_down(now, t);
                        urgent = congested || (share as f64) < (rates[cur] as f64) * t.urgent_below;
                    }
                    Some(down)
                } else {
                    match best_fit(t.up_margin).filter(|l| *l > cur) {
                        Some(up) if !held => {
                            // plenty of room (a layer that just started, a local
                            // subscriber): no need to watch the estimate first
                            if fits(up, PLENTY) || self.dwelled(now, t) {
                                self.last_up = Some(now);
                                self.up_since = None;
                                Some(up)
                            } else {
                                Some(cur)
                            }
                        }
                        _ => {
                            self.up_since = None;
                            Some(cur)
                        }
                    }
                }
            }
        };
        self.target = next;
        // pad the link towards the next layer only once this one has settled
        let settled = !held && self.last_up.is_none_or(|u| now.saturating_duration_since(u) >= t.hold);
        let probe_for = match next {
            Some(c) if settled && c < max => ((c + 1)..=max).find(|l| active(*l)),
            None if settled => Some(lowest),
            _ => None,
        };
        Choice { target: next, urgent, probe_for }
    }

    /// Within the grace after a step up: the new layer's keyframe is a
    /// burst that may cost a little loss; only the estimate may undo the step.
    fn just_climbed(&self, now: Instant, t: &LayerTuning) -> bool {
        self.last_up.is_some_and(|u| now.saturating_duration_since(u) < t.climb_grace)
    }

    fn dwelled(&mut self, now: Instant, t: &LayerTuning) -> bool {
        let since = *self.up_since.get_or_insert(now);
        now.saturating_duration_since(since) >= t.up_dwell
    }

    fn step_down(&mut self, now: Instant, t: &LayerTuning) {
        // a climb taken back soon: wait longer before the next one
        let recent_up =
            self.last_up.is_some_and(|u| now.saturating_duration_since(u) < self.hold.max(t.hold) * 2);
        self.hold = if recent_up { (self.hold.max(t.hold) * 2).min(t.max_hold) } else { t.hold };
        self.hold_until = Some(now + self.hold);
        self.up_since = None;
    }
}

/// One subscriber's downlink as str0m's send-side estimator sees it.
#[derive(Debug, Clone)]
pub struct LinkEstimate {
    smoothed: u64,
    raw: Option<(u64, Instant)>,
    loss: f32,
    loss_at: Option<Instant>,
    /// Loss since the previous figure, derived from two one-second ones.
    recent_loss: f32,
}

/// A raw estimate or loss figure older than this is not used.
const FRESH: Duration = Duration::from_secs(3);
/// The window of str0m's TWCC loss figure.
const LOSS_WINDOW: Duration = Duration::from_secs(1);

impl LinkEstimate {
    /// Starting from the configured initial estimate.
    pub fn new(initial_bps: u64) -> Self {
        LinkEstimate { smoothed: initial_bps, raw: None, loss: 0.0, loss_at: None, recent_loss: 0.0 }
    }

    /// str0m's (smoothed) estimate event.
    pub fn on_estimate(&mut self, bps: u64) {
        self.smoothed = bps;
    }

    /// str0m's statistics: the raw estimate and the TWCC loss of the last second.
    pub fn on_stats(&mut self, now: Instant, raw_bps: Option<u64>, loss: Option<f32>) {
        if let Some(r) = raw_bps {
            self.raw = Some((r, now));
        }
        if let Some(l) = loss {
            let l = l.clamp(0.0, 1.0);
            // str0m's figure covers the last second; its change since the
            // previous figure tells what the last interval alone lost
            // (assuming a steady packet rate), so a squeeze shows at once
            self.recent_loss = match self.loss_at.map(|t| now.saturating_duration_since(t)) {
                Some(dt) if dt >= Duration::from_millis(50) && dt < LOSS_WINDOW => {
                    let k = LOSS_WINDOW.as_secs_f32() / dt.as_secs_f32();
                    (l + (l - self.loss) * k).clamp(0.0, 1.0)
                }
                _ => l,
            };
            self.loss = l;
            self.loss_at = Some(now);
        }
    }

    /// The smoothed estimate (what `connection_quality` reports).
    pub fn smoothed(&self) -> u64 {
        self.smoothed
    }

    /// What the downlink can carry now: the lower of the smoothed and the
    /// (fresh) raw estimate, so it falls at once and rises with the average.
    pub fn budget(&self, now: Instant) -> u64 {
        match self.raw {
            Some((r, at)) if now.saturating_duration_since(at) <= FRESH => self.smoothed.min(r),
            _ => self.smoothed,
        }
    }

    /// Loss over the last second (0 when unknown or stale).
    pub fn loss(&self, now: Instant) -> f32 {
        match self.loss_at {
            Some(at) if now.saturating_duration_since(at) <= FRESH => self.loss,
            _ => 0.0,
        }
    }

    /// Loss over the last statistics interval alone (0 when unknown or stale).
    pub fn recent_loss(&self, now: Instant) -> f32 {
        match self.loss_at {
            Some(at) if now.saturating_duration_since(at) <= FRESH => self.recent_loss,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_only_on_a_keyframe_of_the_target() {
        let mut s = LayerSelector::default();
        s.set_target(Some(0));
        assert_eq!(s.decide(0, false, true), Decision::Drop, "nothing before the first keyframe");
        assert_eq!(s.decide(0, true, true), Decision::Switch);
        assert_eq!(s.decide(0, false, true), Decision::Forward);
        assert_eq!(s.decide(2, false, true), Decision::Drop);
        s.set_target(Some(2));
        assert_eq!(s.wants_keyframe(), Some(2));
        assert_eq!(s.decide(2, false, true), Decision::Drop, "no switch on a delta frame");
        assert_eq!(s.decide(0, false, true), Decision::Forward, "old layer flows until the switch");
        assert_eq!(s.decide(2, true, true), Decision::Switch);
        assert_eq!(s.decide(0, false, true), Decision::Drop);
        assert_eq!(s.wants_keyframe(), None);
    }

    #[test]
    fn an_urgent_step_down_stops_the_current_layer_at_its_frame_end() {
        let mut s = LayerSelector::default();
        s.set_target(Some(2));
        assert_eq!(s.decide(2, true, false), Decision::Switch);
        assert_eq!(s.decide(2, false, false), Decision::Forward);
        s.set_target_urgent(Some(0));
        // the frame in flight is finished, so the receiver never holds half a frame
        assert_eq!(s.decide(2, false, true), Decision::Forward);
        assert_eq!(s.decide(2, false, false), Decision::Drop, "the next frame of f does not start");
        assert_eq!(s.current(), None);
        assert_eq!(s.decide(2, false, true), Decision::Drop);
        assert_eq!(s.wants_keyframe(), Some(0));
        assert_eq!(s.decide(0, false, true), Decision::Drop);
        assert_eq!(s.decide(0, true, true), Decision::Switch);
        assert_eq!(s.decide(0, false, true), Decision::Forward);
        // urgent to nothing: video pauses at the frame end and stays paused
        s.set_target_urgent(None);
        assert_eq!(s.decide(0, false, true), Decision::Drop);
        assert_eq!(s.decide(0, true, true), Decision::Drop);
        assert_eq!(s.wants_keyframe(), None);
    }

    #[test]
    fn size_and_budget_pick_layers() {
        assert_eq!(layer_for_size(3, Some(1280), Some(320)), 0);
        assert_eq!(layer_for_size(3, Some(1280), Some(600)), 1);
        assert_eq!(layer_for_size(3, Some(1280), Some(1280)), 2);
        assert_eq!(layer_for_size(3, Some(1280), None), 2);
        assert_eq!(layer_for_size(1, None, Some(100)), 0);
        assert_eq!(layer_for_budget(&[150_000, 500_000, 1_500_000], 2, 800_000), Some(1));
        assert_eq!(layer_for_budget(&[150_000, 500_000, 1_500_000], 2, 10_000), Some(0));
        assert_eq!(layer_for_budget(&[0, 500_000, 1_500_000], 2, 10_000), Some(1));
        assert_eq!(layer_for_budget(&[150_000, 500_000, 1_500_000], 0, 9_000_000), Some(0));
        assert_eq!(layer_for_budget(&[0, 0, 0], 2, 9_000_000), None);
    }

    /// A 628 px tile next to the 640 px threshold of `h` keeps one layer, and
    /// a tile that wobbles by a few pixels around a threshold does not flip it.
    #[test]
    fn the_size_layer_is_stable_around_its_thresholds() {
        let mut prev = None;
        for w in [628, 628, 650, 628, 660, 700, 690, 640, 600] {
            let l = layer_for_size_stable(3, None, Some(w), prev);
            assert_eq!(l, 1, "{w} px keeps h");
            prev = Some(l);
        }
        assert_eq!(layer_for_size_stable(3, None, Some(740), prev), 2, "clearly wider: f");
        assert_eq!(layer_for_size_stable(3, None, Some(630), Some(2)), 2, "just under the threshold keeps f");
        assert_eq!(layer_for_size_stable(3, None, Some(540), Some(2)), 1, "clearly narrower: h");
        // the same size, asked again and again, gives the same layer
        for prev in [None, Some(0), Some(1), Some(2)] {
            let a = layer_for_size_stable(3, None, Some(628), prev);
            assert_eq!(layer_for_size_stable(3, None, Some(628), Some(a)), a);
        }
    }

    const RATES: [u64; 3] = [160_000, 520_000, 1_560_000];

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Steps a policy every 200 ms over `(duration, share)` phases; returns the targets seen.
    fn drive(p: &mut LayerPolicy, t0: Instant, phases: &[(u64, u64)]) -> Vec<(u64, Option<usize>, bool)> {
        let t = LayerTuning::default();
        let mut out = Vec::new();
        let mut at = 0;
        for (dur, share) in phases {
            let end = at + dur;
            while at < end {
                let c = p.choose(t0 + ms(at), &t, &RATES, 2, *share, false);
                if out.last().is_none_or(|x: &(u64, Option<usize>, bool)| x.1 != c.target) {
                    out.push((at, c.target, c.urgent));
                }
                at += 200;
            }
        }
        out
    }

    #[test]
    fn down_at_once_up_after_a_dwell_and_never_during_the_hold() {
        let t0 = Instant::now();
        let mut p = LayerPolicy::default();
        // plenty, then a squeeze to 400 k, then plenty again
        let seen = drive(&mut p, t0, &[(3000, 3_000_000), (10_000, 400_000), (20_000, 3_000_000)]);
        assert_eq!(seen[0], (0, Some(2), false));
        assert_eq!(seen[1], (3000, Some(0), true), "straight to the layer that fits, urgently: {seen:?}");
        // back up only after the hold (4 s after the step down) and a 1 s dwell
        assert_eq!(seen[2].1, Some(2), "{seen:?}");
        assert!(seen[2].0 >= 13_000 + 1000, "{seen:?}");
        assert_eq!(seen.len(), 3, "no flapping: {seen:?}");
    }

    #[test]
    fn a_share_between_two_layers_does_not_flap() {
        let t0 = Instant::now();
        let mut p = LayerPolicy::default();
        // a share that wobbles around h's rate: h fits sometimes, never with the margin
        let mut phases = vec![(1000, 3_000_000)];
        for i in 0..40 {
            phases.push((400, if i % 2 == 0 { 540_000 } else { 610_000 }));
        }
        let seen = drive(&mut p, t0, &phases);
        let changes: Vec<_> = seen.iter().skip(1).collect();
        assert!(changes.len() <= 2, "{seen:?}");
    }

    #[test]
    fn a_climb_taken_back_doubles_the_hold() {
        let t0 = Instant::now();
        let mut p = LayerPolicy::default();
        // the link looks good after each hold, but cannot carry f: every climb is taken back
        let mut phases = vec![(1000, 3_000_000)];
        for _ in 0..6 {
            phases.push((200, 400_000));
            phases.push((12_000, 3_000_000));
        }
        let seen = drive(&mut p, t0, &phases);
        let ups: Vec<u64> = seen.windows(2).filter(|w| w[1].1 > w[0].1).map(|w| w[1].0).collect();
        let downs: Vec<u64> = seen.windows(2).filter(|w| w[1].1 < w[0].1).map(|w| w[1].0).collect();
        let gaps: Vec<u64> = downs.iter().zip(ups.iter()).map(|(d, u)| u - d).collect();
        assert!(gaps.windows(2).any(|w| w[1] > w[0]), "holds grow: {gaps:?} ({seen:?})");
    }

    #[test]
    fn video_pauses_when_not_even_the_lowest_layer_fits_and_resumes() {
        let t0 = Instant::now();
        let mut p = LayerPolicy::default();
        let seen = drive(&mut p, t0, &[(1000, 3_000_000), (5000, 60_000), (10_000, 400_000)]);
        assert_eq!(seen[1], (1000, None, true), "{seen:?}");
        assert_eq!(seen[2].1, Some(0), "resumes on q: {seen:?}");
        assert!(seen[2].0 >= 1000 + 4000, "after the hold: {seen:?}");
    }

    #[test]
    fn the_link_budget_falls_at_once_and_rises_with_the_average() {
        let t0 = Instant::now();
        let mut l = LinkEstimate::new(1_500_000);
        l.on_estimate(2_000_000);
        l.on_stats(t0, Some(2_100_000), Some(0.0));
        assert_eq!(l.budget(t0), 2_000_000);
        l.on_stats(t0 + ms(250), Some(300_000), Some(0.4));
        assert_eq!(l.budget(t0 + ms(250)), 300_000, "the raw estimate collapsed");
        assert!((l.loss(t0 + ms(250)) - 0.4).abs() < 1e-6);
        assert!(
            l.recent_loss(t0 + ms(250)) > 0.9,
            "0 to 40 % of a second in 250 ms: the last 250 ms lost nearly all"
        );
        l.on_stats(t0 + ms(500), Some(3_000_000), Some(0.0));
        assert_eq!(l.recent_loss(t0 + ms(500)), 0.0);
        assert_eq!(l.budget(t0 + ms(500)), 2_000_000, "a raw spike waits for the average");
        assert_eq!(l.budget(t0 + ms(10_000)), 2_000_000, "stale raw figures are ignored");
    }
}
