//! Event time end to end: sources emit watermarks from a time column, the
//! `window-agg` guest keeps tumbling, sliding and session windows in host
//! state (`flumen_sdk::window`) and emits each window when the watermark
//! passes its end; late rows are dropped; a job without watermarks gets every
//! window at end of input; a killed and resumed job writes exactly what an
//! uninterrupted one does.
//!
//! Generator jobs read `key = row % 3`, `burst = row / 50`, `ts = 10·row` ms
//! and `v = row`, so every expected window is computed from that formula.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::checkpoint::{flumen, resume_to_completion};
use crate::common::Job;

const KEYS: u64 = 3;

/// One output row: key, window start, window end (ms), value.
type Window = (Option<i64>, i64, i64, i64);

/// Rows per `burst` key: a burst's rows are contiguous, so its key goes quiet.
const BURST: u64 = 50;

/// generator → window-agg (keyed by, and hash-partitioned on, the column
/// `key`) → JSONL sink at `out`. `source_extra` goes into the source table
/// (`watermark`, `rows_per_second`), `job_extra` after `[job]` (a
/// `[checkpoint]` table).
fn generator_job(rows: u64, source_extra: &str, key: &str, window: &str, job_extra: &str, out: &str) -> Job {
    Job::new(&format!(
        r#"
[job]
name = "windows"
batch_rows = 25
{job_extra}

[[source]]
id = "gen"
kind = "generator"
parallelism = 2
rows = {rows}
columns = [
  {{ name = "key", gen = "modulo", modulus = {KEYS} }},
  {{ name = "burst", gen = "divide", divisor = {BURST} }},
  {{ name = "ts", gen = "timestamp", start_ms = 0, step_ms = 10 }},
  {{ name = "v", gen = "sequence" }},
]
{source_extra}

[[operator]]
id = "win"
plugin = "{{guest:window-agg}}"
parallelism = 2
capabilities = ["log", "state"]
inputs = [{{ from = "gen", partition = "hash", keys = ["{key}"] }}]
config = {{ key = "{key}", time = "ts", {window} }}

[[sink]]
id = "out"
kind = "jsonl"
path = "{out}"
inputs = ["win"]
"#
    ))
}

/// The generator's rows as (key, ts, v).
fn events(rows: u64) -> Vec<(i64, i64, i64)> {
    (0..rows as i64).map(|r| (r % KEYS as i64, 10 * r, r)).collect()
}

#[derive(Clone, Copy)]
enum Agg {
    Count,
    Sum,
    Max,
}

impl Agg {
    fn fold(self, acc: Option<i64>, v: i64) -> i64 {
        match (self, acc) {
            (Agg::Count, acc) => acc.unwrap_or(0) + 1,
            (Agg::Sum, acc) => acc.unwrap_or(0) + v,
            (Agg::Max, acc) => acc.map_or(v, |a| a.max(v)),
        }
    }
}

/// Sliding windows `[k·slide, k·slide + size)` (tumbling: `slide == size`) of `events`.
fn sliding_oracle(events: &[(i64, i64, i64)], size: i64, slide: i64, agg: Agg) -> Vec<Window> {
    let mut windows: BTreeMap<(i64, i64, i64), i64> = BTreeMap::new();
    for &(key, t, v) in events {
        let mut start = t - t.rem_euclid(slide);
        while start + size > t {
            let acc = windows.get(&(key, start, start + size)).copied();
            windows.insert((key, start, start + size), agg.fold(acc, v));
            start -= slide;
        }
    }
    let mut out: Vec<Window> = windows.into_iter().map(|((k, s, e), v)| (Some(k), s, e, v)).collect();
    out.sort();
    out
}

/// Every window row written to `path`: one JSONL file, or the committed part
/// files of a directory. Sorted.
fn read_windows(path: &Path) -> Vec<Window> {
    let files = if path.is_dir() { part_files(path) } else { vec![path.to_path_buf()] };
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push((v["key"].as_i64(), ms(&v["window_start"]), ms(&v["window_end"]), v["value"].as_i64().unwrap()));
        }
    }
    out.sort();
    out
}

/// The committed (non-empty) part files of a checkpointed sink directory, sorted.
fn part_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    parts.sort();
    parts
}

/// Milliseconds since the epoch of a JSON int64, or of a timestamp as the
/// JSONL sink writes it (`1970-01-01T00:00:00.010`).
fn ms(v: &serde_json::Value) -> i64 {
    if let Some(n) = v.as_i64() {
        return n;
    }
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let (date, time) = s.split_once('T').unwrap_or_else(|| panic!("not a timestamp: {s}"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let millis: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + millis
}

#[test]
fn timestamps_parse_as_the_sink_writes_them() {
    assert_eq!(ms(&serde_json::json!("1970-01-01T00:00:00")), 0);
    assert_eq!(ms(&serde_json::json!("1970-01-01T00:00:10.020")), 10_020);
    assert_eq!(ms(&serde_json::json!("1969-12-31T23:59:59.950")), -50);
    assert_eq!(ms(&serde_json::json!("2023-11-14T22:13:20")), 1_700_000_000_000);
    assert_eq!(ms(&serde_json::json!(7)), 7);
}

/// Tumbling windows of 100 ms over rows 10 ms apart: 10 rows per window,
/// split 4/3/3 over the keys; count, sum and max as the formula says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_windows_per_key_are_exact() {
    let rows = 1000;
    let watermark = r#"watermark = { column = "ts" }"#;
    for (agg, config, name) in [
        (Agg::Count, "", "count"),
        (Agg::Sum, r#", agg = "sum", value = "v""#, "sum"),
        (Agg::Max, r#", agg = "max", value = "v""#, "max"),
    ] {
        let job = generator_job(
            rows,
            watermark,
            "key",
            &format!(r#"kind = "tumbling", size_ms = 100{config}"#),
            "",
            "out.jsonl",
        );
        job.run().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = read_windows(&job.file("out.jsonl"));
        assert_eq!(got.len(), 300, "{name}: 100 windows × 3 keys");
        assert_eq!(got, sliding_oracle(&events(rows), 100, 100, agg), "{name}");
        let first: Vec<Window> = got.iter().filter(|w| w.1 == 0).copied().collect();
        let expected_first = match agg {
            Agg::Count => [(Some(0), 0, 100, 4), (Some(1), 0, 100, 3), (Some(2), 0, 100, 3)],
            Agg::Sum => [(Some(0), 0, 100, 18), (Some(1), 0, 100, 12), (Some(2), 0, 100, 15)],
            Agg::Max => [(Some(0), 0, 100, 9), (Some(1), 0, 100, 7), (Some(2), 0, 100, 8)],
        };
        assert_eq!(first, expected_first, "{name}: rows 0..10 are in the first window");
    }
}

/// Sliding windows of 100 ms every 50 ms: each row is in two windows, the
/// first starting at −50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_windows_per_key_are_exact() {
    let rows = 1000;
    let job = generator_job(
        rows,
        r#"watermark = { column = "ts" }"#,
        "key",
        r#"kind = "sliding", size_ms = 100, slide_ms = 50, agg = "sum", value = "v""#,
        "",
        "out.jsonl",
    );
    job.run().await.unwrap();
    let got = read_windows(&job.file("out.jsonl"));
    assert_eq!(got.len(), 201 * 3, "starts −50, 0, …, 9950 for each key");
    assert_eq!(got, sliding_oracle(&events(rows), 100, 50, Agg::Sum));
    // Rows 0..5 (ts 0..40) are in [−50, 50): key 0 has rows 0 and 3.
    assert_eq!(got.iter().find(|w| w.0 == Some(0) && w.1 == -50), Some(&(Some(0), -50, 50, 3)));
    let total: i64 = got.iter().map(|w| w.3).sum();
    assert_eq!(total, 2 * (0..rows as i64).sum::<i64>(), "every row counted in exactly two windows");
}

/// Session windows: a key's rows are 30 ms apart. With a gap of 30 ms each
/// session touches the next and they merge into one per key; with 29 ms
/// every row is a session of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_windows_merge_exactly_when_rows_are_within_the_gap() {
    let rows: i64 = 1000;
    let watermark = r#"watermark = { column = "ts" }"#;
    let job = generator_job(rows as u64, watermark, "key", r#"kind = "session", gap_ms = 30"#, "", "out.jsonl");
    job.run().await.unwrap();
    // Key k's rows are k, k + 3, …: the last are 999, 997, 998.
    assert_eq!(
        read_windows(&job.file("out.jsonl")),
        [(Some(0), 0, 9990 + 30, 334), (Some(1), 10, 9970 + 30, 333), (Some(2), 20, 9980 + 30, 333)]
    );

    let job = generator_job(
        rows as u64,
        watermark,
        "key",
        r#"kind = "session", gap_ms = 29, agg = "max", value = "v""#,
        "",
        "out.jsonl",
    );
    job.run().await.unwrap();
    let expected: Vec<Window> = {
        let mut e: Vec<Window> = (0..rows).map(|r| (Some(r % 3), 10 * r, 10 * r + 29, r)).collect();
        e.sort();
        e
    };
    assert_eq!(read_windows(&job.file("out.jsonl")), expected);
}

/// A CSV of `(key, ts)` rows out of order, two rows per batch, one subtask:
/// the watermark after each batch is the largest `ts` so far less the delay,
/// so which rows are late is exact.
fn late_rows_job(watermark: &str, window: &str) -> Job {
    let job = Job::new(&format!(
        r#"
[job]
name = "late"
batch_rows = 2

[[source]]
id = "in"
kind = "csv"
path = "input.csv"
schema = [{{ name = "key", type = "int64" }}, {{ name = "ts", type = "int64" }}]
{watermark}

[[operator]]
id = "win"
plugin = "{{guest:window-agg}}"
capabilities = ["log", "state"]
inputs = [{{ from = "in", partition = "hash", keys = ["key"] }}]
config = {{ key = "key", time = "ts", {window} }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["win"]
"#
    ));
    std::fs::write(job.file("input.csv"), "key,ts\n1,5\n1,12\n1,3\n2,11\n1,25\n2,9\n1,19\n2,30\n").unwrap();
    job
}

/// Batches: (1,5) (1,12) → 12 | (1,3) (2,11) → 12 | (1,25) (2,9) → 25 |
/// (1,19) (2,30) → 30, then end of input. With no delay, 3, 11, 9 and 19
/// come after a watermark above them and are dropped; a delay of 10 keeps them, as
/// does a source without a watermark (every window fires at end of input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_are_dropped_unless_the_delay_covers_them() {
    let tumbling = r#"kind = "tumbling", size_ms = 10"#;
    let job = late_rows_job(r#"watermark = { column = "ts" }"#, tumbling);
    job.run().await.unwrap();
    assert_eq!(
        read_windows(&job.file("out.jsonl")),
        [(Some(1), 0, 10, 1), (Some(1), 10, 20, 1), (Some(1), 20, 30, 1), (Some(2), 30, 40, 1)]
    );

    let all = [
        (Some(1), 0, 10, 2),
        (Some(1), 10, 20, 2),
        (Some(1), 20, 30, 1),
        (Some(2), 0, 10, 1),
        (Some(2), 10, 20, 1),
        (Some(2), 30, 40, 1),
    ];
    let job = late_rows_job(r#"watermark = { column = "ts", delay_ms = 10 }"#, tumbling);
    job.run().await.unwrap();
    assert_eq!(read_windows(&job.file("out.jsonl")), all);
    let job = late_rows_job("", tumbling);
    job.run().await.unwrap();
    assert_eq!(read_windows(&job.file("out.jsonl")), all);

    // Key 1's sessions [0, 10) and [20, 30) wait (delay 15: watermark 5),
    // then 10 bridges them; they fire together once the watermark passes 30.
    let session = r#"kind = "session", gap_ms = 10"#;
    let job = late_rows_job(r#"watermark = { column = "ts", delay_ms = 15 }"#, session);
    std::fs::write(job.file("input.csv"), "key,ts\n1,0\n1,20\n1,10\n2,100\n").unwrap();
    job.run().await.unwrap();
    assert_eq!(read_windows(&job.file("out.jsonl")), [(Some(1), 0, 30, 3), (Some(2), 100, 110, 1)]);
    // Without the delay, [0, 10) fires at watermark 20 and 10 is late.
    let job = late_rows_job(r#"watermark = { column = "ts" }"#, session);
    std::fs::write(job.file("input.csv"), "key,ts\n1,0\n1,20\n1,10\n2,100\n").unwrap();
    job.run().await.unwrap();
    assert_eq!(
        read_windows(&job.file("out.jsonl")),
        [(Some(1), 0, 10, 1), (Some(1), 20, 30, 1), (Some(2), 100, 110, 1)]
    );
}

/// A misnamed or mistyped watermark column fails the job at plan time, naming the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_watermark_column_fails_the_job_naming_the_source() {
    let window = r#"kind = "tumbling", size_ms = 10"#;
    let e = late_rows_job(r#"watermark = { column = "time" }"#, window).run_err().await;
    crate::common::assert_contains(&e, &["in: invalid configuration", "`watermark.column` `time` is not a column"]);
    let e = generator_job(10, r#"watermark = { column = "v", delay_ms = -5 }"#, "key", window, "", "out.jsonl")
        .run_err()
        .await;
    crate::common::assert_contains(&e, &["gen: invalid configuration", "`watermark.delay_ms` must be at least 0"]);
}

const CHECKPOINTED: &str = r#"
[checkpoint]
interval_ms = 50
dir = "ck"

[restart]
attempts = 3
delay_ms = 20
"#;

/// Throttled and checkpointed, so output is published checkpoint by
/// checkpoint. With watermarks windows fire as time passes and land in many
/// part files; without, every window waits for the end of input
/// (`on-watermark(i64::MAX)`) and all land in the final part of each subtask.
#[test]
fn without_watermarks_every_window_fires_at_end_of_input() {
    let rows = 1500;
    let window = r#"kind = "tumbling", size_ms = 100"#;
    let expected = sliding_oracle(&events(rows), 100, 100, Agg::Count);
    for (watermark, streaming) in [(r#"watermark = { column = "ts" }"#, true), ("", false)] {
        let source = format!("rows_per_second = 1500\n{watermark}");
        let job = generator_job(rows, &source, "key", window, CHECKPOINTED, "out");
        let out = flumen(&job, false).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(read_windows(&job.file("out")), expected, "watermark: {streaming}");
        // One sink subtask: a part file per checkpoint that published rows.
        let parts = part_files(&job.file("out"));
        if streaming {
            assert!(parts.len() > 4, "windows must fire while the job runs, got {} parts", parts.len());
        } else {
            assert_eq!(parts.len(), 1, "every window in the final part: {parts:?}");
        }
    }
}

/// Killed once output was committed, then resumed: the windows, their
/// timers and the watermark come back from the checkpoint, so the output is
/// exactly that of an uninterrupted run, and the formula's, with nothing fired
/// twice or lost. Keyed by `burst`, each key has one window, open at the kill
/// and never touched by a later window of its key: only a timer restored from
/// state can fire it.
#[test]
fn a_killed_and_resumed_job_writes_what_an_uninterrupted_one_does() {
    let rows = 3000;
    let source = "rows_per_second = 2000\nwatermark = { column = \"ts\", delay_ms = 20 }";
    let bursts: Vec<Window> =
        (0..(rows / BURST) as i64).map(|b| (Some(b), 500 * b, 500 * (b + 1), BURST as i64)).collect();
    let mut sessions: Vec<Window> = (0..rows as i64).map(|r| (Some(r % KEYS as i64), 10 * r, 10 * r + 29, 1)).collect();
    sessions.sort();
    for (key, window, formula) in [
        (
            "key",
            r#"kind = "tumbling", size_ms = 100, agg = "sum", value = "v""#,
            sliding_oracle(&events(rows), 100, 100, Agg::Sum),
        ),
        ("burst", r#"kind = "tumbling", size_ms = 500"#, bursts),
        ("key", r#"kind = "session", gap_ms = 29"#, sessions),
    ] {
        let uninterrupted = generator_job(rows, source, key, window, CHECKPOINTED, "out");
        let out = flumen(&uninterrupted, false).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let expected = read_windows(&uninterrupted.file("out"));
        assert_eq!(expected, formula, "{window}: uninterrupted");

        let job = generator_job(rows, source, key, window, CHECKPOINTED, "out");
        let mut child = flumen(&job, false).spawn().unwrap();
        let start = Instant::now();
        while !job.file("out").exists() || part_files(&job.file("out")).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(30), "{window}: no output committed within 30 s");
            assert!(child.try_wait().unwrap().is_none(), "{window}: the job ended before it could be killed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(child.try_wait().unwrap().is_none(), "{window}: the job ended before it could be killed");
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        let before = read_windows(&job.file("out")).len();
        assert!(before > 0 && before < expected.len(), "{window}: {before} of {} windows at the kill", expected.len());
        resume_to_completion(&job);
        assert_eq!(read_windows(&job.file("out")), expected, "{window}: resumed");
    }
}
