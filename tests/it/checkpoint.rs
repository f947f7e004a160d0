//! Exactly-once under faults: SIGKILL at random moments, a crash at each step
//! of two-phase commit, regional failover, unaligned checkpoints under
//! backpressure, damaged checkpoint files (shared files, damaged manifests
//! with the highest ids, nothing intact left), and stop-then-resume.
//!
//! Every job reads `(key, seq)` rows from a generator (`key = row % K`,
//! `seq = row / K`), counts rows per key in host state (`keyed-counter`) and
//! writes JSONL part files that become visible only when their checkpoint
//! completes. The oracle reads the committed parts and counts `lost`,
//! `duplicated`, `out_of_order`, `unexpected` and `wrong_count` (a count that
//! is not `seq + 1` means state was lost or applied twice).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::common::{Job, engine, kill_when, wait_until};

const KEYS: u64 = 16;

/// A generator → keyed-counter → JSONL job with checkpoints.
pub(crate) fn counting_job(rows: u64, rate: u64, extra_checkpoint: &str, counter_config: &str, operator_p: u32) -> Job {
    Job::new(&counting_job_text(
        rows,
        rate,
        &format!("retain = 2\n{extra_checkpoint}"),
        counter_config,
        operator_p,
        KEYS,
    ))
}

fn counting_job_text(
    rows: u64,
    rate: u64,
    extra_checkpoint: &str,
    counter_config: &str,
    operator_p: u32,
    keys: u64,
) -> String {
    format!(
        r#"
[job]
name = "exactly-once"
batch_rows = 20
channel_capacity = 4

[checkpoint]
interval_ms = 80
dir = "ck"
{extra_checkpoint}

[restart]
attempts = 5
delay_ms = 20

[[source]]
id = "gen"
kind = "generator"
parallelism = 1
rows = {rows}
rows_per_second = {rate}
columns = [
  {{ name = "key", gen = "modulo", modulus = {keys} }},
  {{ name = "seq", gen = "divide", divisor = {keys} }},
]

[[operator]]
id = "count"
plugin = "{{guest:keyed-counter}}"
parallelism = {operator_p}
capabilities = ["log", "state"]
inputs = [{{ from = "gen", partition = "hash", keys = ["key"] }}]
config = {{ key = "key" {counter_config} }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
parallelism = {operator_p}
inputs = ["count"]
"#
    )
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Oracle {
    pub(crate) rows: u64,
    lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
    unexpected: u64,
    pub(crate) wrong_count: u64,
    /// Files in the output directory that are not committed part files.
    uncommitted_visible: u64,
}

impl Oracle {
    pub(crate) fn clean(&self) -> bool {
        self.lost + self.duplicated + self.out_of_order + self.unexpected + self.wrong_count + self.uncommitted_visible
            == 0
    }
}

/// Checks the committed output of `out_dir` against rows `0..rows`.
/// `ordered`: each key's rows come from one source subtask, so per-key order
/// and `count == seq + 1` must hold; otherwise only that each key's counts
/// are exactly `1..=n`.
pub(crate) fn check(out_dir: &Path, rows: u64, prefix: &str, ordered: bool) -> Oracle {
    let expected: HashSet<(i64, i64)> = (0..rows).map(|r| ((r % KEYS) as i64, (r / KEYS) as i64)).collect();
    check_against(out_dir, &expected, prefix, ordered)
}

fn check_against(out_dir: &Path, expected: &HashSet<(i64, i64)>, prefix: &str, ordered: bool) -> Oracle {
    let mut o = Oracle::default();
    let mut parts: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(out_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && entry.file_type().unwrap().is_dir() {
            continue; // staging, invisible to readers by convention
        }
        if name.starts_with("part-") && name.ends_with(".jsonl") {
            parts.push(entry.path());
        } else {
            o.uncommitted_visible += 1;
        }
    }
    parts.sort();
    let mut seen: HashSet<(i64, i64)> = HashSet::new();
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    let mut counts: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for p in parts {
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let (key, seq, count) =
                (v["key"].as_i64().unwrap(), v["seq"].as_i64().unwrap(), v["count"].as_i64().unwrap());
            o.rows += 1;
            if !expected.contains(&(key, seq)) {
                o.unexpected += 1;
                continue;
            }
            if !seen.insert((key, seq)) {
                o.duplicated += 1;
                continue;
            }
            if ordered {
                if last.get(&key).is_some_and(|&l| seq <= l) {
                    o.out_of_order += 1;
                }
                last.insert(key, seq);
                if count != seq + 1 {
                    o.wrong_count += 1;
                }
            }
            counts.entry(key).or_default().push(count);
        }
    }
    if !ordered {
        for (_, mut c) in counts {
            c.sort_unstable();
            o.wrong_count += c.iter().enumerate().filter(|(i, v)| **v != *i as i64 + 1).count() as u64;
        }
    }
    o.lost = (expected.len() as u64).saturating_sub(seen.len() as u64);
    if !o.clean() {
        eprintln!("{prefix}: oracle {o:?}");
    }
    o
}

/// Runs `job` up to `runs` times, each SIGKILLed after a random wait in
/// `wait_ms` (resuming from the second run on), then resumes it to completion,
/// unless a run ends by itself first (which must exit 0). Returns the kills.
pub(crate) fn kill_at_random_then_resume(
    job: &Job,
    rng: &mut rand::rngs::SmallRng,
    runs: usize,
    wait_ms: std::ops::Range<u64>,
    what: &str,
) -> u64 {
    let mut kills = 0;
    for _ in 0..runs {
        let mut child = flumen(job, kills > 0).spawn().unwrap();
        let wait = Duration::from_millis(rng.random_range(wait_ms.clone()));
        let start = Instant::now();
        while start.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_some() {
            let (code, text) = finish(child, "run");
            assert_eq!(code, 0, "{what}: {text}");
            return kills;
        }
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        kills += 1;
    }
    resume_to_completion(job);
    kills
}

pub(crate) fn flumen(job: &Job, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flumen"));
    cmd.arg("run").arg("--quiet");
    if resume {
        cmd.arg("--resume");
    }
    cmd.arg(&job.path)
        .env("FLUMEN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"))
        .env_remove("FLUMEN_FAILPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub(crate) fn finish(child: Child, what: &str) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), format!("{what}:\n{text}"))
}

/// Runs with `--resume` until the job completes by itself (bounded).
pub(crate) fn resume_to_completion(job: &Job) -> String {
    for _ in 0..5 {
        let (code, text) = finish(flumen(job, true).spawn().unwrap(), "resume");
        if code == 0 {
            return text;
        }
        assert_ne!(code, 2, "resume refused: {text}");
        eprintln!("resume attempt ended with {code}: {text}");
    }
    panic!("the job did not complete after 5 resumes");
}

/// ≥ 20 SIGKILLs at random moments across seeds; after resume and drain the
/// oracle counts nothing lost, duplicated or out of order.
#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let seeds: u64 = std::env::var("FLUMEN_KILL_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let rows = 4000;
    let mut kills = 0;
    for seed in 0..seeds {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let job = counting_job(rows, 2000, "", "", 2);
        kills += kill_at_random_then_resume(&job, &mut rng, 8, 100..700, &format!("seed {seed}"));
        let o = check(&job.file("out"), rows, &format!("seed {seed}"), true);
        assert!(o.clean(), "seed {seed} (replay with FLUMEN_KILL_SEEDS): {o:?}");
        assert_eq!(o.rows, rows, "seed {seed}");
    }
    assert!(kills >= 20.min(4 * seeds), "only {kills} kills happened: the job ran too fast to be killed");
}

/// A state cache (`limits.state_cache_mb = 1`) smaller than the state (30,000 keys, about
/// 3 MiB), so it flushes and evicts between checkpoints, and SIGKILLs in the middle: after
/// resume nothing is lost, duplicated or counted twice.
#[test]
fn a_state_cache_smaller_than_the_state_survives_kills() {
    let keys = 30_000u64;
    let rows = 4 * keys;
    let text = counting_job_text(rows, 40_000, "retain = 2", "", 1, keys).replace(
        "capabilities = [\"log\", \"state\"]",
        "capabilities = [\"log\", \"state\"]\nlimits = { state_cache_mb = 1 }",
    );
    assert!(text.contains("state_cache_mb"));
    let job = Job::new(&text);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let kills = kill_at_random_then_resume(&job, &mut rng, 4, 400..2000, "state cache");
    let expected: HashSet<(i64, i64)> = (0..rows).map(|r| ((r % keys) as i64, (r / keys) as i64)).collect();
    let o = check_against(&job.file("out"), &expected, "state cache", true);
    assert!(o.clean(), "{o:?}");
    assert_eq!(o.rows, rows);
    assert!(kills >= 1, "the job ran too fast to be killed");
}

/// A crash (abort) at each step of two-phase commit, each on the 1st, 2nd
/// and 3rd checkpoint: after resume nothing is lost or duplicated.
#[test]
fn a_crash_at_each_step_of_two_phase_commit_is_recovered() {
    let points = [
        "sink::after-pre-commit",
        "checkpoint::before-manifest",
        "checkpoint::after-manifest",
        "checkpoint::during-commit",
        "checkpoint::after-commit",
    ];
    let rows = 2000;
    for point in points {
        for pass in 0..3 {
            let job = counting_job(rows, 4000, "", "", 2);
            let actions = if pass == 0 { "return".to_string() } else { format!("{pass}*off->return") };
            let child = flumen(&job, false).env("FLUMEN_FAILPOINTS", format!("{point}={actions}")).spawn().unwrap();
            let (code, text) = finish(child, point);
            assert_ne!(code, 0, "{point} pass {pass}: the fail point never fired\n{text}");
            resume_to_completion(&job);
            let o = check(&job.file("out"), rows, &format!("{point} pass {pass}"), true);
            assert!(o.clean() && o.rows == rows, "{point} pass {pass}: {o:?}");
        }
    }
}

/// Three independent regions; a guest trap in one restarts only that region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_restarts_only_its_own_region() {
    let mut text = String::from(
        r#"
[job]
name = "regions"
batch_rows = 20

[checkpoint]
interval_ms = 50
dir = "ck"

[restart]
attempts = 3
delay_ms = 10
"#,
    );
    for (r, trap) in [("a", ""), ("b", ""), ("c", ", trap_after_rows = 1500")] {
        text.push_str(&format!(
            r#"
[[source]]
id = "gen_{r}"
kind = "generator"
rows = 2000
rows_per_second = 4000
columns = [
  {{ name = "key", gen = "modulo", modulus = {KEYS} }},
  {{ name = "seq", gen = "divide", divisor = {KEYS} }},
]

[[operator]]
id = "count_{r}"
plugin = "{{guest:keyed-counter}}"
capabilities = ["log", "state"]
inputs = ["gen_{r}"]
config = {{ key = "key"{trap} }}

[[sink]]
id = "out_{r}"
kind = "jsonl"
path = "out_{r}"
inputs = ["count_{r}"]
"#
        ));
    }
    let job = Job::new(&text);
    let summary = job.run().await.expect("the job completes after restarting region c");
    let restarts: BTreeMap<&str, u64> = summary.regions.iter().map(|r| (r.name.as_str(), r.restarts)).collect();
    assert_eq!(restarts.len(), 3, "{restarts:?}");
    for (name, n) in &restarts {
        if name.contains("gen_c") {
            assert!(*n >= 1, "region c must have restarted: {restarts:?}");
        } else {
            assert_eq!(*n, 0, "region {name} must not restart: {restarts:?}");
        }
    }
    for r in ["a", "b", "c"] {
        let o = check(&job.file(&format!("out_{r}")), 2000, r, true);
        assert!(o.clean() && o.rows == 2000, "region {r}: {o:?}");
    }
    let plan = engine().prepare(&job.path).await.unwrap().describe();
    for r in ["gen_a", "gen_b", "gen_c"] {
        assert!(plan.lines().any(|l| l.contains("region") && l.contains(r)), "plan prints region {r}:\n{plan}");
    }
}

/// Unaligned checkpoints under backpressure: a fast source with a full
/// channel and a slow one with an empty channel feed one slow operator, so
/// the slow source's barrier arrives first and the fast source's queued
/// batches become in-flight data of the checkpoint. A kill and resume
/// restores them exactly once.
#[test]
fn unaligned_checkpoints_restore_in_flight_batches_exactly_once() {
    unaligned_case(r#"mode = "unaligned""#);
}

/// Aligned with a short timeout under the same backpressure: exactly once
/// across a kill. Whether a given checkpoint switches to unaligned depends on
/// which barrier arrives first (a throttled source notices an injected
/// barrier only between its batches), so the switch itself is asserted
/// deterministically by the aligner's unit tests and the protocol simulation
/// in `flumen-dataflow`, not here.
#[test]
fn aligned_with_timeout_is_exactly_once_under_backpressure() {
    unaligned_attempt("mode = \"aligned-with-timeout\"\nalignment_timeout_ms = 10");
}

/// Whether a checkpoint switches to unaligned depends on timing; under heavy
/// load a run may align in time. Exactly once is asserted on every run; that
/// in-flight batches were stored, on at least one of three.
fn unaligned_case(mode: &str) {
    let stored = (0..3).any(|_| unaligned_attempt(mode));
    assert!(stored, "{mode}: no checkpoint stored in-flight batches in three runs");
}

/// One run: exactly once is asserted; returns whether a checkpoint stored in-flight batches.
fn unaligned_attempt(mode: &str) -> bool {
    let (fast, slow) = (1600u64, 200u64);
    let job = Job::new(&format!(
        r#"
[job]
name = "unaligned"
batch_rows = 10
channel_capacity = 4

[checkpoint]
interval_ms = 100
dir = "ck"
retain = 1000
{mode}

[[source]]
id = "fast"
kind = "generator"
rows = {fast}
rows_per_second = 3000
columns = [
  {{ name = "key", gen = "modulo", modulus = {KEYS} }},
  {{ name = "seq", gen = "divide", divisor = {KEYS} }},
]

[[source]]
id = "slow"
kind = "generator"
rows = {slow}
rows_per_second = 100
columns = [
  {{ name = "key", gen = "sequence", start = 1000 }},
  {{ name = "seq", gen = "divide", divisor = 1000000 }},
]

[[operator]]
id = "count"
plugin = "{{guest:keyed-counter}}"
capabilities = ["log", "state"]
inputs = ["fast", "slow"]
config = {{ key = "key", sleep_ms = 20 }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
inputs = ["count"]
"#
    ));
    let mut child = flumen(&job, false).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        let _ = child.wait();
    }
    resume_to_completion(&job);
    let mut expected: HashSet<(i64, i64)> = (0..fast).map(|r| ((r % KEYS) as i64, (r / KEYS) as i64)).collect();
    expected.extend((0..slow).map(|r| (1000 + r as i64, 0)));
    let o = check_against(&job.file("out"), &expected, mode, true);
    assert!(o.clean() && o.rows == fast + slow, "{o:?}");
    let manifests = manifests_text(&job.file("ck"));
    manifests.contains("-inflight0-")
}

fn manifests_text(root: &Path) -> String {
    let mut text = String::new();
    for region in std::fs::read_dir(root).unwrap().flatten() {
        if !region.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(region.path()).unwrap().flatten() {
            if f.file_name().to_string_lossy().ends_with(".json") {
                text.push_str(&std::fs::read_to_string(f.path()).unwrap());
            }
        }
    }
    text
}

/// A flipped bit or a truncation in the newest checkpoint's files is
/// detected; recovery falls back to the previous checkpoint and the output
/// is still exactly once.
#[test]
fn damaged_checkpoint_files_are_detected_and_skipped() {
    for damage in ["flip", "truncate", "manifest"] {
        let rows = 3000;
        let job = counting_job(rows, 2500, "", "", 1);
        let mut child = flumen(&job, false).spawn().unwrap();
        // Killed once it has two checkpoints (the newest is damaged below).
        let manifests_in = |dir: &std::path::Path| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let p = e.path();
                    p.is_dir().then(|| {
                        std::fs::read_dir(&p)
                            .into_iter()
                            .flatten()
                            .flatten()
                            .filter(|f| f.path().extension().is_some_and(|x| x == "json"))
                            .count()
                    })
                })
                .max()
                .unwrap_or(0)
        };
        let ck = job.file("ck");
        kill_when(&mut child, || manifests_in(&ck) >= 2);
        // The newest manifest and a file it references.
        let region = std::fs::read_dir(job.file("ck"))
            .unwrap()
            .flatten()
            .find(|e| e.file_type().unwrap().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
            .expect("a region directory")
            .path();
        let mut manifests: Vec<PathBuf> = std::fs::read_dir(&region)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        manifests.sort();
        assert!(manifests.len() >= 2, "{damage}: need two checkpoints, have {manifests:?}");
        let newest = manifests.last().unwrap().clone();
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&newest).unwrap()).unwrap();
        let victim = match damage {
            "manifest" => newest.clone(),
            _ => {
                // A file only the newest checkpoint has (its state delta).
                let m = &m["manifest"];
                let files = m["participants"]["count[0]"]["files"].as_array().expect("state files");
                let newest_file = files
                    .iter()
                    .find(|f| f["checkpoint"] == m["checkpoint"])
                    .expect("a file written for the newest checkpoint");
                region.join("files").join(newest_file["name"].as_str().unwrap())
            }
        };
        let mut bytes = std::fs::read(&victim).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() / 2),
            _ => {
                let i = bytes.len() / 2;
                bytes[i] ^= 0x10;
            }
        }
        std::fs::write(&victim, bytes).unwrap();
        let text = resume_to_completion(&job);
        assert!(text.contains("damaged checkpoint"), "{damage}: the damage was not reported:\n{text}");
        let o = check(&job.file("out"), rows, damage, true);
        assert!(o.clean() && o.rows == rows, "{damage}: {o:?}");
    }
}

/// Ctrl-C stops a checkpointed job after a final checkpoint (exit 3);
/// `--resume` finishes it; a plain rerun is refused while checkpoints exist.
#[test]
fn stop_then_resume_and_refuse_a_blind_rerun() {
    let rows = 3000;
    let job = counting_job(rows, 2500, "", "", 2);
    let mut child = flumen(&job, false).spawn().unwrap();
    // Stopped once a checkpoint has committed output, so the stop commits a prefix.
    let out = job.file("out");
    wait_until(&mut child, || {
        std::fs::read_dir(&out)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
    });
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let (code, text) = finish(child, "stop");
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("--resume"), "{text}");
    let partial = check(&job.file("out"), rows, "after stop", true);
    assert!(partial.rows > 0 && partial.rows < rows, "stop should commit a prefix: {partial:?}");
    assert_eq!(partial.duplicated + partial.out_of_order + partial.wrong_count, 0, "{partial:?}");

    let (code, text) = finish(flumen(&job, false).spawn().unwrap(), "blind rerun");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--resume"), "{text}");

    resume_to_completion(&job);
    let o = check(&job.file("out"), rows, "resumed", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
}

/// Each checkpoint leaves one `checkpoint complete` line in the run log (at
/// `info`) with its id and its duration from trigger to commit, and the run
/// summary names the longest: how an operator finds a slow checkpoint.
#[test]
fn every_checkpoint_logs_its_duration() {
    let rows = 800;
    let job = counting_job(rows, 2000, "", "", 1);
    let cmd = flumen(&job, false);
    let args: Vec<_> = cmd.get_args().filter(|a| *a != "--quiet").map(|a| a.to_owned()).collect();
    let mut cmd = Command::new(cmd.get_program());
    cmd.args(args)
        .env("FLUMEN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"))
        .env("FLUMEN_LOG", "flumen_engine=info")
        .env_remove("FLUMEN_FAILPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (code, text) = finish(cmd.spawn().unwrap(), "run");
    assert_eq!(code, 0, "{text}");
    let field = |line: &str, name: &str| -> Option<u64> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let lines: Vec<(u64, u64)> = text
        .lines()
        .filter(|l| l.contains("checkpoint complete"))
        .map(|l| (field(l, "checkpoint").expect(l), field(l, "ms").expect(l)))
        .collect();
    // 800 rows at 2000/s with a checkpoint every 80 ms: several periodic ones and the final one.
    assert!(lines.len() >= 3, "{text}");
    let ids: Vec<u64> = lines.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "one line per checkpoint, in order: {ids:?}");
    let summary = text.lines().find(|l| l.starts_with("region ") && l.contains(" checkpoints (")).expect(&text);
    assert!(summary.contains(&format!("{} checkpoints (last #{}", lines.len(), ids[ids.len() - 1])), "{summary}");
    let longest = lines.iter().map(|(_, ms)| *ms).max().unwrap_or(0);
    let said: f64 = summary
        .split("; longest ")
        .nth(1)
        .and_then(|r| r.split(" ms)").next())
        .and_then(|v| v.parse().ok())
        .expect(summary);
    // The log line truncates to whole ms; the summary rounds to 0.1 ms.
    let floor = longest as f64;
    assert!(said >= floor - 0.05 && said < floor + 1.05, "summary's longest {said} ms, log's {longest} ms: {text}");
}

/// Guest-held state (the `snapshot` export) survives a kill: the counter
/// keeps counts in its own memory and saves them at checkpoints.
#[test]
fn guest_snapshots_survive_a_kill() {
    let rows = 3000;
    let job = counting_job(rows, 2500, "", r#", mode = "memory""#, 2);
    let mut child = flumen(&job, false).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    child.kill().unwrap();
    let _ = child.wait();
    resume_to_completion(&job);
    let o = check(&job.file("out"), rows, "memory", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
}

/// The region directory of a single-region job's checkpoints, once there is one.
fn find_region(job: &Job) -> Option<PathBuf> {
    std::fs::read_dir(job.file("ck"))
        .ok()?
        .flatten()
        .find(|e| e.file_type().is_ok_and(|t| t.is_dir()) && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
}

fn region_dir(job: &Job) -> PathBuf {
    find_region(job).expect("a region directory")
}

/// The manifests in a region directory (not quarantined ones): checkpoint id and path, oldest first.
fn manifests_of(region: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(region)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let id = name.strip_prefix("chk-")?.strip_suffix(".json")?.parse().ok()?;
            Some((id, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The manifest's content (inside its checksum envelope).
fn manifest_json(path: &Path) -> serde_json::Value {
    let envelope: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    envelope["manifest"].clone()
}

/// Every file a manifest references: (name, checkpoint it was written for).
fn referenced_files(manifest: &serde_json::Value) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    for p in manifest["participants"].as_object().unwrap().values() {
        for f in p["files"].as_array().unwrap() {
            files.push((f["name"].as_str().unwrap().to_owned(), f["checkpoint"].as_u64().unwrap()));
        }
    }
    files
}

/// The committed part files of a sink directory, name → bytes.
fn published_parts(out: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
        .map(|e| (e.file_name().to_string_lossy().to_string(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// The checkpoint id in a part file name, `part-<subtask>-<checkpoint>.jsonl`.
fn part_checkpoint(name: &str) -> u64 {
    name.trim_end_matches(".jsonl").rsplit('-').next().unwrap().parse().unwrap()
}

/// Polls until `ready` holds or the child ends (bounded), then SIGKILLs it if it still runs.
/// Returns whether `ready` held.
fn kill_once(mut child: Child, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = false;
    while Instant::now() < deadline {
        if ready() {
            held = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
    }
    let _ = child.wait();
    held
}

/// `flumen run --resume --from-scratch job.toml`.
fn flumen_from_scratch(job: &Job) -> Command {
    let mut cmd = flumen(job, true);
    cmd.arg("--from-scratch");
    cmd
}

/// Issue item 6: a state file shared by two checkpoints (a chain's delta or base) is damaged.
/// Both checkpoints are quarantined, the one before them restored, and the ids of the damaged
/// ones are never handed out again — so no rewritten file can make an old manifest verify
/// again, and a later kill and resume neither wedges nor loses or duplicates output.
#[test]
fn a_damaged_shared_file_never_lets_checkpoint_ids_be_reused() {
    // Many keys: each checkpoint changes a few of them, so state chains are several deltas long
    // and a file is shared by the checkpoints of its chain.
    let (rows, keys) = (60_000u64, 4096u64);
    let job = Job::new(&counting_job_text(rows, 8000, "retain = 1000", "", 1, keys));
    // Kill once the newest checkpoint shares a file with the one before it, and an older
    // checkpoint that does not share it exists.
    let shared_file = |region: &Path| -> Option<(String, u64, u64)> {
        let (newest, path) = manifests_of(region).last().cloned()?;
        let m = manifest_json(&path);
        let (name, written) = referenced_files(&m).into_iter().filter(|(_, c)| *c < newest).max_by_key(|f| f.1)?;
        (written >= 2).then_some((name, written, newest))
    };
    let mut resume = false;
    let mut found = None;
    for _ in 0..5 {
        kill_once(flumen(&job, resume).spawn().unwrap(), || {
            find_region(&job).is_some_and(|r| shared_file(&r).is_some())
        });
        resume = true;
        // A checkpoint may have completed between the check and the kill: look again.
        found = shared_file(&region_dir(&job));
        if found.is_some() {
            break;
        }
    }
    let (victim, first_damaged, newest) = found.expect("a file shared by two checkpoints");
    let region = region_dir(&job);
    let path = region.join("files").join(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let damaged: Vec<u64> = (first_damaged..=newest).collect();

    // Resume; kill once it wrote a checkpoint of its own.
    let started = std::time::SystemTime::now();
    let wrote_one = kill_once(flumen(&job, true).spawn().unwrap(), || {
        manifests_of(&region)
            .iter()
            .any(|(_, p)| std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| t > started))
    });
    let after: Vec<u64> = manifests_of(&region).iter().map(|m| m.0).collect();
    assert!(wrote_one || after.iter().any(|&c| c > newest), "the resumed run wrote no checkpoint: {after:?}");
    let reused: Vec<u64> = after.iter().copied().filter(|c| damaged.contains(c)).collect();
    assert!(reused.is_empty(), "checkpoint ids {reused:?} of damaged checkpoints were used again: {after:?}");
    for c in &damaged {
        let quarantined = region.join(".quarantine").join(format!("chk-{c:012}.json"));
        assert!(quarantined.is_file(), "damaged checkpoint {c} is not in quarantine");
    }
    assert!(after.contains(&(first_damaged - 1)), "the checkpoint before the damage is restored and kept: {after:?}");
    let parts = published_parts(&job.file("out"));
    let reused_parts: Vec<&String> = parts.keys().filter(|n| damaged.contains(&part_checkpoint(n))).collect();
    assert!(reused_parts.is_empty(), "part files carry ids of damaged checkpoints: {reused_parts:?}");

    let text = resume_to_completion(&job);
    assert!(!text.contains("is lost"), "{text}");
    let expected: HashSet<(i64, i64)> = (0..rows).map(|r| ((r % keys) as i64, (r / keys) as i64)).collect();
    let o = check_against(&job.file("out"), &expected, "shared file", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
}

/// Issue item 7: damaged manifests that still parse hold the highest ids. They are quarantined
/// on resume, new checkpoints get higher ids and are kept by retention, and a later kill resumes
/// from one of them — not from the beginning.
#[test]
fn damaged_manifests_with_the_highest_ids_do_not_displace_new_checkpoints() {
    let rows = 12_000;
    let job = counting_job(rows, 4000, "", "", 1);
    let ck = job.file("ck");
    let started = kill_once(flumen(&job, false).spawn().unwrap(), || {
        find_region(&job).is_some_and(|r| manifests_of(&r).len() >= 2)
    });
    assert!(started, "no two checkpoints before the job ended");
    let region = region_dir(&job);
    let (newest, path) = manifests_of(&region).last().cloned().unwrap();
    // Two manifests far above it, checksums right, referencing a file that is not there.
    let mut crafted: flumen_state::Manifest = serde_json::from_value(manifest_json(&path)).unwrap();
    let store = flumen_state::CheckpointStore::open(&ck).unwrap();
    let highest = newest + 101;
    for id in [newest + 100, highest] {
        crafted.checkpoint = id;
        for p in crafted.participants.values_mut() {
            for f in &mut p.files {
                f.name = format!("c{id:012}-gone");
                f.checkpoint = id;
            }
        }
        store.write_manifest(&crafted).unwrap();
    }

    // Resume; kill once output was committed after the resume.
    let before = published_parts(&job.file("out")).len();
    kill_once(flumen(&job, true).spawn().unwrap(), || published_parts(&job.file("out")).len() > before + 1);
    let kept: Vec<u64> = manifests_of(&region).iter().map(|m| m.0).collect();
    assert!(
        kept.iter().any(|&c| c > highest),
        "no checkpoint newer than the damaged ones was kept (retention deleted them?): {kept:?}"
    );
    assert!(!kept.contains(&highest) && !kept.contains(&(newest + 100)), "damaged manifests still in place: {kept:?}");
    let committed = published_parts(&job.file("out"));

    let text = resume_to_completion(&job);
    assert!(!text.contains("starting over"), "{text}");
    let after = published_parts(&job.file("out"));
    for (name, bytes) in &committed {
        assert_eq!(after.get(name), Some(bytes), "{name}, committed before the kill, was removed or rewritten");
    }
    let o = check(&job.file("out"), rows, "highest ids damaged", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
}

/// Issue item 8: every kept checkpoint is damaged. `--resume` refuses with exit 2, naming the
/// checkpoint directory, each refused manifest and why, and the `--from-scratch` flag; the
/// committed output is untouched (also on a second try, once the manifests are quarantined).
/// With `--from-scratch` it starts over, says what it removed, and the output is exactly once.
#[test]
fn resume_with_nothing_intact_refuses_and_from_scratch_starts_over() {
    let rows = 3000;
    let job = counting_job(rows, 2500, "", "", 2);
    let ck = job.file("ck");
    let started = kill_once(flumen(&job, false).spawn().unwrap(), || {
        find_region(&job).is_some_and(|r| manifests_of(&r).len() >= 2)
    });
    assert!(started, "no two checkpoints before the job ended");
    let region = region_dir(&job);
    let manifests = manifests_of(&region);
    for (_, path) in &manifests {
        let mut bytes = std::fs::read(path).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x10;
        std::fs::write(path, bytes).unwrap();
    }
    let committed = published_parts(&job.file("out"));
    assert!(!committed.is_empty(), "nothing was committed before the kill");

    for attempt in ["first", "second"] {
        let (code, text) = finish(flumen(&job, true).spawn().unwrap(), "resume");
        assert_eq!(code, 2, "{attempt} resume: {text}");
        assert!(text.contains("no intact checkpoint"), "{attempt}: {text}");
        assert!(text.contains(&ck.display().to_string()), "{attempt}: the checkpoint directory is not named: {text}");
        assert!(text.contains("--resume --from-scratch"), "{attempt}: {text}");
        for (_, path) in &manifests {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(text.contains(&name), "{attempt}: {name} is not named: {text}");
        }
        assert_eq!(published_parts(&job.file("out")), committed, "{attempt}: committed output was changed");
    }
    assert!(text_of_first_reason(&region).contains("checksum") || text_of_first_reason(&region).contains("manifest"));

    let (code, text) = finish(flumen_from_scratch(&job).spawn().unwrap(), "from scratch");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("from scratch") && text.contains("removed"), "it did not say what it removed: {text}");
    let o = check(&job.file("out"), rows, "from scratch", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
    // The new checkpoints are numbered above the damaged ones.
    let newest_damaged = manifests.last().unwrap().0;
    assert!(manifests_of(&region).iter().all(|m| m.0 > newest_damaged), "{:?}", manifests_of(&region));
}

/// The reason recorded beside the first quarantined manifest.
fn text_of_first_reason(region: &Path) -> String {
    let mut reasons: Vec<PathBuf> = std::fs::read_dir(region.join(".quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".reason"))
        .collect();
    reasons.sort();
    std::fs::read_to_string(reasons.first().expect("a quarantine reason")).unwrap()
}

/// The engine drives jobs on its own threads, so a caller on a current-thread
/// runtime (where a blocking section inside the engine would otherwise panic)
/// stops a checkpointed, stateful job with a final checkpoint and resumes it
/// to an exactly-once result.
#[tokio::test(flavor = "current_thread")]
async fn a_caller_on_a_current_thread_runtime_stops_and_resumes_a_checkpointed_job() {
    let rows = 3000;
    let job = counting_job(rows, 2500, "", "", 2);
    let engine = engine();
    let prepared = engine.prepare(&job.path).await.expect("prepare");
    let stop = tokio::time::sleep(Duration::from_millis(500));
    match prepared.run_with(flumen_engine::RunOptions::default(), stop).await {
        Err(flumen_engine::EngineError::Stopped { checkpoint }) => assert!(checkpoint > 0),
        other => panic!("expected a stop after a final checkpoint, got {:?}", other.map(|s| s.render())),
    }
    let partial = check(&job.file("out"), rows, "after stop", true);
    assert!(partial.rows > 0 && partial.rows < rows, "stop should commit a prefix: {partial:?}");

    let resumed = engine.prepare(&job.path).await.expect("prepare again");
    let options = flumen_engine::RunOptions { resume: true, ..Default::default() };
    resumed.run_with(options, std::future::pending()).await.expect("resumed run");
    let o = check(&job.file("out"), rows, "resumed", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
}
