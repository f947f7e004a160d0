//! Images to model-ready pixels: decode encoded bytes, convert to RGB
//! or grey, resize (stretch, fill or fit), and write pixels out as uint8 or
//! normalized float32 tensors in `HWC` or `CHW` order.
//!
//! Decoding is the `image` crate's; resampling is `fast_image_resize`'s
//! convolution, about five times faster than `image`'s own resize on 8-bit
//! pixels (measured without SIMD, as this component runs). Everything here
//! is a pure function of its arguments, so the operator's numbers can be
//! checked natively against the same crates.

use std::io::Cursor;

use fast_image_resize as fir;
use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits};
use serde::Deserialize;

/// Widest or tallest image decoded: a small file that claims huge
/// dimensions (a decompression bomb) is refused before its pixels are
/// allocated.
pub const DIMENSION_MAX: u32 = 16_384;

/// Most bytes the decoder may allocate for one image (its pixels included):
/// keeps one image well inside an instance's default memory.
pub const DECODE_BYTES_MAX: u64 = 192 << 20;

/// How many channels the output has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// Grey (luma), one channel.
    Grey,
    /// Red, green, blue.
    Rgb,
}

impl Channels {
    pub fn count(self) -> usize {
        match self {
            Channels::Grey => 1,
            Channels::Rgb => 3,
        }
    }
}

/// How an image is brought to the target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Scale each axis to the target, ignoring the aspect ratio.
    Stretch,
    /// Scale so the image covers the target (its shorter side fits), then
    /// crop the center: the ImageNet convention.
    #[default]
    Fill,
    /// Scale so the whole image fits inside the target, then pad the rest
    /// with black, keeping the image centered.
    Fit,
}

/// The resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filter {
    Nearest,
    /// Bilinear.
    #[default]
    Triangle,
    /// Bicubic.
    CatmullRom,
    Lanczos3,
}

impl Filter {
    fn algorithm(self) -> fir::ResizeAlg {
        match self {
            Filter::Nearest => fir::ResizeAlg::Nearest,
            Filter::Triangle => fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
            Filter::CatmullRom => fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom),
            Filter::Lanczos3 => fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3),
        }
    }
}

/// Order of a tensor's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Layout {
    /// Channels first (PyTorch, ONNX vision models).
    #[serde(rename = "CHW", alias = "chw")]
    Chw,
    /// Channels last (as decoded; TensorFlow).
    #[serde(rename = "HWC", alias = "hwc")]
    Hwc,
}

impl Layout {
    pub fn shape(self, height: usize, width: usize, channels: usize) -> [usize; 3] {
        match self {
            Layout::Chw => [channels, height, width],
            Layout::Hwc => [height, width, channels],
        }
    }

    pub fn dim_names(self) -> [&'static str; 3] {
        match self {
            Layout::Chw => ["C", "H", "W"],
            Layout::Hwc => ["H", "W", "C"],
        }
    }
}

/// A target size and how to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    pub width: u32,
    pub height: u32,
    pub mode: Mode,
    pub filter: Filter,
}

/// Per-channel normalization `(pixel / 255 - mean) / std`, as a lookup table
/// of every byte value per channel.
#[derive(Debug, Clone)]
pub struct Normalize {
    table: Vec<[f32; 256]>,
}

impl Normalize {
    /// One `mean` and `std` per channel; each `std` must be finite and non-zero (checked by the caller).
    pub fn new(mean: &[f32], std: &[f32]) -> Self {
        let table =
            mean.iter().zip(std).map(|(m, s)| std::array::from_fn(|v| normalize_value(v as u8, *m, *s))).collect();
        Self { table }
    }
}

/// The normalized value of one pixel byte: scaled to [0, 1], then standardized.
pub fn normalize_value(v: u8, mean: f32, std: f32) -> f32 {
    (f32::from(v) / 255.0 - mean) / std
}

/// The formats decoded. Checked explicitly: other plugins of the same build
/// may turn on more of the `image` crate's codecs (cargo unifies features),
/// and what this operator accepts must not depend on that.
pub const FORMATS: [ImageFormat; 3] = [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP];

/// Why bytes did not decode.
#[derive(Debug)]
pub enum DecodeError {
    /// Not one of [`FORMATS`] (`None`: no format recognised at all).
    Format(Option<ImageFormat>),
    Image(ImageError),
    /// A JPEG whose data ends before its end-of-image marker.
    Truncated,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Format(None) => f.write_str("not a PNG, JPEG or WebP image"),
            DecodeError::Format(Some(format)) => {
                write!(f, "{format:?} images are not supported, only PNG, JPEG and WebP")
            }
            DecodeError::Image(e) => e.fmt(f),
            DecodeError::Truncated => f.write_str("truncated JPEG: the data ends before the end-of-image marker"),
        }
    }
}

/// Decodes a PNG, JPEG or WebP image (the format is read from the bytes, not
/// the name), under [`DIMENSION_MAX`] and [`DECODE_BYTES_MAX`].
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, DecodeError> {
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Image(e.into()))?;
    match reader.format() {
        Some(ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => return Err(DecodeError::Truncated),
        Some(format) if FORMATS.contains(&format) => {}
        other => return Err(DecodeError::Format(other)),
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_image_width = Some(DIMENSION_MAX);
    limits.max_image_height = Some(DIMENSION_MAX);
    limits.max_alloc = Some(DECODE_BYTES_MAX);
    reader.limits(limits);
    reader.decode().map_err(DecodeError::Image)
}

/// Whether a JPEG's segments run on to its end-of-image marker. The `image`
/// crate decodes JPEGs leniently (its decoder, zune-jpeg, runs with strict
/// mode off and fills missing data with grey), so a truncated file would
/// become a tensor; this walk over the segment structure catches that. Scan
/// data cannot hold a marker (0xFF is stuffed as FF 00), and segments such as
/// an EXIF thumbnail are skipped by their length, so the first end marker
/// found is the image's own. Bytes after it are allowed.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut i = 2; // After SOI.
    loop {
        // The next marker: fill bytes 0xFF, then its code (stray bytes are skipped, as decoders do).
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else { return false };
        i += 1;
        match code {
            0xD9 => return true,
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (bytes.get(i), bytes.get(i + 1)) else { return false };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < 2 || i + len > bytes.len() {
            return false;
        }
        i += len;
        if code == 0xDA {
            // Entropy-coded data runs to the next marker other than a stuffed byte or a restart.
            loop {
                let Some(&b) = bytes.get(i) else { return false };
                if b == 0xFF && bytes.get(i + 1).is_some_and(|&n| n != 0x00 && !(0xD0..=0xD7).contains(&n)) {
                    break;
                }
                i += 1;
            }
        }
    }
}

/// The image with `channels` channels of 8 bits (alpha dropped, 16-bit
/// samples scaled down); no copy when it already is.
pub fn convert(image: DynamicImage, channels: Channels) -> DynamicImage {
    match (channels, image) {
        (Channels::Rgb, i @ DynamicImage::ImageRgb8(_)) | (Channels::Grey, i @ DynamicImage::ImageLuma8(_)) => i,
        (Channels::Rgb, i) => DynamicImage::ImageRgb8(i.into_rgb8()),
        (Channels::Grey, i) => DynamicImage::ImageLuma8(i.into_luma8()),
    }
}

/// Brings converted images (8-bit RGB or grey) to one target size.
#[derive(Debug)]
pub struct Resampler {
    target: Resize,
    resizer: fir::Resizer,
    /// The scaled image before padding (`fit` mode).
    inner: Vec<u8>,
}

impl Resampler {
    pub fn new(target: Resize) -> Self {
        Self { target, resizer: fir::Resizer::new(), inner: Vec::new() }
    }

    /// Bytes of one resized image with `channels` channels.
    pub fn out_len(&self, channels: Channels) -> usize {
        self.target.width as usize * self.target.height as usize * channels.count()
    }

    /// Resizes `image` into `out` (`width × height × channels` bytes, channels last).
    pub fn resize_into(&mut self, image: &DynamicImage, out: &mut [u8]) -> Result<(), String> {
        let pixel_type = match image {
            DynamicImage::ImageRgb8(_) => fir::PixelType::U8x3,
            DynamicImage::ImageLuma8(_) => fir::PixelType::U8,
            other => return Err(format!("cannot resize {:?} pixels; convert them first", other.color())),
        };
        let t = self.target;
        let src = fir::images::ImageRef::new(image.width(), image.height(), image.as_bytes(), pixel_type)
            .map_err(|e| e.to_string())?;
        let options = fir::ResizeOptions::new().resize_alg(t.filter.algorithm());
        match t.mode {
            Mode::Stretch | Mode::Fill => {
                let options =
                    if t.mode == Mode::Fill { options.fit_into_destination(Some((0.5, 0.5))) } else { options };
                let mut dst =
                    fir::images::Image::from_slice_u8(t.width, t.height, out, pixel_type).map_err(|e| e.to_string())?;
                self.resizer.resize(&src, &mut dst, &options).map_err(|e| e.to_string())
            }
            Mode::Fit => {
                let (w, h) = fit_within(image.width(), image.height(), t.width, t.height);
                let px = pixel_type.size();
                self.inner.clear();
                self.inner.resize(w as usize * h as usize * px, 0);
                let mut dst =
                    fir::images::Image::from_slice_u8(w, h, &mut self.inner, pixel_type).map_err(|e| e.to_string())?;
                self.resizer.resize(&src, &mut dst, &options).map_err(|e| e.to_string())?;
                // Centre the scaled image on a black canvas.
                out.fill(0);
                let (x0, y0) = (((t.width - w) / 2) as usize, ((t.height - h) / 2) as usize);
                let (row, out_row) = (w as usize * px, t.width as usize * px);
                for (y, line) in self.inner.chunks_exact(row).enumerate() {
                    let at = (y0 + y) * out_row + x0 * px;
                    out[at..at + row].copy_from_slice(line);
                }
                Ok(())
            }
        }
    }
}

/// The largest size of `width × height`'s aspect ratio inside `max_w × max_h` (at least 1 × 1).
pub fn fit_within(width: u32, height: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    let ratio = f64::min(f64::from(max_w) / f64::from(width), f64::from(max_h) / f64::from(height));
    let scale = |v: u32, max: u32| ((f64::from(v) * ratio).round() as u32).clamp(1, max);
    (scale(width, max_w), scale(height, max_h))
}

/// The 8-bit samples of a converted image (channels last).
pub fn samples(image: &DynamicImage) -> &[u8] {
    image.as_bytes()
}

/// Writes `hwc` (`height × width × channels` bytes, channels last) into
/// `out` in `layout` order.
pub fn write_u8(hwc: &[u8], channels: usize, layout: Layout, out: &mut [u8]) {
    match layout {
        Layout::Hwc => out.copy_from_slice(hwc),
        Layout::Chw => {
            let plane = hwc.len() / channels;
            for (i, px) in hwc.chunks_exact(channels).enumerate() {
                for (c, v) in px.iter().enumerate() {
                    out[c * plane + i] = *v;
                }
            }
        }
    }
}

/// Writes `hwc` normalized into `out` in `layout` order.
pub fn write_f32(hwc: &[u8], channels: usize, norm: &Normalize, layout: Layout, out: &mut [f32]) {
    match layout {
        Layout::Hwc => {
            for (o, px) in out.chunks_exact_mut(channels).zip(hwc.chunks_exact(channels)) {
                for c in 0..channels {
                    o[c] = norm.table[c][usize::from(px[c])];
                }
            }
        }
        Layout::Chw => {
            let plane = hwc.len() / channels;
            for (c, (dst, table)) in out.chunks_exact_mut(plane).zip(&norm.table).enumerate() {
                for (o, px) in dst.iter_mut().zip(hwc[c..].iter().step_by(channels)) {
                    *o = table[usize::from(*px)];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

    use super::*;

    fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn gradient(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x * 255 / width.max(1)) as u8, (y * 255 / height.max(1)) as u8, ((x + y) % 256) as u8])
        }))
    }

    #[test]
    fn png_decodes_losslessly_and_rgba_becomes_rgb() {
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(5, 3, |x, y| Rgba([x as u8, y as u8, 7, 128])));
        let image = convert(decode(&encoded(&rgba, ImageFormat::Png)).unwrap(), Channels::Rgb);
        assert_eq!((image.width(), image.height()), (5, 3));
        assert_eq!(&samples(&image)[..6], &[0, 0, 7, 1, 0, 7]);
        let grey = convert(image, Channels::Grey);
        assert_eq!(samples(&grey).len(), 15);
    }

    #[test]
    fn webp_lossless_round_trips() {
        let image = gradient(17, 9);
        let decoded = convert(decode(&encoded(&image, ImageFormat::WebP)).unwrap(), Channels::Rgb);
        assert_eq!(samples(&decoded), samples(&image));
    }

    #[test]
    fn jpeg_decodes_close_to_its_source() {
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, Rgb([200, 100, 50])));
        let decoded = convert(decode(&encoded(&image, ImageFormat::Jpeg)).unwrap(), Channels::Rgb);
        for (a, b) in samples(&decoded).iter().zip(samples(&image)) {
            assert!(a.abs_diff(*b) <= 3, "{a} vs {b}");
        }
    }

    #[test]
    fn garbage_truncation_and_bombs_are_errors() {
        let err = decode(b"definitely not an image").unwrap_err().to_string();
        assert_eq!(err, "not a PNG, JPEG or WebP image");
        // Recognised by its signature, refused whichever codecs the build has.
        let err = decode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00").unwrap_err().to_string();
        assert_eq!(err, "Gif images are not supported, only PNG, JPEG and WebP");
        let png = encoded(&gradient(32, 32), ImageFormat::Png);
        assert!(decode(&png[..png.len() / 2]).is_err());
        // A PNG header claiming 100 000 × 100 000 pixels.
        let mut bomb = png[..33].to_vec();
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(decode(&bomb).is_err());
    }

    /// The `image` crate turns a cut JPEG into an image padded with grey; it must be an error.
    #[test]
    fn truncated_jpegs_are_errors() {
        let jpeg = encoded(&gradient(64, 48), ImageFormat::Jpeg);
        assert!(jpeg_is_complete(&jpeg));
        assert!(decode(&jpeg).is_ok());
        for cut in [jpeg.len() - 2, jpeg.len() * 3 / 4, jpeg.len() / 2] {
            let err = decode(&jpeg[..cut]).unwrap_err().to_string();
            assert!(err.contains("truncated JPEG"), "cut at {cut}: {err}");
        }
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"trailing bytes after the end marker");
        assert!(decode(&trailing).is_ok(), "bytes after the end marker are allowed");
    }

    fn resized(image: &DynamicImage, r: Resize, channels: Channels) -> Vec<u8> {
        let mut resampler = Resampler::new(r);
        let mut out = vec![0; resampler.out_len(channels)];
        resampler.resize_into(image, &mut out).unwrap();
        out
    }

    #[test]
    fn every_mode_and_filter_resizes_every_shape() {
        for (w, h) in [(64, 48), (48, 64), (10, 10), (3, 200), (24, 16), (1, 1)] {
            for mode in [Mode::Stretch, Mode::Fill, Mode::Fit] {
                for filter in [Filter::Nearest, Filter::Triangle, Filter::CatmullRom, Filter::Lanczos3] {
                    let r = Resize { width: 24, height: 16, mode, filter };
                    assert_eq!(resized(&gradient(w, h), r, Channels::Rgb).len(), 24 * 16 * 3);
                    let grey = convert(gradient(w, h), Channels::Grey);
                    assert_eq!(resized(&grey, r, Channels::Grey).len(), 24 * 16);
                }
            }
        }
        let rgba = DynamicImage::new_rgba8(4, 4);
        let err = Resampler::new(Resize { width: 2, height: 2, mode: Mode::Fill, filter: Filter::Nearest })
            .resize_into(&rgba, &mut [0; 12])
            .unwrap_err();
        assert!(err.contains("convert them first"), "{err}");
    }

    #[test]
    fn resizing_to_the_same_size_keeps_the_pixels() {
        let image = gradient(20, 10);
        for mode in [Mode::Stretch, Mode::Fill, Mode::Fit] {
            let r = Resize { width: 20, height: 10, mode, filter: Filter::Lanczos3 };
            assert_eq!(resized(&image, r, Channels::Rgb), samples(&image), "{mode:?}");
        }
    }

    #[test]
    fn fill_crops_the_center_and_fit_pads_with_black() {
        // Left third red, middle green, right third blue.
        let image = DynamicImage::ImageRgb8(RgbImage::from_fn(30, 10, |x, _| match x / 10 {
            0 => Rgb([255, 0, 0]),
            1 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        }));
        let fill =
            resized(&image, Resize { width: 10, height: 10, mode: Mode::Fill, filter: Filter::Nearest }, Channels::Rgb);
        assert!(fill.chunks(3).all(|p| p == [0, 255, 0]));
        let fit =
            resized(&image, Resize { width: 12, height: 12, mode: Mode::Fit, filter: Filter::Nearest }, Channels::Rgb);
        let fit = RgbImage::from_raw(12, 12, fit).unwrap();
        // 30×10 fits as 12×4, centered: rows 4..8 hold the image, the rest is black.
        assert_eq!(*fit.get_pixel(0, 0), Rgb([0, 0, 0]));
        assert_eq!(*fit.get_pixel(0, 5), Rgb([255, 0, 0]));
        assert_eq!(*fit.get_pixel(11, 5), Rgb([0, 0, 255]));
        assert_eq!(*fit.get_pixel(6, 11), Rgb([0, 0, 0]));
        assert_eq!(*fit.get_pixel(6, 3), Rgb([0, 0, 0]));
        assert_eq!(*fit.get_pixel(6, 8), Rgb([0, 0, 0]));
        assert_eq!(fit_within(30, 10, 12, 12), (12, 4));
        assert_eq!(fit_within(1, 1000, 16, 16), (1, 16));
    }

    #[test]
    fn layouts_and_normalization_place_every_value() {
        // 1×2 image, 3 channels: pixels (1,2,3) and (4,5,6).
        let hwc = [1u8, 2, 3, 4, 5, 6];
        let mut chw = [0u8; 6];
        write_u8(&hwc, 3, Layout::Chw, &mut chw);
        assert_eq!(chw, [1, 4, 2, 5, 3, 6]);
        let norm = Normalize::new(&[0.5, 0.0, 0.25], &[0.5, 1.0, 2.0]);
        let mut out = [0f32; 6];
        write_f32(&hwc, 3, &norm, Layout::Chw, &mut out);
        let expect = |v: u8, c: usize| normalize_value(v, [0.5, 0.0, 0.25][c], [0.5, 1.0, 2.0][c]);
        assert_eq!(out, [expect(1, 0), expect(4, 0), expect(2, 1), expect(5, 1), expect(3, 2), expect(6, 2)]);
        write_f32(&hwc, 3, &norm, Layout::Hwc, &mut out);
        assert_eq!(out, [expect(1, 0), expect(2, 1), expect(3, 2), expect(4, 0), expect(5, 1), expect(6, 2)]);
        assert_eq!(normalize_value(255, 0.0, 1.0), 1.0);
        assert_eq!(normalize_value(0, 0.5, 0.5), -1.0);
    }
}
