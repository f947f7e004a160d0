//! Writes the image example's input: 24 deterministic pictures of varied
//! sizes and shapes as PNG, JPEG and WebP files.
//!
//! ```sh
//! cargo run --example make-images -- examples/images/data
//! ```
//!
//! The same functions make the images of the integration tests and the W6
//! benchmark (they include this file as a module).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ExtendedColorType, ImageEncoder, Rgb, RgbImage};

/// Images in the example set.
pub const SET_COUNT: usize = 24;

/// Sizes cycled through by the set: landscape, portrait, square, tiny and a
/// panorama, so every resize mode has something to do.
const SIZES: [(u32, u32); 8] =
    [(640, 480), (480, 640), (320, 320), (800, 450), (96, 64), (1024, 256), (256, 384), (500, 333)];

/// An encoded format of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    WebP,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpg",
            Format::WebP => "webp",
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "examples/images/data".into());
    let written = write_set(Path::new(&dir))?;
    let bytes: u64 = written.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    println!("wrote {} images ({} KiB) to {dir}", written.len(), bytes / 1024);
    Ok(())
}

/// Writes the example set into `dir` (made if missing): `img-00.png`,
/// `img-01.jpg`, `img-02.webp`, … Returns the paths in name order.
pub fn write_set(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let formats = [Format::Png, Format::Jpeg, Format::WebP];
    (0..SET_COUNT)
        .map(|i| {
            let (w, h) = SIZES[i % SIZES.len()];
            let format = formats[i % formats.len()];
            let path = dir.join(format!("img-{i:02}.{}", format.extension()));
            std::fs::write(&path, encode(&picture(i as u32, w, h), format))?;
            Ok(path)
        })
        .collect()
}

/// A deterministic picture: a color gradient that differs per `seed`, with
/// rings and a checkerboard corner, so resizing has edges and detail to keep.
pub fn picture(seed: u32, width: u32, height: u32) -> DynamicImage {
    let (cx, cy) = ((width * (2 + seed % 5)) / 8, (height * (3 + seed % 3)) / 8);
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
        let ring = ((dx * dx + dy * dy) as f32).sqrt() as u32 / (6 + seed % 7);
        if x < width / 6 && y < height / 6 && ((x / 8) + (y / 8)).is_multiple_of(2) {
            return Rgb([250, 250, 250]);
        }
        let r = (x * 255 / width.max(1) + seed * 37) % 256;
        let g = (y * 255 / height.max(1) + seed * 91) % 256;
        let b = if ring.is_multiple_of(2) { (seed * 53) % 256 } else { 255 - (seed * 53) % 256 };
        Rgb([r as u8, g as u8, b as u8])
    }))
}

/// `image` encoded as `format` (JPEG at quality 90, WebP lossless: the only
/// WebP encoder the `image` crate has).
pub fn encode(image: &DynamicImage, format: Format) -> Vec<u8> {
    let rgb = image.to_rgb8();
    let (w, h) = rgb.dimensions();
    let mut out = Cursor::new(Vec::new());
    let result = match format {
        Format::Png => PngEncoder::new(&mut out).write_image(rgb.as_raw(), w, h, ExtendedColorType::Rgb8),
        Format::Jpeg => {
            JpegEncoder::new_with_quality(&mut out, 90).write_image(rgb.as_raw(), w, h, ExtendedColorType::Rgb8)
        }
        Format::WebP => WebPEncoder::new_lossless(&mut out).write_image(rgb.as_raw(), w, h, ExtendedColorType::Rgb8),
    };
    // Encoding an in-memory RGB buffer of valid dimensions into a Vec cannot fail.
    result.expect("encoding into memory succeeds");
    out.into_inner()
}
