//! Composite cost, compose only (no decode, no encode): 9 participants'
//! 640×360 I420 frames into 1920×1080 and 1280×720, one of them the active
//! speaker (big tile + strip of 8), names burnt in.
//!
//! `cargo bench -p compositor --bench compose`. Also the 3×3 grid (no
//! active speaker) and the 20 ms audio mix of 9 mono sources.

use std::hint::black_box;

use compositor::audio::{AudioIn, Channels, FRAME_SAMPLES, Mixer};
use compositor::{Compositor, I420Frame, Source, Tile};
use criterion::{Criterion, criterion_group, criterion_main};

const NAMES: [&str; 9] =
    ["Ada Lovelace", "Bob", "Chen Wei", "Dana", "Emeka Obi", "Fatima", "Gus", "Hana Sato", "Ivo"];

/// A moving-ish test picture: gradients, so the scaler does real work.
fn picture(seed: u8) -> I420Frame {
    let (w, h) = (640usize, 360usize);
    let y: Vec<u8> =
        (0..w * h).map(|i| ((i % w) as u8).wrapping_add((i / w) as u8).wrapping_add(seed)).collect();
    let u: Vec<u8> = (0..w * h / 4).map(|i| (i % (w / 2)) as u8 ^ seed).collect();
    let v: Vec<u8> = (0..w * h / 4).map(|i| (i / (w / 2)) as u8 ^ seed).collect();
    I420Frame::from_planes(w as u32, h as u32, [w, w / 2, w / 2], [y, u, v]).expect("valid test picture")
}

fn bench(c: &mut Criterion) {
    let frames: Vec<I420Frame> = (0..9).map(|i| picture(i * 25)).collect();
    for (w, h) in [(1920u32, 1080u32), (1280, 720)] {
        for speaker in [Some(4usize), None] {
            let sources: Vec<Source<'_>> = frames
                .iter()
                .enumerate()
                .map(|(i, f)| Source {
                    tile: Tile {
                        id: NAMES[i],
                        name: NAMES[i],
                        has_video: true,
                        speaking: Some(i) == speaker,
                    },
                    frame: Some(f),
                })
                .collect();
            let mut comp = Compositor::new(w, h).expect("even output");
            let what = if speaker.is_some() { "speaker+strip" } else { "grid3x3" };
            c.bench_function(&format!("compose 9x640x360 -> {w}x{h} {what}"), |b| {
                b.iter(|| {
                    let out = comp.compose(black_box(&sources)).expect("compose");
                    black_box(out.plane(0)[0]);
                })
            });
        }
    }

    let audio: Vec<Vec<i16>> = (0..9)
        .map(|i| (0..FRAME_SAMPLES).map(|k| ((k * 37 + i * 1000) % 20_000) as i16 - 10_000).collect())
        .collect();
    let ins: Vec<AudioIn<'_>> =
        audio.iter().map(|s| AudioIn { samples: s, channels: 1, gain: 0.8, muted: false }).collect();
    let mut mixer = Mixer::new(Channels::Mono);
    c.bench_function("mix 9 mono 20 ms -> mono", |b| {
        b.iter(|| {
            black_box(mixer.mix(black_box(&ins)).expect("mix")[0]);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
