//! `vm-probe`: runs as the test program inside the VM that `scripts/vm-test` boots (a Debian
//! kernel with the `vivid` camera and the `snd-aloop` sound card) and drives the real capture
//! code against real kernel drivers:
//!
//! - **video**: V4L2 capture from the board profile's camera (vivid's `/dev/video0`) in the
//!   profile's encoder input format, through openh264 (H.264) and back through openh264's decoder.
//!   Checked: every captured frame is encoded and decoded (counts equal), the decoded frames match
//!   the captured ones (luma PSNR), and the picture is vivid's colour-bar test pattern (eight bars
//!   of falling luma), not a blank or stale buffer.
//! - **audio**: a known sweep is played into the profile's playback PCM (snd-aloop device 0) while
//!   the profile's capture PCM (device 1) records: the sweep must come back sample-exact, then
//!   through Opus and back it must still correlate with what was played.
//!
//! Results go to stdout (the VM's serial console) as `ROOMBOX-VM key=value` lines, ending with
//! `ROOMBOX-VM result=PASS` or `result=FAIL`; the host script parses them.
//!
//! Until the media pipeline (`firmware-app/src/media/`) is merged, capture and encode here are a
//! minimal stand-in for it with the same crates (`v4l`, `alsa`, `openh264`, `opus`); the probe
//! switches to the pipeline's entry points once they exist.

use std::f64::consts::PI;
use std::process::ExitCode;
use std::time::Instant;

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use anyhow::{Context, Result, bail, ensure};
use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, UsageType};
use openh264::formats::{YUVSlices, YUVSource};
use roombox::board::{BoardProfile, PixelFormat};
use v4l::FourCC;

mod gpio;
use v4l::buffer::Type;
use v4l::io::traits::CaptureStream;
use v4l::prelude::*;
use v4l::video::Capture;
use v4l::video::capture::Parameters;

/// Luma PSNR every decoded frame must reach (dB). Colour bars at the profile's bitrate come back
/// far above this; a wrong plane layout or a stale buffer falls far below.
const MIN_PSNR_DB: f64 = 32.0;
/// Share of 20 ms frames whose pitch after the Opus round trip matches the sweep's.
const MIN_ON_PITCH_PERCENT: usize = 90;
const SWEEP_FROM_HZ: f64 = 300.0;
const SWEEP_TO_HZ: f64 = 3000.0;

fn report(key: &str, value: impl std::fmt::Display) {
    println!("ROOMBOX-VM {key}={value}");
}

struct Args {
    board: String,
    frames: usize,
    audio_ms: u32,
    /// Drive the panel on a real GPIO chip: `auto` (the first chip with four free lines), a
    /// label, or `none`.
    gpio: String,
}

fn args() -> Result<Args> {
    let mut a = Args { board: "qemu-arm64".into(), frames: 60, audio_ms: 2000, gpio: "auto".into() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--board" => a.board = value()?,
            "--frames" => a.frames = value()?.parse().context("--frames")?,
            "--audio-ms" => a.audio_ms = value()?.parse().context("--audio-ms")?,
            "--gpio" => a.gpio = value()?,
            other => bail!(
                "unknown argument {other} (--board NAME --frames N --audio-ms MS --gpio auto|LABEL|none)"
            ),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let result = (|| -> Result<()> {
        let a = args()?;
        let profile = BoardProfile::load(&a.board)?;
        report("board", profile.name());
        let t = Instant::now();
        if let Err(e) = video(&profile, a.frames, &mut failures) {
            failures.push(format!("video: {e:#}"));
        }
        report("video.ms", t.elapsed().as_millis());
        let t = Instant::now();
        if let Err(e) = audio(&profile, a.audio_ms, &mut failures) {
            failures.push(format!("audio: {e:#}"));
        }
        report("audio.ms", t.elapsed().as_millis());
        if a.gpio != "none" {
            let t = Instant::now();
            if let Err(e) = gpio::panel_on_real_lines(&a.gpio, &mut failures) {
                failures.push(format!("gpio: {e:#}"));
            }
            report("gpio.ms", t.elapsed().as_millis());
        }
        Ok(())
    })();
    if let Err(e) = result {
        failures.push(format!("{e:#}"));
    }
    for f in &failures {
        report("failure", f);
    }
    report("probe.ms", started.elapsed().as_millis());
    if failures.is_empty() {
        report("result", "PASS");
        ExitCode::SUCCESS
    } else {
        report("result", "FAIL");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Video: vivid -> V4L2 mmap capture -> YUYV to I420 -> openh264 -> openh264 decoder

fn video(profile: &BoardProfile, n: usize, failures: &mut Vec<String>) -> Result<()> {
    let cam = profile.camera();
    let fmt = *profile.encoder_input_format().context("the profile's encoder size has no camera format")?;
    ensure!(
        fmt.fourcc == PixelFormat::Yuyv,
        "the probe converts YUYV only, the profile asks for {}",
        fmt.fourcc
    );
    let (w, h) = (fmt.width as usize, fmt.height as usize);

    let dev = Device::with_path(&cam.device).with_context(|| format!("open {}", cam.device.display()))?;
    let caps = dev.query_caps()?;
    report("video.device", cam.device.display());
    report("video.driver", &caps.driver);
    let mut want = dev.format()?;
    want.width = fmt.width;
    want.height = fmt.height;
    want.fourcc = FourCC::new(&fmt.fourcc.fourcc_bytes());
    let got = dev.set_format(&want)?;
    report("video.format", format!("{} {}x{}", got.fourcc, got.width, got.height));
    ensure!(
        (got.width, got.height, got.fourcc) == (want.width, want.height, want.fourcc),
        "asked {want}, driver gave {got}"
    );
    let params = dev.set_params(&Parameters::with_fps(fmt.fps))?;
    report("video.interval", format!("{}/{}", params.interval.numerator, params.interval.denominator));
    let frame_bytes = w * h * 2;
    ensure!(got.size as usize >= frame_bytes, "driver's frame size {} < {frame_bytes}", got.size);

    // Capture everything first (real-time paced by the driver), then encode.
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut sequences = Vec::with_capacity(n);
    {
        let mut stream = MmapStream::with_buffers(&dev, Type::VideoCapture, 4)?;
        let t = Instant::now();
        while frames.len() < n {
            let (buf, meta) = stream.next()?;
            ensure!(
                meta.bytesused as usize >= frame_bytes,
                "frame {} has {} bytes, want {frame_bytes}",
                meta.sequence,
                meta.bytesused
            );
            frames.push(buf[..frame_bytes].to_vec());
            sequences.push(meta.sequence);
        }
        let secs = t.elapsed().as_secs_f64();
        report("video.capture_fps", format!("{:.1}", n as f64 / secs));
    }
    let dropped: u32 = sequences.windows(2).map(|s| s[1].saturating_sub(s[0]).saturating_sub(1)).sum();
    report("video.captured", frames.len());
    report("video.sequence_gaps", dropped);
    let changing = frames.windows(2).filter(|p| p[0] != p[1]).count();
    report("video.changing_frames", changing);
    if changing == 0 {
        failures
            .push("video: every captured frame is identical (vivid's counter overlay should move)".into());
    }

    let i420: Vec<Vec<u8>> = frames.iter().map(|f| yuyv_to_i420(f, w, h)).collect();

    // The picture: vivid's default 75% colour bars (white, yellow, cyan, green, magenta, red,
    // blue, black) below the text overlay: luma must fall from bar to bar.
    let row = h * 3 / 4;
    let bars: Vec<u8> = (0..8).map(|i| i420[0][row * w + (2 * i + 1) * w / 16]).collect();
    report("video.bar_luma", format!("{bars:?}"));
    let falling = bars.windows(2).filter(|b| b[0] > b[1].saturating_add(8)).count() + 1;
    report("video.bars", falling);
    if falling != 8 {
        failures.push(format!("video: expected 8 colour bars of falling luma, saw {falling}: {bars:?}"));
    }

    let enc = profile.encoder();
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(enc.bitrate_kbps * 1000))
        .max_frame_rate(FrameRate::from_hz(fmt.fps as f32))
        .usage_type(UsageType::CameraVideoRealTime)
        .skip_frames(false);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
    let mut decoder = Decoder::new()?;
    let (mut encoded, mut decoded, mut bytes) = (0usize, 0usize, 0usize);
    let mut psnrs = Vec::with_capacity(n);
    let t = Instant::now();
    for frame in &i420 {
        let (y, rest) = frame.split_at(w * h);
        let (u, v) = rest.split_at(w * h / 4);
        let src = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let bitstream = encoder.encode(&src)?.to_vec();
        if bitstream.is_empty() {
            continue;
        }
        encoded += 1;
        bytes += bitstream.len();
        if let Some(out) = decoder.decode(&bitstream)? {
            decoded += 1;
            ensure!(out.dimensions() == (w, h), "decoded {:?}, want {w}x{h}", out.dimensions());
            psnrs.push(psnr_luma(y, out.y(), out.strides().0, w, h));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    report("video.encoded", encoded);
    report("video.decoded", decoded);
    report("video.h264_bytes", bytes);
    report("video.encode_decode_fps", format!("{:.1}", encoded as f64 / secs));
    let min = psnrs.iter().copied().fold(f64::INFINITY, f64::min);
    let avg = psnrs.iter().sum::<f64>() / psnrs.len().max(1) as f64;
    report("video.psnr_min_db", format!("{min:.2}"));
    report("video.psnr_avg_db", format!("{avg:.2}"));
    if encoded != n || decoded != n {
        failures.push(format!("video: captured {n}, encoded {encoded}, decoded {decoded}"));
    }
    if psnrs.is_empty() || min < MIN_PSNR_DB {
        failures.push(format!("video: luma PSNR {min:.2} dB below {MIN_PSNR_DB} dB"));
    }
    Ok(())
}

/// Packed YUYV 4:2:2 to planar I420 (4:2:0: chroma of each row pair averaged).
fn yuyv_to_i420(src: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h * 3 / 2];
    let (y, chroma) = out.split_at_mut(w * h);
    let (u, v) = chroma.split_at_mut(w * h / 4);
    for (i, px) in src.chunks_exact(2).enumerate() {
        y[i] = px[0];
    }
    for row in (0..h).step_by(2) {
        let a = &src[row * w * 2..(row + 1) * w * 2];
        let b = &src[(row + 1) * w * 2..(row + 2) * w * 2];
        for col in 0..w / 2 {
            let (ua, va) = (a[col * 4 + 1] as u16, a[col * 4 + 3] as u16);
            let (ub, vb) = (b[col * 4 + 1] as u16, b[col * 4 + 3] as u16);
            u[row / 2 * w / 2 + col] = (ua + ub).div_ceil(2) as u8;
            v[row / 2 * w / 2 + col] = (va + vb).div_ceil(2) as u8;
        }
    }
    out
}

fn psnr_luma(orig: &[u8], dec: &[u8], stride: usize, w: usize, h: usize) -> f64 {
    let mut se = 0u64;
    for r in 0..h {
        for c in 0..w {
            let d = i64::from(orig[r * w + c]) - i64::from(dec[r * stride + c]);
            se += (d * d) as u64;
        }
    }
    if se == 0 {
        return 99.0;
    }
    let mse = se as f64 / (w * h) as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

// ---------------------------------------------------------------------------------------------
// Audio: sweep -> snd-aloop playback -> snd-aloop capture -> exact check -> Opus -> correlation

fn open_pcm(name: &str, dir: Direction, rate: u32, channels: u32, period: usize) -> Result<PCM> {
    let pcm = PCM::new(name, dir, false).with_context(|| format!("open {name}"))?;
    {
        let hwp = HwParams::any(&pcm)?;
        hwp.set_access(Access::RWInterleaved)?;
        hwp.set_format(Format::s16())?;
        hwp.set_channels(channels)?;
        hwp.set_rate(rate, ValueOr::Nearest)?;
        hwp.set_period_size_near(period as alsa::pcm::Frames, ValueOr::Nearest)?;
        // A second of buffer: under TCG on a loaded host the guest's clock jumps when its vCPU
        // is descheduled, and snd-aloop's timer then moves many periods at once.
        hwp.set_buffer_size_near((rate as usize) as alsa::pcm::Frames)?;
        pcm.hw_params(&hwp).with_context(|| format!("hw params of {name}"))?;
        let got = pcm.hw_params_current()?;
        ensure!(got.get_rate()? == rate, "{name}: rate {} instead of {rate}", got.get_rate()?);
        report(
            &format!("audio.{}_buffer", if dir == Direction::Capture { "capture" } else { "playback" }),
            format!("{} frames, period {}", got.get_buffer_size()?, got.get_period_size()?),
        );
    }
    pcm.prepare()?;
    Ok(pcm)
}

/// A linear sweep from 300 Hz to 3 kHz at half scale: no period, so it lines up in one place only.
fn sweep(rate: u32, n: usize) -> Vec<i16> {
    let (f0, f1) = (SWEEP_FROM_HZ, SWEEP_TO_HZ);
    let mut phase: f64 = 0.5; // not zero: the first sample marks the start
    (0..n)
        .map(|i| {
            let f = f0 + (f1 - f0) * i as f64 / n as f64;
            let s = (phase.sin() * 16384.0).round() as i16;
            phase += 2.0 * PI * f / f64::from(rate);
            s
        })
        .collect()
}

fn audio(profile: &BoardProfile, ms: u32, failures: &mut Vec<String>) -> Result<()> {
    let a = profile.audio();
    ensure!(a.channels == 1, "the probe plays mono; the profile has {} channels", a.channels);
    let rate = a.sample_rate;
    let period = (rate * a.period_ms / 1000) as usize;
    let n = (rate as usize * ms as usize / 1000) / period * period;
    let pattern = sweep(rate, n);
    report("audio.capture", &a.capture);
    report("audio.playback", &a.playback);

    let capture = open_pcm(&a.capture, Direction::Capture, rate, 1, period)?;
    let playback = open_pcm(&a.playback, Direction::Playback, rate, 1, period)?;

    // Capture the whole played length plus a second of margin, period by period.
    let total = n + rate as usize;
    let mut captured = vec![0i16; total];
    let mut xruns = 0u32;
    // Followed by 100 ms of silence: snd-aloop moves samples once per timer tick and drops what
    // is still in flight when playback stops (the last 4 ms, measured), so the sweep must not
    // be the last thing played.
    let mut with_tail = pattern.clone();
    with_tail.resize(n + rate as usize / 10, 0);
    let played: &[i16] = &with_tail;
    std::thread::scope(|s| -> Result<()> {
        // PCM is Send, not Sync: the player thread owns the playback handle.
        let player = s.spawn(move || -> Result<u32> {
            let io = playback.io_i16()?;
            let mut underruns = 0;
            let mut off = 0;
            while off < played.len() {
                match io.writei(&played[off..(off + period).min(played.len())]) {
                    Ok(frames) => off += frames,
                    Err(e) => {
                        underruns += 1;
                        playback.try_recover(e, true)?;
                    }
                }
            }
            playback.drain()?;
            Ok(underruns)
        });
        let io = capture.io_i16()?;
        let mut off = 0;
        while off < total {
            let end = (off + period).min(total);
            match io.readi(&mut captured[off..end]) {
                Ok(frames) => off += frames,
                Err(e) => {
                    xruns += 1;
                    capture.try_recover(e, true)?;
                }
            }
        }
        let underruns = player.join().map_err(|_| anyhow::anyhow!("player thread panicked"))??;
        report("audio.playback_underruns", underruns);
        Ok(())
    })?;
    report("audio.capture_xruns", xruns);
    report("audio.played_samples", n);
    report("audio.captured_samples", captured.len());

    // snd-aloop copies samples digitally: the sweep must be there bit for bit.
    let start = captured.iter().position(|&s| s != 0).context("captured only silence")?;
    let got = &captured[start..(start + n).min(captured.len())];
    let equal = got.iter().zip(&pattern).take_while(|(a, b)| a == b).count();
    report("audio.offset_samples", start);
    report("audio.exact_samples", equal);
    if equal != n {
        failures.push(format!("audio: only {equal} of {n} samples came back exactly (offset {start})"));
    }

    // Through Opus and back, as the pipeline sends it.
    let rt = opus_round_trip(got, rate)?;
    report("audio.opus_packets", rt.packets);
    report("audio.opus_bytes", rt.bytes);
    report("audio.opus_lag_samples", rt.lag);
    report("audio.opus_correlation", format!("{:.4}", rt.correlation));
    report("audio.opus_on_pitch_frames", format!("{}/{}", rt.on_pitch, rt.frames));
    if rt.packets != got.len() / (rate as usize / 50) || rt.decoded != rt.packets * (rate as usize / 50) {
        failures.push(format!("audio: {} Opus packets decoded to {} samples", rt.packets, rt.decoded));
    }
    if rt.on_pitch * 100 < rt.frames * MIN_ON_PITCH_PERCENT {
        failures.push(format!(
            "audio: the Opus round trip follows the sweep in {} of {} frames (< {MIN_ON_PITCH_PERCENT} %)",
            rt.on_pitch, rt.frames
        ));
    }
    Ok(())
}

struct RoundTrip {
    packets: usize,
    bytes: usize,
    decoded: usize,
    lag: usize,
    correlation: f64,
    frames: usize,
    on_pitch: usize,
}

/// Encodes `input` (which must start with the sweep) in 20 ms Opus frames at 32 kbit/s with
/// in-band FEC (the pipeline's settings), decodes it, and checks the result follows the sweep.
///
/// Opus is a perceptual codec: at speech bitrates it keeps pitch and spectrum, not the waveform
/// (SILK's phase is free), so the content check is the pitch of each 20 ms frame against the
/// sweep's frequency there, from zero crossings. The waveform correlation is reported as well.
fn opus_round_trip(input: &[i16], rate: u32) -> Result<RoundTrip> {
    let frame = rate as usize / 50;
    let mut enc = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip)?;
    enc.set_bitrate(opus::Bitrate::Bits(32_000))?;
    enc.set_inband_fec(true)?;
    let mut dec = opus::Decoder::new(rate, opus::Channels::Mono)?;
    let (mut packets, mut bytes) = (0usize, 0usize);
    let mut decoded = Vec::with_capacity(input.len());
    let mut pcm = vec![0i16; frame];
    for chunk in input.chunks_exact(frame) {
        let packet = enc.encode_vec(chunk, 4000)?;
        packets += 1;
        bytes += packet.len();
        let k = dec.decode(&packet, &mut pcm, false)?;
        decoded.extend_from_slice(&pcm[..k]);
    }
    let (n, rate_f) = (input.len(), f64::from(rate));
    let sweep_ref = sweep(rate, n);
    let (lag, correlation) = best_correlation(&sweep_ref, &decoded, 2000);
    let aligned = &decoded[lag.min(decoded.len())..];
    let (mut frames, mut on_pitch) = (0, 0);
    // Skip the first 100 ms (the codec settling).
    for (i, f) in aligned.chunks_exact(frame).enumerate().skip(5) {
        let mid = (i * frame + frame / 2) as f64 / n as f64;
        let expected = SWEEP_FROM_HZ + (SWEEP_TO_HZ - SWEEP_FROM_HZ) * mid;
        let crossings = f.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64;
        let measured = crossings / 2.0 / (frame as f64 / rate_f);
        frames += 1;
        if (measured - expected).abs() <= expected * 0.1 + 50.0 {
            on_pitch += 1;
        }
    }
    Ok(RoundTrip { packets, bytes, decoded: decoded.len(), lag, correlation, frames, on_pitch })
}

/// The lag (0..=max_lag samples; Opus delays by its look-ahead) at which `b` best matches `a`,
/// and the normalised correlation over the whole overlap there. The lag is searched on the first
/// 200 ms (cheap enough for a debug build under TCG); the sweep has no period, so one peak.
fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> (usize, f64) {
    let mut best = (0, f64::MIN);
    for lag in 0..=max_lag.min(b.len()) {
        let c = correlation(a, &b[lag..], 9600);
        if c > best.1 {
            best = (lag, c);
        }
    }
    (best.0, correlation(a, &b[best.0..], usize::MAX))
}

fn correlation(a: &[i16], b: &[i16], limit: usize) -> f64 {
    let len = a.len().min(b.len()).min(limit);
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a[..len].iter().zip(&b[..len]) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa > 0.0 && bb > 0.0 { ab / (aa * bb).sqrt() } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_round_trip_of_the_sweep_stays_on_pitch() {
        let n = 96_000;
        let rt = opus_round_trip(&sweep(48_000, n), 48_000).unwrap();
        println!(
            "packets {} bytes {} lag {} corr {:.3} on pitch {}/{}",
            rt.packets, rt.bytes, rt.lag, rt.correlation, rt.on_pitch, rt.frames
        );
        assert_eq!(rt.packets, 100);
        assert_eq!(rt.decoded, n);
        assert!(rt.on_pitch * 100 >= rt.frames * MIN_ON_PITCH_PERCENT);
    }

    #[test]
    fn silence_is_not_on_pitch() {
        let rt = opus_round_trip(&vec![0i16; 96_000], 48_000).unwrap();
        assert_eq!(rt.on_pitch, 0, "{}/{}", rt.on_pitch, rt.frames);
    }

    #[test]
    fn a_different_tone_is_not_on_pitch() {
        let tone: Vec<i16> =
            (0..96_000).map(|i| ((i as f64 * 2.0 * PI * 5000.0 / 48_000.0).sin() * 16384.0) as i16).collect();
        let rt = opus_round_trip(&tone, 48_000).unwrap();
        assert!(rt.on_pitch * 100 < rt.frames * 10, "{}/{}", rt.on_pitch, rt.frames);
    }

    #[test]
    fn yuyv_converts_to_i420() {
        // 4x2: luma kept per pixel, chroma averaged over the two rows.
        let row0 = [10, 100, 20, 200, 30, 110, 40, 210];
        let row1 = [50, 102, 60, 202, 70, 112, 80, 212];
        let src: Vec<u8> = row0.iter().chain(&row1).copied().collect();
        let out = yuyv_to_i420(&src, 4, 2);
        assert_eq!(&out[..8], &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!(&out[8..10], &[101, 111]);
        assert_eq!(&out[10..12], &[201, 211]);
    }
}
