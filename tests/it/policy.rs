//! Failure policies: retry on a fresh instance, dead-letter, or fail the job.

use crate::common::*;

fn poison_job(on_error: &str) -> Job {
    let rejects = if on_error.contains("dead-letter") {
        "[[sink]]\nid = \"rejects\"\nkind = \"jsonl\"\npath = \"rejects.jsonl\"\n"
    } else {
        ""
    };
    Job::new(&format!(
        r#"
[job]
name = "t"
batch_rows = 10

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "op"
plugin = "{{guest:misbehave}}"
config = {{ mode = "fail-rows", poison = 42 }}
inputs = ["in"]
on_error = {on_error}

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["op"]

{rejects}"#
    ))
    .with_ids_csv(100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_routes_the_failing_row_with_its_error_and_keeps_going() {
    let job = poison_job(r#"{ retries = 1, then = "dead-letter", dead_letter = "rejects" }"#);
    let summary = job.run().await.expect("job completes");
    let good = read_jsonl_ids(&job.file("out.jsonl"));
    let bad = read_jsonl_ids(&job.file("rejects.jsonl"));
    assert_eq!(bad, vec![42], "only the failing row is dead-lettered; its batch's other rows go on");
    assert_eq!(good, (0..100).filter(|i| *i != 42).collect::<Vec<_>>());
    let line = std::fs::read_to_string(job.file("rejects.jsonl")).unwrap();
    assert_contains(&line, &["\"_flumen_operator\":\"op[0]\"", "poison id Some(42) seen"]);
    let op = summary.node("op").unwrap();
    // The batch 40..50 fails twice (first try, one retry), then halving finds
    // row 42: 40..45 fails, 40..42 passes, 42..45 fails, 42 fails, 43..45 and 45..50 pass.
    assert_eq!((op.failures, op.retries, op.dead_lettered_rows), (5, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_used_then_the_job_fails() {
    let job = poison_job(r#"{ retries = 2 }"#);
    let err = job.run_err().await;
    assert_contains(&err, &["op[0]", "poison id", "after 2 retries on fresh instances"]);
    assert!(!job.file("out.jsonl").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_sink_is_refused() {
    let job = poison_job("{ retries = 1 }");
    let text = std::fs::read_to_string(&job.path).unwrap() + "\n[[sink]]\nid = \"orphan\"\nkind = \"blackhole\"\n";
    std::fs::write(&job.path, text).unwrap();
    assert_contains(&job.run_err().await, &["sink `orphan` has no inputs"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_sink_must_exist() {
    let job = poison_job(r#"{ then = "dead-letter", dead_letter = "nope" }"#);
    assert_contains(&job.run_err().await, &["dead-letter sink `nope` is not a sink of this job"]);
}
