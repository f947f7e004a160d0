//! W6 (CPU): image references → host decode, resize to 224 × 224, normalize
//! → ResNet-18 (ONNX Runtime, dynamic batches) → top-1 → Parquet, as a whole
//! `flumen run` process, beside a plain onnxruntime + Pillow loop over the
//! same files, model, batch size and thread count
//! (`benches/peers/ort_resnet.py`), in one invocation.
//!
//! 1. Writes N seeded 256 × 256 PNGs once (`target/w6-classify/data-N/`).
//! 2. The job: `blobs` source → `classify-image` (`resnet18`, k = 1; the
//!    model's `[preprocess.image]` does the decoding in the host, so no image
//!    byte enters the guest) → Parquet.
//! 3. One warm-up run, then `W6_RUNS` timed runs of each; prints images/s,
//!    the ratio, the model's batch-size histogram and the guest's blob bytes.
//!
//! Needs `FLUMEN_BENCH_MODELS` (resnet18/ from tests/models/make_resnet.py),
//! ONNX Runtime, and for the baseline Python with onnxruntime, numpy and
//! Pillow (`W6_PYTHON`, default `python3`). `W6_IMAGES` (default 500),
//! `W6_RUNS` (3), `W6_THREADS` (2). No timing is asserted.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[allow(dead_code, reason = "shared helpers; this bench uses some")]
#[path = "common/process.rs"]
mod process;
#[allow(dead_code, reason = "shared helpers; this bench uses the median")]
#[path = "common/stats.rs"]
mod stats;
use process::{env_or, run_flumen, sink_rows, target_dir};
use stats::median;

#[allow(dead_code, reason = "only the picture generator is used")]
#[path = "../examples/images/make_images.rs"]
mod make_images;

#[path = "../host/cli/src/guests.rs"]
mod guests;

fn main() {
    guests::ensure_all();
    if !std::env::args().any(|a| a == "--bench") {
        println!("w6_classify: run with `cargo bench --bench w6_classify`");
        return;
    }
    let Some(models) = std::env::var_os("FLUMEN_BENCH_MODELS").map(PathBuf::from) else {
        eprintln!("skipped: set FLUMEN_BENCH_MODELS to a folder with resnet18/ (tests/models/make_resnet.py)");
        return;
    };
    let (images, runs, threads): (usize, usize, usize) =
        (env_or("W6_IMAGES", 500), env_or("W6_RUNS", 3), env_or("W6_THREADS", 2));
    let dir = target_dir().join("w6-classify");
    let data = dir.join(format!("data-{images}"));
    if !data.join(format!("{:05}.png", images - 1)).exists() {
        std::fs::create_dir_all(&data).expect("data dir");
        for i in 0..images {
            let bytes = make_images::encode(&make_images::picture(i as u32, 256, 256), make_images::Format::Png);
            std::fs::write(data.join(format!("{i:05}.png")), bytes).expect("png");
        }
    }
    let repo = dir.join("models");
    let model = repo.join("resnet18");
    std::fs::create_dir_all(&model).expect("model dir");
    std::fs::copy(models.join("resnet18/model.onnx"), model.join("model.onnx")).expect("model");
    std::fs::write(
        model.join("model.toml"),
        format!(
            "max_batch = 32\npreferred_batch = [32]\nmax_queue_delay_ms = 5\nthreads = {threads}\n\n\
             [preprocess.image]\nwidth = 224\nheight = 224\nmode = \"fill\"\nfilter = \"triangle\"\n\
             mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n"
        ),
    )
    .expect("config");
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\nname = \"w6-classify\"\nbatch_rows = 32\n\n[inference]\nmodels = {:?}\n\n\
             [[source]]\nid = \"pictures\"\nkind = \"blobs\"\npath = {:?}\ncolumn_type = \"image\"\n\n\
             [[operator]]\nid = \"classify\"\nplugin = \"classify-image\"\ncapabilities = [\"inference\"]\n\
             config = {{ model = \"resnet18\", input = \"blob\", k = 1 }}\ninputs = [\"pictures\"]\nparallelism = 2\n\n\
             [[sink]]\nid = \"out\"\nkind = \"parquet\"\npath = {:?}\nblobs = \"reference\"\ninputs = [\"classify\"]\n",
            repo.display().to_string(),
            format!("{}/*.png", data.display()),
            dir.join("out/top1.parquet").display().to_string()
        ),
    )
    .expect("job");
    let cache = dir.join("component-cache");
    let (_, warm) = run_flumen(&job, &cache);
    assert_eq!(sink_rows(&warm), Some(images as u64), "the sink got every image\n{warm}");
    let mut ours: Vec<Duration> = Vec::new();
    let mut last = String::new();
    for _ in 0..runs {
        let (t, out) = run_flumen(&job, &cache);
        ours.push(t);
        last = out;
    }
    let secs: Vec<f64> = ours.iter().map(Duration::as_secs_f64).collect();
    let flumen = images as f64 / median(&secs);
    println!("W6 (CPU): {images} PNGs of 256 × 256 → ResNet-18, {threads} threads, batches of up to 32\n");
    println!("flumen run (whole process): {flumen:.1} images/s (median of {runs})");
    for line in last.lines().filter(|l| l.contains("model resnet18") || l.trim_start().starts_with("operator classify"))
    {
        println!("  {}", line.trim());
    }
    let python = std::env::var("W6_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/ort_resnet.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(model.join("model.onnx"))
        .arg(&data)
        .args(["--batch", "32", "--threads", &threads.to_string()])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value =
                serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap_or_default();
            let (loop_s, infer_s) = (v["per_s"].as_f64().unwrap_or(0.0), v["infer_per_s"].as_f64().unwrap_or(0.0));
            println!(
                "{} loop: {loop_s:.1} images/s (model runs alone: {infer_s:.1} images/s)",
                v["engine"].as_str().unwrap_or("onnxruntime")
            );
            println!("\nflumen / onnxruntime loop: {:.2}×", flumen / loop_s);
        }
        Ok(o) => {
            eprintln!("onnxruntime loop not run: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""))
        }
        Err(e) => eprintln!("onnxruntime loop not run ({python}): {e}"),
    }
}
