//! W6 (CPU): images to model-ready tensors, as a whole `flumen run` process
//! against a native single-thread Rust loop doing the same steps with the same
//! crates and settings.
//!
//! 1. Generates `target/w6-images/data-<N>/` once: N pictures of 512 × 384
//!    (the examples' generator), alternately PNG and JPEG (quality 90).
//! 2. Writes the job: `blobs` source over that folder → `project` keeping
//!    `path` and the references (a guest that passes references on without
//!    reading them) → `image` operator (decode, RGB, 224 × 224 "fill" with the
//!    bilinear filter, ImageNet mean/std, CHW float32, references dropped) →
//!    blackhole sink; parallelism 1.
//! 3. Runs it with the built `flumen` binary (`flumen run --quiet`), timing the
//!    whole process, after one warm-up run that fills the compiled-component
//!    cache; each timed run is followed by the native loop, timed in-process:
//!    read each file, `image` decode, `fast_image_resize` fill, the same
//!    normalization table, CHW (`examples/images/reference.rs`, the pipeline the
//!    integration tests check the job against). A second native loop runs
//!    the resize without SIMD, as the component does (Wasm SIMD is not
//!    enabled for guests), to show how much of the gap is SIMD.
//! 4. Runs the job once more in-process to read the engine's exact byte
//!    counters, and prints a table: images/s for each, the ratio, and bytes
//!    moved into and out of each guest per image (the `project` guest must
//!    read no image bytes).
//!
//! `W6_IMAGES` (default 200) sets N, `W6_RUNS` (default 3) the runs. No
//! timing is asserted; the sink's row count is checked against N.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "common/process.rs"]
mod process;
#[path = "common/stats.rs"]
mod stats;
use process::{env_or, job_seconds, run_flumen, sink_rows, target_dir};
use stats::{max, median, min};

#[allow(dead_code, reason = "only the picture generator is used, not the example's `main`")]
#[path = "../examples/images/make_images.rs"]
mod make_images;
#[allow(dead_code, reason = "the bench uses the pipeline, not every constant")]
#[path = "../examples/images/reference.rs"]
mod reference;

use make_images::{Format, encode, picture};
use reference::{IMAGENET_MEAN, IMAGENET_STD, Reference};

const WIDTH: u32 = 512;
const HEIGHT: u32 = 384;
const TARGET: u32 = 224;

// Builds the plugins and test guests this benchmark uses (the build script
// builds only the core plugins).
#[path = "../host/cli/src/guests.rs"]
mod guests;

fn main() {
    guests::ensure_all();
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` builds and starts every bench; this one runs only under `cargo bench`.
        println!("w6_images: run with `cargo bench --bench w6_images`");
        return;
    }
    let images: usize = env_or("W6_IMAGES", 200);
    let runs: usize = env_or("W6_RUNS", 3);
    let dir = target_dir().join("w6-images");
    let data = generate(&dir, images);
    let job = write_job(&dir, &data);
    let cache = dir.join("component-cache");
    let files = list(&data);
    let encoded: u64 = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum();

    // Warm-up: fills the compiled-component cache and the page cache.
    let (_, warm_out) = run_flumen(&job, &cache);
    assert_eq!(sink_rows(&warm_out), Some(images as u64), "the sink got every image\n{warm_out}");
    native(&files, false);

    let (mut flumen, mut simd, mut scalar) = (Vec::new(), Vec::new(), Vec::new());
    let mut job_s = Vec::new();
    for _ in 0..runs {
        let (t, out) = run_flumen(&job, &cache);
        flumen.push(t.as_secs_f64());
        job_s.push(job_seconds(&out).unwrap_or(f64::NAN));
        simd.push(native(&files, false).as_secs_f64());
        scalar.push(native(&files, true).as_secs_f64());
        println!(
            "run: flumen {:.3} s, native {:.3} s, native scalar resize {:.3} s",
            t.as_secs_f64(),
            simd.last().unwrap_or(&0.0),
            scalar.last().unwrap_or(&0.0)
        );
    }
    let counters = counters(&job);

    let n = images as f64;
    let ratio = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
    let (vs_simd, vs_scalar) = (ratio(&flumen, &simd), ratio(&flumen, &scalar));
    println!();
    println!(
        "W6 (CPU): {images} pictures of {WIDTH}×{HEIGHT} (half PNG, half JPEG q90; {:.0} KiB encoded per image) → \
         decode, RGB, {TARGET}×{TARGET} fill (bilinear), ImageNet normalize, CHW float32; {runs} runs after one warm-up",
        encoded as f64 / n / 1024.0
    );
    println!(
        "flumen = whole `flumen run` process (blobs → project → image → blackhole, parallelism 1); native = one thread in-process"
    );
    println!();
    println!("| pipeline | median s (min–max) | images/s | flumen / this (min–max) |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, s: &[f64], r: Option<&[f64]>| {
        let ratio = r.map_or("–".to_string(), |r| format!("{:.2}× ({:.2}–{:.2})", median(r), min(r), max(r)));
        println!("| {name} | {:.3} ({:.3}–{:.3}) | {:.0} | {ratio} |", median(s), min(s), max(s), n / median(s));
    };
    row("flumen run (Wasm `image` operator)", &flumen, None);
    row("  of which the job's run (engine timer)", &job_s, None);
    row("native, same crates (SIMD resize and JPEG IDCT)", &simd, Some(&vs_simd));
    row("native, resize without SIMD", &scalar, Some(&vs_scalar));
    println!();
    println!("Encoded bytes per image on disk: {:.0}", encoded as f64 / n);
    match counters {
        Ok(c) => {
            println!("Bytes per image across the guest boundary (engine counters of one in-process run):");
            println!();
            println!("| counter | total | per image |");
            println!("|---|---:|---:|");
            for (name, total) in c {
                println!("| {name} | {total} | {:.0} |", total as f64 / n);
            }
        }
        Err(e) => println!("byte counters unavailable: {e}"),
    }
    println!();
    println!("The warm-up run's summary from `flumen run`:");
    for line in warm_out.lines() {
        println!("    {line}");
    }
}

/// Writes the pictures once; returns their folder.
fn generate(dir: &Path, images: usize) -> PathBuf {
    let data = dir.join(format!("data-{images}"));
    if list(&data).len() == images {
        return data;
    }
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("cannot create {}: {e}", data.display()));
    for i in 0..images {
        let format = if i % 2 == 0 { Format::Png } else { Format::Jpeg };
        let path = data.join(format!("p{i:05}.{}", format.extension()));
        std::fs::write(&path, encode(&picture(i as u32, WIDTH, HEIGHT), format))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    data
}

/// The files of `dir`, sorted by name (as the `blobs` source lists them).
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn write_job(dir: &Path, data: &Path) -> PathBuf {
    let text = format!(
        "# W6: images → normalized tensors. Written by benches/w6_images.rs.\n\
         [job]\nname = \"w6-images\"\nparallelism = 1\nbatch_rows = 16\n\n\
         [[source]]\nid = \"files\"\nkind = \"blobs\"\npath = {path}\ncolumn_type = \"image\"\n\n\
         [[operator]]\nid = \"pass\"\nplugin = \"project\"\nconfig = {{ columns = [\"path\", \"blob\"] }}\n\
         inputs = [\"files\"]\n\n\
         [[operator]]\nid = \"image\"\nplugin = \"image\"\ncapabilities = [\"log\", \"blobs\"]\n\
         config = {{ drop_input = true, resize = {{ width = {TARGET}, height = {TARGET}, mode = \"fill\", filter = \"triangle\" }}, \
         normalize = {{ mean = {IMAGENET_MEAN:?}, std = {IMAGENET_STD:?} }} }}\ninputs = [\"pass\"]\n\n\
         [[sink]]\nid = \"out\"\nkind = \"blackhole\"\ninputs = [\"image\"]\n",
        path = serde_json::Value::String(data.display().to_string()),
    );
    let path = dir.join("w6.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// One pass of the native pipeline over `files`.
fn native(files: &[PathBuf], scalar: bool) -> Duration {
    let mut pipeline = Reference::new(TARGET, TARGET, IMAGENET_MEAN, IMAGENET_STD);
    if scalar {
        pipeline = pipeline.without_simd();
    }
    let started = Instant::now();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        black_box(pipeline.tensor(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    started.elapsed()
}

/// The engine's byte counters for the `image` node, from one in-process run.
fn counters(job: &Path) -> Result<Vec<(&'static str, u64)>, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let engine = flumen_engine::Engine::new(flumen_engine::EngineOptions {
            plugin_dirs: vec![PathBuf::from(env!("FLUMEN_PLUGIN_DIR"))],
            cache_dir: Some(target_dir().join("w6-images/component-cache")),
            packages: None,
        })
        .map_err(|e| e.to_string())?;
        let prepared = engine.prepare(job).await.map_err(|e| e.to_string())?;
        let summary = prepared.run(std::future::pending()).await.map_err(|e| e.to_string())?;
        let node = summary.node("image").ok_or("no `image` node in the summary")?;
        let pass = summary.node("pass").ok_or("no `pass` node in the summary")?;
        Ok(vec![
            ("`image`: blob bytes read into the guest (the encoded files)", node.blob_bytes_read),
            ("`image`: batch bytes into the guest (paths, references)", node.guest_bytes_in),
            ("`image`: batch bytes out of the guest (paths, tensors)", node.guest_bytes_out),
            ("`image`: blob bytes made by the guest", node.blob_bytes_created),
            ("`pass` (project, passes references on): blob bytes read into the guest", pass.blob_bytes_read),
            ("`pass`: batch bytes into the guest (paths, sizes, references)", pass.guest_bytes_in),
        ])
    })
}
