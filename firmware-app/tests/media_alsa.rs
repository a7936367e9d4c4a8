//! The real ALSA code path without a sound card: alsa-lib's `type file` PCM
//! (`infile` for capture, `file` for playback, over a `null` slave), selected
//! through a generated `ALSA_CONFIG_PATH`. That PCM is not paced: these tests
//! also show the pipeline paces itself.
#![cfg(feature = "alsa")]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roombox::media::alsa_io::{AlsaCapture, AlsaPlayback};
use roombox::media::audio::{OpusDecoder, OpusEncoder};
use roombox::media::metrics::MediaMetrics;
use roombox::media::pipeline::{CollectSink, MIC_TRACK};
use roombox::media::source::{AudioSink, AudioSource, parse_wav, wav_bytes};
use roombox::media::{
    AudioSourceConfig, Devices, MediaClock, MediaConfig, Pipeline, PipelineInput, PlaybackConfig,
};
use sfu_core::LocalPacket;

const RATE: usize = 48_000;

/// The known WAV: a 300 Hz tone at -20 dBFS with a 2 kHz beep (-6 dBFS) for
/// 100 ms every 500 ms, plus a low-level ramp so every sample is distinct.
fn known_samples(seconds: usize) -> Vec<i16> {
    (0..seconds * RATE)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let beep = (i % (RATE / 2)) < RATE / 10;
            let mut x = 0.1 * (2.0 * std::f64::consts::PI * 300.0 * t).sin();
            if beep {
                x += 0.5 * (2.0 * std::f64::consts::PI * 2000.0 * t).sin();
            }
            (x * 32767.0) as i16 ^ ((i & 3) as i16)
        })
        .collect()
}

struct Alsa {
    dir: PathBuf,
    wav: Vec<u8>,
}

/// Write the WAV, its raw PCM as the capture `infile`, and an alsa-lib
/// configuration defining every PCM these tests open; point alsa-lib at it.
/// (alsa-lib reads its configuration once per process: one config for all.)
fn alsa() -> &'static Alsa {
    static ALSA: OnceLock<Alsa> = OnceLock::new();
    ALSA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("roombox-alsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let samples = known_samples(20);
        let wav = wav_bytes(&samples);
        std::fs::write(dir.join("known.wav"), &wav).unwrap();
        // the capture infile is the WAV's PCM data, as a sound card would deliver it
        std::fs::write(dir.join("known.raw"), &wav[44..]).unwrap();
        let d = dir.display();
        let conf = format!(
            r#"
pcm.filecap {{ type file slave.pcm {{ type null }} file "/dev/null" infile "{d}/known.raw" format "raw" }}
pcm.pipecap {{ type file slave.pcm {{ type null }} file "/dev/null" infile "{d}/known.raw" format "raw" }}
pcm.fileplay {{ type file slave.pcm {{ type null }} file "{d}/play.raw" format "raw" }}
pcm.mixplay {{ type file slave.pcm {{ type null }} file "{d}/mix.raw" format "raw" }}
pcm.echocap {{ type file slave.pcm {{ type null }} file "/dev/null" infile "{d}/echo.raw" format "raw" }}
pcm.echoplay {{ type file slave.pcm {{ type null }} file "{d}/echoplay.raw" format "raw" }}
pcm.!default {{ type null }}
"#
        );
        std::fs::write(dir.join("asound.conf"), conf).unwrap();
        // SAFETY: set once, before any thread of this test binary opens ALSA.
        unsafe { std::env::set_var("ALSA_CONFIG_PATH", dir.join("asound.conf")) };
        Alsa { dir, wav }
    })
}

fn read_raw(path: &Path) -> Vec<i16> {
    std::fs::read(path).unwrap().chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

#[test]
fn alsa_capture_returns_the_known_wav_byte_for_byte() {
    let a = alsa();
    let expected = parse_wav(&a.wav).unwrap();
    let mut mic = AlsaCapture::open("filecap", 480).unwrap();
    let mut got = vec![0i16; 5 * RATE];
    let started = Instant::now();
    for chunk in got.chunks_mut(480) {
        mic.read(chunk, Instant::now()).unwrap();
    }
    let took = started.elapsed();
    assert_eq!(got[..], expected[..5 * RATE], "5 s of capture equal the WAV sample for sample");
    assert_eq!(mic.xruns(), 0);
    eprintln!("5 s captured through alsa-lib in {took:?} (the file PCM is not paced)");
}

#[test]
fn alsa_playback_writes_exactly_what_it_is_given() {
    let a = alsa();
    let samples = known_samples(1);
    {
        let mut speakers = AlsaPlayback::open("fileplay", 480).unwrap();
        for chunk in samples.chunks(960) {
            speakers.write(chunk).unwrap();
        }
    }
    assert_eq!(read_raw(&a.dir.join("play.raw")), samples);
}

fn decode_mic(packets: &[LocalPacket]) -> Vec<(u32, Vec<i16>)> {
    let mut dec = OpusDecoder::new().unwrap();
    let mut out = Vec::new();
    for p in packets.iter().filter(|p| p.track == MIC_TRACK) {
        let mut pcm = vec![0i16; 960];
        dec.decode(&p.payload, &mut pcm).unwrap();
        out.push((p.timestamp, pcm));
    }
    out
}

/// The pipeline with the ALSA microphone: the unpaced PCM is read at the
/// capture clock's pace (not as fast as alsa-lib returns), and the WAV's
/// beeps come out at their place in RTP time.
#[test]
fn pipeline_paces_an_unpaced_alsa_microphone_and_keeps_its_content() {
    alsa();
    let cfg = MediaConfig {
        width: 320,
        height: 180,
        fps: 10,
        audio: AudioSourceConfig::Alsa { device: "pipecap".into() },
        opus_dtx: false,
        ..MediaConfig::default()
    };
    let clock = MediaClock::new(Instant::now());
    let sink = Arc::new(CollectSink::default());
    let started = Instant::now();
    let pipeline = Pipeline::start(
        &cfg,
        clock,
        Devices::from_config(&cfg, clock).unwrap(),
        sink.clone(),
        MediaMetrics::new().unwrap(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    pipeline.stop();
    let elapsed = started.elapsed();
    let packets: Vec<LocalPacket> = sink.packets.lock().drain(..).map(|(_, p)| p).collect();
    let mic = decode_mic(&packets);
    let expected_frames = elapsed.as_millis() as usize / 20;
    assert!(
        mic.len() + 5 >= expected_frames && mic.len() <= expected_frames + 2,
        "{} audio frames in {elapsed:?}: paced by the clock, not by the device",
        mic.len()
    );
    // beeps (2 kHz, every 500 ms from the file's start) are where the file has them
    let first_ts = mic[0].0;
    let loud: Vec<u32> = mic
        .iter()
        .filter(|(_, pcm)| pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0) > 12_000)
        .map(|(ts, _)| ts.wrapping_sub(first_ts) / 48)
        .collect();
    assert!(loud.len() >= 15, "beep frames found: {loud:?}");
    for ms in &loud {
        let phase = ms % 500;
        assert!(phase <= 120 || phase >= 480, "loud frame at {ms} ms is outside a beep");
    }
}

fn tone_packets(freq: f64, frames: usize) -> Vec<Bytes> {
    let mut enc = OpusEncoder::new(48_000, false).unwrap();
    (0..frames)
        .map(|k| {
            let pcm: Vec<i16> = (k * 960..(k + 1) * 960)
                .map(|i| {
                    (0.25 * 32767.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 48_000.0).sin()) as i16
                })
                .collect();
            Bytes::copy_from_slice(enc.encode(&pcm).unwrap().unwrap().payload)
        })
        .collect()
}

/// Goertzel power of `freq` in a window, relative to full scale.
fn tone_power(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / RATE as f64;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = v as f64 / 32768.0 + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64 * x.len() as f64)
}

/// Two remote participants arrive as RTP; their decoded mix is played
/// through ALSA at the clock's pace; the file it writes holds both voices.
#[test]
fn remote_audio_is_mixed_and_played_through_alsa() {
    let a = alsa();
    let cfg = MediaConfig {
        width: 320,
        height: 180,
        fps: 5,
        playback: PlaybackConfig::Alsa { device: "mixplay".into() },
        ..MediaConfig::default()
    };
    let clock = MediaClock::new(Instant::now());
    let sink = Arc::new(CollectSink::default());
    let metrics = MediaMetrics::new().unwrap();
    let started = Instant::now();
    let pipeline =
        Pipeline::start(&cfg, clock, Devices::from_config(&cfg, clock).unwrap(), sink, metrics.clone())
            .unwrap();
    let alice = tone_packets(440.0, 75);
    let bob = tone_packets(1000.0, 25);
    let feed_start = Instant::now();
    for (k, packet) in alice.iter().enumerate() {
        pipeline.input(PipelineInput::RemoteAudio {
            track: "alice/mic".into(),
            seq: k as u16,
            payload: packet.clone(),
        });
        if (25..50).contains(&k) {
            let j = k - 25;
            pipeline.input(PipelineInput::RemoteAudio {
                track: "bob/mic".into(),
                seq: 7000 + j as u16,
                payload: bob[j].clone(),
            });
        }
        // the remote senders' clock: one packet per 20 ms, on schedule
        let next = feed_start + Duration::from_millis(20 * (k as u64 + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    std::thread::sleep(Duration::from_millis(300));
    pipeline.stop();
    let elapsed = started.elapsed();
    let out = read_raw(&a.dir.join("mix.raw"));
    let played_s = out.len() as f64 / RATE as f64;
    assert!(
        (played_s - elapsed.as_secs_f64()).abs() < 0.25,
        "played {played_s:.2} s of audio in {:.2} s: paced by the clock",
        elapsed.as_secs_f64()
    );
    let windows: Vec<(bool, bool)> =
        out.chunks_exact(960).map(|w| (tone_power(w, 440.0) > 1e-3, tone_power(w, 1000.0) > 1e-3)).collect();
    let picture: String = windows
        .iter()
        .map(|w| match w {
            (true, true) => 'B',
            (true, false) => 'a',
            (false, true) => 'b',
            _ => '.',
        })
        .collect();
    eprintln!("20 ms windows (a: alice, b: bob, B: both): {picture}");
    let alice_n = windows.iter().filter(|w| w.0).count();
    let bob_n = windows.iter().filter(|w| w.1).count();
    let both = windows.iter().filter(|w| w.0 && w.1).count();
    assert!((70..=78).contains(&alice_n), "alice heard in {alice_n} windows");
    assert!((22..=28).contains(&bob_n), "bob heard in {bob_n} windows");
    assert!(both >= 22, "both at once in {both} windows");
    let first_alice = windows.iter().position(|w| w.0).unwrap();
    let first_bob = windows.iter().position(|w| w.1).unwrap();
    assert!((first_bob as i64 - first_alice as i64 - 25).abs() <= 2, "bob joins 0.5 s after alice");
    assert_eq!(metrics.audio_xruns.with_label_values(&["playback"]).get(), 0);
}

/// Echo cancellation in the running pipeline: what the speakers play (two
/// remote talkers, decoded from Opus) comes back into the ALSA microphone
/// 100 ms later at half amplitude. With AEC the microphone's packets carry
/// far less of it than without.
#[cfg(feature = "aec")]
#[test]
fn the_room_does_not_send_the_far_end_back() {
    let a = alsa();
    // far end: syllable-like noise bursts, as Opus packets and as they will be played
    let mut x = 0x2545_f491u32;
    let far: Vec<i16> = (0..RATE * 5)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if (i / 9600) % 3 == 2 { 0 } else { (x as i16) / 4 }
        })
        .collect();
    let mut enc = OpusEncoder::new(48_000, false).unwrap();
    let mut dec = OpusDecoder::new().unwrap();
    let mut packets = Vec::new();
    let mut played = Vec::new();
    for chunk in far.chunks(960) {
        let p = Bytes::copy_from_slice(enc.encode(chunk).unwrap().unwrap().payload);
        let mut pcm = vec![0i16; 960];
        dec.decode(&p, &mut pcm).unwrap();
        played.extend_from_slice(&pcm);
        packets.push(p);
    }
    // the room: the microphone hears the speakers 100 ms later (60 ms of it is
    // the jitter buffer's pre-roll), at half amplitude
    let delay = RATE / 10;
    let mut echo = vec![0i16; delay];
    echo.extend(played.iter().map(|s| s / 2));
    echo.resize(RATE * 8, 0);
    let raw: Vec<u8> = echo.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(a.dir.join("echo.raw"), raw).unwrap();

    let run = |aec: bool| -> f64 {
        let cfg = MediaConfig {
            width: 320,
            height: 180,
            fps: 5,
            audio: AudioSourceConfig::Alsa { device: "echocap".into() },
            playback: PlaybackConfig::Alsa { device: "echoplay".into() },
            aec,
            opus_dtx: false,
            ..MediaConfig::default()
        };
        let clock = MediaClock::new(Instant::now());
        let sink = Arc::new(CollectSink::default());
        let pipeline = Pipeline::start(
            &cfg,
            clock,
            Devices::from_config(&cfg, clock).unwrap(),
            sink.clone(),
            MediaMetrics::new().unwrap(),
        )
        .unwrap();
        assert_eq!(
            pipeline.status().aec,
            if aec { roombox::media::AecState::Active } else { roombox::media::AecState::Disabled }
        );
        let start = Instant::now();
        for (k, p) in packets.iter().enumerate() {
            pipeline.input(PipelineInput::RemoteAudio {
                track: "far/mic".into(),
                seq: k as u16,
                payload: p.clone(),
            });
            std::thread::sleep(
                (start + Duration::from_millis(20 * (k as u64 + 1)))
                    .saturating_duration_since(Instant::now()),
            );
        }
        pipeline.stop();
        let packets: Vec<LocalPacket> = sink.packets.lock().drain(..).map(|(_, p)| p).collect();
        let mic = decode_mic(&packets);
        // the last 2 s, after the canceller has converged
        let tail: Vec<i16> =
            mic[mic.len().saturating_sub(100)..].iter().flat_map(|(_, pcm)| pcm.iter().copied()).collect();
        tail.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / tail.len().max(1) as f64
    };
    let without = run(false);
    let with = run(true);
    let reduction_db = 10.0 * (without / with.max(1.0)).log10();
    eprintln!("echo at the microphone: {:.1} dB less with AEC", reduction_db);
    assert!(reduction_db > 10.0, "AEC removed only {reduction_db:.1} dB of echo");
}
