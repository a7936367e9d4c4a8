//! Media pipeline benchmark: `cargo bench -p firmware-app --bench media`.
//!
//! Prints (numbers, never pass/fail):
//! 1. H.264 encode + packetize ms/frame and fps at 360p, 720p, 1080p
//!    (synthetic pattern, one thread, as the room camera runs);
//! 2. capture-to-RTP latency p50/p99 of a 720p30 publish, from the timecode
//!    burnt into each frame and read back from the decoded picture;
//! 3. CPU % of one core for that 720p30 publish (camera + microphone
//!    threads), from `/proc/self/stat`.
//!
//! Options (env): `MEDIA_BENCH_SECS` (default 10) for the publish run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use roombox::media::frame::{VideoFrame, from_decoded};
use roombox::media::h264::H264Depacketizer;
use roombox::media::metrics::MediaMetrics;
use roombox::media::pipeline::{CAMERA_TRACK, CollectSink, MIC_TRACK, VideoPublisher};
use roombox::media::source::{SyntheticVideo, VideoSource};
use roombox::media::{Devices, MediaClock, MediaConfig, Pipeline, timecode};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// User + system CPU seconds of this process so far (USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/self/stat")
}

/// The same for the calling thread only.
fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // fields after the command name (which is in parentheses and may hold spaces)
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

fn encode_bench(width: u32, height: u32, frames: usize, bitrate: u32) {
    let epoch = Instant::now();
    let clock = MediaClock::new(epoch);
    let cfg = MediaConfig {
        width,
        height,
        fps: 30,
        start_bitrate_bps: bitrate,
        max_bitrate_bps: bitrate.max(2_500_000),
        keyframe_min_interval_ms: 0,
        ..MediaConfig::default()
    };
    let mut src = SyntheticVideo::new(clock, width as usize, height as usize);
    let mut publisher = VideoPublisher::new(&cfg, clock).unwrap();
    let sink = CollectSink::default();
    let mut frame = VideoFrame::black(width as usize, height as usize, epoch);
    // warm up (the first frame initialises the encoder)
    for k in 0..10u64 {
        src.next_frame(&mut frame, epoch + Duration::from_micros(k * 33_333)).unwrap();
        publisher.publish(&frame, &sink, None).unwrap();
    }
    let mut times = Vec::with_capacity(frames);
    let mut bytes = 0usize;
    sink.packets.lock().clear();
    let cpu0 = thread_cpu_seconds();
    let wall0 = Instant::now();
    for k in 10..10 + frames as u64 {
        src.next_frame(&mut frame, epoch + Duration::from_micros(k * 33_333)).unwrap();
        let t = Instant::now();
        publisher.publish(&frame, &sink, None).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - cpu0;
    for (_, p) in sink.packets.lock().drain(..) {
        bytes += p.payload.len();
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(|a, b| a.total_cmp(b));
    let cpu_ms = cpu * 1000.0 / frames as f64;
    println!(
        "encode {:>4}p {:>5} kbit/s: CPU {:6.2} ms/frame => {:6.1} fps per core | wall {:6.2} ms/frame (p50 {:.2}, p99 {:.2}); \
         {:5.0} kbit/s out at 30 fps; thread got {:.0} % of a core",
        height,
        bitrate / 1000,
        cpu_ms,
        1000.0 / cpu_ms,
        mean,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        bytes as f64 * 8.0 / (frames as f64 / 30.0) / 1000.0,
        cpu / wall * 100.0,
    );
}

fn publish_bench(secs: u64, simulcast: bool) {
    let cfg = MediaConfig {
        width: 1280,
        height: 720,
        fps: 30,
        simulcast,
        start_bitrate_bps: 1_200_000,
        ..MediaConfig::default()
    };
    let clock = MediaClock::new(Instant::now());
    let sink = Arc::new(CollectSink::default());
    let devices = Devices::from_config(&cfg, clock).unwrap();
    let pipeline = Pipeline::start(&cfg, clock, devices, sink.clone(), MediaMetrics::new().unwrap()).unwrap();
    // let it settle, then measure a steady window
    std::thread::sleep(Duration::from_secs(1));
    sink.packets.lock().clear();
    // a keyframe at the window's start, so the window decodes from its first frame
    pipeline.input(roombox::media::PipelineInput::KeyframeRequest { track: CAMERA_TRACK });
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    let packets: Vec<_> = sink.packets.lock().drain(..).collect();
    pipeline.stop();

    // latency: from the capture time burnt into each frame to the moment its
    // last RTP packet reached the sink (decoded after the measured window)
    let video_layer = if simulcast { 1 } else { 0 };
    let mut depack = H264Depacketizer::new();
    let mut dec = openh264::decoder::Decoder::new().unwrap();
    let mut latencies = Vec::new();
    let mut started = false;
    let mut frames = 0usize;
    let (mut vbytes, mut abytes, mut apackets) = (0usize, 0usize, 0usize);
    for (arrival, p) in &packets {
        if p.track == MIC_TRACK {
            abytes += p.payload.len();
            apackets += 1;
            continue;
        }
        if p.track != CAMERA_TRACK || p.layer != video_layer {
            continue;
        }
        vbytes += p.payload.len();
        started |= p.keyframe;
        if !started {
            continue;
        }
        if let Ok(Some(au)) = depack.push(p.seq, &p.payload, p.marker) {
            let au = au.to_vec();
            if let Ok(Some(yuv)) = dec.decode(&au) {
                frames += 1;
                let f = from_decoded(&yuv, *arrival);
                if let Some((_, ms)) = timecode::read(&f) {
                    let captured = clock.at_ms(ms);
                    latencies.push(arrival.saturating_duration_since(captured).as_secs_f64() * 1000.0);
                }
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "publish 720p30{} + Opus for {:.1} s: {} frames decoded ({:.1} fps), {:.0} kbit/s video, {:.0} kbit/s audio ({} pkts)",
        if simulcast { " simulcast (360p+720p)" } else { "" },
        wall,
        frames,
        frames as f64 / wall,
        vbytes as f64 * 8.0 / wall / 1000.0,
        abytes as f64 * 8.0 / wall / 1000.0,
        apackets,
    );
    println!(
        "  capture-to-RTP latency (timecode): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} frames",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    println!("  CPU: {:.1} % of one core (process user+sys from /proc/self/stat)", cpu / wall * 100.0);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once quickly
    let quick = std::env::args().all(|a| a != "--bench");
    let secs: u64 = std::env::var("MEDIA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    println!(
        "media bench on {} ({} cores), {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_owned()))
            .unwrap_or_else(|| "unknown CPU".into()),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if cfg!(debug_assertions) { "debug build" } else { "release build" }
    );
    println!("load average before: {}", loadavg());
    if quick {
        encode_bench(640, 360, 10, 600_000);
        publish_bench(1, false);
        return;
    }
    encode_bench(640, 360, 300, 600_000);
    encode_bench(1280, 720, 300, 1_200_000);
    encode_bench(1920, 1080, 150, 2_500_000);
    publish_bench(secs, false);
    publish_bench(secs, true);
    println!("load average after: {}", loadavg());
}
