//! What the W1 benches share (`#[path]`-included by `w1_boundary` and
//! `w1_languages`): the seeded int32 and URL batches, the native baselines
//! (Stein's binary GCD of the `expr` crate, the URL-host byte scan), loading
//! components into a runtime with a compiled-component cache, one checked
//! call, timing routines, and medians.

#![allow(dead_code, reason = "each includer uses a part of this module")]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, Int32Array, RecordBatch, StringArray};
use flumen_types::OperatorLimits;
use flumen_wasm::{Capabilities, OpenContext, OperatorFactory, OperatorInstance, RuntimeConfig, WasmRuntime};
use tokio::runtime::Runtime;

// ---------------------------------------------------------------------------
// Data

/// SplitMix64: a tiny seeded generator, so the data are the same on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn int_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false), Field::new("b", DataType::Int32, false)]))
}

/// Two int32 columns of positive values below 2^24 with a common factor now
/// and then, so the GCD loop runs a realistic number of steps.
pub fn int_batch(rows: usize, seed: u64) -> RecordBatch {
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

pub fn url_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("url", DataType::Utf8, false)]))
}

/// Realistic URLs (60–100 bytes): mostly `https://www.hostN.example.com/path/M?q=..`,
/// some plain `http`, some with a port, some with user info, a few not URLs at all.
pub fn url_batch(rows: usize, seed: u64) -> RecordBatch {
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
pub fn gcd_u64(mut a: u64, mut b: u64) -> u64 {
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
pub fn native_gcd(a: &Int32Array, b: &Int32Array) -> Int32Array {
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
pub fn native_map_gcd(batch: &RecordBatch, out_schema: &SchemaRef) -> RecordBatch {
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
pub fn url_host_of(url: &str) -> Option<&str> {
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
pub fn native_url_host(urls: &StringArray) -> StringArray {
    let mut out = StringBuilder::with_capacity(urls.len(), urls.value_data().len() / 2);
    for i in 0..urls.len() {
        match urls.is_valid(i).then(|| url_host_of(urls.value(i))).flatten() {
            Some(h) => out.append_value(h),
            None => out.append_null(),
        }
    }
    out.finish()
}

/// What the `strings` plugin computes: the input with `host` appended.
pub fn native_strings_host(batch: &RecordBatch, out_schema: &SchemaRef) -> RecordBatch {
    let urls = batch.column(0).as_any().downcast_ref::<StringArray>().expect("url is utf8");
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(native_url_host(urls)));
    RecordBatch::try_new(out_schema.clone(), columns).expect("host batch")
}

// ---------------------------------------------------------------------------
// Wasm side

pub struct Wasm {
    pub runtime: WasmRuntime,
}

impl Wasm {
    pub fn new() -> Self {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
        let runtime = WasmRuntime::new(RuntimeConfig { cache_dir: Some(cache), ..RuntimeConfig::default() })
            .expect("wasm runtime");
        Self { runtime }
    }

    pub fn factory(&self, path: &Path, id: &str) -> OperatorFactory {
        assert!(path.is_file(), "{} is missing: building the root package builds it", path.display());
        let loaded = self.runtime.load_component(path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        OperatorFactory::new(&self.runtime, &loaded, id, Capabilities::default(), OperatorLimits::default())
            .unwrap_or_else(|e| panic!("linking {}: {e}", path.display()))
    }
}

pub fn open_ctx(id: &str, config: serde_json::Value, input: &SchemaRef) -> OpenContext {
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

pub fn instantiate(rt: &Runtime, factory: &OperatorFactory, ctx: &OpenContext) -> OperatorInstance {
    rt.block_on(factory.instantiate(ctx)).unwrap_or_else(|e| panic!("instantiating {}: {e}", ctx.operator_id))
}

/// One call through `instance`, checked: exactly one batch out.
pub fn call(rt: &Runtime, instance: &mut OperatorInstance, batch: &RecordBatch) -> RecordBatch {
    let mut out = rt.block_on(instance.process(0, batch)).unwrap_or_else(|e| panic!("process: {e}"));
    assert_eq!(out.len(), 1, "expected one batch out");
    out.remove(0)
}

// ---------------------------------------------------------------------------
// Timing

/// Runs `iters` iterations and returns the time they took.
pub type Routine<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

pub fn native_routine<'a, T: 'a>(mut f: impl FnMut() -> T + 'a) -> Routine<'a> {
    Box::new(move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        start.elapsed()
    })
}

/// Iterations per sample so that one sample of `routine` takes about `target`.
pub fn calibrate(routine: &mut Routine<'_>, target: Duration) -> u64 {
    routine(3);
    let mut n = 1u64;
    loop {
        let t = routine(n);
        if t >= target / 4 || n >= 1 << 30 {
            let per = t.as_secs_f64() / n as f64;
            return ((target.as_secs_f64() / per.max(1e-9)) as u64).clamp(1, 1 << 30);
        }
        n *= 4;
    }
}

pub fn sorted(s: &[f64]) -> Vec<f64> {
    let mut v = s.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

pub fn median(s: &[f64]) -> f64 {
    let v = sorted(s);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

pub fn min(s: &[f64]) -> f64 {
    s.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(s: &[f64]) -> f64 {
    s.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

pub fn fmt_us(s: &[f64]) -> String {
    format!("{:.1} ({:.1}–{:.1})", median(s) / 1e3, min(s) / 1e3, max(s) / 1e3)
}

pub fn fmt_ratio(r: &[f64]) -> String {
    format!("{:.2}× ({:.2}–{:.2})", median(r), min(r), max(r))
}
