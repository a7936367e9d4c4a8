//! Where each participant goes in the composite picture.
//!
//! Deterministic and pure: the same tiles and output size give the same
//! rectangles, in the tiles' order (the caller keeps a stable order, e.g.
//! join order), so the picture does not reshuffle from frame to frame.
//!
//! - **No active speaker, or fewer than 3 tiles: a grid.** `cols =
//!   ceil(sqrt(N))`, `rows = ceil(N / cols)`: 1 → 1×1, 2 → 2×1, 3–4 → 2×2,
//!   5–6 → 3×2, 7–9 → 3×3, 10–12 → 4×3, 13–16 → 4×4, … Equal cells; a last
//!   row that is not full is centred. Two people share the picture equally
//!   even when one speaks (the speaker gets the border, not the space).
//! - **An active speaker and N ≥ 3: a big tile plus a strip.** The speaker
//!   takes the full width above a strip holding everyone else in their
//!   order: up to 6 per strip row, at most 3 rows (beyond 19 people the rows
//!   get longer). Strip cells have the output's aspect and are at most a
//!   quarter of the width (so the big tile keeps at least 2/5 of the height
//!   and is the largest tile by area, letterboxed or not).
//!
//! Every rectangle is even-aligned (x, y, width, height), so an I420 chroma
//! sample never straddles two tiles; rectangles never overlap and stay inside
//! the output. [`Rect::fit`] letterboxes a source inside its cell, keeping
//! its aspect.

/// One participant as the layout sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile<'a> {
    /// The participant's id in the room (kept for the caller; the layout
    /// does not read it).
    pub id: &'a str,
    /// Display name, burnt into the tile.
    pub name: &'a str,
    /// Whether a video frame is expected (otherwise the tile shows the name only).
    pub has_video: bool,
    /// The active speaker; if several are flagged, the first one counts.
    pub speaking: bool,
}

/// A rectangle in output pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

const fn even(v: u32) -> u32 {
    v & !1
}

impl Rect {
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    pub const fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }

    pub const fn right(&self) -> u32 {
        self.x + self.w
    }

    pub const fn bottom(&self) -> u32 {
        self.y + self.h
    }

    pub const fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    pub const fn overlaps(&self, o: &Rect) -> bool {
        !self.is_empty()
            && !o.is_empty()
            && self.x < o.right()
            && o.x < self.right()
            && self.y < o.bottom()
            && o.y < self.bottom()
    }

    /// Whether every corner is on an even coordinate (I420-safe).
    pub const fn is_even_aligned(&self) -> bool {
        self.x.is_multiple_of(2)
            && self.y.is_multiple_of(2)
            && self.w.is_multiple_of(2)
            && self.h.is_multiple_of(2)
    }

    /// The largest even-aligned rectangle of the source's aspect inside
    /// this one, centred (letterbox or pillarbox). Empty for an empty source.
    pub fn fit(&self, src_w: u32, src_h: u32) -> Rect {
        if src_w == 0 || src_h == 0 || self.is_empty() {
            return Rect::new(self.x, self.y, 0, 0);
        }
        let (sw, sh, w, h) = (src_w as u64, src_h as u64, self.w as u64, self.h as u64);
        let (fw, fh) = if sw * h <= w * sh {
            // taller than the cell: full height, bars left and right
            (even((sw * h / sh) as u32), self.h)
        } else {
            (self.w, even((sh * w / sw) as u32))
        };
        Rect::new(self.x + even((self.w - fw) / 2), self.y + even((self.h - fh) / 2), fw, fh)
    }
}

/// What a tile is in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cell of the equal grid.
    Grid,
    /// The active speaker's big tile.
    Speaker,
    /// A cell of the strip under the speaker.
    Strip,
}

/// One tile's place: `index` into the tiles given to [`layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub index: usize,
    pub rect: Rect,
    pub role: Role,
}

/// Strip cells per row at most, and strip rows at most.
const STRIP_PER_ROW: usize = 6;
const STRIP_MAX_ROWS: usize = 3;

/// Places `tiles` in a `width`×`height` picture; one [`Placed`] per tile, in
/// the tiles' order. See the module documentation for the rules.
pub fn layout(tiles: &[Tile<'_>], width: u32, height: u32) -> Vec<Placed> {
    let mut out = Vec::with_capacity(tiles.len());
    layout_into(tiles, width, height, &mut out);
    out
}

/// [`layout`] into a reused vector (cleared first).
pub fn layout_into(tiles: &[Tile<'_>], width: u32, height: u32, out: &mut Vec<Placed>) {
    place(tiles.len(), tiles.iter().position(|t| t.speaking), width, height, out);
}

/// The layout of `n` tiles of which `speaker` (an index) is the active speaker.
pub(crate) fn place(n: usize, speaker: Option<usize>, width: u32, height: u32, out: &mut Vec<Placed>) {
    out.clear();
    let (width, height) = (even(width), even(height));
    if n == 0 {
        return;
    }
    match speaker {
        Some(speaker) if n >= 3 && speaker < n => speaker_and_strip(n, speaker, width, height, out),
        _ => grid(n, width, height, out),
    }
}

fn grid(n: usize, width: u32, height: u32, out: &mut Vec<Placed>) {
    let cols = n.isqrt() + usize::from(n.isqrt() * n.isqrt() < n);
    let rows = n.div_ceil(cols);
    let cell_w = even(width / cols as u32);
    let cell_h = even(height / rows as u32);
    let x0 = even((width - cell_w * cols as u32) / 2);
    let y0 = even((height - cell_h * rows as u32) / 2);
    for index in 0..n {
        let (row, col) = (index / cols, index % cols);
        let in_row = (n - row * cols).min(cols);
        let row_x = x0 + even((cols - in_row) as u32 * cell_w / 2);
        let rect = Rect::new(row_x + col as u32 * cell_w, y0 + row as u32 * cell_h, cell_w, cell_h);
        out.push(Placed { index, rect, role: Role::Grid });
    }
}

fn speaker_and_strip(n: usize, speaker: usize, width: u32, height: u32, out: &mut Vec<Placed>) {
    let others = n - 1;
    let rows = others.div_ceil(STRIP_PER_ROW).min(STRIP_MAX_ROWS);
    let per_row = others.div_ceil(rows);
    let size_cols = per_row.max(4) as u32;
    let cell_w = even(width / size_cols);
    let cell_h = even((cell_w as u64 * height as u64 / width.max(1) as u64) as u32);
    let big_h = even(height - rows as u32 * cell_h);
    let mut k = 0; // position among the others
    for index in 0..n {
        if index == speaker {
            out.push(Placed { index, rect: Rect::new(0, 0, width, big_h), role: Role::Speaker });
            continue;
        }
        let (row, col) = (k / per_row, k % per_row);
        let in_row = (others - row * per_row).min(per_row) as u32;
        let row_x = even((width - in_row * cell_w) / 2);
        let rect = Rect::new(row_x + col as u32 * cell_w, big_h + row as u32 * cell_h, cell_w, cell_h);
        out.push(Placed { index, rect, role: Role::Strip });
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiles(n: usize, speaker: Option<usize>) -> Vec<Tile<'static>> {
        (0..n).map(|i| Tile { id: "p", name: "n", has_video: true, speaking: Some(i) == speaker }).collect()
    }

    const SIZES: [(u32, u32); 4] = [(1920, 1080), (1280, 720), (854, 480), (1080, 1920)];

    fn check_sane(placed: &[Placed], n: usize, w: u32, h: u32) {
        assert_eq!(placed.len(), n);
        for (i, p) in placed.iter().enumerate() {
            assert_eq!(p.index, i, "tiles keep their order");
            assert!(p.rect.right() <= w && p.rect.bottom() <= h, "{p:?} outside {w}x{h}");
            assert!(p.rect.is_even_aligned(), "{p:?} not even-aligned");
            assert!(!p.rect.is_empty(), "{p:?} empty");
            for q in &placed[i + 1..] {
                assert!(!p.rect.overlaps(&q.rect), "{p:?} overlaps {q:?}");
            }
        }
    }

    #[test]
    fn grids_have_the_documented_shape() {
        // (n, cols, rows)
        for (n, cols, rows) in [
            (1, 1, 1),
            (2, 2, 1),
            (3, 2, 2),
            (4, 2, 2),
            (5, 3, 2),
            (6, 3, 2),
            (7, 3, 3),
            (9, 3, 3),
            (10, 4, 3),
            (16, 4, 4),
        ] {
            let p = layout(&tiles(n, None), 1920, 1080);
            assert_eq!(p[0].rect.w, even(1920 / cols), "n={n}");
            assert_eq!(p[0].rect.h, even(1080 / rows), "n={n}");
            assert!(p.iter().all(|p| p.role == Role::Grid));
        }
        assert_eq!(layout(&tiles(1, None), 1920, 1080)[0].rect, Rect::new(0, 0, 1920, 1080));
    }

    #[test]
    fn a_partial_last_row_is_centred() {
        let p = layout(&tiles(3, None), 1920, 1080);
        assert_eq!(p[2].rect, Rect::new(480, 540, 960, 540));
    }

    #[test]
    fn tiles_never_overlap_and_stay_inside_for_any_count() {
        for (w, h) in SIZES {
            for n in 1..=30 {
                check_sane(&layout(&tiles(n, None), w, h), n, w, h);
                for s in [0, n / 2, n - 1] {
                    check_sane(&layout(&tiles(n, Some(s)), w, h), n, w, h);
                }
            }
        }
    }

    #[test]
    fn the_active_speaker_gets_the_largest_tile_from_three_people() {
        for (w, h) in SIZES {
            for n in 3..=30 {
                for s in [0, 1, n - 1] {
                    let p = layout(&tiles(n, Some(s)), w, h);
                    assert_eq!(p[s].role, Role::Speaker);
                    let big = p[s].rect.fit(16, 9).area();
                    for (i, q) in p.iter().enumerate().filter(|(i, _)| *i != s) {
                        assert_eq!(q.role, Role::Strip);
                        assert!(q.rect.area() < p[s].rect.area(), "n={n} {w}x{h}: tile {i} {q:?}");
                        assert!(
                            q.rect.fit(16, 9).area() < big,
                            "n={n} {w}x{h}: 16:9 video in tile {i} not smaller"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_speaker_layout_is_a_big_tile_above_a_strip() {
        let p = layout(&tiles(4, Some(2)), 1920, 1080);
        assert_eq!(p[2].rect, Rect::new(0, 0, 1920, 810));
        // three others, 480x270 each, centred in one row under it
        assert_eq!(p[0].rect, Rect::new(240, 810, 480, 270));
        assert_eq!(p[1].rect, Rect::new(720, 810, 480, 270));
        assert_eq!(p[3].rect, Rect::new(1200, 810, 480, 270));
    }

    #[test]
    fn nine_people_with_a_speaker_get_two_strip_rows_of_four() {
        let p = layout(&tiles(9, Some(4)), 1920, 1080);
        assert_eq!(p[4].rect, Rect::new(0, 0, 1920, 540));
        assert_eq!(p[0].rect, Rect::new(0, 540, 480, 270));
        assert_eq!(p[3].rect, Rect::new(1440, 540, 480, 270));
        assert_eq!(p[5].rect, Rect::new(0, 810, 480, 270));
        assert_eq!(p[8].rect, Rect::new(1440, 810, 480, 270));
    }

    #[test]
    fn two_people_share_the_picture_equally_even_when_one_speaks() {
        let p = layout(&tiles(2, Some(1)), 1920, 1080);
        assert_eq!(p[0].rect.area(), p[1].rect.area());
        assert!(p.iter().all(|p| p.role == Role::Grid));
    }

    #[test]
    fn layout_is_deterministic_and_keeps_the_others_order() {
        let t = tiles(7, Some(3));
        assert_eq!(layout(&t, 1920, 1080), layout(&t, 1920, 1080));
        let p = layout(&t, 1920, 1080);
        let strip: Vec<_> = p.iter().filter(|p| p.role == Role::Strip).collect();
        assert!(
            strip.windows(2).all(|w| (w[0].rect.y, w[0].rect.x) < (w[1].rect.y, w[1].rect.x)),
            "strip in tile order"
        );
        // only the first flagged speaker counts
        let mut two = tiles(5, Some(1));
        two[3].speaking = true;
        let p = layout(&two, 1920, 1080);
        assert_eq!(p[1].role, Role::Speaker);
        assert_eq!(p[3].role, Role::Strip);
    }

    #[test]
    fn fit_letterboxes_and_pillarboxes_even_aligned() {
        let cell = Rect::new(100, 50, 640, 480);
        assert_eq!(cell.fit(1280, 720), Rect::new(100, 50 + 60, 640, 360));
        assert_eq!(cell.fit(480, 640), Rect::new(100 + 140, 50, 360, 480));
        let odd = Rect::new(0, 0, 480, 270).fit(641, 361);
        assert!(odd.is_even_aligned() && odd.w <= 480 && odd.h <= 270, "{odd:?}");
        assert!(Rect::new(0, 0, 10, 10).fit(0, 5).is_empty());
    }

    #[test]
    fn no_tiles_no_layout() {
        assert!(layout(&[], 1920, 1080).is_empty());
    }
}
