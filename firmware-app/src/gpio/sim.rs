//! The simulated panel: the same state machine and driver as the GPIO panel, over in-memory
//! pins. The demo and boards without a panel wired (`qemu-arm64`) use it; the daemon shows its
//! LEDs on the admin page and lets a virtual button be pressed there.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};

use super::PanelError;
use super::driver::{self, PanelHandle, PanelSnapshot, RoomControl};
use super::panel::{Leds, PanelConfig, RoomState};
use super::pins::{PanelPins, Pin};

/// A push button in memory. Pressed reads high.
#[derive(Debug, Clone, Default)]
pub struct SimButton(Arc<Mutex<ButtonState>>);

#[derive(Debug, Default)]
struct ButtonState {
    held: bool,
    /// A press of this length, not yet seen by the driver.
    pending: Option<Duration>,
    /// Pressed until this instant.
    until: Option<Instant>,
}

impl SimButton {
    /// The level a read at `now` sees. A timed press starts when the driver first reads it, so a
    /// driver thread that was not scheduled for a while does not miss a click.
    fn read(&self, now: Instant) -> bool {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hold) = s.pending.take() {
            s.until = Some(now + hold);
        }
        s.held || s.until.is_some_and(|u| now < u)
    }

    fn is_down(&self, now: Instant) -> bool {
        let s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.held || s.pending.is_some() || s.until.is_some_and(|u| now < u)
    }
}

impl ErrorType for SimButton {
    type Error = Infallible;
}

impl InputPin for SimButton {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.read(Instant::now()))
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.read(Instant::now()))
    }
}

/// An LED in memory. Lit is high.
#[derive(Debug, Clone, Default)]
pub struct SimLed(Arc<AtomicBool>);

impl SimLed {
    /// Whether the LED is lit.
    pub fn is_lit(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl ErrorType for SimLed {
    type Error = Infallible;
}

impl OutputPin for SimLed {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.0.store(false, Ordering::Release);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.0.store(true, Ordering::Release);
        Ok(())
    }
}

/// A running simulated panel. Cloneable (every clone is the same panel).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::{Duration, Instant};
/// use roombox::gpio::{PanelConfig, RoomControl, RoomState, SimulatedPanel};
///
/// #[derive(Default)]
/// struct Room(Mutex<bool>);
/// impl RoomControl for Room {
///     fn set_mic_muted(&self, m: bool) { *self.0.lock().unwrap() = m; }
///     fn set_camera_off(&self, _: bool) {}
/// }
///
/// let room = Arc::new(Room::default());
/// let panel = SimulatedPanel::spawn(PanelConfig::default(), room.clone()).unwrap();
/// panel.click();
/// let deadline = Instant::now() + Duration::from_secs(5);
/// while !*room.0.lock().unwrap() && Instant::now() < deadline {
///     std::thread::sleep(Duration::from_millis(5));
/// }
/// assert!(*room.0.lock().unwrap(), "the click muted the room");
/// ```
#[derive(Debug, Clone)]
pub struct SimulatedPanel {
    cfg: PanelConfig,
    button: SimButton,
    muted: SimLed,
    live: SimLed,
    recording: SimLed,
    handle: PanelHandle,
}

impl SimulatedPanel {
    /// Starts the panel's driver thread.
    pub fn spawn(cfg: PanelConfig, room: Arc<dyn RoomControl>) -> Result<SimulatedPanel, PanelError> {
        let button = SimButton::default();
        let (muted, live, recording) = (SimLed::default(), SimLed::default(), SimLed::default());
        let pins = PanelPins::new(
            Pin::active_high(button.clone()),
            Pin::active_high(muted.clone()),
            Pin::active_high(live.clone()),
            Pin::active_high(recording.clone()),
        );
        let handle = driver::spawn("panel-sim", cfg, pins, room)?;
        Ok(SimulatedPanel { cfg, button, muted, live, recording, handle })
    }

    /// Presses the button and holds it until [`SimulatedPanel::release`].
    pub fn press(&self) {
        self.button.0.lock().unwrap_or_else(PoisonError::into_inner).held = true;
    }

    /// Releases a held button.
    pub fn release(&self) {
        let mut s = self.button.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.held = false;
        s.pending = None;
        s.until = None;
    }

    /// Presses the button for `hold`, without blocking. The press starts when the driver next
    /// samples the button (within [`SAMPLE_INTERVAL`](super::SAMPLE_INTERVAL) when it runs).
    pub fn press_for(&self, hold: Duration) {
        let mut s = self.button.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.pending = Some(hold);
        s.until = None;
    }

    /// A short press: toggles mute (or leaves privacy mode).
    pub fn click(&self) {
        self.press_for(self.cfg.debounce * 4);
    }

    /// A long press: enters (or leaves) privacy mode.
    pub fn long_press(&self) {
        self.press_for(self.cfg.long_press + self.cfg.debounce * 4);
    }

    /// The LEDs as their pins are driven now.
    pub fn leds(&self) -> Leds {
        Leds { muted: self.muted.is_lit(), live: self.live.is_lit(), recording: self.recording.is_lit() }
    }

    /// Whether the virtual button is down now (raw level, not debounced).
    pub fn button_down(&self) -> bool {
        self.button.is_down(Instant::now())
    }

    /// Tells the panel the room's state (see [`PanelHandle::update_room`]).
    pub fn update_room(&self, state: RoomState) {
        self.handle.update_room(state);
    }

    /// What the driver shows (see [`PanelSnapshot`]).
    pub fn snapshot(&self) -> PanelSnapshot {
        self.handle.snapshot()
    }

    /// The driver's handle.
    pub fn handle(&self) -> &PanelHandle {
        &self.handle
    }

    /// The panel's timing.
    pub fn config(&self) -> PanelConfig {
        self.cfg
    }
}

#[cfg(test)]
mod tests {
    //! The simulated panel end to end: a real driver thread, real time, in-memory pins.
    use std::sync::Condvar;

    use super::*;

    /// Records what the panel asked of the room.
    #[derive(Default)]
    struct Room {
        calls: Mutex<Vec<(&'static str, bool)>>,
        changed: Condvar,
    }

    impl RoomControl for Room {
        fn set_mic_muted(&self, muted: bool) {
            self.calls.lock().unwrap().push(("mic_muted", muted));
            self.changed.notify_all();
        }
        fn set_camera_off(&self, off: bool) {
            self.calls.lock().unwrap().push(("camera_off", off));
            self.changed.notify_all();
        }
    }

    impl Room {
        /// Waits (up to 10 s) until `n` calls were made; returns them.
        fn wait_calls(&self, n: usize) -> Vec<(&'static str, bool)> {
            let guard = self.calls.lock().unwrap();
            let (guard, _) =
                self.changed.wait_timeout_while(guard, Duration::from_secs(10), |c| c.len() < n).unwrap();
            guard.clone()
        }
    }

    /// Waits (up to 10 s) until the panel's LEDs satisfy `f`.
    fn wait_leds(panel: &SimulatedPanel, f: impl Fn(Leds) -> bool) -> Leds {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leds = panel.leds();
            if f(leds) || Instant::now() > deadline {
                return leds;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn fast() -> PanelConfig {
        PanelConfig {
            debounce: Duration::from_millis(20),
            long_press: Duration::from_millis(300),
            blink: Duration::from_millis(60),
        }
    }

    #[test]
    fn a_timed_press_starts_when_the_driver_first_reads_it() {
        let b = SimButton::default();
        let t0 = Instant::now();
        let press_for = |hold| {
            let mut s = b.0.lock().unwrap();
            s.pending = Some(hold);
            s.until = None;
        };
        press_for(Duration::from_millis(50));
        // The driver was not scheduled for a second: the click is still there, for 50 ms.
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(b.is_down(at(1000)));
        assert!(b.read(at(1000)));
        assert!(b.read(at(1049)));
        assert!(!b.read(at(1050)));
        assert!(!b.is_down(at(1050)));
    }

    #[test]
    fn a_click_mutes_the_room_and_lights_the_muted_led() {
        let room = Arc::new(Room::default());
        let panel = SimulatedPanel::spawn(fast(), room.clone()).unwrap();
        panel.click();
        assert_eq!(room.wait_calls(1), [("mic_muted", true)]);
        assert!(wait_leds(&panel, |l| l.muted).muted);
        // The daemon confirms; the second click unmutes.
        panel.update_room(RoomState { mic_muted: true, ..RoomState::default() });
        panel.click();
        assert_eq!(room.wait_calls(2), [("mic_muted", true), ("mic_muted", false)]);
        assert!(!wait_leds(&panel, |l| !l.muted).muted);
        assert_eq!(panel.snapshot().actions, 2);
    }

    #[test]
    fn a_long_press_turns_mic_and_camera_off() {
        let room = Arc::new(Room::default());
        let panel = SimulatedPanel::spawn(fast(), room.clone()).unwrap();
        panel.press();
        assert_eq!(room.wait_calls(2), [("mic_muted", true), ("camera_off", true)]);
        assert!(panel.snapshot().room.privacy());
        panel.release();
        let deadline = Instant::now() + Duration::from_secs(10);
        while panel.snapshot().pressed && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // A click in privacy mode brings both back.
        panel.click();
        let calls = room.wait_calls(4);
        assert_eq!(&calls[2..], [("camera_off", false), ("mic_muted", false)]);
    }

    #[test]
    fn leds_follow_the_room_whoever_changed_it() {
        let room = Arc::new(Room::default());
        let panel = SimulatedPanel::spawn(fast(), room.clone()).unwrap();
        panel.update_room(RoomState { mic_muted: true, live: true, ..RoomState::default() });
        let leds = wait_leds(&panel, |l| l.muted && l.live);
        assert_eq!(leds, Leds { muted: true, live: true, recording: false });
        // Recording: the LED is seen lit and unlit.
        panel.update_room(RoomState { live: true, recording: true, ..RoomState::default() });
        assert!(wait_leds(&panel, |l| l.recording).recording);
        assert!(!wait_leds(&panel, |l| !l.recording).recording);
        assert!(wait_leds(&panel, |l| l.recording).recording);
        assert!(room.calls.lock().unwrap().is_empty(), "room changes do not act on the room");
        // Stopping the driver turns everything off.
        let handle = panel.handle().clone();
        handle.shutdown();
        assert_eq!(panel.leds(), Leds::default());
    }
}
