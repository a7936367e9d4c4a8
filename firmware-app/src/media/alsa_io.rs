//! The room's microphone and speakers through ALSA (`alsa` crate): 48 kHz
//! mono S16, 10 or 20 ms periods, xrun recovery, a lost device reported as
//! [`MediaError::DeviceLost`] and reopened by the pipeline.
//!
//! The pipeline never relies on ALSA for pacing (alsa-lib's `type file` PCM,
//! used by the tests, reads and writes as fast as it is called).
//!
//! Buffers: the microphone's is [`MediaConfig::capture_buffer_ms`]
//! (default [`DEFAULT_CAPTURE_BUFFER_MS`]): headroom for a stalled capture
//! thread, not latency, since every period is read as soon as it is there.
//! The speakers' is 8 periods: there the buffer *is* latency (and the echo
//! canceller's delay).
//!
//! [`MediaConfig::capture_buffer_ms`]: super::MediaConfig::capture_buffer_ms

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

use super::MediaError;
use super::config::DEFAULT_CAPTURE_BUFFER_MS;
use super::frame::AUDIO_RATE;
use super::source::{AudioSink, AudioSource};

/// Speakers: 8 periods of buffer (80 or 160 ms).
const PLAYBACK_BUFFER_PERIODS: usize = 8;

/// Frames in `ms` at 48 kHz.
pub fn frames_in_ms(ms: u32) -> usize {
    (AUDIO_RATE as usize) * ms as usize / 1000
}

fn open_pcm(
    device: &str,
    dir: Direction,
    period_frames: usize,
    buffer_frames: usize,
) -> Result<PCM, MediaError> {
    let err = |what: &str, e: alsa::Error| MediaError::AudioDevice {
        device: device.to_owned(),
        detail: format!("{what}: {e}"),
    };
    let pcm = PCM::new(device, dir, false).map_err(|e| err("open", e))?;
    {
        let hw = HwParams::any(&pcm).map_err(|e| err("hw params", e))?;
        hw.set_access(Access::RWInterleaved).map_err(|e| err("access", e))?;
        hw.set_format(Format::s16()).map_err(|e| err("format S16", e))?;
        hw.set_channels(1).map_err(|e| err("mono", e))?;
        hw.set_rate(AUDIO_RATE, ValueOr::Nearest).map_err(|e| err("48 kHz", e))?;
        hw.set_period_size_near(period_frames as alsa::pcm::Frames, ValueOr::Nearest)
            .map_err(|e| err("period", e))?;
        hw.set_buffer_size_near(buffer_frames.max(2 * period_frames) as alsa::pcm::Frames)
            .map_err(|e| err("buffer", e))?;
        pcm.hw_params(&hw).map_err(|e| err("apply hw params", e))?;
    }
    if dir == Direction::Playback {
        let sw = pcm.sw_params_current().map_err(|e| err("sw params", e))?;
        sw.set_start_threshold((period_frames * 2) as alsa::pcm::Frames)
            .map_err(|e| err("start threshold", e))?;
        pcm.sw_params(&sw).map_err(|e| err("apply sw params", e))?;
    }
    pcm.prepare().map_err(|e| err("prepare", e))?;
    Ok(pcm)
}

/// Errors that mean the device is gone (unplugged USB, driver unbound).
fn is_lost(errno: i32) -> bool {
    matches!(
        errno,
        libc_errno::ENODEV | libc_errno::ENXIO | libc_errno::EBADFD | libc_errno::EIO | libc_errno::ENOENT
    )
}

mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const EPIPE: i32 = 32;
    pub const ENODEV: i32 = 19;
    pub const ESTRPIPE: i32 = 86;
    pub const EBADFD: i32 = 77;
}

/// Move `len` frames with `op` (a `readi` or `writei` from offset `at`),
/// recovering over/underruns; a vanished device is `DeviceLost`.
fn transfer(
    pcm: &PCM,
    device: &str,
    len: usize,
    xruns: &mut u64,
    mut op: impl FnMut(&alsa::pcm::IO<'_, i16>, usize) -> alsa::Result<usize>,
) -> Result<(), MediaError> {
    let io = pcm
        .io_i16()
        .map_err(|e| MediaError::AudioDevice { device: device.to_owned(), detail: e.to_string() })?;
    let mut done = 0;
    let mut retries = 0;
    while done < len {
        match op(&io, done) {
            Ok(n) => done += n,
            Err(e) if e.errno() == libc_errno::EPIPE || e.errno() == libc_errno::ESTRPIPE => {
                *xruns += 1;
                retries += 1;
                tracing::debug!(device, errno = e.errno(), "xrun, recovering");
                if pcm.try_recover(e, true).is_err() {
                    return Err(MediaError::DeviceLost("audio"));
                }
                if retries > 8 {
                    return Err(MediaError::AudioDevice {
                        device: device.to_owned(),
                        detail: "keeps overrunning".into(),
                    });
                }
            }
            Err(e) if is_lost(e.errno()) => return Err(MediaError::DeviceLost("audio")),
            Err(e) => {
                return Err(MediaError::AudioDevice { device: device.to_owned(), detail: e.to_string() });
            }
        }
    }
    Ok(())
}

/// An ALSA capture PCM.
pub struct AlsaCapture {
    device: String,
    period: usize,
    buffer: usize,
    pcm: Option<PCM>,
    xruns: u64,
}

impl AlsaCapture {
    /// Open with the default buffer ([`DEFAULT_CAPTURE_BUFFER_MS`]).
    pub fn open(device: &str, period_frames: usize) -> Result<AlsaCapture, MediaError> {
        AlsaCapture::open_buffered(device, period_frames, frames_in_ms(DEFAULT_CAPTURE_BUFFER_MS))
    }

    /// Open with a buffer of about `buffer_frames` (the device rounds it).
    pub fn open_buffered(
        device: &str,
        period_frames: usize,
        buffer_frames: usize,
    ) -> Result<AlsaCapture, MediaError> {
        let pcm = open_pcm(device, Direction::Capture, period_frames, buffer_frames)?;
        Ok(AlsaCapture {
            device: device.to_owned(),
            period: period_frames,
            buffer: buffer_frames,
            pcm: Some(pcm),
            xruns: 0,
        })
    }

    /// A microphone that may be absent now: it starts lost and the pipeline
    /// retries it every second (the room still publishes its camera).
    pub fn open_or_lost(device: &str, period_frames: usize, buffer_frames: usize) -> AlsaCapture {
        match AlsaCapture::open_buffered(device, period_frames, buffer_frames) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(device, error = %e, "microphone not available; will retry");
                AlsaCapture {
                    device: device.to_owned(),
                    period: period_frames,
                    buffer: buffer_frames,
                    pcm: None,
                    xruns: 0,
                }
            }
        }
    }

    /// The period and buffer the device granted, in frames (`None` while lost).
    pub fn granted(&self) -> Option<(usize, usize)> {
        let hw = self.pcm.as_ref()?.hw_params_current().ok()?;
        Some((hw.get_period_size().ok()? as usize, hw.get_buffer_size().ok()? as usize))
    }
}

impl AudioSource for AlsaCapture {
    fn read(&mut self, buf: &mut [i16], _due: std::time::Instant) -> Result<(), MediaError> {
        let Some(pcm) = &self.pcm else { return Err(MediaError::DeviceLost("microphone")) };
        let r = transfer(pcm, &self.device, buf.len(), &mut self.xruns, |io, at| io.readi(&mut buf[at..]));
        if matches!(r, Err(MediaError::DeviceLost(_))) {
            tracing::warn!(device = %self.device, "microphone lost");
            self.pcm = None;
            return Err(MediaError::DeviceLost("microphone"));
        }
        r
    }
    fn xruns(&self) -> u64 {
        self.xruns
    }
    fn reopen(&mut self) -> Result<(), MediaError> {
        self.pcm = Some(open_pcm(&self.device, Direction::Capture, self.period, self.buffer)?);
        tracing::info!(device = %self.device, "microphone back");
        Ok(())
    }
    fn describe(&self) -> String {
        format!("ALSA capture {}", self.device)
    }
}

/// An ALSA playback PCM.
pub struct AlsaPlayback {
    device: String,
    period: usize,
    pcm: Option<PCM>,
    xruns: u64,
}

impl AlsaPlayback {
    pub fn open(device: &str, period_frames: usize) -> Result<AlsaPlayback, MediaError> {
        let pcm =
            open_pcm(device, Direction::Playback, period_frames, period_frames * PLAYBACK_BUFFER_PERIODS)?;
        Ok(AlsaPlayback { device: device.to_owned(), period: period_frames, pcm: Some(pcm), xruns: 0 })
    }
}

impl AlsaPlayback {
    /// Speakers that may be absent now: retried every second by the pipeline.
    pub fn open_or_lost(device: &str, period_frames: usize) -> AlsaPlayback {
        match AlsaPlayback::open(device, period_frames) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(device, error = %e, "speakers not available; will retry");
                AlsaPlayback { device: device.to_owned(), period: period_frames, pcm: None, xruns: 0 }
            }
        }
    }
}

impl AudioSink for AlsaPlayback {
    fn write(&mut self, buf: &[i16]) -> Result<(), MediaError> {
        let Some(pcm) = &self.pcm else { return Err(MediaError::DeviceLost("speakers")) };
        let r = transfer(pcm, &self.device, buf.len(), &mut self.xruns, |io, at| io.writei(&buf[at..]));
        if matches!(r, Err(MediaError::DeviceLost(_))) {
            tracing::warn!(device = %self.device, "speakers lost");
            self.pcm = None;
            return Err(MediaError::DeviceLost("speakers"));
        }
        r
    }
    fn xruns(&self) -> u64 {
        self.xruns
    }
    fn reopen(&mut self) -> Result<(), MediaError> {
        self.pcm = Some(open_pcm(
            &self.device,
            Direction::Playback,
            self.period,
            self.period * PLAYBACK_BUFFER_PERIODS,
        )?);
        tracing::info!(device = %self.device, "speakers back");
        Ok(())
    }
    fn describe(&self) -> String {
        format!("ALSA playback {}", self.device)
    }
}

impl Drop for AlsaPlayback {
    fn drop(&mut self) {
        if let Some(pcm) = &self.pcm {
            let _ = pcm.drain();
        }
    }
}
