//! The dynamic batcher's gain: many operator instances each embedding one
//! sentence at a time with all-MiniLM-L6-v2 (ONNX Runtime, the host's
//! tokenizer and pooling), first with batching off (`max_batch = 1`: every
//! call is its own run) and then on (`max_batch = 32`, 2 ms queue delay),
//! same model, threads and callers, in one invocation. Prints sentences per
//! second and the per-call latency (p50, p95) of each. No timing is asserted.
//!
//!     FLUMEN_MINILM_DIR=target/models/minilm cargo bench -p flumen-inference --bench batching
//!
//! `BATCH_CALLERS` (32), `BATCH_CALLS` (calls per caller, 20).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flumen_inference::{BackendProvider, ModelHub, summary_line};
use flumen_ort::OrtBackend;
use flumen_types::inference::{InferenceBackend, ModelHandle};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    let Some(minilm) = std::env::var_os("FLUMEN_MINILM_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set FLUMEN_MINILM_DIR to the folder tests/models/make_minilm.py writes");
        return;
    };
    let ort: Arc<dyn InferenceBackend> = match OrtBackend::load(None) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let (callers, calls) = (env("BATCH_CALLERS", 32), env("BATCH_CALLS", 20));
    let sentences: Vec<String> = (0..callers * calls)
        .map(|i| format!("Sentence number {i} talks about rivers, bread, chess openings and GPU memory in turn."))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{callers} callers × {calls} one-sentence calls, ONNX Runtime with {cores} threads\n");
    println!("| batching | sentences/s | call p50 ms | call p95 ms | batches (mean size) |\n|---|---|---|---|---|");
    let mut rates = Vec::new();
    for (label, config) in [
        ("off (max_batch = 1)", "max_batch = 1\nmax_queue_delay_ms = 0\n"),
        ("on (max_batch = 32, 2 ms)", "max_batch = 32\npreferred_batch = [32]\nmax_queue_delay_ms = 2\n"),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let model_dir = dir.path().join("minilm");
        std::fs::create_dir(&model_dir).expect("dir");
        for f in ["model.onnx", "tokenizer.json"] {
            std::fs::copy(minilm.join(f), model_dir.join(f)).expect("copy");
        }
        let toml = format!("{config}\n[preprocess.text]\nmax_length = 256\npool = \"mean\"\nnormalize = true\n");
        std::fs::write(model_dir.join("model.toml"), toml).expect("config");
        let backend = Arc::clone(&ort);
        let provider: BackendProvider = Arc::new(move |_: &str, _| Ok(Arc::clone(&backend)));
        let hub = ModelHub::open(dir.path(), provider, cores).expect("repository");
        let model = hub.load("minilm").expect("minilm");
        // Warm-up: the first runs allocate.
        runtime.block_on(model.infer_encoded(vec![Bytes::from_static(b"warm up")], None)).expect("warm-up");
        let started = Instant::now();
        let latencies: Vec<Duration> = runtime.block_on(async {
            let mut tasks = Vec::new();
            for c in 0..callers {
                let (model, mine) = (Arc::clone(&model), sentences[c * calls..(c + 1) * calls].to_vec());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(mine.len());
                    for s in mine {
                        let t = Instant::now();
                        model.infer_encoded(vec![Bytes::from(s)], None).await.expect("inference");
                        lat.push(t.elapsed());
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("caller"));
            }
            all
        });
        let elapsed = started.elapsed().as_secs_f64();
        let mut sorted = latencies;
        sorted.sort();
        let rate = (callers * calls) as f64 / elapsed;
        let line = summary_line(&model, None);
        let batches = line.split(" in ").nth(1).and_then(|r| r.split(" batches").next()).unwrap_or("?").to_owned();
        let mean = line.split("(mean ").nth(1).and_then(|r| r.split(';').next()).unwrap_or("?").to_owned();
        println!("| {label} | {rate:.0} | {:.1} | {:.1} | {batches} ({mean}) |", pct(&sorted, 0.5), pct(&sorted, 0.95));
        rates.push(rate);
    }
    if let [off, on] = rates[..] {
        println!("\nbatching on / off: {:.2}× the sentences per second", on / off);
    }
}
