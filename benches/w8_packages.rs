//! W8: live upgrades and operator packages — how long a swap takes and what it costs a running
//! job, and how long a 10 MB component takes from a registry to its first instance.
//!
//! Part 1, **swap** (for each checkpoint interval in `W8_INTERVALS_MS`, default 100 and 1000):
//!
//! 1. A job run in this process through `flumen_engine`: an unthrottled generator (`key` over
//!    10 000 keys, `seq`) → the `keyed-counter` test guest (counts in host state, `tag` set,
//!    parallelism 2, hash-partitioned on `key`) → a JSONL sink (exactly once: part files
//!    published per checkpoint, parallelism 2), 1024-row batches.
//! 2. The baseline beside it: the same job, run the same way, with no upgrade, for `W8_BASE_S`
//!    (6) seconds after a warm-up second, once before the swaps and once after; its written
//!    rows (the sinks' `rows_in`, what `flumen run`'s progress line calls "written") are
//!    sampled every 10 ms.
//! 3. Then the same job again, with `W8_SWAPS` upgrades of `count` through
//!    [`JobControl::upgrade`], one at a time: the same component, the config alternating
//!    between `tag = "v1"` and `tag = "v2"`, the default probation (8 healthy batches). Before
//!    each, a pause of 2 s plus a seeded random part of one interval, so that requests fall at
//!    every phase of the checkpoint clock and no two swaps share a ±1 s window.
//! 4. Per swap: `swap_ms` and `confirmed_ms` from [`UpgradeOutcome::Applied`], and the engine's
//!    own log events, timed by a `tracing` layer in this process: request → "upgrade checked"
//!    (compile, here from the in-memory cache as it is the running component, and one trial
//!    instance) → "upgrade armed" at the next checkpoint trigger (a wait uniform over one
//!    interval when no checkpoint is in flight, interval/2 on average) → each subtask's
//!    "swapped to the new version" (its barrier arrived, it snapshotted with the old version,
//!    opened the new one and restored into it; its next batch goes to the new version). The
//!    swap, as measured here, is request → the last subtask swapped. The engine's `swap_ms` is
//!    printed beside it: it stops at the first batch any subtask of the operator processes
//!    after the trigger, which can still be the old version's (see RESULTS.md). The swap
//!    checkpoint's duration (trigger to commit, the "checkpoint complete" event) against the
//!    other checkpoints' and the baseline's.
//! 5. Throughput: written rows/s in the ±1 s window around each swap (the last subtask's
//!    swap), against the baseline's 2 s windows (median), and the longest time the written-
//!    rows counter did not move in each window (at 10 ms resolution).
//!
//! Part 2, **pull to ready** of `target/plugins/map.wasm` (the built-in `map` plugin, 10.7 MB):
//!
//! 1. Setup, untimed, with the `flumen` binary of the same build: `plugin keygen`, `plugin
//!    package` (name `map`, 1.0.0), `plugin sign`, `plugin publish` to a real OCI registry
//!    (Debian's `docker-registry serve` on a free local port, as `host/registry/tests/oci.rs`
//!    starts it) when `docker-registry` is on `PATH`, else to a directory registry; the
//!    report says which (`W8_REGISTRY=dir` forces the directory).
//! 2. `W8_COLD_ROUNDS` cold rounds, each into a fresh local store and an empty compiled-
//!    component cache, each step timed: pull (`flumen_registry::OciRegistry::pull`: transfer and
//!    the blobs' digests) → verify (the package directory rebuilt from the artifact as `flumen
//!    plugin pull` does, `Package::read_dir`: canonical manifest and component digest, then
//!    the trust policy: the ed25519 signature) → store (`DirRegistry::publish` into the local
//!    store) → compile (`WasmRuntime::load_component`, Cranelift, into the empty cache) →
//!    first instance (`OperatorFactory::new`, then `instantiate` with W1's gcd config, which
//!    runs the guest's `open`). Beside it in each round: reading the same component file and
//!    hashing it with SHA-256, the I/O floor; and the whole `flumen plugin pull` process into
//!    another fresh store, as a check that the steps above are what the CLI does.
//! 3. `W8_CACHED_ROUNDS` cached rounds on a fresh `WasmRuntime` over the warm cache and store,
//!    the engine's path: read by digest (`DirRegistry::by_digest`, which checks the component
//!    digest) → trust policy → load from the compiled cache → first instance. Beside it: the
//!    component read + SHA-256, the cached artifact read + XXH3 (what the cache check reads),
//!    and `Engine::load_package` on a fresh engine (the engine's own read-by-digest + trust +
//!    cached load), as a check.
//!
//! Nothing here asserts on a timing. The OS page cache is warm throughout (nothing is
//! dropped), so "cold" means no local package and no compiled artifact, not a cold disk.
//! `W8_PARTS` (`swap,pull`) picks the parts. Under `cargo test --benches` (no `--bench`
//! argument) everything runs once, small, as a smoke test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flumen_engine::{
    Engine, EngineError, EngineOptions, JobControl, NodeMetrics, PackageOptions, RunOptions, UpgradeOutcome,
    UpgradeRequest,
};
use flumen_package::{DirRegistry, Package, Signature, TrustPolicy};
use flumen_registry::{OciOptions, OciRegistry};
use flumen_types::OperatorLimits;
use flumen_wasm::{Capabilities, OperatorFactory, RuntimeConfig, WasmRuntime};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

// Builds the plugins and test guests this benchmark uses.
#[path = "../host/cli/src/guests.rs"]
mod guests;

#[path = "common/process.rs"]
#[allow(dead_code, reason = "this bench uses `env_or` and `target_dir` of the shared process helpers")]
mod process;

#[path = "common/stats.rs"]
mod stats;

// W1's int32 schema and open context: the `map` plugin opened with the gcd config.
#[path = "common/w1.rs"]
mod w1;

use process::env_or;
use stats::{max, median, min};

/// Keys of the generator: the counter's state holds this many.
const KEYS: u64 = 10_000;
/// Rows per batch of the swap job.
const BATCH_ROWS: u64 = 1024;
/// How often the written-rows counter is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Half the throughput window around a swap; two of them are the shortest pause between swaps.
const HALF_WINDOW: Duration = Duration::from_secs(1);

fn main() {
    let started = Instant::now();
    guests::ensure_all();
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let parts = std::env::var("W8_PARTS").unwrap_or_else(|_| "swap,pull".into());
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("w8");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("the bench's work directory");
    let recorder = Recorder::install();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    println!(
        "W8 on {} CPUs (guest components checked or built in {:.0} s)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );

    if parts.contains("swap") {
        let intervals: Vec<u64> = list_env("W8_INTERVALS_MS", if bench_mode { "100,1000" } else { "100" });
        let swaps: Vec<u64> = list_env("W8_SWAPS", if bench_mode { "30,10" } else { "2" });
        let base = Duration::from_secs_f64(env_or("W8_BASE_S", if bench_mode { 6.0 } else { 2.0 }));
        for (i, &interval_ms) in intervals.iter().enumerate() {
            let n = swaps.get(i).or(swaps.last()).copied().unwrap_or(10) as usize;
            swap_part(&rt, &recorder, &work, interval_ms, n, base);
        }
    }
    if parts.contains("pull") {
        let cold = env_or("W8_COLD_ROUNDS", if bench_mode { 3 } else { 1 });
        let cached = env_or("W8_CACHED_ROUNDS", if bench_mode { 15 } else { 2 });
        pull_part(&rt, &work, cold, cached);
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("(the whole bench: {:.0} s)", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// Part 1: swaps

/// One upgrade, as the bench saw it.
struct Swap {
    requested: Instant,
    answered: Instant,
    checkpoint: u64,
    swap_ms: f64,
    confirmed_ms: f64,
}

/// What one run of the swap job recorded.
struct RunRecord {
    /// The written-rows counter, every [`SAMPLE_EVERY`].
    samples: Vec<(Instant, u64)>,
    /// When the measured part began (after the warm-up).
    measured_from: Instant,
    swaps: Vec<Swap>,
    marks: Vec<Mark>,
}

fn swap_part(rt: &Runtime, recorder: &Recorder, work: &Path, interval_ms: u64, swaps: usize, base: Duration) {
    let counter = Path::new(env!("FLUMEN_TEST_GUEST_DIR")).join("keyed-counter.wasm");
    assert!(counter.is_file(), "{} is missing although the guests were built", counter.display());
    let engine = Engine::new(EngineOptions {
        plugin_dirs: vec![PathBuf::from(env!("FLUMEN_PLUGIN_DIR"))],
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache")),
        packages: None,
    })
    .expect("engine");
    let started = Instant::now();
    // The baseline runs before and after, so that a machine getting busier or quieter shows.
    let before = rt.block_on(run_swap_job(&engine, recorder, work, &counter, interval_ms, 0, base));
    let upgraded = rt.block_on(run_swap_job(&engine, recorder, work, &counter, interval_ms, swaps, base));
    let after = rt.block_on(run_swap_job(&engine, recorder, work, &counter, interval_ms, 0, base));
    report_swaps(interval_ms, [&before, &after], &upgraded);
    println!("(part took {:.0} s)\n", started.elapsed().as_secs_f64());
}

async fn run_swap_job(
    engine: &Engine,
    recorder: &Recorder,
    work: &Path,
    counter: &Path,
    interval_ms: u64,
    swaps: usize,
    base: Duration,
) -> RunRecord {
    let dir = work.join(format!("swap-{interval_ms}-{}", if swaps == 0 { "base" } else { "upgrades" }));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("job dir");
    let job = dir.join("job.toml");
    std::fs::write(&job, swap_job_text(interval_ms, counter)).expect("write the job");
    let prepared = engine.prepare(&job).await.expect("prepare the swap job");
    let written = sink_metrics(&prepared.metrics(), "out");
    let control = JobControl::new();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = RunOptions { control: Some(control.clone()), ..Default::default() };
    recorder.take();
    let sampler = Sampler::start(written);
    let run = tokio::spawn(prepared.run_with(options, async move {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let measured_from = Instant::now();
    let mut done = Vec::new();
    if swaps == 0 {
        tokio::time::sleep(base).await;
    }
    let mut rng = w1::Rng(0x5eed_0008 ^ interval_ms);
    for i in 0..swaps {
        // The previous swap's window closes before this one's opens.
        tokio::time::sleep(HALF_WINDOW * 2 + Duration::from_millis(rng.below(interval_ms.max(1)))).await;
        let tag = if i % 2 == 0 { "v1" } else { "v2" };
        let mut request = UpgradeRequest::new("count", counter.to_path_buf(), format!("keyed-counter ({tag})"));
        request.config_json = Some(format!(r#"{{"key": "key", "tag": "{tag}"}}"#));
        let requested = Instant::now();
        let outcome = control.upgrade(request).await.expect("the upgrade is taken");
        let UpgradeOutcome::Applied { checkpoint, swap_ms, confirmed_ms } = outcome else {
            panic!("swap {i} was not applied: {outcome:?}");
        };
        done.push(Swap { requested, answered: Instant::now(), checkpoint, swap_ms, confirmed_ms });
    }
    if swaps > 0 {
        // The last swap's window closes.
        tokio::time::sleep(HALF_WINDOW + SAMPLE_EVERY * 2).await;
    }
    let _ = stop_tx.send(());
    match run.await.expect("the job task") {
        Ok(_) | Err(EngineError::Stopped { .. }) => {}
        Err(e) => panic!("the swap job failed: {e}"),
    }
    let samples = sampler.stop();
    let marks = recorder.take();
    let _ = std::fs::remove_dir_all(&dir);
    RunRecord { samples, measured_from, swaps: done, marks }
}

fn swap_job_text(interval_ms: u64, counter: &Path) -> String {
    format!(
        r#"
[job]
name = "w8-swap"
batch_rows = {BATCH_ROWS}

[checkpoint]
interval_ms = {interval_ms}
dir = "ck"
retain = 2

[[source]]
id = "gen"
kind = "generator"
parallelism = 1
rows = 1_000_000_000_000
columns = [
  {{ name = "key", gen = "modulo", modulus = {KEYS} }},
  {{ name = "seq", gen = "divide", divisor = {KEYS} }},
]

[[operator]]
id = "count"
plugin = "{}"
parallelism = 2
capabilities = ["log", "state"]
inputs = [{{ from = "gen", partition = "hash", keys = ["key"] }}]
config = {{ key = "key", tag = "v0" }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
parallelism = 2
inputs = ["count"]
"#,
        counter.display()
    )
}

/// The counters of node `id` (the sink's `rows_in` is what the job wrote).
fn sink_metrics(metrics: &flumen_engine::JobMetrics, id: &str) -> Arc<NodeMetrics> {
    metrics
        .nodes
        .iter()
        .find(|(node, _, _)| node.as_str() == id)
        .map(|(_, _, m)| m.clone())
        .unwrap_or_else(|| panic!("the job has no node `{id}`"))
}

/// Samples a node's `rows_in` on its own thread (the runtime's two workers are busy).
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl Sampler {
    fn start(node: Arc<NodeMetrics>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::with_capacity(1 << 14);
            while !flag.load(Ordering::Relaxed) {
                samples.push((Instant::now(), node.rows_in.load(Ordering::Relaxed)));
                std::thread::sleep(SAMPLE_EVERY);
            }
            samples
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler thread")
    }
}

/// Written rows/s over `[from, to]`, and the longest time the counter did not move in it (ms,
/// at the sampling resolution).
fn window(samples: &[(Instant, u64)], from: Instant, to: Instant) -> Option<(f64, f64)> {
    let inside: Vec<&(Instant, u64)> = samples.iter().filter(|(t, _)| *t >= from && *t <= to).collect();
    let (first, last) = (inside.first()?, inside.last()?);
    let span = last.0.duration_since(first.0).as_secs_f64();
    if span < (to - from).as_secs_f64() * 0.9 {
        return None;
    }
    let rate = (last.1 - first.1) as f64 / span;
    let mut stall = 0.0f64;
    let mut since = first.0;
    let mut value = first.1;
    for (t, rows) in &inside[1..] {
        if *rows != value {
            stall = stall.max(t.duration_since(since).as_secs_f64() * 1e3);
            since = *t;
            value = *rows;
        }
    }
    stall = stall.max(last.0.duration_since(since).as_secs_f64() * 1e3);
    Some((rate, stall))
}

/// The baseline's consecutive windows of 2 × [`HALF_WINDOW`].
fn baseline_windows(run: &RunRecord) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut from = run.measured_from;
    let end = run.samples.last().map_or(from, |s| s.0);
    while from + HALF_WINDOW * 2 <= end {
        out.extend(window(&run.samples, from, from + HALF_WINDOW * 2));
        from += HALF_WINDOW * 2;
    }
    out
}

fn report_swaps(interval_ms: u64, baselines: [&RunRecord; 2], upgraded: &RunRecord) {
    let n = upgraded.swaps.len();
    println!("## Swap: checkpoints every {interval_ms} ms, {n} swaps (keyed-counter, parallelism 2)\n");
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
    let mut rows: [(&str, Vec<f64>); 8] = [
        ("request → checked (compile, from the in-memory cache here; one trial instance)", Vec::new()),
        ("checked → armed at the next checkpoint trigger", Vec::new()),
        ("trigger → first subtask swapped (barrier, old version snapshots, new one opens)", Vec::new()),
        ("trigger → last subtask swapped: the swap's own cost, after the wait", Vec::new()),
        ("**request → last subtask swapped: the swap, measured**", Vec::new()),
        ("`swap_ms` as the engine reports it (see the note)", Vec::new()),
        ("`confirmed_ms`: request → the checkpoint that confirmed it", Vec::new()),
        ("the swap's checkpoint, trigger → commit", Vec::new()),
    ];
    let mut swapped_at = Vec::new();
    for s in &upgraded.swaps {
        let marks: Vec<&Mark> = upgraded.marks.iter().filter(|m| m.at >= s.requested && m.at <= s.answered).collect();
        let find = |kind: MarkKind| marks.iter().find(|m| m.kind == kind).map(|m| m.at);
        let swaps: Vec<Instant> = marks.iter().filter(|m| m.kind == MarkKind::Swapped).map(|m| m.at).collect();
        rows[5].1.push(s.swap_ms);
        rows[6].1.push(s.confirmed_ms);
        if let Some(d) = checkpoint_ms(&upgraded.marks, s.checkpoint) {
            rows[7].1.push(d);
        }
        let (Some(checked), Some(armed), Some(first), Some(last)) =
            (find(MarkKind::Checked), find(MarkKind::Armed), swaps.first(), swaps.last())
        else {
            println!("(the swap at checkpoint {}: the engine's events were not all seen)", s.checkpoint);
            continue;
        };
        rows[0].1.push(ms(s.requested, checked));
        rows[1].1.push(ms(checked, armed));
        rows[2].1.push(ms(armed, *first));
        rows[3].1.push(ms(armed, *last));
        rows[4].1.push(ms(s.requested, *last));
        swapped_at.push(*last);
    }
    let swap_checkpoints: Vec<u64> = upgraded.swaps.iter().flat_map(|s| [s.checkpoint, s.checkpoint + 1]).collect();
    let durations = |run: &RunRecord, skip: &[u64]| -> Vec<f64> {
        run.marks
            .iter()
            .filter(|m| m.kind == MarkKind::CheckpointComplete && m.checkpoint.is_some_and(|c| !skip.contains(&c)))
            .filter_map(|m| m.ms.map(|v| v as f64))
            .collect()
    };
    let ordinary = durations(upgraded, &swap_checkpoints);
    let base_ckpt: Vec<f64> = baselines.iter().flat_map(|b| durations(b, &[])).collect();

    println!("| ms, p50 / p99 / max | {n} swaps |");
    println!("|---|---|");
    for (i, (what, values)) in rows.iter().enumerate() {
        let note = if i == 1 { format!(" (expected ≈ {} on average)", interval_ms / 2) } else { String::new() };
        println!("| {what}{note} | {} |", pct(values));
    }
    println!("| other checkpoints of this run, trigger → commit ({}) | {} |", ordinary.len(), pct(&ordinary));
    println!("| the baseline's checkpoints, trigger → commit ({}) | {} |", base_ckpt.len(), pct(&base_ckpt));
    let within = rows[4].1.iter().filter(|v| **v <= interval_ms as f64).count();
    println!("\nswaps that took effect within one interval ({interval_ms} ms) of the request: {within} of {n}\n");

    let base: Vec<(f64, f64)> = baselines.iter().flat_map(|b| baseline_windows(b)).collect();
    let base_rates: Vec<f64> = base.iter().map(|w| w.0).collect();
    let base_stalls: Vec<f64> = base.iter().map(|w| w.1).collect();
    let base_rate = median(&base_rates);
    let mut rates = Vec::new();
    let mut lost = Vec::new();
    let mut stalls = Vec::new();
    for at in swapped_at {
        if let Some((rate, stall)) = window(&upgraded.samples, at - HALF_WINDOW, at + HALF_WINDOW) {
            rates.push(rate);
            lost.push((1.0 - rate / base_rate) * 2.0 * HALF_WINDOW.as_secs_f64() * 1e3);
            stalls.push(stall);
        }
    }
    let ratios: Vec<f64> = rates.iter().map(|r| r / base_rate).collect();
    println!("| written rows | median (min–max) |");
    println!("|---|---|");
    for (when, b) in ["before", "after"].iter().zip(baselines) {
        let rates: Vec<f64> = baseline_windows(b).iter().map(|w| w.0).collect();
        println!("| baseline {when} the swaps, rows/s per 2 s window ({}) | {} |", rates.len(), spread(&rates, 0));
    }
    println!("| baseline, both runs ({} windows) | {} |", base.len(), spread(&base_rates, 0));
    println!("| ±1 s around each swap, rows/s ({}) | {} |", rates.len(), spread(&rates, 0));
    println!("| … against the baseline's median | {} |", spread_x(&ratios));
    println!("| … rows lost, in ms of the baseline's output | {} |", spread(&lost, 0));
    println!("| longest stall of the counter, baseline windows (ms) | {} |", spread(&base_stalls, 0));
    println!("| longest stall, ±1 s around each swap (ms) | {} (p99 {:.0}) |", spread(&stalls, 0), p(&stalls, 0.99));
    println!();
}

/// The duration the engine logged for checkpoint `n` (trigger to commit, ms).
fn checkpoint_ms(marks: &[Mark], n: u64) -> Option<f64> {
    marks
        .iter()
        .find(|m| m.kind == MarkKind::CheckpointComplete && m.checkpoint == Some(n))
        .and_then(|m| m.ms)
        .map(|v| v as f64)
}

// ---------------------------------------------------------------------------
// The engine's log events, as timestamps

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkKind {
    Checked,
    Armed,
    /// A subtask opened the new version (and restored its memory), right after its snapshot.
    Swapped,
    CheckpointComplete,
}

#[derive(Debug, Clone)]
struct Mark {
    at: Instant,
    kind: MarkKind,
    checkpoint: Option<u64>,
    ms: Option<u64>,
}

/// A `tracing` layer that keeps the time of the engine's upgrade and checkpoint events.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Mark>>>);

impl Recorder {
    /// Installs itself (for `flumen_engine`'s info events) and a stderr printer of warnings.
    fn install() -> Recorder {
        use tracing_subscriber::filter::{LevelFilter, Targets};
        let recorder = Recorder::default();
        let subscriber = tracing_subscriber::registry()
            .with(recorder.clone().with_filter(Targets::new().with_target("flumen_engine", tracing::Level::INFO)))
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(LevelFilter::WARN));
        tracing::subscriber::set_global_default(subscriber).expect("no other tracing subscriber");
        recorder
    }

    fn take(&self) -> Vec<Mark> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let at = Instant::now();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let kind = match fields.message.as_str() {
            m if m.starts_with("upgrade checked") => MarkKind::Checked,
            m if m.starts_with("upgrade armed") => MarkKind::Armed,
            "swapped to the new version" => MarkKind::Swapped,
            "checkpoint complete" => MarkKind::CheckpointComplete,
            _ => return,
        };
        let mark = Mark { at, kind, checkpoint: fields.checkpoint, ms: fields.ms };
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(mark);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    checkpoint: Option<u64>,
    ms: Option<u64>,
}

impl tracing::field::Visit for Fields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "checkpoint" => self.checkpoint = Some(value),
            "ms" => self.ms = Some(value),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.record_u64(field, u64::try_from(value).unwrap_or(0));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Part 2: pull to ready

const PACKAGE_TOML: &str = r#"name = "map"
version = "1.0.0"
description = "Computes columns from SQL expressions (W8 benchmark package)"
license = "Apache-2.0"
capabilities = ["log"]
"#;

/// Where the package was published.
enum Remote {
    Oci { registry: OciServer, reference: String },
    Dir(PathBuf),
}

impl Remote {
    fn cli_source(&self) -> String {
        match self {
            Remote::Oci { registry, .. } => format!("oci://{}/flumen", registry.addr),
            Remote::Dir(dir) => format!("dir:{}", dir.display()),
        }
    }
}

/// Per-step times of one round, ms.
#[derive(Default)]
struct Steps(Vec<(&'static str, f64)>);

impl Steps {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.0.push((name, started.elapsed().as_secs_f64() * 1e3));
        out
    }

    fn total(&self) -> f64 {
        self.0.iter().map(|s| s.1).sum()
    }
}

fn pull_part(rt: &Runtime, work: &Path, cold_rounds: usize, cached_rounds: usize) {
    let map = Path::new(env!("FLUMEN_PLUGIN_DIR")).join("map.wasm");
    assert!(map.is_file(), "{} is missing: building the root package builds it", map.display());
    let component_bytes = std::fs::metadata(&map).expect("map.wasm").len();
    let root = work.join("pull");
    std::fs::create_dir_all(&root).expect("pull dir");
    let started = Instant::now();
    let trust_file = publish_setup(&root, &map);
    let trust = TrustPolicy::from_file(&trust_file).expect("the trust file");
    let digest = flumen_package::content_digest(&std::fs::read(root.join("pkg/manifest.json")).expect("manifest"));
    let remote = match std::env::var("W8_REGISTRY").as_deref() {
        Ok("dir") => None,
        _ => OciServer::start(),
    }
    .map(|registry| {
        let reference = format!("{}/flumen/map:1.0.0", registry.addr);
        Remote::Oci { registry, reference }
    })
    .unwrap_or_else(|| Remote::Dir(root.join("remote")));
    cli(
        &root,
        &root.join("publisher-store"),
        &trust_file,
        &["plugin", "publish", "pkg", "--registry", &remote.cli_source()],
    );
    let registry_kind = match &remote {
        Remote::Oci { .. } => "an OCI registry (docker-registry serve on 127.0.0.1, plain HTTP)",
        Remote::Dir(_) => "a directory registry (no docker-registry on PATH, or W8_REGISTRY=dir)",
    };
    println!("## Pull to ready: map.wasm, {:.1} MB, from {registry_kind}\n", component_bytes as f64 / 1e6);
    println!("(setup: package, sign, publish with the CLI, {:.0} s)\n", started.elapsed().as_secs_f64());

    let ctx = w1::open_ctx(
        "w8-map",
        serde_json::json!({ "columns": [{ "name": "g", "expr": "gcd(a, b)" }] }),
        &w1::int_schema(),
    );
    let oci = OciRegistry::new(OciOptions {
        insecure_http: match &remote {
            Remote::Oci { registry, .. } => vec![registry.addr.clone()],
            Remote::Dir(_) => Vec::new(),
        },
        ..OciOptions::default()
    });

    // Cold: a fresh store and an empty compiled-component cache per round.
    let mut cold: Vec<Steps> = Vec::new();
    let mut floor = Vec::new();
    let mut runtime_new = Vec::new();
    let mut cli_pull = Vec::new();
    let mut last = None;
    for round in 0..cold_rounds {
        let dir = root.join(format!("cold-{round}"));
        let (store_dir, cache) = (dir.join("store"), dir.join("cache"));
        let started = Instant::now();
        let runtime = WasmRuntime::new(RuntimeConfig { cache_dir: Some(cache.clone()), ..RuntimeConfig::default() })
            .expect("wasm runtime");
        runtime_new.push(started.elapsed().as_secs_f64() * 1e3);
        let store = DirRegistry::open(&store_dir).expect("the local store");
        let mut steps = Steps::default();
        let pkg = match &remote {
            Remote::Oci { reference, .. } => {
                let (artifact, _) = steps.time("pull", || rt.block_on(oci.pull(reference)).expect("OCI pull"));
                steps.time("verify", || {
                    let pkg = package_from_artifact(&artifact, store.root());
                    check_trusted(&trust, &pkg);
                    pkg
                })
            }
            Remote::Dir(remote) => {
                let pkg = steps.time("pull", || {
                    let v = semver::Version::new(1, 0, 0);
                    DirRegistry::open(remote).and_then(|r| r.get("map", &v)).expect("read the package")
                });
                steps.time("verify", || check_trusted(&trust, &pkg));
                pkg
            }
        };
        assert_eq!(pkg.digest(), digest, "the pulled package is the one published");
        steps.time("store", || store.publish(&pkg).expect("store the package"));
        let path = store.root().join("map/1.0.0/component.wasm");
        let loaded = steps.time("compile", || runtime.load_component(&path).expect("compile map.wasm"));
        assert!(!loaded.cached, "a cold round compiles");
        let factory = steps.time("factory", || {
            OperatorFactory::new(&runtime, &loaded, "w8-map", Capabilities::default(), OperatorLimits::default())
                .expect("link map.wasm")
        });
        let instance = steps.time("instantiate", || rt.block_on(factory.instantiate(&ctx)).expect("instantiate"));
        drop(instance);
        cold.push(steps);
        floor.push(read_and_hash(&path, HashKind::Sha256));
        let cli_store = dir.join("cli-store");
        let started = Instant::now();
        cli(&root, &cli_store, &trust_file, &["plugin", "pull", "map@1.0.0", "--registry", &remote.cli_source()]);
        cli_pull.push(started.elapsed().as_secs_f64() * 1e3);
        if let Some(previous) = last.replace(dir) {
            let _ = std::fs::remove_dir_all(previous);
        }
    }
    let warm = last.expect("at least one cold round");
    let (store_dir, cache) = (warm.join("store"), warm.join("cache"));
    let component = store_dir.join("map/1.0.0/component.wasm");
    let artifact = find_cwasm(&cache).expect("the compiled artifact in the cache");
    let artifact_bytes = std::fs::metadata(&artifact).map_or(0, |m| m.len());

    // Cached: already in the store and the compiled cache; a fresh runtime each round, so the
    // component comes from the disk cache, as in a new process.
    let mut cached: Vec<Steps> = Vec::new();
    let mut floor_component = Vec::new();
    let mut floor_artifact = Vec::new();
    let mut engine_load = Vec::new();
    for _ in 0..cached_rounds {
        let runtime = WasmRuntime::new(RuntimeConfig { cache_dir: Some(cache.clone()), ..RuntimeConfig::default() })
            .expect("wasm runtime");
        let store = DirRegistry::open(&store_dir).expect("the local store");
        let mut steps = Steps::default();
        let pkg = steps.time("read by digest", || store.by_digest(&digest).expect("read by digest"));
        steps.time("trust", || check_trusted(&trust, &pkg));
        let loaded = steps.time("cached compile", || runtime.load_component(&component).expect("load map.wasm"));
        assert!(loaded.cached, "a cached round finds the compiled artifact");
        let factory = steps.time("factory", || {
            OperatorFactory::new(&runtime, &loaded, "w8-map", Capabilities::default(), OperatorLimits::default())
                .expect("link map.wasm")
        });
        let instance = steps.time("instantiate", || rt.block_on(factory.instantiate(&ctx)).expect("instantiate"));
        drop(instance);
        cached.push(steps);
        floor_component.push(read_and_hash(&component, HashKind::Sha256));
        floor_artifact.push(read_and_hash(&artifact, HashKind::Xxh3));
        let engine = Engine::new(EngineOptions {
            plugin_dirs: Vec::new(),
            cache_dir: Some(cache.clone()),
            packages: Some(PackageOptions { store: store_dir.clone(), trust: Arc::new(trust.clone()) }),
        })
        .expect("engine");
        let started = Instant::now();
        let loaded = engine.load_package(&format!("map@{digest}")).expect("Engine::load_package");
        engine_load.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(loaded.cached, "the engine finds the compiled artifact");
    }

    let column = |rounds: &[Steps], name: &str| -> Vec<f64> {
        rounds.iter().flat_map(|r| r.0.iter().filter(|s| s.0 == name).map(|s| s.1)).collect()
    };
    let totals = |rounds: &[Steps]| -> Vec<f64> { rounds.iter().map(Steps::total).collect() };
    println!("Cold ({cold_rounds} rounds: fresh store, empty compiled cache), ms, median (min–max):\n");
    println!("| step | ms |");
    println!("|---|---|");
    for (name, what) in [
        ("pull", "pull (transfer; the blobs' SHA-256 checked)"),
        ("verify", "verify (package rebuilt; manifest and component digest; ed25519 signature, trust policy)"),
        ("store", "store (published into the local store)"),
        ("compile", "compile (Cranelift, empty cache; writes the artifact)"),
        ("factory", "link (`OperatorFactory::new`)"),
        ("instantiate", "first instance (`instantiate`, the guest's `open`)"),
    ] {
        println!("| {what} | {} |", spread(&column(&cold, name), 1));
    }
    let cold_totals = totals(&cold);
    println!("| **total, pull to ready** | **{}** |", spread(&cold_totals, 1));
    println!("| baseline: read the component + SHA-256 (I/O floor) | {} |", spread(&floor, 1));
    let ratio: Vec<f64> = cold_totals.iter().zip(&floor).map(|(t, f)| t / f).collect();
    println!("| total / floor | {} |", spread_x(&ratio));
    println!("| check: the whole `flumen plugin pull` process (no compile) | {} |", spread(&cli_pull, 1));
    println!("| not in the total: `WasmRuntime::new` (once per process) | {} |", spread(&runtime_new, 1));
    println!();
    println!(
        "Cached ({cached_rounds} rounds: in the store and the compiled cache, fresh runtime), ms; artifact {:.1} MB:\n",
        artifact_bytes as f64 / 1e6
    );
    println!("| step | ms |");
    println!("|---|---|");
    for (name, what) in [
        ("read by digest", "read by digest (manifest, component, digest check)"),
        ("trust", "trust policy (ed25519 signature)"),
        ("cached compile", "load from the compiled cache (component SHA-256, artifact XXH3, map)"),
        ("factory", "link (`OperatorFactory::new`)"),
        ("instantiate", "first instance (`instantiate`, the guest's `open`)"),
    ] {
        println!("| {what} | {} |", spread(&column(&cached, name), 2));
    }
    let cached_totals = totals(&cached);
    println!("| **total, cached to ready** | **{}** |", spread(&cached_totals, 2));
    println!("| baseline: read the component + SHA-256 | {} |", spread(&floor_component, 2));
    println!("| baseline: read the cached artifact + XXH3 | {} |", spread(&floor_artifact, 2));
    let rest = median(&column(&cached, "cached compile")) - median(&floor_component) - median(&floor_artifact);
    println!("| derived: the cached load's median less both floors' (wasmtime's deserialize, map) | {rest:.2} |");
    let ratio: Vec<f64> =
        cached_totals.iter().zip(floor_component.iter().zip(&floor_artifact)).map(|(t, (c, a))| t / (c + a)).collect();
    println!("| total / (both floors) | {} |", spread_x(&ratio));
    println!("| check: `Engine::load_package` (read by digest + trust + cached load) | {} |", spread(&engine_load, 2));
    println!();
}

/// Writes a package of `map.wasm`, a key, a trust file trusting it, and signs the package, with
/// the `flumen` binary. Returns the trust file.
fn publish_setup(root: &Path, map: &Path) -> PathBuf {
    std::fs::write(root.join("package.toml"), PACKAGE_TOML).expect("package.toml");
    let trust = root.join("trust.toml");
    std::fs::write(&trust, "[[key]]\nname = \"acme\"\npublic_key = \"acme.pub.pem\"\npackages = [\"*\"]\n")
        .expect("trust.toml");
    let store = root.join("publisher-store");
    cli(root, &store, &trust, &["plugin", "keygen", "--out", "acme"]);
    let map = map.to_str().expect("a UTF-8 path");
    cli(root, &store, &trust, &["plugin", "package", ".", "--component", map, "--out", "pkg"]);
    cli(root, &store, &trust, &["plugin", "sign", "pkg", "--key", "acme.pem"]);
    trust
}

/// Runs `flumen args…` in `dir` with its own store and trust file; it must succeed.
fn cli(dir: &Path, store: &Path, trust: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(args)
        .current_dir(dir)
        .env("FLUMEN_REGISTRY", store)
        .env("FLUMEN_TRUST", trust)
        .env("FLUMEN_CACHE_DIR", dir.join("cli-cache"))
        .env_remove("FLUMEN_ALLOW_UNSIGNED")
        .env_remove("FLUMEN_OCI_INSECURE")
        .env_remove("FLUMEN_OCI_USERNAME")
        .env_remove("FLUMEN_OCI_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("cannot start the flumen binary");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "flumen {} failed:\n{}{}", args.join(" "), text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// What `flumen plugin pull` does with an artifact (`host/cli/src/packages.rs`): the package
/// directory rebuilt from the annotations and the layer in a temporary directory inside the
/// store, then read back verified (canonical manifest, the component's digest and size).
fn package_from_artifact(artifact: &flumen_registry::Artifact, store: &Path) -> Package {
    let manifest = artifact.annotations.get("dev.flumen.package.manifest").expect("a Flumen package");
    let signatures: Vec<Signature> = artifact
        .annotations
        .get("dev.flumen.package.signatures")
        .map(|s| serde_json::from_str(s).expect("signature records"))
        .unwrap_or_default();
    let temp = tempfile::Builder::new().prefix(".pull-").tempdir_in(store).expect("a temporary directory");
    let dir = temp.path();
    std::fs::write(dir.join("manifest.json"), manifest).expect("write");
    std::fs::write(dir.join("component.wasm"), &artifact.component).expect("write");
    std::fs::create_dir_all(dir.join("signatures")).expect("mkdir");
    for s in &signatures {
        let mut bytes = serde_json::to_vec_pretty(s).expect("a signature record");
        bytes.push(b'\n');
        std::fs::write(dir.join("signatures").join(format!("{}.json", s.key_id)), bytes).expect("write");
    }
    let pkg = Package::read_dir(dir).expect("the pulled package verifies");
    let m = pkg.manifest();
    assert!(m.name == "map" && m.version == semver::Version::new(1, 0, 0), "the package asked for");
    pkg
}

fn check_trusted(trust: &TrustPolicy, pkg: &Package) {
    trust.check(pkg).unwrap_or_else(|e| panic!("the trust policy refuses the package: {e}"));
}

enum HashKind {
    Sha256,
    Xxh3,
}

/// Reads a file through a 256 KiB buffer and hashes it, as the runtime checks a component or a
/// cached artifact: the floor of any step that must read and check it. Ms.
fn read_and_hash(path: &Path, kind: HashKind) -> f64 {
    let started = Instant::now();
    let mut file = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 256 * 1024];
    let mut sha = Sha256::new();
    let mut xxh = xxhash_rust::xxh3::Xxh3::new();
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        match kind {
            HashKind::Sha256 => sha.update(&buf[..n]),
            HashKind::Xxh3 => xxh.update(&buf[..n]),
        }
    }
    std::hint::black_box((sha.finalize(), xxh.digest128()));
    started.elapsed().as_secs_f64() * 1e3
}

/// The one compiled artifact under a compiled-component cache (`<cache>/<engine hash>/*.cwasm`).
fn find_cwasm(cache: &Path) -> Option<PathBuf> {
    for engine_dir in std::fs::read_dir(cache).ok()?.flatten() {
        let Ok(entries) = std::fs::read_dir(engine_dir.path()) else { continue };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "cwasm") {
                return Some(entry.path());
            }
        }
    }
    None
}

/// A CNCF distribution server (`docker-registry serve`) on a free local port, stopped on drop.
struct OciServer {
    addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl OciServer {
    /// `None` when `docker-registry` is not on `PATH`.
    fn start() -> Option<OciServer> {
        let binary = std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("docker-registry")).find(|p| p.is_file()))?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut server = OciServer { addr, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers_v2(&server.addr) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("docker-registry exited ({status}) before answering");
            }
            assert!(Instant::now() < deadline, "docker-registry did not answer GET /v2/ within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }
}

impl Drop for OciServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something on `addr` answers `GET /v2/` with 200.
fn answers_v2(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

// ---------------------------------------------------------------------------
// Formatting

fn list_env(name: &str, default: &str) -> Vec<u64> {
    let text = std::env::var(name).unwrap_or_else(|_| default.into());
    text.split(',')
        .map(|v| v.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={text}: not a list of numbers")))
        .collect()
}

/// Nearest-rank percentile (with 30 values, p99 is the largest).
fn p(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn pct(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    format!("{:.0} / {:.0} / {:.0}", p(values, 0.5), p(values, 0.99), max(values))
}

fn spread(values: &[f64], digits: usize) -> String {
    if values.is_empty() {
        return "–".into();
    }
    format!("{:.d$} ({:.d$}–{:.d$})", median(values), min(values), max(values), d = digits)
}

fn spread_x(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    format!("{:.2}× ({:.2}–{:.2})", median(values), min(values), max(values))
}
