//! W6/W7 on the GPU, model stage: ResNet-18 and a MiniLM-L6 encoder run by
//! Flumen's CUDA executor, each call from host tensors to host tensors (the
//! copies in and out included, as the batcher calls it), beside PyTorch on the
//! same GPU, model layout, batch size and sequence length
//! (`benches/peers/torch_models.py`), in one invocation. Prints images or
//! sentences per second for each and the ratio. Needs a GPU, the models
//! (`FLUMEN_BENCH_MODELS`: resnet18/ and minilm/ from tests/models/make_*.py)
//! and PyTorch (torchvision, transformers); says what is missing otherwise.
//!
//!     FLUMEN_BENCH_MODELS=target/models cargo bench -p flumen-gpu --bench executor
//!
//! `GPU_RESNET_BATCH` (32), `GPU_BERT_BATCH` (64), `GPU_SEQ` (128), `GPU_RUNS` (20).

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use flumen_gpu::GpuBackend;
use flumen_types::inference::{DType, Device, InferenceBackend, LoadRequest, Tensor};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let Some(models) = std::env::var_os("FLUMEN_BENCH_MODELS").map(PathBuf::from) else {
        eprintln!("skipped: set FLUMEN_BENCH_MODELS to a folder with resnet18/ and minilm/");
        return;
    };
    let gpu = match GpuBackend::load() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let (rb, bb, seq, runs) =
        (env("GPU_RESNET_BATCH", 32), env("GPU_BERT_BATCH", 64), env("GPU_SEQ", 128), env("GPU_RUNS", 20));
    println!("GPU: {}", gpu.device());
    let image = Tensor::from_f32(vec![rb, 3, 224, 224], &vec![0.25f32; rb * 3 * 224 * 224]).expect("tensor");
    let ids: Vec<i64> = (0..bb * seq).map(|i| 1000 + (i as i64 * 7919) % 28000).collect();
    let int = |v: &[i64]| {
        Tensor::new(DType::I64, vec![bb, seq], Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()))
            .expect("tensor")
    };
    let cases = [
        ("resnet18", rb, vec![image]),
        ("minilm", bb, vec![int(&ids), int(&vec![1; bb * seq]), int(&vec![0; bb * seq])]),
    ];
    let mut ours = Vec::new();
    for (name, batch, inputs) in &cases {
        let path = models.join(name).join("model.onnx");
        let req = LoadRequest { name, path: &path, device: Device::Gpu, threads: 1 };
        let mut model = gpu.load(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
        for _ in 0..3 {
            model.run(inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let times: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                model.run(inputs).expect("run");
                t.elapsed().as_secs_f64()
            })
            .collect();
        let t = median(times);
        println!("flumen-gpu {name}: batch {batch}, median {:.2} ms, {:.0}/s", t * 1e3, *batch as f64 / t);
        ours.push((name.to_string(), *batch as f64 / t));
        // Where the time goes: one more run with every node synchronized and timed.
        let graph = flumen_gpu::Graph::parse(&std::fs::read(&path).expect("model")).expect("graph");
        let mut exec = gpu.executor(graph).expect("executor");
        exec.run(inputs).expect("run");
        exec.set_profiling(true);
        let t = Instant::now();
        exec.run(inputs).expect("run");
        let total = t.elapsed();
        let ops: Vec<String> = exec
            .profile()
            .iter()
            .take(8)
            .map(|(op, n, d)| format!("{op} ×{n} {:.2} ms", d.as_secs_f64() * 1e3))
            .collect();
        println!(
            "  profile ({} convolutions; {:.2} ms synchronized): {}",
            exec.conv_path(),
            total.as_secs_f64() * 1e3,
            ops.join(", ")
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/peers/torch_models.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--resnet-batch", &rb.to_string(), "--bert-batch", &bb.to_string(), "--seq", &seq.to_string()])
        .args(["--runs", &runs.to_string()])
        .output();
    let Ok(out) = out.map_err(|e| eprintln!("PyTorch baseline not run: {e}")) else { return };
    if !out.status.success() {
        eprintln!("PyTorch baseline failed:\n{}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    println!("\n| model | engine | batch | per second | flumen-gpu / this |\n|---|---|---|---|---|");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let model = v["model"].as_str().unwrap_or_default();
        let per_s = v["per_s"].as_f64().unwrap_or(0.0);
        let mine = ours.iter().find(|(n, _)| *n == model).map_or(0.0, |(_, v)| *v);
        println!(
            "| {model} | {} | {} | {per_s:.0} | {:.2}× |",
            v["engine"].as_str().unwrap_or_default(),
            v["batch"],
            mine / per_s
        );
    }
    for (name, v) in &ours {
        println!("| {name} | flumen-gpu | | {v:.0} | 1.00× |");
    }
}
