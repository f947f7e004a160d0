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
