//! Run the room's capture path against real devices and print what came out.
//! For the VM test with the kernel's `vivid` camera and `snd-aloop` sound
//! (boards issue): the same source, converters and encoders the daemon uses.
//!
//! ```text
//! media_capture --video /dev/video0 [--formats YUYV,MJPG] [--size 1280x720] [--fps 30] [--frames 30]
//! media_capture --audio hw:Loopback,1,0 [--ms 1000]
//! ```
//! Video: prints the negotiated format, then one line per frame: the frame's
//! luma mean, a checksum and its RTP payload count; exits non-zero if a frame
//! failed to encode to at least one payload. Audio: captures through
//! [`AlsaCapture`](roombox::media::alsa_io::AlsaCapture), prints RMS and peak
//! per 20 ms and the Opus packet count.

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(dev) = arg(&args, "--video") {
        video(&args, &dev)?;
    }
    if let Some(dev) = arg(&args, "--audio") {
        audio(&args, &dev)?;
    }
    if arg(&args, "--video").is_none() && arg(&args, "--audio").is_none() {
        anyhow::bail!("usage: media_capture --video /dev/videoN [...] | --audio PCM [...]");
    }
    Ok(())
}

#[cfg(feature = "v4l")]
fn video(args: &[String], dev: &str) -> anyhow::Result<()> {
    use roombox::media::v4l2::{PixelFormat, capture_frames, enumerate};
    for (path, name) in enumerate() {
        println!("device {} {}", path.display(), name.unwrap_or_default());
    }
    let formats = arg(args, "--formats").unwrap_or_else(|| "YUYV,NV12,MJPG".into());
    let prefs: Vec<PixelFormat> = formats.split(',').filter_map(PixelFormat::from_fourcc_str).collect();
    let size = arg(args, "--size").unwrap_or_else(|| "1280x720".into());
    let (w, h) = size.split_once('x').ok_or_else(|| anyhow::anyhow!("--size WxH"))?;
    let fps: u32 = arg(args, "--fps").unwrap_or_else(|| "30".into()).parse()?;
    let n: usize = arg(args, "--frames").unwrap_or_else(|| "30".into()).parse()?;
    let started = std::time::Instant::now();
    let (neg, frames, packets) = capture_frames(dev.as_ref(), &prefs, (w.parse()?, h.parse()?, fps), n)?;
    println!(
        "negotiated {:?} {}x{} interval {}/{}",
        neg.format, neg.width, neg.height, neg.interval.0, neg.interval.1
    );
    let mut bad = 0;
    for (k, (f, p)) in frames.iter().zip(&packets).enumerate() {
        let mean = f.y.iter().map(|&v| v as u64).sum::<u64>() / f.y.len().max(1) as u64;
        let sum = f.y.iter().fold(0u32, |a, &v| a.rotate_left(5) ^ v as u32);
        println!(
            "frame {k} {}x{} luma_mean {mean} checksum {sum:08x} payloads {}",
            f.width,
            f.height,
            p.len()
        );
        bad += p.is_empty() as usize;
    }
    println!("{} frames in {:?}", frames.len(), started.elapsed());
    anyhow::ensure!(bad == 0, "{bad} frames produced no RTP payload");
    Ok(())
}

#[cfg(not(feature = "v4l"))]
fn video(_: &[String], _: &str) -> anyhow::Result<()> {
    anyhow::bail!("built without the v4l feature")
}

#[cfg(feature = "alsa")]
fn audio(args: &[String], dev: &str) -> anyhow::Result<()> {
    use roombox::media::alsa_io::AlsaCapture;
    use roombox::media::audio::{OpusEncoder, audio_level};
    use roombox::media::source::AudioSource;
    let ms: usize = arg(args, "--ms").unwrap_or_else(|| "1000".into()).parse()?;
    let mut mic = AlsaCapture::open(dev, 480)?;
    let mut enc = OpusEncoder::new(32_000, false)?;
    let mut frame = vec![0i16; 960];
    let mut packets = 0;
    for k in 0..ms / 20 {
        mic.read(&mut frame, std::time::Instant::now())?;
        let peak = frame.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        println!("audio {k} level -{}dBov peak {peak}", audio_level(&frame));
        packets += enc.encode(&frame)?.is_some() as usize;
    }
    println!("{packets} Opus packets, {} xruns", mic.xruns());
    Ok(())
}

#[cfg(not(feature = "alsa"))]
fn audio(_: &[String], _: &str) -> anyhow::Result<()> {
    anyhow::bail!("built without the alsa feature")
}
