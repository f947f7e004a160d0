//! Counters of a running job, per node, and the summary printed at its end.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use flumen_dataflow::NodeKind;
use flumen_types::NodeId;

/// Counters of one node, shared by its subtasks.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    pub batches_in: AtomicU64,
    pub batches_out: AtomicU64,
    /// Time spent in the node's own work (reading, guest calls, writing).
    pub busy_ns: AtomicU64,
    /// Bytes copied into guest memory (input buffers).
    pub guest_bytes_in: AtomicU64,
    /// Bytes copied out of guest memory (emitted buffers).
    pub guest_bytes_out: AtomicU64,
    /// Blob bytes copied into guest memory (`blobs` reads).
    pub blob_bytes_read: AtomicU64,
    /// Blob bytes copied out of guest memory (blobs the guest made).
    pub blob_bytes_created: AtomicU64,
    /// Failed guest calls (traps, limits, returned errors).
    pub failures: AtomicU64,
    /// Fresh instances made to retry a batch.
    pub retries: AtomicU64,
    /// Rows sent to a dead-letter sink.
    pub dead_lettered_rows: AtomicU64,
    /// Instances replaced between batches (`limits.recycle_*`).
    pub recycled: AtomicU64,
    /// Time its subtasks waited for room in a full output channel: backpressure from downstream.
    pub backpressure_ns: AtomicU64,
}

impl NodeMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Every node's counters.
#[derive(Debug)]
pub struct JobMetrics {
    pub nodes: Vec<(NodeId, NodeKind, Arc<NodeMetrics>)>,
    /// Each region's counters, once the run has started it (for scrapes while it runs).
    pub(crate) regions: std::sync::Mutex<Vec<Arc<RegionMetrics>>>,
    /// The job's models, whose batchers count calls, batch sizes and queue times.
    pub(crate) models: Option<Arc<flumen_inference::ModelHub>>,
}

/// A model's inference counters: what its batcher saw. A loaded model is shared by every job
/// of the process that uses it, and so are these counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStats {
    pub model: String,
    pub calls: u64,
    pub rows: u64,
    pub batches: u64,
    /// Calls' time from being queued to their batch starting, summed.
    pub queue_seconds: f64,
    pub queue_max_seconds: f64,
    /// Rows queued now.
    pub queued_rows: u64,
}

/// A point-in-time view of a node's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSummary {
    pub id: NodeId,
    pub kind: NodeKind,
    pub rows_in: u64,
    pub rows_out: u64,
    pub batches_in: u64,
    pub batches_out: u64,
    pub busy: Duration,
    pub guest_bytes_in: u64,
    pub guest_bytes_out: u64,
    pub blob_bytes_read: u64,
    pub blob_bytes_created: u64,
    pub failures: u64,
    pub retries: u64,
    pub dead_lettered_rows: u64,
    pub recycled: u64,
}

impl JobMetrics {
    /// Each model the job's operators used, with its batcher's counters.
    pub fn models(&self) -> Vec<ModelStats> {
        let n = |c: &AtomicU64| c.load(Relaxed);
        self.models
            .iter()
            .flat_map(|hub| hub.used())
            .map(|m| {
                let s = m.stats();
                ModelStats {
                    model: m.info.name.clone(),
                    calls: n(&s.calls),
                    rows: n(&s.rows),
                    batches: n(&s.batches),
                    queue_seconds: n(&s.queue_ns) as f64 / 1e9,
                    queue_max_seconds: n(&s.queue_max_ns) as f64 / 1e9,
                    queued_rows: n(&s.queued_rows),
                }
            })
            .collect()
    }

    /// The counters of the regions this run started (checkpoints, restarts), live.
    pub fn regions(&self) -> Vec<Arc<RegionMetrics>> {
        self.regions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn snapshot(&self) -> Vec<NodeSummary> {
        self.nodes
            .iter()
            .map(|(id, kind, m)| NodeSummary {
                id: id.clone(),
                kind: *kind,
                rows_in: m.rows_in.load(Relaxed),
                rows_out: m.rows_out.load(Relaxed),
                batches_in: m.batches_in.load(Relaxed),
                batches_out: m.batches_out.load(Relaxed),
                busy: Duration::from_nanos(m.busy_ns.load(Relaxed)),
                guest_bytes_in: m.guest_bytes_in.load(Relaxed),
                guest_bytes_out: m.guest_bytes_out.load(Relaxed),
                blob_bytes_read: m.blob_bytes_read.load(Relaxed),
                blob_bytes_created: m.blob_bytes_created.load(Relaxed),
                failures: m.failures.load(Relaxed),
                retries: m.retries.load(Relaxed),
                dead_lettered_rows: m.dead_lettered_rows.load(Relaxed),
                recycled: m.recycled.load(Relaxed),
            })
            .collect()
    }

    /// One line for a progress display: rows read by sources and written by sinks.
    pub fn progress_line(&self, elapsed: Duration) -> String {
        let snap = self.snapshot();
        let read: u64 = snap.iter().filter(|n| n.kind == NodeKind::Source).map(|n| n.rows_out).sum();
        let written: u64 = snap.iter().filter(|n| n.kind == NodeKind::Sink).map(|n| n.rows_in).sum();
        let secs = elapsed.as_secs_f64().max(1e-9);
        format!(
            "{:>6.1} s | read {} rows ({}/s) | written {} rows",
            elapsed.as_secs_f64(),
            human(read),
            human((read as f64 / secs) as u64),
            human(written)
        )
    }
}

/// What a finished job did.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub job: String,
    pub elapsed: Duration,
    pub nodes: Vec<NodeSummary>,
    /// Files the sinks made visible (jobs without checkpoints; with them,
    /// part files are published at every checkpoint).
    pub files: Vec<std::path::PathBuf>,
    /// Checkpoints and restarts of each pipelined region.
    pub regions: Vec<RegionSummary>,
    /// The blob store at the end of the run (before it released what no checkpoint needs).
    pub blobs: flumen_blob::BlobStats,
    /// One line per model the job's operators called: calls, batches and
    /// their sizes, queue and busy time.
    pub models: Vec<String>,
}

/// Counters of one pipelined region.
#[derive(Debug, Default)]
pub struct RegionMetrics {
    pub name: String,
    pub restarts: AtomicU64,
    pub completed: AtomicU64,
    pub aborted: AtomicU64,
    /// Damaged checkpoints skipped when restoring.
    pub rejected: AtomicU64,
    pub last_checkpoint: AtomicU64,
    pub last_duration_us: AtomicU64,
    pub max_duration_us: AtomicU64,
    pub last_bytes: AtomicU64,
}

impl RegionMetrics {
    pub(crate) fn new(name: &str) -> Self {
        Self { name: name.to_string(), ..Default::default() }
    }
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Relaxed)
    }
    pub(crate) fn add_restart(&self) {
        self.restarts.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_aborted(&self) {
        self.aborted.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_completed(&self, checkpoint: u64, took: Option<Duration>, bytes: u64) {
        self.completed.fetch_add(1, Relaxed);
        self.last_checkpoint.store(checkpoint, Relaxed);
        let us = took.map_or(0, |d| d.as_micros() as u64);
        self.last_duration_us.store(us, Relaxed);
        self.max_duration_us.fetch_max(us, Relaxed);
        self.last_bytes.store(bytes, Relaxed);
    }
    pub fn snapshot(&self) -> RegionSummary {
        RegionSummary {
            name: self.name.clone(),
            restarts: self.restarts.load(Relaxed),
            checkpoints: self.completed.load(Relaxed),
            aborted: self.aborted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            last_checkpoint: self.last_checkpoint.load(Relaxed),
            last_duration: Duration::from_micros(self.last_duration_us.load(Relaxed)),
            max_duration: Duration::from_micros(self.max_duration_us.load(Relaxed)),
            last_bytes: self.last_bytes.load(Relaxed),
        }
    }
}

/// What a region did: checkpoints completed and aborted, restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSummary {
    pub name: String,
    pub restarts: u64,
    pub checkpoints: u64,
    pub aborted: u64,
    pub rejected: u64,
    pub last_checkpoint: u64,
    pub last_duration: Duration,
    /// The longest checkpoint of the run, trigger to commit.
    pub max_duration: Duration,
    /// Bytes written for the last checkpoint (new files only: deltas are incremental).
    pub last_bytes: u64,
}

impl JobSummary {
    pub fn node(&self, id: &str) -> Option<&NodeSummary> {
        self.nodes.iter().find(|n| n.id.as_str() == id)
    }

    /// A table of every node: rows and batches in and out, busy time,
    /// throughput, bytes across the guest boundary, failures.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(out, "job `{}` finished in {:.3} s", self.job, self.elapsed.as_secs_f64());
        let _ = writeln!(
            out,
            "{:<10} {:<16} {:>12} {:>12} {:>9} {:>9} {:>10} {:>12} {:>10} {:>10} {:>8}",
            "kind",
            "node",
            "rows in",
            "rows out",
            "batch in",
            "batch out",
            "busy s",
            "rows/s",
            "guest in",
            "guest out",
            "failed"
        );
        for n in &self.nodes {
            let rows = if n.kind == NodeKind::Source { n.rows_out } else { n.rows_in };
            let _ = writeln!(
                out,
                "{:<10} {:<16} {:>12} {:>12} {:>9} {:>9} {:>10.3} {:>12} {:>10} {:>10} {:>8}",
                n.kind.to_string(),
                n.id.as_str(),
                n.rows_in,
                n.rows_out,
                n.batches_in,
                n.batches_out,
                n.busy.as_secs_f64(),
                human((rows as f64 / secs) as u64),
                bytes(n.guest_bytes_in),
                bytes(n.guest_bytes_out),
                n.failures,
            );
            if n.blob_bytes_read > 0 || n.blob_bytes_created > 0 {
                let _ = writeln!(
                    out,
                    "{:<27} blob bytes read into the guest: {}, made by it: {}",
                    "",
                    bytes(n.blob_bytes_read),
                    bytes(n.blob_bytes_created)
                );
            }
            if n.retries > 0 || n.dead_lettered_rows > 0 {
                let _ =
                    writeln!(out, "{:<27} retries: {}, dead-lettered rows: {}", "", n.retries, n.dead_lettered_rows);
            }
            if n.recycled > 0 {
                let _ = writeln!(out, "{:<27} instances recycled: {}", "", n.recycled);
            }
        }
        for r in &self.regions {
            if r.checkpoints == 0 && r.restarts == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "region {}: {} checkpoints (last #{}, {:.1} ms, {}; longest {:.1} ms), {} aborted, {} restarts",
                r.name,
                r.checkpoints,
                r.last_checkpoint,
                r.last_duration.as_secs_f64() * 1e3,
                bytes(r.last_bytes),
                r.max_duration.as_secs_f64() * 1e3,
                r.aborted,
                r.restarts
            );
        }
        let b = &self.blobs;
        if b.created > 0 {
            let _ = writeln!(
                out,
                "blobs: {} ({}) referenced, {} read by guests and sinks, peak {} in memory of a {} budget, {} spilled ({})",
                b.created,
                bytes(b.bytes_created),
                bytes(b.bytes_read),
                bytes(b.peak_memory_bytes),
                bytes(b.memory_budget),
                b.spilled,
                bytes(b.bytes_spilled)
            );
        }
        for m in &self.models {
            let _ = writeln!(out, "{m}");
        }
        for f in &self.files {
            let _ = writeln!(out, "wrote {}", f.display());
        }
        out
    }
}

fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1} K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} G", n as f64 / 1e9),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    }
}
