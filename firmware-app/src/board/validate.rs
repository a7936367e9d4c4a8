//! Checks a parsed profile for what the type system cannot: conflicting GPIO lines, formats the
//! pipeline cannot produce, limits beyond the estimate. Returns every problem, not the first.

use std::collections::HashMap;

use super::{
    AudioProfile, BoardProfile, CameraProfile, CapacityProfile, CpuProfile, EncoderProfile, GpioProfile,
    HardwareApi, PixelFormat, Problem, VideoEncoder,
};

/// Largest frame openh264 (and H.264 level 5.1/5.2) encodes: 36 864 macroblocks, 4096x2304.
const MAX_WIDTH: u32 = 4096;
const MAX_HEIGHT: u32 = 2304;
const MAX_MACROBLOCKS: u32 = 36_864;
const MAX_FPS: u32 = 120;
/// The capture pipeline runs the microphone at 48 kHz mono S16 (`plughw:` converts a device that
/// cannot) and Opus in 10 or 20 ms frames (Opus also allows 2.5, 5, 40, 60 ms).
const PIPELINE_RATE: u32 = 48_000;
const PIPELINE_CHANNELS: u8 = 1;
const PERIODS_MS: [u32; 2] = [10, 20];
/// What the pipeline encodes: sizes in multiples of 4 (I420 and the half-size simulcast layer),
/// up to 3840x2160, up to 60 fps.
const ENCODE_MAX: (u32, u32) = (3840, 2160);
const ENCODE_MAX_FPS: u32 = 60;

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), message: message.into() });
    }
}

pub(super) fn problems(p: &BoardProfile) -> Vec<Problem> {
    let mut out = Problems::default();
    board(p, &mut out);
    cpu(&p.cpu, &mut out);
    camera(&p.camera, &mut out);
    audio(&p.audio, &mut out);
    encoder(&p.encoder, &p.camera, &mut out);
    if let Some(g) = &p.gpio {
        gpio(g, &mut out);
    }
    capacity(&p.capacity, &p.cpu, &mut out);
    out.0
}

fn board(p: &BoardProfile, out: &mut Problems) {
    let name = &p.board.name;
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        out.add(
            "board.name",
            format!("`{name}` must be non-empty lowercase ASCII letters, digits, `-` or `_`"),
        );
    }
    if p.board.soc.trim().is_empty() {
        out.add("board.soc", "must name the system on chip");
    }
}

fn cpu(c: &CpuProfile, out: &mut Problems) {
    if c.cores == 0 || c.cores > 256 {
        out.add("cpu.cores", format!("{} is not a number of cores (1..=256)", c.cores));
    }
    if !(100..=10_000).contains(&c.max_mhz) {
        out.add("cpu.max_mhz", format!("{} MHz is not a CPU clock (100..=10000)", c.max_mhz));
    }
}

fn camera(c: &CameraProfile, out: &mut Problems) {
    if c.device.as_os_str().is_empty() || !c.device.is_absolute() {
        out.add("camera.device", format!("`{}` must be an absolute device path", c.device.display()));
    }
    if c.formats.is_empty() {
        out.add("camera.formats", "needs at least one format");
    }
    let mut seen = HashMap::new();
    for (i, f) in c.formats.iter().enumerate() {
        let key = format!("camera.formats[{i}]");
        if let Some(first) = seen.insert(*f, i) {
            out.add(&key, format!("{f} repeats camera.formats[{first}]"));
        }
        frame_size(&key, f.width, f.height, out);
        // 4:2:2 packs two pixels per macropixel; 4:2:0 also halves the rows.
        if matches!(f.fourcc, PixelFormat::Yuyv | PixelFormat::Nv12) && f.width % 2 != 0 {
            out.add(&key, format!("{f}: {} needs an even width", f.fourcc));
        }
        if f.fourcc == PixelFormat::Nv12 && f.height % 2 != 0 {
            out.add(&key, format!("{f}: NV12 needs an even height"));
        }
        if f.fps == 0 || f.fps > MAX_FPS {
            out.add(&key, format!("{f}: fps must be 1..={MAX_FPS}"));
        }
    }
}

fn frame_size(key: &str, w: u32, h: u32, out: &mut Problems) {
    if w == 0 || h == 0 {
        out.add(key, format!("{w}x{h}: a frame needs a width and a height"));
        return;
    }
    // H.264 (4:2:0) needs even sizes; the encoder pads to macroblocks itself.
    if !w.is_multiple_of(2) || !h.is_multiple_of(2) {
        out.add(key, format!("{w}x{h}: H.264 needs even width and height"));
    }
    let mbs = w.div_ceil(16) * h.div_ceil(16);
    if w > MAX_WIDTH || h > MAX_HEIGHT || mbs > MAX_MACROBLOCKS {
        out.add(key, format!("{w}x{h} is larger than H.264 level 5.1 allows ({MAX_WIDTH}x{MAX_HEIGHT})"));
    }
}

fn audio(a: &AudioProfile, out: &mut Problems) {
    if a.capture.trim().is_empty() {
        out.add("audio.capture", "must name an ALSA PCM");
    }
    if a.playback.trim().is_empty() {
        out.add("audio.playback", "must name an ALSA PCM");
    }
    if a.sample_rate != PIPELINE_RATE {
        out.add(
            "audio.sample_rate",
            format!(
                "{} Hz: the pipeline runs at {PIPELINE_RATE} Hz (use a plughw: PCM to convert)",
                a.sample_rate
            ),
        );
    }
    if a.channels != PIPELINE_CHANNELS {
        out.add(
            "audio.channels",
            format!(
                "{}: the pipeline captures mono (1); a plughw: PCM downmixes a stereo device",
                a.channels
            ),
        );
    }
    if !PERIODS_MS.contains(&a.period_ms) {
        out.add("audio.period_ms", format!("{} ms: the pipeline uses {PERIODS_MS:?} ms frames", a.period_ms));
    }
}

fn encoder(e: &EncoderProfile, cam: &CameraProfile, out: &mut Problems) {
    if e.width == 0 || e.height == 0 || !e.width.is_multiple_of(4) || !e.height.is_multiple_of(4) {
        out.add("encoder", format!("{}x{}: the pipeline encodes sizes in multiples of 4", e.width, e.height));
    }
    if e.width > ENCODE_MAX.0 || e.height > ENCODE_MAX.1 {
        out.add(
            "encoder",
            format!("{}x{}: the pipeline encodes up to {}x{}", e.width, e.height, ENCODE_MAX.0, ENCODE_MAX.1),
        );
    }
    if e.fps == 0 || e.fps > ENCODE_MAX_FPS {
        out.add("encoder.fps", format!("{}: must be 1..={ENCODE_MAX_FPS}", e.fps));
    }
    if !(50..=50_000).contains(&e.bitrate_kbps) {
        out.add("encoder.bitrate_kbps", format!("{} kbit/s: must be 50..=50000", e.bitrate_kbps));
    }
    // The encoder reads camera frames as they come: no scaler in between.
    let same_size: Vec<_> =
        cam.formats.iter().filter(|f| f.width == e.width && f.height == e.height).collect();
    if same_size.is_empty() {
        let offered: Vec<String> = cam.formats.iter().map(|f| f.to_string()).collect();
        out.add(
            "encoder",
            format!(
                "{}x{} matches no camera format (camera.formats: {})",
                e.width,
                e.height,
                if offered.is_empty() { "none".to_owned() } else { offered.join(", ") }
            ),
        );
    } else if same_size.iter().all(|f| f.fps < e.fps) {
        let best = same_size.iter().map(|f| f.fps).max().unwrap_or(0);
        out.add(
            "encoder.fps",
            format!("{} fps but the camera gives {}x{} at {best} fps at most", e.fps, e.width, e.height),
        );
    }
    if e.simulcast && (e.width < 320 || e.height < 180) {
        out.add(
            "encoder.simulcast",
            format!("{}x{} is too small for a quarter-size layer", e.width, e.height),
        );
    }
    if let Some(d) = e.hardware.as_ref().and_then(|hw| hw.device.as_ref())
        && !d.is_absolute()
    {
        out.add("encoder.hardware.device", format!("`{}` must be an absolute device path", d.display()));
    }
    if e.video == VideoEncoder::V4l2M2m {
        match &e.hardware {
            None => out.add("encoder.video", "\"v4l2-m2m\" but the board has no [encoder.hardware]"),
            Some(hw) if hw.api != HardwareApi::V4l2M2m => {
                out.add("encoder.video", "\"v4l2-m2m\" but encoder.hardware.api is not \"v4l2-m2m\"")
            }
            Some(hw) if hw.device.is_none() => {
                out.add("encoder.video", "\"v4l2-m2m\" needs encoder.hardware.device (the encoder's node)")
            }
            Some(_) => {}
        }
    }
}

fn gpio(g: &GpioProfile, out: &mut Problems) {
    if g.chip.trim().is_empty() {
        out.add("gpio.chip", "must be a /dev/gpiochipN path or a chip label");
    }
    if !(1..=500).contains(&g.debounce_ms) {
        out.add("gpio.debounce_ms", format!("{} ms: must be 1..=500", g.debounce_ms));
    }
    if g.long_press_ms <= g.debounce_ms.saturating_mul(2) || g.long_press_ms > 10_000 {
        out.add(
            "gpio.long_press_ms",
            format!(
                "{} ms: must be longer than twice debounce_ms ({}) and at most 10000",
                g.long_press_ms, g.debounce_ms
            ),
        );
    }
    if !(50..=5_000).contains(&g.blink_ms) {
        out.add("gpio.blink_ms", format!("{} ms: must be 50..=5000", g.blink_ms));
    }
    let lines = [
        ("gpio.button", g.button),
        ("gpio.led_muted", g.led_muted),
        ("gpio.led_live", g.led_live),
        ("gpio.led_recording", g.led_recording),
    ];
    for (i, (key, l)) in lines.iter().enumerate() {
        if let Some((other, _)) = lines[..i].iter().find(|(_, o)| o.line == l.line) {
            out.add(
                format!("{key}.line"),
                format!("line {} is also {other}.line: one line cannot be two things", l.line),
            );
        }
    }
}

fn capacity(c: &CapacityProfile, cpu: &CpuProfile, out: &mut Problems) {
    let e = &c.estimate;
    let positive = [
        ("ref_us_per_packet", e.ref_us_per_packet),
        ("core_speed", e.core_speed),
        ("forwarding_cores", e.forwarding_cores),
        ("nic_mbps", e.nic_mbps),
        ("stream_mbps", e.stream_mbps),
    ];
    let mut inputs_ok = true;
    for (k, v) in positive {
        if !(v.is_finite() && v > 0.0) {
            out.add(format!("capacity.estimate.{k}"), format!("{v}: must be a positive number"));
            inputs_ok = false;
        }
    }
    if !(e.soft_crypto_cycles_per_byte.is_finite() && e.soft_crypto_cycles_per_byte >= 0.0) {
        out.add("capacity.estimate.soft_crypto_cycles_per_byte", "must be zero or positive");
        inputs_ok = false;
    }
    if e.forwarding_cores > f64::from(cpu.cores) {
        out.add(
            "capacity.estimate.forwarding_cores",
            format!("{} is more than cpu.cores ({})", e.forwarding_cores, cpu.cores),
        );
        inputs_ok = false;
    }
    if e.basis.trim().is_empty() {
        out.add("capacity.estimate.basis", "say where the inputs come from");
    }
    if c.max_participants < 2 {
        out.add("capacity.max_participants", format!("{}: a meeting needs at least 2", c.max_participants));
    }
    if c.max_forward_mbps == 0 {
        out.add("capacity.max_forward_mbps", "must be positive");
    }
    if !inputs_ok {
        return;
    }
    let est = e.derive(cpu);
    if f64::from(c.max_forward_mbps) > est.forward_mbps.floor() {
        out.add(
            "capacity.max_forward_mbps",
            format!(
                "{} Mbit/s is more than [capacity.estimate] supports ({:.0} Mbit/s at {:.1} µs per packet)",
                c.max_forward_mbps, est.forward_mbps, est.us_per_packet
            ),
        );
    }
    // Participants are checked against the stated forwarding limit (the one the daemon enforces).
    let budget = f64::from(c.max_forward_mbps).min(est.forward_mbps);
    let supported = super::capacity::participants_for(budget, e.stream_mbps);
    if c.max_participants > supported {
        out.add(
            "capacity.max_participants",
            format!(
                "{} is more than {budget:.0} Mbit/s supports: {supported} people at {} Mbit/s per stream, everyone seeing everyone",
                c.max_participants, e.stream_mbps
            ),
        );
    }
}
