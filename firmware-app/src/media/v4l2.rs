//! The room camera through V4L2 (`v4l` crate, feature `v4l`): enumerate,
//! negotiate a format/size/rate from the board's preferences, convert YUYV,
//! NV12 and MJPEG (decoded with `zune-jpeg`) to I420, and survive the camera
//! being unplugged: the source reports [`MediaError::DeviceLost`], the
//! pipeline shows a "camera lost" slate and reopens it until it is back.
//!
//! The device sits behind [`CameraBackend`] so the source is unit-tested
//! here without a camera; [`capture_frames`] is the entry point for running
//! the same path against a real driver (the `vivid` VM test).

use std::time::Instant;

#[cfg(feature = "v4l")]
pub use device::*;

/// Camera pixel formats the pipeline converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Yuyv,
    Nv12,
    Mjpeg,
}

impl PixelFormat {
    pub fn from_fourcc_str(s: &str) -> Option<PixelFormat> {
        match s {
            "YUYV" => Some(PixelFormat::Yuyv),
            "NV12" => Some(PixelFormat::Nv12),
            "MJPG" => Some(PixelFormat::Mjpeg),
            _ => None,
        }
    }
    pub fn fourcc(self) -> &'static [u8; 4] {
        match self {
            PixelFormat::Yuyv => b"YUYV",
            PixelFormat::Nv12 => b"NV12",
            PixelFormat::Mjpeg => b"MJPG",
        }
    }
}

/// What negotiation settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Frame interval as numerator/denominator seconds (1/30 for 30 fps).
    pub interval: (u32, u32),
}

/// Convert one captured buffer into `frame`.
pub fn convert(
    format: PixelFormat,
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    scratch: &mut Vec<u8>,
    frame: &mut super::frame::VideoFrame,
) -> Result<(), String> {
    use super::frame::{mjpeg_to_i420, nv12_to_i420, yuyv_to_i420};
    match format {
        PixelFormat::Yuyv => yuyv_to_i420(data, width, height, stride.max(width * 2), frame),
        PixelFormat::Nv12 => nv12_to_i420(data, width, height, stride.max(width), frame),
        PixelFormat::Mjpeg => mjpeg_to_i420(data, scratch, frame),
    }?;
    frame.capture_time = Instant::now();
    Ok(())
}

#[cfg(feature = "v4l")]
mod device {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use v4l::format::Description;
    use v4l::frameinterval::FrameIntervalEnum;
    use v4l::framesize::FrameSizeEnum;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::{Format, FourCC, Fraction, FrameInterval, FrameSize};

    use super::super::MediaError;
    use super::super::frame::VideoFrame;
    use super::super::source::VideoSource;
    use super::{Negotiated, PixelFormat, convert};

    /// Choose format, size and rate from what the device offers.
    ///
    /// Formats are tried in `prefs` order; the first one offered with any
    /// size wins. Size: the exact wanted size, else the smallest that covers
    /// it, else the largest offered. Rate: the offered rate closest to `fps`,
    /// preferring at least `fps`.
    pub fn negotiate(
        offered: &[Description],
        sizes: &dyn Fn(FourCC) -> Vec<FrameSize>,
        intervals: &dyn Fn(FourCC, u32, u32) -> Vec<FrameInterval>,
        prefs: &[PixelFormat],
        want: (u32, u32, u32),
    ) -> Result<Negotiated, String> {
        let (ww, wh, fps) = want;
        for &pf in prefs {
            let fourcc = FourCC::new(pf.fourcc());
            if !offered.iter().any(|d| d.fourcc == fourcc) {
                continue;
            }
            let mut candidates: Vec<(u32, u32)> = Vec::new();
            for fs in sizes(fourcc) {
                match fs.size {
                    FrameSizeEnum::Discrete(d) => candidates.push((d.width, d.height)),
                    FrameSizeEnum::Stepwise(s) => {
                        let fit = |v: u32, min: u32, max: u32, step: u32| {
                            let v = v.clamp(min, max);
                            let step = step.max(1);
                            min + (v - min).div_ceil(step) * step
                        };
                        let w = fit(ww, s.min_width, s.max_width, s.step_width).min(s.max_width);
                        let h = fit(wh, s.min_height, s.max_height, s.step_height).min(s.max_height);
                        candidates.push((w, h));
                    }
                }
            }
            candidates.retain(|&(w, h)| w >= 2 && h >= 2 && w % 2 == 0 && h % 2 == 0);
            if candidates.is_empty() {
                continue;
            }
            let (w, h) = if candidates.contains(&(ww, wh)) {
                (ww, wh)
            } else if let Some(c) = candidates
                .iter()
                .filter(|&&(w, h)| w >= ww && h >= wh)
                .min_by_key(|&&(w, h)| w as u64 * h as u64)
            {
                *c
            } else {
                *candidates.iter().max_by_key(|&&(w, h)| w as u64 * h as u64).unwrap_or(&(ww, wh))
            };
            let mut rates: Vec<(u32, u32)> = Vec::new();
            for fi in intervals(fourcc, w, h) {
                match fi.interval {
                    FrameIntervalEnum::Discrete(f) => rates.push((f.numerator, f.denominator)),
                    FrameIntervalEnum::Stepwise(s) => {
                        // the wanted rate if the range holds it, else the range's fast end
                        let want_s = 1.0 / fps as f64;
                        let (min_s, max_s) = (
                            s.min.numerator as f64 / s.min.denominator.max(1) as f64,
                            s.max.numerator as f64 / s.max.denominator.max(1) as f64,
                        );
                        if want_s >= min_s && want_s <= max_s {
                            rates.push((1, fps));
                        } else {
                            rates.push((s.min.numerator, s.min.denominator));
                        }
                    }
                }
            }
            rates.retain(|&(n, d)| n > 0 && d > 0);
            let to_fps = |(n, d): (u32, u32)| d as f64 / n as f64;
            let interval = rates
                .iter()
                .copied()
                .min_by(|&a, &b| {
                    let key = |r| {
                        let f = to_fps(r);
                        (if f + 0.01 >= fps as f64 { 0 } else { 1 }, ((f - fps as f64).abs() * 1000.0) as u64)
                    };
                    key(a).cmp(&key(b))
                })
                .unwrap_or((1, fps));
            return Ok(Negotiated { format: pf, width: w, height: h, interval });
        }
        let names: Vec<String> = offered.iter().map(|d| d.fourcc.to_string()).collect();
        Err(format!("device offers [{}], wanted one of {:?}", names.join(", "), prefs))
    }

    /// What the source needs from a camera; [`V4lDevice`] is the real one.
    pub trait CameraBackend: Send {
        fn formats(&self) -> io::Result<Vec<Description>>;
        fn sizes(&self, fourcc: FourCC) -> io::Result<Vec<FrameSize>>;
        fn intervals(&self, fourcc: FourCC, width: u32, height: u32) -> io::Result<Vec<FrameInterval>>;
        /// Apply a format and rate; returns what the driver actually set.
        fn configure(&mut self, n: &Negotiated) -> io::Result<Format>;
        /// Wait for the next buffer and hand its bytes to `f`.
        fn next_buffer(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()>;
        /// Stop streaming and release buffers.
        fn stop(&mut self);
    }

    /// A real V4L2 capture device with mmap streaming.
    pub struct V4lDevice {
        dev: v4l::Device,
        stream: Option<v4l::io::mmap::Stream<'static>>,
    }

    impl V4lDevice {
        pub fn open(path: &Path) -> io::Result<V4lDevice> {
            let dev = v4l::Device::with_path(path)?;
            Ok(V4lDevice { dev, stream: None })
        }
    }

    impl CameraBackend for V4lDevice {
        fn formats(&self) -> io::Result<Vec<Description>> {
            self.dev.enum_formats()
        }
        fn sizes(&self, fourcc: FourCC) -> io::Result<Vec<FrameSize>> {
            self.dev.enum_framesizes(fourcc)
        }
        fn intervals(&self, fourcc: FourCC, width: u32, height: u32) -> io::Result<Vec<FrameInterval>> {
            self.dev.enum_frameintervals(fourcc, width, height)
        }
        fn configure(&mut self, n: &Negotiated) -> io::Result<Format> {
            self.stream = None;
            let mut fmt = self.dev.format()?;
            fmt.width = n.width;
            fmt.height = n.height;
            fmt.fourcc = FourCC::new(n.format.fourcc());
            let fmt = self.dev.set_format(&fmt)?;
            let params = v4l::video::capture::Parameters::new(Fraction::new(n.interval.0, n.interval.1));
            // not every driver lets the rate be set; the format still stands
            if let Err(e) = self.dev.set_params(&params) {
                tracing::debug!(error = %e, "camera refused the frame interval");
            }
            let mut stream =
                v4l::io::mmap::Stream::with_buffers(&self.dev, v4l::buffer::Type::VideoCapture, 4)?;
            stream.set_timeout(std::time::Duration::from_secs(2));
            self.stream = Some(stream);
            Ok(fmt)
        }
        fn next_buffer(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
            let stream = self.stream.as_mut().ok_or_else(|| io::Error::other("not streaming"))?;
            let (buf, meta) = stream.next()?;
            let used = (meta.bytesused as usize).min(buf.len());
            f(if used == 0 { buf } else { &buf[..used] });
            Ok(())
        }
        fn stop(&mut self) {
            self.stream = None;
        }
    }

    type Opener<B> = Box<dyn FnMut() -> io::Result<B> + Send>;

    /// The camera as a [`VideoSource`].
    pub struct V4l2Source<B: CameraBackend> {
        name: String,
        opener: Opener<B>,
        backend: Option<B>,
        prefs: Vec<PixelFormat>,
        want: (u32, u32, u32),
        active: Option<(Negotiated, Format)>,
        scratch: Vec<u8>,
        error: Option<String>,
    }

    fn lost(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(19 | 6 | 5 | 2 | 9)) // ENODEV ENXIO EIO ENOENT EBADF
            || e.kind() == io::ErrorKind::NotFound
    }

    impl V4l2Source<V4lDevice> {
        /// A V4L2 device by path that may be absent now (see [`V4l2Source::new_or_lost`]).
        pub fn open_path_or_lost(
            path: &Path,
            prefs: &[PixelFormat],
            want: (u32, u32, u32),
        ) -> V4l2Source<V4lDevice> {
            let p: PathBuf = path.to_owned();
            V4l2Source::new_or_lost(
                path.display().to_string(),
                Box::new(move || V4lDevice::open(&p)),
                prefs,
                want,
            )
        }

        /// Open a V4L2 device by path and negotiate.
        pub fn open_path(
            path: &Path,
            prefs: &[PixelFormat],
            want: (u32, u32, u32),
        ) -> Result<V4l2Source<V4lDevice>, MediaError> {
            let p: PathBuf = path.to_owned();
            V4l2Source::new(path.display().to_string(), Box::new(move || V4lDevice::open(&p)), prefs, want)
        }
    }

    impl<B: CameraBackend> V4l2Source<B> {
        pub fn new(
            name: String,
            opener: Opener<B>,
            prefs: &[PixelFormat],
            want: (u32, u32, u32),
        ) -> Result<V4l2Source<B>, MediaError> {
            let mut s = V4l2Source {
                name,
                opener,
                backend: None,
                prefs: prefs.to_vec(),
                want,
                active: None,
                scratch: Vec::new(),
                error: None,
            };
            s.start()?;
            Ok(s)
        }

        /// Like [`V4l2Source::new`], but a camera that is missing (or
        /// unusable) now is not an error: the source starts lost, the
        /// pipeline shows the "camera lost" slate and retries every second.
        pub fn new_or_lost(
            name: String,
            opener: Opener<B>,
            prefs: &[PixelFormat],
            want: (u32, u32, u32),
        ) -> V4l2Source<B> {
            let mut s = V4l2Source {
                name,
                opener,
                backend: None,
                prefs: prefs.to_vec(),
                want,
                active: None,
                scratch: Vec::new(),
                error: None,
            };
            if let Err(e) = s.start() {
                tracing::warn!(device = %s.name, error = %e, "camera not available; will retry");
                s.error = Some(e.to_string());
            }
            s
        }

        /// What was negotiated (`None` while the camera is lost).
        pub fn negotiated(&self) -> Option<Negotiated> {
            self.active.map(|(n, _)| n)
        }

        fn start(&mut self) -> Result<(), MediaError> {
            let dev_err = |error: io::Error| MediaError::VideoDevice { device: self.name.clone(), error };
            let mut b = (self.opener)().map_err(dev_err)?;
            let offered = b.formats().map_err(dev_err)?;
            let n = negotiate(
                &offered,
                &|fc| b.sizes(fc).unwrap_or_default(),
                &|fc, w, h| b.intervals(fc, w, h).unwrap_or_default(),
                &self.prefs,
                self.want,
            )
            .map_err(|detail| MediaError::NoUsableFormat { device: self.name.clone(), detail })?;
            let fmt = b.configure(&n).map_err(dev_err)?;
            if fmt.fourcc != FourCC::new(n.format.fourcc()) {
                return Err(MediaError::NoUsableFormat {
                    device: self.name.clone(),
                    detail: format!("asked for {:?}, driver set {}", n.format, fmt.fourcc),
                });
            }
            let n = Negotiated { width: fmt.width, height: fmt.height, ..n };
            tracing::info!(device = %self.name, format = ?n.format, width = n.width, height = n.height,
                interval = ?n.interval, "camera streaming");
            self.active = Some((n, fmt));
            self.backend = Some(b);
            Ok(())
        }
    }

    impl<B: CameraBackend> VideoSource for V4l2Source<B> {
        fn next_frame(&mut self, frame: &mut VideoFrame, _due: Instant) -> Result<(), MediaError> {
            if self.backend.is_none() && self.start().is_err() {
                return Err(MediaError::DeviceLost("camera"));
            }
            let (Some(b), Some((n, fmt))) = (self.backend.as_mut(), self.active) else {
                return Err(MediaError::DeviceLost("camera"));
            };
            let scratch = &mut self.scratch;
            let mut result = Ok(());
            let r = b.next_buffer(&mut |data| {
                result = convert(
                    n.format,
                    data,
                    fmt.width as usize,
                    fmt.height as usize,
                    fmt.stride as usize,
                    scratch,
                    frame,
                );
            });
            match r {
                Ok(()) => {
                    if let Err(detail) = result {
                        // a corrupt MJPEG frame: drop it, keep streaming
                        self.error = Some(detail.clone());
                        return Err(MediaError::BadFrame(detail));
                    }
                    Ok(())
                }
                Err(e) if lost(&e) || e.kind() == io::ErrorKind::TimedOut => {
                    tracing::warn!(device = %self.name, error = %e, "camera lost");
                    if let Some(mut b) = self.backend.take() {
                        b.stop();
                    }
                    self.active = None;
                    Err(MediaError::DeviceLost("camera"))
                }
                Err(error) => Err(MediaError::VideoDevice { device: self.name.clone(), error }),
            }
        }
        fn paced(&self) -> bool {
            true
        }
        fn reopen(&mut self) -> Result<(), MediaError> {
            self.backend = None;
            self.start()
        }
        fn suspend(&mut self) {
            if let Some(mut b) = self.backend.take() {
                b.stop();
            }
            self.active = None;
        }
        fn describe(&self) -> String {
            match self.active {
                Some((n, _)) => format!("V4L2 {} {:?} {}x{}", self.name, n.format, n.width, n.height),
                None => format!("V4L2 {} (not streaming)", self.name),
            }
        }
    }

    /// What [`capture_frames`] returns: the negotiated mode, the I420 frames
    /// and, per frame, its H.264 RTP payloads.
    pub type Captured = (Negotiated, Vec<VideoFrame>, Vec<Vec<bytes::Bytes>>);

    /// Capture `n` frames from a V4L2 device through the pipeline's own
    /// source and converters, and encode them to H.264 RTP payloads as the
    /// room camera would. For running against a real driver (the `vivid` VM
    /// test): returns the I420 frames and, per frame, its RTP payloads.
    pub fn capture_frames(
        path: &Path,
        prefs: &[PixelFormat],
        want: (u32, u32, u32),
        n: usize,
    ) -> Result<Captured, MediaError> {
        let mut src = V4l2Source::open_path(path, prefs, want)?;
        let neg = src.negotiated().ok_or(MediaError::DeviceLost("camera"))?;
        let mut enc =
            super::super::h264::H264Encoder::new(want.0 as usize, want.1 as usize, want.2, 1_500_000)?;
        let mut pk = super::super::h264::H264Packetizer::new(super::super::h264::DEFAULT_MTU);
        let mut frames = Vec::with_capacity(n);
        let mut packets = Vec::with_capacity(n);
        let mut raw = VideoFrame::black(2, 2, Instant::now());
        let mut scaled = VideoFrame::black(want.0 as usize, want.1 as usize, Instant::now());
        while frames.len() < n {
            src.next_frame(&mut raw, Instant::now())?;
            super::super::frame::scale_into(&raw, &mut scaled);
            let mut out = Vec::new();
            if let Some(pic) = enc.encode(&scaled)? {
                pk.packetize(pic.nals.iter().copied(), &mut out);
            }
            frames.push(scaled.clone());
            packets.push(out);
        }
        Ok((neg, frames, packets))
    }

    /// The capture devices present (`/dev/video*` that V4L2 knows), with names.
    pub fn enumerate() -> Vec<(PathBuf, Option<String>)> {
        v4l::context::enum_devices().into_iter().map(|n| (n.path().to_owned(), n.name())).collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use v4l::format::description::Flags;
        use v4l::frameinterval::Stepwise as IStep;
        use v4l::framesize::{Discrete, Stepwise};

        fn desc(fc: &[u8; 4]) -> Description {
            Description {
                index: 0,
                typ: 1,
                flags: Flags::empty(),
                description: String::from_utf8_lossy(fc).into(),
                fourcc: FourCC::new(fc),
            }
        }
        fn discrete(fc: FourCC, sizes: &[(u32, u32)]) -> Vec<FrameSize> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, &(w, h))| FrameSize {
                    index: i as u32,
                    fourcc: fc,
                    typ: 1,
                    size: FrameSizeEnum::Discrete(Discrete { width: w, height: h }),
                })
                .collect()
        }
        fn rates(fc: FourCC, w: u32, h: u32, fps: &[u32]) -> Vec<FrameInterval> {
            fps.iter()
                .enumerate()
                .map(|(i, &f)| FrameInterval {
                    index: i as u32,
                    fourcc: fc,
                    width: w,
                    height: h,
                    typ: 1,
                    interval: FrameIntervalEnum::Discrete(Fraction::new(1, f)),
                })
                .collect()
        }

        #[test]
        fn a_usb_webcam_gets_mjpeg_720p30_when_preferred() {
            let offered = [desc(b"YUYV"), desc(b"MJPG")];
            let sizes = |fc: FourCC| {
                if fc == FourCC::new(b"MJPG") {
                    discrete(fc, &[(640, 480), (1280, 720), (1920, 1080)])
                } else {
                    discrete(fc, &[(640, 480), (1280, 720)])
                }
            };
            let ivals = |fc: FourCC, w, h| {
                if fc == FourCC::new(b"YUYV") && w == 1280 {
                    rates(fc, w, h, &[10, 5])
                } else {
                    rates(fc, w, h, &[30, 15])
                }
            };
            let n = negotiate(
                &offered,
                &sizes,
                &ivals,
                &[PixelFormat::Mjpeg, PixelFormat::Yuyv],
                (1280, 720, 30),
            )
            .unwrap();
            assert_eq!(
                n,
                Negotiated { format: PixelFormat::Mjpeg, width: 1280, height: 720, interval: (1, 30) }
            );
            // YUYV first: the webcam only does 10 fps there, the closest rate is taken
            let n = negotiate(&offered, &sizes, &ivals, &[PixelFormat::Yuyv], (1280, 720, 30)).unwrap();
            assert_eq!((n.format, n.interval), (PixelFormat::Yuyv, (1, 10)));
        }

        #[test]
        fn sizes_cover_the_wanted_one_or_fall_back_to_the_largest() {
            let offered = [desc(b"NV12")];
            let ivals = |fc, w, h| rates(fc, w, h, &[60, 30]);
            let sizes = |fc| discrete(fc, &[(640, 480), (1920, 1080), (3840, 2160)]);
            let n = negotiate(&offered, &sizes, &ivals, &[PixelFormat::Nv12], (1280, 720, 30)).unwrap();
            assert_eq!((n.width, n.height, n.interval), (1920, 1080, (1, 30)));
            let small = |fc| discrete(fc, &[(320, 240), (640, 480)]);
            let n = negotiate(&offered, &small, &ivals, &[PixelFormat::Nv12], (1280, 720, 30)).unwrap();
            assert_eq!((n.width, n.height), (640, 480));
        }

        #[test]
        fn stepwise_sizes_and_rates_like_vivid() {
            let offered = [desc(b"YUYV")];
            let sizes = |fc| {
                vec![FrameSize {
                    index: 0,
                    fourcc: fc,
                    typ: 3,
                    size: FrameSizeEnum::Stepwise(Stepwise {
                        min_width: 16,
                        max_width: 4096,
                        step_width: 16,
                        min_height: 16,
                        max_height: 2160,
                        step_height: 8,
                    }),
                }]
            };
            let ivals = |fc, w, h| {
                vec![FrameInterval {
                    index: 0,
                    fourcc: fc,
                    width: w,
                    height: h,
                    typ: 3,
                    interval: FrameIntervalEnum::Stepwise(IStep {
                        min: Fraction::new(1, 60),
                        max: Fraction::new(1, 1),
                        step: Fraction::new(1, 1),
                    }),
                }]
            };
            let n = negotiate(
                &offered,
                &sizes,
                &ivals,
                &[PixelFormat::Mjpeg, PixelFormat::Yuyv],
                (1280, 720, 30),
            )
            .unwrap();
            assert_eq!(
                n,
                Negotiated { format: PixelFormat::Yuyv, width: 1280, height: 720, interval: (1, 30) }
            );
        }

        #[test]
        fn no_common_format_is_a_clear_error() {
            let offered = [desc(b"H264"), desc(b"GREY")];
            let e = negotiate(
                &offered,
                &|fc| discrete(fc, &[(640, 480)]),
                &|fc, w, h| rates(fc, w, h, &[30]),
                &[PixelFormat::Yuyv],
                (640, 480, 30),
            )
            .unwrap_err();
            assert!(e.contains("H264") && e.contains("Yuyv"), "{e}");
        }

        /// A camera this machine lacks: YUYV 64x48, frames with a counter in
        /// the first luma byte; can be unplugged and plugged back.
        struct FakeCamera {
            plugged: Arc<AtomicBool>,
            counter: Arc<AtomicUsize>,
        }
        impl CameraBackend for FakeCamera {
            fn formats(&self) -> io::Result<Vec<Description>> {
                Ok(vec![desc(b"YUYV")])
            }
            fn sizes(&self, fc: FourCC) -> io::Result<Vec<FrameSize>> {
                Ok(discrete(fc, &[(64, 48)]))
            }
            fn intervals(&self, fc: FourCC, w: u32, h: u32) -> io::Result<Vec<FrameInterval>> {
                Ok(rates(fc, w, h, &[30]))
            }
            fn configure(&mut self, n: &Negotiated) -> io::Result<Format> {
                Ok(Format::new(n.width, n.height, FourCC::new(n.format.fourcc())))
            }
            fn next_buffer(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
                if !self.plugged.load(Ordering::SeqCst) {
                    return Err(io::Error::from_raw_os_error(19));
                }
                let c = self.counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![128u8; 64 * 48 * 2];
                buf[0] = c as u8;
                f(&buf);
                Ok(())
            }
            fn stop(&mut self) {}
        }

        #[test]
        fn an_unplugged_camera_is_lost_then_comes_back() {
            let plugged = Arc::new(AtomicBool::new(true));
            let counter = Arc::new(AtomicUsize::new(0));
            let (p, c) = (plugged.clone(), counter.clone());
            let opener = Box::new(move || {
                if p.load(Ordering::SeqCst) {
                    Ok(FakeCamera { plugged: p.clone(), counter: c.clone() })
                } else {
                    Err(io::Error::from_raw_os_error(2))
                }
            });
            let mut src = V4l2Source::new("fake".into(), opener, &[PixelFormat::Yuyv], (64, 48, 30)).unwrap();
            let mut f = VideoFrame::black(2, 2, Instant::now());
            src.next_frame(&mut f, Instant::now()).unwrap();
            assert_eq!((f.width, f.height, f.y[0]), (64, 48, 0));
            src.next_frame(&mut f, Instant::now()).unwrap();
            assert_eq!(f.y[0], 1);
            plugged.store(false, Ordering::SeqCst);
            assert!(matches!(src.next_frame(&mut f, Instant::now()), Err(MediaError::DeviceLost("camera"))));
            assert!(src.reopen().is_err(), "still unplugged");
            assert!(src.negotiated().is_none());
            plugged.store(true, Ordering::SeqCst);
            src.reopen().unwrap();
            src.next_frame(&mut f, Instant::now()).unwrap();
            assert_eq!(f.y[0], 2);
            assert!(src.describe().contains("64x48"));
        }

        #[test]
        fn a_camera_missing_at_boot_starts_lost_and_is_picked_up_later() {
            let plugged = Arc::new(AtomicBool::new(false));
            let counter = Arc::new(AtomicUsize::new(0));
            let (p, c) = (plugged.clone(), counter.clone());
            let opener = Box::new(move || {
                if p.load(Ordering::SeqCst) {
                    Ok(FakeCamera { plugged: p.clone(), counter: c.clone() })
                } else {
                    Err(io::Error::from_raw_os_error(2))
                }
            });
            let mut src = V4l2Source::new_or_lost("fake".into(), opener, &[PixelFormat::Yuyv], (64, 48, 30));
            let mut f = VideoFrame::black(2, 2, Instant::now());
            assert!(matches!(src.next_frame(&mut f, Instant::now()), Err(MediaError::DeviceLost("camera"))));
            plugged.store(true, Ordering::SeqCst);
            src.reopen().unwrap();
            src.next_frame(&mut f, Instant::now()).unwrap();
            assert_eq!(f.width, 64);
        }
    }
}
