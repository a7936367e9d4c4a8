//! The mute button and the status LEDs.
//!
//! - [`Panel`]: the logic, sans IO. Button levels and room states go in with `now`; actions
//!   ([`PanelAction`]: toggle mute, enter/leave privacy) and LED levels ([`Leds`]) come out. A
//!   short press toggles the microphone; a long press (2 s by default) turns microphone and
//!   camera off (privacy mode); any press in privacy mode turns them back on. The muted LED
//!   shows the microphone, the live LED a meeting, the recording LED blinks while recording —
//!   whoever changed the room's state.
//! - [`PanelPins`] and [`step`]: the four pins through the `embedded-hal` 1.0 digital traits.
//! - [`spawn`]/[`PanelHandle`]: a driver thread that samples the button, drives the LEDs and
//!   calls the daemon's [`RoomControl`]; the daemon pushes room states with
//!   [`PanelHandle::update_room`].
//! - [`SimulatedPanel`]: the same over in-memory pins (the demo, boards without a panel).
//! - `linux::open_panel` (feature `gpio`): the same over GPIO character-device lines named by
//!   the board profile.

mod driver;
#[cfg(feature = "gpio")]
pub mod linux;
mod panel;
mod pins;
mod sim;

pub use driver::{PanelHandle, PanelSnapshot, RoomControl, SAMPLE_INTERVAL, apply, spawn};
pub use panel::{Leds, Panel, PanelAction, PanelConfig, RoomState};
pub use pins::{PanelPins, Pin, Polarity, step};
pub use sim::{SimButton, SimLed, SimulatedPanel};

/// Why the panel could not be set up or a pin failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PanelError {
    /// A pin read or write failed.
    #[error("panel pin {pin}: {detail}")]
    Pin {
        /// `button`, `led_muted`, `led_live` or `led_recording`.
        pin: &'static str,
        /// The HAL's error.
        detail: String,
    },
    /// The driver thread could not be started.
    #[error("cannot start the panel driver thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The GPIO character device refused.
    #[cfg(feature = "gpio")]
    #[error("{what}: {source}")]
    Gpio {
        /// The chip or line.
        what: String,
        /// The cdev error.
        #[source]
        source: linux_embedded_hal::gpio_cdev::Error,
    },
    /// No chip has that label.
    #[error("gpio.chip: no GPIO chip labelled `{chip}` (found: {found})")]
    NoSuchChip {
        /// The label asked for.
        chip: String,
        /// The chips present.
        found: String,
    },
    /// The line offset is past the chip's last line.
    #[error("gpio.{key}.line: {line} is not on chip `{chip}` (it has lines 0..{lines})")]
    NoSuchLine {
        /// The profile key.
        key: &'static str,
        /// The offset asked for.
        line: u32,
        /// The chip's label.
        chip: String,
        /// How many lines it has.
        lines: u32,
    },
}
