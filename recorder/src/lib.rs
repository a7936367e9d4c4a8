//! Crash-safe per-track recording: RTP in, fragmented MP4 out, and recovery
//! after a power cut.
//!
//! Sans-IO: nothing here opens a socket, starts a thread or reads the clock.
//! A [`TrackRecorder`] takes one track's RTP packets (in arrival order, with
//! the time since the recording started as `arrival`) and writes a
//! fragmented MP4 to any [`std::io::Write`]: the init segment (`ftyp` +
//! `moov` with `mvex`) once the first decodable sample is there, then one
//! fragment (`moof` + `mdat`) per second of media. Every call says how many
//! fragments it completed, so the file edge ([`FileSink`]) `fdatasync`s each
//! one: a power cut loses at most the fragment being written.
//!
//! - **H.264** ([`depack::H264Depacketizer`]): single NAL, STAP-A and FU-A
//!   (RFC 6184) into length-prefixed access units; sample entry `avc3`, so SPS
//!   and PPS stay in-band and a resolution change mid-recording still plays.
//! - **VP8** ([`depack::Vp8Depacketizer`]): RFC 7741 payload descriptors into
//!   frames; sample entry `vp08`.
//! - **Opus**: one packet is one sample; sample entry `Opus`.
//! - A small reorder buffer ([`reorder::Reorder`]) puts packets back in
//!   sequence order; a gap drops the frame it broke (video waits for the next
//!   keyframe only until the decoder would, i.e. not at all: the file keeps
//!   every complete frame).
//! - RTP timestamps are unwrapped to 64 bits; a jump (a publisher restart, an
//!   SSRC change the SFU did not smooth over) rebases the track on the
//!   arrival clock instead of leaving a hole or going backwards.
//! - **Lip-sync** comes from the arrival clock: a track's first sample is
//!   placed at its arrival time since the recording started (`tfdt`), so all
//!   files of one recording share a time origin. (The SFU's local-subscriber
//!   API delivers no RTCP sender reports, so NTP↔RTP mapping is not possible
//!   here.)
//! - [`recover::scan`] walks a file, finds the last complete fragment and
//!   says where to cut; [`recover::recover_file`] truncates there, writes the
//!   duration into the init segment and syncs.
//!
//! ```
//! use recorder::{Codec, TrackRecorder, RtpIn};
//! use std::time::Duration;
//!
//! let mut file = Vec::new();
//! let mut rec = TrackRecorder::new(Codec::Opus);
//! for i in 0..150u32 {
//!     let pkt = RtpIn { seq: i as u16, timestamp: i * 960, marker: false, payload: &[0xfc, 0xff, 0xfe] };
//!     rec.push(pkt, Duration::from_millis(20 * i as u64), &mut file).unwrap();
//! }
//! let done = rec.finish(&mut file).unwrap();
//! done.patch.expect("something was recorded").apply_to(&mut file);
//! let found = recorder::recover::scan(&file).unwrap();
//! assert_eq!(found.valid_len, file.len() as u64);
//! assert_eq!(found.duration, Duration::from_secs(3));
//! ```

pub mod depack;
mod error;
mod file;
#[doc(hidden)]
pub mod fuzzing;
mod h264;
pub mod mux;
pub mod recover;
pub mod reorder;
mod track;

pub use error::Error;
pub use file::FileSink;
pub use mux::{Codec, Patch};
pub use recover::{Recovered, recover_file, scan};
pub use track::{Finished, RtpIn, TrackRecorder, Written};
