//! Animation decoding without the host: recognise the container from its
//! first bytes, decode frames one at a time with the `image` crate (animated
//! GIF, APNG, animated WebP; a still GIF, PNG or WebP is a one-frame
//! animation) and pick the frames to keep with a [`Sampler`].

use std::fmt;
use std::io::{BufRead, Read, Seek, SeekFrom};

use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::{AnimationDecoder, DynamicImage, Frame, Frames, ImageDecoder, Limits, RgbaImage};

use crate::clock::Sampler;

/// Largest frame decoded, in pixels (4K UHD fits): each frame is held
/// decoded as RGBA, up to three at a time while an APNG is composed, in an
/// instance whose memory is capped; a crafted header cannot make it ask for more.
pub const FRAME_PIXELS_MAX: u64 = 1 << 23;

/// Most frames decoded from one file, picked or not: stops a file of
/// millions of tiny zero-delay frames from spinning the decoder.
pub const SOURCE_FRAMES_MAX: u64 = 100_000;

/// The animation formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gif,
    Png,
    WebP,
}

/// Why a file yields no frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A video container whose codecs this operator cannot decode.
    VideoContainer(&'static str),
    /// Neither an animation this operator reads nor a known video container.
    Unknown,
    /// The bytes are damaged.
    Corrupt(String),
    /// A limit was crossed.
    Limit(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::VideoContainer(c) => write!(
                f,
                "{c} video is not supported: its codecs (H.264, H.265, VP8/VP9, AV1) have no pure-Rust decoder \
                 that builds for WebAssembly; only animated GIF, APNG and animated WebP are read"
            ),
            DecodeError::Unknown => f.write_str("not an animated GIF, APNG or WebP (the only formats read)"),
            DecodeError::Corrupt(m) => write!(f, "cannot decode: {m}"),
            DecodeError::Limit(m) => f.write_str(m),
        }
    }
}

/// Recognises a file from its first bytes (16 are enough).
pub fn sniff(head: &[u8]) -> Result<Kind, DecodeError> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Ok(Kind::Gif);
    }
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Ok(Kind::Png);
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return Ok(Kind::WebP);
    }
    Err(video_container(head).map_or(DecodeError::Unknown, DecodeError::VideoContainer))
}

/// Names the video container `head` starts, if it is one.
fn video_container(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(4, b"ftyp") {
        Some("MP4/QuickTime")
    } else if at(0, b"\x1a\x45\xdf\xa3") {
        Some("Matroska/WebM")
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        Some("AVI")
    } else if at(0, b"FLV") {
        Some("FLV")
    } else if at(0, b"\x00\x00\x01\xba") || at(0, b"\x00\x00\x01\xb3") {
        Some("MPEG program stream")
    } else if head.first() == Some(&0x47) && head.len() >= 16 {
        // A transport stream packet starts with 0x47; 16 bytes cannot show the next one.
        Some("MPEG transport stream")
    } else {
        None
    }
}

/// Names the video container a media type stands for, if it is one.
pub fn video_media_type(media_type: &str) -> Option<&'static str> {
    Some(match media_type.split(';').next()?.trim() {
        "video/mp4" | "video/quicktime" | "video/3gpp" | "video/x-m4v" => "MP4/QuickTime",
        "video/webm" | "video/x-matroska" => "Matroska/WebM",
        "video/x-msvideo" | "video/avi" => "AVI",
        "video/x-flv" => "FLV",
        "video/mpeg" | "video/mp2t" => "MPEG",
        "video/ogg" => "Ogg",
        _ => return None,
    })
}

/// One frame picked at a sample time.
#[derive(Debug)]
pub struct Picked<'a> {
    /// The frame's position in the animation (from 0).
    pub frame_index: u32,
    pub timestamp_ms: i64,
    /// The whole canvas at that frame, RGBA.
    pub image: &'a RgbaImage,
    /// Whether this frame was picked before (at an earlier sample time).
    pub repeat: bool,
}

/// How much one file may yield.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Frames picked (the `max_frames` config).
    pub max_frames: u64,
    /// Frames decoded, picked or not ([`SOURCE_FRAMES_MAX`]).
    pub source_frames_max: u64,
}

/// Decodes the animation in `reader` and calls `pick` for each sample time,
/// in order, with the frame showing then. Stops with an error when a file
/// crosses `caps`.
pub fn extract<R, F>(mut reader: R, sampler: &mut Sampler, caps: Caps, mut pick: F) -> Result<u64, PickError>
where
    R: BufRead + Seek,
    F: FnMut(Picked<'_>) -> Result<(), String>,
{
    let mut head = [0u8; 16];
    let n = read_up_to(&mut reader, &mut head).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let kind = sniff(&head[..n])?;
    reader.seek(SeekFrom::Start(0)).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let frames = frames(reader, kind)?;

    let mut picked = 0u64;
    let mut last: Option<(u32, RgbaImage)> = None;
    for (index, frame) in frames.enumerate() {
        if index as u64 >= caps.source_frames_max {
            return Err(DecodeError::Limit(format!("holds more than {} frames", caps.source_frames_max)).into());
        }
        let frame = frame.map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let delay_ms = delay_ms(&frame);
        let image = frame.into_buffer();
        let mut repeat = false;
        for sample in sampler.frame(delay_ms) {
            picked += 1;
            if picked > caps.max_frames {
                return Err(DecodeError::Limit(format!(
                    "yields more than `max_frames` = {} frames; raise it, or sample less often",
                    caps.max_frames
                ))
                .into());
            }
            let frame_index = index as u32;
            pick(Picked { frame_index, timestamp_ms: sample.timestamp_ms, image: &image, repeat })
                .map_err(PickError::Pick)?;
            repeat = true;
        }
        last = Some((index as u32, image));
    }
    match last {
        None => Err(DecodeError::Corrupt("the file holds no frame".into()).into()),
        Some((frame_index, image)) if !sampler.any() => {
            pick(Picked { frame_index, timestamp_ms: 0, image: &image, repeat: false }).map_err(PickError::Pick)?;
            Ok(1)
        }
        Some(_) => Ok(picked),
    }
}

/// A failure of [`extract`]: the file's, or the callback's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickError {
    Decode(DecodeError),
    Pick(String),
}

impl From<DecodeError> for PickError {
    fn from(e: DecodeError) -> Self {
        PickError::Decode(e)
    }
}

/// A frame's delay in milliseconds.
fn delay_ms(frame: &Frame) -> f64 {
    let (numer, denom) = frame.delay().numer_denom_ms();
    if denom == 0 { 0.0 } else { f64::from(numer) / f64::from(denom) }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The frames of an animation, or the one frame of a still image.
fn frames<'a, R: BufRead + Seek + 'a>(reader: R, kind: Kind) -> Result<Frames<'a>, DecodeError> {
    let corrupt = |e: image::ImageError| DecodeError::Corrupt(e.to_string());
    match kind {
        Kind::Gif => {
            let mut d = GifDecoder::new(reader).map_err(corrupt)?;
            limit(&mut d)?;
            Ok(d.into_frames())
        }
        Kind::Png => {
            let mut d = PngDecoder::new(reader).map_err(corrupt)?;
            limit(&mut d)?;
            if d.is_apng().map_err(corrupt)? {
                Ok(d.apng().map_err(corrupt)?.into_frames())
            } else {
                still(DynamicImage::from_decoder(d).map_err(corrupt)?)
            }
        }
        Kind::WebP => {
            let mut d = WebPDecoder::new(reader).map_err(corrupt)?;
            limit(&mut d)?;
            if d.has_animation() { Ok(d.into_frames()) } else { still(DynamicImage::from_decoder(d).map_err(corrupt)?) }
        }
    }
}

fn still<'a>(image: DynamicImage) -> Result<Frames<'a>, DecodeError> {
    let frame = Frame::new(image.into_rgba8());
    Ok(Frames::new(Box::new(std::iter::once(Ok(frame)))))
}

/// Refuses a canvas over [`FRAME_PIXELS_MAX`] before any pixel is decoded.
fn limit(d: &mut impl ImageDecoder) -> Result<(), DecodeError> {
    let (w, h) = d.dimensions();
    if u64::from(w) * u64::from(h) > FRAME_PIXELS_MAX {
        return Err(DecodeError::Limit(format!("frames of {w}×{h} pixels are over the limit of {FRAME_PIXELS_MAX}")));
    }
    let mut limits = Limits::default();
    // Three RGBA canvases (an APNG's current, previous and output frame), and slack for the codec.
    limits.max_alloc = Some(FRAME_PIXELS_MAX * 4 * 4);
    d.set_limits(limits).map_err(|e| DecodeError::Limit(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::codecs::gif::GifEncoder;
    use image::{Delay, Rgba};

    use super::*;

    const RED: [u8; 4] = [255, 0, 0, 255];
    const GREEN: [u8; 4] = [0, 255, 0, 255];
    const BLUE: [u8; 4] = [0, 0, 255, 255];

    /// An animated GIF of 4×3 solid frames.
    fn gif(frames: &[([u8; 4], u32)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut bytes);
            for (colour, ms) in frames {
                let img = RgbaImage::from_pixel(4, 3, Rgba(*colour));
                enc.encode_frame(Frame::from_parts(img, 0, 0, Delay::from_numer_denom_ms(*ms, 1))).unwrap();
            }
        }
        bytes
    }

    /// An APNG of 2×2 solid frames, delays in milliseconds.
    fn apng(frames: &[([u8; 4], u16)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, 2, 2);
            enc.set_color(png::ColorType::Rgba);
            enc.set_animated(frames.len() as u32, 0).unwrap();
            let mut w = enc.write_header().unwrap();
            for (colour, ms) in frames {
                w.set_frame_delay(*ms, 1000).unwrap();
                w.write_image_data(&colour.repeat(4)).unwrap();
            }
            w.finish().unwrap();
        }
        bytes
    }

    /// Frame index, timestamp, colour, repeat: what a pick shows.
    type Got = (u32, i64, [u8; 4], bool);

    fn run(bytes: Vec<u8>, interval_ms: f64, max_frames: u64) -> Result<Vec<Got>, PickError> {
        let mut out = Vec::new();
        let caps = Caps { max_frames, source_frames_max: SOURCE_FRAMES_MAX };
        extract(Cursor::new(bytes), &mut Sampler::new(interval_ms), caps, |p| {
            out.push((p.frame_index, p.timestamp_ms, p.image.get_pixel(1, 1).0, p.repeat));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn gif_frames_are_picked_by_their_delays() {
        let bytes = gif(&[(RED, 200), (GREEN, 100), (BLUE, 300)]);
        let got = run(bytes, 100.0, 100).unwrap();
        assert_eq!(
            got,
            vec![
                (0, 0, RED, false),
                (0, 100, RED, true),
                (1, 200, GREEN, false),
                (2, 300, BLUE, false),
                (2, 400, BLUE, true),
                (2, 500, BLUE, true),
            ]
        );
    }

    #[test]
    fn apng_frames_are_picked_by_their_delays() {
        let got = run(apng(&[(RED, 500), (GREEN, 500), (BLUE, 1000)]), 1000.0, 100).unwrap();
        assert_eq!(got, vec![(0, 0, RED, false), (2, 1000, BLUE, false)]);
    }

    #[test]
    fn a_still_image_is_one_frame_at_zero() {
        let mut png_bytes = Vec::new();
        RgbaImage::from_pixel(3, 3, Rgba(GREEN))
            .write_to(&mut Cursor::new(&mut png_bytes), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(run(png_bytes, 1000.0, 10).unwrap(), vec![(0, 0, GREEN, false)]);
        let mut webp = Vec::new();
        RgbaImage::from_pixel(3, 3, Rgba(BLUE))
            .write_to(&mut Cursor::new(&mut webp), image::ImageFormat::WebP)
            .unwrap();
        assert_eq!(run(webp, 1000.0, 10).unwrap(), vec![(0, 0, BLUE, false)]);
        // A GIF whose delays are all 0 shows its last frame.
        assert_eq!(run(gif(&[(RED, 0), (GREEN, 0)]), 100.0, 10).unwrap(), vec![(1, 0, GREEN, false)]);
    }

    #[test]
    fn max_frames_is_a_named_error() {
        let err = run(gif(&[(RED, 1000)]), 10.0, 50).unwrap_err();
        let PickError::Decode(DecodeError::Limit(m)) = err else { panic!("{err:?}") };
        assert!(m.contains("`max_frames` = 50"), "{m}");
        assert_eq!(run(gif(&[(RED, 1000)]), 10.0, 100).unwrap().len(), 100);
    }

    #[test]
    fn frames_decoded_are_capped_even_when_none_is_picked() {
        let zero_delays = gif(&[(RED, 0), (GREEN, 0), (BLUE, 0), (RED, 0)]);
        let caps = Caps { max_frames: 10, source_frames_max: 3 };
        let err = extract(Cursor::new(zero_delays.clone()), &mut Sampler::new(100.0), caps, |_| Ok(())).unwrap_err();
        assert_eq!(err, PickError::Decode(DecodeError::Limit("holds more than 3 frames".into())));
        let caps = Caps { source_frames_max: 4, ..caps };
        assert_eq!(extract(Cursor::new(zero_delays), &mut Sampler::new(100.0), caps, |_| Ok(())), Ok(1));
    }

    #[test]
    fn containers_are_told_apart_by_their_first_bytes() {
        assert_eq!(sniff(b"GIF89a\x01\x00"), Ok(Kind::Gif));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8L"), Ok(Kind::WebP));
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0\0\0"), Err(DecodeError::VideoContainer("MP4/QuickTime")));
        assert_eq!(sniff(b"\x1a\x45\xdf\xa3\x01\0\0\0"), Err(DecodeError::VideoContainer("Matroska/WebM")));
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Err(DecodeError::VideoContainer("AVI")));
        assert_eq!(sniff(b"hello"), Err(DecodeError::Unknown));
        assert_eq!(sniff(b""), Err(DecodeError::Unknown));
        assert_eq!(video_media_type("video/mp4"), Some("MP4/QuickTime"));
        assert_eq!(video_media_type("video/webm; codecs=vp9"), Some("Matroska/WebM"));
        assert_eq!(video_media_type("image/gif"), None);
        let msg = DecodeError::VideoContainer("MP4/QuickTime").to_string();
        assert!(msg.contains("H.264") && msg.contains("WebAssembly"), "{msg}");
    }

    #[test]
    fn damaged_and_oversized_files_are_errors_not_panics() {
        let mut cut = gif(&[(RED, 100), (GREEN, 100)]);
        cut.truncate(cut.len() / 2);
        assert!(matches!(run(cut, 100.0, 10), Err(PickError::Decode(DecodeError::Corrupt(_)))));
        assert!(run(b"GIF89a".to_vec(), 100.0, 10).is_err());
        // A GIF header claiming a 65535 × 65535 canvas.
        let mut huge = gif(&[(RED, 100)]);
        huge[6..10].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let err = run(huge, 100.0, 10).unwrap_err();
        assert!(matches!(err, PickError::Decode(DecodeError::Limit(_))), "{err:?}");
        // A callback failure is passed through as such.
        let caps = Caps { max_frames: 10, source_frames_max: 10 };
        let err = extract(Cursor::new(gif(&[(RED, 100)])), &mut Sampler::new(100.0), caps, |_| Err("full".into()));
        assert_eq!(err, Err(PickError::Pick("full".into())));
    }
}
