//! sfu-core's own per-packet pieces, measured from outside the crate through
//! its public API (the floor's counterparts are in `benches/floor.rs`, where
//! the SRTP cipher — the same str0m/aws-lc-rs code sfu-core's peers use — is
//! timed per profile):
//!
//! - `rtp_rewrite`: the down-track [`Rewriter`] (sequence/timestamp continuity
//!   per subscriber), steady state and across a source switch;
//! - `udp_send`: sfu-core's `edge::udp::send_batch` (`sendmmsg`, 32 datagrams)
//!   on loopback;
//! - `room_fanout`: the engine routing one published packet to N subscribers —
//!   forwarder decision, rewrite and output per subscriber — with in-process
//!   (local) participants, so no socket and no cipher is in the number; a
//!   WebRTC subscriber adds str0m's `write_rtp` + SRTP on top.
//!
//! `cargo bench -p roombox-bench --bench hotpath`

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sfu_core::SfuConfig;
use sfu_core::engine::{Engine, Output};
use sfu_core::local::{LocalCodec, LocalEvent, LocalJoin, LocalPacket, LocalSubscription, LocalTrackSpec};
use sfu_core::media::rewrite::Rewriter;
use sfu_core::protocol::{TrackKind, TrackSource};

fn rtp_rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp_rewrite");
    g.throughput(Throughput::Elements(1));
    let t0 = Instant::now();
    let mut rw = Rewriter::new(90_000, 1000, 12345);
    let _ = rw.switch_to(1, 0, 0, t0);
    let mut seq = 0u64;
    g.bench_function("steady", |b| {
        b.iter(|| {
            seq += 1;
            black_box(rw.rewrite(1, black_box(seq), (seq as u32).wrapping_mul(3000), t0))
        })
    });
    // Every packet from the other of two sources: the switch path (what a
    // layer change or a speaker change costs once).
    let mut rw = Rewriter::new(90_000, 1000, 12345);
    let mut i = 0u64;
    g.bench_function("switch", |b| {
        b.iter(|| {
            i += 1;
            black_box(rw.switch_to(i & 1, black_box(i), (i as u32).wrapping_mul(3000), t0))
        })
    });
    g.finish();
}

fn udp_send(c: &mut Criterion) {
    let tx = UdpSocket::bind("127.0.0.1:0").expect("socket");
    let rx = UdpSocket::bind("127.0.0.1:0").expect("socket");
    rx.set_nonblocking(true).expect("nonblocking");
    let to: SocketAddr = rx.local_addr().expect("addr");
    let payloads: Vec<Vec<u8>> = (0..32).map(|i| vec![i as u8; 1100]).collect();
    let items: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, &p[..])).collect();
    let mut g = c.benchmark_group("udp_send");
    g.throughput(Throughput::Elements(32));
    g.bench_function("sfu_send_batch_32x1100B", |b| {
        let mut buf = [0u8; 2048];
        let mut bufs = sfu_core::edge::udp::SendBatch::default();
        b.iter(|| {
            let mut off = 0;
            while off < items.len() {
                match sfu_core::edge::udp::send_batch(tx.as_raw_fd(), &mut bufs, &items[off..]) {
                    Ok(n) if n > 0 => off += n,
                    _ => break,
                }
            }
            // Keep the receiver's buffer from filling (and the kernel from dropping).
            while rx.recv_from(&mut buf).is_ok() {}
            off
        })
    });
    g.finish();
}

/// An engine with one local publisher of `kind` and `n` local subscribers of it.
fn room(n: usize, kind: TrackKind) -> (Engine, u64) {
    let now = Instant::now();
    let mut config = SfuConfig::default();
    // The fan-out, not admission control, is measured.
    config.limits.max_participants_per_room = config.limits.max_participants_per_room.max(n + 1);
    config.limits.max_joins_per_second = config.limits.max_joins_per_second.max(n as u32 + 1);
    let mut e = Engine::new(config, Vec::new(), now, SystemTime::now());
    let (codec, source) = match kind {
        TrackKind::Audio => (LocalCodec::Opus, TrackSource::Microphone),
        TrackKind::Video => (LocalCodec::Vp8, TrackSource::Camera),
    };
    let publisher = e
        .join_local(
            now,
            LocalJoin {
                room: "bench".into(),
                identity: "pub".into(),
                name: None,
                publish: vec![LocalTrackSpec { name: "t".into(), kind, source, codec, layers: Vec::new() }],
                subscribe: LocalSubscription::None,
            },
        )
        .expect("publisher joins");
    let sub = if kind == TrackKind::Audio { LocalSubscription::AllAudio } else { LocalSubscription::All };
    for i in 0..n {
        e.join_local(
            now,
            LocalJoin {
                room: "bench".into(),
                identity: format!("s{i}"),
                name: None,
                publish: Vec::new(),
                subscribe: sub,
            },
        )
        .expect("subscriber joins");
    }
    e.handle_timeout(now + Duration::from_millis(1));
    while !matches!(e.poll_output(), Output::Timeout(_)) {}
    (e, publisher)
}

/// Publish one packet and drain the engine; the number of subscribers it reached.
fn publish(e: &mut Engine, publisher: u64, seq: u16, payload: &Bytes, video: bool) -> usize {
    let now = Instant::now();
    e.local_packet(
        now,
        publisher,
        LocalPacket {
            track: 0,
            layer: 0,
            seq,
            timestamp: u32::from(seq).wrapping_mul(if video { 3000 } else { 960 }),
            marker: video,
            keyframe: video,
            audio_level: (!video).then_some(30),
            capture_time: now,
            payload: payload.clone(),
        },
    );
    let mut got = 0;
    loop {
        match e.poll_output() {
            Output::Timeout(_) => break,
            Output::Local(_, LocalEvent::Rtp(p)) => {
                black_box(&p);
                got += 1;
            }
            _ => {}
        }
    }
    got
}

fn room_fanout(c: &mut Criterion) {
    // Opus-sized audio; a VP8 keyframe packet (payload descriptor with a
    // 15-bit PictureID, then a keyframe's first bytes), so the VP8 numbering
    // patch runs too.
    let audio = Bytes::from(vec![0x5a; 80]);
    let mut vp8 = vec![0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    vp8.resize(1100, 0x5a);
    let vp8 = Bytes::from(vp8);
    for (name, kind, payload) in
        [("room_fanout_audio", TrackKind::Audio, &audio), ("room_fanout_vp8", TrackKind::Video, &vp8)]
    {
        let video = kind == TrackKind::Video;
        let mut g = c.benchmark_group(name);
        for n in [1usize, 8, 32] {
            let (mut e, publisher) = room(n, kind);
            // The bench measures real forwarding: every subscriber must get the packet.
            let mut seq = 1u16;
            let reached = (0..50).map(|_| {
                seq = seq.wrapping_add(1);
                publish(&mut e, publisher, seq, payload, video)
            });
            let reached = reached.last().unwrap_or(0);
            assert_eq!(reached, n, "{name}: a packet reached {reached} of {n} subscribers");
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    publish(&mut e, publisher, seq, payload, video)
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, rtp_rewrite, udp_send, room_fanout);
criterion_main!(benches);
