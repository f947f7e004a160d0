//! Running part of a checkpointed job, as a cluster worker does: some of its
//! pipelined regions per process (`RunOptions::regions`) against one shared
//! checkpoint directory, each process with its own working state
//! (`scratch_dir`); a `CommitFence` that stops every commit of a process that
//! lost its lease; and checkpoint ids above a floor (`checkpoint_id_floor`).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flumen_engine::{CommitFence, EngineError, ResumeError, RunOptions};

use crate::checkpoint::{check, counting_job};
use crate::common::{Job, engine};

const ROWS: u64 = 1500;

/// Two independent regions, `first` and `second`: generator → keyed-counter → JSONL parts each.
fn two_region_job(checkpointed: bool) -> Job {
    let mut text = String::from(
        r#"
[job]
name = "two-regions"
batch_rows = 20
channel_capacity = 4
"#,
    );
    if checkpointed {
        text.push_str(
            r#"
[checkpoint]
interval_ms = 50
dir = "ck"
retain = 2

[restart]
attempts = 3
delay_ms = 20
"#,
        );
    }
    for r in ["first", "second"] {
        text.push_str(&format!(
            r#"
[[source]]
id = "{r}"
kind = "generator"
rows = {ROWS}
rows_per_second = 3000
columns = [
  {{ name = "key", gen = "modulo", modulus = 16 }},
  {{ name = "seq", gen = "divide", divisor = 16 }},
]

[[operator]]
id = "count_{r}"
plugin = "{{guest:keyed-counter}}"
capabilities = ["log", "state"]
inputs = ["{r}"]
config = {{ key = "key" }}

[[sink]]
id = "out_{r}"
kind = "jsonl"
path = "out_{r}"
inputs = ["count_{r}"]
"#
        ));
    }
    Job::new(&text)
}

fn only(regions: &[&str]) -> Option<BTreeSet<String>> {
    Some(regions.iter().map(|r| (*r).to_owned()).collect())
}

/// The rows of the committed part files of a sink directory, sorted.
fn committed_rows(out: &Path) -> Vec<String> {
    let mut rows: Vec<String> = committed_parts(out)
        .iter()
        .flat_map(|p| std::fs::read_to_string(out.join(p)).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    rows.sort();
    rows
}

/// The names of the committed part files of a sink directory, sorted.
fn committed_parts(out: &Path) -> Vec<String> {
    let mut parts: Vec<String> = std::fs::read_dir(out)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    parts.retain(|n| n.starts_with("part-"));
    parts.sort();
    parts
}

/// The checkpoint ids of the manifests in a region's checkpoint directory, sorted.
fn manifest_ids(region_dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(region_dir)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.strip_suffix(".json")?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// The node ids a summary reports on.
fn node_ids(summary: &flumen_engine::JobSummary) -> BTreeSet<String> {
    summary.nodes.iter().map(|n| n.id.to_string()).collect()
}

/// The two regions of one job, each run by its own `run_with` at the same time on the same
/// checkpoint directory with its own scratch directory, write exactly what a run of the whole
/// job writes for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_run_the_two_regions_of_one_job_side_by_side() {
    let whole = two_region_job(true);
    whole.run().await.expect("the whole job runs");

    let job = two_region_job(true);
    let engine = engine();
    let first = engine.prepare(&job.path).await.expect("prepare");
    let second = engine.prepare(&job.path).await.expect("prepare again");
    let options = |region: &str| RunOptions {
        regions: only(&[region]),
        scratch_dir: Some(job.file(&format!("scratch-{region}"))),
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        first.run_with(options("first"), std::future::pending()),
        second.run_with(options("second"), std::future::pending())
    );
    for (region, summary) in [("first", a), ("second", b)] {
        let summary = summary.unwrap_or_else(|e| panic!("region {region}: {e}"));
        let regions: Vec<&str> = summary.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(regions, [region], "the summary covers the region run");
        let nodes: BTreeSet<String> =
            [region.to_owned(), format!("count_{region}"), format!("out_{region}")].into_iter().collect();
        assert_eq!(node_ids(&summary), nodes, "the summary covers the region's nodes only");
        let out = job.file(&format!("out_{region}"));
        let o = check(&out, ROWS, region, true);
        assert!(o.clean() && o.rows == ROWS, "region {region}: {o:?}");
        assert_eq!(
            committed_rows(&out),
            committed_rows(&whole.file(&format!("out_{region}"))),
            "region {region} wrote what the whole job writes for it"
        );
        assert!(!manifest_ids(&job.file(&format!("ck/{region}"))).is_empty(), "region {region} checkpointed");
        assert!(job.file(&format!("scratch-{region}")).is_dir(), "its state worked in its own scratch dir");
    }
    assert!(!job.file("ck/.working").exists(), "no process used the shared working directory");
}

/// A run of one region starts nothing of the others and leaves their checkpoint directories
/// alone; a fresh run of another region is not refused for the first one's checkpoints; a
/// whole-job run without `resume` still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_one_region_leaves_the_others_alone() {
    let job = two_region_job(true);
    let engine = engine();
    let run = |region: &'static str| {
        let engine = engine.clone();
        let job_path = job.path.clone();
        let scratch = job.file(&format!("scratch-{region}"));
        async move {
            let prepared = engine.prepare(&job_path).await.expect("prepare");
            let options = RunOptions { regions: only(&[region]), scratch_dir: Some(scratch), ..Default::default() };
            prepared.run_with(options, std::future::pending()).await
        }
    };
    let summary = run("first").await.expect("region first runs");
    assert_eq!(node_ids(&summary), ["count_first", "first", "out_first"].map(str::to_owned).into());
    assert!(check(&job.file("out_first"), ROWS, "first", true).clean());
    assert!(!job.file("ck/second").exists(), "region second's checkpoint directory was not touched");
    assert!(!job.file("out_second").exists(), "region second's sink did not run");

    run("second").await.expect("a fresh run of region second, beside region first's checkpoints");
    let o = check(&job.file("out_second"), ROWS, "second", true);
    assert!(o.clean() && o.rows == ROWS, "{o:?}");

    let err = job.run().await.expect_err("a whole-job run over earlier checkpoints is refused");
    assert!(matches!(err, EngineError::Resume(ResumeError::EarlierRun { .. })), "{err}");
}

/// A region name the job does not have is refused before anything runs, naming it and the
/// job's regions; so is an empty choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_region_is_refused_naming_it_and_the_jobs_regions() {
    let job = two_region_job(true);
    let engine = engine();
    for (regions, expected) in [
        (only(&["first", "nope"]), vec!["no pipelined region named `nope`", "`first`", "`second`"]),
        (only(&[]), vec!["no region was chosen", "`first`", "`second`"]),
    ] {
        let prepared = engine.prepare(&job.path).await.expect("prepare");
        let options = RunOptions { regions, ..Default::default() };
        let err = prepared.run_with(options, std::future::pending()).await.expect_err("refused");
        assert!(matches!(err, EngineError::Resume(ResumeError::UnknownRegions { .. })), "{err}");
        crate::common::assert_contains(&err.to_string(), &expected);
    }
    for nothing in ["ck/first", "ck/second", "out_first", "out_second"] {
        assert!(!job.file(nothing).exists(), "{nothing} exists: something ran");
    }
}

/// Without `[checkpoint]` a job commits all or nothing across its regions: running some of
/// them is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choosing_regions_of_a_job_without_checkpoints_is_refused() {
    let job = two_region_job(false);
    let prepared = engine().prepare(&job.path).await.expect("prepare");
    let options = RunOptions { regions: only(&["first"]), ..Default::default() };
    let err = prepared.run_with(options, std::future::pending()).await.expect_err("refused");
    assert!(matches!(err, EngineError::Resume(ResumeError::RegionsNeedCheckpoints { .. })), "{err}");
    crate::common::assert_contains(&err.to_string(), &["[checkpoint]", "all or nothing"]);
    assert!(!job.file("out_first").exists() && !job.file("out_second").exists());
}

/// A lease that is lost once the sink has committed output: what was committed then, and which
/// manifests existed, when the fence first refused.
#[derive(Debug)]
struct LostLease {
    out: PathBuf,
    region: PathBuf,
    /// Set at the first refusal: (committed parts, manifest ids) at that moment.
    lost: Mutex<Option<(Vec<String>, Vec<u64>)>>,
    refusals: Mutex<u32>,
}

impl CommitFence for LostLease {
    fn check(&self) -> Result<(), String> {
        let mut lost = self.lost.lock().unwrap();
        if lost.is_none() {
            let parts = committed_parts(&self.out);
            if parts.is_empty() {
                return Ok(());
            }
            *lost = Some((parts, manifest_ids(&self.region)));
        }
        *self.refusals.lock().unwrap() += 1;
        Err("lease 7 lost".to_owned())
    }
}

/// A fence that starts refusing after the first checkpoint that committed output ends the run
/// at once with `EngineError::Fenced` (no regional restart, though `[restart]` allows five), and
/// no manifest or committed output appears after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_that_refuses_after_the_first_checkpoint_stops_every_commit() {
    let rows = 4000;
    let job = counting_job(rows, 2000, "", "", 1);
    let fence = Arc::new(LostLease {
        out: job.file("out"),
        region: job.file("ck/gen"),
        lost: Mutex::new(None),
        refusals: Mutex::new(0),
    });
    let prepared = engine().prepare(&job.path).await.expect("prepare");
    let options = RunOptions { fence: Some(fence.clone()), ..Default::default() };
    let err = prepared.run_with(options, std::future::pending()).await.expect_err("the run is fenced");
    assert!(matches!(&err, EngineError::Fenced { reason } if reason == "lease 7 lost"), "{err}");
    assert_eq!(err.to_string(), "this process was fenced: lease 7 lost; nothing more is committed");
    assert_eq!(*fence.refusals.lock().unwrap(), 1, "asked once after the lease was lost: no restart");
    let (parts, manifests) = fence.lost.lock().unwrap().clone().expect("the fence refused");
    // Anything still in flight would show up now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(committed_parts(&job.file("out")), parts, "no output was committed after the fence refused");
    assert_eq!(manifest_ids(&job.file("ck/gen")), manifests, "no manifest was written after the fence refused");
    let o = check(&job.file("out"), rows, "fenced", true);
    assert!(o.rows > 0 && o.rows < rows, "a prefix was committed, not the whole input: {o:?}");
    assert_eq!(o.duplicated + o.out_of_order + o.wrong_count, 0, "{o:?}");
}

/// With `checkpoint_id_floor = 1 << 32` every checkpoint id, in the manifests and in the sink's
/// part file names, is above it, and the output is exactly-once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_id_floor_puts_every_id_above_it() {
    let rows = 800;
    let floor = 1u64 << 32;
    let job = counting_job(rows, 3000, "", "", 1);
    let prepared = engine().prepare(&job.path).await.expect("prepare");
    let options = RunOptions { checkpoint_id_floor: floor, ..Default::default() };
    let summary = prepared.run_with(options, std::future::pending()).await.expect("run");
    assert!(summary.regions.iter().all(|r| r.last_checkpoint > floor), "{:?}", summary.regions);
    let ids = manifest_ids(&job.file("ck/gen"));
    assert!(!ids.is_empty() && ids.iter().all(|&id| id > floor), "{ids:?}");
    let parts = committed_parts(&job.file("out"));
    let part_ids: HashSet<u64> =
        parts.iter().map(|p| p.trim_end_matches(".jsonl").rsplit('-').next().unwrap().parse().unwrap()).collect();
    assert!(!part_ids.is_empty() && part_ids.iter().all(|&id| id > floor), "{parts:?}");
    let o = check(&job.file("out"), rows, "floor", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
}
