//! Host memory a guest makes the host hold for it (state reads, open blob
//! writers) is charged to its `limits.host_memory_mb`: past it the call fails
//! with a `limit` error naming the limit, the operator and the figure, before
//! the host allocates; within it the job runs as before.

use crate::common::*;

/// keyed-counter with `big_reads`: sets `values` values of `value_kib` KiB,
/// then reads `keys` keys over them in one `value-get-many`.
fn big_reads(values: u32, value_kib: u32, keys: u32, host_memory_mb: u32) -> Job {
    one_operator(
        &format!(
            "plugin = \"{{guest:keyed-counter}}\"\ncapabilities = [\"state\"]\n\
             config = {{ key = \"id\", big_reads = {{ values = {values}, value_kib = {value_kib}, keys = {keys} }} }}\n\
             limits = {{ host_memory_mb = {host_memory_mb} }}"
        ),
        10,
    )
}

/// blob-probe in `writers` mode: `writers` blob writers open at once, `write_mb` MiB into each.
fn many_writers(writers: u32, write_mb: u32, host_memory_mb: u32, rows: usize) -> Job {
    one_operator(
        &format!(
            "plugin = \"{{guest:blob-probe}}\"\ncapabilities = [\"blobs\"]\n\
             config = {{ mode = \"writers\", writers = {writers}, write_mb = {write_mb} }}\n\
             limits = {{ host_memory_mb = {host_memory_mb} }}"
        ),
        rows,
    )
}

/// 256 keys over four 4 MiB values ask for 1 GiB of copies; the budget of
/// 64 MiB stops the read after about 16 of them, not after gathering 1 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_get_many_over_the_budget_is_refused_before_the_copies() {
    let err = big_reads(4, 4096, 256, 64).run_err().await;
    assert_contains(
        &err,
        &["op[0]", "host_memory_mb", "= 64 MiB", "state value-get-many", "already held on its behalf"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_get_many_within_the_budget_still_works() {
    let job = big_reads(2, 1024, 16, 64);
    job.run().await.expect("16 MiB of reads within a 64 MiB budget");
    assert_eq!(read_jsonl_ids(&job.file("out.jsonl")), (0..10).collect::<Vec<_>>());
}

/// 16 writers of 64 MiB each, all open: 1 GiB held in the host before any
/// finishes. The 64 MiB budget refuses the write that would cross it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_blob_writers_over_the_budget_are_refused() {
    let err = many_writers(16, 64, 64, 10).run_err().await;
    assert_contains(&err, &["op[0]", "host_memory_mb", "= 64 MiB", "an open blob writer"]);
}

/// Writers within the budget work, and finishing one gives its charge back:
/// three batches (three rounds of 2 × 24 MiB) fit a 64 MiB budget only if
/// each round's writers were released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_writers_within_the_budget_still_work() {
    let job = many_writers(2, 24, 64, 250);
    job.run().await.expect("2 × 24 MiB of writers within a 64 MiB budget");
    assert_eq!(read_jsonl_ids(&job.file("out.jsonl")), (0..250).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_memory_budget_of_zero_is_refused() {
    let err = many_writers(1, 1, 0, 10).run_err().await;
    assert_contains(&err, &["operator `op`", "every limit must be at least 1"]);
}
