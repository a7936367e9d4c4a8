//! Real media through the recorder, checked by ffprobe; crashes and garbage
//! through recovery.

mod common;

use std::time::Duration;

use common::{Rtp, h264_rtp, opus_rtp, probe, vp8_rtp};
use recorder::{Codec, Error, RtpIn, TrackRecorder, recover_file, scan};

/// Record packets arriving at `frame_ms` per timestamp step; swaps every 7th
/// pair of packets to exercise the reorder buffer. Returns the file and the
/// end offset of every fragment (including the init segment).
fn record(codec: Codec, packets: &[Rtp], clock: u32) -> (Vec<u8>, Vec<usize>, Duration) {
    let mut order: Vec<usize> = (0..packets.len()).collect();
    for i in (7..order.len()).step_by(7) {
        order.swap(i - 1, i);
    }
    let mut rec = TrackRecorder::new(codec);
    let mut file = Vec::new();
    let mut ends = Vec::new();
    let t0 = packets[0].1;
    for i in order {
        let (seq, ts, marker, payload) = &packets[i];
        let arrival = Duration::from_micros(ts.wrapping_sub(t0) as u64 * 1_000_000 / clock as u64);
        let w = rec
            .push(RtpIn { seq: *seq, timestamp: *ts, marker: *marker, payload }, arrival, &mut file)
            .unwrap();
        if w.fragments > 0 {
            ends.push(file.len());
        }
    }
    let done = rec.finish(&mut file).unwrap();
    ends.push(file.len());
    let patch = done.patch.expect("something was written");
    patch.apply_to(&mut file);
    assert_eq!(rec.stats().malformed, 0, "{:?}", rec.stats());
    (file, ends, done.duration)
}

#[test]
fn h264_from_rtp_plays_in_ffprobe_with_every_frame_and_its_size() {
    let dir = tempfile::tempdir().unwrap();
    // sequence numbers wrap in the middle
    let packets = h264_rtp(dir.path(), 3, 65_500);
    let (file, ends, duration) = record(Codec::H264, &packets, 90_000);
    assert_eq!(ends.len(), 1 + 3, "init + one fragment per second");
    let path = dir.path().join("v.mp4");
    std::fs::write(&path, &file).unwrap();
    let (codec, w, h, frames, secs) = probe(&path);
    assert_eq!((codec.as_str(), w, h, frames), ("h264", 320, 240, 90));
    assert!((secs - 3.0).abs() < 0.05, "ffprobe duration {secs}");
    assert_eq!(duration, Duration::from_secs(3));
    let found = scan(&file).unwrap();
    assert_eq!((found.valid_len, found.fragments, found.duration), (file.len() as u64, 3, duration));
}

#[test]
fn vp8_from_rtp_plays_in_ffprobe_with_every_frame_and_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let packets = vp8_rtp(dir.path(), 2, 100);
    let (file, _, duration) = record(Codec::Vp8, &packets, 90_000);
    let path = dir.path().join("v.mp4");
    std::fs::write(&path, &file).unwrap();
    let (codec, w, h, frames, secs) = probe(&path);
    assert_eq!((codec.as_str(), w, h, frames), ("vp8", 320, 240, 60));
    assert!((secs - 2.0).abs() < 0.05, "ffprobe duration {secs}");
    assert_eq!(duration, Duration::from_secs(2));
}

#[test]
fn opus_from_rtp_plays_in_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let packets = opus_rtp(dir.path(), 2, 7);
    let n = packets.len() as u64;
    let (file, _, _) = record(Codec::Opus, &packets, 48_000);
    let path = dir.path().join("a.mp4");
    std::fs::write(&path, &file).unwrap();
    let (codec, _, _, frames, secs) = probe(&path);
    assert_eq!((codec.as_str(), frames), ("opus", n));
    assert!((secs - n as f64 * 0.02).abs() < 0.05, "ffprobe duration {secs}");
}

#[test]
fn a_file_cut_anywhere_recovers_to_its_last_complete_fragment_and_plays() {
    let dir = tempfile::tempdir().unwrap();
    let packets = h264_rtp(dir.path(), 4, 1);
    let (file, ends, _) = record(Codec::H264, &packets, 90_000);
    for cut in (0..file.len()).step_by(997).chain([ends[1], ends[2] - 1, ends[2] + 3]) {
        let part = &file[..cut];
        let whole = ends.iter().rev().find(|&&e| e <= cut).copied();
        match (scan(part), whole) {
            (Ok(r), Some(end)) => {
                assert_eq!(r.valid_len, end as u64, "cut at {cut}");
                assert_eq!(r.fragments as usize, ends.iter().position(|&e| e == end).unwrap());
            }
            (Err(Error::Empty), None) if cut == 0 => {}
            (Err(Error::NotARecording(_)), None) => {}
            (r, w) => panic!("cut at {cut}: {r:?} (expected up to {w:?})"),
        }
    }
    // a crash in the third fragment: recover the file on disk, ffprobe plays two seconds
    let path = dir.path().join("crashed.mp4");
    std::fs::write(&path, &file[..ends[3] - 100]).unwrap();
    let r = recover_file(&path).unwrap();
    assert_eq!(
        (r.fragments, r.duration, r.cut()),
        (2, Duration::from_secs(2), (ends[3] - 100 - ends[2]) as u64)
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[2] as u64);
    let (_, _, _, frames, secs) = probe(&path);
    assert_eq!(frames, 60);
    assert!((secs - 2.0).abs() < 0.05, "ffprobe duration {secs}");
}

#[test]
fn garbage_is_refused_with_a_reason_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.mp4");
    let junk: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &junk).unwrap();
    let err = recover_file(&path).unwrap_err();
    assert!(matches!(err, Error::NotARecording(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), junk, "not a recording: not touched");

    std::fs::write(&path, b"").unwrap();
    assert!(matches!(recover_file(&path), Err(Error::Empty)));

    // a valid recording followed by garbage keeps the recording
    let packets = opus_rtp(dir.path(), 2, 7);
    let (mut file, ends, _) = record(Codec::Opus, &packets, 48_000);
    file.extend_from_slice(&junk);
    std::fs::write(&path, &file).unwrap();
    let r = recover_file(&path).unwrap();
    assert_eq!(r.valid_len, *ends.last().unwrap() as u64);
    assert_eq!(r.cut(), junk.len() as u64);
    // a fragment whose moof lies about its mdat ends the valid part there
    let mut lying = file[..ends[2]].to_vec();
    let at = ends[1] + lying[ends[1]..].windows(4).position(|w| w == b"mdat").unwrap() - 4;
    lying[at..at + 4].copy_from_slice(&12u32.to_be_bytes());
    let r = scan(&lying).unwrap();
    assert_eq!(r.valid_len, ends[1] as u64);
}

#[test]
fn a_timestamp_jump_is_rebased_on_the_arrival_clock_not_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let mut packets = opus_rtp(dir.path(), 2, 0);
    // halfway, the publisher restarts: new timestamp origin, new sequence numbers
    let half = packets.len() / 2;
    for p in packets.iter_mut().skip(half) {
        p.0 = p.0.wrapping_add(30_000);
        p.1 = p.1.wrapping_add(0x8000_0000);
    }
    let mut rec = TrackRecorder::new(Codec::Opus);
    let mut file = Vec::new();
    for (i, (seq, ts, marker, payload)) in packets.iter().enumerate() {
        let arrival = Duration::from_millis(20 * i as u64);
        rec.push(RtpIn { seq: *seq, timestamp: *ts, marker: *marker, payload }, arrival, &mut file).unwrap();
    }
    let done = rec.finish(&mut file).unwrap();
    assert_eq!(rec.stats().rebased, 1);
    assert_eq!(done.duration, Duration::from_millis(20 * packets.len() as u64));
}

#[test]
fn a_disk_that_fills_mid_fragment_leaves_a_file_recovery_makes_whole() {
    let outer = tempfile::tempdir().unwrap();
    let mnt = outer.path().join("disk");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32k", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the disk-full path did not run");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _u = Unmount(mnt.clone());
    let packets = h264_rtp(outer.path(), 10, 1);
    let path = mnt.join("v.mp4");
    let mut sink = recorder::FileSink::create(&path).unwrap();
    let mut rec = TrackRecorder::new(Codec::H264);
    let t0 = packets[0].1;
    let mut failure = None;
    for (seq, ts, marker, payload) in &packets {
        let arrival = Duration::from_micros(ts.wrapping_sub(t0) as u64 * 1_000_000 / 90_000);
        let r = rec.push(RtpIn { seq: *seq, timestamp: *ts, marker: *marker, payload }, arrival, &mut sink);
        match r.map_err(|e| match e {
            Error::Io(e) => e,
            other => panic!("{other}"),
        }) {
            Ok(w) => sink.commit(w).unwrap(),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let e = failure.expect("10 s of 320x240 H.264 do not fit in 32 KiB");
    assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
    drop(sink);
    let r = recover_file(&path).unwrap();
    assert!(r.fragments >= 1, "{r:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), r.valid_len);
    let (codec, _, _, frames, secs) = probe(&path);
    assert_eq!(codec, "h264");
    assert_eq!(frames, r.fragments as u64 * 30, "whole seconds of frames");
    assert!((secs - r.end().as_secs_f64()).abs() < 0.05, "{secs} vs {:?}", r.end());
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}
