//! The `video-frames` plugin over animations read by a `blobs` source:
//! frames of distinct solid colours with known delays come out at the right
//! sample times with the right colours, as decoded pixels and as PNG blobs;
//! a broken GIF and an MP4 (a container no pure-Rust decoder reads) go to the
//! dead-letter sink, named, while the good files come out.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{
    Array, AsArray, FixedSizeListArray, Int32Array, Int64Array, LargeBinaryArray, StringArray, UInt8Array, UInt32Array,
};
use image::codecs::gif::GifEncoder;
use image::{Delay, Frame, Rgba, RgbaImage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::common::*;

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const YELLOW: [u8; 3] = [255, 255, 0];

/// Frames of every fixture: 8 wide, 6 high.
const W: u32 = 8;
const H: u32 = 6;

/// An animated GIF of solid frames, delays in milliseconds.
fn write_gif(path: &Path, frames: &[([u8; 3], u32)]) {
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut bytes);
        for ([r, g, b], ms) in frames {
            let img = RgbaImage::from_pixel(W, H, Rgba([*r, *g, *b, 255]));
            enc.encode_frame(Frame::from_parts(img, 0, 0, Delay::from_numer_denom_ms(*ms, 1))).unwrap();
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// An APNG of solid frames, delays in milliseconds.
fn write_apng(path: &Path, frames: &[([u8; 3], u16)]) {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, W, H);
        enc.set_color(png::ColorType::Rgb);
        enc.set_animated(frames.len() as u32, 0).unwrap();
        let mut w = enc.write_header().unwrap();
        for (colour, ms) in frames {
            w.set_frame_delay(*ms, 1000).unwrap();
            w.write_image_data(&colour.repeat((W * H) as usize)).unwrap();
        }
        w.finish().unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// Shows [0, 200) red, [200, 300) green, [300, 600) blue.
const GIF: &[([u8; 3], u32)] = &[(RED, 200), (GREEN, 100), (BLUE, 300)];
/// Shows [0, 500) red, [500, 1000) green, [1000, 2000) blue, [2000, 2500) yellow.
const APNG: &[([u8; 3], u16)] = &[(RED, 500), (GREEN, 500), (BLUE, 1000), (YELLOW, 500)];

/// One output row: file name, frame index, timestamp, and the frame's
/// height, width, channels and pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    file: String,
    frame_index: u32,
    timestamp_ms: i64,
    shape: [usize; 3],
    pixels: Vec<u8>,
}

impl Row {
    /// The frame's colour, checking that every pixel has it.
    #[track_caller]
    fn colour(&self) -> [u8; 3] {
        assert_eq!(self.shape[2], 3, "RGB");
        let first: [u8; 3] = self.pixels[..3].try_into().unwrap();
        assert!(self.pixels.chunks(3).all(|p| p == first), "{}@{}: not a solid frame", self.file, self.timestamp_ms);
        first
    }
}

fn read_rows(path: &Path, decode_png: bool) -> Vec<Row> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
        let batch = batch.unwrap();
        let col = |name: &str| batch.column_by_name(name).unwrap_or_else(|| panic!("column {name}")).clone();
        let paths = col("path");
        let paths = paths.as_any().downcast_ref::<StringArray>().unwrap();
        let index = col("frame_index");
        let index = index.as_any().downcast_ref::<UInt32Array>().unwrap();
        let ts = col("timestamp_ms");
        let ts = ts.as_any().downcast_ref::<Int64Array>().unwrap();
        let frames = col("frame");
        for row in 0..batch.num_rows() {
            let (shape, pixels) = if decode_png {
                let png = frames.as_any().downcast_ref::<LargeBinaryArray>().expect("PNG bytes").value(row);
                let img = image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap().into_rgb8();
                ([img.height() as usize, img.width() as usize, 3], img.into_raw())
            } else {
                tensor(frames.as_struct(), row)
            };
            rows.push(Row {
                file: Path::new(paths.value(row)).file_name().unwrap().to_string_lossy().into_owned(),
                frame_index: index.value(row),
                timestamp_ms: ts.value(row),
                shape,
                pixels,
            });
        }
    }
    rows.sort_by(|a, b| (&a.file, a.timestamp_ms).cmp(&(&b.file, b.timestamp_ms)));
    rows
}

/// Row `row` of a variable-shape tensor column: its shape and values.
fn tensor(column: &arrow::array::StructArray, row: usize) -> ([usize; 3], Vec<u8>) {
    let data = column.column_by_name("data").unwrap().as_list::<i32>().value(row);
    let data = data.as_any().downcast_ref::<UInt8Array>().unwrap().values().to_vec();
    let shape =
        column.column_by_name("shape").unwrap().as_any().downcast_ref::<FixedSizeListArray>().unwrap().value(row);
    let shape = shape.as_any().downcast_ref::<Int32Array>().unwrap();
    ([shape.value(0) as usize, shape.value(1) as usize, shape.value(2) as usize], data)
}

/// (file, frame index, timestamp, colour) of each row.
fn summary(rows: &[Row]) -> Vec<(&str, u32, i64, [u8; 3])> {
    rows.iter().map(|r| (r.file.as_str(), r.frame_index, r.timestamp_ms, r.colour())).collect()
}

fn job(config: &str) -> Job {
    let job = Job::new(&format!(
        r#"
[job]
name = "frames"
batch_rows = 10

[[source]]
id = "clips"
kind = "blobs"
path = "clips/"
column_type = "video"

[[operator]]
id = "frames"
plugin = "video-frames"
capabilities = ["log", "blobs"]
config = {config}
inputs = ["clips"]
on_error = {{ then = "dead-letter", dead_letter = "bad" }}

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["frames"]

[[sink]]
id = "bad"
kind = "jsonl"
path = "bad.jsonl"
"#
    ));
    std::fs::create_dir(job.file("clips")).unwrap();
    write_gif(&job.file("clips/anim.gif"), GIF);
    write_apng(&job.file("clips/anim.png"), APNG);
    job
}

/// The dead-lettered rows' errors, by file name.
fn dead_letters(job: &Job) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(job.file("bad.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let name = Path::new(v["path"].as_str().expect("path")).file_name().unwrap().to_string_lossy().into_owned();
            (name, v["_flumen_error"].as_str().expect("_flumen_error").to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_come_out_at_their_times_with_their_colours() {
    let job = job("{ every_ms = 250 }");
    job.run().await.expect("job completes");
    let rows = read_rows(&job.file("out.parquet"), false);
    assert!(rows.iter().all(|r| r.shape == [H as usize, W as usize, 3]), "{:?}", rows[0].shape);
    assert_eq!(
        summary(&rows),
        vec![
            ("anim.gif", 0, 0, RED),
            ("anim.gif", 1, 250, GREEN),
            ("anim.gif", 2, 500, BLUE),
            ("anim.png", 0, 0, RED),
            ("anim.png", 0, 250, RED),
            ("anim.png", 1, 500, GREEN),
            ("anim.png", 1, 750, GREEN),
            ("anim.png", 2, 1000, BLUE),
            ("anim.png", 2, 1250, BLUE),
            ("anim.png", 2, 1500, BLUE),
            ("anim.png", 2, 1750, BLUE),
            ("anim.png", 3, 2000, YELLOW),
            ("anim.png", 3, 2250, YELLOW),
        ]
    );
    assert!(dead_letters(&job).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_frames_are_new_image_blobs() {
    let job = job(r#"{ fps = 2.0, frame_format = "png" }"#);
    job.run().await.expect("job completes");
    let rows = read_rows(&job.file("out.parquet"), true);
    assert!(rows.iter().all(|r| r.shape == [H as usize, W as usize, 3]));
    assert_eq!(
        summary(&rows),
        vec![
            ("anim.gif", 0, 0, RED),
            ("anim.gif", 2, 500, BLUE),
            ("anim.png", 0, 0, RED),
            ("anim.png", 1, 500, GREEN),
            ("anim.png", 2, 1000, BLUE),
            ("anim.png", 2, 1500, BLUE),
            ("anim.png", 3, 2000, YELLOW),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_unsupported_files_are_dead_lettered_by_name() {
    let job = job("{ fps = 1.0 }");
    let mut broken = std::fs::read(job.file("clips/anim.gif")).unwrap();
    broken.truncate(broken.len() / 2);
    std::fs::write(job.file("clips/broken.gif"), broken).unwrap();
    // An MP4's first box, then bytes no decoder here would get to read.
    let mut mp4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41".to_vec();
    mp4.extend(std::iter::repeat_n(0xab, 4096));
    std::fs::write(job.file("clips/clip.mp4"), mp4).unwrap();
    job.run().await.expect("job completes");

    let rows = read_rows(&job.file("out.parquet"), false);
    assert_eq!(
        summary(&rows),
        vec![
            ("anim.gif", 0, 0, RED),
            ("anim.png", 0, 0, RED),
            ("anim.png", 2, 1000, BLUE),
            ("anim.png", 3, 2000, YELLOW)
        ],
        "the good files come out"
    );
    let bad = dead_letters(&job);
    assert_eq!(bad.keys().collect::<Vec<_>>(), ["broken.gif", "clip.mp4"]);
    assert_contains(&bad["broken.gif"], &["broken.gif", "image/gif", "cannot decode"]);
    assert_contains(&bad["clip.mp4"], &["clip.mp4", "video/mp4", "MP4/QuickTime video is not supported", "H.264"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_frames_refuses_a_file_by_name() {
    let job = job("{ fps = 10.0, max_frames = 10 }");
    job.run().await.expect("job completes");
    // The GIF yields 6 frames at 10 fps, the APNG 25.
    let rows = read_rows(&job.file("out.parquet"), false);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.file == "anim.gif"));
    assert_contains(&dead_letters(&job)["anim.png"], &["anim.png", "`max_frames` = 10"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_before_data_flows() {
    assert_contains(&job("{ fps = 2.0, every_ms = 100 }").run_err().await, &["`fps` or `every_ms`, not both"]);
    assert_contains(&job("{ channels = 1 }").run_err().await, &["`channels` = 1 is not supported"]);
}
