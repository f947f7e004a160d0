//! W3: stateful Nexmark queries over the Bid stream with exactly-once checkpoints, as whole
//! `flumen run` processes: each query with `[checkpoint]` against the same job without it, and
//! one run per query that is SIGKILLed half-way and finished with `--resume`.
//!
//! 1. Uses `target/nexmark/bids-<N>.parquet` (generated once, as W2 does; see
//!    `benches/common/nexmark.rs`).
//! 2. Writes two job specs per query into `target/nexmark/w3/`. The source reads `auction, price,
//!    date_time` (a declared schema, so Parquet decodes only those columns) with
//!    `watermark = { column = "date_time", delay_ms = 0 }` (the generator's times never go back);
//!    parallelism 1. Queries (the `window-agg` test guest, windows in host state):
//!    q5 "hot items": sliding windows of 10 s every 2 s, count per auction;
//!    q7 "highest bid": `map` `k = auction * 0` (one constant key), then tumbling 10 s windows,
//!    max(price) per window.
//!    `<q>-ckpt.toml` has `[checkpoint] interval_ms = W3_INTERVAL_MS` and an exactly-once JSONL
//!    sink directory; `<q>-plain.toml` is the same job without `[checkpoint]`, writing one JSONL
//!    file.
//! 3. Per query: the native oracle (a single-thread loop over the same Parquet computing the same
//!    windows in a `HashMap`); one warm-up run (fills the compiled-component cache); `W3_RUNS`
//!    pairs of runs, without and with checkpoints, alternating; then one checkpointed run that is
//!    SIGKILLed at half the median time of the runs without checkpoints (or, if no checkpoint is
//!    complete by then, just after the first one completes) and run again with `--resume`.
//! 4. Prints tables: time and events/s with and without checkpoints and their ratio; checkpoint
//!    count, durations and sizes (from the run summary, the engine's debug log and the checkpoint
//!    directory); and the recovery: which checkpoint it resumed from, how many rows it replayed,
//!    its time against the time the uninterrupted run needs for that fraction of the input.
//!
//! 5. With `W3_CLUSTER=N` (N ≥ 2): per query, the checkpointed job once more with `[job] spread
//!    = N` on an N-worker cluster (`flumen cluster up -n N` in `target/nexmark/w3/cluster`,
//!    `flumen submit --wait`), the window operator's subtasks dealt over the workers and the
//!    hash-partitioned Bids crossing between them over QUIC; timed from submit to end beside the
//!    same job in one process, its output checked against the oracle (give `W3_PARALLELISM` ≥ N,
//!    so every worker has a subtask).
//!
//! `W3_EVENTS` (default 3 000 000) sets N, `W3_RUNS` (default 3) the pairs of runs,
//! `W3_INTERVAL_MS` (default 10 000) the checkpoint interval, `W3_BATCH_ROWS` (default 8192) the
//! source's batch size, `W3_QUERIES` (default `q5,q7`) the queries, `W3_PARALLELISM` (default 1)
//! the window operator's subtasks (above 1, its input is hash-partitioned by the window key).
//! Asserted: every run's output, sorted, equals the oracle's windows (so with = without =
//! killed-and-resumed: nothing lost, nothing duplicated). Nothing on timing.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

#[path = "common/process.rs"]
#[allow(dead_code, reason = "W3 times its processes itself; it shares only the helpers it calls")]
mod process;
use process::{env_or, job_seconds, run_on_cluster, target_dir};
#[path = "common/stats.rs"]
mod stats;
use stats::{max, median, min};

#[path = "common/nexmark.rs"]
mod nexmark_bids;

/// One window: key, start, end (ms), value.
type Window = (Option<i64>, i64, i64, i64);

const SIZE_MS: i64 = 10_000;
const SLIDE_MS: i64 = 2_000;
/// What the flumen processes log on stderr: checkpoint completions with their bytes, state
/// snapshots (full or delta, records, bytes) and the checkpoint a resumed run starts from.
const LOG_FILTER: &str = "warn,flumen_engine::exec=debug,flumen_state::store=debug";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Query {
    Q5,
    Q7,
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Q5 => "q5",
            Query::Q7 => "q7",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Query::Q5 => "hot items: count per auction, sliding 10 s / 2 s",
            Query::Q7 => "highest bid: max(price), tumbling 10 s, one key",
        }
    }
}

// Builds the plugins and test guests this benchmark uses (the build script
// builds only the core plugins).
#[path = "../host/cli/src/guests.rs"]
mod guests;

fn main() {
    guests::ensure_all();
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` builds and starts every bench; this one runs
        // only under `cargo bench`.
        println!("w3_nexmark_state: run with `cargo bench --bench w3_nexmark_state`");
        return;
    }
    let events: u64 = env_or("W3_EVENTS", 3_000_000);
    let runs: usize = env_or("W3_RUNS", 3);
    let interval_ms: u64 = env_or("W3_INTERVAL_MS", 10_000);
    let batch_rows: usize = env_or("W3_BATCH_ROWS", 8192);
    let queries: Vec<Query> = std::env::var("W3_QUERIES")
        .unwrap_or_else(|_| "q5,q7".into())
        .split(',')
        .map(|q| match q.trim() {
            "q5" => Query::Q5,
            "q7" => Query::Q7,
            other => panic!("W3_QUERIES: unknown query `{other}` (q5, q7)"),
        })
        .collect();
    assert!(runs > 0, "W3_RUNS must be at least 1");

    let nexmark_dir = target_dir().join("nexmark");
    let dir = nexmark_dir.join("w3");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let data = nexmark_bids::bids_file(&nexmark_dir, events);
    let cache = nexmark_dir.join("component-cache");
    let parallelism: u32 = env_or("W3_PARALLELISM", 1);
    let setup = Setup { dir: dir.clone(), data: data.clone(), cache, interval_ms, batch_rows, parallelism };

    let workers: u32 = env_or("W3_CLUSTER", 0);
    let mut clustered = Vec::new();
    let mut results = Vec::new();
    for query in queries {
        let (native_t, oracle) = native(query, &data);
        println!("{}: native oracle {:.3} s, {} windows", query.name(), native_t.as_secs_f64(), oracle.len());
        let plain = setup.write_job(query, false);
        let ckpt = setup.write_job(query, true);

        // Warm-up: fills the compiled-component cache and the page cache.
        let warm = setup.run(query, &plain, false, false);
        check(query, "warm-up", &warm.windows, &oracle);

        let mut r = QueryResult {
            query,
            native_s: native_t.as_secs_f64(),
            windows: oracle.len(),
            plain: Vec::new(),
            ckpt: Vec::new(),
            ratios: Vec::new(),
            recovery: None,
        };
        for i in 0..runs {
            let p = setup.run(query, &plain, false, false);
            check(query, "without checkpoints", &p.windows, &oracle);
            let c = setup.run(query, &ckpt, true, false);
            check(query, "with checkpoints", &c.windows, &oracle);
            println!(
                "{} run {}: without {:.3} s, with {:.3} s ({} checkpoints, dir {:.1} KiB)",
                query.name(),
                i + 1,
                p.wall_s,
                c.wall_s,
                c.region.as_ref().map_or(0, |g| g.count),
                c.ckpt_dir_bytes as f64 / 1024.0
            );
            r.ratios.push(c.wall_s / p.wall_s);
            r.plain.push(p);
            r.ckpt.push(c);
        }
        let plain_s = median(&walls(&r.plain));
        r.recovery = Some(setup.kill_and_resume(query, &ckpt, plain_s, &oracle));
        if workers >= 2 {
            let one = median(&walls(&r.ckpt));
            let on_cluster = setup.on_cluster(query, &ckpt, workers, &oracle);
            clustered.push((query, one, on_cluster));
        }
        results.push(r);
    }
    report(&results, events, runs, &setup);
    if !clustered.is_empty() {
        println!();
        println!("W3 on a {workers}-worker cluster (`[job] spread = {workers}`, window operator ×{parallelism}):");
        println!("| query | one process, with checkpoints | cluster, submit to end | cluster / one process |");
        println!("|---|---|---|---|");
        for (query, one, on_cluster) in clustered {
            println!("| {} | {one:.3} s | {on_cluster:.3} s | {:.2} |", query.name(), on_cluster / one);
        }
    }
}

// ---------------------------------------------------------------------------
// Running flumen

struct Setup {
    dir: PathBuf,
    data: PathBuf,
    cache: PathBuf,
    interval_ms: u64,
    batch_rows: usize,
    /// Subtasks of the window operator (its input hash-partitioned by key when above 1).
    parallelism: u32,
}

/// One finished `flumen run` process.
#[derive(Default)]
struct Run {
    wall_s: f64,
    /// The engine's own `job … finished in N s`.
    job_s: f64,
    /// User + sys CPU seconds of the process.
    cpu_s: f64,
    /// Rows the source emitted (after a resume: the rows it replayed).
    source_rows: u64,
    region: Option<RegionLine>,
    /// (checkpoint, bytes) of every `checkpoint complete` debug line, in order.
    checkpoint_bytes: Vec<(u64, u64)>,
    /// Every `state snapshot` debug line: (checkpoint, full, records, bytes).
    snapshots: Vec<(u64, bool, u64, u64)>,
    /// Per checkpoint with a state snapshot: ms from the snapshot file being durable (its log
    /// line) to the checkpoint being complete (manifest durable, sinks committed).
    snapshot_to_complete_ms: Vec<f64>,
    /// The checkpoint a `--resume` run started from.
    resumed_from: Option<u64>,
    /// Bytes of the checkpoints once the process ended: manifests and the files they reference
    /// (the checkpoint directory less `working/`).
    ckpt_dir_bytes: u64,
    /// Disk blocks in use by the state's working copy (`working/`, the fjall database; its journal
    /// file is preallocated, so its length says little).
    working_bytes: u64,
    windows: Vec<Window>,
}

/// `region …: N checkpoints (last #n, X ms, Y KiB; longest Z ms), …` of a run summary.
#[derive(Clone)]
struct RegionLine {
    count: u64,
    last: u64,
    last_ms: f64,
    last_size: String,
    longest_ms: f64,
}

impl Setup {
    fn paths(&self, query: Query, checkpointed: bool) -> (PathBuf, PathBuf) {
        let q = query.name();
        if checkpointed {
            (self.dir.join(format!("{q}-ckpt-state")), self.dir.join(format!("{q}-ckpt-out")))
        } else {
            (self.dir.join(format!("{q}-plain-state")), self.dir.join(format!("{q}-plain.jsonl")))
        }
    }

    fn write_job(&self, query: Query, checkpointed: bool) -> PathBuf {
        let (state, out) = self.paths(query, checkpointed);
        let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).expect("a file name").to_string();
        let window_agg = Path::new(env!("FLUMEN_TEST_GUEST_DIR")).join("window-agg.wasm");
        let checkpoint = if checkpointed {
            format!("[checkpoint]\ninterval_ms = {}\ndir = {}\n\n", self.interval_ms, toml_str(&name(&state)))
        } else {
            String::new()
        };
        let (key_op, win_input, window) = match query {
            Query::Q5 => (
                String::new(),
                "bids",
                format!(
                    "key = \"auction\", time = \"date_time\", kind = \"sliding\", size_ms = {SIZE_MS}, \
                     slide_ms = {SLIDE_MS}, agg = \"count\""
                ),
            ),
            Query::Q7 => (
                "[[operator]]\nid = \"key\"\nplugin = \"map\"\n\
                 config = { columns = [{ name = \"k\", expr = \"auction * 0\" }] }\ninputs = [\"bids\"]\n\n"
                    .to_string(),
                "key",
                format!(
                    "key = \"k\", time = \"date_time\", kind = \"tumbling\", size_ms = {SIZE_MS}, agg = \"max\", \
                     value = \"price\""
                ),
            ),
        };
        let key = if query == Query::Q5 { "auction" } else { "k" };
        let win_inputs = if self.parallelism > 1 {
            format!(
                "parallelism = {}\ninputs = [{{ from = \"{win_input}\", partition = \"hash\", keys = [\"{key}\"] }}]",
                self.parallelism
            )
        } else {
            format!("inputs = [\"{win_input}\"]")
        };
        let spec = format!(
            "# Nexmark {q}-like: {what}{with}. Written by benches/w3_nexmark_state.rs.\n\
             [job]\nname = \"w3-{q}\"\nparallelism = 1\nbatch_rows = {batch}\n\n\
             {checkpoint}\
             [[source]]\nid = \"bids\"\nkind = \"parquet\"\npath = {data}\n\
             schema = [{{ name = \"auction\", type = \"int64\", nullable = false }}, \
             {{ name = \"price\", type = \"int64\", nullable = false }}, \
             {{ name = \"date_time\", type = \"int64\", nullable = false }}]\n\
             watermark = {{ column = \"date_time\", delay_ms = 0 }}\n\n\
             {key_op}\
             [[operator]]\nid = \"win\"\nplugin = {plugin}\ncapabilities = [\"log\", \"state\"]\n\
             {win_inputs}\nconfig = {{ {window} }}\n\n\
             [[sink]]\nid = \"out\"\nkind = \"jsonl\"\npath = {out}\ninputs = [\"win\"]\n",
            q = query.name(),
            what = query.what(),
            with = if checkpointed { ", with checkpoints" } else { ", without checkpoints" },
            batch = self.batch_rows,
            data = toml_str(&self.data.display().to_string()),
            plugin = toml_str(&window_agg.display().to_string()),
            out = toml_str(&name(&out)),
        );
        let path = self.dir.join(format!("{}-{}.toml", query.name(), if checkpointed { "ckpt" } else { "plain" }));
        std::fs::write(&path, spec).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Removes what an earlier run left: the checkpoints and the output.
    fn clean(&self, query: Query, checkpointed: bool) {
        let (state, out) = self.paths(query, checkpointed);
        for p in [state, out] {
            let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            if let Err(e) = r
                && e.kind() != std::io::ErrorKind::NotFound
            {
                panic!("cannot remove {}: {e}", p.display());
            }
        }
    }

    fn command(&self, job: &Path, resume: bool, log: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flumen"));
        cmd.args(["run", "--quiet"]);
        if resume {
            cmd.arg("--resume");
        }
        cmd.arg(job)
            .env("FLUMEN_CACHE_DIR", &self.cache)
            .env("FLUMEN_LOG", LOG_FILTER)
            .env("NO_COLOR", "1")
            .env_remove("FLUMEN_FAILPOINTS")
            .stdout(Stdio::piped())
            .stderr(File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display())));
        cmd
    }

    /// Runs `job` to completion (from scratch unless `resume`) and reads what it wrote.
    fn run(&self, query: Query, job: &Path, checkpointed: bool, resume: bool) -> Run {
        if !resume {
            self.clean(query, checkpointed);
        }
        let log = job.with_extension(if resume { "resume.log" } else { "log" });
        let cpu = children_cpu_seconds();
        let started = Instant::now();
        let out = self.command(job, resume, &log).output().expect("cannot start the flumen binary");
        let wall_s = started.elapsed().as_secs_f64();
        let cpu_s = children_cpu_seconds() - cpu;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(out.status.success(), "flumen run {} failed ({}):\n{stdout}\n{stderr}", job.display(), out.status);
        let (state, output) = self.paths(query, checkpointed);
        let mut run = parse_log(&stderr);
        run.wall_s = wall_s;
        run.cpu_s = cpu_s;
        run.job_s = job_seconds(&stdout).unwrap_or(f64::NAN);
        run.source_rows = node_rows(&stdout, "source", "bids", 3).unwrap_or(0);
        run.region = region_line(&stdout);
        run.ckpt_dir_bytes = checkpoint_bytes(&state);
        run.working_bytes = allocated_bytes(&state.join("working"));
        run.windows = read_windows(&output);
        run
    }

    /// Runs the checkpointed job `job` on a fresh `workers`-worker cluster with `[job] spread =
    /// workers`, checks its output and returns the seconds from submit to its end.
    fn on_cluster(&self, query: Query, job: &Path, workers: u32, oracle: &[Window]) -> f64 {
        let q = query.name();
        let spec = std::fs::read_to_string(job).expect("the checkpointed job");
        let spec = spec
            .replace(&format!("{q}-ckpt-state"), &format!("{q}-cluster-state"))
            .replace(&format!("{q}-ckpt-out"), &format!("{q}-cluster-out"))
            .replacen("[job]\n", &format!("[job]\nspread = {workers}\n"), 1);
        let path = self.dir.join(format!("{q}-cluster.toml"));
        std::fs::write(&path, spec).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        let (state, out) = (self.dir.join(format!("{q}-cluster-state")), self.dir.join(format!("{q}-cluster-out")));
        for p in [&state, &out] {
            let _ = std::fs::remove_dir_all(p);
        }
        let (wall_s, status) = run_on_cluster(&path, workers, &self.dir.join("cluster"), &self.cache);
        check(query, "on the cluster", &read_windows(&out), oracle);
        println!("{q}: on {workers} workers in {wall_s:.3} s\n{status}");
        wall_s
    }

    /// Starts the checkpointed job, SIGKILLs it half-way (once a checkpoint taken while it runs
    /// is complete), resumes it and checks the output.
    fn kill_and_resume(&self, query: Query, job: &Path, plain_s: f64, oracle: &[Window]) -> Recovery {
        self.clean(query, true);
        let (state, output) = self.paths(query, true);
        let log = job.with_extension("killed.log");
        let target_s = plain_s / 2.0;
        let started = Instant::now();
        let mut child = self.command(job, false, &log).stdout(Stdio::null()).spawn().expect("cannot start flumen");
        let mut waited_for_checkpoint = false;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for flumen") {
                let ended_s = started.elapsed().as_secs_f64();
                assert!(
                    status.success(),
                    "{}: the checkpointed job failed ({status}):\n{}",
                    query.name(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                check(query, "not killed", &read_windows(&output), oracle);
                println!(
                    "{}: the job ended after {ended_s:.2} s, before a checkpoint taken while it ran was complete: \
                     not killed (raise W3_EVENTS or lower W3_INTERVAL_MS)",
                    query.name()
                );
                return Recovery::NotKilled { ended_s, target_s };
            }
            if started.elapsed().as_secs_f64() >= target_s {
                if latest_periodic_checkpoint(&state).is_some() {
                    break;
                }
                waited_for_checkpoint = true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("SIGKILL"); // SIGKILL on Unix
        let killed_at = started.elapsed().as_secs_f64();
        let _ = child.wait();
        let committed = latest_periodic_checkpoint(&state).unwrap_or(0);
        let windows_at_kill = read_windows(&output).len();
        let dir_at_kill = checkpoint_bytes(&state);
        println!(
            "{}: killed at {killed_at:.2} s with checkpoint #{committed} committed ({windows_at_kill} windows \
             published)",
            query.name()
        );
        let resumed = self.run(query, job, true, true);
        check(query, "killed and resumed", &resumed.windows, oracle);
        Recovery::Killed(Box::new(Killed {
            target_s,
            killed_at,
            waited_for_checkpoint,
            committed,
            windows_at_kill,
            dir_at_kill,
            resumed,
        }))
    }
}

enum Recovery {
    /// The job ended before a checkpoint taken while it ran was complete: nothing to kill.
    NotKilled {
        ended_s: f64,
        target_s: f64,
    },
    Killed(Box<Killed>),
}

struct Killed {
    target_s: f64,
    killed_at: f64,
    /// No checkpoint was complete at `target_s`: the kill waited for the first one.
    waited_for_checkpoint: bool,
    committed: u64,
    windows_at_kill: usize,
    /// [`checkpoint_bytes`] at the kill.
    dir_at_kill: u64,
    resumed: Run,
}

struct QueryResult {
    query: Query,
    native_s: f64,
    windows: usize,
    plain: Vec<Run>,
    ckpt: Vec<Run>,
    ratios: Vec<f64>,
    recovery: Option<Recovery>,
}

fn check(query: Query, what: &str, got: &[Window], oracle: &[Window]) {
    if got == oracle {
        return;
    }
    let first_diff = got.iter().zip(oracle).position(|(a, b)| a != b).unwrap_or(got.len().min(oracle.len()));
    panic!(
        "{} {what}: {} windows, the oracle has {}; first difference at {first_diff}: got {:?}, expected {:?}",
        query.name(),
        got.len(),
        oracle.len(),
        got.get(first_diff),
        oracle.get(first_diff)
    );
}

// ---------------------------------------------------------------------------
// Reading what a run left

/// The fields of the engine's debug log lines (see [`LOG_FILTER`]).
fn parse_log(stderr: &str) -> Run {
    let mut run = Run::default();
    let mut snapshot_at: HashMap<u64, f64> = HashMap::new();
    for line in stderr.lines() {
        let line = strip_ansi(line);
        let field = |name: &str| {
            line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')).map(|v| v.to_string())
        };
        let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
        if line.contains("flumen_engine::exec") && line.contains("checkpoint complete") {
            if let (Some(c), Some(b)) = (num("checkpoint"), num("bytes")) {
                run.checkpoint_bytes.push((c, b));
            }
            if let (Some(c), Some(at)) = (num("checkpoint"), seconds_of_day(&line))
                && let Some(snap) = snapshot_at.remove(&c)
            {
                run.snapshot_to_complete_ms.push((at - snap).rem_euclid(86_400.0) * 1e3);
            }
        } else if line.contains("state snapshot") {
            if let (Some(c), Some(full), Some(records), Some(bytes)) =
                (num("checkpoint"), field("full"), num("records"), num("bytes"))
            {
                run.snapshots.push((c, full == "true", records, bytes));
                if let Some(at) = seconds_of_day(&line) {
                    snapshot_at.insert(c, at);
                }
            }
        } else if line.contains("resuming from checkpoint") {
            run.resumed_from = num("checkpoint");
        }
    }
    run
}

/// The time of day, in seconds, of a log line's leading `2026-11-22T00:58:21.855076Z`.
fn seconds_of_day(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let (_, time) = stamp.split_once('T')?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Word `index` of the summary line of node `id` of `kind` (0 = kind, 1 = id, 2 = rows in, 3 = rows out).
fn node_rows(summary: &str, kind: &str, id: &str, index: usize) -> Option<u64> {
    summary.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        (words.first() == Some(&kind) && words.get(1) == Some(&id))
            .then(|| words.get(index)?.replace(',', "").parse().ok())
            .flatten()
    })
}

fn region_line(summary: &str) -> Option<RegionLine> {
    let line = summary.lines().find(|l| l.starts_with("region ") && l.contains(" checkpoints ("))?;
    let (_, rest) = line.split_once(": ")?;
    let (count, rest) = rest.split_once(" checkpoints (last #")?;
    let (last, rest) = rest.split_once(", ")?;
    let (ms, rest) = rest.split_once(" ms, ")?;
    let (size, rest) = rest.split_once("; longest ")?;
    let (longest, _) = rest.split_once(" ms)")?;
    Some(RegionLine {
        count: count.trim().parse().ok()?,
        last: last.trim().parse().ok()?,
        last_ms: ms.trim().parse().ok()?,
        last_size: size.trim().to_string(),
        longest_ms: longest.trim().parse().ok()?,
    })
}

/// The newest complete checkpoint in a checkpoint directory (`<dir>/<region>/chk-<n>.json`)
/// taken while the job ran, not the final one taken at the end of its input.
fn latest_periodic_checkpoint(dir: &Path) -> Option<u64> {
    let regions = std::fs::read_dir(dir).ok()?;
    regions
        .filter_map(|r| r.ok())
        .filter_map(|r| std::fs::read_dir(r.path()).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix("chk-")?.strip_suffix(".json")?.parse().ok()?;
            let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            (manifest["manifest"]["finished"] == serde_json::Value::Bool(false)).then_some(n)
        })
        .max()
}

/// Bytes of the checkpoints under a checkpoint directory: every file but the working copy's.
fn checkpoint_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "working")
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => file_bytes(&e.path(), |m| m.len()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Disk space in use by the files under `dir`.
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    file_bytes(dir, |m| m.blocks() * 512)
}

/// `size` summed over the files under `dir` (0 when it does not exist).
fn file_bytes(dir: &Path, size: fn(&std::fs::Metadata) -> u64) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => file_bytes(&e.path(), size),
            Ok(_) => e.metadata().map_or(0, |m| size(&m)),
            Err(_) => 0,
        })
        .sum()
}

/// Every window written to `path` (one JSONL file, or the committed part files of a directory), sorted.
fn read_windows(path: &Path) -> Vec<Window> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut parts: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-")))
            .collect();
        parts.sort();
        parts
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", f.display()));
            let int =
                |name: &str| v[name].as_i64().unwrap_or_else(|| panic!("{}: no int64 `{name}`: {line}", f.display()));
            out.push((v["key"].as_i64(), int("window_start"), int("window_end"), int("value")));
        }
    }
    out.sort_unstable();
    out
}

// ---------------------------------------------------------------------------
// Native oracle

/// The query's windows computed by a single-thread loop over the same file; and its time.
fn native(query: Query, data: &Path) -> (Duration, Vec<Window>) {
    let started = Instant::now();
    let file = File::open(data).unwrap_or_else(|e| panic!("cannot open {}: {e}", data.display()));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("Parquet metadata");
    let schema = builder.schema().clone();
    let index = |name: &str| schema.index_of(name).unwrap_or_else(|_| panic!("no column {name}"));
    let (auction, price, time) = (index("auction"), index("price"), index("date_time"));
    let mask = ProjectionMask::roots(builder.parquet_schema(), [auction, price, time]);
    let reader = builder.with_projection(mask).with_batch_size(65536).build().expect("Parquet reader");
    let mut windows: HashMap<(i64, i64), i64> = HashMap::new();
    for batch in reader {
        let batch = batch.expect("reading Parquet");
        let col = |name: &str| {
            let i = batch.schema().index_of(name).expect("projected column");
            batch.column(i).as_any().downcast_ref::<Int64Array>().expect("int64").clone()
        };
        let (auctions, prices, times) = (col("auction"), col("price"), col("date_time"));
        for row in 0..batch.num_rows() {
            let t = times.value(row);
            match query {
                Query::Q5 => {
                    let a = auctions.value(row);
                    let mut start = t - t.rem_euclid(SLIDE_MS);
                    while start + SIZE_MS > t {
                        *windows.entry((a, start)).or_default() += 1;
                        start -= SLIDE_MS;
                    }
                }
                Query::Q7 => {
                    let p = prices.value(row);
                    let start = t - t.rem_euclid(SIZE_MS);
                    windows.entry((0, start)).and_modify(|m| *m = (*m).max(p)).or_insert(p);
                }
            }
        }
    }
    let mut out: Vec<Window> = windows.into_iter().map(|((k, s), v)| (Some(k), s, s + SIZE_MS, v)).collect();
    out.sort_unstable();
    (started.elapsed(), out)
}

// ---------------------------------------------------------------------------
// Report

fn report(results: &[QueryResult], events: u64, runs: usize, setup: &Setup) {
    let (interval_ms, batch_rows, parallelism, data) =
        (setup.interval_ms, setup.batch_rows, setup.parallelism, &setup.data);
    println!();
    println!(
        "W3: Nexmark over {events} Bid events ({}), {runs} pairs of runs per query after one warm-up, \
         checkpoint interval {interval_ms} ms, {batch_rows}-row batches, window operator parallelism {parallelism};",
        data.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    println!("whole `flumen run` processes; ratio = median of per-pair ratios (min–max)");
    println!();
    println!(
        "| query | what | without checkpoints s (min–max) | with checkpoints s (min–max) | with/without (min–max) | \
         events/s without | events/s with | CPU s without / with | windows out | native oracle s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let plain = walls(&r.plain);
        let ckpt = walls(&r.ckpt);
        let plain_cpu: Vec<f64> = r.plain.iter().map(|p| p.cpu_s).collect();
        let ckpt_cpu: Vec<f64> = r.ckpt.iter().map(|p| p.cpu_s).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} / {:.2} | {} | {:.3} |",
            r.query.name(),
            r.query.what(),
            spread(&plain, 3, ""),
            spread(&ckpt, 3, ""),
            spread(&r.ratios, 3, "×"),
            rate(events as f64 / median(&plain)),
            rate(events as f64 / median(&ckpt)),
            median(&plain_cpu),
            median(&ckpt_cpu),
            r.windows,
            r.native_s
        );
    }

    println!();
    println!(
        "Checkpoints of the checkpointed runs (all runs together). Periodic = taken while the job ran; the final one \
         is taken at the end of the input, after every window fired, and is the summary's \"last\". written = bytes \
         of the files a checkpoint added (state snapshots), from the engine's `checkpoint complete` log. snapshot → \
         complete = from the state snapshot file being durable to the checkpoint being complete (manifest fsynced, \
         sinks committed), from log timestamps. On disk after the run: the retained checkpoints (manifests and \
         files) and, apart, the blocks of the state's fjall working copy."
    );
    println!();
    println!(
        "| query | checkpoints per run (periodic + final) | written per periodic checkpoint KiB (min–max) | \
         state snapshots: count × kind: median records / KiB | snapshot → complete ms (min–max) | final checkpoint ms (min–max) / size | \
         longest checkpoint, trigger → commit, ms (min–max) | checkpoints on disk KiB | working copy on disk KiB |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in results {
        let counts: Vec<String> = r
            .ckpt
            .iter()
            .map(|c| c.region.as_ref().map_or("?".to_string(), |g| format!("{} + 1", g.count.saturating_sub(1))))
            .collect();
        let periodic: Vec<f64> = r
            .ckpt
            .iter()
            .flat_map(|c| {
                let last = c.region.as_ref().map_or(u64::MAX, |g| g.last);
                c.checkpoint_bytes.iter().filter(move |(n, _)| *n < last).map(|(_, b)| *b as f64 / 1024.0)
            })
            .collect();
        let snapshots: Vec<String> = [true, false]
            .into_iter()
            .filter_map(|full| {
                let of: Vec<&(u64, bool, u64, u64)> =
                    r.ckpt.iter().flat_map(|c| c.snapshots.iter()).filter(|s| s.1 == full).collect();
                let records: Vec<f64> = of.iter().map(|s| s.2 as f64).collect();
                let kib: Vec<f64> = of.iter().map(|s| s.3 as f64 / 1024.0).collect();
                (!of.is_empty()).then(|| {
                    format!(
                        "{} × {}: {:.0} / {:.0}",
                        of.len(),
                        if full { "full" } else { "delta" },
                        median(&records),
                        median(&kib)
                    )
                })
            })
            .collect();
        let to_complete: Vec<f64> = r.ckpt.iter().flat_map(|c| c.snapshot_to_complete_ms.iter().copied()).collect();
        let final_ms: Vec<f64> = r.ckpt.iter().filter_map(|c| c.region.as_ref().map(|g| g.last_ms)).collect();
        let final_size = r.ckpt.last().and_then(|c| c.region.as_ref()).map_or("?".to_string(), |g| g.last_size.clone());
        let longest: Vec<f64> = r.ckpt.iter().filter_map(|c| c.region.as_ref().map(|g| g.longest_ms)).collect();
        let on_disk: Vec<f64> = r.ckpt.iter().map(|c| c.ckpt_dir_bytes as f64 / 1024.0).collect();
        let working: Vec<f64> = r.ckpt.iter().map(|c| c.working_bytes as f64 / 1024.0).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} / {final_size} | {} | {:.1} | {:.0} |",
            r.query.name(),
            counts.join(", "),
            spread(&periodic, 1, ""),
            if snapshots.is_empty() { "none".to_string() } else { snapshots.join("; ") },
            spread(&to_complete, 1, ""),
            spread(&final_ms, 1, ""),
            spread(&longest, 1, ""),
            median(&on_disk),
            median(&working)
        );
    }

    println!();
    println!(
        "Recovery: the checkpointed job SIGKILLed at half the median time without checkpoints (later if no \
         checkpoint taken while it ran was complete by then), then `flumen run --resume`, which takes checkpoints \
         too. expected = the median time of a whole run without / with checkpoints × the fraction of the input the \
         resumed run replayed (its source's rows out / N); extra = resumed − expected. The resumed output, \
         sorted, equals the uninterrupted runs' and the oracle's (asserted)."
    );
    println!();
    println!(
        "| query | killed at s (target) | committed at kill | windows published at kill | checkpoints on disk at \
         kill KiB | resumed from | rows replayed (fraction) | resumed process s | expected s without / with \
         checkpoints | extra s without / with | output |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in results {
        let plain = median(&walls(&r.plain));
        let ckpt = median(&walls(&r.ckpt));
        match &r.recovery {
            None => {}
            Some(Recovery::NotKilled { ended_s, target_s }) => println!(
                "| {} | not killed: ended after {ended_s:.2} s ({target_s:.2}) before a periodic checkpoint | – | – \
                 | – | – | – | – | – | – | equal |",
                r.query.name()
            ),
            Some(Recovery::Killed(k)) => {
                let fraction = k.resumed.source_rows as f64 / events as f64;
                let (expected, expected_ckpt) = (plain * fraction, ckpt * fraction);
                println!(
                    "| {} | {:.2} ({:.2}{}) | #{} | {} | {:.1} | #{} | {} ({:.1}%) | {:.3} | {:.3} / {:.3} | {:+.3} / \
                     {:+.3} | equal |",
                    r.query.name(),
                    k.killed_at,
                    k.target_s,
                    if k.waited_for_checkpoint { ", waited for the first checkpoint" } else { "" },
                    k.committed,
                    k.windows_at_kill,
                    k.dir_at_kill as f64 / 1024.0,
                    k.resumed.resumed_from.map_or("?".to_string(), |c| c.to_string()),
                    k.resumed.source_rows,
                    fraction * 100.0,
                    k.resumed.wall_s,
                    expected,
                    expected_ckpt,
                    k.resumed.wall_s - expected,
                    k.resumed.wall_s - expected_ckpt
                );
            }
        }
    }

    println!();
    println!("Per run: process s / engine job s / CPU s; with checkpoints also checkpoints and the state snapshots");
    for r in results {
        let q = r.query.name();
        for (i, (p, c)) in r.plain.iter().zip(&r.ckpt).enumerate() {
            println!(
                "  {q} {}: without {:.3} / {:.3} / {:.2}; with {:.3} / {:.3} / {:.2}, {} checkpoints, [{}]",
                i + 1,
                p.wall_s,
                p.job_s,
                p.cpu_s,
                c.wall_s,
                c.job_s,
                c.cpu_s,
                c.region.as_ref().map_or(0, |g| g.count),
                snapshot_list(c)
            );
        }
        if let Some(Recovery::Killed(k)) = &r.recovery {
            println!(
                "  {q} resumed: {:.3} / {:.3} / {:.2}, {} checkpoints, [{}]",
                k.resumed.wall_s,
                k.resumed.job_s,
                k.resumed.cpu_s,
                k.resumed.region.as_ref().map_or(0, |g| g.count),
                snapshot_list(&k.resumed)
            );
        }
    }
}

fn walls(runs: &[Run]) -> Vec<f64> {
    runs.iter().map(|r| r.wall_s).collect()
}

fn snapshot_list(run: &Run) -> String {
    let snaps: Vec<String> = run
        .snapshots
        .iter()
        .map(|s| {
            format!("#{} {} {} records {:.1} KiB", s.0, if s.1 { "full" } else { "delta" }, s.2, s.3 as f64 / 1024.0)
        })
        .collect();
    snaps.join("; ")
}

/// `median (min–max)` with `digits` decimals, or `–` for no values.
fn spread(values: &[f64], digits: usize, unit: &str) -> String {
    if values.is_empty() {
        return "–".to_string();
    }
    format!("{:.digits$}{unit} ({:.digits$}–{:.digits$})", median(values), min(values), max(values))
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn rate(per_s: f64) -> String {
    if per_s >= 1e6 { format!("{:.2} M", per_s / 1e6) } else { format!("{:.0} K", per_s / 1e3) }
}

/// User + sys CPU seconds of this process's waited-for children, from `/proc/self/stat`
/// (Linux; 10 ms resolution; NaN elsewhere).
fn children_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    let Some(end) = stat.rfind(')') else { return f64::NAN };
    // Fields after the command name start at field 3; cutime and cstime are fields 16 and 17.
    let fields: Vec<f64> = stat[end + 2..].split_whitespace().map(|f| f.parse().unwrap_or(f64::NAN)).collect();
    match (fields.get(16 - 3), fields.get(17 - 3)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}
