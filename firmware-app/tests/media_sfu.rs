//! The room's media through the real SFU, in process: `RoomMedia` joins a
//! room of a running `sfu-core` as the local participant `room`; a second
//! local participant subscribes and decodes the camera (timecode read back)
//! and the microphone. (The browser's view of the same is the daemon demo's
//! Chromium test in `tests/`.)

use std::time::{Duration, Instant};

use roombox::media::frame::from_decoded;
use roombox::media::h264::H264Depacketizer;
use roombox::media::{MediaConfig, RoomMedia, timecode};
use sfu_core::local::{LocalEvent, LocalJoin, LocalSubscription};
use sfu_core::protocol::TrackKind;
use sfu_core::{Sfu, SfuConfig, TokenVerifier};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_decodes_the_room_camera_and_hears_the_room_through_the_sfu() {
    let registry = prometheus::Registry::new();
    let sfu_cfg =
        SfuConfig { udp_bind: "127.0.0.1:0".parse().unwrap(), tcp_bind: None, ..SfuConfig::default() };
    let verifier = TokenVerifier::hs256(b"media-sfu-test-secret-0123456789abcdef").unwrap();
    let sfu = Sfu::start(sfu_cfg, verifier, &registry).await.unwrap();

    let cfg = MediaConfig { width: 640, height: 360, opus_dtx: false, ..MediaConfig::default() };
    let media = RoomMedia::start(&sfu, "demo", &cfg, &registry).await.unwrap();
    let mut viewer = sfu
        .join_local(LocalJoin {
            room: "demo".into(),
            identity: "viewer".into(),
            name: None,
            publish: Vec::new(),
            subscribe: LocalSubscription::All,
        })
        .await
        .unwrap();

    let mut depack = H264Depacketizer::new();
    let mut dec = openh264::decoder::Decoder::new().unwrap();
    let mut opus = roombox::media::audio::OpusDecoder::new().unwrap();
    let mut timecodes = Vec::new();
    let (mut audio_packets, mut audio_levels) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pcm = vec![0i16; 960];
    while (timecodes.len() < 45 || audio_packets < 75) && Instant::now() < deadline {
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), viewer.events.recv()).await else {
            continue;
        };
        let LocalEvent::Rtp(p) = ev else { continue };
        assert_eq!(&*p.from, "room");
        match p.kind {
            TrackKind::Video => {
                assert!(p.codec.eq_ignore_ascii_case("h264"), "codec {}", p.codec);
                if let Ok(Some(au)) = depack.push(p.seq, &p.payload, p.marker) {
                    let au = au.to_vec();
                    if let Ok(Some(yuv)) = dec.decode(&au) {
                        let f = from_decoded(&yuv, Instant::now());
                        let tc = timecode::read(&f).expect("timecode in the forwarded picture");
                        timecodes.push((p.timestamp, tc));
                    }
                }
            }
            TrackKind::Audio => {
                audio_packets += 1;
                audio_levels += p.audio_level.is_some() as usize;
                assert_eq!(opus.decode(&p.payload, &mut pcm).unwrap(), 960);
            }
        }
    }
    assert!(timecodes.len() >= 45, "decoded {} camera frames", timecodes.len());
    assert!(audio_packets >= 75, "received {audio_packets} microphone packets");
    assert_eq!(audio_levels, audio_packets, "every audio packet carries its RFC 6464 level");
    // frames arrive in capture order; the timecode's frame number never goes back
    for w in timecodes.windows(2) {
        assert!(w[1].1.0 > w[0].1.0 && w[1].1.1 > w[0].1.1, "{:?} then {:?}", w[0], w[1]);
    }

    // mute at the source: the subscriber stops getting microphone packets
    media.set_mic_muted(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    while viewer.events.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut audio_after = 0;
    let mut video_after = 0;
    while let Ok(ev) = viewer.events.try_recv() {
        if let LocalEvent::Rtp(p) = ev {
            if p.kind == TrackKind::Audio { audio_after += 1 } else { video_after += 1 }
        }
    }
    assert_eq!(audio_after, 0, "muted microphone sends nothing");
    assert!(video_after > 0, "the camera goes on");
    assert!(media.status().mic_muted);

    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    assert!(text.contains("roombox_media_captured_frames_total"), "media metrics in the daemon's registry");
    media.stop().await;
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    assert!(!text.contains("roombox_media_captured_frames_total"), "unregistered at stop");
    sfu.shutdown().await;
}
