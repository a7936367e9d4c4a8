//! Full-frame slates the camera track shows when there is no picture to
//! send: "CAMERA OFF" (privacy) and "CAMERA LOST" (unplugged). Rendered
//! without a font file: a 5×7 bitmap of the few letters needed.

use super::frame::VideoFrame;

/// Why the camera track shows a slate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slate {
    /// Camera off by the room (privacy): nothing from the camera is sent.
    Privacy,
    /// The camera is gone; capture resumes when it is back.
    CameraLost,
}

fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        _ => [0; 7],
    }
}

/// Paint `slate` over the whole of `frame` (its size is kept).
pub fn render(frame: &mut VideoFrame, slate: Slate) {
    let (w, h) = (frame.width, frame.height);
    let (text, bg_u, bg_v) = match slate {
        Slate::Privacy => ("CAMERA OFF", 128u8, 128u8),
        Slate::CameraLost => ("CAMERA LOST", 110, 170),
    };
    frame.y.fill(40);
    frame.u.fill(bg_u);
    frame.v.fill(bg_v);
    let n = text.chars().count();
    let scale = (w / (n * 6 + 2)).min(h / 12).max(1);
    let tw = n * 6 * scale;
    let x0 = (w.saturating_sub(tw)) / 2;
    let y0 = (h.saturating_sub(7 * scale)) / 2;
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (gy, bits) in g.iter().enumerate() {
            for gx in 0..5 {
                if bits & (0x10 >> gx) == 0 {
                    continue;
                }
                for y in y0 + gy * scale..y0 + (gy + 1) * scale {
                    let x = x0 + (i * 6 + gx) * scale;
                    if y < h && x + scale <= w {
                        frame.y[y * w + x..y * w + x + scale].fill(220);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn slates_differ_and_carry_text() {
        let mut a = VideoFrame::black(640, 360, Instant::now());
        let mut b = a.clone();
        render(&mut a, Slate::Privacy);
        render(&mut b, Slate::CameraLost);
        assert_ne!(a, b);
        let bright = a.y.iter().filter(|&&p| p == 220).count();
        assert!(bright > 1000, "text drawn: {bright} px");
    }
}
