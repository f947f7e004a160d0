//! The `video-frames` operator: samples frames from the animation blob in
//! each row (animated GIF, APNG, animated WebP) at a fixed rate, one output
//! row per frame, as decoded pixels or as new PNG blobs.

mod clock;
mod decode;

use std::io::BufReader;
use std::sync::Arc;

use flumen_sdk::arrow_array::builder::{Int64Builder, UInt32Builder};
use flumen_sdk::arrow_array::{ArrayRef, RecordBatchOptions, UInt32Array};
use flumen_sdk::arrow_select::take::take;
use flumen_sdk::blob::{self, BlobColumn, BlobColumnBuilder, BlobRef};
use flumen_sdk::media::{DecodedImageBuilder, image_field, is_blob_ref};
use flumen_sdk::{Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, export_operator};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbaImage};
use serde::Deserialize;

use crate::clock::Sampler;
use crate::decode::{Caps, DecodeError, PickError, Picked, SOURCE_FRAMES_MAX, extract, video_media_type};

/// `config = { column = "blob", fps = 1.0, output = "frame", frame_format = "raw" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The input column of blob references (`flumen.video`, or any blob column).
    #[serde(default = "default_column")]
    column: String,
    /// The frame column to write.
    #[serde(default = "default_output")]
    output: String,
    /// Frames per second to sample (default 1); or give `every_ms`.
    fps: Option<f64>,
    /// Milliseconds between samples, instead of `fps`.
    every_ms: Option<u64>,
    /// `raw`: decoded pixels; `png`: a new `flumen.image` blob per frame.
    #[serde(default)]
    frame_format: FrameFormat,
    /// 3 (RGB) or 4 (RGBA).
    #[serde(default = "default_channels")]
    channels: u8,
    /// Most frames taken from one file.
    #[serde(default = "default_max_frames")]
    max_frames: u64,
}

fn default_column() -> String {
    "blob".into()
}
fn default_output() -> String {
    "frame".into()
}
fn default_channels() -> u8 {
    3
}
fn default_max_frames() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FrameFormat {
    #[default]
    Raw,
    Png,
}

/// Highest sampling rate: one frame per millisecond.
const FPS_MAX: f64 = 1000.0;

/// Highest `max_frames`: a bound on the rows one file may turn into.
const MAX_FRAMES_MAX: u64 = 1_000_000;

/// Frame bytes (pixels, or PNG bytes) gathered before a batch is emitted:
/// bounds the memory one output batch holds however many frames a file yields.
const BATCH_BYTES_MAX: usize = 64 << 20;

struct VideoFrames {
    schema: SchemaRef,
    input: usize,
    /// The input columns repeated on each frame's row.
    kept: Vec<usize>,
    interval_ms: f64,
    format: FrameFormat,
    channels: usize,
    max_frames: u64,
}

impl Operator for VideoFrames {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if ctx.inputs.len() != 1 {
            return Err(Error::config(format!(
                "video-frames: takes one input, operator `{}` has {}",
                ctx.operator_id,
                ctx.inputs.len()
            )));
        }
        let schema = ctx.input(0)?.clone();
        let input = schema.index_of(&config.column).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::config(format!(
                "video-frames: unknown column `{}`; columns are: {}",
                config.column,
                names.join(", ")
            ))
        })?;
        if !is_blob_ref(schema.field(input)) {
            return Err(Error::config(format!(
                "video-frames: column `{}` is {}, not blob references (read files with a `blobs` source)",
                config.column,
                schema.field(input).data_type()
            )));
        }
        let interval_ms = match (config.fps, config.every_ms) {
            (Some(_), Some(_)) => return Err(Error::config("video-frames: give `fps` or `every_ms`, not both")),
            (None, Some(ms)) if ms > 0 => ms as f64,
            (None, Some(_)) => return Err(Error::config("video-frames: `every_ms` must be at least 1")),
            (fps, None) => {
                let fps = fps.unwrap_or(1.0);
                if !(fps > 0.0 && fps <= FPS_MAX) {
                    return Err(Error::config(format!("video-frames: `fps` = {fps} is outside (0, {FPS_MAX}]")));
                }
                1000.0 / fps
            }
        };
        if !matches!(config.channels, 3 | 4) {
            return Err(Error::config(format!(
                "video-frames: `channels` = {} is not supported: use 3 (RGB) or 4 (RGBA)",
                config.channels
            )));
        }
        if config.max_frames == 0 || config.max_frames > MAX_FRAMES_MAX {
            return Err(Error::config(format!(
                "video-frames: `max_frames` = {} is outside 1..={MAX_FRAMES_MAX}",
                config.max_frames
            )));
        }
        let frame = match config.frame_format {
            FrameFormat::Raw => DecodedImageBuilder::new(Some(usize::from(config.channels))).field(&config.output),
            FrameFormat::Png => image_field(&config.output, false),
        };
        let new = [
            Field::new("frame_index", DataType::UInt32, false),
            Field::new("timestamp_ms", DataType::Int64, false),
            frame,
        ];
        for f in &new[..2] {
            if f.name() == &config.output {
                return Err(Error::config(format!(
                    "video-frames: `output` cannot be `{}`, a column it writes",
                    f.name()
                )));
            }
        }
        // Input columns are repeated on every frame's row, except those the new columns replace.
        let kept: Vec<usize> =
            (0..schema.fields().len()).filter(|i| !new.iter().any(|n| n.name() == schema.field(*i).name())).collect();
        let mut fields: Vec<Field> = kept.iter().map(|i| schema.field(*i).clone()).collect();
        fields.extend(new);
        Ok(Self {
            schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
            input,
            kept,
            interval_ms,
            format: config.frame_format,
            channels: usize::from(config.channels),
            max_frames: config.max_frames,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let refs = BlobColumn::new(batch.column(self.input).as_ref())?;
        let mut rows = Rows::new(self.format, self.channels);
        for row in 0..batch.num_rows() {
            // A null blob has no frames, so no rows.
            let Some(r) = refs.get(row) else { continue };
            let name = file_name(&r);
            let fail = |e: DecodeError| Error::input(format!("video-frames: {name} ({}): {e}", r.media_type));
            let reader =
                blob::open(&r).map_err(|e| Error::new(e.kind, format!("video-frames: {name}: {}", e.message)))?;
            let mut sampler = Sampler::new(self.interval_ms);
            let mut pick_error = None;
            let caps = Caps { max_frames: self.max_frames, source_frames_max: SOURCE_FRAMES_MAX };
            let result = extract(BufReader::with_capacity(64 << 10, reader), &mut sampler, caps, |p| {
                let pushed = rows
                    .push(row as u32, &p)
                    .and_then(|()| if rows.bytes >= BATCH_BYTES_MAX { rows.flush(&batch, self, out) } else { Ok(()) });
                pushed.map_err(|e| {
                    let message = e.message.clone();
                    pick_error = Some(e);
                    message
                })
            });
            match result {
                Ok(_) => {}
                Err(PickError::Pick(_)) => return Err(pick_error.unwrap_or_else(|| Error::internal("frame lost"))),
                // The media type explains a file that is no animation: a video container we cannot read.
                Err(PickError::Decode(DecodeError::Unknown)) => {
                    return Err(fail(
                        video_media_type(&r.media_type).map_or(DecodeError::Unknown, DecodeError::VideoContainer),
                    ));
                }
                Err(PickError::Decode(e)) => return Err(fail(e)),
            }
        }
        rows.flush(&batch, self, out)
    }
}

/// Output rows gathered so far: which input row each repeats, and its frame.
struct Rows {
    input_rows: Vec<u32>,
    frame_index: UInt32Builder,
    timestamp_ms: Int64Builder,
    frames: Frames,
    channels: usize,
    /// Frame bytes held.
    bytes: usize,
}

#[allow(clippy::large_enum_variant, reason = "one per `process` call, never moved in a loop")]
enum Frames {
    Raw(DecodedImageBuilder),
    /// PNG blobs, and the one made for the frame last picked (a frame picked
    /// at several times is encoded once).
    Png(BlobColumnBuilder, Option<BlobRef>),
}

impl Rows {
    fn new(format: FrameFormat, channels: usize) -> Self {
        Self {
            input_rows: Vec::new(),
            frame_index: UInt32Builder::new(),
            timestamp_ms: Int64Builder::new(),
            frames: match format {
                FrameFormat::Raw => Frames::Raw(DecodedImageBuilder::new(Some(channels))),
                FrameFormat::Png => Frames::Png(BlobColumnBuilder::new(), None),
            },
            channels,
            bytes: 0,
        }
    }

    fn push(&mut self, input_row: u32, p: &Picked<'_>) -> Result<(), Error> {
        let (w, h) = p.image.dimensions();
        match &mut self.frames {
            Frames::Raw(b) => {
                let pixels = pixels(p.image, self.channels);
                b.append(h as usize, w as usize, self.channels, &pixels)?;
                self.bytes += pixels.len();
            }
            Frames::Png(b, last) => {
                let r = match last {
                    Some(r) if p.repeat => r.clone(),
                    _ => {
                        let png = encode_png(p.image, self.channels)?;
                        self.bytes += png.len();
                        let r = blob::create(&png, "image/png")?;
                        *last = Some(r.clone());
                        r
                    }
                };
                b.append(Some(&r));
            }
        }
        self.input_rows.push(input_row);
        self.frame_index.append_value(p.frame_index);
        self.timestamp_ms.append_value(p.timestamp_ms);
        Ok(())
    }

    /// Emits the rows gathered, if any, and starts over.
    fn flush(&mut self, input: &RecordBatch, op: &VideoFrames, out: &mut Emitter) -> Result<(), Error> {
        if self.input_rows.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(std::mem::take(&mut self.input_rows));
        let rows = indices.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(op.schema.fields().len());
        for i in &op.kept {
            columns.push(take(input.column(*i).as_ref(), &indices, None)?);
        }
        columns.push(Arc::new(self.frame_index.finish()));
        columns.push(Arc::new(self.timestamp_ms.finish()));
        columns.push(match &mut self.frames {
            Frames::Raw(b) => Arc::new(b.finish()),
            Frames::Png(b, _) => Arc::new(b.finish()),
        });
        self.bytes = 0;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        out.emit(&RecordBatch::try_new_with_options(op.schema.clone(), columns, &options)?)
    }
}

/// A frame's pixels, row-major, with `channels` (3 drops alpha) per pixel.
fn pixels(image: &RgbaImage, channels: usize) -> Vec<u8> {
    if channels == 4 {
        return image.as_raw().clone();
    }
    image.as_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
}

fn encode_png(image: &RgbaImage, channels: usize) -> Result<Vec<u8>, Error> {
    let (w, h) = image.dimensions();
    let color = if channels == 4 { ExtendedColorType::Rgba8 } else { ExtendedColorType::Rgb8 };
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&pixels(image, channels), w, h, color)
        .map_err(|e| Error::internal(format!("video-frames: encoding a frame as PNG: {e}")))?;
    Ok(png)
}

/// How errors name a blob: the path or URI it was read from, else its digest.
fn file_name(r: &BlobRef) -> String {
    match blob::stat(r) {
        Ok(blob::BlobInfo { source: Some(source), .. }) => source,
        _ => format!("blob {}", r.digest_hex()),
    }
}

export_operator!(VideoFrames);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_drop_alpha_for_rgb() {
        let img = RgbaImage::from_raw(2, 1, vec![1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(pixels(&img, 3), vec![1, 2, 3, 5, 6, 7]);
        assert_eq!(pixels(&img, 4), vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let png = encode_png(&img, 3).unwrap();
        let back = image::load_from_memory(&png).unwrap();
        assert_eq!(back.color(), image::ColorType::Rgb8);
        assert_eq!(back.into_rgb8().into_raw(), vec![1, 2, 3, 5, 6, 7]);
    }

    #[test]
    fn config_defaults_and_choices() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!((c.column.as_str(), c.output.as_str(), c.channels, c.max_frames), ("blob", "frame", 3, 10_000));
        assert_eq!((c.fps, c.every_ms, c.frame_format), (None, None, FrameFormat::Raw));
        let c: Config = serde_json::from_str(r#"{"every_ms": 250, "frame_format": "png"}"#).unwrap();
        assert_eq!((c.every_ms, c.frame_format), (Some(250), FrameFormat::Png));
        assert!(serde_json::from_str::<Config>(r#"{"frame_format": "jpeg"}"#).is_err());
        assert!(serde_json::from_str::<Config>(r#"{"rate": 2}"#).is_err());
    }
}
