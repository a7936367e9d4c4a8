//! The floor relay's per-packet pieces, one by one: the SRTP cipher for each
//! profile str0m negotiates, the 12-byte header rewrite, and a 32-datagram
//! `sendmmsg` batch on loopback. These are the components of "what any SFU must
//! at least spend"; sfu-core's own hot-path benches sit beside its code.
//!
//! `cargo bench -p roombox-bench --bench floor`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roombox_bench::floor::srtp::Srtp;
use roombox_bench::net::{SendBatch, udp_socket};
use roombox_bench::tap::Keys;
use str0m::crypto::dtls::SrtpProfile;

fn srtp(c: &mut Criterion) {
    let cp = str0m::crypto::from_feature_flags();
    let mut g = c.benchmark_group("srtp_protect_1000B");
    g.throughput(Throughput::Bytes(1000));
    for (name, profile, len) in [
        ("aes128_cm_sha1_80", SrtpProfile::AES128_CM_SHA1_80, 60),
        ("aead_aes128_gcm", SrtpProfile::AEAD_AES_128_GCM, 56),
        ("aead_aes256_gcm", SrtpProfile::AEAD_AES_256_GCM, 88),
    ] {
        let mut s = Srtp::new(&cp, &Keys { material: vec![7; len], profile, active: true }).expect("keys");
        let header = [0x80, 96, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4];
        let body = vec![0x5a; 1000];
        let mut out = vec![0u8; 1100];
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                black_box(s.protect(&header, black_box(&body), 1, i, &mut out))
            })
        });
    }
    g.finish();
}

fn rewrite(c: &mut Criterion) {
    let pkt: Vec<u8> = (0..1100u32).map(|i| i as u8).collect();
    let mut header = [0u8; 12];
    c.bench_function("rtp_header_rewrite", |b| {
        b.iter(|| {
            let p = black_box(&pkt);
            header[0] = 0x80;
            header[1] = (p[1] & 0x80) | 96;
            let seq = u16::from_be_bytes([p[2], p[3]]).wrapping_add(1000);
            header[2..4].copy_from_slice(&seq.to_be_bytes());
            header[4..8].copy_from_slice(&p[4..8]);
            header[8..12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
            black_box(header)
        })
    });
}

fn sendmmsg(c: &mut Criterion) {
    let tx = udp_socket("127.0.0.1:0".parse().expect("addr")).expect("socket");
    let rx = udp_socket("127.0.0.1:0".parse().expect("addr")).expect("socket");
    let to = rx.local_addr().expect("addr");
    let mut batch = SendBatch::new(32, 1500);
    let mut g = c.benchmark_group("udp_send");
    g.throughput(Throughput::Elements(32));
    g.bench_function("sendmmsg_32x1100B", |b| {
        b.iter(|| {
            for _ in 0..32 {
                batch.slot()[..1100].fill(1);
                batch.commit(1100, to);
            }
            batch.flush(&tx);
            // Keep the receiver's buffer from filling (and the kernel from dropping).
            let mut buf = [0u8; 2048];
            while rx.recv_from(&mut buf).is_ok() {}
        })
    });
    g.bench_function("sendto_32x1100B", |b| {
        let buf = [1u8; 1100];
        b.iter(|| {
            for _ in 0..32 {
                let _ = tx.send_to(&buf, to);
            }
            let mut rbuf = [0u8; 2048];
            while rx.recv_from(&mut rbuf).is_ok() {}
        })
    });
    g.finish();
}

criterion_group!(benches, srtp, rewrite, sendmmsg);
criterion_main!(benches);
