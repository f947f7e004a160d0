//! The `image` plugin over files read by a `blobs` source: the example job
//! on a freshly generated set gives the tensors the same steps give when run
//! directly with the same crates; shapes, types and tensor metadata survive
//! Parquet; decoded images keep each file's size and pixels; corrupt files
//! go to the dead-letter sink, named, while the good ones come out.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray, FixedSizeListArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Int32Type, UInt8Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::common::*;

#[allow(dead_code, reason = "only the image generator is used, not the example's `main`")]
#[path = "../../examples/images/make_images.rs"]
mod make_images;
#[allow(dead_code, reason = "the tests use the pipeline, not its scalar variant")]
#[path = "../../examples/images/reference.rs"]
mod reference;

use make_images::{Format, encode, picture};
use reference::{IMAGENET_MEAN, IMAGENET_STD, Reference};

/// Largest difference allowed between a tensor value from the job and from
/// the native pipeline: one pixel level (1/255) after dividing by the
/// smallest std (0.224). The same crates run on both sides, but natively
/// `fast_image_resize` and the JPEG decoder take the CPU's SIMD paths while
/// the component runs their scalar code; on x86-64 with AVX2 the two give
/// bitwise-equal tensors, and the level of slack keeps the test about the
/// pipeline, not about one CPU's rounding.
const TENSOR_TOLERANCE: f32 = 1.0 / 255.0 / 0.224 + 1e-5;

fn flumen() -> Command {
    let mut c = Command::new(flumen_bin());
    c.env("FLUMEN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"));
    c
}

/// Every batch of a Parquet file.
fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    reader.map(|b| b.unwrap()).collect()
}

/// The file name of each row's `path`, in row order.
fn names(batch: &RecordBatch) -> Vec<String> {
    let paths = batch.column_by_name("path").expect("path column").as_any().downcast_ref::<StringArray>().unwrap();
    (0..batch.num_rows())
        .map(|i| Path::new(paths.value(i)).file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Asserts that `field` is an `arrow.fixed_shape_tensor` of `value` with `shape` and `dim_names`.
#[track_caller]
fn assert_fixed_tensor(field: &Field, value: DataType, shape: &[usize], dim_names: &[&str]) {
    let md = field.metadata();
    assert_eq!(md.get("ARROW:extension:name").map(String::as_str), Some("arrow.fixed_shape_tensor"), "{field:?}");
    let meta: serde_json::Value = serde_json::from_str(&md["ARROW:extension:metadata"]).unwrap();
    assert_eq!(meta["shape"], serde_json::json!(shape));
    assert_eq!(meta["dim_names"], serde_json::json!(dim_names));
    let size = shape.iter().product::<usize>() as i32;
    match field.data_type() {
        DataType::FixedSizeList(item, n) => {
            assert_eq!((item.data_type(), *n), (&value, size));
            // pyarrow (Arrow C++) restores the extension from Parquet only when
            // the stored storage type is its own, whose child is nullable.
            assert!(item.is_nullable(), "a non-nullable child loses the extension in pyarrow: {field:?}");
        }
        other => panic!("tensor column stored as {other}"),
    }
}

/// The README's demo, as CI runs it: `job.toml` over the pictures shipped in
/// `data/` (the generator's set), run with the `flumen` binary, every tensor
/// checked against the native pipeline.
#[test]
fn example_job_runs_on_its_shipped_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images");
    std::fs::copy(example.join("job.toml"), dir.path().join("job.toml")).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(example.join("data")).unwrap() {
        let from = entry.unwrap().path();
        let to = dir.path().join("data").join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap();
        files.push(to);
    }
    files.sort();
    assert_eq!(files.len(), make_images::SET_COUNT, "the example ships the whole set");
    for ext in ["png", "jpg", "webp"] {
        assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == ext)), "no .{ext} in the set");
    }

    let out = flumen().arg("run").arg(dir.path().join("job.toml")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "flumen run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_contains(&stdout, &["job `images` finished", "tensors", "slim", "wrote"]);

    let batches = read_parquet(&dir.path().join("out/tensors.parquet"));
    let schema = batches[0].schema();
    assert_eq!(schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["path", "tensor"]);
    assert_fixed_tensor(schema.field(1), DataType::Float32, &[3, 224, 224], &["C", "H", "W"]);

    let mut native = Reference::new(224, 224, IMAGENET_MEAN, IMAGENET_STD);
    let mut seen = Vec::new();
    let (mut worst, mut total_diff, mut values) = (0f32, 0f64, 0usize);
    for batch in &batches {
        let tensors = batch.column(1).as_any().downcast_ref::<FixedSizeListArray>().unwrap();
        for (row, name) in names(batch).into_iter().enumerate() {
            assert!(tensors.is_valid(row), "{name}: null tensor");
            let got = tensors.value(row);
            let got = got.as_primitive::<Float32Type>().values();
            let expected = native.tensor(&std::fs::read(dir.path().join("data").join(&name)).unwrap()).unwrap();
            assert_eq!(got.len(), expected.len());
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                let d = (g - e).abs();
                assert!(d <= TENSOR_TOLERANCE, "{name}: value {i} is {g}, natively {e}");
                worst = worst.max(d);
                total_diff += f64::from(d);
            }
            values += got.len();
            seen.push(name);
        }
    }
    seen.sort();
    let expected: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(seen, expected, "one tensor per file");
    // Nearly every value is equal: differences are rare one-level roundings.
    let mean_diff = total_diff / values as f64;
    assert!(mean_diff < 1e-3, "mean difference {mean_diff} (worst {worst}) is more than rare roundings");
}

fn image_job(operator_config: &str, extra: &str) -> Job {
    let job = Job::new(&format!(
        r#"
[job]
name = "images"
batch_rows = 4

[[source]]
id = "files"
kind = "blobs"
path = "pictures"
column_type = "image"

[[operator]]
id = "image"
plugin = "image"
capabilities = ["log", "blobs"]
config = {operator_config}
inputs = ["files"]
{extra}

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["image"]
"#
    ));
    std::fs::create_dir(job.file("pictures")).unwrap();
    job
}

/// Writes `picture(seed, w, h)` as `pictures/<name>`.
fn write_picture(job: &Job, name: &str, seed: u32, (w, h): (u32, u32), format: Format) -> Vec<u8> {
    let bytes = encode(&picture(seed, w, h), format);
    std::fs::write(job.file("pictures").join(name), &bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resize_each_image_is_decoded_at_its_own_size() {
    let job = image_job("{ drop_input = true }", "");
    let mut sources = BTreeMap::new();
    for (i, (name, size, format)) in [
        ("a.png", (40, 30), Format::Png),
        ("b.webp", (17, 50), Format::WebP),
        ("c.jpg", (64, 64), Format::Jpeg),
        ("d.png", (1, 1), Format::Png),
        ("e.png", (300, 7), Format::Png),
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = write_picture(&job, name, i as u32, size, format);
        sources.insert(name.to_string(), image::load_from_memory(&bytes).unwrap().into_rgb8());
    }
    job.run().await.expect("job completes");

    let batches = read_parquet(&job.file("out.parquet"));
    let field = batches[0].schema().field_with_name("tensor").unwrap().clone();
    assert!(batches[0].schema().field_with_name("blob").is_err(), "drop_input removes the references");
    let md = field.metadata();
    assert_eq!(md["ARROW:extension:name"], "arrow.variable_shape_tensor");
    let meta: serde_json::Value = serde_json::from_str(&md["ARROW:extension:metadata"]).unwrap();
    assert_eq!(meta["dim_names"], serde_json::json!(["H", "W", "C"]));
    assert_eq!(meta["uniform_shape"], serde_json::json!([null, null, 3]));

    let mut seen = Vec::new();
    for batch in &batches {
        let tensors = batch.column_by_name("tensor").unwrap().as_struct();
        let data = tensors.column_by_name("data").unwrap().as_list::<i32>();
        let shapes = tensors.column_by_name("shape").unwrap().as_fixed_size_list();
        for (row, name) in names(batch).into_iter().enumerate() {
            let source = &sources[&name];
            let shape = shapes.value(row);
            let shape = shape.as_primitive::<Int32Type>().values();
            assert_eq!(shape, &[source.height() as i32, source.width() as i32, 3], "{name}");
            // The same decoder on both sides: PNG and lossless WebP are exact, JPEG within one level.
            let pixels = data.value(row);
            let pixels = pixels.as_primitive::<UInt8Type>().values();
            assert_eq!(pixels.len(), source.as_raw().len(), "{name}");
            let worst = pixels.iter().zip(source.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
            assert!(worst <= u8::from(name.ends_with(".jpg")), "{name}: pixels differ by {worst}");
            seen.push(name);
        }
    }
    seen.sort();
    assert_eq!(seen, ["a.png", "b.webp", "c.jpg", "d.png", "e.png"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resized_uint8_and_grey_tensors_have_the_asked_shape_and_layout() {
    let job =
        image_job(r#"{ output = "pixels", channels = 1, resize = { width = 32, height = 16, mode = "fit" } }"#, "");
    write_picture(&job, "wide.png", 1, (200, 50), Format::Png);
    write_picture(&job, "tall.jpg", 2, (50, 200), Format::Jpeg);
    job.run().await.expect("job completes");
    let batches = read_parquet(&job.file("out.parquet"));
    let schema = batches[0].schema();
    assert_eq!(
        schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(),
        ["path", "size", "blob", "pixels"],
        "the references stay unless dropped; the tensor is appended"
    );
    assert_fixed_tensor(schema.field(3), DataType::UInt8, &[16, 32, 1], &["H", "W", "C"]);
    for batch in &batches {
        let tensors = batch.column(3).as_fixed_size_list();
        for (row, name) in names(batch).into_iter().enumerate() {
            let t = tensors.value(row);
            let px = t.as_primitive::<UInt8Type>().values();
            // "fit" pads with black: a 4:1 picture in 2:1 leaves rows at the top and bottom;
            // a 1:4 one leaves columns at the sides.
            let (corner, center) = (px[0], px[8 * 32 + 16]);
            assert_eq!(corner, 0, "{name}: the padding is black");
            assert_ne!(center, 0, "{name}: the picture is in the middle");
        }
    }

    // Normalized HWC: float32 with the channels last.
    let job = image_job(
        r#"{ resize = { width = 8, height = 8, mode = "stretch", filter = "lanczos3" }, normalize = {}, layout = "HWC" }"#,
        "",
    );
    write_picture(&job, "a.webp", 3, (20, 10), Format::WebP);
    job.run().await.expect("job completes");
    let batches = read_parquet(&job.file("out.parquet"));
    assert_fixed_tensor(batches[0].schema().field(3), DataType::Float32, &[8, 8, 3], &["H", "W", "C"]);
    let t = batches[0].column(3).as_fixed_size_list().value(0);
    assert!(
        t.as_primitive::<Float32Type>().values().iter().all(|v| (0.0..=1.0).contains(v)),
        "`normalize = {{}}` scales to [0, 1]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_images_are_dead_lettered_by_name_and_the_good_ones_come_out() {
    let job = image_job(
        r#"{ drop_input = true, resize = { width = 16, height = 16 }, normalize = {} }"#,
        r#"on_error = { then = "dead-letter", dead_letter = "bad" }

[[sink]]
id = "bad"
kind = "jsonl"
path = "bad.jsonl"
"#,
    );
    let mut good = Vec::new();
    for i in 0..6u32 {
        let format = [Format::Png, Format::Jpeg, Format::WebP][i as usize % 3];
        let name = format!("good-{i}.{}", format.extension());
        write_picture(&job, &name, i, (40 + i * 7, 30 + i * 3), format);
        good.push(name);
    }
    // A PNG cut in half, and random bytes with a JPEG name.
    let png = encode(&picture(9, 64, 64), Format::Png);
    std::fs::write(job.file("pictures/cut.png"), &png[..png.len() / 2]).unwrap();
    let noise: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(job.file("pictures/noise.jpg"), noise).unwrap();
    let summary = job.run().await.expect("job completes");

    let mut out: Vec<String> = read_parquet(&job.file("out.parquet")).iter().flat_map(names).collect();
    out.sort();
    good.sort();
    assert_eq!(out, good, "every good image comes out, and only those");

    let text = std::fs::read_to_string(job.file("bad.jsonl")).unwrap();
    let errors: BTreeMap<String, String> = text
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            let name = Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            (name, r["_flumen_error"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["cut.png", "noise.jpg"]);
    assert_contains(&errors["cut.png"], &["image: cannot decode", "cut.png", "image/png"]);
    assert_contains(
        &errors["noise.jpg"],
        &["image: cannot decode", "noise.jpg", "image/jpeg", "5000 bytes", "not a PNG, JPEG or WebP image"],
    );
    assert_eq!(summary.node("image").unwrap().dead_lettered_rows, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_and_a_missing_grant_fail_before_data_flows() {
    let job = image_job(r#"{ normalize = { mean = [0.5, 0.5, 0.5] } }"#, "");
    write_picture(&job, "a.png", 1, (8, 8), Format::Png);
    assert_contains(&job.run_err().await, &["image", "`normalize` needs `resize`"]);

    let job = image_job(r#"{ column = "path" }"#, "");
    write_picture(&job, "a.png", 1, (8, 8), Format::Png);
    assert_contains(&job.run_err().await, &["column `path` is Utf8, not a reference to images"]);

    let text = std::fs::read_to_string(&job.path).unwrap().replace(r#"capabilities = ["log", "blobs"]"#, "");
    std::fs::write(&job.path, text.replace(r#"column = "path""#, "")).unwrap();
    assert_contains(&job.run_err().await, &["blobs"]);
}

/// A JPEG cut short is an error, not a tensor padded with grey; a file that
/// vanished before the source reached it, and the rows the operator failed,
/// go to the dead-letter sink by name, recorded by digest (the sink reads no
/// blob, so a bad file cannot fail it); the good images come out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_vanished_files_are_dead_lettered_and_the_rest_comes_out() {
    let job = Job::new(
        r#"
[job]
name = "images"
batch_rows = 4

[[source]]
id = "files"
kind = "blobs"
path = "pictures"
column_type = "image"
on_error = { then = "dead-letter", dead_letter = "bad" }

[[operator]]
id = "image"
plugin = "image"
capabilities = ["blobs"]
config = { drop_input = true, resize = { width = 16, height = 16 } }
inputs = ["files"]
on_error = { then = "dead-letter", dead_letter = "bad" }

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["image"]

[[sink]]
id = "bad"
kind = "jsonl"
path = "bad.jsonl"
"#,
    );
    std::fs::create_dir(job.file("pictures")).unwrap();
    write_picture(&job, "good.jpg", 1, (48, 40), Format::Jpeg);
    write_picture(&job, "good.png", 2, (30, 20), Format::Png);
    let jpeg = encode(&picture(3, 64, 48), Format::Jpeg);
    let cut = &jpeg[..jpeg.len() * 3 / 4];
    std::fs::write(job.file("pictures/cut.jpg"), cut).unwrap();
    write_picture(&job, "vanished.png", 4, (8, 8), Format::Png);
    // Listed when the job is planned, gone when the source reaches it.
    let prepared = engine().prepare(&job.path).await.unwrap();
    std::fs::remove_file(job.file("pictures/vanished.png")).unwrap();
    let summary = prepared.run(std::future::pending()).await.expect("the job completes");

    let mut out: Vec<String> = read_parquet(&job.file("out.parquet")).iter().flat_map(names).collect();
    out.sort();
    assert_eq!(out, ["good.jpg", "good.png"]);
    let text = std::fs::read_to_string(job.file("bad.jsonl")).unwrap();
    let rows: BTreeMap<String, serde_json::Value> = text
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (Path::new(r["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned(), r)
        })
        .collect();
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["cut.jpg", "vanished.png"], "{text}");
    let cut_row = &rows["cut.jpg"];
    assert_contains(cut_row["_flumen_error"].as_str().unwrap(), &["cut.jpg", "truncated JPEG"]);
    let digest: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(cut).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(cut_row["blob"].as_str(), Some(digest.as_str()), "the digest, not the bytes: {cut_row}");
    let gone = &rows["vanished.png"];
    assert_contains(gone["_flumen_error"].as_str().unwrap(), &["files", "vanished.png"]);
    assert_eq!(gone["_flumen_operator"].as_str(), Some("files[0]"));
    assert!(gone["blob"].is_null(), "{gone}");
    assert_eq!(summary.node("image").unwrap().dead_lettered_rows, 1);
    assert_eq!(summary.node("files").unwrap().dead_lettered_rows, 1);
}

/// A forged reference of size 0 is refused as forged, not decoded as an empty file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_empty_reference_is_reported_as_forged() {
    use flumen_batch::media::{BlobColumnBuilder, BlobRef, image_field};
    let job = Job::new(
        r#"
[job]
name = "forged-empty"

[[source]]
id = "refs"
kind = "parquet"
path = "refs.parquet"

[[operator]]
id = "image"
plugin = "image"
capabilities = ["blobs"]
config = { drop_input = true }
inputs = ["refs"]

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["image"]
"#,
    );
    let mut b = BlobColumnBuilder::new();
    b.append(Some(&BlobRef { digest: [7; 32], size: 0, media_type: "image/png".into(), token: [0; 16] }));
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![image_field("blob", true)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(b.finish())]).unwrap();
    let file = std::fs::File::create(job.file("refs.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let err = job.run_err().await;
    assert_contains(&err, &["image[0]", "forged or belongs to another job"]);
    assert!(!err.contains("cannot decode"), "{err}");
}
