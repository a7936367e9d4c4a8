//! The forwarder *decides*: which simulcast layer a subscriber gets, when a
//! switch may happen (only on a keyframe of the target layer), and when a
//! keyframe must be asked for. The down-track ([`super::rewrite`]) *does*.

/// Number of simulcast layers the SFU handles (rids lowest first).
pub const MAX_LAYERS: usize = 3;

/// What to do with one incoming video packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not for this subscriber (another layer, or waiting for a keyframe).
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
}

impl LayerSelector {
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// Set the layer this subscriber should get.
    pub fn set_target(&mut self, layer: Option<usize>) {
        self.target = layer;
    }

    /// Force a new start (source changed, resumed after mute): the next
    /// forwarded packet must be a keyframe of the target.
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// The layer a keyframe is needed on, while a switch is pending.
    pub fn wants_keyframe(&self) -> Option<usize> {
        match (self.current, self.target) {
            (c, Some(t)) if c != Some(t) => Some(t),
            _ => None,
        }
    }

    /// Decide for a packet of `layer`. Switching (up or down) happens only at a
    /// keyframe of the target layer; until then the current layer keeps flowing.
    #[inline]
    pub fn decide(&mut self, layer: usize, keyframe: bool) -> Decision {
        if self.target == Some(layer) && self.current != Some(layer) {
            if keyframe {
                self.current = Some(layer);
                return Decision::Switch;
            }
            return Decision::Drop;
        }
        if self.current == Some(layer) { Decision::Forward } else { Decision::Drop }
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

/// The highest layer `<= max` whose bitrate fits `budget_bps`; the lowest
/// active layer when none fits (video pauses only when nothing flows).
/// `bitrates[l]` is the measured rate of layer l (0 when it is not flowing).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_only_on_a_keyframe_of_the_target() {
        let mut s = LayerSelector::default();
        s.set_target(Some(0));
        assert_eq!(s.decide(0, false), Decision::Drop, "nothing before the first keyframe");
        assert_eq!(s.decide(0, true), Decision::Switch);
        assert_eq!(s.decide(0, false), Decision::Forward);
        assert_eq!(s.decide(2, false), Decision::Drop);
        s.set_target(Some(2));
        assert_eq!(s.wants_keyframe(), Some(2));
        assert_eq!(s.decide(2, false), Decision::Drop, "no switch on a delta frame");
        assert_eq!(s.decide(0, false), Decision::Forward, "old layer flows until the switch");
        assert_eq!(s.decide(2, true), Decision::Switch);
        assert_eq!(s.decide(0, false), Decision::Drop);
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
}
