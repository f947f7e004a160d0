//! One pipelined region run by two processes' engines at once (`RunOptions::split`), linked
//! by the cluster's QUIC mesh with mutual TLS over loopback: subtask `i` of every node runs
//! in part `i % 2`, hash-partitioned batches cross between the parts with their barriers,
//! the leading part coordinates the region's checkpoints and commits. Checked by the
//! exactly-once oracle and against a run in one process.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flumen_cluster::mesh::{Mesh, PartPeer};
use flumen_engine::{EngineError, RunOptions, Split};
use flumen_transport::{Endpoint, EndpointOptions, NodeCredentials, NodeIdentity};

use crate::checkpoint::check;
use crate::common::{Job, engine};

const ROWS: u64 = 3000;

/// generator (1 subtask) → hash by key → keyed-counter (`p` subtasks) → JSONL (`p` subtasks),
/// checkpointed; `counter` is extra keyed-counter config.
fn job(p: u32, rate: u64, counter: &str) -> Job {
    Job::new(&format!(
        r#"
[job]
name = "split"
batch_rows = 20
channel_capacity = 4

[checkpoint]
interval_ms = 80
dir = "ck"
retain = 2

[restart]
attempts = 20
delay_ms = 20

[[source]]
id = "gen"
kind = "generator"
rows = {ROWS}
rows_per_second = {rate}
columns = [
  {{ name = "key", gen = "modulo", modulus = 16 }},
  {{ name = "seq", gen = "divide", divisor = 16 }},
]

[[operator]]
id = "count"
plugin = "{{guest:keyed-counter}}"
parallelism = {p}
capabilities = ["log", "state"]
inputs = [{{ from = "gen", partition = "hash", keys = ["key"] }}]
config = {{ key = "key" {counter} }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
parallelism = {p}
inputs = ["count"]
"#
    ))
}

/// The committed rows of a sink directory, sorted.
fn committed_rows(out: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(out).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") {
            rows.extend(std::fs::read_to_string(entry.path()).unwrap().lines().map(str::to_owned));
        }
    }
    rows.sort();
    rows
}

/// Two workers' meshes on loopback, each with its own certificate of one cluster CA.
struct Meshes {
    _certs: tempfile::TempDir,
    meshes: Vec<Arc<Mesh>>,
    peers: Vec<PartPeer>,
}

impl Meshes {
    fn new(n: usize) -> Self {
        let certs = tempfile::tempdir().unwrap();
        let ids: Vec<NodeIdentity> = (0..n).map(|i| NodeIdentity::new(&format!("worker-{i}")).unwrap()).collect();
        flumen_transport::certs::write_cluster_dir(certs.path(), &ids, 1).unwrap();
        let mut meshes = Vec::new();
        let mut peers = Vec::new();
        for id in &ids {
            let creds = NodeCredentials::load(certs.path(), id).unwrap();
            let endpoint =
                Arc::new(Endpoint::bind("127.0.0.1:0".parse().unwrap(), &creds, EndpointOptions::default()).unwrap());
            let mesh = Mesh::new(endpoint);
            tokio::spawn(mesh.clone().serve());
            peers.push(PartPeer { worker: id.as_str().to_owned(), addr: mesh.local_addr().unwrap().to_string() });
            meshes.push(mesh);
        }
        Self { _certs: certs, meshes, peers }
    }

    /// Every part's link for task `task`, part 0 first.
    async fn links(&self, task: &str) -> Vec<Split> {
        let parts = self.meshes.len() as u32;
        let linking = self.meshes.iter().enumerate().map(|(i, mesh)| {
            let peers = self.peers.clone();
            let mesh = mesh.clone();
            let task = task.to_owned();
            tokio::spawn(async move { mesh.link(&task, i as u32, &peers, Duration::from_secs(10)).await })
        });
        let mut splits = Vec::new();
        for (i, handle) in linking.collect::<Vec<_>>().into_iter().enumerate() {
            let link = handle.await.unwrap().unwrap_or_else(|e| panic!("part {i} links: {e}"));
            splits.push(Split { parts, part: i as u32, link });
        }
        splits
    }
}

/// Runs every part of region `gen` of `job` at once, each with its own scratch directory.
async fn run_parts(job: &Job, splits: Vec<Split>, resume: bool) -> Vec<Result<flumen_engine::JobSummary, EngineError>> {
    let engine = engine();
    let mut runs = Vec::new();
    for split in splits {
        let part = split.part;
        let prepared = engine.prepare(&job.path).await.expect("prepare");
        let options = RunOptions {
            regions: Some(BTreeSet::from(["gen".to_owned()])),
            scratch_dir: Some(job.file(&format!("scratch-{part}"))),
            resume,
            from_scratch: resume,
            split: Some(split),
            ..Default::default()
        };
        runs.push(tokio::spawn(async move { prepared.run_with(options, std::future::pending()).await }));
    }
    let mut out = Vec::new();
    for run in runs {
        out.push(run.await.unwrap());
    }
    out
}

/// Two parts commit exactly what one process commits, batches and barriers crossing
/// between them over QUIC; only the leading part writes manifests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_split_across_two_processes_commits_what_one_process_commits() {
    let whole = job(4, 20_000, "");
    whole.run().await.expect("the job runs in one process");
    let whole_rows = committed_rows(&whole.file("out"));
    assert_eq!(whole_rows.len() as u64, ROWS);

    let job = job(4, 20_000, "");
    let meshes = Meshes::new(2);
    let results = run_parts(&job, meshes.links("split/1").await, false).await;
    for (part, result) in results.iter().enumerate() {
        let summary = result.as_ref().unwrap_or_else(|e| panic!("part {part}: {e}"));
        let counted: u64 = summary.nodes.iter().filter(|n| n.id.as_str() == "count").map(|n| n.rows_in).sum();
        assert!(counted > 0 && counted < ROWS, "part {part} counted some rows, not all: {counted}");
    }
    let o = check(&job.file("out"), ROWS, "", true);
    assert!(o.clean() && o.rows == ROWS, "{o:?}");
    assert_eq!(committed_rows(&job.file("out")), whole_rows, "the split run commits what one process commits");
    let manifests = std::fs::read_dir(job.file("ck/gen"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("chk-"));
    assert!(manifests.count() > 0, "the region checkpointed");
}

/// A subtask that traps, in either part, restarts every part from the region's last
/// checkpoint together; the committed output is exactly-once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_in_either_part_restarts_every_part_from_the_last_checkpoint() {
    // Each counter instance traps after 700 rows; each of the 2 gets ~1500, so each traps at
    // least twice (a fresh instance after a restore takes 700 rows again).
    let job = job(2, 6_000, ", trap_after_rows = 700");
    let meshes = Meshes::new(2);
    let results = run_parts(&job, meshes.links("split/1").await, false).await;
    for (part, result) in results.iter().enumerate() {
        let summary = result.as_ref().unwrap_or_else(|e| panic!("part {part}: {e}"));
        let restarts: u64 = summary.regions.iter().map(|r| r.restarts).sum();
        assert!(restarts >= 2, "part {part} restarted with the other: {restarts} restarts");
    }
    let o = check(&job.file("out"), ROWS, "", true);
    assert!(o.clean() && o.rows == ROWS, "{o:?}");
}

/// When one part's process goes away mid-run, the other stops with `PartLost` (it restarts
/// nothing on its own, and commits nothing more); both started again with `resume` finish
/// the job exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_part_stops_the_other_and_both_resume_exactly_once() {
    let job = job(2, 3_000, "");
    let meshes = Meshes::new(2);
    let mut splits = meshes.links("split/1").await;
    let follower = splits.pop().unwrap();
    let leader = splits.pop().unwrap();
    let engine = engine();
    let prepare = |part: u32, split: Split| {
        let engine = engine.clone();
        let job_path = job.path.clone();
        let scratch = job.file(&format!("scratch-{part}"));
        async move {
            let prepared = engine.prepare(&job_path).await.expect("prepare");
            let options = RunOptions {
                regions: Some(BTreeSet::from(["gen".to_owned()])),
                scratch_dir: Some(scratch),
                split: Some(split),
                ..Default::default()
            };
            prepared.run_with(options, std::future::pending()).await
        }
    };
    let leading = tokio::spawn(prepare(0, leader));
    let following = tokio::spawn(prepare(1, follower));
    // Once a checkpoint completed, the follower's process "dies": its run and link go.
    let ck = job.file("ck/gen");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&ck)
        .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("chk-")))
    {
        assert!(std::time::Instant::now() < deadline, "no checkpoint in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    following.abort();
    let _ = following.await;
    let err = tokio::time::timeout(Duration::from_secs(30), leading)
        .await
        .expect("the leading part stops once the other is gone")
        .unwrap()
        .expect_err("the leading part cannot finish alone");
    assert!(matches!(err, EngineError::PartLost { .. }), "{err}");
    assert!(check(&job.file("out"), ROWS, "", true).rows < ROWS, "the run was cut short");

    let results = run_parts(&job, meshes.links("split/2").await, true).await;
    for (part, result) in results.iter().enumerate() {
        result.as_ref().unwrap_or_else(|e| panic!("part {part} after resume: {e}"));
    }
    let o = check(&job.file("out"), ROWS, "", true);
    assert!(o.clean() && o.rows == ROWS, "{o:?}");
}

/// A split needs exactly one region chosen, and a part below the number of parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_without_one_region_or_with_a_bad_part_is_refused() {
    let job = job(2, 6_000, "");
    let meshes = Meshes::new(2);
    let split = meshes.links("split/1").await.remove(0);
    let engine = engine();
    for (regions, part, expected) in [
        (None, 0, "one region at a time (0 chosen)"),
        (Some(BTreeSet::from(["gen".to_owned()])), 2, "part 2 of 2 parts"),
    ] {
        let prepared = engine.prepare(&job.path).await.expect("prepare");
        let options = RunOptions { regions, split: Some(Split { part, ..split.clone() }), ..Default::default() };
        let err = prepared.run_with(options, std::future::pending()).await.expect_err("refused");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

/// Blob references cannot cross to another process (each has its own blob store): a split
/// whose blob columns would cross is refused on both parts, naming the node that sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_whose_blob_columns_would_cross_is_refused_naming_the_node() {
    let job = Job::new(
        r#"
[job]
name = "split-blobs"

[checkpoint]
interval_ms = 80
dir = "ck"

[[source]]
id = "files"
kind = "blobs"
path = "data"

[[operator]]
id = "pass"
plugin = "{guest:passthrough}"
parallelism = 2
inputs = ["files"]

[[sink]]
id = "out"
kind = "parquet"
path = "out"
parallelism = 2
inputs = ["pass"]
"#,
    );
    std::fs::create_dir_all(job.file("data")).unwrap();
    std::fs::write(job.file("data/a.txt"), b"some bytes").unwrap();
    let meshes = Meshes::new(2);
    let engine = engine();
    let mut runs = Vec::new();
    for split in meshes.links("split-blobs/1").await {
        let part = split.part;
        let prepared = engine.prepare(&job.path).await.expect("prepare");
        let options = RunOptions {
            regions: Some(BTreeSet::from(["files".to_owned()])),
            scratch_dir: Some(job.file(&format!("scratch-{part}"))),
            split: Some(split),
            ..Default::default()
        };
        runs.push(tokio::spawn(async move { prepared.run_with(options, std::future::pending()).await }));
    }
    for (part, run) in runs.into_iter().enumerate() {
        let err = run.await.unwrap().expect_err("refused");
        let text = err.to_string();
        // The leading part refuses; a following part refuses too, or hears the leader's
        // refusal (the leader waits for it to be read before closing the link).
        assert!(text.contains("`files` sends blob references to subtasks in another process"), "part {part}: {text}");
    }
}

/// A part is linked only to the worker placed there: a connection for part 1 from another
/// cluster node (its certificate valid, its identity not the one placed) is refused, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_from_a_worker_not_placed_there_is_refused_naming_both() {
    let meshes = Meshes::new(3);
    // Part 1 is placed on worker-2; worker-1 calls as part 1 all the same.
    let peers = vec![meshes.peers[0].clone(), meshes.peers[2].clone()];
    let (leader, intruder) = (meshes.meshes[0].clone(), meshes.meshes[1].clone());
    let waiting = {
        let peers = peers.clone();
        tokio::spawn(async move { leader.link("t/1", 0, &peers, Duration::from_secs(10)).await.map(|_| ()) })
    };
    let _calling = intruder.link("t/1", 1, &peers, Duration::from_secs(10)).await;
    let err = waiting.await.unwrap().expect_err("refused");
    assert!(err.contains("part 1 of t/1 runs on worker-2, not on worker-1"), "{err}");
}
