//! An owned I420 frame: a full-size luma plane and two half-size chroma
//! planes (rounded up for odd sizes), each with its own stride.
//!
//! A decoder's output is outside input: [`I420Frame::from_planes`] checks
//! every plane's stride and length before the compositor reads a byte.

use crate::Error;

/// Largest accepted width or height (8K). Bounds the arithmetic and the
/// memory a hostile stream can make the box allocate.
pub const MAX_DIMENSION: u32 = 8192;

/// A colour in limited-range BT.601 Y'CbCr, what the encoders expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuv {
    pub y: u8,
    pub u: u8,
    pub v: u8,
}

impl Yuv {
    pub const BLACK: Yuv = Yuv { y: 16, u: 128, v: 128 };
    pub const WHITE: Yuv = Yuv { y: 235, u: 128, v: 128 };

    /// Full-range sRGB-ish RGB to limited-range BT.601 (integer, rounded).
    pub const fn from_rgb(r: u8, g: u8, b: u8) -> Yuv {
        let (r, g, b) = (r as i32, g as i32, b as i32);
        let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
        let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
        let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
        Yuv { y: clamp_u8(y), u: clamp_u8(u), v: clamp_u8(v) }
    }
}

const fn clamp_u8(x: i32) -> u8 {
    if x < 0 {
        0
    } else if x > 255 {
        255
    } else {
        x as u8
    }
}

/// Width and height of plane `plane` (0 = Y, 1 = U, 2 = V) of a `width`×`height` frame.
pub const fn plane_size(width: u32, height: u32, plane: usize) -> (u32, u32) {
    if plane == 0 { (width, height) } else { (width.div_ceil(2), height.div_ceil(2)) }
}

/// An owned I420 (YUV 4:2:0, three planes) frame.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    strides: [usize; 3],
    planes: [Vec<u8>; 3],
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("strides", &self.strides)
            .finish_non_exhaustive()
    }
}

fn check_size(width: u32, height: u32) -> Result<(), Error> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(Error::FrameSize { width, height, max: MAX_DIMENSION });
    }
    Ok(())
}

impl I420Frame {
    /// A packed frame (stride = width) filled with `colour`.
    pub fn new(width: u32, height: u32, colour: Yuv) -> Result<Self, Error> {
        check_size(width, height)?;
        let plane = |i: usize, value: u8| {
            let (w, h) = plane_size(width, height, i);
            vec![value; w as usize * h as usize]
        };
        let (cw, _) = plane_size(width, height, 1);
        Ok(I420Frame {
            width,
            height,
            strides: [width as usize, cw as usize, cw as usize],
            planes: [plane(0, colour.y), plane(1, colour.u), plane(2, colour.v)],
        })
    }

    /// Takes a decoder's planes as they are (a stride may exceed the row, as
    /// libvpx's do), after checking each stride and length.
    pub fn from_planes(
        width: u32,
        height: u32,
        strides: [usize; 3],
        planes: [Vec<u8>; 3],
    ) -> Result<Self, Error> {
        check_size(width, height)?;
        for (plane, (stride, buf)) in strides.iter().zip(&planes).enumerate() {
            let (w, h) = plane_size(width, height, plane);
            let row = w as usize;
            if *stride < row {
                return Err(Error::Stride { plane, stride: *stride, row });
            }
            let need = stride * h as usize;
            if buf.len() < need {
                return Err(Error::PlaneLength { plane, len: buf.len(), need });
            }
        }
        Ok(I420Frame { width, height, strides, planes })
    }

    /// Replaces this frame's picture with a copy of borrowed planes (a
    /// decoder's buffers, valid only until its next call), packed (stride =
    /// row), reusing this frame's allocations: a decode loop that keeps one
    /// `I420Frame` per participant allocates only when the size grows.
    /// Checked like [`I420Frame::from_planes`] except that the last row needs
    /// only its pixels, not its padding; on error the frame is unchanged.
    pub fn copy_from_planes(
        &mut self,
        width: u32,
        height: u32,
        strides: [usize; 3],
        planes: [&[u8]; 3],
    ) -> Result<(), Error> {
        check_size(width, height)?;
        for (plane, (stride, buf)) in strides.iter().zip(planes).enumerate() {
            let (w, h) = plane_size(width, height, plane);
            let row = w as usize;
            if *stride < row {
                return Err(Error::Stride { plane, stride: *stride, row });
            }
            // the last row needs only its pixels, not the padding after them
            let need = stride * (h as usize - 1) + row;
            if buf.len() < need {
                return Err(Error::PlaneLength { plane, len: buf.len(), need });
            }
        }
        for (plane, (stride, buf)) in strides.iter().zip(planes).enumerate() {
            let (w, h) = plane_size(width, height, plane);
            let dst = &mut self.planes[plane];
            dst.clear();
            for r in 0..h as usize {
                dst.extend_from_slice(&buf[r * stride..r * stride + w as usize]);
            }
            self.strides[plane] = w as usize;
        }
        self.width = width;
        self.height = height;
        Ok(())
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from one row's start to the next row's, per plane.
    pub fn strides(&self) -> [usize; 3] {
        self.strides
    }

    /// Plane `i` (0 = Y, 1 = U, 2 = V), with its stride padding.
    pub fn plane(&self, i: usize) -> &[u8] {
        &self.planes[i]
    }

    pub(crate) fn plane_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.planes[i]
    }

    /// The three planes, for an encoder.
    pub fn planes(&self) -> [&[u8]; 3] {
        [&self.planes[0], &self.planes[1], &self.planes[2]]
    }

    /// The colour at (x, y) in luma coordinates (chroma from the 2×2 block it belongs to).
    /// `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Yuv> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = |i: usize, x: u32, y: u32| self.planes[i][y as usize * self.strides[i] + x as usize];
        Some(Yuv { y: at(0, x, y), u: at(1, x / 2, y / 2), v: at(2, x / 2, y / 2) })
    }

    /// Fills the whole frame with `colour`.
    pub fn fill(&mut self, colour: Yuv) {
        self.fill_rect(0, 0, self.width, self.height, colour);
    }

    /// Fills a rectangle (luma coordinates, clipped to the frame) with
    /// `colour`. Chroma covers every 2×2 block the rectangle touches, so
    /// callers keep rectangles even-aligned to avoid bleeding into a
    /// neighbour's chroma.
    pub fn fill_rect(&mut self, x: u32, y: u32, w: u32, h: u32, colour: Yuv) {
        let x1 = x.saturating_add(w).min(self.width);
        let y1 = y.saturating_add(h).min(self.height);
        if x >= x1 || y >= y1 {
            return;
        }
        let (cw, ch) = plane_size(self.width, self.height, 1);
        let rects = [
            (x, y, x1, y1),
            (x / 2, y / 2, x1.div_ceil(2).min(cw), y1.div_ceil(2).min(ch)),
            (x / 2, y / 2, x1.div_ceil(2).min(cw), y1.div_ceil(2).min(ch)),
        ];
        for (i, (value, (x0, y0, x1, y1))) in
            [colour.y, colour.u, colour.v].into_iter().zip(rects).enumerate()
        {
            let stride = self.strides[i];
            for row in y0..y1 {
                let start = row as usize * stride;
                self.planes[i][start + x0 as usize..start + x1 as usize].fill(value);
            }
        }
    }

    /// Sets one luma pixel (clipped); used for text, where chroma stays as
    /// the label box left it (white and black are both neutral chroma).
    pub(crate) fn set_luma(&mut self, x: u32, y: u32, value: u8) {
        if x < self.width && y < self.height {
            let i = y as usize * self.strides[0] + x as usize;
            self.planes[0][i] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_frame_is_packed_and_filled() {
        let f = I420Frame::new(6, 4, Yuv::WHITE).unwrap();
        assert_eq!(f.strides(), [6, 3, 3]);
        assert_eq!(f.plane(0).len(), 24);
        assert_eq!(f.plane(1).len(), 6);
        assert!(f.plane(0).iter().all(|&p| p == 235));
        assert_eq!(f.pixel(5, 3), Some(Yuv::WHITE));
        assert_eq!(f.pixel(6, 0), None);
    }

    #[test]
    fn odd_sizes_round_chroma_up() {
        let f = I420Frame::new(5, 3, Yuv::BLACK).unwrap();
        assert_eq!(f.strides(), [5, 3, 3]);
        assert_eq!(f.plane(2).len(), 3 * 2);
    }

    #[test]
    fn zero_and_huge_sizes_are_refused() {
        assert!(matches!(I420Frame::new(0, 4, Yuv::BLACK), Err(Error::FrameSize { .. })));
        assert!(matches!(I420Frame::new(4, MAX_DIMENSION + 1, Yuv::BLACK), Err(Error::FrameSize { .. })));
    }

    #[test]
    fn from_planes_accepts_padded_strides() {
        // libvpx-style: 4x2 frame with 16-byte luma and 8-byte chroma strides.
        let f = I420Frame::from_planes(4, 2, [16, 8, 8], [vec![1; 32], vec![2; 8], vec![3; 8]]).unwrap();
        assert_eq!(f.pixel(3, 1), Some(Yuv { y: 1, u: 2, v: 3 }));
    }

    #[test]
    fn from_planes_refuses_short_strides_and_buffers() {
        let err = I420Frame::from_planes(4, 2, [3, 2, 2], [vec![0; 8], vec![0; 2], vec![0; 2]]).unwrap_err();
        assert!(matches!(err, Error::Stride { plane: 0, stride: 3, row: 4 }), "{err}");
        let err = I420Frame::from_planes(4, 2, [4, 2, 2], [vec![0; 8], vec![0; 2], vec![0; 1]]).unwrap_err();
        assert!(matches!(err, Error::PlaneLength { plane: 2, len: 1, need: 2 }), "{err}");
        let err = I420Frame::from_planes(4, 4, [4, 2, 2], [vec![0; 15], vec![0; 4], vec![0; 4]]).unwrap_err();
        assert!(matches!(err, Error::PlaneLength { plane: 0, len: 15, need: 16 }), "{err}");
    }

    #[test]
    fn copy_from_planes_packs_a_padded_decoder_frame_and_reuses_the_buffers() {
        let mut f = I420Frame::new(8, 8, Yuv::BLACK).unwrap();
        let before = f.plane(0).as_ptr();
        // 4x2 in 16-byte luma rows, the last row cut short after its pixels (as some decoders do)
        let mut y = vec![9u8; 16 + 4];
        y[16..20].copy_from_slice(&[1, 2, 3, 4]);
        f.copy_from_planes(4, 2, [16, 8, 8], [&y, &[5, 6], &[7, 8]]).unwrap();
        assert_eq!((f.width(), f.height(), f.strides()), (4, 2, [4, 2, 2]));
        assert_eq!(f.plane(0), &[9, 9, 9, 9, 1, 2, 3, 4]);
        assert_eq!(f.pixel(3, 1), Some(Yuv { y: 4, u: 6, v: 8 }));
        assert_eq!(f.plane(0).as_ptr(), before, "no new allocation for a smaller frame");
        let err = f.copy_from_planes(4, 2, [16, 8, 8], [&y[..19], &[5, 6], &[7, 8]]).unwrap_err();
        assert!(matches!(err, Error::PlaneLength { plane: 0, len: 19, need: 20 }), "{err}");
        assert!(matches!(
            f.copy_from_planes(4, 2, [2, 2, 2], [&y, &[5, 6], &[7, 8]]),
            Err(Error::Stride { plane: 0, .. })
        ));
        assert_eq!(f.plane(0), &[9, 9, 9, 9, 1, 2, 3, 4], "unchanged after an error");
    }

    #[test]
    fn fill_rect_is_clipped_and_touches_only_its_rect() {
        let mut f = I420Frame::new(8, 8, Yuv::BLACK).unwrap();
        let red = Yuv::from_rgb(255, 0, 0);
        f.fill_rect(2, 2, 100, 2, red);
        assert_eq!(f.pixel(2, 2), Some(red));
        assert_eq!(f.pixel(7, 3), Some(red));
        assert_eq!(f.pixel(1, 2), Some(Yuv::BLACK));
        assert_eq!(f.pixel(2, 4), Some(Yuv::BLACK));
        f.fill_rect(9, 9, 4, 4, red); // outside: nothing, no panic
    }

    #[test]
    fn rgb_conversion_matches_bt601_limited_range() {
        assert_eq!(Yuv::from_rgb(0, 0, 0), Yuv::BLACK);
        assert_eq!(Yuv::from_rgb(255, 255, 255), Yuv::WHITE);
        assert_eq!(Yuv::from_rgb(255, 0, 0), Yuv { y: 82, u: 90, v: 240 });
    }
}
