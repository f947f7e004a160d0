//! What a guest hands the host across the component boundary is bounded and
//! checked before anything downstream sees it: rows that cost no bytes, the
//! schema it declares at `open`, and the sizes its limits promise to carry.

use std::process::Command;

use crate::common::*;

/// csv → `op` (misbehave in `mode`) → `downstream`, which is `hash` (a
/// hash-partitioned edge into a second operator, then a JSONL sink) or a
/// sink kind (`jsonl`, `csv`, `parquet`).
fn emitting_job(mode: &str, extra_config: &str, downstream: &str) -> Job {
    let tail = match downstream {
        "hash" => r#"
[[operator]]
id = "after"
plugin = "{guest:passthrough}"
parallelism = 2
inputs = [{ from = "op", partition = "hash", keys = ["x"] }]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["after"]
"#
        .to_string(),
        kind => format!("\n[[sink]]\nid = \"out\"\nkind = \"{kind}\"\npath = \"out.{kind}\"\ninputs = [\"op\"]\n"),
    };
    Job::new(&format!(
        r#"
[job]
name = "t"
batch_rows = 100

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "op"
plugin = "{{guest:misbehave}}"
inputs = ["in"]
config = {{ mode = "{mode}" {extra_config} }}
{tail}"#
    ))
    .with_ids_csv(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_bytes_hit_the_row_limit_before_any_edge_or_sink() {
    // 2^40 rows of a Null column, and of no column at all: no bytes, so no
    // byte cap stops them; the row cap must, before hashing or writing.
    for (mode, downstreams) in
        [("null-rows", &["hash", "jsonl", "csv", "parquet"][..]), ("no-columns", &["jsonl", "csv", "parquet"][..])]
    {
        for downstream in downstreams {
            let job = emitting_job(mode, "", downstream);
            let err = job.run_err().await;
            assert_contains(
                &err,
                &["operator op[0]", "1099511627776 rows", "16777216 rows in one call", "`output_rows_per_call`"],
            );
            assert!(!job.file(&format!("out.{downstream}")).exists(), "{mode} → {downstream}: output left behind");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_within_the_row_limit_still_flow() {
    // The same shapes below the cap are legitimate: they pass through to a sink.
    let job = emitting_job("null-rows", ", rows = 1000", "jsonl");
    let summary = job.run().await.unwrap();
    assert_eq!(summary.node("out").unwrap().rows_in, 1000, "{}", summary.render());
    let job = emitting_job("null-rows", ", rows = 1000", "hash");
    job.run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_row_limit_is_named_in_the_error() {
    let job = emitting_job("null-rows", ", rows = 1000", "csv");
    let text = std::fs::read_to_string(&job.path)
        .unwrap()
        .replace("inputs = [\"in\"]\nconfig", "inputs = [\"in\"]\nlimits = { output_rows_per_call = 999 }\nconfig");
    std::fs::write(&job.path, text).unwrap();
    assert_contains(
        &job.run_err().await,
        &["operator op[0]", "more than 999 rows in one call", "output_rows_per_call"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_size_list_lengths_are_checked_without_overflow() {
    // A fixed-size list of i32::MAX int8s per row: 2^40 rows is over the row cap…
    let err = emitting_job("fixed-size-list-rows", "", "jsonl").run_err().await;
    assert_contains(&err, &["operator op[0]", "`output_rows_per_call`"]);
    // …and with the cap raised to 2^40, rows × width overflows: refused, not a panic.
    let job = emitting_job("fixed-size-list-rows", "", "jsonl");
    let text = std::fs::read_to_string(&job.path).unwrap().replace(
        "inputs = [\"in\"]\nconfig",
        "inputs = [\"in\"]\nlimits = { output_rows_per_call = 1099511627776 }\nconfig",
    );
    std::fs::write(&job.path, text).unwrap();
    let err = job.run_err().await;
    assert_contains(&err, &["operator op[0]", "malformed batch", "column `x`", "out of range"]);
}

/// (shape, words the error must hold besides the operator and the field)
const BAD_SHAPES: &[(&str, &str)] = &[
    ("time32-ns", "time32 holds only seconds or milliseconds"),
    ("time32-us", "time32 holds only seconds or milliseconds"),
    ("time64-s", "time64 holds only microseconds or nanoseconds"),
    ("time64-ms", "time64 holds only microseconds or nanoseconds"),
    ("fixed-size-binary-neg", "byte width -5 is negative"),
    ("fixed-size-list-neg", "list size -1 is negative"),
    ("decimal128-0-100", "precision cannot be 0"),
    ("decimal128-10-20", "scale 20 is greater than precision 10"),
    ("decimal256-90-neg100", "precision 90 is greater than max 76"),
    ("bad-tz", "time zone `Not/AZone`"),
];

fn schema_job(shape: &str) -> Job {
    one_operator(
        &format!("plugin = \"{{guest:misbehave}}\"\nconfig = {{ mode = \"schema\", shape = \"{shape}\" }}"),
        10,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_arrow_or_the_sinks_cannot_handle_are_refused_at_open() {
    for (shape, needle) in BAD_SHAPES {
        let err = schema_job(shape).run_err().await;
        assert_contains(&err, &["job.toml:12:", "op[0]", "`open` returned a malformed schema", "field `x`", needle]);
    }
    // Nested fields are checked too.
    let err = schema_job("nested-time32-ns").run_err().await;
    assert_contains(&err, &["op[0]", "field `t`", "time32 holds only seconds or milliseconds"]);
    // A valid time type is accepted.
    engine().prepare(&schema_job("time32-ms").path).await.unwrap();
}

#[test]
fn flumen_plan_refuses_a_bad_guest_schema() {
    let job = schema_job("time32-ns");
    let out = Command::new(env!("CARGO_BIN_EXE_flumen")).arg("plan").arg(&job.path).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["op[0]", "field `x`", "time32 holds only"]);
}

/// csv → `make` (misbehave: one row of a `mb` MiB binary value per batch) →
/// `pass` (a pass-through operator) → blackhole. Both operators emit the big column.
fn big_value_job(mb: u64, limits: &str) -> Job {
    Job::new(&format!(
        r#"
[job]
name = "big"

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "make"
plugin = "{{guest:misbehave}}"
inputs = ["in"]
config = {{ mode = "big-value", mb = {mb} }}
limits = {{ memory_mb = 640 }}

[[operator]]
id = "pass"
plugin = "{{guest:passthrough}}"
inputs = ["make"]
limits = {{ memory_mb = 640 {limits} }}

[[sink]]
id = "out"
kind = "blackhole"
inputs = ["pass"]
"#
    ))
    .with_ids_csv(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_column_passes_under_the_default_output_cap_and_a_lower_cap_is_named() {
    // One test, run in turn: each run holds a few hundred MiB.
    let summary = big_value_job(200, "").run().await.unwrap();
    assert_eq!(summary.node("out").unwrap().rows_in, 1, "{}", summary.render());
    let err = big_value_job(200, ", output_mb_per_call = 100").run_err().await;
    assert_contains(&err, &["operator pass[0]", "more than 100 MiB", "`output_mb_per_call`"]);
}

fn grow_job(grow_to_mb: u64, memory_mb: u64) -> Job {
    one_operator(
        &format!(
            "plugin = \"{{guest:misbehave}}\"\nconfig = {{ mode = \"grow-to\", mb = {grow_to_mb} }}\n\
             limits = {{ memory_mb = {memory_mb} }}"
        ),
        10,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mb_above_1024_is_honoured_and_above_4096_refused() {
    // Pages grown but never touched: cheap whatever their size.
    grow_job(1200, 1536).run().await.unwrap();
    let err = grow_job(1600, 1536).run_err().await;
    assert_contains(&err, &["operator op[0]", "memory past its cap of 1536 MiB", "`memory_mb`"]);
    let err = grow_job(10, 5000).run_err().await;
    assert_contains(&err, &["job.toml:12:", "`limits.memory_mb = 5000`", "4096 MiB", "MEMORY_MB_MAX"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_instances_past_the_process_limit_are_refused_at_plan() {
    let job = one_operator("plugin = \"{guest:passthrough}\"\nparallelism = 300", 10);
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:12:", "300 instances", "256 operator instances", "OPERATOR_INSTANCES_MAX"]);
}

#[test]
fn inspect_refuses_a_forged_section_length_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(guest("passthrough")).unwrap();
    // Right after the 8-byte header, a custom section (id 0) that claims
    // 0xFFFFFFFF bytes (LEB128), followed by the rest of a real component.
    let mut forged = good[..8].to_vec();
    forged.extend_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    forged.extend_from_slice(&good[8..]);
    let path = dir.path().join("forged.wasm");
    std::fs::write(&path, forged).unwrap();
    // With 1 GiB of address space, a 4 GiB allocation aborts the process.
    let inspect = |file: &std::path::Path| {
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 1048576 && exec \"$0\" inspect \"$1\"")
            .arg(env!("CARGO_BIN_EXE_flumen"))
            .arg(file)
            .output()
            .unwrap()
    };
    let ok = inspect(&guest("passthrough"));
    assert!(
        ok.status.success(),
        "a valid component inspects within the limit: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = inspect(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_contains(&stderr, &["forged.wasm", "not a valid component"]);
}
