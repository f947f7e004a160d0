//! Bad input of every kind gets a clear error naming the file, line and operator — and no panic.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_spec_names_file_and_line() {
    let job = Job::new("[job]\nname = \"t\"\n\n[[source]\nid = \"x\"\n");
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:4:"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_key_is_refused_with_its_line() {
    let job = one_operator("plugin = \"filter\"\nconfig = { predicate = \"id > 1\" }\nparalelism = 2", 10);
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:16:", "paralelism"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_plugin_file_is_named() {
    let job = one_operator("plugin = \"./nowhere/op.wasm\"", 10);
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:12:", "operator `op`", "nowhere/op.wasm", "does not exist"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plugin_name_lists_the_available_ones() {
    let job = one_operator("plugin = \"filtre\"", 10);
    let err = job.run_err().await;
    assert_contains(&err, &["no plugin named `filtre`", "filter", "map"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_module_is_not_a_component() {
    let job = one_operator("plugin = \"core.wasm\"", 10);
    // The smallest valid core module: magic and version 1.
    std::fs::write(job.file("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let err = job.run_err().await;
    assert_contains(&err, &["operator `op`", "core.wasm", "core WebAssembly module, not a component"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_not_webassembly() {
    let job = one_operator("plugin = \"junk.wasm\"", 10);
    std::fs::write(job.file("junk.wasm"), b"#!/bin/sh\necho hi\n").unwrap();
    let err = job.run_err().await;
    assert_contains(&err, &["junk.wasm", "not a WebAssembly file"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_component_is_refused() {
    let job = one_operator("plugin = \"cut.wasm\"", 10);
    let bytes = std::fs::read(guest("passthrough")).unwrap();
    std::fs::write(job.file("cut.wasm"), &bytes[..bytes.len() / 2]).unwrap();
    let err = job.run_err().await;
    assert_contains(&err, &["cut.wasm", "not a valid component"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_of_another_world_is_refused() {
    let job = one_operator("plugin = \"{guest:wrong-world}\"", 10);
    let err = job.run_err().await;
    assert_contains(
        &err,
        &["operator `op`", "does not export `flumen:dataflow/transform@0.2.0`", "test:wrong/greeter"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_capability_is_refused_before_running() {
    let job = one_operator("plugin = \"{guest:misbehave}\"\ncapabilities = []", 10);
    let err = job.run_err().await;
    assert_contains(&err, &["operator `op`", "capability `log`", "does not grant it"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_capability_is_named() {
    let job = one_operator("plugin = \"{guest:misbehave}\"\ncapabilities = [\"network\"]", 10);
    let err = job.run_err().await;
    assert_contains(&err, &["unknown capability `network`", "known: log"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_refusing_its_config_fails_at_open() {
    let job = one_operator("plugin = \"filter\"\nconfig = { predicate = \"prce > 3\" }", 10);
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:15:", "op[0]", "prce"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_union_of_different_schemas_is_refused() {
    let job = Job::new(
        r#"
[job]
name = "t"

[[source]]
id = "a"
kind = "csv"
path = "input.csv"

[[operator]]
id = "wider"
plugin = "map"
config = { columns = [{ name = "twice", expr = "id * 2" }] }
inputs = ["a"]

[[sink]]
id = "out"
kind = "blackhole"
inputs = ["a", "wider"]
"#,
    )
    .with_ids_csv(5);
    let err = job.run_err().await;
    assert_contains(&err, &["sink `out` reads `a` and `wider`, whose schemas differ", "twice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_input_and_hash_key_are_named() {
    let job = one_operator("plugin = \"filter\"\nconfig = { predicate = \"id > 1\" }", 5);
    let text = std::fs::read_to_string(&job.path).unwrap().replace("inputs = [\"op\"]", "inputs = [\"opp\"]");
    std::fs::write(&job.path, text).unwrap();
    assert_contains(&job.run_err().await, &["sink `out` reads from `opp`, which is not a source or operator"]);

    let job = one_operator("plugin = \"filter\"\nconfig = { predicate = \"id > 1\" }", 5);
    let text = std::fs::read_to_string(&job.path)
        .unwrap()
        .replace("inputs = [\"op\"]", "inputs = [{ from = \"op\", partition = \"hash\", keys = [\"idd\"] }]");
    std::fs::write(&job.path, text).unwrap();
    assert_contains(&job.run_err().await, &["hash key `idd`", "columns are: id, name"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_input_file_is_named() {
    let job = one_operator("plugin = \"{guest:passthrough}\"", 5);
    std::fs::remove_file(job.file("input.csv")).unwrap();
    let err = job.run_err().await;
    assert_contains(&err, &["in", "input.csv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csv_row_names_the_file() {
    let job = Job::new(
        r#"
[job]
name = "t"

[[source]]
id = "in"
kind = "csv"
path = "input.csv"
schema = [{ name = "id", type = "int64" }, { name = "name", type = "utf8" }]

[[sink]]
id = "out"
kind = "blackhole"
inputs = ["in"]
"#,
    );
    std::fs::write(job.file("input.csv"), "id,name\n1,a\nnot-a-number,b\n").unwrap();
    let err = job.run_err().await;
    assert_contains(&err, &["input.csv"]);
}

/// An operator without `inputs` is reported at its own table, not at the
/// source it leaves unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_without_inputs_is_reported_at_its_line() {
    let job = Job::new(
        r#"[job]
name = "t"

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "lonely"
plugin = "filter"
config = { predicate = "id > 1" }

[[sink]]
id = "out"
kind = "blackhole"
inputs = ["lonely"]
"#,
    )
    .with_ids_csv(5);
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:10:", "operator `lonely` has no inputs"]);
    assert!(!err.contains("`in`"), "{err}");
}

/// A cycle that cuts a source off is reported as the cycle, at its first
/// node, not as a source nothing reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_cutting_off_a_source_is_reported_at_the_cycle() {
    let job = Job::new(
        r#"[job]
name = "t"

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "a"
plugin = "filter"
config = { predicate = "id > 1" }
inputs = ["b"]

[[operator]]
id = "b"
plugin = "filter"
config = { predicate = "id > 2" }
inputs = ["a"]

[[sink]]
id = "out"
kind = "blackhole"
inputs = ["b"]
"#,
    )
    .with_ids_csv(5);
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:10:", "`a` is on a cycle: `a` → `b` → `a`"]);
}

/// An operator's complaint about its config points at the TOML line of the
/// key it names, without the position in the JSON it was handed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_error_points_at_the_toml_line() {
    let job = Job::new(
        r#"[job]
name = "t"

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "keep"
plugin = "filter"
inputs = ["in"]

[operator.config]
predicate = "id > 1"
predicat = "id > 2"

[[sink]]
id = "out"
kind = "blackhole"
inputs = ["keep"]
"#,
    )
    .with_ids_csv(5);
    let err = job.run_err().await;
    assert_contains(&err, &["job.toml:16:", "unknown field `predicat`"]);
    assert!(!err.contains("column"), "a JSON position leaked: {err}");
}
