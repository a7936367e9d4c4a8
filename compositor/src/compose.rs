//! Composing one output picture: each source scaled into its tile (plane by
//! plane, with `fast_image_resize`), letterboxed, the name burnt in, a
//! border round the active speaker.
//!
//! A [`Compositor`] owns its output frame and the scaler's buffers and
//! reuses both frame after frame; [`Compositor::compose`] returns the
//! finished frame, ready for an encoder.

use fast_image_resize::images::{TypedCroppedImage, TypedCroppedImageMut, TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use crate::Error;
use crate::font;
use crate::frame::{I420Frame, Yuv, plane_size};
use crate::layout::{self, Placed, Rect, Tile};

/// Colours and sizes of the decorations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Behind everything: letterbox and pillarbox bars, the space between tiles.
    pub background: Yuv,
    /// A tile without video (camera off, or no frame decoded yet).
    pub no_video: Yuv,
    /// The box behind a name.
    pub label_box: Yuv,
    /// The name's letters (luma only is drawn; keep it a neutral grey or white).
    pub label_text: Yuv,
    /// The active speaker's border.
    pub speaker_border: Yuv,
    /// The border's width in output pixels (rounded down to even).
    pub border: u32,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            background: Yuv::BLACK,
            no_video: Yuv::from_rgb(48, 48, 56),
            label_box: Yuv::from_rgb(24, 24, 24),
            label_text: Yuv::WHITE,
            speaker_border: Yuv::from_rgb(64, 160, 255),
            border: 4,
        }
    }
}

/// One participant for one output frame: who they are and their latest
/// decoded picture (`None` before the first frame or with the camera off).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub tile: Tile<'a>,
    pub frame: Option<&'a I420Frame>,
}

/// Composes participants' frames into one picture of a fixed size.
pub struct Compositor {
    out: I420Frame,
    style: Style,
    resizer: Resizer,
    options: ResizeOptions,
    placed: Vec<Placed>,
    /// (tiles, speaker) of the last frame, to log layout changes once, not per frame.
    shape: Option<(usize, Option<usize>)>,
}

impl std::fmt::Debug for Compositor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compositor")
            .field("out", &self.out)
            .field("style", &self.style)
            .finish_non_exhaustive()
    }
}

/// Where a tile's name goes: the box, the text's top-left corner, the font
/// scale and how many characters fit. `None` when the cell is too small
/// for one character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label {
    pub boxed: Rect,
    pub text_x: u32,
    pub text_y: u32,
    pub scale: u32,
    pub chars: usize,
}

/// Font scale for a cell height: 1 below 200 px, 2 below 300, 3 below 400, then 4.
pub(crate) fn label_scale(cell_h: u32) -> u32 {
    (cell_h / 100).clamp(1, 4)
}

/// The label of a `len`-character name in `cell`, bottom left, inside the
/// border, clipped to the cell (characters that do not fit whole are dropped).
pub(crate) fn label_for(cell: Rect, len: usize, border: u32) -> Option<Label> {
    let scale = label_scale(cell.h);
    let pad = 2 * scale;
    let margin = border + 2 * scale;
    let advance = (font::WIDTH + 1) * scale;
    let box_h = (font::HEIGHT * scale + 2 * pad).next_multiple_of(2);
    let room = cell.w.checked_sub(2 * margin + 2 * pad)?;
    let chars = (len as u32).min((room + scale) / advance) as usize; // the last glyph needs no gap
    if chars == 0 || cell.h < box_h + 2 * margin {
        return None;
    }
    let text_w = chars as u32 * advance - scale;
    let boxed = Rect::new(
        (cell.x + margin) & !1,
        (cell.bottom() - margin - box_h) & !1,
        (text_w + 2 * pad).next_multiple_of(2),
        box_h,
    );
    Some(Label { boxed, text_x: boxed.x + pad, text_y: boxed.y + pad, scale, chars })
}

impl Compositor {
    /// An output of `width`×`height` (both even), with the default style.
    pub fn new(width: u32, height: u32) -> Result<Self, Error> {
        Self::with_style(width, height, Style::default())
    }

    pub fn with_style(width: u32, height: u32, style: Style) -> Result<Self, Error> {
        if width < 2 || height < 2 || width % 2 == 1 || height % 2 == 1 {
            return Err(Error::OddOutput { width, height });
        }
        let out = I420Frame::new(width, height, style.background)?;
        Ok(Compositor {
            out,
            style: Style { border: style.border & !1, ..style },
            resizer: Resizer::new(),
            // Bilinear: a 2×2-minimum kernel, the cheapest convolution that does not alias
            // when a 720p camera shrinks into a strip cell.
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            placed: Vec::new(),
            shape: None,
        })
    }

    /// The last composed frame.
    pub fn frame(&self) -> &I420Frame {
        &self.out
    }

    /// The layout of the last composed frame (indices into its sources).
    pub fn placed(&self) -> &[Placed] {
        &self.placed
    }

    /// Composes one output frame from `sources` (in a stable order; see
    /// [`crate::layout`]).
    pub fn compose(&mut self, sources: &[Source<'_>]) -> Result<&I420Frame, Error> {
        let (w, h) = (self.out.width(), self.out.height());
        let speaker = sources.iter().position(|s| s.tile.speaking);
        layout::place(sources.len(), speaker, w, h, &mut self.placed);
        if self.shape != Some((sources.len(), speaker)) {
            self.shape = Some((sources.len(), speaker));
            tracing::debug!(
                tiles = sources.len(),
                ?speaker,
                width = w,
                height = h,
                "composite layout changed"
            );
        }
        self.out.fill(self.style.background);
        for i in 0..self.placed.len() {
            let p = self.placed[i];
            let source = &sources[p.index];
            match source.frame.filter(|_| source.tile.has_video) {
                Some(frame) => {
                    let fit = p.rect.fit(frame.width(), frame.height());
                    if !fit.is_empty() {
                        self.scale_into(frame, fit)?;
                    }
                }
                None => self.out.fill_rect(p.rect.x, p.rect.y, p.rect.w, p.rect.h, self.style.no_video),
            }
            self.draw_label(p.rect, source.tile.name);
            if speaker == Some(p.index) {
                self.draw_border(p.rect);
            }
        }
        Ok(&self.out)
    }

    /// Scales `src` into `rect` (even-aligned, inside the output), plane by plane.
    fn scale_into(&mut self, src: &I420Frame, rect: Rect) -> Result<(), Error> {
        for plane in 0..3 {
            let (sw, sh) = plane_size(src.width(), src.height(), plane);
            let s_stride = src.strides()[plane];
            let s_buf = &src.plane(plane)[..s_stride * sh as usize];
            let (_, oh) = plane_size(self.out.width(), self.out.height(), plane);
            let o_stride = self.out.strides()[plane];
            let d = if plane == 0 { rect } else { Rect::new(rect.x / 2, rect.y / 2, rect.w / 2, rect.h / 2) };

            let src_img = TypedImageRef::<U8>::from_buffer(s_stride as u32, sh, s_buf)
                .map_err(|e| Error::Resize(e.to_string()))?;
            let src_view = TypedCroppedImage::from_ref(&src_img, 0, 0, sw, sh)
                .map_err(|e| Error::Resize(e.to_string()))?;
            let mut dst_img = TypedImage::<U8>::from_buffer(o_stride as u32, oh, self.out.plane_mut(plane))
                .map_err(|e| Error::Resize(e.to_string()))?;
            let mut dst_view = TypedCroppedImageMut::from_ref(&mut dst_img, d.x, d.y, d.w, d.h)
                .map_err(|e| Error::Resize(e.to_string()))?;
            self.resizer
                .resize_typed(&src_view, &mut dst_view, &self.options)
                .map_err(|e| Error::Resize(e.to_string()))?;
        }
        Ok(())
    }

    fn draw_label(&mut self, cell: Rect, name: &str) {
        let Some(label) = label_for(cell, name.chars().count(), self.style.border) else {
            return;
        };
        let b = label.boxed;
        self.out.fill_rect(b.x, b.y, b.w, b.h, self.style.label_box);
        let advance = (font::WIDTH + 1) * label.scale;
        for (k, c) in name.chars().take(label.chars).enumerate() {
            let gx = label.text_x + k as u32 * advance;
            for row in 0..font::HEIGHT {
                for col in 0..font::WIDTH {
                    if !font::is_set(c, col, row) {
                        continue;
                    }
                    for dy in 0..label.scale {
                        for dx in 0..label.scale {
                            self.out.set_luma(
                                gx + col * label.scale + dx,
                                label.text_y + row * label.scale + dy,
                                self.style.label_text.y,
                            );
                        }
                    }
                }
            }
        }
    }

    fn draw_border(&mut self, r: Rect) {
        let (b, c) = (self.style.border.min(r.w / 2).min(r.h / 2) & !1, self.style.speaker_border);
        if b == 0 {
            return;
        }
        self.out.fill_rect(r.x, r.y, r.w, b, c);
        self.out.fill_rect(r.x, r.bottom() - b, r.w, b, c);
        self.out.fill_rect(r.x, r.y, b, r.h, c);
        self.out.fill_rect(r.right() - b, r.y, b, r.h, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Role;

    const RED: Yuv = Yuv::from_rgb(255, 0, 0);
    const GREEN: Yuv = Yuv::from_rgb(0, 255, 0);

    fn tile(name: &str, speaking: bool) -> Tile<'_> {
        Tile { id: name, name, has_video: true, speaking }
    }

    /// Whether `got` is `want` give or take the scaler's rounding.
    fn near(got: Yuv, want: Yuv) -> bool {
        got.y.abs_diff(want.y) <= 2 && got.u.abs_diff(want.u) <= 2 && got.v.abs_diff(want.v) <= 2
    }

    #[test]
    fn a_red_source_fills_its_tile_and_the_letterbox_is_background() {
        let style = Style::default();
        let mut c = Compositor::new(640, 360).unwrap();
        // a 4:3 source into a 16:9 single tile: pillarboxed to 480x360 at x = 80
        let red = I420Frame::new(320, 240, RED).unwrap();
        c.compose(&[Source { tile: tile("", false), frame: Some(&red) }]).unwrap();
        assert_eq!(c.placed()[0].rect.fit(320, 240), Rect::new(80, 0, 480, 360));
        for (x, y) in [(80, 0), (559, 0), (300, 180), (80, 359), (559, 200)] {
            assert!(near(c.frame().pixel(x, y).unwrap(), RED), "({x},{y}) = {:?}", c.frame().pixel(x, y));
        }
        for (x, y) in [(0, 0), (79, 100), (560, 0), (639, 359)] {
            assert_eq!(c.frame().pixel(x, y), Some(style.background), "bar at ({x},{y})");
        }
    }

    #[test]
    fn each_source_lands_in_its_own_tile() {
        let mut c = Compositor::new(1280, 720).unwrap();
        let red = I420Frame::new(640, 360, RED).unwrap();
        let green = I420Frame::new(1280, 720, GREEN).unwrap();
        // two people: side by side 640x720 cells, 16:9 letterboxed to 640x360 at y = 180
        c.compose(&[
            Source { tile: tile("", false), frame: Some(&red) },
            Source { tile: tile("", false), frame: Some(&green) },
        ])
        .unwrap();
        let f = c.frame();
        assert!(near(f.pixel(320, 360).unwrap(), RED));
        assert!(near(f.pixel(639, 181).unwrap(), RED));
        assert!(near(f.pixel(640, 181).unwrap(), GREEN), "no bleed across the tile edge");
        assert!(near(f.pixel(1279, 539).unwrap(), GREEN));
        assert_eq!(f.pixel(320, 100), Some(Style::default().background));
    }

    #[test]
    fn a_padded_source_stride_is_honoured() {
        // 4x2 picture, left half red, right half green, in 16-byte luma rows.
        let (r, g) = (RED, GREEN);
        let mut y = vec![0u8; 32];
        let mut u = vec![0u8; 16];
        let mut v = vec![0u8; 16];
        for row in 0..2 {
            y[row * 16..row * 16 + 4].copy_from_slice(&[r.y, r.y, g.y, g.y]);
        }
        u[..2].copy_from_slice(&[r.u, g.u]);
        v[..2].copy_from_slice(&[r.v, g.v]);
        let src = I420Frame::from_planes(4, 2, [16, 8, 8], [y, u, v]).unwrap();
        let mut c = Compositor::new(4, 2).unwrap();
        c.compose(&[Source { tile: tile("", false), frame: Some(&src) }]).unwrap();
        assert_eq!(c.frame().pixel(0, 0), Some(RED));
        assert_eq!(c.frame().pixel(3, 1), Some(GREEN));
    }

    #[test]
    fn the_name_is_burnt_in_white_where_the_glyphs_are() {
        let style = Style::default();
        let mut c = Compositor::new(640, 360).unwrap();
        let red = I420Frame::new(640, 360, RED).unwrap();
        c.compose(&[Source { tile: tile("Ada 7", false), frame: Some(&red) }]).unwrap();
        let cell = c.placed()[0].rect;
        let label = label_for(cell, 5, style.border).unwrap();
        assert_eq!(label.scale, 3);
        assert_eq!(label.chars, 5);
        let f = c.frame();
        let mut white = 0;
        for (k, ch) in "Ada 7".chars().enumerate() {
            let gx = label.text_x + k as u32 * 6 * label.scale;
            for row in 0..7 {
                for col in 0..5 {
                    // the centre of each font pixel
                    let (x, y) = (gx + col * label.scale + 1, label.text_y + row * label.scale + 1);
                    let got = f.pixel(x, y).unwrap().y;
                    if font::is_set(ch, col, row) {
                        assert_eq!(got, style.label_text.y, "{ch:?} ({col},{row}) at ({x},{y})");
                        white += 1;
                    } else {
                        assert_eq!(got, style.label_box.y, "{ch:?} ({col},{row}) at ({x},{y})");
                    }
                }
            }
        }
        assert!(white > 30);
        // the box sits in the bottom-left corner of the tile, over the video, and the video shows around it
        assert!(label.boxed.x < 40 && label.boxed.bottom() > 320);
        assert!(near(f.pixel(label.boxed.right() + 2, label.boxed.y + 2).unwrap(), RED));
        assert!(near(f.pixel(label.boxed.x + 2, label.boxed.y - 2).unwrap(), RED));
    }

    #[test]
    fn a_long_name_is_clipped_to_its_tile_and_non_ascii_draws_as_question_marks() {
        let cell = Rect::new(0, 0, 200, 112);
        let label = label_for(cell, 500, 4).unwrap();
        assert!(label.chars < 500 && label.chars > 10);
        assert!(label.boxed.right() <= cell.right() && label.boxed.bottom() <= cell.bottom());
        assert!(label_for(Rect::new(0, 0, 10, 10), 3, 4).is_none(), "too small for a letter: no label");

        let mut a = Compositor::new(320, 180).unwrap();
        let mut b = Compositor::new(320, 180).unwrap();
        a.compose(&[Source {
            tile: Tile { id: "x", name: "Zoë", has_video: false, speaking: false },
            frame: None,
        }])
        .unwrap();
        b.compose(&[Source {
            tile: Tile { id: "x", name: "Zo?", has_video: false, speaking: false },
            frame: None,
        }])
        .unwrap();
        assert_eq!(a.frame(), b.frame());
        // a long name in a small grid never spills into the neighbour tile
        let mut c = Compositor::new(320, 180).unwrap();
        let long = "W".repeat(200);
        c.compose(&[
            Source { tile: Tile { id: "1", name: &long, has_video: false, speaking: false }, frame: None },
            Source { tile: Tile { id: "2", name: "", has_video: false, speaking: false }, frame: None },
        ])
        .unwrap();
        let right = c.placed()[1].rect;
        let no_video = Style::default().no_video;
        for y in right.y..right.bottom() {
            for x in right.x..right.right() {
                assert_eq!(c.frame().pixel(x, y), Some(no_video), "({x},{y})");
            }
        }
    }

    #[test]
    fn the_active_speaker_has_a_border_and_the_others_do_not() {
        let style = Style::default();
        let mut c = Compositor::new(1280, 720).unwrap();
        let red = I420Frame::new(640, 360, RED).unwrap();
        let sources: Vec<Source<'_>> =
            (0..4).map(|i| Source { tile: tile("p", i == 2), frame: Some(&red) }).collect();
        c.compose(&sources).unwrap();
        let big = c.placed()[2].rect;
        assert_eq!(c.placed()[2].role, Role::Speaker);
        let f = c.frame();
        for (x, y) in [
            (big.x, big.y),
            (big.right() - 1, big.y + 100),
            (big.x + 300, big.bottom() - 1),
            (big.x + 3, big.y + 200),
        ] {
            assert_eq!(f.pixel(x, y), Some(style.speaker_border), "({x},{y})");
        }
        assert!(near(f.pixel(big.x + 640, big.y + 100).unwrap(), RED), "inside the border: video");
        let small = c.placed()[0].rect;
        let inner = small.fit(640, 360);
        assert!(near(f.pixel(inner.x + 1, inner.y + 1).unwrap(), RED), "no border on the others");

        // two people: equal grid, the speaker still gets the border
        c.compose(&sources[1..3]).unwrap();
        let r = c.placed()[1].rect;
        assert_eq!(c.frame().pixel(r.x + 1, r.y + 1), Some(style.speaker_border));
        let r0 = c.placed()[0].rect;
        assert_ne!(c.frame().pixel(r0.x + 1, r0.y + r0.h / 2), Some(style.speaker_border));
    }

    #[test]
    fn a_tile_without_video_is_the_no_video_colour() {
        let style = Style::default();
        let mut c = Compositor::new(640, 360).unwrap();
        let red = I420Frame::new(64, 36, RED).unwrap();
        // camera off: the frame (a stale one) is ignored
        c.compose(&[Source {
            tile: Tile { id: "a", name: "", has_video: false, speaking: false },
            frame: Some(&red),
        }])
        .unwrap();
        assert_eq!(c.frame().pixel(320, 180), Some(style.no_video));
    }

    #[test]
    fn odd_tiny_and_extreme_sources_compose_without_panicking() {
        // what a hostile or broken publisher can make a decoder output
        let sizes = [(1, 1), (3, 5), (641, 361), (8192, 2), (2, 8192), (1919, 1081)];
        let frames: Vec<I420Frame> = sizes.iter().map(|&(w, h)| I420Frame::new(w, h, RED).unwrap()).collect();
        for (w, h) in [(1920, 1080), (320, 180), (2, 2)] {
            let mut c = Compositor::new(w, h).unwrap();
            for n in 1..=frames.len() {
                for speaker in [None, Some(0), Some(n - 1)] {
                    let sources: Vec<Source<'_>> = frames[..n]
                        .iter()
                        .enumerate()
                        .map(|(i, f)| Source { tile: tile("Zoë ✓", Some(i) == speaker), frame: Some(f) })
                        .collect();
                    c.compose(&sources).unwrap();
                }
            }
        }
        // a 1x1 red source still paints its whole (letterboxed) tile red
        let mut c = Compositor::new(64, 64).unwrap();
        c.compose(&[Source { tile: tile("", false), frame: Some(&frames[0]) }]).unwrap();
        assert!(near(c.frame().pixel(32, 10).unwrap(), RED));
    }

    #[test]
    fn odd_or_tiny_outputs_are_refused() {
        assert!(matches!(Compositor::new(641, 360), Err(Error::OddOutput { .. })));
        assert!(matches!(Compositor::new(0, 0), Err(Error::OddOutput { .. })));
    }
}
