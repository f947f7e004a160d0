//! W4: the cost of keyed state through `flumen-state` against raw fjall, and of delta snapshots.
//!
//! - `w4/rmw`: read-modify-write of u64 counters over 10 K hot keys (each pass touches every key
//!   once, in a seeded shuffled order) through `OperatorState::value_get`/`value_set`, against
//!   the same `get`/`insert` on a raw fjall keyspace configured like the store's (journal not
//!   flushed per write). The store's extra work: encoding the key (subtask, name, key), limit
//!   checks, change tracking and copying the value out.
//! - `w4/snapshot`: a delta snapshot (written and fsynced) of a 1 M-key state after changing 1 %
//!   and 10 % of its keys; the changes themselves are not timed.
//!
//! Criterion runs every case, then a summary times the store and raw fjall passes back to back
//! (`W4_ROUNDS` rounds, default 15) and prints medians and the store/raw ratio, plus one full
//! snapshot of the 1 M-key state for scale. `W4_SUMMARY_ONLY=1` skips criterion. Nothing here
//! asserts on timings; the only check is that both sides count the same.
//!
//! Last, W3's checkpoint goal at the state layer: `W4_BIG_STATE_MIB` (default 1024 under
//! `cargo bench`, 0 skips) MiB of keyed state in 1 KiB values, then the time of a full snapshot
//! of it (what a first checkpoint writes) and of a delta after 1 % of its keys changed (a later
//! one), each written and fsynced.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use flumen_state::{OperatorState, StateStore};

const HOT_KEYS: u64 = 10_000;
const STATE_KEYS: u64 = 1_000_000;
const NAME: &str = "count";

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let summary_only = std::env::var_os("W4_SUMMARY_ONLY").is_some_and(|v| v != "0");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rmw = Rmw::new(dir.path());

    if !summary_only {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20)
            .configure_from_args();
        rmw.criterion(&mut c);
        snapshot_criterion(&mut c, dir.path(), if bench_mode { STATE_KEYS } else { 10_000 });
        c.final_summary();
    }
    if std::env::args().any(|a| a == "--profile-time") {
        return;
    }
    let rounds =
        std::env::var("W4_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(if bench_mode { 15 } else { 1 });
    rmw.summary(rounds);
    rmw.check();
    full_snapshot_summary(dir.path(), if bench_mode { STATE_KEYS } else { 10_000 });
    let big_mib = std::env::var("W4_BIG_STATE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(if bench_mode {
        1024
    } else {
        1
    });
    if big_mib > 0 {
        big_state_summary(dir.path(), big_mib);
    }
}

/// The hot-key read-modify-write loop on both sides.
struct Rmw {
    _store: StateStore,
    state: OperatorState,
    _db: Database,
    raw: Keyspace,
    /// Key indexes in the seeded order each pass visits them.
    order: Vec<u64>,
    /// Passes made on each side (criterion runs them different numbers of times).
    store_passes: u64,
    raw_passes: u64,
}

impl Rmw {
    fn new(dir: &Path) -> Self {
        let store = StateStore::open(&dir.join("rmw-store")).expect("state store");
        let mut state = store.operator("w4", 0).expect("operator state");
        let db = Database::builder(dir.join("rmw-raw")).manual_journal_persist(true).open().expect("raw fjall");
        let raw =
            db.keyspace("raw", || KeyspaceCreateOptions::default().manual_journal_persist(true)).expect("raw keyspace");
        let zero = 0u64.to_le_bytes();
        for k in 0..HOT_KEYS {
            state.value_set(NAME, &k.to_be_bytes(), &zero).expect("preload");
            raw.insert(k.to_be_bytes(), zero).expect("preload raw");
        }
        let mut order: Vec<u64> = (0..HOT_KEYS).collect();
        let mut rng = Rng(4);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        Self { _store: store, state, _db: db, raw, order, store_passes: 0, raw_passes: 0 }
    }

    /// One pass over the hot keys through `OperatorState`.
    fn store_pass(&mut self) {
        for &k in &self.order {
            let key = k.to_be_bytes();
            let old = self.state.value_get(NAME, &key).expect("get").map_or(0, |v| counter(&v));
            self.state.value_set(NAME, &key, &(old + 1).to_le_bytes()).expect("set");
        }
        self.store_passes += 1;
    }

    /// One pass over the hot keys through the raw fjall keyspace.
    fn raw_pass(&mut self) {
        for &k in &self.order {
            let key = k.to_be_bytes();
            let old = self.raw.get(key).expect("get").map_or(0, |v| counter(&v));
            self.raw.insert(key, (old + 1).to_le_bytes()).expect("insert");
        }
        self.raw_passes += 1;
    }

    fn criterion(&mut self, c: &mut Criterion) {
        let mut group = c.benchmark_group("w4/rmw");
        group.throughput(Throughput::Elements(HOT_KEYS));
        group.bench_function("flumen-state", |b| b.iter(|| self.store_pass()));
        group.bench_function("raw-fjall", |b| b.iter(|| self.raw_pass()));
        group.finish();
    }

    fn summary(&mut self, rounds: usize) {
        let (mut store_ns, mut raw_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..10 {
                self.store_pass();
            }
            let s = start.elapsed().as_nanos() as f64 / (10 * HOT_KEYS) as f64;
            let start = Instant::now();
            for _ in 0..10 {
                self.raw_pass();
            }
            let r = start.elapsed().as_nanos() as f64 / (10 * HOT_KEYS) as f64;
            store_ns.push(s);
            raw_ns.push(r);
            ratios.push(s / r);
        }
        println!("W4 summary: median of {rounds} rounds of 10 passes over {HOT_KEYS} hot keys, back to back (min-max)");
        println!("  read-modify-write, flumen-state: {}", spread(&store_ns, "ns/op"));
        println!("  read-modify-write, raw fjall:    {}", spread(&raw_ns, "ns/op"));
        println!("  flumen-state / raw fjall:        {}", spread(&ratios, "x"));
        println!("  changed keys tracked for the next snapshot: {}", self.state.pending_changes());
    }

    /// Each pass adds one to every counter, on both sides.
    fn check(&self) {
        for k in 0..HOT_KEYS {
            let key = k.to_be_bytes();
            let ours = self.state.value_get(NAME, &key).expect("get").map(|v| counter(&v));
            let raw = self.raw.get(key).expect("get").map(|v| counter(&v));
            assert_eq!((ours, raw), (Some(self.store_passes), Some(self.raw_passes)), "counter {k}");
        }
    }
}

fn snapshot_criterion(c: &mut Criterion, dir: &Path, keys: u64) {
    let (_store, mut state) = loaded_state(dir, "snapshot-store", keys);
    let files = dir.join("snapshot-files");
    std::fs::create_dir_all(&files).expect("files dir");
    state.snapshot(&files, 1, true).expect("full snapshot");
    let mut group = c.benchmark_group("w4/snapshot");
    group.sample_size(10);
    let mut rng = Rng(7);
    let mut round = 0u64;
    for percent in [1u64, 10] {
        let changes = keys * percent / 100;
        group.throughput(Throughput::Elements(changes));
        group.bench_with_input(BenchmarkId::new("delta", format!("{percent}%-of-{keys}")), &changes, |b, &changes| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    for _ in 0..changes {
                        let k = rng.below(keys);
                        state.value_set(NAME, &k.to_be_bytes(), &round.to_le_bytes()).expect("set");
                    }
                    let start = Instant::now();
                    let file = state.snapshot(&files, 2, false).expect("delta snapshot");
                    total += start.elapsed();
                    black_box(file);
                }
                total
            });
        });
    }
    group.finish();
}

fn full_snapshot_summary(dir: &Path, keys: u64) {
    let (_store, mut state) = loaded_state(dir, "full-store", keys);
    let files = dir.join("full-files");
    std::fs::create_dir_all(&files).expect("files dir");
    let start = Instant::now();
    let file = state.snapshot(&files, 1, true).expect("full snapshot").expect("a full file");
    let elapsed = start.elapsed();
    println!(
        "  full snapshot of {keys} keys: {:.1} ms, {:.1} MiB (for scale against the deltas above)",
        elapsed.as_secs_f64() * 1e3,
        file.bytes as f64 / f64::from(1 << 20)
    );
}

/// Snapshots of `mib` MiB of keyed state (1 KiB values): full, then a delta after 1 % changed.
fn big_state_summary(dir: &Path, mib: u64) {
    const VALUE_BYTES: usize = 1024;
    let keys = mib * (1 << 20) / VALUE_BYTES as u64;
    let store = StateStore::open(&dir.join("big-store")).expect("state store");
    let mut state = store.operator("w4", 0).expect("operator state");
    let started = Instant::now();
    let mut chunk = Vec::with_capacity(4096);
    for k in 0..keys {
        let mut value = vec![(k % 251) as u8; VALUE_BYTES];
        value[..8].copy_from_slice(&k.to_le_bytes());
        chunk.push((k.to_be_bytes().to_vec(), value));
        if chunk.len() == chunk.capacity() {
            state.value_set_many(NAME, &chunk).expect("load");
            chunk.clear();
        }
    }
    state.value_set_many(NAME, &chunk).expect("load");
    let loaded = started.elapsed();
    let files = dir.join("big-files");
    std::fs::create_dir_all(&files).expect("files dir");
    let started = Instant::now();
    let full = state.snapshot(&files, 1, true).expect("full snapshot").expect("a full file");
    let full_took = started.elapsed();
    let changed: Vec<(Vec<u8>, Vec<u8>)> =
        (0..keys).step_by(100).map(|k| (k.to_be_bytes().to_vec(), vec![0xa5; VALUE_BYTES])).collect();
    for part in changed.chunks(4096) {
        state.value_set_many(NAME, part).expect("change");
    }
    let started = Instant::now();
    let delta = state.snapshot(&files, 2, false).expect("delta snapshot").expect("a delta file");
    let delta_took = started.elapsed();
    let mib_of = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "  {mib} MiB of keyed state ({keys} keys × {VALUE_BYTES} B, loaded in {:.1} s): full snapshot {:.2} s \
         ({:.0} MiB written and fsynced); delta after 1 % changed {:.3} s ({:.1} MiB)",
        loaded.as_secs_f64(),
        full_took.as_secs_f64(),
        mib_of(full.bytes),
        delta_took.as_secs_f64(),
        mib_of(delta.bytes)
    );
}

fn loaded_state(dir: &Path, name: &str, keys: u64) -> (StateStore, OperatorState) {
    let store = StateStore::open(&dir.join(name)).expect("state store");
    let mut state = store.operator("w4", 0).expect("operator state");
    let zero = 0u64.to_le_bytes().to_vec();
    let mut chunk = Vec::with_capacity(10_000);
    for k in 0..keys {
        chunk.push((k.to_be_bytes().to_vec(), zero.clone()));
        if chunk.len() == 10_000 {
            state.value_set_many(NAME, &chunk).expect("preload");
            chunk.clear();
        }
    }
    state.value_set_many(NAME, &chunk).expect("preload");
    (store, state)
}

fn counter(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("an 8-byte counter"))
}

fn spread(values: &[f64], unit: &str) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    format!("{median:.2} {unit} ({:.2}-{:.2})", sorted[0], sorted[sorted.len() - 1])
}

/// SplitMix64: a tiny seeded generator, so every run does the same work.
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
