//! A misbehaving guest is stopped at its limits and fails only itself; the
//! error names the operator and what happened.

use crate::common::*;

fn misbehave(mode: &str, limits: &str) -> Job {
    one_operator(
        &format!("plugin = \"{{guest:misbehave}}\"\nconfig = {{ mode = \"{mode}\", after = 2 }}\n{limits}"),
        1000,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_fails_the_job_and_names_the_operator() {
    let job = misbehave("trap", "");
    let err = job.run_err().await;
    assert_contains(&err, &["operator op[0]", "`process` trapped", "trapping on purpose"]);
    assert!(!job.file("out.jsonl").exists(), "a failed job must not leave its output file");
    let leftovers: Vec<_> =
        std::fs::read_dir(job.dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 2, "only job.toml and input.csv remain, found {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_is_interrupted_at_the_deadline() {
    let job = misbehave("loop", "limits = { call_timeout_ms = 200 }");
    let started = std::time::Instant::now();
    let err = job.run_err().await;
    assert_contains(&err, &["operator op[0]", "deadline of 200 ms"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the loop was not interrupted promptly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_stops_at_the_cap() {
    let job = misbehave("grow", "limits = { memory_mb = 64 }");
    let err = job.run_err().await;
    assert_contains(&err, &["operator op[0]", "memory past its cap of 64 MiB"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_traps_cleanly() {
    let job = misbehave("recurse", "");
    let err = job.run_err().await;
    assert_contains(&err, &["operator op[0]", "trapped"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_output_hits_the_per_call_cap() {
    let job = misbehave("huge-output", "limits = { output_mb_per_call = 1 }");
    let err = job.run_err().await;
    assert_contains(&err, &["operator op[0]"]);
    assert!(
        err.contains("emitted more than 1 MiB in one call") || err.contains("emitted more than 1024 batches"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_output_batches_hit_the_cap() {
    let job = misbehave("huge-output", "limits = { output_batches_per_call = 10 }");
    assert_contains(&job.run_err().await, &["emitted more than 10 batches in one call"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_buffers_are_refused() {
    for (mode, needle) in [
        ("bad-lengths", "column `id`"),
        ("bad-utf8", "utf"),
        ("bad-offsets", "column `name`"),
        ("wrong-schema", "schema"),
    ] {
        let err = misbehave(mode, "").run_err().await;
        assert_contains(&err, &["operator op[0]"]);
        assert!(err.to_lowercase().contains(needle), "mode {mode}: expected {needle:?} in {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignoring_a_failed_emit_still_fails_the_call() {
    let err = misbehave("ignore-emit-error", "").run_err().await;
    assert_contains(&err, &["operator op[0]", "malformed batch"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_error_is_reported_verbatim() {
    let err = misbehave("error", "").run_err().await;
    assert_contains(&err, &["operator op[0]", "`process` failed", "refusing this batch on purpose"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_in_open_fails_before_data_flows() {
    let job = one_operator("plugin = \"{guest:misbehave}\"\nconfig = { mode = \"trap-open\" }", 10);
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:12:", "op[0]", "`open` trapped"]);
}

/// The operator node's counters in a finished job's summary.
fn op_node(summary: &flumen_engine::JobSummary) -> &flumen_engine::NodeSummary {
    summary.nodes.iter().find(|n| n.id.as_str() == "op").expect("the job has an operator `op`")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaking_instance_is_recycled_before_its_cap_and_loses_nothing() {
    // 1 MiB leaked per batch, 100 batches, under a 24 MiB cap: without
    // recycling the instance would reach its cap after about 20 batches.
    let job = one_operator(
        "plugin = \"{guest:misbehave}\"\nconfig = { mode = \"leak\", mb = 1 }\nlimits = { memory_mb = 24 }",
        10_000,
    );
    let summary = job.run().await.expect("recycling keeps the leaking operator under its cap");
    let op = op_node(&summary);
    assert!(op.recycled >= 3, "the instance must have been replaced several times, was {}", op.recycled);
    assert_eq!(op.failures, 0);
    assert_eq!(read_jsonl_ids(&job.file("out.jsonl")), (0..10_000).collect::<Vec<i64>>(), "every row once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_recycling_the_same_leak_reaches_the_cap() {
    let job = one_operator(
        "plugin = \"{guest:misbehave}\"\nconfig = { mode = \"leak\", mb = 1 }\n\
         limits = { memory_mb = 24, recycle_memory_pct = 0 }",
        10_000,
    );
    let err = job.run_err().await;
    assert_contains(&err, &["operator op[0]", "memory past its cap of 24 MiB"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_by_call_count_carries_instance_memory_through_its_snapshot() {
    // keyed-counter in memory mode keeps its counts in the instance; every
    // 3 calls the instance is replaced and its `save` goes to the new one's
    // `restore`: the running counts must not notice.
    let job = Job::new(
        r#"
[job]
name = "t"
batch_rows = 50

[[source]]
id = "in"
kind = "generator"
rows = 2000
columns = [{ name = "key", gen = "modulo", modulus = 7 }, { name = "seq", gen = "divide", divisor = 7 }]

[[operator]]
id = "op"
plugin = "{guest:keyed-counter}"
config = { mode = "memory" }
capabilities = ["log", "state"]
inputs = ["in"]
limits = { recycle_after_calls = 3 }

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["op"]
"#,
    );
    let summary = job.run().await.expect("the job runs");
    assert_eq!(op_node(&summary).recycled, 13, "40 batches, a fresh instance after every third");
    let text = std::fs::read_to_string(job.file("out.jsonl")).expect("the output file");
    let mut rows = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON row");
        assert_eq!(v["count"].as_i64(), v["seq"].as_i64().map(|s| s + 1), "a running count was lost: {line}");
        rows += 1;
    }
    assert_eq!(rows, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycle_percentage_over_100_is_refused_at_plan_time() {
    let job = misbehave("pass", "limits = { recycle_memory_pct = 101 }");
    let err = job.run_err().await;
    assert_contains(&err, &["operator `op`", "recycle_memory_pct = 101", "0 (never) to 100"]);
}
