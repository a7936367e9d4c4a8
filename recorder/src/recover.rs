//! Recovery: find the last complete fragment of a recording cut short.
//!
//! [`scan`] reads only box headers, `moov` and the `moof`s (an `mdat` is
//! skipped by its size), so a file of any length scans in little memory.
//! It never trusts the file: every size is bounds-checked and a box that does
//! not parse ends the valid part there.

use std::io;
use std::path::Path;
use std::time::Duration;

use mp4_atom::{Decode, Moof, Moov};

use crate::Error;
use crate::mux::mehd_patch;

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Bytes up to the end of the last complete fragment (or of the init segment).
    pub valid_len: u64,
    /// The file's length when scanned.
    pub file_len: u64,
    /// Complete fragments.
    pub fragments: u32,
    /// The track's timescale (ticks per second).
    pub timescale: u32,
    /// Decode time of the first sample and the end of the last, in ticks.
    pub first_dts: u64,
    pub end_dts: u64,
    /// `end_dts - first_dts` as time.
    pub duration: Duration,
    mehd: Option<(u64, usize)>,
}

impl Recovered {
    /// Where the last complete fragment ends on the recording's timeline
    /// (every track of a recording shares its time origin, so this is how
    /// far into the recording this file reaches).
    pub fn end(&self) -> Duration {
        Duration::from_nanos((self.end_dts as u128 * 1_000_000_000 / self.timescale.max(1) as u128) as u64)
    }

    /// Bytes after the last complete fragment (a fragment cut by the crash).
    pub fn cut(&self) -> u64 {
        self.file_len - self.valid_len
    }
}

/// Random access to the bytes being scanned.
pub trait ReadAt {
    fn size(&self) -> io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..start + buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// A box header: type, header length, total length.
struct BoxHeader {
    kind: [u8; 4],
    header: u64,
    size: u64,
}

/// The header of the box at `at`, if it and the whole box fit before `end`.
fn header_at(src: &(impl ReadAt + ?Sized), at: u64, end: u64) -> io::Result<Option<BoxHeader>> {
    if end.saturating_sub(at) < 8 {
        return Ok(None);
    }
    let mut h = [0u8; 8];
    src.read_exact_at(&mut h, at)?;
    let kind = [h[4], h[5], h[6], h[7]];
    let (header, size) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
        // size 0 ("to the end") is never written by the muxer: an unfinished box
        0 => return Ok(None),
        1 => {
            if end - at < 16 {
                return Ok(None);
            }
            let mut l = [0u8; 8];
            src.read_exact_at(&mut l, at + 8)?;
            (16, u64::from_be_bytes(l))
        }
        n => (8, n as u64),
    };
    if size < header || size > end - at {
        return Ok(None);
    }
    Ok(Some(BoxHeader { kind, header, size }))
}

/// Offset and width of `moov/mvex/mehd`'s duration field in an init segment.
pub(crate) fn find_mehd(init: &[u8]) -> Option<(usize, usize)> {
    find_mehd_in(init, 0, init.len() as u64).ok().flatten().map(|(a, w)| (a as usize, w))
}

fn find_mehd_in(src: &(impl ReadAt + ?Sized), start: u64, end: u64) -> io::Result<Option<(u64, usize)>> {
    let mut path: &[&[u8; 4]] = &[b"moov", b"mvex", b"mehd"];
    let (mut at, mut end) = (start, end);
    while let Some(want) = path.first() {
        let Some(h) = header_at(src, at, end)? else { return Ok(None) };
        if &h.kind == *want {
            path = &path[1..];
            if path.is_empty() {
                let mut v = [0u8; 1];
                if h.size < h.header + 4 {
                    return Ok(None);
                }
                src.read_exact_at(&mut v, at + h.header)?;
                let width = if v[0] == 1 { 8 } else { 4 };
                if h.size < h.header + 4 + width as u64 {
                    return Ok(None);
                }
                return Ok(Some((at + h.header + 4, width)));
            }
            end = at + h.size;
            at += h.header;
        } else {
            at += h.size;
        }
    }
    Ok(None)
}

fn read_box(src: &(impl ReadAt + ?Sized), at: u64, h: &BoxHeader) -> Result<Vec<u8>, Error> {
    // a moov or moof is small; refuse absurd sizes instead of allocating them
    if h.size > 64 << 20 {
        return Err(Error::NotARecording("metadata box larger than 64 MiB"));
    }
    let mut buf = vec![0u8; h.size as usize];
    src.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// Scan a recording in memory. See [`scan_source`].
pub fn scan(data: &[u8]) -> Result<Recovered, Error> {
    scan_source(data)
}

/// Scan a recording: the init segment must be whole (else
/// [`Error::NotARecording`]); fragments count while each `moof` parses and
/// its `mdat` is complete and holds the samples the `moof` lists.
pub fn scan_source(src: &(impl ReadAt + ?Sized)) -> Result<Recovered, Error> {
    let file_len = src.size()?;
    if file_len == 0 {
        return Err(Error::Empty);
    }
    let first = header_at(src, 0, file_len)?.ok_or(Error::NotARecording("no complete first box"))?;
    if &first.kind != b"ftyp" {
        return Err(Error::NotARecording("the file does not start with ftyp"));
    }
    let mut at = first.size;
    let mut timescale = None;
    let mut mehd = None;
    while timescale.is_none() {
        let h = header_at(src, at, file_len)?
            .ok_or(Error::NotARecording("the init segment (moov) is incomplete"))?;
        if &h.kind == b"moov" {
            let body = read_box(src, at, &h)?;
            let moov = Moov::decode(&mut body.as_slice())
                .map_err(|_| Error::NotARecording("moov does not parse"))?;
            let trak = moov.trak.first().ok_or(Error::NotARecording("moov has no track"))?;
            if moov.mvex.is_none() {
                return Err(Error::NotARecording("not a fragmented MP4 (no mvex)"));
            }
            let ts = trak.mdia.mdhd.timescale;
            if ts == 0 {
                return Err(Error::NotARecording("track timescale is zero"));
            }
            timescale = Some(ts);
            mehd = find_mehd_in(src, at, at + h.size)?;
        } else if &h.kind == b"moof" || &h.kind == b"mdat" {
            return Err(Error::NotARecording("media before the moov box"));
        }
        at += h.size;
    }
    let timescale = timescale.unwrap_or(1);
    let mut valid_len = at;
    let (mut fragments, mut first_dts, mut end_dts) = (0u32, None, 0u64);
    let mut last_seq = 0u32;
    while let Some(h) = header_at(src, at, file_len)? {
        if &h.kind != b"moof" {
            if &h.kind == b"mdat" {
                break; // an mdat without its moof: not ours
            }
            at += h.size; // free, skip, sidx...: complete, harmless
            continue;
        }
        let body = read_box(src, at, &h)?;
        let Ok(moof) = Moof::decode(&mut body.as_slice()) else { break };
        let Some(mdat) = header_at(src, at + h.size, file_len)? else { break };
        if &mdat.kind != b"mdat" || moof.mfhd.sequence_number <= last_seq || moof.traf.len() != 1 {
            break;
        }
        let traf = &moof.traf[0];
        let Some(base) = traf.tfdt.as_ref().map(|t| t.base_media_decode_time) else { break };
        let (mut bytes, mut ticks) = (0u64, 0u64);
        for trun in &traf.trun {
            for e in trun.samples.iter() {
                bytes += e.size.or(traf.tfhd.default_sample_size).unwrap_or(0) as u64;
                ticks += e.duration.or(traf.tfhd.default_sample_duration).unwrap_or(0) as u64;
            }
        }
        if bytes > mdat.size - mdat.header || base < end_dts {
            break;
        }
        last_seq = moof.mfhd.sequence_number;
        first_dts.get_or_insert(base);
        end_dts = base + ticks;
        fragments += 1;
        at += h.size + mdat.size;
        valid_len = at;
    }
    let first_dts = first_dts.unwrap_or(end_dts);
    let duration =
        Duration::from_nanos(((end_dts - first_dts) as u128 * 1_000_000_000 / timescale as u128) as u64);
    Ok(Recovered { valid_len, file_len, fragments, timescale, first_dts, end_dts, duration, mehd })
}

/// Recover a file in place: cut it after its last complete fragment, write
/// the duration into the init segment and `fdatasync`. A file that is not a
/// recording is left untouched and the error says why.
pub fn recover_file(path: &Path) -> Result<Recovered, Error> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let found = scan_source(&file)?;
    if found.valid_len < found.file_len {
        file.set_len(found.valid_len)?;
    }
    if let Some((offset, width)) = found.mehd {
        mehd_patch(offset, width, found.end_dts, found.timescale).apply_to_file(&file)?;
    }
    file.sync_data()?;
    Ok(found)
}
