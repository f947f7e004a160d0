//! The `flumen` tool as a user drives it: scaffold a plugin, build it, run it in a job.

use std::process::Command;

use crate::common::*;

#[test]
fn plugin_new_then_build_gives_a_working_operator() {
    let dir = tempfile::tempdir().unwrap();
    let flumen = env!("CARGO_BIN_EXE_flumen");
    let out = Command::new(flumen).args(["plugin", "new", "at-least"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("at-least/src/lib.rs").is_file());

    // Share the guest target directory so the SDK's dependencies are reused.
    let target = std::path::Path::new(env!("FLUMEN_PLUGIN_DIR")).parent().unwrap().join("guest");
    let out = Command::new(flumen)
        .args(["plugin", "build", "at-least"])
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(out.status.success(), "plugin build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let wasm = dir.path().join("at-least/at-least.wasm");
    assert!(wasm.is_file());

    let mut csv = String::from("id,name\n");
    for i in 0..100 {
        csv.push_str(&format!("{i},n{i}\n"));
    }
    std::fs::write(dir.path().join("input.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        r#"
[job]
name = "scaffolded"

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "big"
plugin = "at-least/at-least.wasm"
config = { column = "id", min = 90 }
inputs = ["in"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["big"]
"#,
    )
    .unwrap();
    let out = Command::new(flumen).args(["run", "--quiet", "job.toml"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_jsonl_ids(&dir.path().join("out.jsonl")), (90..100).collect::<Vec<_>>());

    // Running it with a bad config names the operator and the missing column.
    let job =
        std::fs::read_to_string(dir.path().join("job.toml")).unwrap().replace("column = \"id\"", "column = \"idx\"");
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let out = Command::new(flumen).args(["run", "job.toml"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["job.toml:11:", "big[0]", "no column `idx`"]);
}

#[test]
fn plugin_new_refuses_bad_names_and_languages() {
    let dir = tempfile::tempdir().unwrap();
    let flumen = env!("CARGO_BIN_EXE_flumen");
    let out = Command::new(flumen).args(["plugin", "new", "Bad Name"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["must start with a lowercase letter"]);
    let out =
        Command::new(flumen).args(["plugin", "new", "x", "--lang", "cobol"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["`--lang cobol` is not supported yet"]);
}

#[test]
fn compiled_components_are_cached_and_damaged_cache_entries_are_ignored() {
    let cache = tempfile::tempdir().unwrap();
    let config = || flumen_wasm::RuntimeConfig { cache_dir: Some(cache.path().to_path_buf()), ..Default::default() };
    let first = flumen_wasm::WasmRuntime::new(config()).unwrap().load_component(&guest("passthrough")).unwrap();
    assert!(!first.cached, "the first load compiles");
    let again = flumen_wasm::WasmRuntime::new(config()).unwrap().load_component(&guest("passthrough")).unwrap();
    assert!(again.cached, "a new process reuses the compiled artifact");
    assert_eq!(first.digest, again.digest);

    // Flip one byte of every cached artifact: it must be detected, not loaded.
    let mut damaged = 0;
    for dir in std::fs::read_dir(cache.path()).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
    let after = flumen_wasm::WasmRuntime::new(config()).unwrap().load_component(&guest("passthrough")).unwrap();
    assert!(!after.cached, "a damaged artifact is recompiled, never deserialized");
}
