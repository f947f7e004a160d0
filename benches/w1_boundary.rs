//! W1: the cost of running a function as a Wasm operator instead of a native Arrow kernel.
//!
//! For 1 K, 8 K and 64 K-row batches it compares, on the same batches:
//!
//! - `gcd(a, b)` over two int32 columns: a native loop (the binary GCD of the
//!   `expr` crate) against the `map` plugin (`gcd(a, b)` as column `g`);
//! - the host of a URL over a utf8 column: a native byte scan against the
//!   `strings` plugin (`function = "url-host"`);
//!
//! and measures the fixed cost of one call (a 1-row batch through the
//! `passthrough` test guest) and instantiation from a pre-instantiated
//! component (`OperatorFactory::instantiate`, which includes `open`).
//!
//! Criterion runs every case first; then a summary samples each Wasm case and
//! its native baseline alternately (so both see the same machine state) and
//! prints medians, spreads and Wasm/native ratios, plus a breakdown of where a
//! Wasm call spends its time. `cargo bench --bench w1_boundary` does both;
//! `W1_SUMMARY_ONLY=1` skips criterion, `W1_ROUNDS` sets the summary's rounds.
//! Nothing here asserts on timings: the only checks are that each plugin
//! computes exactly what its native baseline computes.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::datatypes::SchemaRef;
use arrow_array::builder::NullBufferBuilder;
use arrow_array::{Array, RecordBatch, StringArray};
use criterion::{BenchmarkId, Criterion, Throughput};
use flumen_batch::{ColumnParts, FlatBatch};
use flumen_wasm::{OpenContext, OperatorFactory, OperatorInstance};
use tokio::runtime::Runtime;

const SIZES: [usize; 3] = [1024, 8192, 65536];

// Builds the plugins and test guests this benchmark uses (the build script
// builds only the core plugins).
#[path = "../host/cli/src/guests.rs"]
mod guests;

// Data, native baselines, loading components, timing and medians, shared with `w1_languages`.
#[path = "common/w1.rs"]
mod w1;
use w1::*;

fn main() {
    guests::ensure_all();
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let summary_only = std::env::var_os("W1_SUMMARY_ONLY").is_some_and(|v| v != "0");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    let wasm = Wasm::new();
    let mut cases = Cases::new(&rt, &wasm);

    if !summary_only {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(30)
            .configure_from_args();
        cases.criterion(&mut c);
        c.final_summary();
    }
    // `-- --profile-time N` runs criterion's cases for a profiler, nothing else.
    if std::env::args().any(|a| a == "--profile-time") {
        return;
    }
    // Under `cargo test --benches` (no `--bench`) the summary only smoke-tests.
    let rounds =
        std::env::var("W1_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(if bench_mode { 15 } else { 1 });
    let sample = if bench_mode { Duration::from_millis(20) } else { Duration::from_micros(200) };
    cases.summary(rounds, sample);
}

/// The same, built the way the `expr` crate's `map_strings` builds it (into a
/// byte vector, then `StringArray::try_new`, which validates the UTF-8 of the
/// result again). Used only in the breakdown, to price that check.
fn native_url_host_expr_style(urls: &StringArray) -> StringArray {
    let mut values = Vec::with_capacity(urls.value_data().len());
    let mut offsets = Vec::with_capacity(urls.len() + 1);
    offsets.push(0i32);
    let mut nulls = NullBufferBuilder::new(urls.len());
    for i in 0..urls.len() {
        let host = urls.is_valid(i).then(|| url_host_of(urls.value(i))).flatten();
        if let Some(h) = host {
            values.extend_from_slice(h.as_bytes());
        }
        nulls.append(host.is_some());
        offsets.push(i32::try_from(values.len()).expect("offsets fit i32"));
    }
    StringArray::try_new(OffsetBuffer::new(offsets.into()), Buffer::from_vec(values), nulls.finish())
        .expect("valid utf8")
}

/// What the host does with one emitted batch, minus the canonical ABI: copy
/// every buffer into a fresh aligned Arrow buffer and validate the whole batch.
fn host_reassemble(batch: &RecordBatch) -> RecordBatch {
    let flat = FlatBatch::new(batch);
    let parts = flat
        .views()
        .iter()
        .map(|v| ColumnParts {
            len: v.len,
            offset: v.offset,
            validity: v.validity.map(|(bits, off)| (Buffer::from(bits), off)),
            buffers: v.buffers.iter().map(|b| Buffer::from(*b)).collect(),
        })
        .collect();
    flumen_batch::assemble_batch(batch.schema_ref(), batch.num_rows() as u64, parts).expect("valid batch")
}

/// Only the copy of [`host_reassemble`]: every buffer into a fresh aligned Arrow buffer.
fn host_copy(batch: &RecordBatch) -> Vec<Buffer> {
    let flat = FlatBatch::new(batch);
    flat.views()
        .iter()
        .flat_map(|v| v.validity.map(|(bits, _)| bits).into_iter().chain(v.buffers.iter().copied()))
        .map(Buffer::from)
        .collect()
}

// ---------------------------------------------------------------------------
// Wasm side

fn plugin(name: &str) -> PathBuf {
    Path::new(env!("FLUMEN_PLUGIN_DIR")).join(format!("{name}.wasm"))
}

fn test_guest(name: &str) -> PathBuf {
    Path::new(env!("FLUMEN_TEST_GUEST_DIR")).join(format!("{name}.wasm"))
}
// ---------------------------------------------------------------------------
// Cases

/// Calls `process` `iters` times inside one `block_on`, so the executor's
/// entry cost is not counted per call.
fn wasm_routine<'a>(rt: &'a Runtime, mut instance: OperatorInstance, batch: RecordBatch) -> Routine<'a> {
    Box::new(move |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let out = instance.process(0, &batch).await.unwrap_or_else(|e| panic!("process: {e}"));
                black_box(out);
            }
            start.elapsed()
        })
    })
}

/// Instantiates (and opens) `iters` instances; dropping each is not timed.
fn instantiate_routine<'a>(rt: &'a Runtime, factory: OperatorFactory, ctx: OpenContext) -> Routine<'a> {
    Box::new(move |iters| {
        rt.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let instance = factory.instantiate(&ctx).await.unwrap_or_else(|e| panic!("instantiate: {e}"));
                total += start.elapsed();
                drop(black_box(instance));
            }
            total
        })
    })
}

/// Drops `iters` freshly made instances; only the drops are timed.
fn drop_routine<'a>(rt: &'a Runtime, factory: OperatorFactory, ctx: OpenContext) -> Routine<'a> {
    Box::new(move |iters| {
        rt.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let instance = factory.instantiate(&ctx).await.unwrap_or_else(|e| panic!("instantiate: {e}"));
                let start = Instant::now();
                drop(black_box(instance));
                total += start.elapsed();
            }
            total
        })
    })
}

struct Case<'a> {
    /// Criterion group, or `None` for summary-only diagnostics.
    group: Option<&'static str>,
    name: String,
    rows: usize,
    routine: Routine<'a>,
}

struct Cases<'a> {
    cases: Vec<Case<'a>>,
}

impl<'a> Cases<'a> {
    fn new(rt: &'a Runtime, wasm: &Wasm) -> Self {
        let map = wasm.factory(&plugin("map"), "w1-map");
        let strings = wasm.factory(&plugin("strings"), "w1-strings");
        let passthrough = wasm.factory(&test_guest("passthrough"), "w1-passthrough");
        let gcd_cfg = serde_json::json!({ "columns": [{ "name": "g", "expr": "gcd(a, b)" }] });
        let host_cfg = serde_json::json!({ "column": "url", "function": "url-host", "output": "host" });
        let map_ctx = open_ctx("w1-map", gcd_cfg, &int_schema());
        let strings_ctx = open_ctx("w1-strings", host_cfg, &url_schema());
        let pass_int_ctx = open_ctx("w1-passthrough", serde_json::json!({}), &int_schema());
        let pass_url_ctx = open_ctx("w1-passthrough", serde_json::json!({}), &url_schema());

        let mut cases = Vec::new();
        let mut push =
            |group, name: &str, rows, routine| cases.push(Case { group, name: name.to_string(), rows, routine });
        for (i, &rows) in SIZES.iter().enumerate() {
            let ints = int_batch(rows, 42 + i as u64);
            let urls = url_batch(rows, 4242 + i as u64);

            // gcd: the plugin must agree with the native kernel.
            let mut inst = instantiate(rt, &map, &map_ctx);
            let got = call(rt, &mut inst, &ints);
            let gcd_schema = got.schema();
            let want = native_map_gcd(&ints, &gcd_schema);
            assert_eq!(got, want, "map gcd(a, b) differs from the native kernel at {rows} rows");
            push(
                Some("gcd"),
                "native",
                rows,
                native_routine({
                    let (ints, schema) = (ints.clone(), gcd_schema.clone());
                    move || native_map_gcd(&ints, &schema)
                }),
            );
            push(Some("gcd"), "wasm", rows, wasm_routine(rt, inst, ints.clone()));

            // url-host: likewise.
            let mut inst = instantiate(rt, &strings, &strings_ctx);
            let got = call(rt, &mut inst, &urls);
            let host_schema = got.schema();
            let want = native_strings_host(&urls, &host_schema);
            assert_eq!(got, want, "strings url-host differs from the native kernel at {rows} rows");
            push(
                Some("url-host"),
                "native",
                rows,
                native_routine({
                    let (urls, schema) = (urls.clone(), host_schema.clone());
                    move || native_strings_host(&urls, &schema)
                }),
            );
            push(Some("url-host"), "wasm", rows, wasm_routine(rt, inst, urls.clone()));

            // Breakdown (summary only): the boundary without compute, the
            // host's share of an emit, the expr-style string build.
            let inst = instantiate(rt, &passthrough, &pass_int_ctx);
            push(None, "passthrough a,b", rows, wasm_routine(rt, inst, ints.clone()));
            let inst = instantiate(rt, &passthrough, &pass_url_ctx);
            push(None, "passthrough url", rows, wasm_routine(rt, inst, urls.clone()));
            push(
                None,
                "host copy+validate a,b,g",
                rows,
                native_routine({
                    let batch = want_gcd(&ints, &gcd_schema);
                    move || host_reassemble(&batch)
                }),
            );
            push(
                None,
                "host copy+validate url,host",
                rows,
                native_routine({
                    let batch = want.clone();
                    move || host_reassemble(&batch)
                }),
            );
            push(
                None,
                "host copy a,b,g",
                rows,
                native_routine({
                    let batch = want_gcd(&ints, &gcd_schema);
                    move || host_copy(&batch)
                }),
            );
            push(
                None,
                "host copy url,host",
                rows,
                native_routine({
                    let batch = want.clone();
                    move || host_copy(&batch)
                }),
            );
            push(
                None,
                "native url-host, expr-style build",
                rows,
                native_routine({
                    let urls = urls.clone();
                    move || {
                        let a = urls.column(0).as_any().downcast_ref::<StringArray>().expect("utf8");
                        native_url_host_expr_style(a)
                    }
                }),
            );
        }

        // Fixed cost per call: one row through the passthrough guest.
        let one = int_batch(1, 7);
        let inst = instantiate(rt, &passthrough, &pass_int_ctx);
        push(Some("call"), "passthrough-1-row", 1, wasm_routine(rt, inst, one.clone()));
        // Its parts: a call that emits nothing (a filter dropping the row),
        // and the host's copy and validation of the emitted batch.
        let filter = wasm.factory(&plugin("filter"), "w1-filter");
        let drop_all = open_ctx("w1-filter", serde_json::json!({ "predicate": "a < 0" }), &int_schema());
        let mut inst = instantiate(rt, &filter, &drop_all);
        let out = rt.block_on(inst.process(0, &one)).unwrap_or_else(|e| panic!("process: {e}"));
        assert!(out.is_empty(), "the filter should emit nothing");
        push(None, "filter-1-row-emits-nothing", 1, wasm_routine(rt, inst, one.clone()));
        push(None, "host copy+validate 1-row", 1, native_routine(move || host_reassemble(&one)));
        // Instantiation from the pre-instantiated component, `open` included.
        push(Some("instantiate"), "passthrough", 1, instantiate_routine(rt, passthrough.clone(), pass_int_ctx.clone()));
        push(Some("instantiate"), "map-gcd", 1, instantiate_routine(rt, map.clone(), map_ctx.clone()));
        push(None, "drop passthrough instance", 1, drop_routine(rt, passthrough.clone(), pass_int_ctx));
        Self { cases }
    }

    fn criterion(&mut self, c: &mut Criterion) {
        for group_name in ["gcd", "url-host", "call", "instantiate"] {
            let mut group = c.benchmark_group(format!("w1/{group_name}"));
            for case in self.cases.iter_mut().filter(|c| c.group == Some(group_name)) {
                group.throughput(Throughput::Elements(case.rows as u64));
                let routine = &mut case.routine;
                group.bench_function(BenchmarkId::new(case.name.clone(), case.rows), |b| b.iter_custom(&mut *routine));
            }
            group.finish();
        }
    }

    fn find(&self, group: Option<&str>, name: &str, rows: usize) -> usize {
        self.cases
            .iter()
            .position(|c| c.group == group && c.name == name && c.rows == rows)
            .unwrap_or_else(|| panic!("no case {group:?}/{name}/{rows}"))
    }

    /// Samples the given cases in turn, `rounds` times (so neighbours in a
    /// round see the same machine state); returns each case's ns/iteration.
    fn sample(&mut self, keys: &[(Option<&str>, &str, usize)], rounds: usize, target: Duration) -> Vec<Vec<f64>> {
        let idx: Vec<usize> = keys.iter().map(|&(g, n, r)| self.find(g, n, r)).collect();
        // Calibrate: iterations per sample so each sample takes about `target`.
        let iters: Vec<u64> = idx.iter().map(|&i| calibrate(&mut self.cases[i].routine, target)).collect();
        let mut out = vec![Vec::with_capacity(rounds); idx.len()];
        for _ in 0..rounds {
            for (k, &i) in idx.iter().enumerate() {
                let t = (self.cases[i].routine)(iters[k]);
                out[k].push(t.as_secs_f64() * 1e9 / iters[k] as f64);
            }
        }
        out
    }

    /// Minor page faults of this process per iteration of a case, where `/proc` tells.
    fn faults_per_iter(&mut self, (group, name, rows): (Option<&str>, &str, usize), iters: u64) -> Option<f64> {
        let i = self.find(group, name, rows);
        let before = minor_faults()?;
        (self.cases[i].routine)(iters);
        let after = minor_faults()?;
        Some(after.saturating_sub(before) as f64 / iters as f64)
    }

    fn summary(&mut self, rounds: usize, target: Duration) {
        println!();
        println!(
            "W1 summary: median of {rounds} rounds, each timing the native and the Wasm case back to back (min–max);"
        );
        println!("the ratio is the median of the per-round ratios.");
        println!();
        println!("| function | rows | native µs/batch | wasm µs/batch | wasm/native (min–max) | wasm ns/row |");
        println!("|---|---:|---:|---:|---:|---:|");
        for group in ["gcd", "url-host"] {
            for &rows in &SIZES {
                let s = self.sample(&[(Some(group), "native", rows), (Some(group), "wasm", rows)], rounds, target);
                let ratios: Vec<f64> = s[1].iter().zip(&s[0]).map(|(w, n)| w / n).collect();
                println!(
                    "| {group} | {rows} | {} | {} | {} | {:.1} |",
                    fmt_us(&s[0]),
                    fmt_us(&s[1]),
                    fmt_ratio(&ratios),
                    median(&s[1]) / rows as f64
                );
            }
        }

        println!();
        let s = self.sample(
            &[
                (Some("call"), "passthrough-1-row", 1),
                (None, "filter-1-row-emits-nothing", 1),
                (None, "host copy+validate 1-row", 1),
                (Some("instantiate"), "passthrough", 1),
                (Some("instantiate"), "map-gcd", 1),
                (None, "drop passthrough instance", 1),
            ],
            rounds,
            target,
        );
        println!("| per call / per instance | median | min–max |");
        println!("|---|---:|---:|");
        for (label, s) in [
            ("fixed cost per call (1-row batch, passthrough guest)", &s[0]),
            ("part of it: a call that emits nothing (filter `a < 0`, 1 row)", &s[1]),
            ("part of it: the host's copy + validation of a 1-row batch (no Wasm)", &s[2]),
        ] {
            println!("| {label} | {:.0} ns | {:.0}–{:.0} ns |", median(s), min(s), max(s));
        }
        for (label, s) in [
            ("instantiate + open (passthrough)", &s[3]),
            ("instantiate + open (map, gcd)", &s[4]),
            ("drop an instance (passthrough; not in the line above)", &s[5]),
        ] {
            println!("| {label} | {:.1} µs | {:.1}–{:.1} µs |", median(s) / 1e3, min(s) / 1e3, max(s) / 1e3);
        }
        // Minor page faults (Linux): instantiating from the pooling allocator
        // touches fresh pages of the slot, which the previous drop decommitted.
        for (label, key, iters) in [
            (
                "minor page faults per call (1-row batch, passthrough guest)",
                (Some("call"), "passthrough-1-row", 1),
                20_000,
            ),
            (
                "minor page faults per instantiate + open + drop (passthrough)",
                (Some("instantiate"), "passthrough", 1),
                2_000,
            ),
            ("minor page faults per instantiate + open + drop (map, gcd)", (Some("instantiate"), "map-gcd", 1), 1_000),
        ] {
            if let Some(f) = self.faults_per_iter(key, iters) {
                println!("| {label} | {f:.1} | – |");
            }
        }

        let rounds = rounds.div_ceil(3);
        println!();
        println!("Where a Wasm call's time goes (µs per batch, medians of {rounds} rounds):");
        println!();
        println!(
            "| function | rows | wasm call | passthrough guest, same input | host: copy the output | \
             host: copy + validate the output | native kernel | native, expr-style string build |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for &rows in &SIZES {
            let d = self.sample(
                &[
                    (Some("gcd"), "wasm", rows),
                    (None, "passthrough a,b", rows),
                    (None, "host copy a,b,g", rows),
                    (None, "host copy+validate a,b,g", rows),
                    (Some("gcd"), "native", rows),
                    (Some("url-host"), "wasm", rows),
                    (None, "passthrough url", rows),
                    (None, "host copy url,host", rows),
                    (None, "host copy+validate url,host", rows),
                    (Some("url-host"), "native", rows),
                    (None, "native url-host, expr-style build", rows),
                ],
                rounds,
                target,
            );
            let m = |s: &Vec<f64>| format!("{:.1}", median(s) / 1e3);
            println!("| gcd | {rows} | {} | {} | {} | {} | {} | – |", m(&d[0]), m(&d[1]), m(&d[2]), m(&d[3]), m(&d[4]));
            let u = &d[5..];
            println!(
                "| url-host | {rows} | {} | {} | {} | {} | {} | {} |",
                m(&u[0]),
                m(&u[1]),
                m(&u[2]),
                m(&u[3]),
                m(&u[4]),
                m(&u[5])
            );
        }
    }
}

/// The `map` plugin's expected output for `ints` (the input with `g` appended).
fn want_gcd(ints: &RecordBatch, schema: &SchemaRef) -> RecordBatch {
    native_map_gcd(ints, schema)
}

/// `minflt` of `/proc/self/stat` (Linux only).
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

fn fmt_us(s: &[f64]) -> String {
    format!("{:.1} ({:.1}–{:.1})", median(s) / 1e3, min(s) / 1e3, max(s) / 1e3)
}

fn fmt_ratio(r: &[f64]) -> String {
    format!("{:.2}× ({:.2}–{:.2})", median(r), min(r), max(r))
}
