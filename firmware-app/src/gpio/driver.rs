//! The panel driver: one thread owns the pins, samples the button, drives the LEDs and carries
//! the button's actions out through [`RoomControl`]. The daemon talks to it through a cloneable
//! [`PanelHandle`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embedded_hal::digital::{InputPin, OutputPin};
use serde::Serialize;

use super::PanelError;
use super::panel::{Leds, Panel, PanelAction, PanelConfig, RoomState};
use super::pins::{PanelPins, step};

/// How often the button is sampled. 10 ms is well inside any debounce time and costs one
/// `ioctl` per tick.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// What the button drives in the room. The daemon implements it with the same calls the web
/// client's mute and camera-off buttons make, so the room's state (and the LEDs, through
/// [`PanelHandle::update_room`]) follow whoever pressed what.
pub trait RoomControl: Send + Sync + 'static {
    /// Mute or unmute the room microphone (at the source, not only in the SFU).
    fn set_mic_muted(&self, muted: bool);
    /// Turn the room camera off (privacy slate) or back on.
    fn set_camera_off(&self, off: bool);
}

/// Carries one panel action out.
pub fn apply(action: PanelAction, room: &dyn RoomControl) {
    match action {
        PanelAction::ToggleMute { muted } => room.set_mic_muted(muted),
        PanelAction::EnterPrivacy => {
            room.set_mic_muted(true);
            room.set_camera_off(true);
        }
        PanelAction::ExitPrivacy => {
            room.set_camera_off(false);
            room.set_mic_muted(false);
        }
    }
}

/// What the panel shows, for the admin page and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PanelSnapshot {
    /// The LED levels last written to the pins.
    pub leds: Leds,
    /// The debounced button level.
    pub pressed: bool,
    /// The room as the panel believes it is.
    pub room: RoomState,
    /// Button presses turned into actions since start.
    pub actions: u64,
    /// Pin errors since start (a read or write that failed).
    pub pin_errors: u64,
}

struct Shared {
    /// The newest room state not yet seen by the driver (newer ones replace older ones).
    room: Mutex<Option<RoomState>>,
    snapshot: Mutex<PanelSnapshot>,
    stop: AtomicBool,
}

/// A handle on a running panel driver. Cloneable; the driver stops when the last handle is
/// dropped (or on [`PanelHandle::shutdown`]), turning the LEDs off.
#[derive(Clone)]
pub struct PanelHandle {
    shared: Arc<Shared>,
    wake: SyncSender<()>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for PanelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PanelHandle").field("snapshot", &self.snapshot()).finish()
    }
}

impl PanelHandle {
    /// Tells the panel the room's state. Never blocks: states not yet seen are replaced.
    pub fn update_room(&self, state: RoomState) {
        *self.shared.room.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
        // A full wake channel already holds a wake-up; a closed one means the driver is gone.
        if let Err(TrySendError::Disconnected(())) = self.wake.try_send(()) {
            tracing::debug!("panel driver has stopped; room state not shown");
        }
    }

    /// What the panel shows now.
    pub fn snapshot(&self) -> PanelSnapshot {
        *self.shared.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the driver and waits for it (LEDs off). Other handles become inert.
    pub fn shutdown(self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("panel driver thread panicked");
        }
    }
}

/// Starts a driver thread over the pins. `name` names the thread (`panel-gpio`, `panel-sim`).
pub fn spawn<B, M, L, R>(
    name: &str,
    cfg: PanelConfig,
    pins: PanelPins<B, M, L, R>,
    room: Arc<dyn RoomControl>,
) -> Result<PanelHandle, PanelError>
where
    B: InputPin + Send + 'static,
    M: OutputPin + Send + 'static,
    L: OutputPin + Send + 'static,
    R: OutputPin + Send + 'static,
{
    let shared = Arc::new(Shared {
        room: Mutex::new(None),
        snapshot: Mutex::new(PanelSnapshot::default()),
        stop: AtomicBool::new(false),
    });
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    let driver_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || run(cfg, pins, room, &driver_shared, &woken))
        .map_err(PanelError::Spawn)?;
    Ok(PanelHandle { shared, wake, thread: Arc::new(Mutex::new(Some(thread))) })
}

fn run<B, M, L, R>(
    cfg: PanelConfig,
    mut pins: PanelPins<B, M, L, R>,
    room: Arc<dyn RoomControl>,
    shared: &Shared,
    woken: &mpsc::Receiver<()>,
) where
    B: InputPin,
    M: OutputPin,
    L: OutputPin,
    R: OutputPin,
{
    let mut panel = Panel::new(cfg);
    let mut actions = Vec::new();
    let mut errors: u64 = 0;
    let mut acted: u64 = 0;
    let mut last_error_log: Option<Instant> = None;
    while !shared.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let state = shared.room.lock().unwrap_or_else(PoisonError::into_inner).take();
        let leds = match step(&mut panel, &mut pins, state, now, &mut actions) {
            Ok(leds) => leds,
            Err(e) => {
                errors += 1;
                // A broken line would otherwise log 100 times a second.
                if last_error_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                    tracing::warn!(error = %e, errors, "panel pin error");
                    last_error_log = Some(now);
                }
                panel.leds(now)
            }
        };
        acted += actions.len() as u64;
        // The snapshot first: whoever sees the room change also sees the panel that changed it.
        *shared.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = PanelSnapshot {
            leds,
            pressed: panel.is_pressed(),
            room: panel.room(),
            actions: acted,
            pin_errors: errors,
        };
        for a in actions.drain(..) {
            tracing::info!(action = ?a, "panel button");
            apply(a, room.as_ref());
        }
        let wait = panel
            .poll_timeout()
            .map_or(SAMPLE_INTERVAL, |t| t.saturating_duration_since(now).min(SAMPLE_INTERVAL));
        match woken.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Err(e) = pins.write_leds(Leds::default()) {
        tracing::warn!(error = %e, "panel: could not turn the LEDs off");
    }
}
