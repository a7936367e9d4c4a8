//! The panel's Linux driver on a real GPIO character device: the aarch64 VM's `virt` machine has
//! a PL061 controller. Lines are claimed by `roombox::gpio::linux::open_panel` exactly as on a
//! board; the LED levels the kernel holds are read back from debugfs (`/sys/kernel/debug/gpio`).
//! The button cannot be pressed from outside the VM, so only "not pressed, no action" is checked
//! for it; pressing is covered by the mock-pin and simulated-panel tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use linux_embedded_hal::gpio_cdev;
use roombox::board::{GpioLine, GpioProfile};
use roombox::gpio::{Leds, PanelHandle, RoomControl, RoomState, linux};

use crate::report;

struct NoRoom;

impl RoomControl for NoRoom {
    fn set_mic_muted(&self, muted: bool) {
        report("gpio.unexpected_action", format!("mic_muted={muted}"));
    }
    fn set_camera_off(&self, off: bool) {
        report("gpio.unexpected_action", format!("camera_off={off}"));
    }
}

pub fn panel_on_real_lines(which: &str, failures: &mut Vec<String>) -> Result<()> {
    let mut found = Vec::new();
    for chip in gpio_cdev::chips().context("list GPIO chips")? {
        let mut chip = chip?;
        let free: Vec<u32> = (0..chip.num_lines())
            .filter(|&i| chip.get_line(i).and_then(|l| l.info()).is_ok_and(|info| !info.is_used()))
            .collect();
        report("gpio.chip", format!("{} {} lines, free {free:?}", chip.label(), chip.num_lines()));
        found.push((chip.label().to_owned(), free));
    }
    report("gpio.chips", found.len());
    let Some((label, free)) =
        found.into_iter().find(|(label, free)| free.len() >= 4 && (which == "auto" || which == label))
    else {
        if which == "auto" {
            report("gpio.skipped", "no chip with four free lines");
            return Ok(());
        }
        bail!("no GPIO chip `{which}` with four free lines");
    };
    let line = |i: usize| GpioLine { line: free[i], active_low: false };
    let profile = GpioProfile {
        chip: label.clone(),
        debounce_ms: 30,
        long_press_ms: 2000,
        blink_ms: 500,
        button: line(0),
        led_muted: line(1),
        led_live: line(2),
        led_recording: line(3),
    };
    let panel = linux::open_panel(&profile, Arc::new(NoRoom)).context("open_panel")?;
    report("gpio.claimed", format!("{label}: button {} leds {} {} {}", free[0], free[1], free[2], free[3]));

    let check = |want: Leds, failures: &mut Vec<String>| -> Result<()> {
        wait_leds(&panel, want)?;
        let lines = kernel_lines(&label)?;
        let state = |off: u32| lines.iter().find(|(o, _)| *o == off).map_or("unclaimed", |(_, s)| s.as_str());
        let level = |lit: bool| if lit { "out hi" } else { "out lo" };
        let got = [state(free[0]), state(free[1]), state(free[2]), state(free[3])];
        let expected = ["in", level(want.muted), level(want.live), level(want.recording)];
        report("gpio.kernel_lines", format!("{got:?}"));
        if got.iter().zip(&expected).any(|(g, e)| !g.starts_with(e)) {
            failures.push(format!("gpio: kernel shows {got:?}, expected {expected:?} for {want:?}"));
        }
        Ok(())
    };
    check(Leds::default(), failures)?;
    panel.update_room(RoomState { mic_muted: true, live: true, ..RoomState::default() });
    check(Leds { muted: true, live: true, recording: false }, failures)?;
    panel.update_room(RoomState { live: true, ..RoomState::default() });
    check(Leds { muted: false, live: true, recording: false }, failures)?;
    let snap = panel.snapshot();
    report("gpio.actions", snap.actions);
    report("gpio.pin_errors", snap.pin_errors);
    if snap.actions != 0 || snap.pin_errors != 0 || snap.pressed {
        failures.push(format!("gpio: {snap:?}: expected no press, no action, no pin error"));
    }
    panel.shutdown();
    let after = kernel_lines(&label)?;
    report("gpio.released", after.is_empty());
    if !after.is_empty() {
        failures.push(format!("gpio: lines still claimed after shutdown: {after:?}"));
    }
    report("gpio.panel", "ok");
    Ok(())
}

fn wait_leds(panel: &PanelHandle, want: Leds) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while panel.snapshot().leds != want {
        if Instant::now() > deadline {
            bail!("LEDs {:?} after 10 s, want {want:?}", panel.snapshot().leds);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The lines of chip `label` that `roomboxd` holds, as debugfs shows them:
/// `(offset, "in  lo" | "out hi" | "out lo" ...)`.
fn kernel_lines(label: &str) -> Result<Vec<(u32, String)>> {
    let text = std::fs::read_to_string("/sys/kernel/debug/gpio").context("read /sys/kernel/debug/gpio")?;
    let mut base: Option<u32> = None;
    let mut out = Vec::new();
    for l in text.lines() {
        // "gpiochip0: GPIOs 512-519, parent: platform/9030000.pl061, 9030000.pl061:"
        if l.starts_with("gpiochip") {
            // "..., LABEL:" or "..., LABEL, can sleep:"
            base = if l.contains(&format!(", {label}:")) || l.contains(&format!(", {label}, ")) {
                l.split("GPIOs ").nth(1).and_then(|r| r.split('-').next()).and_then(|n| n.parse().ok())
            } else {
                None
            };
            continue;
        }
        // " gpio-514 (                    |roomboxd            ) out hi"
        let (Some(base), Some(rest)) = (base, l.trim_start().strip_prefix("gpio-")) else { continue };
        if !l.contains(linux::CONSUMER) {
            continue;
        }
        let num: u32 = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("").parse()?;
        let state = l.rsplit(')').next().unwrap_or("").trim().to_owned();
        out.push((num - base, state));
    }
    Ok(out)
}
