//! Live upgrade of an operator at a checkpoint barrier: the swap itself
//! (exactly-once output, every committed epoch written by one version), a
//! broken version rolling back by itself, the refusals, and — with real
//! processes — many swaps through `flumen job upgrade` with SIGKILLs between.
//!
//! The job is the checkpoint tests' counting job (generator → keyed-counter
//! in host state → transactional JSONL) with `tag` set: keyed-counter then
//! stamps every row with its tag, so the output says which version
//! processed each row, and the exactly-once oracle still applies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flumen_engine::{JobControl, RunOptions, UpgradeError, UpgradeOutcome, UpgradeRequest};

use crate::checkpoint::{check, counting_job, finish, flumen};
use crate::common::{engine, guest};

/// An upgrade to keyed-counter with `tag` (and more config) set.
fn to_tag(tag: &str, extra: &str) -> UpgradeRequest {
    let mut r = UpgradeRequest::new("count", guest("keyed-counter"), format!("keyed-counter ({tag})"));
    r.config_json = Some(format!(r#"{{"key": "key", "tag": "{tag}"{extra}}}"#));
    r.health_batches = 4;
    r
}

/// Every committed part file's tags, by sink subtask, in checkpoint order.
/// Fails when one file holds rows of two versions.
pub(crate) fn tags_by_subtask(out: &Path) -> BTreeMap<String, Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .collect();
    files.sort();
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let mut tags: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["tag"].as_str().unwrap().to_string())
            .collect();
        tags.dedup();
        assert!(tags.len() <= 1, "{name} holds rows of several versions: {tags:?}");
        // part-<subtask>-<checkpoint>…: the subtask is the second field.
        let subtask = name.split('-').nth(1).unwrap_or_default().to_string();
        by.entry(subtask).or_default().extend(tags);
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_swaps_version_at_a_barrier_and_nothing_is_lost_or_repeated() {
    let rows = 6000;
    let job = counting_job(rows, 3000, "", r#", tag = "v1""#, 2);
    let prepared = engine().prepare(&job.path).await.expect("prepare");
    let control = JobControl::new();
    let options = RunOptions { control: Some(control.clone()), ..Default::default() };
    let run = tokio::spawn(prepared.run_with(options, std::future::pending()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let outcome = control.upgrade(to_tag("v2", "")).await.expect("the upgrade is taken");
    let UpgradeOutcome::Applied { checkpoint, swap_ms, .. } = outcome else { panic!("not applied: {outcome:?}") };
    assert!(checkpoint > 0 && swap_ms > 0.0, "{outcome:?}");
    run.await.unwrap().expect("the job finishes");

    let o = check(&job.file("out"), rows, "upgraded", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
    let tags = tags_by_subtask(&job.file("out"));
    for (subtask, seq) in &tags {
        // Old, then new: one switch per sink subtask, never back.
        let mut s = seq.clone();
        s.dedup();
        assert_eq!(s, ["v1", "v2"], "sink subtask {subtask}: {seq:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_fails_on_probation_rolls_back_and_loses_nothing() {
    let rows = 5000;
    let job = counting_job(rows, 3000, "", r#", tag = "v1""#, 2);
    let prepared = engine().prepare(&job.path).await.expect("prepare");
    let control = JobControl::new();
    let options = RunOptions { control: Some(control.clone()), ..Default::default() };
    let run = tokio::spawn(prepared.run_with(options, std::future::pending()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Opens fine (the trial instance passes), then panics on its first batch.
    let outcome = control.upgrade(to_tag("broken", r#", "trap_after_rows": 0"#)).await.expect("taken");
    let UpgradeOutcome::RolledBack { reason, .. } = &outcome else { panic!("not rolled back: {outcome:?}") };
    assert!(reason.contains("trap_after_rows"), "the reason names the guest's failure: {reason}");
    // The job goes on with the old version, and a good upgrade still works after.
    let again = control.upgrade(to_tag("v2", "")).await.expect("taken");
    assert!(matches!(again, UpgradeOutcome::Applied { .. }), "{again:?}");
    let summary = run.await.unwrap().expect("the job finishes");
    assert_eq!(summary.regions.iter().map(|r| r.restarts).sum::<u64>(), 0, "a rollback is not a restart");

    let o = check(&job.file("out"), rows, "rolled back", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
    let tags = tags_by_subtask(&job.file("out"));
    for (subtask, seq) in &tags {
        assert!(!seq.iter().any(|t| t == "broken"), "sink subtask {subtask} committed rows of the broken version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_that_cannot_work_are_refused_before_anything_changes() {
    let rows = 4000;
    let job = counting_job(rows, 4000, "", r#", tag = "v1""#, 1);
    let prepared = engine().prepare(&job.path).await.expect("prepare");
    let control = JobControl::new();
    let options = RunOptions { control: Some(control.clone()), ..Default::default() };
    let run = tokio::spawn(prepared.run_with(options, std::future::pending()));

    let mut unknown = to_tag("v2", "");
    unknown.operator = "nope".into();
    match control.upgrade(unknown).await {
        Err(UpgradeError::UnknownOperator { known, .. }) => assert_eq!(known, "count"),
        other => panic!("{other:?}"),
    }
    let mut source = to_tag("v2", "");
    source.operator = "gen".into();
    assert!(matches!(control.upgrade(source).await, Err(UpgradeError::NotAnOperator { kind: "source", .. })));
    // Without `tag` keyed-counter emits one column fewer: downstream was planned against it.
    let mut narrower = to_tag("v2", "");
    narrower.config_json = Some(r#"{"key": "key"}"#.into());
    match control.upgrade(narrower).await {
        Err(UpgradeError::Refused { reason, .. }) => {
            assert!(reason.contains("another schema") && reason.contains("tag: Utf8"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let mut bad_config = to_tag("v2", "");
    bad_config.config_json = Some(r#"{"key": "no_such_column", "tag": "v2"}"#.into());
    match control.upgrade(bad_config).await {
        Err(UpgradeError::Refused { reason, .. }) => assert!(reason.contains("no_such_column"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let mut not_wasm = to_tag("v2", "");
    not_wasm.component = job.path.clone();
    assert!(matches!(control.upgrade(not_wasm).await, Err(UpgradeError::Refused { .. })));

    run.await.unwrap().expect("the job finishes untouched");
    let o = check(&job.file("out"), rows, "refusals", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
    let tags = tags_by_subtask(&job.file("out"));
    assert!(tags.values().flatten().all(|t| t == "v1"), "{tags:?}");
}

/// `flumen job upgrade` against `flumen run --control`: 20 swaps between
/// two versions while the run is SIGKILLed and resumed now and then. Swaps
/// a kill interrupts roll back (they are asked again); the output is
/// exactly-once and no committed epoch mixes versions.
#[test]
fn twenty_swaps_with_kills_between_keep_exactly_once() {
    let rows = 60_000;
    let job = counting_job(rows, 2500, "", r#", tag = "v0""#, 2);
    let socket = job.dir.path().join("control.sock");
    let keyed_counter = guest("keyed-counter");
    let spawn = |resume: bool| {
        let mut cmd = flumen(&job, resume);
        cmd.arg("--control").arg(&socket);
        cmd.spawn().unwrap()
    };
    let upgrade = |tag: &str| -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
            .args(["job", "upgrade", "--operator", "count", "--health-batches", "4", "--control"])
            .arg(&socket)
            .arg("--to")
            .arg(&keyed_counter)
            .arg("--config")
            .arg(format!(r#"{{"key": "key", "tag": "{tag}"}}"#))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    };
    let wait_for_socket = |child: &mut std::process::Child| {
        let start = Instant::now();
        while !socket.exists() {
            assert!(child.try_wait().unwrap().is_none(), "the run ended before it listened");
            assert!(start.elapsed() < Duration::from_secs(60), "no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let mut child = spawn(false);
    wait_for_socket(&mut child);
    let (mut applied, mut kills, mut rolled_back) = (0, 0, 0);
    let mut next = 1;
    while applied < 20 {
        let (code, text) = upgrade(&format!("v{}", next % 2));
        match code {
            0 => {
                assert!(text.contains("\"outcome\":\"applied\""), "{text}");
                applied += 1;
                next += 1;
            }
            1 => rolled_back += 1,
            _ => panic!("upgrade {next}: exit {code}: {text}"),
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended before 20 swaps (after {applied})");
        if applied % 5 == 4 && kills < applied / 5 + 1 {
            child.kill().unwrap(); // SIGKILL, socket left behind
            let _ = child.wait();
            kills += 1;
            let _ = std::fs::remove_file(&socket);
            child = spawn(true);
            wait_for_socket(&mut child);
        }
    }
    let (code, text) = finish(child, "the last run");
    assert_eq!(code, 0, "{text}");
    eprintln!("{applied} swaps applied, {rolled_back} rolled back, {kills} kills");
    assert!(kills >= 4);

    let o = check(&job.file("out"), rows, "twenty swaps", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
    let tags = tags_by_subtask(&job.file("out"));
    let distinct: std::collections::BTreeSet<&String> = tags.values().flatten().collect();
    assert!(distinct.len() >= 2, "{distinct:?}");
}
