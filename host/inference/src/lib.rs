//! Inference as a host capability: the model repository (`repo`), the
//! engine-level dynamic batcher (`batcher`) and the process's loaded models
//! (`hub`), which implement the `inference` capability operators call. Names
//! no runtime: backends (ONNX Runtime on the CPU, CUDA later) come in through
//! `flumen_types::inference::InferenceBackend`.

pub mod batcher;
pub mod hub;
pub mod memo;
pub mod preprocess;
pub mod repo;

use std::sync::atomic::Ordering;

pub use batcher::{BatchPolicy, BatchStats, Batcher};
pub use hub::{BackendProvider, LoadedModel, ModelHub, check_inputs};
pub use memo::Memo;
pub use repo::{ModelConfig, ModelEntry, ModelRepository, RepoError};

/// One line for the run summary: calls, rows, batches with their size
/// histogram, queue time and backend busy time.
pub fn summary_line(model: &LoadedModel, memo: Option<&Memo>) -> String {
    let s = model.stats();
    let calls = s.calls.load(Ordering::Relaxed);
    let batches = s.batches.load(Ordering::Relaxed);
    let rows = s.rows.load(Ordering::Relaxed);
    let hist: Vec<String> = s.histogram().iter().map(|(le, n)| format!("≤{le}:{n}")).collect();
    let mean_queue_ms = if calls > 0 { s.queue_ns.load(Ordering::Relaxed) as f64 / calls as f64 / 1e6 } else { 0.0 };
    let mut line = format!(
        "model {} ({}, sha256:{}, {} on {}): {calls} calls, {rows} rows in {batches} batches (mean {:.1}; sizes {}), \
         queue mean {mean_queue_ms:.2} ms max {:.2} ms, busy {:.1} ms",
        model.info.name,
        model.entry.config.file,
        model.entry.short_digest(),
        model.backend,
        model.device,
        if batches > 0 { rows as f64 / batches as f64 } else { 0.0 },
        if hist.is_empty() { "-".to_owned() } else { hist.join(" ") },
        s.queue_max_ns.load(Ordering::Relaxed) as f64 / 1e6,
        s.busy_ns.load(Ordering::Relaxed) as f64 / 1e6,
    );
    for (what, n) in [
        ("deadline misses", s.deadline_misses.load(Ordering::Relaxed)),
        ("refused", s.refused.load(Ordering::Relaxed)),
        ("failed batches", s.failed_batches.load(Ordering::Relaxed)),
    ] {
        if n > 0 {
            line.push_str(&format!(", {n} {what}"));
        }
    }
    if let Some(m) = memo {
        let st = &m.stats;
        line.push_str(&format!(
            ", memo {} hits {} misses ({} remembered from earlier runs)",
            st.hits.load(Ordering::Relaxed),
            st.misses.load(Ordering::Relaxed),
            st.loaded.load(Ordering::Relaxed)
        ));
    }
    if let Some(note) = &model.fallback_note {
        line.push_str(&format!(" [{note}]"));
    }
    line
}
