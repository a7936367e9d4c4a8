//! The room's own devices as the daemon drives them: the camera and
//! microphone pipeline ([`RoomMedia`]), the switches (microphone mute, camera
//! off, privacy = both), and the button panel with its LEDs.
//!
//! One [`Device`] holds the switches. Whoever flips one — the REST API
//! (`PATCH /api/v1/device`, the admin page), the mute of the room participant
//! in the live-meeting list, the panel's button — calls the same
//! [`Device::set_mic_muted`] / [`Device::set_camera_off`], which stop audio
//! at the source and send the privacy slate ([`RoomMedia::set_mic_muted`],
//! [`RoomMedia::set_camera_off`], which also tell the SFU the track is muted),
//! and then show the new state on the panel's LEDs. The live LED follows the
//! meetings of the box's room ([`Device::set_live`], from
//! [`crate::events::EventRecorder`]); the recording LED follows
//! [`Device::set_recording`] (no recorder exists yet: it stays off).
//!
//! The panel is the board's GPIO lines (feature `gpio`, a board profile with a
//! `[gpio]` section) or else a simulated panel whose button the admin page
//! presses (`POST /api/v1/device/gpio/buttons/mute`).

use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::{Deserialize, Serialize};

use crate::gpio::{PanelHandle, RoomControl, RoomState, SimulatedPanel};
use crate::media::RoomMedia;

/// What the API returns for `GET /api/v1/device`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceState {
    /// The room microphone is muted (no audio leaves the box).
    pub mic_muted: bool,
    /// The room camera is off (a privacy slate is sent).
    pub camera_off: bool,
    /// Privacy mode: microphone and camera both off.
    pub privacy: bool,
    /// A meeting is on in the box's room (someone besides the room itself is there).
    pub live: bool,
    /// The box's room is being recorded.
    pub recording: bool,
    /// The room the box's camera and microphone publish into.
    pub room: String,
    pub media: MediaStatus,
}

/// The capture pipeline's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaStatus {
    /// The configuration wants the room's camera and microphone published (`media.enabled`).
    pub enabled: bool,
    /// Capturing and publishing into the room.
    pub running: bool,
    /// Human-readable detail (sources, errors).
    pub detail: String,
    /// The room participant's identity in the SFU.
    pub identity: String,
    /// The running pipeline's own status.
    pub pipeline: Option<PipelineStatus>,
}

/// What a running pipeline is doing, from the descriptions its capture
/// threads set once they have opened their sources (empty until then).
fn pipeline_detail(camera: &str, microphone: &str) -> String {
    match (camera.is_empty(), microphone.is_empty()) {
        (false, false) => format!("publishing {camera} and {microphone}"),
        (true, true) => "starting: opening the camera and the microphone".into(),
        (true, false) => format!("starting: opening the camera ({microphone} is open)"),
        (false, true) => format!("starting: opening the microphone ({camera} is open)"),
    }
}

/// A device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceHealth {
    Ok,
    Lost,
    /// Not configured (no speakers) or switched off (camera off).
    Off,
}

impl From<crate::media::DeviceState> for DeviceHealth {
    fn from(s: crate::media::DeviceState) -> Self {
        match s {
            crate::media::DeviceState::Ok => DeviceHealth::Ok,
            crate::media::DeviceState::Lost => DeviceHealth::Lost,
            crate::media::DeviceState::Off => DeviceHealth::Off,
        }
    }
}

/// [`crate::media::MediaStatus`], as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineStatus {
    pub camera: DeviceHealth,
    pub microphone: DeviceHealth,
    pub speakers: DeviceHealth,
    /// Echo cancellation: `active`, `disabled`, `no_reference` (no speakers), `not_built`.
    pub aec: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub simulcast: bool,
    pub video_bitrate_bps: u32,
    pub capture_fps: f64,
    pub video_frames_sent: u64,
    pub audio_frames_sent: u64,
    pub camera_description: String,
    pub microphone_description: String,
}

impl From<crate::media::MediaStatus> for PipelineStatus {
    fn from(s: crate::media::MediaStatus) -> Self {
        let aec = match s.aec {
            crate::media::AecState::Active => "active",
            crate::media::AecState::Disabled => "disabled",
            crate::media::AecState::NoReference => "no_reference",
            crate::media::AecState::NotBuilt => "not_built",
        };
        PipelineStatus {
            camera: s.camera.into(),
            microphone: s.microphone.into(),
            speakers: s.speakers.into(),
            aec: aec.into(),
            width: s.width,
            height: s.height,
            fps: s.fps,
            simulcast: s.simulcast,
            video_bitrate_bps: s.video_bitrate_bps,
            capture_fps: s.capture_fps,
            video_frames_sent: s.video_frames_sent,
            audio_frames_sent: s.audio_frames_sent,
            camera_description: s.camera_description,
            microphone_description: s.microphone_description,
        }
    }
}

/// A change to the device switches (`PATCH /api/v1/device`); absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    pub mic_muted: Option<bool>,
    pub camera_off: Option<bool>,
}

/// `GET /api/v1/device/gpio`: the button panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GpioState {
    /// No GPIO lines: the panel is simulated and its button is pressed through the API.
    pub simulated: bool,
    /// The GPIO chip (real panels).
    pub chip: Option<String>,
    pub leds: Vec<GpioLed>,
    pub buttons: Vec<GpioButton>,
    /// Button presses turned into actions since start.
    pub actions: u64,
    /// Pin reads or writes that failed since start.
    pub pin_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GpioLed {
    /// `muted`, `live` or `recording`.
    pub name: String,
    pub on: bool,
    /// CSS colour of the LED.
    pub color: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GpioButton {
    /// `mute` (short press: microphone; long press: privacy).
    pub name: String,
    pub pressed: bool,
}

/// What to do with a simulated button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ButtonAction {
    /// Hold it down (until `release`; held past the long-press time: privacy).
    Press,
    Release,
    /// A short press.
    Click,
}

/// `POST /api/v1/device/gpio/buttons/{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ButtonRequest {
    pub action: ButtonAction,
}

/// Why a button could not be pressed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GpioError {
    #[error("this box has no button panel")]
    NoPanel,
    #[error("no button named `{0}` (the panel has `mute`)")]
    NoSuchButton(String),
    #[error("the panel is on real GPIO lines: its button is pressed by hand, not through the API")]
    NotSimulated,
}

/// The panel the daemon runs.
pub enum Panel {
    /// In-memory pins (the demo, boards without GPIO).
    Simulated(SimulatedPanel),
    /// The board's GPIO lines.
    Gpio { handle: PanelHandle, chip: String },
}

/// The one button's name.
pub const MUTE_BUTTON: &str = "mute";

#[derive(Debug, Clone, Copy, Default)]
struct Switches {
    mic_muted: bool,
    camera_off: bool,
    live: bool,
    recording: bool,
}

/// The room's devices.
pub struct Device {
    room: String,
    identity: String,
    enabled: bool,
    switches: Mutex<Switches>,
    detail: Mutex<String>,
    media: Mutex<Option<RoomMedia>>,
    panel: Mutex<Option<Panel>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("room", &self.room).field("state", &self.switches()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Device {
    /// The devices of `room`, with no pipeline or panel attached yet. `cfg`
    /// gives the room participant's identity and the start state of the switches.
    pub fn new(room: &str, cfg: &crate::media::MediaConfig) -> Device {
        Device {
            room: room.to_owned(),
            identity: cfg.identity.clone(),
            enabled: cfg.enabled,
            switches: Mutex::new(Switches {
                mic_muted: cfg.start_mic_muted,
                camera_off: cfg.start_camera_off,
                ..Switches::default()
            }),
            detail: Mutex::new(if cfg.enabled {
                "starting".into()
            } else {
                "disabled (media.enabled = false)".into()
            }),
            media: Mutex::new(None),
            panel: Mutex::new(None),
        }
    }

    /// No pipeline at all (media disabled or not part of a build), with why.
    pub fn detached(detail: &str) -> Device {
        let d = Device::new("room", &crate::media::MediaConfig { enabled: false, ..Default::default() });
        *lock(&d.detail) = detail.to_owned();
        d
    }

    /// The room the box's camera publishes into.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The room participant's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Hand the running pipeline over; the switches apply to it from now on.
    pub fn attach_media(&self, media: RoomMedia) {
        let sw = self.switches();
        let st = media.status();
        if st.mic_muted != sw.mic_muted {
            media.set_mic_muted(sw.mic_muted);
        }
        if st.camera_off != sw.camera_off || sw.camera_off {
            // also tells the SFU (a camera that starts off is muted there too)
            media.set_camera_off(sw.camera_off);
        }
        // From now on the detail is derived from the pipeline's own state each
        // time it is read (see `pipeline_detail`): the capture threads fill in
        // the sources' descriptions only once they have opened them.
        *lock(&self.media) = Some(media);
    }

    /// The pipeline could not start: say why (the daemon serves on; /readyz says not ready).
    pub fn media_failed(&self, why: &str) {
        *lock(&self.detail) = format!("not running: {why}");
    }

    /// Attach the button panel and show the current state on it.
    pub fn attach_panel(&self, panel: Panel) {
        let state = self.room_state();
        match &panel {
            Panel::Simulated(p) => p.update_room(state),
            Panel::Gpio { handle, .. } => handle.update_room(state),
        }
        *lock(&self.panel) = Some(panel);
    }

    /// What the panel's driver calls the room through (holds the device weakly).
    pub fn control(self: &Arc<Self>) -> Arc<dyn RoomControl> {
        Arc::new(PanelControl(Arc::downgrade(self)))
    }

    fn switches(&self) -> Switches {
        *lock(&self.switches)
    }

    fn room_state(&self) -> RoomState {
        let s = self.switches();
        RoomState { mic_muted: s.mic_muted, camera_off: s.camera_off, live: s.live, recording: s.recording }
    }

    /// Tell the panel (its LEDs) the room's state.
    fn show(&self) {
        let state = self.room_state();
        if let Some(p) = lock(&self.panel).as_ref() {
            match p {
                Panel::Simulated(p) => p.update_room(state),
                Panel::Gpio { handle, .. } => handle.update_room(state),
            }
        }
    }

    /// Mute or unmute the room microphone (at the source).
    pub fn set_mic_muted(&self, muted: bool) {
        lock(&self.switches).mic_muted = muted;
        if let Some(m) = lock(&self.media).as_ref() {
            m.set_mic_muted(muted);
        }
        tracing::info!(muted, "room microphone");
        self.show();
    }

    /// Turn the room camera off (privacy slate) or back on.
    pub fn set_camera_off(&self, off: bool) {
        lock(&self.switches).camera_off = off;
        if let Some(m) = lock(&self.media).as_ref() {
            m.set_camera_off(off);
        }
        tracing::info!(off, "room camera");
        self.show();
    }

    /// A meeting started or ended in the box's room.
    pub fn set_live(&self, live: bool) {
        let changed = {
            let mut s = lock(&self.switches);
            std::mem::replace(&mut s.live, live) != live
        };
        if changed {
            self.show();
        }
    }

    /// The box's room started or stopped being recorded.
    pub fn set_recording(&self, recording: bool) {
        lock(&self.switches).recording = recording;
        self.show();
    }

    /// Apply a patch; returns the new state.
    pub fn apply(&self, patch: &DevicePatch) -> DeviceState {
        if let Some(m) = patch.mic_muted {
            self.set_mic_muted(m);
        }
        if let Some(c) = patch.camera_off {
            self.set_camera_off(c);
        }
        self.state()
    }

    pub fn state(&self) -> DeviceState {
        let s = self.switches();
        let pipeline = lock(&self.media).as_ref().map(|m| PipelineStatus::from(m.status()));
        let detail = match &pipeline {
            Some(p) => pipeline_detail(&p.camera_description, &p.microphone_description),
            None => lock(&self.detail).clone(),
        };
        DeviceState {
            mic_muted: s.mic_muted,
            camera_off: s.camera_off,
            privacy: s.mic_muted && s.camera_off,
            live: s.live,
            recording: s.recording,
            room: self.room.clone(),
            media: MediaStatus {
                enabled: self.enabled,
                running: pipeline.is_some(),
                detail,
                identity: self.identity.clone(),
                pipeline,
            },
        }
    }

    /// The pipeline publishes into the room.
    pub fn media_running(&self) -> bool {
        lock(&self.media).is_some()
    }

    /// Ready as far as media goes: not wanted, or running with both sources
    /// open (their capture threads have described them).
    pub fn media_ready(&self) -> bool {
        if !self.enabled {
            return true;
        }
        lock(&self.media)
            .as_ref()
            .map(|m| m.status())
            .is_some_and(|st| !st.camera_description.is_empty() && !st.microphone_description.is_empty())
    }

    /// The room media's status, when it runs.
    pub fn media_status(&self) -> Option<crate::media::MediaStatus> {
        lock(&self.media).as_ref().map(|m| m.status())
    }

    /// The running pipeline's capture clock (tests turn a burnt-in timecode into a time).
    pub fn media_clock(&self) -> Option<crate::media::MediaClock> {
        lock(&self.media).as_ref().map(|m| m.clock())
    }

    /// The panel, for the API; `None` without one.
    pub fn gpio(&self) -> Option<GpioState> {
        let panel = lock(&self.panel);
        let (simulated, chip, leds, pressed, snap) = match panel.as_ref()? {
            Panel::Simulated(p) => (true, None, p.leds(), p.button_down(), p.snapshot()),
            Panel::Gpio { handle, chip } => {
                let s = handle.snapshot();
                (false, Some(chip.clone()), s.leds, s.pressed, s)
            }
        };
        let led =
            |name: &str, on: bool, color: &str| GpioLed { name: name.into(), on, color: Some(color.into()) };
        Some(GpioState {
            simulated,
            chip,
            leds: vec![
                led("muted", leds.muted, "#ff4040"),
                led("live", leds.live, "#30d158"),
                led("recording", leds.recording, "#ff9f0a"),
            ],
            buttons: vec![GpioButton { name: MUTE_BUTTON.into(), pressed }],
            actions: snap.actions,
            pin_errors: snap.pin_errors,
        })
    }

    /// Press, release or click a simulated button.
    pub fn button(&self, name: &str, action: ButtonAction) -> Result<(), GpioError> {
        let panel = lock(&self.panel);
        let p = match panel.as_ref() {
            None => return Err(GpioError::NoPanel),
            Some(_) if name != MUTE_BUTTON => return Err(GpioError::NoSuchButton(name.to_owned())),
            Some(Panel::Gpio { .. }) => return Err(GpioError::NotSimulated),
            Some(Panel::Simulated(p)) => p,
        };
        match action {
            ButtonAction::Press => p.press(),
            ButtonAction::Release => p.release(),
            ButtonAction::Click => p.click(),
        }
        Ok(())
    }

    /// Stop the pipeline (leaves the room) and the panel (LEDs off).
    pub async fn stop(&self) {
        let media = lock(&self.media).take();
        if let Some(m) = media {
            m.stop().await;
            *lock(&self.detail) = "stopped".into();
        }
        let panel = lock(&self.panel).take();
        match panel {
            Some(Panel::Simulated(p)) => {
                let h = p.handle().clone();
                let _ = tokio::task::spawn_blocking(move || h.shutdown()).await;
            }
            Some(Panel::Gpio { handle, .. }) => {
                let _ = tokio::task::spawn_blocking(move || handle.shutdown()).await;
            }
            None => {}
        }
    }
}

/// The panel's way into the room: the same switches as everyone else's.
struct PanelControl(Weak<Device>);

impl RoomControl for PanelControl {
    fn set_mic_muted(&self, muted: bool) {
        if let Some(d) = self.0.upgrade() {
            d.set_mic_muted(muted);
        }
    }
    fn set_camera_off(&self, off: bool) {
        if let Some(d) = self.0.upgrade() {
            d.set_camera_off(off);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::gpio::PanelConfig;

    fn fast() -> PanelConfig {
        PanelConfig {
            debounce: Duration::from_millis(20),
            long_press: Duration::from_millis(300),
            blink: Duration::from_millis(60),
        }
    }

    #[test]
    fn the_detail_names_only_sources_that_are_open() {
        assert_eq!(pipeline_detail("", ""), "starting: opening the camera and the microphone");
        assert_eq!(pipeline_detail("", "mic A"), "starting: opening the camera (mic A is open)");
        assert_eq!(pipeline_detail("cam B", ""), "starting: opening the microphone (cam B is open)");
        assert_eq!(pipeline_detail("cam B", "mic A"), "publishing cam B and mic A");
    }

    fn wait(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn device_with_panel() -> (Arc<Device>, SimulatedPanel) {
        let d = Arc::new(Device::new("demo", &crate::media::MediaConfig::default()));
        let p = SimulatedPanel::spawn(fast(), d.control()).unwrap();
        d.attach_panel(Panel::Simulated(p.clone()));
        (d, p)
    }

    fn led(d: &Device, name: &str) -> bool {
        d.gpio().unwrap().leds.iter().find(|l| l.name == name).unwrap().on
    }

    #[test]
    fn the_button_and_the_api_flip_the_same_switches_and_the_leds_follow() {
        let (d, _p) = device_with_panel();
        d.button("mute", ButtonAction::Click).unwrap();
        wait("the click to mute", || d.state().mic_muted);
        wait("the muted LED", || led(&d, "muted"));
        d.apply(&DevicePatch { mic_muted: Some(false), camera_off: None });
        wait("the muted LED off after the API unmute", || !led(&d, "muted"));
        d.set_live(true);
        wait("the live LED", || led(&d, "live"));
        // Long press: privacy.
        d.button("mute", ButtonAction::Press).unwrap();
        wait("privacy", || d.state().privacy);
        d.button("mute", ButtonAction::Release).unwrap();
        assert!(d.state().camera_off && d.state().mic_muted);
        // A click leaves privacy.
        wait("the button up", || !d.gpio().unwrap().buttons[0].pressed);
        std::thread::sleep(Duration::from_millis(50));
        d.button("mute", ButtonAction::Click).unwrap();
        wait("privacy left", || !d.state().camera_off && !d.state().mic_muted);
    }

    #[test]
    fn bad_buttons_are_refused() {
        let bare = Device::new("demo", &crate::media::MediaConfig::default());
        assert_eq!(bare.button("mute", ButtonAction::Click), Err(GpioError::NoPanel));
        assert!(bare.gpio().is_none());
        let (d, _p) = device_with_panel();
        assert_eq!(d.button("volume", ButtonAction::Click), Err(GpioError::NoSuchButton("volume".into())));
        let g = d.gpio().unwrap();
        assert!(g.simulated);
        assert_eq!(
            g.leds.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["muted", "live", "recording"]
        );
        // Ready without media only when media is not wanted.
        assert!(!d.media_ready());
        assert!(Device::detached("off").media_ready());
    }
}
