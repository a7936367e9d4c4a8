//! Per-track recording cost: CPU per packet and write amplification.
//!
//! `cargo bench -p recorder --bench record`. Video: H.264 at 1.5 Mbit/s,
//! 30 fps, FU-A packets of 1200 bytes (≈ 156 packets/s); audio: Opus 20 ms
//! packets of 80 bytes (50 packets/s). A participant publishes one of each.
//! Besides criterion's time per second of media, it prints bytes written per
//! payload byte received, and fragments (= fdatasync calls) per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use recorder::{Codec, RtpIn, TrackRecorder};

type Packet = (u16, u32, bool, Vec<u8>);

fn h264_second(seq0: u16, frame0: u32) -> Vec<Packet> {
    let per_frame: usize = 1_500_000 / 8 / 30;
    let mut out = Vec::new();
    let mut seq = seq0;
    for f in 0..30u32 {
        let ts = (frame0 + f) * 3000;
        let idr = (frame0 + f).is_multiple_of(60);
        if idr {
            for nal in
                [&[0x67u8, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8][..], &[0x68, 0xce, 0x3c, 0x80]]
            {
                out.push((seq, ts, false, nal.to_vec()));
                seq = seq.wrapping_add(1);
            }
        }
        let header = if idr { 0x65 } else { 0x41 };
        let chunks = per_frame.div_ceil(1200);
        for c in 0..chunks {
            let mut p = vec![(header & 0xe0) | 28, header & 0x1f];
            if c == 0 {
                p[1] |= 0x80;
            }
            if c + 1 == chunks {
                p[1] |= 0x40;
            }
            p.extend(std::iter::repeat_n(0xabu8, 1200.min(per_frame - c * 1200)));
            out.push((seq, ts, c + 1 == chunks, p));
            seq = seq.wrapping_add(1);
        }
    }
    out
}

fn opus_second(seq0: u16, n0: u32) -> Vec<Packet> {
    (0..50u32).map(|i| (seq0.wrapping_add(i as u16), (n0 + i) * 960, false, vec![0xfc; 80])).collect()
}

/// Record `secs` seconds; returns (payload bytes in, bytes written, fragments).
fn run(codec: Codec, secs: u32, sink: &mut Vec<u8>) -> (u64, u64, u64) {
    let mut rec = TrackRecorder::new(codec);
    let (mut input, mut written, mut fragments) = (0u64, 0u64, 0u64);
    let mut next_seq = 0u16;
    for s in 0..secs {
        let packets = match codec {
            Codec::Opus => opus_second(next_seq, s * 50),
            _ => h264_second(next_seq, s * 30),
        };
        next_seq = packets.last().map_or(next_seq, |p| p.0.wrapping_add(1));
        let n = packets.len() as u64;
        for (i, (seq, ts, marker, payload)) in packets.iter().enumerate() {
            input += payload.len() as u64;
            let arrival = Duration::from_secs(s as u64) + Duration::from_micros(1_000_000 * i as u64 / n);
            let w = rec
                .push(RtpIn { seq: *seq, timestamp: *ts, marker: *marker, payload }, arrival, sink)
                .unwrap();
            written += w.bytes;
            fragments += w.fragments as u64;
            if sink.len() > 8 << 20 {
                sink.clear();
            }
        }
    }
    let done = rec.finish(sink).unwrap();
    (input, written + done.written.bytes, fragments + done.written.fragments as u64)
}

/// One participant (H.264 + Opus) for `secs` seconds into real files with
/// an fdatasync per fragment: prints the time spent syncing.
fn to_disk(secs: u32) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut total = std::time::Duration::ZERO;
    let mut syncs = 0u64;
    let mut bytes = 0u64;
    let started = std::time::Instant::now();
    for (name, codec) in [("v.mp4", Codec::H264), ("a.mp4", Codec::Opus)] {
        let mut sink = recorder::FileSink::create(&dir.path().join(name)).unwrap();
        let mut rec = TrackRecorder::new(codec);
        let mut next_seq = 0u16;
        for s in 0..secs {
            let packets = match codec {
                Codec::Opus => opus_second(next_seq, s * 50),
                _ => h264_second(next_seq, s * 30),
            };
            next_seq = packets.last().map_or(next_seq, |p| p.0.wrapping_add(1));
            for (seq, ts, marker, payload) in &packets {
                let rtp = RtpIn { seq: *seq, timestamp: *ts, marker: *marker, payload };
                let w = rec.push(rtp, Duration::from_secs(s as u64), &mut sink).unwrap();
                let t = std::time::Instant::now();
                sink.commit(w).unwrap();
                if w.fragments > 0 {
                    total += t.elapsed();
                    syncs += w.fragments as u64;
                }
            }
        }
        let done = rec.finish(&mut sink).unwrap();
        bytes += sink.bytes() + done.written.bytes;
        sink.finalise(done.written, done.patch.as_ref()).unwrap();
    }
    println!(
        "to disk ({}): one participant, {secs} s of H.264 1.5 Mbit/s + Opus, {bytes} bytes, {syncs} fdatasync, \
         {:.2} ms per fdatasync (mean), {:.1} ms wall in all",
        env!("CARGO_TARGET_TMPDIR"),
        total.as_secs_f64() * 1000.0 / syncs.max(1) as f64,
        started.elapsed().as_secs_f64() * 1000.0
    );
}

fn bench(c: &mut Criterion) {
    to_disk(20);
    let mut sink = Vec::with_capacity(16 << 20);
    for (name, codec) in [("h264 1.5 Mbit/s", Codec::H264), ("opus", Codec::Opus)] {
        let (input, written, fragments) = run(codec, 60, &mut sink);
        println!(
            "recording {name}: 60 s media, {input} payload bytes in, {written} bytes written, \
             write amplification {:.4}, {:.2} fragments (fdatasync) per second",
            written as f64 / input as f64,
            fragments as f64 / 60.0
        );
        c.bench_function(&format!("record 1 s of {name}"), |b| {
            let packets = match codec {
                Codec::Opus => opus_second(0, 0),
                _ => h264_second(0, 0),
            };
            let mut rec = TrackRecorder::new(codec);
            let mut round = 0u32;
            b.iter(|| {
                // the same second, shifted one second later each time
                let shift = round;
                round += 1;
                let (step, dseq) = match codec {
                    Codec::Opus => (48_000, 50),
                    _ => (90_000, packets.len() as u32),
                };
                for (seq, ts, marker, payload) in &packets {
                    let rtp = RtpIn {
                        seq: seq.wrapping_add((shift * dseq) as u16),
                        timestamp: ts.wrapping_add(shift * step),
                        marker: *marker,
                        payload,
                    };
                    let w = rec.push(rtp, Duration::from_secs(shift as u64), &mut sink).unwrap();
                    black_box(w);
                }
                if sink.len() > 8 << 20 {
                    sink.clear();
                }
            });
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
