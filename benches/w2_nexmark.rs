//! W2: Nexmark q0, q1 and q2 over the Bid stream, as whole `flumen run` processes
//! against a native single-thread Rust Arrow loop over the same Parquet file.
//!
//! 1. Generates `target/nexmark/bids-<N>.parquet` once (N Bid events of the
//!    `nexmark` crate, fixed base time, 64 K-row row groups, Snappy).
//! 2. Writes one job spec per query into `target/nexmark/` (parallelism 1,
//!    64 K-row batches, blackhole sink):
//!    q0 source → `passthrough` test guest; q1 → `map` `price * 0.908` in place;
//!    q2 → `filter` `auction % 123 = 0` → `project` `auction, price`.
//! 3. Runs each job with the built `flumen` binary (`flumen run --quiet`),
//!    timing the whole process, after one warm-up run that fills the
//!    compiled-component cache; each timed run is followed by a run of the
//!    native loop (ParquetRecordBatchReader, the same kernel or filter, the
//!    result dropped; for q2 it decodes only the two columns it reads, as
//!    flumen's plan does), timed in-process.
//! 4. Prints a table: median (min–max) of each, the ratio and events/s.
//!
//! `W2_EVENTS` (default 10 000 000) sets N, `W2_RUNS` (default 3) the runs.
//! No timing is asserted; the native loop's row counts are checked against
//! the sink counts flumen reports.

use std::fs::File;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

#[path = "common/process.rs"]
mod process;
#[path = "common/stats.rs"]
mod stats;
use process::{env_or, job_seconds, run_flumen, sink_rows, target_dir};
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
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Query::Q0 => "pass-through (passthrough guest)",
            Query::Q1 => "map price * 0.908",
            Query::Q2 => "filter auction % 123 = 0, project auction, price",
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
    let dir = target_dir().join("nexmark");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));

    let data = nexmark_bids::bids_file(&dir, events);

    let cache = dir.join("component-cache");
    let mut rows: Vec<Row> = Vec::new();
    let mut summaries = Vec::new();
    for query in [Query::Q0, Query::Q1, Query::Q2] {
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
        rows.push(Row { query, flumen, native, ratios, job_s, flumen_cpu, native_cpu, rows_out: native_rows });
        summaries.push((query, last_out));
    }

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
    // q2 reads only `auction` and `price`: a careful native loop decodes only
    // those (as flumen's plan does), so the baseline is not handicapped.
    let builder = match query {
        Query::Q2 => {
            let mask = ProjectionMask::roots(builder.parquet_schema(), [0, 2]);
            builder.with_projection(mask)
        }
        Query::Q0 | Query::Q1 => builder,
    };
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
        };
        rows += out.num_rows() as u64;
        black_box(out);
    }
    (started.elapsed(), rows)
}

// ---------------------------------------------------------------------------
