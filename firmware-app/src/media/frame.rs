//! Raw frames as they travel from a source to an encoder, and the pixel
//! conversions the camera formats need.

use std::time::Instant;

/// One picture in I420 (planar 4:2:0), tightly packed: `y` is `width*height`,
/// `u` and `v` are `(width/2)*(height/2)`.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoFrame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    /// When the picture was taken, on the pipeline's capture clock.
    pub capture_time: Instant,
}

impl VideoFrame {
    /// A black frame (Y 16, neutral chroma).
    pub fn black(width: usize, height: usize, capture_time: Instant) -> VideoFrame {
        VideoFrame {
            width,
            height,
            y: vec![16; width * height],
            u: vec![128; (width / 2) * (height / 2)],
            v: vec![128; (width / 2) * (height / 2)],
            capture_time,
        }
    }

    /// Resize the planes for a new size (content undefined until written).
    pub fn reshape(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.y.resize(width * height, 16);
        self.u.resize((width / 2) * (height / 2), 128);
        self.v.resize((width / 2) * (height / 2), 128);
    }
}

impl openh264::formats::YUVSource for VideoFrame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }
    fn y(&self) -> &[u8] {
        &self.y
    }
    fn u(&self) -> &[u8] {
        &self.u
    }
    fn v(&self) -> &[u8] {
        &self.v
    }
}

/// Packed YUYV 4:2:2 (`stride` bytes per row) to I420; chroma of each row pair is averaged.
pub fn yuyv_to_i420(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    dst: &mut VideoFrame,
) -> Result<(), String> {
    if !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || stride < width * 2
        || src.len() < stride * (height - 1) + width * 2
    {
        return Err(format!(
            "YUYV buffer of {} bytes too small for {width}x{height} stride {stride}",
            src.len()
        ));
    }
    dst.reshape(width, height);
    let cw = width / 2;
    for row in (0..height).step_by(2) {
        let a = &src[row * stride..row * stride + width * 2];
        let b = &src[(row + 1) * stride..(row + 1) * stride + width * 2];
        let (y0, rest) = dst.y[row * width..].split_at_mut(width);
        let y1 = &mut rest[..width];
        for x in 0..cw {
            let pa = &a[x * 4..x * 4 + 4];
            let pb = &b[x * 4..x * 4 + 4];
            y0[2 * x] = pa[0];
            y0[2 * x + 1] = pa[2];
            y1[2 * x] = pb[0];
            y1[2 * x + 1] = pb[2];
            let ci = (row / 2) * cw + x;
            dst.u[ci] = (pa[1] as u16 + pb[1] as u16).div_ceil(2) as u8;
            dst.v[ci] = (pa[3] as u16 + pb[3] as u16).div_ceil(2) as u8;
        }
    }
    Ok(())
}

/// NV12 (Y plane then interleaved UV plane, both `stride` bytes per row) to I420.
pub fn nv12_to_i420(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    dst: &mut VideoFrame,
) -> Result<(), String> {
    let uv_off = stride * height;
    if !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || stride < width
        || src.len() < uv_off + stride * (height / 2 - 1) + width
    {
        return Err(format!(
            "NV12 buffer of {} bytes too small for {width}x{height} stride {stride}",
            src.len()
        ));
    }
    dst.reshape(width, height);
    for row in 0..height {
        dst.y[row * width..(row + 1) * width].copy_from_slice(&src[row * stride..row * stride + width]);
    }
    let cw = width / 2;
    for row in 0..height / 2 {
        let uv = &src[uv_off + row * stride..uv_off + row * stride + width];
        for x in 0..cw {
            dst.u[row * cw + x] = uv[2 * x];
            dst.v[row * cw + x] = uv[2 * x + 1];
        }
    }
    Ok(())
}

/// Decode one MJPEG frame (a JPEG) into I420 through `zune-jpeg` (YCbCr output,
/// chroma subsampled by averaging 2×2 blocks).
pub fn mjpeg_to_i420(jpeg: &[u8], scratch: &mut Vec<u8>, dst: &mut VideoFrame) -> Result<(), String> {
    use zune_jpeg::JpegDecoder;
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    dec.decode_headers().map_err(|e| format!("MJPEG header: {e:?}"))?;
    let (width, height) = dec.dimensions().ok_or("MJPEG without dimensions")?;
    if width % 2 != 0 || height % 2 != 0 || width == 0 || height == 0 {
        return Err(format!("MJPEG size {width}x{height} is not even"));
    }
    let len = dec.output_buffer_size().ok_or("MJPEG output size unknown")?;
    scratch.resize(len, 0);
    dec.decode_into(scratch).map_err(|e| format!("MJPEG decode: {e:?}"))?;
    if len != width * height * 3 {
        return Err(format!("MJPEG decoded to {len} bytes, expected YCbCr {width}x{height}"));
    }
    dst.reshape(width, height);
    let cw = width / 2;
    for row in 0..height {
        let src = &scratch[row * width * 3..(row + 1) * width * 3];
        let yrow = &mut dst.y[row * width..(row + 1) * width];
        for x in 0..width {
            yrow[x] = src[x * 3];
        }
    }
    for row in 0..height / 2 {
        let a = &scratch[2 * row * width * 3..(2 * row + 1) * width * 3];
        let b = &scratch[(2 * row + 1) * width * 3..(2 * row + 2) * width * 3];
        for x in 0..cw {
            let i = 6 * x;
            let u = a[i + 1] as u32 + a[i + 4] as u32 + b[i + 1] as u32 + b[i + 4] as u32;
            let v = a[i + 2] as u32 + a[i + 5] as u32 + b[i + 2] as u32 + b[i + 5] as u32;
            dst.u[row * cw + x] = ((u + 2) / 4) as u8;
            dst.v[row * cw + x] = ((v + 2) / 4) as u8;
        }
    }
    Ok(())
}

/// Scale `src` into `dst`'s size (nearest neighbour; good enough for a camera
/// whose native size differs slightly, and for the half-size simulcast layer
/// where it is a 2:1 box filter on luma).
pub fn scale_into(src: &VideoFrame, dst: &mut VideoFrame) {
    dst.capture_time = src.capture_time;
    if src.width == dst.width && src.height == dst.height {
        dst.y.copy_from_slice(&src.y);
        dst.u.copy_from_slice(&src.u);
        dst.v.copy_from_slice(&src.v);
        return;
    }
    if src.width == dst.width * 2 && src.height == dst.height * 2 {
        halve_plane(&src.y, src.width, src.height, &mut dst.y);
        halve_plane(&src.u, src.width / 2, src.height / 2, &mut dst.u);
        halve_plane(&src.v, src.width / 2, src.height / 2, &mut dst.v);
        return;
    }
    nearest_plane(&src.y, src.width, src.height, &mut dst.y, dst.width, dst.height);
    nearest_plane(&src.u, src.width / 2, src.height / 2, &mut dst.u, dst.width / 2, dst.height / 2);
    nearest_plane(&src.v, src.width / 2, src.height / 2, &mut dst.v, dst.width / 2, dst.height / 2);
}

fn halve_plane(src: &[u8], w: usize, h: usize, dst: &mut [u8]) {
    let dw = w / 2;
    for row in 0..h / 2 {
        let a = &src[2 * row * w..(2 * row + 1) * w];
        let b = &src[(2 * row + 1) * w..(2 * row + 2) * w];
        let d = &mut dst[row * dw..(row + 1) * dw];
        for x in 0..dw {
            let s = a[2 * x] as u16 + a[2 * x + 1] as u16 + b[2 * x] as u16 + b[2 * x + 1] as u16;
            d[x] = ((s + 2) / 4) as u8;
        }
    }
}

fn nearest_plane(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    for row in 0..dh {
        let sr = row * sh / dh;
        for x in 0..dw {
            dst[row * dw + x] = src[sr * sw + x * sw / dw];
        }
    }
}

/// Luma PSNR in dB between two frames of the same size (∞ → 99).
pub fn psnr_y(a: &VideoFrame, b: &VideoFrame) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let mut se = 0u64;
    for (x, y) in a.y.iter().zip(&b.y) {
        let d = *x as i64 - *y as i64;
        se += (d * d) as u64;
    }
    if se == 0 {
        return 99.0;
    }
    let mse = se as f64 / a.y.len() as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// A decoded picture copied out of the decoder into a tightly packed frame.
pub fn from_decoded(d: &openh264::decoder::DecodedYUV<'_>, capture_time: Instant) -> VideoFrame {
    use openh264::formats::YUVSource;
    let (w, h) = d.dimensions();
    let (sy, su, sv) = d.strides();
    let mut f = VideoFrame::black(w, h, capture_time);
    for r in 0..h {
        f.y[r * w..(r + 1) * w].copy_from_slice(&d.y()[r * sy..r * sy + w]);
    }
    for r in 0..h / 2 {
        f.u[r * w / 2..(r + 1) * w / 2].copy_from_slice(&d.u()[r * su..r * su + w / 2]);
        f.v[r * w / 2..(r + 1) * w / 2].copy_from_slice(&d.v()[r * sv..r * sv + w / 2]);
    }
    f
}

/// 20 ms of mono 48 kHz audio.
pub const AUDIO_RATE: u32 = 48_000;
pub const AUDIO_FRAME_SAMPLES: usize = 960;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_and_nv12_convert_to_the_same_i420() {
        let (w, h) = (8, 4);
        let now = Instant::now();
        // YUYV: Y = x + 10*row, U = 100 + row, V = 200 - row
        let mut yuyv = vec![0u8; w * 2 * h];
        let mut nv12 = vec![0u8; w * h + w * h / 2];
        for row in 0..h {
            for x in 0..w / 2 {
                let p = &mut yuyv[row * w * 2 + x * 4..row * w * 2 + x * 4 + 4];
                p[0] = (2 * x + 10 * row) as u8;
                p[1] = 100;
                p[2] = (2 * x + 1 + 10 * row) as u8;
                p[3] = 200;
            }
            for x in 0..w {
                nv12[row * w + x] = (x + 10 * row) as u8;
            }
        }
        for row in 0..h / 2 {
            for x in 0..w / 2 {
                nv12[w * h + row * w + 2 * x] = 100;
                nv12[w * h + row * w + 2 * x + 1] = 200;
            }
        }
        let mut a = VideoFrame::black(2, 2, now);
        let mut b = VideoFrame::black(2, 2, now);
        yuyv_to_i420(&yuyv, w, h, w * 2, &mut a).unwrap();
        nv12_to_i420(&nv12, w, h, w, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.y[w + 3], 13);
        assert!(a.u.iter().all(|&u| u == 100) && a.v.iter().all(|&v| v == 200));
        assert!(yuyv_to_i420(&yuyv[..10], w, h, w * 2, &mut a).is_err());
        assert!(nv12_to_i420(&nv12[..w * h], w, h, w, &mut b).is_err());
    }

    #[test]
    fn halving_averages_and_psnr_is_sane() {
        let now = Instant::now();
        let mut src = VideoFrame::black(4, 4, now);
        src.y = (0..16).map(|i| (i * 10) as u8).collect();
        let mut dst = VideoFrame::black(2, 2, now);
        scale_into(&src, &mut dst);
        assert_eq!(dst.y, vec![25, 45, 105, 125]);
        assert_eq!(psnr_y(&src, &src), 99.0);
        let mut noisy = src.clone();
        noisy.y[0] += 2;
        assert!(psnr_y(&src, &noisy) > 40.0);
    }

    #[test]
    fn garbage_mjpeg_is_an_error_not_a_panic() {
        let mut s = Vec::new();
        let mut f = VideoFrame::black(2, 2, Instant::now());
        assert!(mjpeg_to_i420(&[0xff, 0xd8, 0xff, 0x00, 1, 2, 3], &mut s, &mut f).is_err());
        assert!(mjpeg_to_i420(&[], &mut s, &mut f).is_err());
    }
}
