//! W2: Nexmark q0, q1, q2, q14, q21 and q22 over the Bid stream, as whole
//! `flumen run` processes against a native single-thread Rust Arrow loop over
//! the same Parquet file, and beside Daft (`benches/peers/daft_w2.py`) when a
//! Python venv with Daft can be made.
//!
//! 1. Generates `target/nexmark/bids-<N>.parquet` once (N Bid events of the
//!    `nexmark` crate, fixed base time, 64 K-row row groups, Snappy).
//! 2. Writes one job spec per query into `target/nexmark/` (parallelism 1,
//!    64 K-row batches, blackhole sink):
//!    q0 source → `passthrough` test guest; q1 → `map` `price * 0.908` in place;
//!    q2 → `filter` `auction % 123 = 0` → `project` `auction, price`;
//!    q14 → `filter` on `price * 0.908` → `map` (price in euros, `bid_time_type`
//!    by hour) → `project`; q21 → `filter` on `regexp_extract`/`lower(channel)`
//!    → `map` `channel_id` (`CASE`) → `project`; q22 → `map` three
//!    `split_part`s of `url` → `project`. (q14's `count_char` UDF is left out:
//!    Flumen's SQL has no such function; every system here leaves it out.)
//! 3. Runs each job with the built `flumen` binary (`flumen run --quiet`),
//!    timing the whole process, after one warm-up run that fills the
//!    compiled-component cache; each timed run is followed by a run of the
//!    native loop (ParquetRecordBatchReader, the same kernel or filter, the
//!    result dropped; for q2 it decodes only the two columns it reads, as
//!    flumen's plan does), timed in-process.
//! 4. With Daft (a venv at `target/daft-venv`, made and filled from PyPI by
//!    this bench when missing), runs the same query over the same file as a
//!    Daft dataframe (`benches/peers/daft_w2.py`: whole Python process, result
//!    counted and dropped), once to warm up and then beside each timed run.
//! 5. Prints a table: median (min–max) of each, the ratio and events/s.
//!
//! 6. With `W2_CLUSTER=N` (N ≥ 2): per query, the same job with `[checkpoint]` (every 10 s),
//!    its source at one subtask and every other node at N, as one `flumen run` process and
//!    with `[job] spread = N` on a fresh `flumen cluster up -n N` (`target/nexmark/cluster`):
//!    the operator subtasks dealt over the workers, the source's batches dealt round-robin to
//!    them, half of them crossing over QUIC; both timed whole (the cluster from `submit
//!    --wait` to its return), both rows-out checked against the native loop's.
//!
//! `W2_EVENTS` (default 10 000 000) sets N, `W2_RUNS` (default 3) the runs,
//! `W2_QUERIES` (default all, e.g. `q1,q21`) the queries; `W2_DAFT=0` skips Daft.
//! No timing is asserted; the native loop's row counts are checked against
//! the sink counts flumen reports.

use std::fs::File;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::builder::StringBuilder;
use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

#[path = "common/process.rs"]
mod process;
#[path = "common/stats.rs"]
mod stats;
use process::{env_or, job_seconds, run_flumen, run_on_cluster, sink_rows, target_dir};
use stats::{max, median, min};

#[path = "common/nexmark.rs"]
mod nexmark_bids;
use nexmark_bids::bid_schema;

const BATCH_ROWS: usize = 65536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Query {
    Q0,
    Q1,
    Q2,
    Q14,
    Q21,
    Q22,
}

const QUERIES: [Query; 6] = [Query::Q0, Query::Q1, Query::Q2, Query::Q14, Query::Q21, Query::Q22];

/// q14's hour of day of `date_time` (ms since the epoch, UTC).
const Q14_HOUR: &str = "(date_time / 3600000) % 24";
/// q21's channel id in a URL's query string.
const Q21_CHANNEL_ID: &str = "(&|^)channel_id=([^&]*)";

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q14 => "q14",
            Query::Q21 => "q21",
            Query::Q22 => "q22",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Query::Q0 => "pass-through (passthrough guest)",
            Query::Q1 => "map price * 0.908",
            Query::Q2 => "filter auction % 123 = 0, project auction, price",
            Query::Q14 => "filter on price in euros, map price and bid_time_type (CASE on the hour), project",
            Query::Q21 => "filter on regexp_extract(url) / lower(channel), map channel_id (CASE), project",
            Query::Q22 => "map dir1..dir3 = split_part(url, '/', 4..6), project",
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
        println!("w2_nexmark: run with `cargo bench --bench w2_nexmark`");
        return;
    }
    let events: u64 = env_or("W2_EVENTS", 10_000_000);
    let runs: usize = env_or("W2_RUNS", 3);
    let wanted = std::env::var("W2_QUERIES").unwrap_or_default();
    let queries: Vec<Query> =
        QUERIES.into_iter().filter(|q| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == q.name())).collect();
    let dir = target_dir().join("nexmark");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));

    let data = nexmark_bids::bids_file(&dir, events);
    let daft = if std::env::var("W2_DAFT").as_deref() == Ok("0") { None } else { daft::python() };

    let cache = dir.join("component-cache");
    let mut rows: Vec<Row> = Vec::new();
    let mut summaries = Vec::new();
    for query in queries {
        let job = write_job(&dir, query, &data);
        // Warm-up: fills the compiled-component cache and the page cache.
        let (_, warm_out) = run_flumen(&job, &cache);
        let native_rows = run_native(query, &data).1;
        let sink_rows = sink_rows(&warm_out);
        assert_eq!(
            sink_rows,
            Some(native_rows),
            "{}: flumen's sink got a different row count than the native loop\n{warm_out}",
            query.name()
        );
        let daft_rows = daft.as_ref().map(|py| daft::run(py, query, &data).1);
        if let Some(d) = daft_rows {
            assert_eq!(d, native_rows, "{}: Daft produced a different row count than the native loop", query.name());
        }
        let mut daft_s = Vec::with_capacity(runs);
        let mut flumen = Vec::with_capacity(runs);
        let mut native = Vec::with_capacity(runs);
        let mut job_s = Vec::with_capacity(runs);
        let mut flumen_cpu = Vec::with_capacity(runs);
        let mut native_cpu = Vec::with_capacity(runs);
        let mut last_out = String::new();
        for _ in 0..runs {
            let cpu = cpu_seconds();
            let (t, out) = run_flumen(&job, &cache);
            flumen_cpu.push(cpu_seconds().zip(cpu).map_or(f64::NAN, |(after, before)| after.1 - before.1));
            flumen.push(t.as_secs_f64());
            job_s.push(job_seconds(&out).unwrap_or(f64::NAN));
            last_out = out;
            let cpu = cpu_seconds();
            native.push(run_native(query, &data).0.as_secs_f64());
            native_cpu.push(cpu_seconds().zip(cpu).map_or(f64::NAN, |(after, before)| after.0 - before.0));
            if let Some(py) = &daft {
                daft_s.push(daft::run(py, query, &data).0.as_secs_f64());
            }
        }
        let ratios: Vec<f64> = flumen.iter().zip(&native).map(|(f, n)| f / n).collect();
        println!(
            "{}: flumen {:.3} s, native {:.3} s ({} runs, {} rows out)",
            query.name(),
            median(&flumen),
            median(&native),
            runs,
            native_rows
        );
        rows.push(Row {
            query,
            flumen,
            native,
            ratios,
            job_s,
            flumen_cpu,
            native_cpu,
            daft: daft_s,
            rows_out: native_rows,
        });
        summaries.push((query, last_out));
    }

    let workers: u32 = env_or("W2_CLUSTER", 0);
    let clustered: Vec<(Query, f64, f64)> = if workers >= 2 {
        rows.iter()
            .map(|r| {
                let (one, on) = on_cluster(&dir, r.query, &data, &cache, workers, r.rows_out);
                (r.query, one, on)
            })
            .collect()
    } else {
        Vec::new()
    };

    println!();
    println!(
        "W2: Nexmark over {events} Bid events ({}), {runs} runs each after one warm-up; flumen = whole `flumen run` process,",
        data.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    println!(
        "native = single-thread ParquetRecordBatchReader loop in-process; ratio = median of per-run ratios (min–max)"
    );
    println!();
    println!(
        "| query | what | flumen median s (min–max) | native median s (min–max) | flumen/native (min–max) | \
         flumen events/s | native events/s | rows out |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} ({:.3}–{:.3}) | {:.3} ({:.3}–{:.3}) | {:.2}× ({:.2}–{:.2}) | {} | {} | {} |",
            r.query.name(),
            r.query.what(),
            median(&r.flumen),
            min(&r.flumen),
            max(&r.flumen),
            median(&r.native),
            min(&r.native),
            max(&r.native),
            median(&r.ratios),
            min(&r.ratios),
            max(&r.ratios),
            rate(events as f64 / median(&r.flumen)),
            rate(events as f64 / median(&r.native)),
            r.rows_out
        );
    }
    println!();
    if daft.is_none() {
        println!("Daft: not run (W2_DAFT=0, or no Python venv with Daft could be made; see above).");
    } else {
        println!(
            "Beside Daft (whole `python benches/peers/daft_w2.py` process over the same file, native runner, \
             result counted and dropped; whole-process throughput, higher is better):"
        );
        println!();
        println!(
            "| query | flumen median s | Daft median s (min–max) | Daft/flumen time | flumen events/s | Daft events/s |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {:.3} | {:.3} ({:.3}–{:.3}) | {:.2}× | {} | {} |",
                r.query.name(),
                median(&r.flumen),
                median(&r.daft),
                min(&r.daft),
                max(&r.daft),
                median(&r.daft) / median(&r.flumen),
                rate(events as f64 / median(&r.flumen)),
                rate(events as f64 / median(&r.daft))
            );
        }
    }
    println!();
    println!(
        "Where flumen's time goes (medians): the process = start-up and planning + the job's run; CPU s is user + sys"
    );
    println!(
        "time (of the flumen process; of the bench process for the native loop): flumen's pipeline spreads its work"
    );
    println!("over both cores, so its CPU time shows the work it does beside the native loop's.");
    println!();
    println!(
        "| query | process s | job run s (engine's own timer) | start-up + plan + exit s | flumen CPU s | native CPU s | \
         CPU flumen/native |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let (p, j) = (median(&r.flumen), median(&r.job_s));
        let (fc, nc) = (median(&r.flumen_cpu), median(&r.native_cpu));
        println!("| {} | {p:.3} | {j:.3} | {:.3} | {fc:.2} | {nc:.2} | {:.2}× |", r.query.name(), p - j, fc / nc);
    }
    println!();
    println!("Last run's per-node summary from `flumen run` for each query:");
    for (query, out) in &summaries {
        println!();
        println!("{}:", query.name());
        for line in out.lines() {
            println!("    {line}");
        }
    }
    if !clustered.is_empty() {
        println!();
        println!(
            "W2 checkpointed, operators ×{workers}: one process vs a {workers}-worker cluster (`[job] spread = {workers}`)"
        );
        println!("| query | one process s | cluster, submit to end s | cluster / one process |");
        println!("|---|---:|---:|---:|");
        for (query, one, on) in &clustered {
            println!("| {} | {one:.3} | {on:.3} | {:.2} |", query.name(), on / one);
        }
    }
}

/// One query's measurements, in seconds per run.
struct Row {
    query: Query,
    flumen: Vec<f64>,
    native: Vec<f64>,
    ratios: Vec<f64>,
    /// The run time the engine reports (`job … finished in N s`).
    job_s: Vec<f64>,
    /// User + sys CPU seconds of each flumen process.
    flumen_cpu: Vec<f64>,
    /// User + sys CPU seconds of each native loop.
    native_cpu: Vec<f64>,
    /// Each Daft process's wall time (empty without Daft).
    daft: Vec<f64>,
    rows_out: u64,
}

fn rate(per_s: f64) -> String {
    if per_s >= 1e6 { format!("{:.2} M", per_s / 1e6) } else { format!("{:.0} K", per_s / 1e3) }
}

// ---------------------------------------------------------------------------
// flumen

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Runs `query` checkpointed with N-way operators in one process and spread over an
/// `workers`-worker cluster; checks both wrote `rows` rows and returns both wall times.
fn on_cluster(dir: &Path, query: Query, data: &Path, cache: &Path, workers: u32, rows: u64) -> (f64, f64) {
    let q = query.name();
    let spec = std::fs::read_to_string(write_job(dir, query, data)).expect("the job");
    let ck = format!("{q}-cluster-ck");
    let spec = spec.replacen("parallelism = 1\n", &format!("parallelism = {workers}\n"), 1).replacen(
        "\n[[source]]\n",
        &format!("\n[checkpoint]\ninterval_ms = 10000\ndir = {}\n\n[[source]]\nparallelism = 1\n", toml_str(&ck)),
        1,
    );
    let one_path = dir.join(format!("{q}-checkpointed.toml"));
    std::fs::write(&one_path, &spec).expect("write the job");
    let _ = std::fs::remove_dir_all(dir.join(&ck));
    let (one, out) = run_flumen(&one_path, cache);
    assert_eq!(sink_rows(&out), Some(rows), "{q}: the checkpointed one-process run's rows out\n{out}");

    let spread_path = dir.join(format!("{q}-cluster.toml"));
    let spread = spec.replacen("[job]\n", &format!("[job]\nspread = {workers}\n"), 1);
    std::fs::write(&spread_path, spread).expect("write the job");
    let _ = std::fs::remove_dir_all(dir.join(&ck));
    let (on, status) = run_on_cluster(&spread_path, workers, &dir.join("cluster"), cache);
    println!("{q} on {workers} workers: {on:.3} s\n{status}");
    assert!(status.contains(&format!("rows written: {rows}")), "{q}: the cluster's rows out\n{status}");
    (one.as_secs_f64(), on)
}

fn write_job(dir: &Path, query: Query, data: &Path) -> PathBuf {
    let passthrough = Path::new(env!("FLUMEN_TEST_GUEST_DIR")).join("passthrough.wasm");
    let data_name = data.file_name().and_then(|n| n.to_str()).expect("data file name");
    let head = format!(
        "# Nexmark {q}: {what}. Written by benches/w2_nexmark.rs.\n\
         [job]\nname = \"nexmark-{q}\"\nparallelism = 1\nbatch_rows = {BATCH_ROWS}\n\n\
         [[source]]\nid = \"bids\"\nkind = \"parquet\"\npath = {path}\n\n",
        q = query.name(),
        what = query.what(),
        path = toml_str(data_name),
    );
    let ops = match query {
        Query::Q0 => format!(
            "[[operator]]\nid = \"q0\"\nplugin = {}\ninputs = [\"bids\"]\n\n",
            toml_str(&passthrough.display().to_string())
        ),
        Query::Q1 => "[[operator]]\nid = \"q1\"\nplugin = \"map\"\n\
                      config = { columns = [{ name = \"price\", expr = \"price * 0.908\" }] }\ninputs = [\"bids\"]\n\n"
            .to_string(),
        Query::Q2 => "[[operator]]\nid = \"q2_filter\"\nplugin = \"filter\"\n\
                      config = { predicate = \"auction % 123 = 0\" }\ninputs = [\"bids\"]\n\n\
                      [[operator]]\nid = \"q2\"\nplugin = \"project\"\n\
                      config = { columns = [\"auction\", \"price\"] }\ninputs = [\"q2_filter\"]\n\n"
            .to_string(),
        Query::Q14 => {
            let h = Q14_HOUR;
            let time_type = format!(
                "CASE WHEN {h} BETWEEN 8 AND 18 THEN 'dayTime' WHEN {h} <= 6 OR {h} >= 20 THEN 'nightTime' \
                 ELSE 'otherTime' END"
            );
            format!(
                "[[operator]]\nid = \"q14_filter\"\nplugin = \"filter\"\n\
                 config = {{ predicate = \"price * 0.908 > 1000000 AND price * 0.908 < 50000000\" }}\n\
                 inputs = [\"bids\"]\n\n\
                 [[operator]]\nid = \"q14_map\"\nplugin = \"map\"\n\
                 config = {{ columns = [{{ name = \"price\", expr = \"price * 0.908\" }}, \
                 {{ name = \"bid_time_type\", expr = {} }}] }}\ninputs = [\"q14_filter\"]\n\n\
                 [[operator]]\nid = \"q14\"\nplugin = \"project\"\n\
                 config = {{ columns = [\"auction\", \"bidder\", \"price\", \"bid_time_type\", \"date_time\", \"extra\"] }}\n\
                 inputs = [\"q14_map\"]\n\n",
                toml_str(&time_type)
            )
        }
        Query::Q21 => {
            let id = format!("regexp_extract(url, '{Q21_CHANNEL_ID}', 2)");
            let predicate =
                format!("{id} IS NOT NULL OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')");
            let channel_id = format!(
                "CASE lower(channel) WHEN 'apple' THEN '0' WHEN 'google' THEN '1' WHEN 'facebook' THEN '2' \
                 WHEN 'baidu' THEN '3' ELSE {id} END"
            );
            format!(
                "[[operator]]\nid = \"q21_filter\"\nplugin = \"filter\"\nconfig = {{ predicate = {} }}\n\
                 inputs = [\"bids\"]\n\n\
                 [[operator]]\nid = \"q21_map\"\nplugin = \"map\"\n\
                 config = {{ columns = [{{ name = \"channel_id\", expr = {} }}] }}\ninputs = [\"q21_filter\"]\n\n\
                 [[operator]]\nid = \"q21\"\nplugin = \"project\"\n\
                 config = {{ columns = [\"auction\", \"bidder\", \"price\", \"channel\", \"channel_id\"] }}\n\
                 inputs = [\"q21_map\"]\n\n",
                toml_str(&predicate),
                toml_str(&channel_id)
            )
        }
        Query::Q22 => "[[operator]]\nid = \"q22_map\"\nplugin = \"map\"\n\
                       config = { columns = [\
                       { name = \"dir1\", expr = \"split_part(url, '/', 4)\" }, \
                       { name = \"dir2\", expr = \"split_part(url, '/', 5)\" }, \
                       { name = \"dir3\", expr = \"split_part(url, '/', 6)\" }] }\n\
                       inputs = [\"bids\"]\n\n\
                       [[operator]]\nid = \"q22\"\nplugin = \"project\"\n\
                       config = { columns = [\"auction\", \"bidder\", \"price\", \"channel\", \"dir1\", \"dir2\", \"dir3\"] }\n\
                       inputs = [\"q22_map\"]\n\n"
            .to_string(),
    };
    let sink = format!("[[sink]]\nid = \"out\"\nkind = \"blackhole\"\ninputs = [\"{}\"]\n", query.name());
    let path = dir.join(format!("{}.toml", query.name()));
    std::fs::write(&path, format!("{head}{ops}{sink}"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// User + sys CPU seconds of this process and of its waited-for children,
/// from `/proc/self/stat` (Linux; 10 ms resolution).
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3;
    // utime, stime, cutime and cstime are fields 14 to 17, in clock ticks of 1/100 s.
    let fields: Vec<f64> =
        stat[stat.rfind(')')? + 2..].split_whitespace().map(|f| f.parse().unwrap_or(f64::NAN)).collect();
    let tick = |i: usize| fields.get(i - 3).copied();
    Some(((tick(14)? + tick(15)?) / 100.0, (tick(16)? + tick(17)?) / 100.0))
}

// ---------------------------------------------------------------------------
// Native baseline

fn int64(batch: &RecordBatch, i: usize) -> &Int64Array {
    batch.column(i).as_any().downcast_ref::<Int64Array>().expect("an int64 column")
}

fn utf8(batch: &RecordBatch, i: usize) -> &StringArray {
    batch.column(i).as_any().downcast_ref::<StringArray>().expect("a utf8 column")
}

fn batch_of(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).expect("an output batch")
}

/// q14 over `auction, bidder, price, date_time, extra`.
fn native_q14(batch: &RecordBatch) -> RecordBatch {
    let euros: Float64Array = int64(batch, 2).unary::<_, Float64Type>(|p| p as f64 * 0.908);
    let keep = BooleanArray::from_unary(&euros, |e| e > 1_000_000.0 && e < 50_000_000.0);
    let kept = filter_record_batch(batch, &keep).expect("filter");
    let euros = arrow::compute::filter(&euros, &keep).expect("filter");
    let mut time_type = StringBuilder::new();
    for t in int64(&kept, 3).values() {
        let hour = (t / 3_600_000) % 24;
        time_type.append_value(match hour {
            8..=18 => "dayTime",
            h if h <= 6 || h >= 20 => "nightTime",
            _ => "otherTime",
        });
    }
    batch_of(vec![
        ("auction", kept.column(0).clone()),
        ("bidder", kept.column(1).clone()),
        ("price", euros),
        ("bid_time_type", Arc::new(time_type.finish())),
        ("date_time", kept.column(3).clone()),
        ("extra", kept.column(4).clone()),
    ])
}

/// q21 over `auction, bidder, price, channel, url`.
fn native_q21(batch: &RecordBatch, channel_id: &regex::Regex) -> RecordBatch {
    let (channel, url) = (utf8(batch, 3), utf8(batch, 4));
    let mut keep = Vec::with_capacity(batch.num_rows());
    let mut ids = StringBuilder::new();
    for (c, u) in channel.iter().zip(url.iter()) {
        let (c, u) = (c.unwrap_or_default(), u.unwrap_or_default());
        let extracted = channel_id.captures(u).and_then(|m| m.get(2)).map(|m| m.as_str());
        let known = match c.to_lowercase().as_str() {
            "apple" => Some("0"),
            "google" => Some("1"),
            "facebook" => Some("2"),
            "baidu" => Some("3"),
            _ => None,
        };
        let pass = extracted.is_some() || known.is_some();
        keep.push(pass);
        if pass {
            ids.append_option(known.or(extracted));
        }
    }
    let kept = filter_record_batch(batch, &BooleanArray::from(keep)).expect("filter");
    batch_of(vec![
        ("auction", kept.column(0).clone()),
        ("bidder", kept.column(1).clone()),
        ("price", kept.column(2).clone()),
        ("channel", kept.column(3).clone()),
        ("channel_id", Arc::new(ids.finish())),
    ])
}

/// q22 over `auction, bidder, price, channel, url`.
fn native_q22(batch: &RecordBatch) -> RecordBatch {
    let mut dirs = [StringBuilder::new(), StringBuilder::new(), StringBuilder::new()];
    for u in utf8(batch, 4).iter() {
        let mut parts = u.unwrap_or_default().split('/').skip(3);
        for d in &mut dirs {
            d.append_value(parts.next().unwrap_or(""));
        }
    }
    let [d1, d2, d3] = dirs.map(|mut d| Arc::new(d.finish()) as ArrayRef);
    batch_of(vec![
        ("auction", batch.column(0).clone()),
        ("bidder", batch.column(1).clone()),
        ("price", batch.column(2).clone()),
        ("channel", batch.column(3).clone()),
        ("dir1", d1),
        ("dir2", d2),
        ("dir3", d3),
    ])
}

/// One pass of the native loop; returns its time and the rows it produced.
fn run_native(query: Query, data: &Path) -> (Duration, u64) {
    let q1_schema =
        Arc::new(Schema::new(
            bid_schema()
                .fields()
                .iter()
                .map(|f| {
                    if f.name() == "price" { Field::new("price", DataType::Float64, false) } else { f.as_ref().clone() }
                })
                .collect::<Vec<_>>(),
        ));
    let started = Instant::now();
    let file = File::open(data).unwrap_or_else(|e| panic!("cannot open {}: {e}", data.display()));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("Parquet metadata");
    // Each query decodes only the columns it reads (as flumen's plan does),
    // so the baseline is not handicapped.
    let roots: Option<&[usize]> = match query {
        Query::Q0 | Query::Q1 => None,
        Query::Q2 => Some(&[0, 2]),
        Query::Q14 => Some(&[0, 1, 2, 5, 6]),
        Query::Q21 | Query::Q22 => Some(&[0, 1, 2, 3, 4]),
    };
    let builder = match roots {
        Some(roots) => {
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
            builder.with_projection(mask)
        }
        None => builder,
    };
    let channel_id = regex::Regex::new(Q21_CHANNEL_ID).expect("q21's pattern");
    let reader = builder.with_batch_size(BATCH_ROWS).build().expect("Parquet reader");
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.expect("reading Parquet");
        let out = match query {
            Query::Q0 => batch,
            Query::Q1 => {
                let price = batch.column(2).as_any().downcast_ref::<Int64Array>().expect("price is int64");
                let euros: Float64Array = price.unary::<_, Float64Type>(|p| p as f64 * 0.908);
                let mut columns = batch.columns().to_vec();
                columns[2] = Arc::new(euros);
                RecordBatch::try_new(q1_schema.clone(), columns).expect("q1 batch")
            }
            Query::Q2 => {
                let auction = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("auction is int64");
                let keep = BooleanArray::from_unary(auction, |a| a % 123 == 0);
                filter_record_batch(&batch, &keep).expect("filter")
            }
            Query::Q14 => native_q14(&batch),
            Query::Q21 => native_q21(&batch, &channel_id),
            Query::Q22 => native_q22(&batch),
        };
        rows += out.num_rows() as u64;
        black_box(out);
    }
    (started.elapsed(), rows)
}

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Daft, beside

mod daft {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::Query;
    use super::process::target_dir;

    fn has_daft(python: &Path) -> bool {
        Command::new(python).args(["-c", "import daft"]).output().is_ok_and(|o| o.status.success())
    }

    /// The Python of `target/daft-venv`, made and given Daft from PyPI when
    /// missing; `None`, saying why, when that cannot be done (no network, no venv module).
    pub(super) fn python() -> Option<PathBuf> {
        let venv = target_dir().join("daft-venv");
        let python = venv.join("bin").join("python");
        if has_daft(&python) {
            return Some(python);
        }
        println!("making {} with Daft from PyPI (once)…", venv.display());
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
        let installed = made
            && Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "daft"])
                .status()
                .is_ok_and(|s| s.success());
        if installed && has_daft(&python) {
            Some(python)
        } else {
            println!("Daft: cannot make {} with Daft; W2 runs without it", venv.display());
            None
        }
    }

    /// One whole Daft process running `query` over `data`: its time and the rows it counted.
    pub(super) fn run(python: &Path, query: Query, data: &Path) -> (Duration, u64) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("peers").join("daft_w2.py");
        let started = Instant::now();
        let out = Command::new(python)
            .arg(&script)
            .arg(query.name())
            .arg(data)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "Daft {}: {}\n{}", query.name(), text, String::from_utf8_lossy(&out.stderr));
        let rows = text
            .lines()
            .find_map(|l| l.strip_prefix("rows="))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("Daft {}: no `rows=` in its output: {text}", query.name()));
        (took, rows)
    }
}
