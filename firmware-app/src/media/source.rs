//! Where pictures and sound come from: one small trait each, with synthetic
//! and file implementations here (V4L2 in [`super::v4l2`], ALSA in
//! [`super::alsa_io`]), and the one capture clock they all stamp.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::MediaError;
use super::frame::{AUDIO_RATE, VideoFrame};
use super::timecode;

/// The capture clock shared by video and audio: every capture time is an
/// `Instant`, and RTP timestamps of both tracks count from the same epoch, so
/// a frame and a sample captured together carry the same media time.
#[derive(Debug, Clone, Copy)]
pub struct MediaClock {
    epoch: Instant,
}

impl MediaClock {
    pub fn new(epoch: Instant) -> MediaClock {
        MediaClock { epoch }
    }
    pub fn epoch(&self) -> Instant {
        self.epoch
    }
    /// Milliseconds since the epoch (wraps after 49 days, as RTP time does).
    pub fn ms(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.epoch).as_millis() as u32
    }
    /// 90 kHz RTP time of `t`.
    pub fn rtp_video(&self, t: Instant) -> u32 {
        (t.saturating_duration_since(self.epoch).as_micros() * 9 / 100) as u32
    }
    /// 48 kHz RTP time of `t`.
    pub fn rtp_audio(&self, t: Instant) -> u32 {
        (t.saturating_duration_since(self.epoch).as_micros() * 48 / 1000) as u32
    }
    /// The instant of a millisecond timecode.
    pub fn at_ms(&self, ms: u32) -> Instant {
        self.epoch + Duration::from_millis(ms as u64)
    }
}

/// A camera or something standing in for one.
pub trait VideoSource: Send {
    /// Fill `frame` with the next picture (I420, any even size; the pipeline
    /// scales). `due` is when the pipeline wants it: generated sources stamp
    /// it as the capture time; devices block for their next frame and stamp
    /// their own. `Err(MediaError::DeviceLost)` means the device went away:
    /// the pipeline shows a slate and calls [`VideoSource::reopen`] later.
    fn next_frame(&mut self, frame: &mut VideoFrame, due: Instant) -> Result<(), MediaError>;
    /// True when the device paces frames itself (a camera); false when the
    /// pipeline must pace by the clock (generated and file sources).
    fn paced(&self) -> bool;
    /// Try to get a lost device back.
    fn reopen(&mut self) -> Result<(), MediaError> {
        Ok(())
    }
    /// Release the device while the camera is off (privacy); the next
    /// `next_frame` reopens it.
    fn suspend(&mut self) {}
    fn describe(&self) -> String;
}

/// A microphone or something standing in for one: mono, 48 kHz, i16.
pub trait AudioSource: Send {
    /// Fill all of `buf`. `due` is the capture clock's time of its first
    /// sample (generated sources synthesise for it). The pipeline stamps
    /// capture times from its sample count, paces sources that return early
    /// and re-anchors when a device falls behind, so a source never has to
    /// pace itself.
    fn read(&mut self, buf: &mut [i16], due: Instant) -> Result<(), MediaError>;
    /// Overruns recovered so far.
    fn xruns(&self) -> u64 {
        0
    }
    fn reopen(&mut self) -> Result<(), MediaError> {
        Ok(())
    }
    fn describe(&self) -> String;
}

/// Speakers: mono, 48 kHz, i16.
pub trait AudioSink: Send {
    fn write(&mut self, buf: &[i16]) -> Result<(), MediaError>;
    /// Underruns recovered so far.
    fn xruns(&self) -> u64 {
        0
    }
    fn reopen(&mut self) -> Result<(), MediaError> {
        Ok(())
    }
    fn describe(&self) -> String;
}

// ---------------------------------------------------------------------------
// Synthetic video

/// A moving test pattern (scrolling diagonal bars and a bouncing box) with
/// the frame number and capture time burnt in (see [`timecode`]).
pub struct SyntheticVideo {
    clock: MediaClock,
    width: usize,
    height: usize,
    frame_no: u32,
    /// Pattern twice the frame width, copied with a moving offset (cheap per frame).
    luma: Vec<u8>,
    chroma_u: Vec<u8>,
    chroma_v: Vec<u8>,
}

impl SyntheticVideo {
    pub fn new(clock: MediaClock, width: usize, height: usize) -> SyntheticVideo {
        // periodic in x with a period dividing the width, so the scroll wraps seamlessly
        let band = (width / 40).max(1);
        let w2 = width * 2;
        let mut luma = vec![0u8; w2 * height];
        for y in 0..height {
            for x in 0..w2 {
                let b = ((x + y) / band) % 8;
                luma[y * w2 + x] = (40 + b * 24 + (x % band) * 16 / band) as u8;
            }
        }
        let (cw, ch) = (width, height / 2);
        let half = (width / 2).max(1);
        let mut chroma_u = vec![0u8; cw * ch];
        let mut chroma_v = vec![0u8; cw * ch];
        for y in 0..ch {
            for x in 0..cw {
                let bar = ((x % half) * 8 / half) as u8;
                chroma_u[y * cw + x] = 64 + bar * 16;
                chroma_v[y * cw + x] = 192 - bar * 16;
            }
        }
        SyntheticVideo { clock, width, height, frame_no: 0, luma, chroma_u, chroma_v }
    }
}

impl VideoSource for SyntheticVideo {
    fn next_frame(&mut self, frame: &mut VideoFrame, due: Instant) -> Result<(), MediaError> {
        let (w, h) = (self.width, self.height);
        frame.reshape(w, h);
        frame.capture_time = due;
        let ms = self.clock.ms(due);
        let shift = (ms as usize / 8) % w; // 125 px/s
        let w2 = w * 2;
        for y in 0..h {
            frame.y[y * w..(y + 1) * w].copy_from_slice(&self.luma[y * w2 + shift..y * w2 + shift + w]);
        }
        let cw = w / 2;
        let cshift = shift / 2;
        for y in 0..h / 2 {
            let src = y * w + cshift;
            frame.u[y * cw..(y + 1) * cw].copy_from_slice(&self.chroma_u[src..src + cw]);
            frame.v[y * cw..(y + 1) * cw].copy_from_slice(&self.chroma_v[src..src + cw]);
        }
        // a bouncing box, one second per crossing
        let bs = h / 6;
        let phase = (ms % 2000) as usize;
        let bx = if phase < 1000 { phase } else { 2000 - phase } * (w - bs) / 1000;
        let by = h / 2 - bs / 2;
        for y in by..by + bs {
            frame.y[y * w + bx..y * w + bx + bs].fill(210);
        }
        timecode::burn(frame, self.frame_no, ms);
        self.frame_no = self.frame_no.wrapping_add(1);
        Ok(())
    }
    fn paced(&self) -> bool {
        false
    }
    fn describe(&self) -> String {
        format!("synthetic {}x{}", self.width, self.height)
    }
}

// ---------------------------------------------------------------------------
// Synthetic audio

/// Beep length and period of [`SyntheticAudio`]: a 1 kHz beep at -6 dBFS for
/// the first 100 ms of every second of the capture clock, over a 440 Hz tone
/// at -30 dBFS.
pub const BEEP_MS: u32 = 100;
pub const BEEP_PERIOD_MS: u32 = 1000;

pub struct SyntheticAudio {
    clock: MediaClock,
}

impl SyntheticAudio {
    pub fn new(clock: MediaClock) -> SyntheticAudio {
        SyntheticAudio { clock }
    }

    /// The sample at absolute sample position `pos` (48 kHz since the epoch).
    pub fn sample_at(pos: u64) -> i16 {
        let ms = (pos / 48) % BEEP_PERIOD_MS as u64;
        let t = pos as f64 / AUDIO_RATE as f64;
        let tone = 0.0316 * (2.0 * std::f64::consts::PI * 440.0 * t).sin();
        let beep =
            if ms < BEEP_MS as u64 { 0.5 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin() } else { 0.0 };
        ((tone + beep) * 32767.0) as i16
    }
}

impl AudioSource for SyntheticAudio {
    fn read(&mut self, buf: &mut [i16], due: Instant) -> Result<(), MediaError> {
        let start = self.clock.rtp_audio(due) as u64;
        for (i, s) in buf.iter_mut().enumerate() {
            *s = Self::sample_at(start + i as u64);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "synthetic tone with beeps".into()
    }
}

// ---------------------------------------------------------------------------
// Y4M file video

/// A Y4M (`YUV4MPEG2`, 4:2:0) file, looped.
pub struct Y4mVideo {
    path: PathBuf,
    reader: BufReader<File>,
    data_start: u64,
    width: usize,
    height: usize,
    line: Vec<u8>,
}

impl Y4mVideo {
    pub fn open(path: &Path) -> Result<Y4mVideo, MediaError> {
        let err = |detail: String| MediaError::File { path: path.display().to_string(), detail };
        let file = File::open(path).map_err(|e| err(e.to_string()))?;
        let mut reader = BufReader::new(file);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header).map_err(|e| err(e.to_string()))?;
        let header = String::from_utf8_lossy(&header);
        let mut words = header.split_ascii_whitespace();
        if words.next() != Some("YUV4MPEG2") {
            return Err(err("not a Y4M file (no YUV4MPEG2 signature)".into()));
        }
        let (mut width, mut height) = (0usize, 0usize);
        for w in words {
            let (tag, value) = w.split_at(1);
            match tag {
                "W" => width = value.parse().map_err(|_| err(format!("bad width {value:?}")))?,
                "H" => height = value.parse().map_err(|_| err(format!("bad height {value:?}")))?,
                "C" if !value.starts_with("420") => {
                    return Err(err(format!("colour space C{value} is not 4:2:0")));
                }
                "I" if value != "p" && value != "?" => {
                    return Err(err("interlaced Y4M is not supported".into()));
                }
                _ => {}
            }
        }
        if width == 0 || height == 0 || width % 2 != 0 || height % 2 != 0 || width > 8192 || height > 8192 {
            return Err(err(format!("unsupported size {width}x{height}")));
        }
        let data_start = reader.stream_position().map_err(|e| err(e.to_string()))?;
        Ok(Y4mVideo { path: path.to_owned(), reader, data_start, width, height, line: Vec::new() })
    }

    fn read_frame(&mut self, frame: &mut VideoFrame) -> std::io::Result<bool> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Ok(false);
        }
        if !self.line.starts_with(b"FRAME") {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "missing FRAME marker"));
        }
        frame.reshape(self.width, self.height);
        self.reader.read_exact(&mut frame.y)?;
        self.reader.read_exact(&mut frame.u)?;
        self.reader.read_exact(&mut frame.v)?;
        Ok(true)
    }
}

impl VideoSource for Y4mVideo {
    fn next_frame(&mut self, frame: &mut VideoFrame, due: Instant) -> Result<(), MediaError> {
        let path = self.path.display().to_string();
        let err = |e: std::io::Error| MediaError::File { path: path.clone(), detail: e.to_string() };
        let got = match self.read_frame(frame) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(err(e)),
        };
        if !got {
            self.reader.seek(SeekFrom::Start(self.data_start)).map_err(err)?;
            if !self.read_frame(frame).map_err(err)? {
                return Err(err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no frames")));
            }
        }
        frame.capture_time = due;
        Ok(())
    }
    fn paced(&self) -> bool {
        false
    }
    fn describe(&self) -> String {
        format!("Y4M {} {}x{}", self.path.display(), self.width, self.height)
    }
}

// ---------------------------------------------------------------------------
// WAV file audio

/// A 16-bit PCM WAV at 48 kHz (mono, or stereo mixed down), looped.
pub struct WavAudio {
    path: PathBuf,
    samples: Vec<i16>,
    pos: usize,
}

impl WavAudio {
    pub fn open(path: &Path) -> Result<WavAudio, MediaError> {
        let bytes = std::fs::read(path)
            .map_err(|e| MediaError::File { path: path.display().to_string(), detail: e.to_string() })?;
        let samples = parse_wav(&bytes)
            .map_err(|detail| MediaError::File { path: path.display().to_string(), detail })?;
        Ok(WavAudio { path: path.to_owned(), samples, pos: 0 })
    }
}

/// Parse a RIFF/WAVE file into mono 48 kHz samples.
pub fn parse_wav(bytes: &[u8]) -> Result<Vec<i16>, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut at = 12;
    let mut channels = 0u16;
    let mut fmt_seen = false;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        let body = bytes.get(at + 8..at + 8 + len).ok_or("chunk runs past the end of the file")?;
        match id {
            b"fmt " => {
                if body.len() < 16 {
                    return Err("fmt chunk too short".into());
                }
                let format = u16::from_le_bytes([body[0], body[1]]);
                channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                if format != 1 && format != 0xfffe {
                    return Err(format!("WAV format {format} is not PCM"));
                }
                if bits != 16 || rate != AUDIO_RATE || !(channels == 1 || channels == 2) {
                    return Err(format!(
                        "need 16-bit 48 kHz mono/stereo, got {bits}-bit {rate} Hz {channels} ch"
                    ));
                }
                fmt_seen = true;
            }
            b"data" => {
                if !fmt_seen {
                    return Err("data chunk before fmt chunk".into());
                }
                let frame = 2 * channels as usize;
                let samples: Vec<i16> = body
                    .chunks_exact(frame)
                    .map(|f| {
                        if channels == 1 {
                            i16::from_le_bytes([f[0], f[1]])
                        } else {
                            let l = i16::from_le_bytes([f[0], f[1]]) as i32;
                            let r = i16::from_le_bytes([f[2], f[3]]) as i32;
                            ((l + r) / 2) as i16
                        }
                    })
                    .collect();
                if samples.is_empty() {
                    return Err("WAV has no samples".into());
                }
                return Ok(samples);
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    Err("no data chunk".into())
}

/// Write mono 48 kHz samples as a WAV file (for tests and tools).
pub fn wav_bytes(samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&AUDIO_RATE.to_le_bytes());
    out.extend_from_slice(&(AUDIO_RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

impl AudioSource for WavAudio {
    fn read(&mut self, buf: &mut [i16], _due: Instant) -> Result<(), MediaError> {
        for s in buf.iter_mut() {
            *s = self.samples[self.pos];
            self.pos = (self.pos + 1) % self.samples.len();
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("WAV {}", self.path.display())
    }
}

/// Speakers that write raw s16le to a file (tests, the lean build).
pub struct FileSink {
    path: PathBuf,
    file: std::io::BufWriter<File>,
}

impl FileSink {
    pub fn create(path: &Path) -> Result<FileSink, MediaError> {
        let file = File::create(path)
            .map_err(|e| MediaError::File { path: path.display().to_string(), detail: e.to_string() })?;
        Ok(FileSink { path: path.to_owned(), file: std::io::BufWriter::new(file) })
    }
}

impl AudioSink for FileSink {
    fn write(&mut self, buf: &[i16]) -> Result<(), MediaError> {
        use std::io::Write;
        for s in buf {
            self.file.write_all(&s.to_le_bytes())?;
        }
        self.file.flush()?;
        Ok(())
    }
    fn describe(&self) -> String {
        format!("raw file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_video_moves_and_carries_its_timecode() {
        let epoch = Instant::now();
        let clock = MediaClock::new(epoch);
        let mut src = SyntheticVideo::new(clock, 640, 360);
        let mut a = VideoFrame::black(2, 2, epoch);
        let mut b = VideoFrame::black(2, 2, epoch);
        src.next_frame(&mut a, epoch + Duration::from_millis(1000)).unwrap();
        src.next_frame(&mut b, epoch + Duration::from_millis(1033)).unwrap();
        assert_eq!(timecode::read(&a), Some((0, 1000)));
        assert_eq!(timecode::read(&b), Some((1, 1033)));
        assert_ne!(a.y, b.y, "the pattern moves");
    }

    #[test]
    fn synthetic_audio_beeps_on_the_second() {
        let epoch = Instant::now();
        let mut src = SyntheticAudio::new(MediaClock::new(epoch));
        let mut buf = vec![0i16; 48_000];
        src.read(&mut buf, epoch + Duration::from_millis(900)).unwrap();
        let peak = |r: std::ops::Range<usize>| buf[r].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak(0..4700) < 1200, "tone only before the beep");
        assert!(peak(4900..9500) > 15000, "beep from 1000 ms");
        assert!(peak(10_000..48_000) < 1200, "tone only after");
    }

    #[test]
    fn wav_round_trips_and_bad_wavs_are_refused() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 31 % 2000 - 1000) as i16).collect();
        assert_eq!(parse_wav(&wav_bytes(&samples)).unwrap(), samples);
        assert!(parse_wav(b"RIFF\0\0\0\0WAVE").unwrap_err().contains("no data"));
        assert!(parse_wav(b"nonsense").is_err());
        let mut bad = wav_bytes(&samples);
        bad[24..28].copy_from_slice(&44_100u32.to_le_bytes());
        assert!(parse_wav(&bad).unwrap_err().contains("44100"));
        let mut truncated = wav_bytes(&samples);
        truncated.truncate(100);
        assert!(parse_wav(&truncated).is_err());
    }

    #[test]
    fn y4m_loops_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.y4m");
        let mut data = b"YUV4MPEG2 W4 H2 F30:1 Ip A1:1 C420jpeg\n".to_vec();
        for n in 0..2u8 {
            data.extend_from_slice(b"FRAME\n");
            data.extend(std::iter::repeat_n(n * 100, 8 + 2 + 2));
        }
        std::fs::write(&p, &data).unwrap();
        let mut src = Y4mVideo::open(&p).unwrap();
        let mut f = VideoFrame::black(2, 2, Instant::now());
        let now = Instant::now();
        let firsts: Vec<u8> = (0..5)
            .map(|_| {
                src.next_frame(&mut f, now).unwrap();
                f.y[0]
            })
            .collect();
        assert_eq!(firsts, vec![0, 100, 0, 100, 0]);
        std::fs::write(&p, b"P6 not y4m").unwrap();
        assert!(Y4mVideo::open(&p).is_err());
        std::fs::write(&p, b"YUV4MPEG2 W4 H2 C444\n").unwrap();
        match Y4mVideo::open(&p) {
            Err(e) => assert!(e.to_string().contains("4:2:0"), "{e}"),
            Ok(_) => panic!("4:4:4 accepted"),
        }
    }
}
