//! `vm-probe`: runs as the test program inside the VM that `scripts/vm-test` boots (a Debian
//! kernel with the `vivid` camera and the `snd-aloop` sound card) and drives the daemon's own media
//! pipeline (`roombox::media`) against real kernel drivers:
//!
//! - **video**: [`roombox::media::v4l2::capture_frames`] with the board profile's camera, format,
//!   size and rate: the pipeline's V4L2 source (format negotiation, mmap streaming), its pixel
//!   converters and its openh264 encoder and RFC 6184 packetizer, as the room camera runs them.
//!   The probe then plays the viewer: the pipeline's depacketizer and openh264's decoder.
//!   Checked: every captured frame became RTP payloads that decode to a picture (counts equal), the
//!   decoded pictures match the captured ones (luma PSNR), the picture is vivid's colour-bar test
//!   pattern (eight bars of falling luma), not a blank or stale buffer, and frames change.
//! - **audio**: a known sweep is played into the profile's playback PCM (snd-aloop device 0; the
//!   player is test stimulus, with plain `alsa` calls) while the pipeline's microphone source
//!   ([`roombox::media::alsa_io::AlsaCapture`], with the configured capture buffer) records the
//!   profile's capture PCM (device 1): the sweep must come back sample-exact, then through the
//!   pipeline's Opus encoder (its default bitrate, FEC and DTX settings) and decoder it must still
//!   follow the sweep's pitch.
//!
//! Results go to stdout (the VM's serial console) as `ROOMBOX-VM key=value` lines, ending with
//! `ROOMBOX-VM result=PASS` or `result=FAIL`; the host script parses them.

use std::f64::consts::PI;
use std::process::ExitCode;
use std::time::Instant;

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use anyhow::{Context, Result, bail, ensure};
use roombox::board::BoardProfile;
use roombox::media::MediaConfig;
use roombox::media::alsa_io::{AlsaCapture, frames_in_ms};
use roombox::media::audio::{OpusDecoder, OpusEncoder};
use roombox::media::frame::{AUDIO_FRAME_SAMPLES, AUDIO_RATE, VideoFrame, from_decoded, psnr_y};
use roombox::media::h264::{DEFAULT_MTU, H264Depacketizer};
use roombox::media::source::AudioSource;
use roombox::media::v4l2::{PixelFormat, capture_frames};

mod gpio;

/// Luma PSNR every decoded frame must reach (dB). Colour bars at the pipeline's bitrate come back
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
    /// The microphone's ALSA buffer (the pipeline's `capture_buffer_ms`).
    capture_buffer_ms: u32,
    /// Drive the panel on a real GPIO chip: `auto` (the first chip with four free lines), a
    /// label, or `none`.
    gpio: String,
}

fn args() -> Result<Args> {
    let mut a = Args {
        board: "qemu-arm64".into(),
        frames: 60,
        audio_ms: 2000,
        capture_buffer_ms: MediaConfig::default().capture_buffer_ms,
        gpio: "auto".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--board" => a.board = value()?,
            "--frames" => a.frames = value()?.parse().context("--frames")?,
            "--audio-ms" => a.audio_ms = value()?.parse().context("--audio-ms")?,
            "--capture-buffer-ms" => a.capture_buffer_ms = value()?.parse().context("--capture-buffer-ms")?,
            "--gpio" => a.gpio = value()?,
            other => bail!(
                "unknown argument {other} (--board NAME --frames N --audio-ms MS --capture-buffer-ms MS --gpio auto|LABEL|none)"
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
        if let Err(e) = audio(&profile, a.audio_ms, a.capture_buffer_ms, &mut failures) {
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
// Video: vivid -> the pipeline's V4L2 source, converter, openh264 encoder, RTP packetizer
//        -> the pipeline's depacketizer -> openh264 decoder

fn video(profile: &BoardProfile, n: usize, failures: &mut Vec<String>) -> Result<()> {
    let cam = profile.camera();
    let fmt = *profile.encoder_input_format().context("the profile's encoder size has no camera format")?;
    let enc = profile.encoder();
    let format = PixelFormat::from_fourcc_str(&fmt.fourcc.to_string())
        .with_context(|| format!("the pipeline cannot convert {}", fmt.fourcc))?;
    let want = (enc.width, enc.height, enc.fps);
    report("video.device", cam.device.display());
    report("video.want", format!("{} {}x{}@{}", fmt.fourcc, want.0, want.1, want.2));

    let t = Instant::now();
    let (neg, frames, payloads) = capture_frames(&cam.device, &[format], want, n)?;
    let secs = t.elapsed().as_secs_f64();
    report("video.format", format!("{:?} {}x{}", neg.format, neg.width, neg.height));
    report("video.interval", format!("{}/{}", neg.interval.0, neg.interval.1));
    // capture and encode run in one loop (as in the room camera's thread): under emulation
    // this is the encoder's speed, and vivid drops the frames the loop was too slow for
    report("video.capture_encode_fps", format!("{:.1}", frames.len() as f64 / secs));
    ensure!(
        (neg.format, neg.width, neg.height) == (format, fmt.width, fmt.height),
        "negotiated {:?} {}x{}, the profile wants {} {}x{}",
        neg.format,
        neg.width,
        neg.height,
        fmt.fourcc,
        fmt.width,
        fmt.height
    );
    report("video.captured", frames.len());
    let changing = frames.windows(2).filter(|p| p[0].y != p[1].y).count();
    report("video.changing_frames", changing);
    if changing == 0 {
        failures
            .push("video: every captured frame is identical (vivid's counter overlay should move)".into());
    }

    if let Some(first) = frames.first() {
        let bars = colour_bars(first);
        report("video.bar_luma", format!("{bars:?}"));
        let falling = bars.windows(2).filter(|b| b[0] > b[1].saturating_add(8)).count() + 1;
        report("video.bars", falling);
        if falling != 8 {
            failures.push(format!("video: expected 8 colour bars of falling luma, saw {falling}: {bars:?}"));
        }
    }

    // The viewer's side: RTP payloads (marker on each picture's last) -> access unit -> picture.
    let mut depacketizer = H264Depacketizer::new();
    let mut decoder = openh264::decoder::Decoder::new()?;
    let (mut encoded, mut decoded, mut bytes, mut packets, mut oversized) =
        (0usize, 0usize, 0usize, 0usize, 0);
    let mut seq = 0u16;
    let mut psnrs = Vec::with_capacity(n);
    let t = Instant::now();
    for (k, (frame, pkts)) in frames.iter().zip(&payloads).enumerate() {
        if pkts.is_empty() {
            continue;
        }
        encoded += 1;
        let mut au = None;
        for (i, p) in pkts.iter().enumerate() {
            packets += 1;
            bytes += p.len();
            oversized += usize::from(p.len() > DEFAULT_MTU);
            if let Some(unit) = depacketizer.push(seq, p, i + 1 == pkts.len())? {
                au = Some(unit.to_vec());
            }
            seq = seq.wrapping_add(1);
        }
        let au = au.with_context(|| format!("frame {k}: its payloads made no access unit"))?;
        if let Some(picture) = decoder.decode(&au)? {
            let out = from_decoded(&picture, frame.capture_time);
            ensure!(
                (out.width, out.height) == (frame.width, frame.height),
                "decoded {}x{}, sent {}x{}",
                out.width,
                out.height,
                frame.width,
                frame.height
            );
            decoded += 1;
            psnrs.push(psnr_y(frame, &out));
        }
    }
    report("video.encoded", encoded);
    report("video.decoded", decoded);
    report("video.rtp_packets", packets);
    report("video.h264_bytes", bytes);
    report("video.decode_fps", format!("{:.1}", decoded as f64 / t.elapsed().as_secs_f64()));
    let min = psnrs.iter().copied().fold(f64::INFINITY, f64::min);
    let avg = psnrs.iter().sum::<f64>() / psnrs.len().max(1) as f64;
    report("video.psnr_min_db", format!("{min:.2}"));
    report("video.psnr_avg_db", format!("{avg:.2}"));
    if frames.len() != n || encoded != n || decoded != n {
        failures.push(format!(
            "video: wanted {n}, captured {}, encoded {encoded}, decoded {decoded}",
            frames.len()
        ));
    }
    if oversized > 0 {
        failures.push(format!("video: {oversized} RTP payloads over the {DEFAULT_MTU}-byte MTU"));
    }
    if psnrs.is_empty() || min < MIN_PSNR_DB {
        failures.push(format!("video: luma PSNR {min:.2} dB below {MIN_PSNR_DB} dB"));
    }
    Ok(())
}

/// Luma at the middle of each of eight equal-width columns, three quarters down the picture:
/// vivid's default 75 % colour bars (white, yellow, cyan, green, magenta, red, blue, black) sit
/// below its text overlay there, so luma must fall from bar to bar.
fn colour_bars(f: &VideoFrame) -> Vec<u8> {
    let row = f.height * 3 / 4;
    (0..8).map(|i| f.y[row * f.width + (2 * i + 1) * f.width / 16]).collect()
}

// ---------------------------------------------------------------------------------------------
// Audio: sweep -> snd-aloop playback -> the pipeline's ALSA microphone -> exact check
//        -> the pipeline's Opus encoder -> Opus decoder -> pitch check

/// The stimulus player's PCM: a second of buffer, so the sweep is never interrupted by an
/// underrun even when the emulated guest stalls (the player is not the code under test).
fn open_player(name: &str, rate: u32, period: usize) -> Result<PCM> {
    let pcm = PCM::new(name, Direction::Playback, false).with_context(|| format!("open {name}"))?;
    {
        let hwp = HwParams::any(&pcm)?;
        hwp.set_access(Access::RWInterleaved)?;
        hwp.set_format(Format::s16())?;
        hwp.set_channels(1)?;
        hwp.set_rate(rate, ValueOr::Nearest)?;
        hwp.set_period_size_near(period as alsa::pcm::Frames, ValueOr::Nearest)?;
        hwp.set_buffer_size_near((rate as usize) as alsa::pcm::Frames)?;
        pcm.hw_params(&hwp).with_context(|| format!("hw params of {name}"))?;
        let got = pcm.hw_params_current()?;
        ensure!(got.get_rate()? == rate, "{name}: rate {} instead of {rate}", got.get_rate()?);
        report(
            "audio.playback_buffer",
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

fn audio(profile: &BoardProfile, ms: u32, capture_buffer_ms: u32, failures: &mut Vec<String>) -> Result<()> {
    let a = profile.audio();
    ensure!(a.channels == 1, "the pipeline captures mono; the profile has {} channels", a.channels);
    ensure!(
        a.sample_rate == AUDIO_RATE,
        "the pipeline captures at {AUDIO_RATE} Hz, the profile says {}",
        a.sample_rate
    );
    let rate = AUDIO_RATE;
    let period = frames_in_ms(a.period_ms);
    // whole Opus frames, so every captured sample is encoded
    let n = (frames_in_ms(ms) / AUDIO_FRAME_SAMPLES) * AUDIO_FRAME_SAMPLES;
    let pattern = sweep(rate, n);
    report("audio.capture", &a.capture);
    report("audio.playback", &a.playback);

    let mut mic = AlsaCapture::open_buffered(&a.capture, period, frames_in_ms(capture_buffer_ms))?;
    report("audio.source", mic.describe());
    if let Some((p, b)) = mic.granted() {
        report("audio.capture_buffer", format!("{b} frames ({} ms), period {p}", b * 1000 / rate as usize));
    }
    let playback = open_player(&a.playback, rate, period)?;

    // Capture the whole played length plus a second of margin, period by period, as the
    // microphone thread reads it.
    let total = (n + rate as usize) / period * period;
    let mut captured = vec![0i16; total];
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
        let read = captured.chunks_mut(period).try_for_each(|chunk| mic.read(chunk, Instant::now()));
        let underruns = player.join().map_err(|_| anyhow::anyhow!("player thread panicked"))??;
        report("audio.playback_underruns", underruns);
        read.context("the microphone source")
    })?;
    report("audio.capture_xruns", mic.xruns());
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

    // Through the pipeline's Opus encoder and back.
    let rt = opus_round_trip(got)?;
    report("audio.opus_packets", rt.packets);
    report("audio.opus_dtx_frames", rt.dtx);
    report("audio.opus_bytes", rt.bytes);
    report("audio.opus_lag_samples", rt.lag);
    report("audio.opus_correlation", format!("{:.4}", rt.correlation));
    report("audio.opus_on_pitch_frames", format!("{}/{}", rt.on_pitch, rt.frames));
    let frames = got.len() / AUDIO_FRAME_SAMPLES;
    if rt.packets != frames || rt.decoded != frames * AUDIO_FRAME_SAMPLES {
        failures.push(format!(
            "audio: {frames} frames of sweep gave {} Opus packets ({} left out by DTX), decoded to {} samples",
            rt.packets, rt.dtx, rt.decoded
        ));
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
    dtx: usize,
    bytes: usize,
    decoded: usize,
    lag: usize,
    correlation: f64,
    frames: usize,
    on_pitch: usize,
}

/// Encodes `input` (which must start with the sweep) with the pipeline's Opus encoder at the
/// pipeline's default settings (20 ms frames, bitrate, in-band FEC, DTX), decodes it with the
/// pipeline's decoder, and checks the result follows the sweep. A frame DTX left out is silence
/// here.
///
/// Opus is a perceptual codec: at speech bitrates it keeps pitch and spectrum, not the waveform
/// (SILK's phase is free), so the content check is the pitch of each 20 ms frame against the
/// sweep's frequency there, from zero crossings. The waveform correlation is reported as well.
fn opus_round_trip(input: &[i16]) -> Result<RoundTrip> {
    let cfg = MediaConfig::default();
    let frame = AUDIO_FRAME_SAMPLES;
    let mut enc = OpusEncoder::new(cfg.opus_bitrate_bps, cfg.opus_dtx)?;
    let mut dec = OpusDecoder::new()?;
    let (mut packets, mut dtx, mut bytes) = (0usize, 0usize, 0usize);
    let mut decoded = Vec::with_capacity(input.len());
    let mut pcm = vec![0i16; frame];
    for chunk in input.chunks_exact(frame) {
        match enc.encode(chunk)? {
            Some(packet) => {
                packets += 1;
                bytes += packet.payload.len();
                let k = dec.decode(packet.payload, &mut pcm)?;
                decoded.extend_from_slice(&pcm[..k]);
            }
            None => {
                dtx += 1;
                decoded.extend(std::iter::repeat_n(0i16, frame));
            }
        }
    }
    let (n, rate_f) = (input.len(), f64::from(AUDIO_RATE));
    let sweep_ref = sweep(AUDIO_RATE, n);
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
    Ok(RoundTrip { packets, dtx, bytes, decoded: decoded.len(), lag, correlation, frames, on_pitch })
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
        let rt = opus_round_trip(&sweep(48_000, n)).unwrap();
        println!(
            "packets {} dtx {} bytes {} lag {} corr {:.3} on pitch {}/{}",
            rt.packets, rt.dtx, rt.bytes, rt.lag, rt.correlation, rt.on_pitch, rt.frames
        );
        assert_eq!((rt.packets, rt.dtx), (100, 0));
        assert_eq!(rt.decoded, n);
        assert!(rt.on_pitch * 100 >= rt.frames * MIN_ON_PITCH_PERCENT);
    }

    #[test]
    fn silence_is_not_on_pitch() {
        let rt = opus_round_trip(&vec![0i16; 96_000]).unwrap();
        assert_eq!(rt.on_pitch, 0, "{}/{}", rt.on_pitch, rt.frames);
        assert_eq!(rt.decoded, 96_000);
    }

    #[test]
    fn a_different_tone_is_not_on_pitch() {
        let tone: Vec<i16> =
            (0..96_000).map(|i| ((i as f64 * 2.0 * PI * 5000.0 / 48_000.0).sin() * 16384.0) as i16).collect();
        let rt = opus_round_trip(&tone).unwrap();
        assert!(rt.on_pitch * 100 < rt.frames * 10, "{}/{}", rt.on_pitch, rt.frames);
    }

    #[test]
    fn the_bar_probe_reads_eight_falling_bars_from_a_bar_picture() {
        // eight columns of falling luma below a flat band, as vivid draws them
        let (w, h) = (64, 36);
        let mut f = VideoFrame::black(w, h, Instant::now());
        for r in h / 2..h {
            for c in 0..w {
                f.y[r * w + c] = 235 - (c / (w / 8)) as u8 * 28;
            }
        }
        let bars = colour_bars(&f);
        assert_eq!(bars.windows(2).filter(|b| b[0] > b[1] + 8).count() + 1, 8, "{bars:?}");
        let flat = VideoFrame::black(w, h, Instant::now());
        assert_eq!(colour_bars(&flat).windows(2).filter(|b| b[0] > b[1] + 8).count() + 1, 1);
    }
}
