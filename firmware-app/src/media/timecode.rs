//! A timecode burnt into the picture as a binary block code, readable back
//! from a decoded (lossy) frame.
//!
//! Two rows of 32 blocks at the top-left corner: row 0 carries the frame
//! number, row 1 the capture time in milliseconds on the pipeline clock. A
//! block is white (Y 235) for 1 and black (Y 16) for 0; a reader samples the
//! centre of each block and thresholds at mid-grey. Each row ends in a guard
//! (black, white) pair so a reader can tell a timecode from random content.

use super::frame::VideoFrame;

const BITS: usize = 32;
const GUARD: usize = 2;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Block edge in pixels for a frame width: 34 blocks per row over at most half the width.
pub fn block_size(width: usize) -> usize {
    ((width / 2) / (BITS + GUARD)).clamp(4, 32) & !1
}

/// Burn `frame_no` and `capture_ms` into the top-left corner.
pub fn burn(frame: &mut VideoFrame, frame_no: u32, capture_ms: u32) {
    let b = block_size(frame.width);
    for (row, value) in [frame_no, capture_ms].into_iter().enumerate() {
        for i in 0..BITS + GUARD {
            let bit = if i < BITS { (value >> (BITS - 1 - i)) & 1 == 1 } else { i == BITS + 1 };
            let luma = if bit { WHITE } else { BLACK };
            for y in row * b..(row + 1) * b {
                let start = y * frame.width + i * b;
                frame.y[start..start + b].fill(luma);
            }
            // neutral chroma under the blocks so colour bleeding doesn't shift luma
            for y in (row * b) / 2..((row + 1) * b) / 2 {
                let start = y * (frame.width / 2) + (i * b) / 2;
                frame.u[start..start + b / 2].fill(128);
                frame.v[start..start + b / 2].fill(128);
            }
        }
    }
}

/// Read `(frame_no, capture_ms)` back, or `None` when the guards are not there.
pub fn read(frame: &VideoFrame) -> Option<(u32, u32)> {
    let b = block_size(frame.width);
    if frame.height < 2 * b || frame.width < (BITS + GUARD) * b {
        return None;
    }
    let mut out = [0u32; 2];
    for (row, slot) in out.iter_mut().enumerate() {
        let mut bits = [false; BITS + GUARD];
        for (i, bit) in bits.iter_mut().enumerate() {
            let (cx, cy) = (i * b + b / 2, row * b + b / 2);
            let q = (b / 4).max(1);
            let mut sum = 0u32;
            let mut n = 0u32;
            for y in cy - q..cy + q {
                for x in cx - q..cx + q {
                    sum += frame.y[y * frame.width + x] as u32;
                    n += 1;
                }
            }
            *bit = sum / n > (WHITE as u32 + BLACK as u32) / 2;
        }
        if bits[BITS] || !bits[BITS + 1] {
            return None;
        }
        *slot = bits[..BITS].iter().fold(0u32, |acc, &bit| (acc << 1) | bit as u32);
    }
    Some((out[0], out[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn burnt_timecode_reads_back_at_every_size() {
        for (w, h) in [(320, 180), (640, 360), (1280, 720), (1920, 1080)] {
            let mut f = VideoFrame::black(w, h, Instant::now());
            burn(&mut f, 0xdead_beef, 123_456);
            assert_eq!(read(&f), Some((0xdead_beef, 123_456)), "{w}x{h}");
            // mild noise does not flip bits
            for (i, p) in f.y.iter_mut().enumerate() {
                *p = p.saturating_add((i % 7) as u8 * 3);
            }
            assert_eq!(read(&f), Some((0xdead_beef, 123_456)));
        }
    }

    #[test]
    fn a_frame_without_a_timecode_reads_none() {
        let f = VideoFrame::black(640, 360, Instant::now());
        assert_eq!(read(&f), None);
        let mut white = f.clone();
        white.y.fill(235);
        assert_eq!(read(&white), None);
    }
}
