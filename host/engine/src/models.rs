//! `flumen models`: what a model repository holds (`list`, without loading
//! anything) and what each model takes and gives (`inspect`, which loads it
//! with the backend its config names).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flumen_inference::{BackendProvider, ModelEntry, ModelHub, ModelRepository};
use flumen_types::inference::{Device, InferenceBackend, ModelHandle, TensorSpec};

use crate::EngineError;

/// The backends a model config may name, loaded on first use: ONNX Runtime
/// on the CPU (from `runtime`, else where `flumen_ort::find_library` looks),
/// and Flumen's CUDA executor for `device = "gpu"` (whose error, on a
/// machine without a usable GPU, is what the plan and summary report when a
/// model falls back to the CPU).
pub(crate) fn backends(runtime: Option<PathBuf>) -> BackendProvider {
    Arc::new(move |backend: &str, device| match (device, backend) {
        (Device::Gpu, _) => flumen_gpu::GpuBackend::load().map(|b| b as Arc<dyn InferenceBackend>),
        (Device::Cpu, "onnxruntime") => flumen_ort::OrtBackend::load(runtime.as_deref())
            .map(|b| b as Arc<dyn InferenceBackend>)
            .map_err(|e| e.to_string()),
        (_, other) => Err(format!("unknown backend `{other}`")),
    })
}

fn repo_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Models(e.to_string())
}

/// One line per model: name, file, digest, size, backend, device, batching.
pub fn list_models(dir: &Path) -> Result<String, EngineError> {
    let repo = ModelRepository::open(dir).map_err(repo_error)?;
    let mut out = String::new();
    if repo.models.is_empty() {
        let _ = writeln!(out, "{}: no models (a model is a folder with a model.toml)", dir.display());
    }
    for m in repo.models.values() {
        let _ = writeln!(out, "{m}");
    }
    Ok(out)
}

fn spec_line(role: &str, s: &TensorSpec) -> String {
    format!("  {role:<9} {}: {} {}", s.name, s.dtype, s.shape_text())
}

/// Every model of `dir` (or only `name`), loaded: its signature, digest,
/// backend and serving settings. `runtime` names the ONNX Runtime library.
pub fn inspect_models(dir: &Path, name: Option<&str>, runtime: Option<&Path>) -> Result<String, EngineError> {
    let provider = backends(runtime.map(Path::to_path_buf));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let hub = ModelHub::open(dir, provider, threads).map_err(repo_error)?;
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_owned()],
        None => hub.repository().models.keys().cloned().collect(),
    };
    let mut out = String::new();
    for n in names {
        let m = hub.load(&n).map_err(repo_error)?;
        describe(&mut out, &m.entry, &m);
    }
    Ok(out)
}

fn describe(out: &mut String, e: &ModelEntry, m: &flumen_inference::LoadedModel) {
    let c = &e.config;
    let _ = writeln!(out, "{}  sha256:{}", e.name, e.digest);
    if let Some(d) = &c.description {
        let _ = writeln!(out, "  {d}");
    }
    let _ = writeln!(out, "  file      {} ({} bytes)", e.file.display(), e.file_size);
    let _ = writeln!(out, "  backend   {} on {}", m.backend, m.device);
    if let Some(note) = &m.fallback_note {
        let _ = writeln!(out, "  note      {note}");
    }
    let preferred: Vec<String> = c.targets().iter().map(|t| t.to_string()).collect();
    let _ = writeln!(
        out,
        "  batching  max_batch {}, preferred [{}], delay {} ms, {} instance(s), threads {}",
        c.max_batch,
        preferred.join(", "),
        c.max_queue_delay_ms,
        c.instances,
        if c.threads == 0 { "auto".to_owned() } else { c.threads.to_string() }
    );
    let _ = writeln!(
        out,
        "  admission max_call_rows {}, max_call_mb {}, max_queue_rows {}, deadline {}, memory {}",
        c.max_call_rows,
        c.max_call_mb,
        c.max_queue_rows,
        if c.deadline_ms == 0 { "none".to_owned() } else { format!("{} ms", c.deadline_ms) },
        if c.memory_mb == 0 { "no quota".to_owned() } else { format!("{} MiB", c.memory_mb) }
    );
    for s in &m.info().signature.inputs {
        let _ = writeln!(out, "{}", spec_line("input", s));
    }
    for s in &m.info().signature.outputs {
        let _ = writeln!(out, "{}", spec_line("output", s));
    }
    if let Some(labels) = &e.labels {
        let _ = writeln!(
            out,
            "  labels    {} ({})",
            labels.len(),
            labels.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
}
