//! The button-and-lights logic, sans IO: levels and room state in (with `now`), actions and LED
//! levels out. No pins, threads or clocks in here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::board::GpioProfile;

/// Timing of the panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanelConfig {
    /// A level must hold this long to count (contact bounce is shorter).
    pub debounce: Duration,
    /// Holding the button this long is a long press (privacy mode).
    pub long_press: Duration,
    /// The recording LED is on this long, then off this long.
    pub blink: Duration,
}

impl Default for PanelConfig {
    fn default() -> Self {
        PanelConfig {
            debounce: Duration::from_millis(30),
            long_press: Duration::from_millis(2000),
            blink: Duration::from_millis(500),
        }
    }
}

impl PanelConfig {
    /// The timing a board profile's `[gpio]` section gives.
    pub fn from_profile(g: &GpioProfile) -> PanelConfig {
        PanelConfig {
            debounce: Duration::from_millis(g.debounce_ms.into()),
            long_press: Duration::from_millis(g.long_press_ms.into()),
            blink: Duration::from_millis(g.blink_ms.into()),
        }
    }
}

/// What the room is doing, as far as the panel shows it. The daemon sends it whenever it changes,
/// whoever changed it (this button, the web client, an admin, the fleet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoomState {
    /// The room microphone is muted.
    pub mic_muted: bool,
    /// The room camera is off (privacy slate).
    pub camera_off: bool,
    /// A meeting is on.
    pub live: bool,
    /// The meeting is being recorded.
    pub recording: bool,
}

impl RoomState {
    /// Privacy mode: microphone and camera both off.
    pub fn privacy(&self) -> bool {
        self.mic_muted && self.camera_off
    }
}

/// What the button asks the room to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PanelAction {
    /// Short press outside privacy mode: flip the microphone mute. `muted` is the new value,
    /// computed from the last room state the panel saw (so two presses never ask for the same).
    ToggleMute {
        /// The microphone's new state.
        muted: bool,
    },
    /// Long press: microphone and camera off.
    EnterPrivacy,
    /// Any press in privacy mode: microphone and camera back on.
    ExitPrivacy,
}

/// The three LEDs (true = lit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Leds {
    /// The microphone is muted (also in privacy mode).
    pub muted: bool,
    /// A meeting is on.
    pub live: bool,
    /// Recording: blinks.
    pub recording: bool,
}

/// The state machine. Feed it button levels ([`Panel::handle_button`]), room states
/// ([`Panel::handle_room`]) and timeouts ([`Panel::handle_timeout`]); take actions with
/// [`Panel::poll_action`] and LED levels with [`Panel::leds`]; wake it at
/// [`Panel::poll_timeout`] at the latest.
///
/// ```
/// use std::time::{Duration, Instant};
/// use roombox::gpio::{Panel, PanelAction, PanelConfig};
///
/// let mut panel = Panel::new(PanelConfig::default());
/// let t0 = Instant::now();
/// let ms = |n| t0 + Duration::from_millis(n);
/// panel.handle_button(true, ms(0));    // pressed (bounces would reset the clock)
/// panel.handle_timeout(ms(30));        // held for the debounce time: a press
/// panel.handle_button(false, ms(200)); // released
/// panel.handle_timeout(ms(230));       // held released: a short press
/// assert_eq!(panel.poll_action(), Some(PanelAction::ToggleMute { muted: true }));
/// assert!(panel.leds(ms(230)).muted);  // lit at once; the room's state confirms it
/// ```
#[derive(Debug)]
pub struct Panel {
    cfg: PanelConfig,
    /// The last sampled level and since when the samples have shown it.
    raw: bool,
    raw_since: Option<Instant>,
    /// The debounced level.
    pressed: bool,
    /// When the current debounced press began (the first instant of the stable level).
    press_started: Option<Instant>,
    /// The current press has already fired its long-press action.
    long_fired: bool,
    /// The room as the panel believes it is: the last room state, plus what the panel's own
    /// actions changed since.
    room: RoomState,
    recording_since: Option<Instant>,
    last_now: Option<Instant>,
    actions: VecDeque<PanelAction>,
}

impl Panel {
    /// A panel with the button released and the room idle.
    pub fn new(cfg: PanelConfig) -> Panel {
        Panel {
            cfg,
            raw: false,
            raw_since: None,
            pressed: false,
            press_started: None,
            long_fired: false,
            room: RoomState::default(),
            recording_since: None,
            last_now: None,
            actions: VecDeque::new(),
        }
    }

    /// The timing this panel runs with.
    pub fn config(&self) -> PanelConfig {
        self.cfg
    }

    /// A sample (or an edge) of the button: `pressed` is the logical level (polarity already
    /// applied).
    pub fn handle_button(&mut self, pressed: bool, now: Instant) {
        self.last_now = Some(now);
        if pressed != self.raw || self.raw_since.is_none() {
            self.raw = pressed;
            self.raw_since = Some(now);
        }
        self.advance(now);
    }

    /// The room's state changed (or is re-announced).
    pub fn handle_room(&mut self, state: RoomState, now: Instant) {
        self.last_now = Some(now);
        if state.recording && !self.room.recording {
            self.recording_since = Some(now);
        } else if !state.recording {
            self.recording_since = None;
        }
        self.room = state;
        self.advance(now);
    }

    /// Time passed without input.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        self.advance(now);
    }

    /// The next action for the room, if any.
    pub fn poll_action(&mut self) -> Option<PanelAction> {
        self.actions.pop_front()
    }

    /// When the panel next changes on its own (a level settles, a long press matures, the
    /// recording LED toggles). `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(since) = self.raw_since
            && self.raw != self.pressed
        {
            consider(since + self.cfg.debounce);
        }
        if let (true, false, Some(start)) = (self.pressed, self.long_fired, self.press_started) {
            consider(start + self.cfg.long_press);
        }
        if let (Some(since), Some(now)) = (self.recording_since, self.last_now) {
            let half = self.cfg.blink.as_nanos().max(1);
            let phases = now.saturating_duration_since(since).as_nanos() / half + 1;
            let offset = Duration::from_nanos(u64::try_from(phases * half).unwrap_or(u64::MAX));
            consider(since + offset);
        }
        next
    }

    /// The LED levels at `now`.
    pub fn leds(&self, now: Instant) -> Leds {
        let recording = match self.recording_since {
            Some(since) if self.room.recording => {
                let half = self.cfg.blink.as_nanos().max(1);
                (now.saturating_duration_since(since).as_nanos() / half).is_multiple_of(2)
            }
            _ => false,
        };
        Leds { muted: self.room.mic_muted, live: self.room.live, recording }
    }

    /// The room as the panel believes it is.
    pub fn room(&self) -> RoomState {
        self.room
    }

    /// The debounced button level.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    fn advance(&mut self, now: Instant) {
        // Debounce: a new level counts once it has held for `debounce`; it counts from the
        // instant it first appeared, so long-press timing does not include the debounce delay.
        if let Some(since) = self.raw_since
            && self.raw != self.pressed
            && now.saturating_duration_since(since) >= self.cfg.debounce
        {
            self.pressed = self.raw;
            if self.pressed {
                self.press_started = Some(since);
                self.long_fired = false;
            } else {
                if !self.long_fired {
                    self.short_press();
                }
                self.press_started = None;
            }
        }
        if let (true, false, Some(start)) = (self.pressed, self.long_fired, self.press_started)
            && now.saturating_duration_since(start) >= self.cfg.long_press
        {
            self.long_fired = true;
            self.long_press();
        }
    }

    fn short_press(&mut self) {
        if self.room.privacy() {
            self.act(PanelAction::ExitPrivacy);
        } else {
            self.act(PanelAction::ToggleMute { muted: !self.room.mic_muted });
        }
    }

    fn long_press(&mut self) {
        if self.room.privacy() {
            self.act(PanelAction::ExitPrivacy);
        } else {
            self.act(PanelAction::EnterPrivacy);
        }
    }

    fn act(&mut self, action: PanelAction) {
        // Optimistic: the LEDs answer the button at once; the room's next state confirms or
        // corrects it.
        match action {
            PanelAction::ToggleMute { muted } => self.room.mic_muted = muted,
            PanelAction::EnterPrivacy => {
                self.room.mic_muted = true;
                self.room.camera_off = true;
            }
            PanelAction::ExitPrivacy => {
                self.room.mic_muted = false;
                self.room.camera_off = false;
            }
        }
        self.actions.push_back(action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn setup() -> (Panel, Clock) {
        (Panel::new(PanelConfig::default()), Clock(Instant::now()))
    }

    /// Samples the button every `step` ms from `from` to `to` (exclusive) at a level.
    fn hold(p: &mut Panel, c: &Clock, pressed: bool, from: u64, to: u64, step: u64) {
        let mut t = from;
        while t < to {
            p.handle_button(pressed, c.at(t));
            t += step;
        }
    }

    fn drain(p: &mut Panel) -> Vec<PanelAction> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    #[test]
    fn a_short_press_toggles_mute_on_release() {
        let (mut p, c) = setup();
        hold(&mut p, &c, false, 0, 100, 5);
        hold(&mut p, &c, true, 100, 300, 5);
        assert!(p.is_pressed());
        assert_eq!(drain(&mut p), [], "nothing happens until release");
        hold(&mut p, &c, false, 300, 400, 5);
        assert_eq!(drain(&mut p), [PanelAction::ToggleMute { muted: true }]);
        assert!(p.leds(c.at(400)).muted);
        // The next short press unmutes.
        hold(&mut p, &c, true, 400, 500, 5);
        hold(&mut p, &c, false, 500, 600, 5);
        assert_eq!(drain(&mut p), [PanelAction::ToggleMute { muted: false }]);
        assert!(!p.leds(c.at(600)).muted);
    }

    #[test]
    fn bounces_shorter_than_debounce_are_ignored() {
        let (mut p, c) = setup();
        // Contact chatter: the level flips every 4 ms for 80 ms, then settles released.
        for i in 0..20u64 {
            p.handle_button(i % 2 == 0, c.at(i * 4));
        }
        hold(&mut p, &c, false, 80, 300, 5);
        assert!(!p.is_pressed());
        assert_eq!(drain(&mut p), []);
        // A single 25 ms glitch (< 30 ms debounce) in a held press does not release it.
        hold(&mut p, &c, true, 300, 500, 5);
        hold(&mut p, &c, false, 500, 525, 5);
        hold(&mut p, &c, true, 525, 700, 5);
        assert!(p.is_pressed());
        assert_eq!(drain(&mut p), []);
        hold(&mut p, &c, false, 700, 800, 5);
        assert_eq!(drain(&mut p), [PanelAction::ToggleMute { muted: true }], "one press, not two");
    }

    #[test]
    fn a_press_just_at_the_debounce_time_counts() {
        let (mut p, c) = setup();
        p.handle_button(true, c.at(0));
        p.handle_timeout(c.at(29));
        assert!(!p.is_pressed());
        assert_eq!(p.poll_timeout(), Some(c.at(30)));
        p.handle_timeout(c.at(30));
        assert!(p.is_pressed());
    }

    #[test]
    fn a_long_press_enters_privacy_while_held_and_release_does_nothing_more() {
        let (mut p, c) = setup();
        hold(&mut p, &c, true, 0, 1990, 10);
        assert_eq!(drain(&mut p), []);
        // The press began at 0 ms; 2000 ms later it is a long press, before any release.
        assert_eq!(p.poll_timeout(), Some(c.at(2000)));
        p.handle_timeout(c.at(2000));
        assert_eq!(drain(&mut p), [PanelAction::EnterPrivacy]);
        let leds = p.leds(c.at(2000));
        assert!(leds.muted);
        assert!(p.room().privacy());
        hold(&mut p, &c, true, 2000, 4000, 10);
        hold(&mut p, &c, false, 4000, 4100, 10);
        assert_eq!(drain(&mut p), [], "no short press after a long one");
    }

    #[test]
    fn any_press_in_privacy_mode_leaves_it() {
        let (mut p, c) = setup();
        p.handle_room(RoomState { mic_muted: true, camera_off: true, live: true, recording: false }, c.at(0));
        hold(&mut p, &c, true, 0, 100, 5);
        hold(&mut p, &c, false, 100, 200, 5);
        assert_eq!(drain(&mut p), [PanelAction::ExitPrivacy]);
        assert!(!p.leds(c.at(200)).muted);
        // Back in privacy (the room said so): a long press leaves it too.
        p.handle_room(
            RoomState { mic_muted: true, camera_off: true, live: true, recording: false },
            c.at(300),
        );
        hold(&mut p, &c, true, 300, 2400, 20);
        assert_eq!(drain(&mut p), [PanelAction::ExitPrivacy]);
    }

    #[test]
    fn mute_led_follows_a_remote_mute() {
        let (mut p, c) = setup();
        assert_eq!(p.leds(c.at(0)), Leds::default());
        // Someone muted the room from the web client.
        p.handle_room(RoomState { mic_muted: true, live: true, ..RoomState::default() }, c.at(10));
        assert_eq!(p.leds(c.at(10)), Leds { muted: true, live: true, recording: false });
        // Then a press here unmutes: the toggle is computed from the remote state.
        hold(&mut p, &c, true, 20, 100, 5);
        hold(&mut p, &c, false, 100, 200, 5);
        assert_eq!(drain(&mut p), [PanelAction::ToggleMute { muted: false }]);
        // The room unmuting from elsewhere wins over the panel's guess, whatever it was.
        p.handle_room(RoomState { mic_muted: true, live: true, ..RoomState::default() }, c.at(300));
        assert!(p.leds(c.at(300)).muted);
        p.handle_room(RoomState { live: false, ..RoomState::default() }, c.at(400));
        assert_eq!(p.leds(c.at(400)), Leds::default());
    }

    #[test]
    fn recording_led_blinks_from_when_recording_started() {
        let (mut p, c) = setup();
        let rec = RoomState { live: true, recording: true, ..RoomState::default() };
        p.handle_room(rec, c.at(100));
        let on: Vec<bool> =
            [100, 599, 600, 1099, 1100, 1600].iter().map(|&t| p.leds(c.at(t)).recording).collect();
        assert_eq!(on, [true, true, false, false, true, false]);
        // The driver is woken at each toggle.
        p.handle_timeout(c.at(350));
        assert_eq!(p.poll_timeout(), Some(c.at(600)));
        p.handle_timeout(c.at(600));
        assert_eq!(p.poll_timeout(), Some(c.at(1100)));
        // Re-announcing the same state does not restart the blink phase.
        p.handle_room(rec, c.at(700));
        assert!(!p.leds(c.at(700)).recording);
        p.handle_room(RoomState { live: true, ..RoomState::default() }, c.at(800));
        assert!(!p.leds(c.at(1100)).recording);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn idle_panel_needs_no_wakeups() {
        let (mut p, c) = setup();
        hold(&mut p, &c, false, 0, 100, 10);
        assert_eq!(p.poll_timeout(), None);
        p.handle_button(true, c.at(100));
        assert_eq!(p.poll_timeout(), Some(c.at(130)));
        p.handle_timeout(c.at(130));
        assert_eq!(p.poll_timeout(), Some(c.at(2100)), "long press pending");
    }

    #[test]
    fn timing_comes_from_the_board_profile() {
        let pi = crate::board::BoardProfile::load("rpi4").unwrap();
        let cfg = PanelConfig::from_profile(pi.gpio().unwrap());
        assert_eq!(cfg, PanelConfig::default());
    }
}
