//! The panel on real GPIO lines: the Linux GPIO character device through `linux-embedded-hal`.

use std::sync::Arc;

use linux_embedded_hal::CdevPin;
use linux_embedded_hal::gpio_cdev::{self, Chip, LineRequestFlags};

use super::PanelError;
use super::driver::{self, PanelHandle, RoomControl};
use super::panel::PanelConfig;
use super::pins::{PanelPins, Pin, Polarity};
use crate::board::{GpioLine, GpioProfile};

/// The consumer name the lines show in `gpioinfo`.
pub const CONSUMER: &str = "roomboxd";

/// Opens the chip and lines a profile names and starts the panel driver on them.
///
/// The lines are requested without the kernel's active-low flag: polarity is applied by the
/// panel (so `CdevPin` levels are electrical levels). The LEDs start off.
pub fn open_panel(g: &GpioProfile, room: Arc<dyn RoomControl>) -> Result<PanelHandle, PanelError> {
    let mut chip = open_chip(&g.chip)?;
    let button = request(&mut chip, "button", g.button, None)?;
    let muted = request(&mut chip, "led_muted", g.led_muted, Some(false))?;
    let live = request(&mut chip, "led_live", g.led_live, Some(false))?;
    let recording = request(&mut chip, "led_recording", g.led_recording, Some(false))?;
    let pins = PanelPins::new(button, muted, live, recording);
    driver::spawn("panel-gpio", PanelConfig::from_profile(g), pins, room)
}

/// A chip by path (`/dev/gpiochip0`) or by label (`pinctrl-bcm2711`).
pub fn open_chip(chip: &str) -> Result<Chip, PanelError> {
    let cdev = |source| PanelError::Gpio { what: format!("chip `{chip}`"), source };
    if chip.starts_with('/') {
        return Chip::new(chip).map_err(cdev);
    }
    let mut labels = Vec::new();
    for c in gpio_cdev::chips().map_err(cdev)? {
        let c = c.map_err(cdev)?;
        if c.label() == chip {
            return Ok(c);
        }
        labels.push(format!("{} ({})", c.label(), c.path().display()));
    }
    Err(PanelError::NoSuchChip { chip: chip.to_owned(), found: labels.join(", ") })
}

fn request(
    chip: &mut Chip,
    key: &'static str,
    l: GpioLine,
    output: Option<bool>,
) -> Result<Pin<CdevPin>, PanelError> {
    let gpio = |source| PanelError::Gpio { what: format!("gpio.{key} (line {})", l.line), source };
    if l.line >= chip.num_lines() {
        return Err(PanelError::NoSuchLine {
            key,
            line: l.line,
            chip: chip.label().to_owned(),
            lines: chip.num_lines(),
        });
    }
    let polarity = Polarity::from_active_low(l.active_low);
    let line = chip.get_line(l.line).map_err(gpio)?;
    let handle = match output {
        None => line.request(LineRequestFlags::INPUT, 0, CONSUMER),
        Some(lit) => {
            let high = lit == (polarity == Polarity::ActiveHigh);
            line.request(LineRequestFlags::OUTPUT, u8::from(high), CONSUMER)
        }
    }
    .map_err(gpio)?;
    Ok(Pin { pin: CdevPin::new(handle).map_err(gpio)?, polarity })
}
