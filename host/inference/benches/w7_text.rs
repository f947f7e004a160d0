//! W7 (CPU), model stage: texts → tokens → MiniLM-L6 → mean-pooled unit
//! vectors through the hub (the host tokenizer, the dynamic batcher, ONNX
//! Runtime, host pooling: what `embed-text` calls), beside
//! sentence-transformers' `encode` on the same texts, architecture,
//! tokenizer, batch size and thread count (`benches/peers/st_encode.py`), in
//! one invocation. Prints texts per second for each and the ratio.
//!
//!     FLUMEN_MINILM_DIR=target/models/minilm cargo bench -p flumen-inference --bench w7_text
//!
//! The model folder may be the real one or `make_minilm.py --random` (the
//! peer uses random weights: speed does not depend on them). `W7_TEXTS`
//! (1000), `W7_BATCH` (32), `W7_THREADS` (2). Without sentence-transformers
//! on the machine only Flumen's side is printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use flumen_inference::{BackendProvider, ModelHub};
use flumen_ort::OrtBackend;
use flumen_types::inference::{InferenceBackend, ModelHandle};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Chunk-like English texts of 150 to 700 characters, deterministic.
fn texts(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "river",
        "carries",
        "sediment",
        "downstream",
        "where",
        "bread",
        "dough",
        "rises",
        "slowly",
        "in",
        "a",
        "warm",
        "kitchen",
        "while",
        "chess",
        "players",
        "open",
        "with",
        "the",
        "queen's",
        "gambit",
        "and",
        "memory",
        "on",
        "the",
        "GPU",
        "is",
        "allocated",
        "per",
        "stream",
        "volcanoes",
        "erupt",
        "when",
        "pressure",
        "builds",
        "under",
        "old",
        "crust",
        "jazz",
        "musicians",
        "improvise",
        "over",
        "changes",
        "tyres",
        "need",
        "patches",
        "after",
        "punctures",
        "taxes",
        "are",
        "filed",
        "before",
        "April",
        "of",
        "each",
        "year",
    ];
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = 150 + (s >> 33) as usize % 550;
            let mut t = String::with_capacity(len + 16);
            while t.len() < len {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if !t.is_empty() {
                    t.push(if (s >> 60) == 0 { '.' } else { ' ' });
                    t.push(' ');
                }
                t.push_str(WORDS[(s >> 35) as usize % WORDS.len()]);
            }
            t
        })
        .collect()
}

fn main() {
    let Some(minilm) = std::env::var_os("FLUMEN_MINILM_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set FLUMEN_MINILM_DIR to a folder tests/models/make_minilm.py writes");
        return;
    };
    let ort: Arc<dyn InferenceBackend> = match OrtBackend::load(None) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let (n, batch, threads) = (env("W7_TEXTS", 1000), env("W7_BATCH", 32), env("W7_THREADS", 2));
    let texts = texts(n);
    let dir = tempfile::tempdir().expect("tmp");
    let folder = dir.path().join("minilm");
    std::fs::create_dir(&folder).expect("dir");
    for f in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(minilm.join(f), folder.join(f)).expect("copy");
    }
    let config = format!(
        "max_batch = {batch}\npreferred_batch = [{batch}]\nmax_queue_delay_ms = 2\nthreads = {threads}\n\n\
         [preprocess.text]\nmax_length = 256\npool = \"mean\"\nnormalize = true\n"
    );
    std::fs::write(folder.join("model.toml"), config).expect("config");
    let provider: BackendProvider = Arc::new(move |_: &str, _| Ok(Arc::clone(&ort)));
    let hub = ModelHub::open(dir.path(), provider, threads).expect("repository");
    let model = hub.load("minilm").expect("minilm");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!("W7 model stage: {n} texts of 150–700 characters, batch {batch}, {threads} threads\n");
    let mut ours = Vec::new();
    // One caller with batch-sized calls, four whose calls the batcher joins,
    // and one with large calls (what embed-text gets from a big batch).
    for (callers, per_call) in [(1usize, batch), (4, batch / 4), (1, batch * 8)] {
        let run = || {
            runtime.block_on(async {
                let mut tasks = Vec::new();
                for c in 0..callers {
                    let model = Arc::clone(&model);
                    let mine: Vec<Bytes> =
                        texts.iter().skip(c).step_by(callers).map(|t| Bytes::from(t.clone())).collect();
                    tasks.push(tokio::spawn(async move {
                        for chunk in mine.chunks(per_call.max(1)) {
                            model.infer_encoded(chunk.to_vec(), None).await.expect("inference");
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("caller");
                }
            })
        };
        run();
        let mut times: Vec<f64> = (0..3)
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let rate = n as f64 / times[1];
        println!("flumen hub, {callers} caller(s) × {per_call} texts per call: {rate:.0} texts/s");
        ours.push((callers, per_call, rate));
    }
    let file = dir.path().join("texts.txt");
    std::fs::write(&file, texts.join("\n")).expect("texts");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/peers/st_encode.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&file)
        .arg(folder.join("tokenizer.json"))
        .args(["--batch", &batch.to_string(), "--threads", &threads.to_string()])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout);
            let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_default();
            let theirs = v["per_s"].as_f64().unwrap_or(0.0);
            println!("{}: {theirs:.0} texts/s\n", v["engine"].as_str().unwrap_or("sentence-transformers"));
            for (callers, per_call, rate) in ours {
                println!("flumen ({callers} caller(s) × {per_call}) / sentence-transformers: {:.2}×", rate / theirs);
            }
        }
        Ok(o) => eprintln!(
            "sentence-transformers not run: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        ),
        Err(e) => eprintln!("sentence-transformers not run: {e}"),
    }
}
