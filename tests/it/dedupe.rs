//! The `dedupe` plugin: files with the same bytes come out once (first by
//! path), a plain column keeps each value's first row, and a checkpointed job
//! killed and resumed still lets each key through exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand::SeedableRng;

use crate::checkpoint::kill_at_random_then_resume;
use crate::common::*;

/// Every JSONL object of `path`, a file or a directory of committed parts.
fn read_rows(path: &Path) -> Vec<serde_json::Value> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("part-") && name.ends_with(".jsonl") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut rows = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        rows.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line")));
    }
    rows
}

fn files_job(parallelism: u32) -> Job {
    let input = if parallelism > 1 { r#"{ from = "docs", partition = "hash", keys = ["blob"] }"# } else { r#""docs""# };
    Job::new(&format!(
        r#"
[job]
name = "dedupe-files"
batch_rows = 2

[[source]]
id = "docs"
kind = "blobs"
path = "docs/"

[[operator]]
id = "unique"
plugin = "dedupe"
capabilities = ["state"]
parallelism = {parallelism}
config = {{ column = "blob" }}
inputs = [{input}]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["unique"]
"#
    ))
}

/// Files with the same bytes under different names (and extensions) are one
/// key: each distinct content comes out once, as its first file by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_distinct_file_content_comes_out_once_first_by_path() {
    let job = files_job(1);
    std::fs::create_dir(job.file("docs")).unwrap();
    let files = [
        ("a.txt", "hello"),
        ("b.md", "hello"),
        ("c.txt", "world"),
        ("d.txt", "hello"),
        ("e.txt", ""),
        ("f.txt", "world"),
        ("g.csv", "x,y\n1,2\n"),
        ("h.txt", ""),
    ];
    for (name, text) in files {
        std::fs::write(job.file("docs").join(name), text).unwrap();
    }
    let summary = job.run().await.expect("job runs");
    let got: Vec<String> = read_rows(&job.file("out.jsonl"))
        .iter()
        .map(|r| r["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(got, ["a.txt", "c.txt", "e.txt", "g.csv"]);
    assert_eq!(summary.node("unique").unwrap().rows_in, files.len() as u64);
}

/// Parallel subtasks over a hash partition on the blob column: equal bytes
/// reach one subtask by their digest, whatever their media type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduping_by_content_in_parallel_subtasks() {
    let job = files_job(3);
    std::fs::create_dir(job.file("docs")).unwrap();
    for i in 0..30 {
        let ext = ["txt", "md", "csv"][i % 3];
        std::fs::write(job.file("docs").join(format!("f{i:02}.{ext}")), format!("content {}", i % 7)).unwrap();
    }
    job.run().await.expect("job runs");
    let mut got: Vec<String> = read_rows(&job.file("out.jsonl"))
        .iter()
        .map(|r| r["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    got.sort();
    let want: Vec<String> = (0..7).map(|i| format!("f{i:02}.{}", ["txt", "md", "csv"][i % 3])).collect();
    assert_eq!(got, want, "each content once, as its first file");
}

/// `id,user` rows whose users repeat in a scattered pattern, across batches.
fn users_csv(job: &Job, rows: i64) -> BTreeMap<String, i64> {
    let mut csv = String::from("id,user\n");
    let mut first: BTreeMap<String, i64> = BTreeMap::new();
    for id in 0..rows {
        let user = format!("u{}", (id * 7 + id / 5) % 23);
        csv.push_str(&format!("{id},{user}\n"));
        first.entry(user).or_insert(id);
    }
    std::fs::write(job.file("users.csv"), csv).unwrap();
    first
}

fn users_job(operator: &str) -> Job {
    Job::new(&format!(
        r#"
[job]
name = "dedupe-users"
batch_rows = 16

[[source]]
id = "in"
kind = "csv"
path = "users.csv"

[[operator]]
id = "unique"
plugin = "dedupe"
capabilities = ["state"]
config = {{ column = "user" }}
{operator}

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["unique"]
"#
    ))
}

/// Each user's first row, in input order; duplicates within a batch and
/// across batches are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_column_keeps_each_values_first_row() {
    let job = users_job(r#"inputs = ["in"]"#);
    let first = users_csv(&job, 300);
    let summary = job.run().await.expect("job runs");
    let rows = read_rows(&job.file("out.jsonl"));
    let got: Vec<(String, i64)> =
        rows.iter().map(|r| (r["user"].as_str().unwrap().to_string(), r["id"].as_i64().unwrap())).collect();
    let mut expected: Vec<(String, i64)> = first.into_iter().collect();
    expected.sort_by_key(|(_, id)| *id);
    assert_eq!(got, expected, "each user once, at its first id, in input order");
    assert_eq!(summary.node("unique").unwrap().rows_out, 23);
}

/// With several subtasks and the input hash-partitioned on the key, each
/// value still comes out once, at its first row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_subtasks_dedupe_a_hash_partitioned_column() {
    let job = users_job(
        r#"parallelism = 3
inputs = [{ from = "in", partition = "hash", keys = ["user"] }]"#,
    );
    let first = users_csv(&job, 300);
    job.run().await.expect("job runs");
    let got: BTreeMap<String, i64> = read_rows(&job.file("out.jsonl"))
        .iter()
        .map(|r| (r["user"].as_str().unwrap().to_string(), r["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(read_rows(&job.file("out.jsonl")).len(), first.len(), "no user twice");
    assert_eq!(got, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_are_reported_before_data_flows() {
    let job = users_job(r#"inputs = ["in"]"#);
    users_csv(&job, 10);
    let text = std::fs::read_to_string(&job.path).unwrap().replace(r#"column = "user""#, r#"column = "usr""#);
    std::fs::write(&job.path, text).unwrap();
    assert_contains(&job.run_err().await, &["dedupe: no column `usr`; columns are: id, user"]);

    let job = users_job(r#"inputs = ["in"]"#);
    users_csv(&job, 10);
    let text = std::fs::read_to_string(&job.path).unwrap().replace(r#"capabilities = ["state"]"#, "");
    std::fs::write(&job.path, text).unwrap();
    assert_contains(&job.run_err().await, &["state", "capabilities"]);
}

/// Keys that keep appearing: `key = row % KEYS`, so rows `0..KEYS` are new
/// and every later row is a duplicate; the first row of each key has
/// `seq == key`.
const KEYS: u64 = 1500;

fn checkpointed_job(rows: u64) -> Job {
    Job::new(&format!(
        r#"
[job]
name = "dedupe-exactly-once"
batch_rows = 20
channel_capacity = 4

[checkpoint]
interval_ms = 80
dir = "ck"
retain = 2

[restart]
attempts = 5
delay_ms = 20

[[source]]
id = "gen"
kind = "generator"
rows = {rows}
rows_per_second = 2000
columns = [
  {{ name = "key", gen = "modulo", modulus = {KEYS} }},
  {{ name = "seq", gen = "sequence" }},
]

[[operator]]
id = "unique"
plugin = "dedupe"
capabilities = ["state"]
parallelism = 2
inputs = [{{ from = "gen", partition = "hash", keys = ["key"] }}]
config = {{ column = "key" }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
parallelism = 2
inputs = ["unique"]
"#
    ))
}

/// SIGKILLs at seeded random moments; after resume the committed output holds
/// every key exactly once, at its first row.
#[test]
fn killed_and_resumed_emits_each_key_exactly_once() {
    let rows = 4000;
    let mut kills = 0;
    for seed in 0..3u64 {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let job = checkpointed_job(rows);
        kills += kill_at_random_then_resume(&job, &mut rng, 4, 150..900, &format!("seed {seed}"));
        let rows_out = read_rows(&job.file("out"));
        let mut keys = BTreeSet::new();
        for r in &rows_out {
            let (key, seq) = (r["key"].as_i64().unwrap(), r["seq"].as_i64().unwrap());
            assert!(keys.insert(key), "seed {seed}: key {key} came out twice");
            assert_eq!(seq, key, "seed {seed}: key {key} came out at row {seq}, not its first");
        }
        assert_eq!(keys.len() as u64, KEYS, "seed {seed}: every key comes out");
    }
    assert!(kills >= 3, "only {kills} kills happened: the job ran too fast to be killed");
}
