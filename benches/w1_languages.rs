//! W1 per language: the same operators written in Rust, C, JavaScript and
//! Python (`benches/w1-languages/<lang>/<op>/`, built with
//! `flumen plugin build`) against the native Rust kernels of `w1_boundary`.
//!
//! For each language it measures, in one process:
//!
//! - `gcd` (int32 `a`, `b` → `g`) and `url-host` (utf8 `url` → `host`) at 8 K
//!   and 64 K rows: µs per batch and the ratio to the native kernel, sampled
//!   alternately with it (median of the per-round ratios);
//! - the fixed cost of a call: a 1-row batch through `passthrough` (reads no
//!   column, carries every column; the C SDK cannot declare "reads nothing",
//!   so its passthrough reads the two columns);
//! - compiling the `gcd` component with Cranelift (first load, empty cache),
//!   loading it from the compiled-component cache (a fresh runtime each
//!   time: reading and deserializing the artifact), and instantiating it
//!   (`OperatorFactory::instantiate`, the guest's `open` included).
//!
//! Calls mirror the engine: an instance whose `recycle_reason` says so is
//! replaced by a fresh one before the next batch (componentize-py keeps what
//! crosses the boundary), inside the timed loop, and the recycles are counted.
//! The only checks are that every language computes exactly what the native
//! kernel computes (on the timed batches and on a small batch with nulls and
//! URL edge cases). `W1L_ROUNDS` (15), `W1L_LANGS` (`rust,c,js,python`),
//! `W1L_CACHE_ROUNDS` (5); `W1L_REBUILD=1` rebuilds the components.

use std::cell::Cell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_array::{Int32Array, RecordBatch, StringArray};
use flumen_wasm::{OpenContext, OperatorFactory, RuntimeConfig, WasmRuntime};
use tokio::runtime::Runtime;

// Data, native baselines, loading components, timing and medians, shared with `w1_boundary`.
#[path = "common/w1.rs"]
mod w1;
use w1::*;

const LANGS: [&str; 4] = ["rust", "c", "js", "python"];
const SIZES: [usize; 2] = [8192, 65536];

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let env_num = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let rounds = env_num("W1L_ROUNDS", if bench_mode { 15 } else { 1 });
    let cache_rounds = env_num("W1L_CACHE_ROUNDS", if bench_mode { 5 } else { 1 });
    let target = if bench_mode { Duration::from_millis(20) } else { Duration::from_micros(200) };
    let langs: Vec<String> = std::env::var("W1L_LANGS")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_else(|_| LANGS.iter().map(|s| s.to_string()).collect());

    let components = Path::new(env!("CARGO_TARGET_TMPDIR")).join("w1-languages");
    let built: Vec<Built> = langs.iter().map(|l| Built::new(l, &components)).collect();
    println!("machine: {} CPUs, load average {}", cpus(), load_average());

    let rt = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    let wasm = Wasm::new();
    let ops: Vec<Ops> = built.iter().map(|b| Ops::new(&wasm, b)).collect();

    // Correctness first: every language against the native kernels.
    for op in &ops {
        check(&rt, op);
    }

    println!();
    println!("W1 per language: µs per batch, median of {rounds} rounds (min–max); each round times the native");
    println!("kernel and every language back to back; the ratio is the median of the per-round ratios.");
    for (name, is_gcd) in [("gcd", true), ("url-host", false)] {
        for (i, &rows) in SIZES.iter().enumerate() {
            let (batch, schema) = if is_gcd {
                (int_batch(rows, 42 + i as u64), int_schema())
            } else {
                (url_batch(rows, 4242 + i as u64), url_schema())
            };
            let out_schema =
                call(&rt, &mut instantiate(&rt, op_factory(&ops[0], is_gcd), &ctx_for(&schema)), &batch).schema();
            let mut routines: Vec<Routine> = vec![if is_gcd {
                let (b, s) = (batch.clone(), out_schema.clone());
                native_routine(move || native_map_gcd(&b, &s))
            } else {
                let (b, s) = (batch.clone(), out_schema.clone());
                native_routine(move || native_strings_host(&b, &s))
            }];
            let mut recycles = Vec::new();
            for op in &ops {
                let counter = Counter::default();
                recycles.push(counter.clone());
                routines.push(wasm_routine(
                    &rt,
                    op_factory(op, is_gcd).clone(),
                    ctx_for(&schema),
                    batch.clone(),
                    counter,
                ));
            }
            let s = sample(&mut routines, rounds, target);
            println!();
            println!(
                "| {name}, {rows} rows | µs per batch | × native (min–max) | ns per row | recycles per 1000 calls |"
            );
            println!("|---|---:|---:|---:|---:|");
            println!("| native Rust kernel | {} | 1 | {:.1} | – |", fmt_us(&s[0]), median(&s[0]) / rows as f64);
            for (k, op) in ops.iter().enumerate() {
                let w = &s[k + 1];
                let ratios: Vec<f64> = w.iter().zip(&s[0]).map(|(w, n)| w / n).collect();
                println!(
                    "| {} | {} | {} | {:.1} | {:.1} |",
                    op.lang,
                    fmt_us(w),
                    fmt_ratio(&ratios),
                    median(w) / rows as f64,
                    recycles[k].per_thousand()
                );
            }
        }
    }

    // Fixed cost of a call: one row through `passthrough`.
    let one = int_batch(1, 7);
    let mut routines: Vec<Routine> = Vec::new();
    for op in &ops {
        routines.push(wasm_routine(
            &rt,
            op.passthrough.clone(),
            ctx_for(&int_schema()),
            one.clone(),
            Counter::default(),
        ));
    }
    let calls = sample(&mut routines, rounds, target);
    // Instantiation (+ open) of `gcd`, dropping each instance untimed.
    let mut routines: Vec<Routine> =
        ops.iter().map(|op| instantiate_routine(&rt, op.gcd.clone(), ctx_for(&int_schema()))).collect();
    let inst = sample(&mut routines, rounds, target);
    // Compile (empty cache) and load from the cache, `gcd`, on fresh runtimes.
    let compile: Vec<(f64, Vec<f64>, f64)> =
        built.iter().map(|b| compile_and_cache(&b.path("gcd"), cache_rounds)).collect();

    println!();
    println!("| per call / per instance | {} |", ops.iter().map(|o| o.lang.as_str()).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---:|".repeat(ops.len()));
    let row = |label: &str, cells: Vec<String>| println!("| {label} | {} |", cells.join(" | "));
    row("fixed cost per call, 1-row passthrough (µs, min–max)", calls.iter().map(|s| fmt_us(s)).collect());
    row("instantiate + open, gcd (ms, min–max)", inst.iter().map(|s| fmt_ms(s)).collect());
    row(
        "compile with Cranelift, gcd, empty cache (ms, one run)",
        compile.iter().map(|c| format!("{:.0}", c.0)).collect(),
    );
    row(
        &format!("load from the compiled cache, gcd (ms, {cache_rounds} fresh runtimes)"),
        compile.iter().map(|c| fmt_ms(&c.1)).collect(),
    );
    row("component size (KB)", built.iter().map(|b| format!("{:.0}", file_kb(&b.path("gcd")))).collect());
    row("compiled artifact size (KB)", compile.iter().map(|c| format!("{:.0}", c.2)).collect());
    println!();
    println!("machine load average after: {}", load_average());
}

// ---------------------------------------------------------------------------
// Components

/// One language's components, built by `flumen plugin build` into `<dir>/<lang>-<op>.wasm`.
struct Built {
    lang: String,
    dir: PathBuf,
}

impl Built {
    fn new(lang: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("creating the component directory");
        let built = Self { lang: lang.to_string(), dir: dir.to_path_buf() };
        let rebuild = std::env::var_os("W1L_REBUILD").is_some_and(|v| v != "0");
        for op in ["gcd", "url-host", "passthrough"] {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/w1-languages").join(lang).join(op);
            assert!(src.is_dir(), "no plugin directory {}", src.display());
            let out = built.path(op);
            if !rebuild && newer_than_sources(&out, &src) {
                continue;
            }
            eprintln!("building {lang}/{op} …");
            let status = Command::new(env!("CARGO_BIN_EXE_flumen"))
                .args(["plugin", "build"])
                .arg(&src)
                .arg("--out")
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("running flumen plugin build");
            assert!(status.success(), "flumen plugin build {} failed", src.display());
        }
        built
    }

    fn path(&self, op: &str) -> PathBuf {
        self.dir.join(format!("{}-{op}.wasm", self.lang))
    }
}

/// Whether `out` exists and is newer than every file under `src`.
fn newer_than_sources(out: &Path, src: &Path) -> bool {
    let Ok(built) = std::fs::metadata(out).and_then(|m| m.modified()) else { return false };
    fn newest(dir: &Path) -> std::time::SystemTime {
        let mut t = std::time::SystemTime::UNIX_EPOCH;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name();
            if name == "target" || name == "__pycache__" {
                continue;
            }
            let m = if p.is_dir() { newest(&p) } else { e.metadata().and_then(|m| m.modified()).unwrap_or(t) };
            t = t.max(m);
        }
        t
    }
    built > newest(src)
}

/// A language's three operators, loaded into the shared (cached) runtime.
struct Ops {
    lang: String,
    gcd: OperatorFactory,
    url_host: OperatorFactory,
    passthrough: OperatorFactory,
}

impl Ops {
    fn new(wasm: &Wasm, b: &Built) -> Self {
        let f = |op: &str| wasm.factory(&b.path(op), &format!("w1l-{}-{op}", b.lang));
        Self { lang: b.lang.clone(), gcd: f("gcd"), url_host: f("url-host"), passthrough: f("passthrough") }
    }
}

fn op_factory(op: &Ops, gcd: bool) -> &OperatorFactory {
    if gcd { &op.gcd } else { &op.url_host }
}

fn ctx_for(schema: &SchemaRef) -> OpenContext {
    open_ctx("w1l", serde_json::json!({}), schema)
}

// ---------------------------------------------------------------------------
// Correctness

/// `a, b` with nulls in either (and a zero), then URLs with nulls and edge cases.
fn null_batches() -> (RecordBatch, RecordBatch) {
    let schema =
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true), Field::new("b", DataType::Int32, true)]));
    let a = Int32Array::from(vec![Some(12), None, Some(-18), Some(0), Some(7), None, Some(1 << 20), Some(96)]);
    let b = Int32Array::from(vec![Some(18), Some(4), Some(12), Some(5), None, None, Some(3 << 18), Some(-64)]);
    let ints = RecordBatch::try_new(schema, vec![Arc::new(a), Arc::new(b)]).expect("int batch");
    let urls = StringArray::from(vec![
        Some("HTTPS://WWW.Example.COM/path"),
        None,
        Some("hTtP://h.example.org:8080?q=1"),
        Some("https://[::1]:8443/p"),
        Some("https://[::1"),
        Some("http://"),
        Some("https://@/x"),
        Some("https://user:pw@host.example#frag"),
        Some("http://a@b@c.example:9/"),
        Some("https://é.example/ü"),
        Some("ftp://mirror.example/x"),
        Some("mailto:x@y.example"),
        Some(""),
        Some("https:/x"),
        Some("https://:80/"),
        Some("http://host.example"),
    ]);
    let schema = Arc::new(Schema::new(vec![Field::new("url", DataType::Utf8, true)]));
    (ints, RecordBatch::try_new(schema, vec![Arc::new(urls)]).expect("url batch"))
}

fn check(rt: &Runtime, op: &Ops) {
    let (null_ints, null_urls) = null_batches();
    let mut ints = vec![null_ints];
    let mut urls = vec![null_urls];
    for (i, &rows) in SIZES.iter().enumerate() {
        ints.push(int_batch(rows, 42 + i as u64));
        urls.push(url_batch(rows, 4242 + i as u64));
    }
    for batch in &ints {
        let got = call(rt, &mut instantiate(rt, &op.gcd, &ctx_for(batch.schema_ref())), batch);
        assert_eq!(got, native_map_gcd(batch, &got.schema()), "{} gcd differs from the native kernel", op.lang);
        let got = call(rt, &mut instantiate(rt, &op.passthrough, &ctx_for(batch.schema_ref())), batch);
        assert_eq!(&got, batch, "{} passthrough changed its input", op.lang);
    }
    for batch in &urls {
        let got = call(rt, &mut instantiate(rt, &op.url_host, &ctx_for(batch.schema_ref())), batch);
        assert_eq!(got, native_strings_host(batch, &got.schema()), "{} url-host differs from the native scan", op.lang);
    }
}

// ---------------------------------------------------------------------------
// Timing

/// Calls and recycles of one timed instance.
#[derive(Clone, Default)]
struct Counter(Rc<(Cell<u64>, Cell<u64>)>);

impl Counter {
    fn per_thousand(&self) -> f64 {
        let (calls, recycles) = (self.0.0.get(), self.0.1.get());
        if calls == 0 { 0.0 } else { recycles as f64 * 1000.0 / calls as f64 }
    }
}

/// Calls `process` `iters` times inside one `block_on`; an instance the host
/// would recycle is replaced first (timed: a job pays it too).
fn wasm_routine<'a>(
    rt: &'a Runtime,
    factory: OperatorFactory,
    ctx: OpenContext,
    batch: RecordBatch,
    counter: Counter,
) -> Routine<'a> {
    let mut instance = instantiate(rt, &factory, &ctx);
    Box::new(move |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                if instance.recycle_reason().is_some() {
                    instance = factory.instantiate(&ctx).await.unwrap_or_else(|e| panic!("instantiate: {e}"));
                    counter.0.1.set(counter.0.1.get() + 1);
                }
                let out = instance.process(0, &batch).await.unwrap_or_else(|e| panic!("process: {e}"));
                black_box(out);
            }
            counter.0.0.set(counter.0.0.get() + iters);
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
                drop(instance);
            }
            total
        })
    })
}

/// Samples every routine in turn, `rounds` times; returns each one's ns per iteration.
fn sample(routines: &mut [Routine<'_>], rounds: usize, target: Duration) -> Vec<Vec<f64>> {
    let iters: Vec<u64> = routines.iter_mut().map(|r| calibrate(r, target)).collect();
    let mut out = vec![Vec::with_capacity(rounds); routines.len()];
    for _ in 0..rounds {
        for (k, r) in routines.iter_mut().enumerate() {
            out[k].push(r(iters[k]).as_secs_f64() * 1e9 / iters[k] as f64);
        }
    }
    out
}

/// Milliseconds to compile `path` into an empty cache, the times to load it
/// from that cache on `rounds` fresh runtimes (ns, for [`fmt_ms`]), and the
/// cached artifact's size (KB).
fn compile_and_cache(path: &Path, rounds: usize) -> (f64, Vec<f64>, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = |dir: &Path| {
        WasmRuntime::new(RuntimeConfig { cache_dir: Some(dir.to_path_buf()), ..RuntimeConfig::default() })
            .expect("wasm runtime")
    };
    let fresh = runtime(dir.path());
    let start = Instant::now();
    let loaded = fresh.load_component(path).expect("compiling");
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    drop((loaded, fresh));
    let artifact_kb = dir_bytes(dir.path()) as f64 / 1024.0;
    let cached = (0..rounds)
        .map(|_| {
            let rt = runtime(dir.path());
            let start = Instant::now();
            let loaded = rt.load_component(path).expect("loading from the cache");
            let ns = start.elapsed().as_secs_f64() * 1e9;
            drop(loaded);
            ns
        })
        .collect();
    (compile_ms, cached, artifact_kb)
}

fn fmt_ms(s: &[f64]) -> String {
    format!("{:.2} ({:.2}–{:.2})", median(s) / 1e6, min(s) / 1e6, max(s) / 1e6)
}

fn file_kb(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len() as f64 / 1024.0).unwrap_or(f64::NAN)
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
