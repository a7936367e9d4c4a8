#![no_main]
//! In-process publishers into an engine with an in-process recorder: the
//! forwarding path (simulcast layer choice, keyframe switching, sequence and
//! timestamp rewriting, VP8 numbering, speaker levels, mute, keyframe
//! requests, bitrate targets) on arbitrary packet sequences, payloads and
//! timing. No crypto, so it runs fast. What the recorder gets is the packet
//! sent, byte for byte, except the VP8 descriptor's numbering fields, which
//! keep their layout.
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sfu_core::engine::{Engine, Output};
use sfu_core::local::{LocalCodec, LocalEvent, LocalJoin, LocalPacket, LocalSubscription, LocalTrackSpec};
use sfu_core::media::vp8::Vp8Fields;
use sfu_core::protocol::{TrackKind, TrackSource};
use sfu_core::{LeaveReason, SfuConfig};

fn spec(name: &str, kind: TrackKind, codec: LocalCodec, layers: &[&str]) -> LocalTrackSpec {
    LocalTrackSpec {
        name: name.into(),
        kind,
        source: if kind == TrackKind::Audio { TrackSource::RoomMicrophone } else { TrackSource::RoomCamera },
        codec,
        layers: layers.iter().map(|s| s.to_string()).collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut config = SfuConfig::default();
    config.limits.max_joins_per_second = 1_000_000; // the recorder may rejoin at every op
    let mut e = Engine::new(config, vec![], now, SystemTime::now());
    let cam = e
        .join_local(now, LocalJoin {
            room: "r".into(),
            identity: "cam".into(),
            name: None,
            publish: vec![
                spec("vp8", TrackKind::Video, LocalCodec::Vp8, &["q", "h", "f"]),
                spec("h264", TrackKind::Video, LocalCodec::H264 { profile_level_id: "42e01f".into() }, &[]),
                spec("mic", TrackKind::Audio, LocalCodec::Opus, &[]),
            ],
            subscribe: LocalSubscription::None,
        })
        .unwrap();
    let rec_join = || LocalJoin {
        room: "r".into(),
        identity: "rec".into(),
        name: None,
        publish: vec![],
        subscribe: LocalSubscription::All,
    };
    let mut rec = e.join_local(now, rec_join()).unwrap();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let mut sent: Option<(usize, Vec<u8>)> = None;
        match op % 8 {
            0..=4 => {
                // a packet: track, layer (index 3 is one past the end), seq (2), ts (2),
                // flags (marker, keyframe, audio level), payload length, payload
                let Some(h) = rest.get(..8) else { break };
                rest = &rest[8..];
                let len = usize::from(h[7]).min(rest.len());
                let payload = &rest[..len];
                rest = &rest[len..];
                let track = usize::from(h[0] % 4);
                sent = Some((track, payload.to_vec()));
                e.local_packet(now, cam, LocalPacket {
                    track,
                    layer: usize::from(h[1] % 4),
                    seq: u16::from_be_bytes([h[2], h[3]]),
                    timestamp: u32::from(u16::from_be_bytes([h[4], h[5]])) * 1500,
                    marker: h[6] & 1 != 0,
                    keyframe: h[6] & 2 != 0,
                    audio_level: (h[6] & 4 != 0).then_some(op),
                    capture_time: now,
                    payload: Bytes::copy_from_slice(payload),
                });
            }
            5 => {
                let step = rest.first().copied().unwrap_or(0);
                rest = rest.get(1..).unwrap_or(&[]);
                now += Duration::from_millis(u64::from(step) * 4);
                e.handle_timeout(now);
            }
            6 => {
                let b = rest.first().copied().unwrap_or(0);
                rest = rest.get(1..).unwrap_or(&[]);
                let _ = e.set_local_muted(now, cam, usize::from(b % 4), b & 0x80 != 0);
            }
            _ => {
                // the recorder leaves and comes back
                e.leave(now, rec, LeaveReason::Left);
                rec = e.join_local(now, rec_join()).unwrap();
            }
        }
        loop {
            match e.poll_output() {
                Output::Timeout(_) => break,
                Output::Local(id, LocalEvent::Rtp(p)) if id == rec => {
                    let (track, input) = sent.as_ref().expect("the recorder only gets the packet just sent");
                    assert_eq!(p.payload.len(), input.len());
                    match (*track, Vp8Fields::parse(input)) {
                        (0, Some(f)) => {
                            let g = Vp8Fields::parse(&p.payload).expect("the descriptor stays well-formed");
                            assert_eq!(f.picture_id.map(|x| x.offset), g.picture_id.map(|x| x.offset));
                            assert_eq!(f.long_picture_id, g.long_picture_id);
                            assert_eq!(f.tl0_pic_idx.map(|x| x.offset), g.tl0_pic_idx.map(|x| x.offset));
                            assert_eq!(f.key_idx.map(|x| x.offset), g.key_idx.map(|x| x.offset));
                            // the bytes the numbering may occupy: PictureID (1 or 2), TL0PICIDX, KEYIDX
                            let mut numbering: Vec<usize> = Vec::new();
                            if let Some(p) = f.picture_id {
                                numbering.push(usize::from(p.offset));
                                if f.long_picture_id {
                                    numbering.push(usize::from(p.offset) + 1);
                                }
                            }
                            numbering.extend(f.tl0_pic_idx.map(|x| usize::from(x.offset)));
                            numbering.extend(f.key_idx.map(|x| usize::from(x.offset)));
                            for (i, (a, b)) in input.iter().zip(p.payload.iter()).enumerate() {
                                assert!(a == b || numbering.contains(&i), "byte {i} changed");
                            }
                        }
                        _ => assert_eq!(&p.payload[..], &input[..], "forwarded byte for byte"),
                    }
                }
                _ => {}
            }
        }
    }
});
