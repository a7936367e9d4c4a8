//! Real media made by Debian's ffmpeg, packetized into RTP the way browsers do.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub fn need(tool: &str) {
    let ok = Command::new(tool).arg("-version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "{tool} is missing: install the Debian package `ffmpeg` (scripts/lib.sh TEST_PACKAGES)");
}

fn ffmpeg(args: &[&str], out: &Path) -> Vec<u8> {
    need("ffmpeg");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg {args:?} failed");
    std::fs::read(out).expect("read ffmpeg output")
}

/// One RTP packet: (seq, timestamp, marker, payload).
pub type Rtp = (u16, u32, bool, Vec<u8>);

/// `secs` of 320x240 30 fps H.264 (baseline, keyframe every second), as RTP
/// (single NAL units and FU-A at 1200 bytes) starting at sequence `seq0`.
pub fn h264_rtp(dir: &Path, secs: u32, seq0: u16) -> Vec<Rtp> {
    let es = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size=320x240:rate=30:duration={secs}"),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-g",
            "30",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
        ],
        &dir.join("in.h264"),
    );
    // split on start codes
    let mut nals = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i + 3 <= es.len() {
        if es[i] == 0 && es[i + 1] == 0 && es[i + 2] == 1 {
            if let Some(s) = start {
                let mut e = i;
                while e > s && es[e - 1] == 0 {
                    e -= 1;
                }
                nals.push(&es[s..e]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        nals.push(&es[s..]);
    }
    // access units: non-VCL units join the next picture
    let mut out = Vec::new();
    let (mut seq, mut frame) = (seq0, 0u32);
    let mut au: Vec<&[u8]> = Vec::new();
    for nal in nals {
        au.push(nal);
        let kind = nal[0] & 0x1f;
        if kind != 1 && kind != 5 {
            continue;
        }
        let ts = frame * 3000;
        let n = au.len();
        for (k, nal) in au.drain(..).enumerate() {
            let last = k + 1 == n;
            if nal.len() <= 1200 {
                out.push((seq, ts, last, nal.to_vec()));
                seq = seq.wrapping_add(1);
            } else {
                let chunks: Vec<&[u8]> = nal[1..].chunks(1200).collect();
                for (c, chunk) in chunks.iter().enumerate() {
                    let mut p = vec![(nal[0] & 0xe0) | 28, nal[0] & 0x1f];
                    if c == 0 {
                        p[1] |= 0x80;
                    }
                    if c + 1 == chunks.len() {
                        p[1] |= 0x40;
                    }
                    p.extend_from_slice(chunk);
                    out.push((seq, ts, last && c + 1 == chunks.len(), p));
                    seq = seq.wrapping_add(1);
                }
            }
        }
        frame += 1;
    }
    out
}

/// `secs` of 320x240 30 fps VP8 as RFC 7741 RTP.
pub fn vp8_rtp(dir: &Path, secs: u32, seq0: u16) -> Vec<Rtp> {
    let ivf = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size=320x240:rate=30:duration={secs}"),
            "-c:v",
            "libvpx",
            "-g",
            "30",
            "-b:v",
            "500k",
            "-f",
            "ivf",
        ],
        &dir.join("in.ivf"),
    );
    let mut out = Vec::new();
    let mut at = u16::from_le_bytes([ivf[6], ivf[7]]) as usize;
    let (mut seq, mut frame) = (seq0, 0u32);
    while at + 12 <= ivf.len() {
        let len = u32::from_le_bytes([ivf[at], ivf[at + 1], ivf[at + 2], ivf[at + 3]]) as usize;
        let data = &ivf[at + 12..at + 12 + len];
        at += 12 + len;
        let chunks: Vec<&[u8]> = data.chunks(1100).collect();
        for (c, chunk) in chunks.iter().enumerate() {
            // X=1 with a 15-bit PictureID, like Chromium
            let pid = (frame & 0x7fff) as u16;
            let mut p = vec![if c == 0 { 0x90 } else { 0x80 }, 0x80, 0x80 | (pid >> 8) as u8, pid as u8];
            p.extend_from_slice(chunk);
            out.push((seq, frame * 3000, c + 1 == chunks.len(), p));
            seq = seq.wrapping_add(1);
        }
        frame += 1;
    }
    out
}

/// `secs` of Opus (20 ms packets) as RTP.
pub fn opus_rtp(dir: &Path, secs: u32, seq0: u16) -> Vec<Rtp> {
    let ogg = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency=440:sample_rate=48000:duration={secs}"),
            "-c:a",
            "libopus",
            "-frame_duration",
            "20",
            "-f",
            "ogg",
        ],
        &dir.join("in.ogg"),
    );
    let mut packets = Vec::new();
    let mut cur = Vec::new();
    let mut at = 0;
    while at + 27 <= ogg.len() {
        assert_eq!(&ogg[at..at + 4], b"OggS");
        let nseg = ogg[at + 26] as usize;
        let table = &ogg[at + 27..at + 27 + nseg];
        let mut body = at + 27 + nseg;
        for &lace in table {
            cur.extend_from_slice(&ogg[body..body + lace as usize]);
            body += lace as usize;
            if lace < 255 {
                packets.push(std::mem::take(&mut cur));
            }
        }
        at = body;
    }
    packets
        .into_iter()
        .skip(2) // OpusHead, OpusTags
        .enumerate()
        .map(|(i, p)| (seq0.wrapping_add(i as u16), i as u32 * 960, false, p))
        .collect()
}

/// ffprobe's view of a file: (codec, width, height, decoded frames, duration seconds).
pub fn probe(path: &Path) -> (String, u32, u32, u64, f64) {
    need("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "0"])
        .args(["-show_entries", "stream=codec_name,width,height,nb_read_frames:format=duration"])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffprobe complains about {}: {stderr}",
        path.display()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let get =
        |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("0").to_string();
    (
        get("codec_name"),
        get("width").parse().unwrap_or(0),
        get("height").parse().unwrap_or(0),
        get("nb_read_frames").parse().unwrap_or(0),
        get("duration").parse().unwrap_or(0.0),
    )
}
