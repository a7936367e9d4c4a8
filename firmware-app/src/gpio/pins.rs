//! The panel's four pins through the `embedded-hal` 1.0 digital traits, and the one step that
//! moves the state machine with them. The Linux driver, the simulated panel and the mock-pin
//! tests all go through [`step`].

use std::time::Instant;

use embedded_hal::digital::{InputPin, OutputPin, PinState};

use super::PanelError;
use super::panel::{Leds, Panel, PanelAction, RoomState};

/// Which electrical level means "active" on a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Polarity {
    /// High = pressed / lit.
    #[default]
    ActiveHigh,
    /// Low = pressed (a button to ground with a pull-up) / lit (an LED sinking current).
    ActiveLow,
}

impl Polarity {
    /// From a profile's `active_low` flag.
    pub fn from_active_low(active_low: bool) -> Polarity {
        if active_low { Polarity::ActiveLow } else { Polarity::ActiveHigh }
    }
    fn level(self, active: bool) -> PinState {
        PinState::from(active == (self == Polarity::ActiveHigh))
    }
    fn active(self, high: bool) -> bool {
        high == (self == Polarity::ActiveHigh)
    }
}

/// A pin and its polarity.
#[derive(Debug)]
pub struct Pin<P> {
    /// The `embedded-hal` pin.
    pub pin: P,
    /// Its polarity.
    pub polarity: Polarity,
}

impl<P> Pin<P> {
    /// An active-high pin.
    pub fn active_high(pin: P) -> Pin<P> {
        Pin { pin, polarity: Polarity::ActiveHigh }
    }
    /// An active-low pin.
    pub fn active_low(pin: P) -> Pin<P> {
        Pin { pin, polarity: Polarity::ActiveLow }
    }
}

/// The button and the three LEDs.
#[derive(Debug)]
pub struct PanelPins<B, M, L, R> {
    /// Mute button (input).
    pub button: Pin<B>,
    /// Muted LED.
    pub muted: Pin<M>,
    /// Live LED.
    pub live: Pin<L>,
    /// Recording LED.
    pub recording: Pin<R>,
    /// What the LEDs were last set to (`None`: never; the first write sets all three).
    written: Option<Leds>,
}

impl<B, M, L, R> PanelPins<B, M, L, R>
where
    B: InputPin,
    M: OutputPin,
    L: OutputPin,
    R: OutputPin,
{
    /// Groups the pins.
    pub fn new(button: Pin<B>, muted: Pin<M>, live: Pin<L>, recording: Pin<R>) -> Self {
        PanelPins { button, muted, live, recording, written: None }
    }

    /// Whether the button is pressed now (one read of the input).
    pub fn read_button(&mut self) -> Result<bool, PanelError> {
        let high = self.button.pin.is_high().map_err(|e| pin_error("button", &e))?;
        Ok(self.button.polarity.active(high))
    }

    /// Sets the LEDs; only the ones that changed are written.
    pub fn write_leds(&mut self, leds: Leds) -> Result<(), PanelError> {
        let old = self.written;
        let changed = |f: fn(&Leds) -> bool| old.is_none_or(|o| f(&o) != f(&leds));
        // Record what was attempted, so a failing LED is not retried at every tick.
        self.written = Some(leds);
        if changed(|l| l.muted) {
            set(&mut self.muted, leds.muted, "led_muted")?;
        }
        if changed(|l| l.live) {
            set(&mut self.live, leds.live, "led_live")?;
        }
        if changed(|l| l.recording) {
            set(&mut self.recording, leds.recording, "led_recording")?;
        }
        Ok(())
    }

    /// What the LEDs were last set to.
    pub fn written(&self) -> Option<Leds> {
        self.written
    }
}

fn set<P: OutputPin>(p: &mut Pin<P>, lit: bool, name: &'static str) -> Result<(), PanelError> {
    p.pin.set_state(p.polarity.level(lit)).map_err(|e| pin_error(name, &e))
}

fn pin_error<E: embedded_hal::digital::Error>(pin: &'static str, e: &E) -> PanelError {
    PanelError::Pin { pin, detail: format!("{:?} ({:?})", e, e.kind()) }
}

/// One tick of a panel driver: apply a new room state, sample the button, let time pass,
/// collect the actions and drive the LEDs. Returns the actions for the caller to carry out.
///
/// A button read error skips the sample (the level is unknown, not released); an LED write
/// error is returned after the actions are collected, so the button keeps working.
pub fn step<B, M, L, R>(
    panel: &mut Panel,
    pins: &mut PanelPins<B, M, L, R>,
    room: Option<RoomState>,
    now: Instant,
    actions: &mut Vec<PanelAction>,
) -> Result<Leds, PanelError>
where
    B: InputPin,
    M: OutputPin,
    L: OutputPin,
    R: OutputPin,
{
    if let Some(state) = room {
        panel.handle_room(state, now);
    }
    let read = pins.read_button();
    match &read {
        Ok(pressed) => panel.handle_button(*pressed, now),
        Err(_) => panel.handle_timeout(now),
    }
    actions.extend(std::iter::from_fn(|| panel.poll_action()));
    let leds = panel.leds(now);
    pins.write_leds(leds)?;
    read.map(|_| leds)
}

#[cfg(test)]
mod tests {
    //! The pins through `embedded-hal-mock`: every read and write the step makes is expected,
    //! in order, and nothing else.
    use std::time::Duration;

    use embedded_hal_mock::eh1::MockError;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    use super::*;
    use crate::gpio::PanelConfig;

    type MockPins = PanelPins<Mock, Mock, Mock, Mock>;

    fn pins(button: &[T], muted: &[T], live: &[T], recording: &[T], button_low: bool) -> MockPins {
        let b = Mock::new(button);
        PanelPins::new(
            if button_low { Pin::active_low(b) } else { Pin::active_high(b) },
            Pin::active_high(Mock::new(muted)),
            Pin::active_high(Mock::new(live)),
            Pin::active_low(Mock::new(recording)),
        )
    }

    fn done(mut p: MockPins) {
        p.button.pin.done();
        p.muted.pin.done();
        p.live.pin.done();
        p.recording.pin.done();
    }

    /// `n` reads of the button at one electrical level.
    fn reads(level: State, n: usize) -> Vec<T> {
        vec![T::get(level); n]
    }

    #[test]
    fn short_press_on_an_active_low_button_mutes_and_lights_the_led() {
        // Released (high) for 10 ticks, pressed (low) for 10, released for 10; ticks 10 ms apart.
        let mut button = reads(State::High, 10);
        button.extend(reads(State::Low, 10));
        button.extend(reads(State::High, 10));
        let mut p = pins(
            &button,
            // First tick sets every LED (off); the muted LED lights when the press is released.
            &[T::set(State::Low), T::set(State::High)],
            &[T::set(State::Low)],
            // Recording LED is active-low: off = high.
            &[T::set(State::High)],
            true,
        );
        let mut panel = Panel::new(PanelConfig::default());
        let t0 = Instant::now();
        let mut actions = Vec::new();
        for i in 0..30u64 {
            step(&mut panel, &mut p, None, t0 + Duration::from_millis(i * 10), &mut actions).unwrap();
        }
        assert_eq!(actions, [PanelAction::ToggleMute { muted: true }]);
        done(p);
    }

    #[test]
    fn chatter_reaches_no_led_and_no_action() {
        let mut button = Vec::new();
        for i in 0..20 {
            button.push(T::get(if i % 2 == 0 { State::Low } else { State::High }));
        }
        button.extend(reads(State::High, 10));
        let mut p = pins(&button, &[T::set(State::Low)], &[T::set(State::Low)], &[T::set(State::High)], true);
        let mut panel = Panel::new(PanelConfig::default());
        let t0 = Instant::now();
        let mut actions = Vec::new();
        for i in 0..30u64 {
            step(&mut panel, &mut p, None, t0 + Duration::from_millis(i * 5), &mut actions).unwrap();
        }
        assert_eq!(actions, []);
        done(p);
    }

    #[test]
    fn long_press_enters_privacy_and_remote_state_drives_the_leds() {
        // Active-high button held 2.5 s (ticks of 100 ms), then released.
        let mut button = reads(State::High, 26);
        button.extend(reads(State::Low, 4));
        button.extend(reads(State::Low, 3));
        let mut p = pins(
            &button,
            // off; on at the long press (privacy = muted); off when the room says privacy ended
            &[T::set(State::Low), T::set(State::High), T::set(State::Low)],
            // off; on when the room says a meeting is on
            &[T::set(State::Low), T::set(State::High)],
            // active-low: off, then lit and unlit by the blink (500 ms half period), then off
            &[
                T::set(State::High),
                T::set(State::Low),
                T::set(State::High),
                T::set(State::Low),
                T::set(State::High),
            ],
            false,
        );
        let mut panel = Panel::new(PanelConfig::default());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut actions = Vec::new();
        for i in 0..26u64 {
            step(&mut panel, &mut p, None, at(i * 100), &mut actions).unwrap();
        }
        assert_eq!(actions, [PanelAction::EnterPrivacy], "fired while held, at 2 s");
        actions.clear();
        // Released. The room confirms privacy, a meeting is on, and recording starts.
        let rec = RoomState { mic_muted: true, camera_off: true, live: true, recording: true };
        step(&mut panel, &mut p, Some(rec), at(2600), &mut actions).unwrap();
        step(&mut panel, &mut p, None, at(3100), &mut actions).unwrap(); // blink off
        step(&mut panel, &mut p, None, at(3600), &mut actions).unwrap(); // blink on
        step(&mut panel, &mut p, None, at(4100), &mut actions).unwrap(); // blink off
        // Someone ends privacy and the recording from the web client.
        let after = RoomState { live: true, ..RoomState::default() };
        step(&mut panel, &mut p, Some(after), at(4200), &mut actions).unwrap();
        step(&mut panel, &mut p, None, at(4300), &mut actions).unwrap();
        step(&mut panel, &mut p, None, at(4400), &mut actions).unwrap();
        assert_eq!(actions, [], "release after a long press does nothing");
        done(p);
    }

    #[test]
    fn a_failing_button_read_is_reported_and_the_leds_still_follow_the_room() {
        let err = MockError::Io(std::io::ErrorKind::Other);
        let mut p = pins(
            &[T::get(State::High).with_error(err)],
            &[T::set(State::High)],
            &[T::set(State::High)],
            &[T::set(State::High)],
            true,
        );
        let mut panel = Panel::new(PanelConfig::default());
        let mut actions = Vec::new();
        let room = RoomState { mic_muted: true, live: true, ..RoomState::default() };
        let e = step(&mut panel, &mut p, Some(room), Instant::now(), &mut actions).unwrap_err();
        assert!(e.to_string().contains("button"), "{e}");
        assert_eq!(p.written(), Some(Leds { muted: true, live: true, recording: false }));
        done(p);
    }
}
