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
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_array::builder::{NullBufferBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, Int32Array, RecordBatch, StringArray};
use criterion::{BenchmarkId, Criterion, Throughput};
use flumen_batch::{ColumnParts, FlatBatch};
use flumen_types::OperatorLimits;
use flumen_wasm::{Capabilities, OpenContext, OperatorFactory, OperatorInstance, RuntimeConfig, WasmRuntime};
use tokio::runtime::Runtime;

const SIZES: [usize; 3] = [1024, 8192, 65536];

// Builds the plugins and test guests this benchmark uses (the build script
// builds only the core plugins).
#[path = "../host/cli/src/guests.rs"]
mod guests;

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

// ---------------------------------------------------------------------------
// Data

/// SplitMix64: a tiny seeded generator, so the data are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn int_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false), Field::new("b", DataType::Int32, false)]))
}

/// Two int32 columns of positive values below 2^24 with a common factor now
/// and then, so the GCD loop runs a realistic number of steps.
fn int_batch(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = Rng(seed);
    let mut a = Vec::with_capacity(rows);
    let mut b = Vec::with_capacity(rows);
    for _ in 0..rows {
        let k = [1, 1, 2, 3, 6, 12][rng.below(6) as usize];
        a.push((rng.below(1 << 22) as i32 + 1) * k);
        b.push((rng.below(1 << 22) as i32 + 1) * k);
    }
    RecordBatch::try_new(int_schema(), vec![Arc::new(Int32Array::from(a)), Arc::new(Int32Array::from(b))])
        .expect("int batch")
}

fn url_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("url", DataType::Utf8, false)]))
}

/// Realistic URLs (60–100 bytes): mostly `https://www.hostN.example.com/path/M?q=..`,
/// some plain `http`, some with a port, some with user info, a few not URLs at all.
fn url_batch(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = Rng(seed);
    let mut b = StringBuilder::with_capacity(rows, rows * 90);
    for _ in 0..rows {
        let host = rng.below(20_000);
        let path = rng.below(1_000_000);
        let q = rng.next() & 0xffff_ffff;
        let url = match rng.below(100) {
            0..=79 => format!("https://www.host{host}.example.com/path/{path}/item?q={q:x}&ref=nexmark&lang=en"),
            80..=89 => format!("http://shop{host}.example.org/cart/{path}?session={q:x}"),
            90..=94 => format!("https://api.host{host}.example.net:8443/v2/items/{path}#section-{q}"),
            95..=97 => format!("https://user{q}@git.host{host}.example.io/repo/{path}.git"),
            _ => format!("ftp://mirror{host}.example.com/pub/{path}.tar.gz"),
        };
        b.append_value(url);
    }
    RecordBatch::try_new(url_schema(), vec![Arc::new(b.finish())]).expect("url batch")
}

// ---------------------------------------------------------------------------
// Native baselines

/// Stein's binary GCD, as in `plugins/expr/src/kernels/gcd.rs`.
#[inline]
fn gcd_u64(mut a: u64, mut b: u64) -> u64 {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

/// `gcd(a, b)` over two int32 arrays: one loop over the value slices, the
/// same overflow flag as the `expr` kernel (checked, never hit by these data).
fn native_gcd(a: &Int32Array, b: &Int32Array) -> Int32Array {
    let mut overflow = false;
    let values: Vec<i32> = a
        .values()
        .iter()
        .zip(b.values().iter())
        .map(|(&x, &y)| {
            let g = gcd_u64(u64::from(x.unsigned_abs()), u64::from(y.unsigned_abs()));
            overflow |= g > i32::MAX as u64;
            g as i32
        })
        .collect();
    assert!(!overflow, "gcd overflowed on benchmark data");
    Int32Array::new(ScalarBuffer::from(values), NullBuffer::union(a.nulls(), b.nulls()))
}

/// What the `map` plugin computes: the input with `g = gcd(a, b)` appended.
fn native_map_gcd(batch: &RecordBatch, out_schema: &SchemaRef) -> RecordBatch {
    let a = batch.column(0).as_any().downcast_ref::<Int32Array>().expect("a is int32");
    let b = batch.column(1).as_any().downcast_ref::<Int32Array>().expect("b is int32");
    let g: ArrayRef = Arc::new(native_gcd(a, b));
    let mut columns = batch.columns().to_vec();
    columns.push(g);
    RecordBatch::try_new(out_schema.clone(), columns).expect("gcd batch")
}

/// The host of an http(s) URL: a byte scan after `://` up to `/ ? #`, less
/// `user@` and `:port` (a bracketed IPv6 host keeps its brackets). The same
/// rules as the `url_host` kernel of the `expr` crate.
#[inline]
fn url_host_of(url: &str) -> Option<&str> {
    let b = url.as_bytes();
    let start = if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else if b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else {
        return None;
    };
    let end = b[start..].iter().position(|c| matches!(c, b'/' | b'?' | b'#')).map_or(b.len(), |i| start + i);
    let host_start = start + b[start..end].iter().rposition(|&c| c == b'@').map_or(0, |i| i + 1);
    let host = &b[host_start..end];
    let host_len = if host.first() == Some(&b'[') {
        host.iter().position(|&c| c == b']')? + 1
    } else {
        host.iter().position(|&c| c == b':').unwrap_or(host.len())
    };
    if host_len == 0 {
        return None;
    }
    url.get(host_start..host_start + host_len)
}

/// `url_host` over a utf8 array with a `StringBuilder` (no UTF-8 re-check:
/// every host is a `&str` slice of a valid string).
fn native_url_host(urls: &StringArray) -> StringArray {
    let mut out = StringBuilder::with_capacity(urls.len(), urls.value_data().len() / 2);
    for i in 0..urls.len() {
        match urls.is_valid(i).then(|| url_host_of(urls.value(i))).flatten() {
            Some(h) => out.append_value(h),
            None => out.append_null(),
        }
    }
    out.finish()
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

/// What the `strings` plugin computes: the input with `host` appended.
fn native_strings_host(batch: &RecordBatch, out_schema: &SchemaRef) -> RecordBatch {
    let urls = batch.column(0).as_any().downcast_ref::<StringArray>().expect("url is utf8");
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(native_url_host(urls)));
    RecordBatch::try_new(out_schema.clone(), columns).expect("host batch")
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

struct Wasm {
    runtime: WasmRuntime,
}

impl Wasm {
    fn new() -> Self {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
        let runtime = WasmRuntime::new(RuntimeConfig { cache_dir: Some(cache), ..RuntimeConfig::default() })
            .expect("wasm runtime");
        Self { runtime }
    }

    fn factory(&self, path: &Path, id: &str) -> OperatorFactory {
        assert!(path.is_file(), "{} is missing: building the root package builds it", path.display());
        let loaded = self.runtime.load_component(path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        OperatorFactory::new(&self.runtime, &loaded, id, Capabilities::default(), OperatorLimits::default())
            .unwrap_or_else(|e| panic!("linking {}: {e}", path.display()))
    }
}

fn plugin(name: &str) -> PathBuf {
    Path::new(env!("FLUMEN_PLUGIN_DIR")).join(format!("{name}.wasm"))
}

fn test_guest(name: &str) -> PathBuf {
    Path::new(env!("FLUMEN_TEST_GUEST_DIR")).join(format!("{name}.wasm"))
}

fn open_ctx(id: &str, config: serde_json::Value, input: &SchemaRef) -> OpenContext {
    OpenContext {
        operator_id: id.to_string(),
        subtask: 0,
        parallelism: 1,
        config_json: config.to_string(),
        inputs: vec![input.clone()],
        state: None,
        blobs: None,
        inference: None,
    }
}

fn instantiate(rt: &Runtime, factory: &OperatorFactory, ctx: &OpenContext) -> OperatorInstance {
    rt.block_on(factory.instantiate(ctx)).unwrap_or_else(|e| panic!("instantiating {}: {e}", ctx.operator_id))
}

/// One call through `instance`, checked: exactly one batch out.
fn call(rt: &Runtime, instance: &mut OperatorInstance, batch: &RecordBatch) -> RecordBatch {
    let mut out = rt.block_on(instance.process(0, batch)).unwrap_or_else(|e| panic!("process: {e}"));
    assert_eq!(out.len(), 1, "expected one batch out");
    out.remove(0)
}

// ---------------------------------------------------------------------------
// Cases

/// Runs `iters` iterations and returns the time they took.
type Routine<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

fn native_routine<'a, T: 'a>(mut f: impl FnMut() -> T + 'a) -> Routine<'a> {
    Box::new(move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        start.elapsed()
    })
}

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
        let iters: Vec<u64> = idx
            .iter()
            .map(|&i| {
                let routine = &mut self.cases[i].routine;
                routine(3);
                let mut n = 1u64;
                loop {
                    let t = routine(n);
                    if t >= target / 4 || n >= 1 << 30 {
                        let per = t.as_secs_f64() / n as f64;
                        break ((target.as_secs_f64() / per.max(1e-9)) as u64).clamp(1, 1 << 30);
                    }
                    n *= 4;
                }
            })
            .collect();
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

fn sorted(s: &[f64]) -> Vec<f64> {
    let mut v = s.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn median(s: &[f64]) -> f64 {
    let v = sorted(s);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

fn min(s: &[f64]) -> f64 {
    s.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(s: &[f64]) -> f64 {
    s.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn fmt_us(s: &[f64]) -> String {
    format!("{:.1} ({:.1}–{:.1})", median(s) / 1e3, min(s) / 1e3, max(s) / 1e3)
}

fn fmt_ratio(r: &[f64]) -> String {
    format!("{:.2}× ({:.2}–{:.2})", median(r), min(r), max(r))
}
