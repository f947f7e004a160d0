//! Whole pipelines: the quickstart as a user runs it, parallel routing,
//! backpressure, and cancellation of a real `flumen` process.

use std::process::Command;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};

use crate::common::*;

fn flumen() -> Command {
    let mut c = Command::new(flumen_bin());
    c.env("FLUMEN_CACHE_DIR", std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"));
    c
}

/// The README's demo: run the quickstart and check its Parquet output against
/// the same computation done here directly on the CSV.
#[test]
fn quickstart_runs_and_its_output_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::copy(example.join("job.toml"), dir.path().join("job.toml")).unwrap();
    std::fs::copy(example.join("data/events.csv"), dir.path().join("data/events.csv")).unwrap();

    let out = flumen().arg("run").arg(dir.path().join("job.toml")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "flumen run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_contains(&stdout, &["job `quickstart` finished", "amount_eur", "host", "purchases", "in_eur", "wrote"]);

    // Expected: rows with status 200 and amount > 0, from the CSV itself.
    let csv = std::fs::read_to_string(dir.path().join("data/events.csv")).unwrap();
    let mut expected: Vec<(i64, f64, String)> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let (status, amount): (i64, f64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
            let host = f[2].trim_start_matches("https://").split('/').next().unwrap().to_string();
            (status == 200 && amount > 0.0).then(|| (f[0].parse().unwrap(), amount * 0.908, host))
        })
        .collect();
    expected.sort_by_key(|r| r.0);
    assert!(expected.len() > 100, "the sample data has purchases");

    let file = std::fs::File::open(dir.path().join("out/purchases.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut got = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ts = batch.column_by_name("ts").unwrap().as_primitive::<Int64Type>().clone();
        let eur = batch.column_by_name("amount_eur").unwrap().as_primitive::<Float64Type>().clone();
        let host = batch.column_by_name("host").unwrap().as_string::<i32>().clone();
        for i in 0..batch.num_rows() {
            got.push((ts.value(i), eur.value(i), host.value(i).to_string()));
        }
    }
    got.sort_by_key(|r| r.0);
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!((g.0, &g.2), (e.0, &e.2));
        assert!((g.1 - e.1).abs() < 1e-9, "{g:?} vs {e:?}");
    }
}

#[test]
fn cli_reports_spec_errors_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), "[job]\nname = 3\n").unwrap();
    let out = flumen().arg("run").arg(dir.path().join("job.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_contains(&stderr, &["job.toml:2:", "invalid type"]);
}

#[test]
fn inspect_prints_the_world() {
    let out = flumen().arg("inspect").arg(guest("passthrough")).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_contains(
        &text,
        &[
            "Flumen operator",
            "targets flumen:dataflow@0.2.0 (runs here; this host runs 0.1.0, 0.2.0)",
            "flumen:dataflow/transform@0.2.0",
            "flumen:dataflow/output@0.2.0",
            "sha256",
        ],
    );
    let out = flumen().arg("inspect").arg(guest("legacy-v01")).output().unwrap();
    assert_contains(&String::from_utf8_lossy(&out.stdout), &["targets flumen:dataflow@0.1.0 (runs here"]);
    let out = flumen().arg("inspect").arg(guest("future-version")).output().unwrap();
    assert_contains(&String::from_utf8_lossy(&out.stdout), &["targets flumen:dataflow@0.9.0 (NOT run by this host"]);
}

#[test]
fn ctrl_c_cancels_cleanly_and_commits_nothing() {
    let job = Job::new(
        r#"
[job]
name = "endless"
batch_rows = 1000

[[source]]
id = "gen"
kind = "generator"
rows = 4000000000
columns = [{ name = "id", gen = "sequence" }]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["gen"]
"#,
    );
    let mut child = flumen().arg("run").arg("--quiet").arg(&job.path).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let waited = wait_timeout(&mut child, std::time::Duration::from_secs(20));
    assert_eq!(waited, Some(130), "flumen must exit with 130 after Ctrl-C");
    let left: Vec<_> =
        std::fs::read_dir(job.dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "only job.toml remains (no output, no temp file): {left:?}");
}

fn wait_timeout(child: &mut std::process::Child, limit: std::time::Duration) -> Option<i32> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_partitioned_parallel_job_loses_and_duplicates_nothing() {
    let job = Job::new(
        r#"
[job]
name = "t"
batch_rows = 64
parallelism = 3

[[source]]
id = "in"
kind = "csv"
path = "input.csv"
parallelism = 1

[[operator]]
id = "op"
plugin = "{guest:passthrough}"
inputs = [{ from = "in", partition = "hash", keys = ["id"] }]

[[operator]]
id = "keep"
plugin = "filter"
config = { predicate = "id % 2 = 0" }
inputs = ["op"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
parallelism = 2
inputs = ["keep"]
"#,
    )
    .with_ids_csv(5000);
    let summary = job.run().await.unwrap();
    let mut ids = Vec::new();
    for f in std::fs::read_dir(job.file("out")).unwrap() {
        ids.extend(read_jsonl_ids(&f.unwrap().path()));
    }
    ids.sort();
    assert_eq!(ids, (0..5000).filter(|i| i % 2 == 0).collect::<Vec<i64>>());
    assert_eq!(summary.node("op").unwrap().rows_in, 5000);
    assert!(summary.node("op").unwrap().guest_bytes_in > 5000 * 8, "bytes crossing into guests are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_operator_backpressures_the_source() {
    let job = Job::new(
        r#"
[job]
name = "t"
batch_rows = 100
channel_capacity = 1

[[source]]
id = "gen"
kind = "generator"
rows = 200000
columns = [{ name = "id", gen = "sequence" }, { name = "x", gen = "uniform-int", min = 0, max = 1000 }]

[[operator]]
id = "slow"
plugin = "map"
config = { columns = [{ name = "g", expr = "gcd(id, x)" }] }
inputs = ["gen"]

[[sink]]
id = "out"
kind = "blackhole"
inputs = ["slow"]
"#,
    );
    let engine = engine();
    let prepared = engine.prepare(&job.path).await.unwrap();
    let metrics = prepared.metrics();
    let watcher = tokio::spawn(async move {
        let mut max_gap = 0u64;
        loop {
            let snap = metrics.snapshot();
            let read = snap.iter().find(|n| n.id.as_str() == "gen").unwrap().rows_out;
            let taken = snap.iter().find(|n| n.id.as_str() == "slow").unwrap().rows_in;
            max_gap = max_gap.max(read.saturating_sub(taken));
            if read >= 200_000 {
                return max_gap;
            }
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
    });
    let summary = prepared.run(std::future::pending()).await.unwrap();
    let max_gap = watcher.await.unwrap();
    assert_eq!(summary.node("out").unwrap().rows_in, 200_000);
    // At most: one batch in the channel, one being sent, one being read.
    assert!(max_gap <= 3 * 100, "the source ran {max_gap} rows ahead of a slow operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_fan_out_share_batches() {
    let job = Job::new(
        r#"
[job]
name = "t"
batch_rows = 50

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "op"
plugin = "{guest:passthrough}"
parallelism = 2
inputs = [{ from = "in", partition = "broadcast" }]

[[sink]]
id = "a"
kind = "blackhole"
inputs = ["op"]

[[sink]]
id = "b"
kind = "blackhole"
inputs = ["op"]
"#,
    )
    .with_ids_csv(1000);
    let s = job.run().await.unwrap();
    assert_eq!(s.node("op").unwrap().rows_in, 2000, "each of 2 subtasks sees every row");
    assert_eq!(s.node("a").unwrap().rows_in, 2000);
    assert_eq!(s.node("b").unwrap().rows_in, 2000);
}
