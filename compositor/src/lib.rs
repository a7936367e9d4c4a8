//! The room's composite picture and sound, sans-IO: layout, I420 compose,
//! names, audio mix.
//!
//! This is the core of the design's MediaCompositor (issue 9): decoded
//! participant frames and audio in, one composed I420 picture and one mixed
//! 20 ms audio frame out. Nothing here decodes, encodes, opens a file or
//! reads the clock; the drivers (live, or after the meeting from the
//! per-track recordings) do that around it.
//!
//! - [`layout`]: a deterministic grid (1, 2, 3–4, 5–6, 7–9, … tiles), or the
//!   active speaker's big tile above a strip of everyone else from three
//!   people; even-aligned rectangles for I420, letterboxed sources.
//! - [`frame::I420Frame`]: an owned, validated I420 frame (a decoder's output is
//!   outside input: strides and lengths are checked).
//! - [`compose::Compositor`]: scales each source plane by plane into its tile
//!   with `fast_image_resize` (SSE4.1/AVX2 on x86_64, NEON on the boards),
//!   burns in names with a built-in 5×7 font ([`font`]), and draws a border
//!   round the active speaker. It reuses its output frame and scaler buffers.
//! - [`audio::Mixer`]: per-source gain, muted sources left out, float sum,
//!   soft clip back to i16.
//!
//! ```
//! use compositor::{Compositor, I420Frame, Source, Tile, Yuv};
//! use compositor::audio::{AudioIn, Channels, Mixer, FRAME_SAMPLES};
//!
//! let camera = I420Frame::new(640, 360, Yuv::from_rgb(200, 40, 40)).unwrap();
//! let mut comp = Compositor::new(1280, 720).unwrap();
//! let people = [
//!     Source { tile: Tile { id: "a", name: "Ada", has_video: true, speaking: true }, frame: Some(&camera) },
//!     Source { tile: Tile { id: "b", name: "Bob", has_video: false, speaking: false }, frame: None },
//!     Source { tile: Tile { id: "c", name: "Cy", has_video: true, speaking: false }, frame: Some(&camera) },
//! ];
//! let picture = comp.compose(&people).unwrap();
//! assert_eq!((picture.width(), picture.height()), (1280, 720));
//!
//! let (a, b) = (vec![1000i16; FRAME_SAMPLES], vec![-250i16; FRAME_SAMPLES]);
//! let mut mixer = Mixer::new(Channels::Mono);
//! let sound = mixer
//!     .mix(&[
//!         AudioIn { samples: &a, channels: 1, gain: 1.0, muted: false },
//!         AudioIn { samples: &b, channels: 1, gain: 1.0, muted: false },
//!     ])
//!     .unwrap();
//! assert_eq!(sound[0], 750);
//! ```

pub mod audio;
pub mod compose;
mod error;
pub mod font;
pub mod frame;
pub mod layout;

pub use compose::{Compositor, Source, Style};
pub use error::Error;
pub use frame::{I420Frame, Yuv};
pub use layout::{Placed, Rect, Role, Tile};
