//! The `flumen` tool as a user drives it: scaffold a plugin, build it, run it in a job.

use std::process::Command;

use crate::common::*;

#[test]
fn plugin_new_then_build_gives_a_working_operator() {
    let dir = tempfile::tempdir().unwrap();
    let flumen = flumen_bin();
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
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["job.toml:13:", "big[0]", "no column `idx`"]);
}

#[test]
fn plugin_new_refuses_bad_names_and_languages() {
    let dir = tempfile::tempdir().unwrap();
    let flumen = flumen_bin();
    let out = Command::new(flumen).args(["plugin", "new", "Bad Name"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["must start with a lowercase letter"]);
    let out =
        Command::new(flumen).args(["plugin", "new", "x", "--lang", "cobol"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["unknown language `cobol`", "rust, python, js or c"]);
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

/// The files of a compiled-component cache, one engine directory down.
fn cache_entries(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(cache).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    files
}

/// A cached artifact cut short (a full disk, a killed writer) or replaced by
/// bytes that match their checksum but are no artifact is recompiled, never
/// mapped; the recompiled artifact is cached again and used by the next process.
#[test]
fn truncated_or_forged_cache_entries_are_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let config = || flumen_wasm::RuntimeConfig { cache_dir: Some(cache.path().to_path_buf()), ..Default::default() };
    let load = || flumen_wasm::WasmRuntime::new(config()).unwrap().load_component(&guest("passthrough")).unwrap();
    assert!(!load().cached, "the first load compiles");
    let entries = cache_entries(cache.path());
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    let intact = std::fs::read(entry).unwrap();

    let file = std::fs::OpenOptions::new().write(true).open(entry).unwrap();
    file.set_len(intact.len() as u64 / 3).unwrap();
    drop(file);
    assert!(!load().cached, "a truncated artifact is recompiled");
    assert!(load().cached, "the recompiled artifact is cached again");

    // Garbage under a name whose checksum matches it: wasmtime's own checks refuse it.
    let garbage = vec![0x5au8; 4096];
    let name = entry.file_name().unwrap().to_str().unwrap();
    let digest = name.split('.').next().unwrap();
    let sum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&garbage));
    for e in cache_entries(cache.path()) {
        std::fs::remove_file(e).unwrap();
    }
    std::fs::write(entry.with_file_name(format!("{digest}.{sum}.cwasm")), &garbage).unwrap();
    assert!(!load().cached, "bytes that are not an artifact are recompiled");
    assert!(load().cached);
}

/// Within one process a component is compiled (or read from the disk cache)
/// once, however often jobs load it, with or without a cache directory.
#[test]
fn a_component_loaded_twice_in_one_process_is_compiled_once() {
    let runtime = flumen_wasm::WasmRuntime::new(flumen_wasm::RuntimeConfig::default()).unwrap();
    let first = runtime.load_component(&guest("passthrough")).unwrap();
    assert!(!first.cached, "no cache directory: the first load compiles");
    let again = runtime.load_component(&guest("passthrough")).unwrap();
    assert!(again.cached, "the second load reuses the compiled component");
    assert_eq!(first.digest, again.digest);
}

/// A crate scaffolded inside the checkout names the SDK by a relative path,
/// so the repository can move; outside it, the absolute path comes with a note.
#[test]
fn plugin_new_inside_the_checkout_uses_a_relative_sdk_path() {
    let scratch = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/scaffold-tests");
    std::fs::create_dir_all(&scratch).unwrap();
    let dir = tempfile::tempdir_in(&scratch).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["plugin", "new", "rel-op"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(dir.path().join("rel-op/Cargo.toml")).unwrap();
    let line = manifest.lines().find(|l| l.starts_with("flumen-sdk")).unwrap();
    let path = line.split('"').nth(1).unwrap();
    assert!(path.starts_with("../") && path.ends_with("sdk/rust"), "{line}");
    let sdk = std::fs::read_to_string(dir.path().join("rel-op").join(path).join("Cargo.toml")).unwrap();
    assert!(sdk.contains("name = \"flumen-sdk\""), "{path} is not the SDK");

    let outside = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["plugin", "new", "abs-op"])
        .current_dir(outside.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(outside.path().join("abs-op/Cargo.toml")).unwrap();
    assert_contains(&manifest, &["change the path", "sdk/rust\" }"]);
}

#[test]
fn run_help_describes_arguments_exit_codes_and_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_flumen")).args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert_contains(
        &help,
        &[
            "<JOB>",
            "The job spec (TOML)",
            "--plugin-dir",
            "--resume",
            "--quiet",
            "Exit codes:",
            "130",
            "FLUMEN_LOG",
            "FLUMEN_CACHE_DIR",
            "FLUMEN_PLUGIN_PATH",
            "FLUMEN_PLUGIN_DIR",
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_flumen")).arg("--help").output().unwrap();
    assert_contains(&String::from_utf8_lossy(&out.stdout), &["Exit codes:", "FLUMEN_LOG", "FLUMEN_CACHE_DIR"]);
}

/// Logs to a pipe carry no ANSI colour codes, and a component compiled (not
/// taken from the cache) is announced once, as a plain line, at the default
/// log level; the second run is served from the cache and says nothing.
#[test]
fn logs_to_a_pipe_are_plain_and_a_first_compile_is_announced() {
    let job = one_operator("plugin = \"filter\"\nconfig = { predicate = \"id > 1\" }", 10);
    let (cache, fresh_cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |cache: &std::path::Path, log: Option<&str>| {
        let mut cmd = Command::new(flumen_bin());
        cmd.args(["run", "--quiet"]).arg(&job.path).env("FLUMEN_CACHE_DIR", cache).env_remove("FLUMEN_LOG");
        if let Some(log) = log {
            cmd.env("FLUMEN_LOG", log);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = run(cache.path(), None);
    assert_eq!(first.trim(), "compiling plugin `filter` (first run, cached afterwards)…", "{first}");
    let second = run(cache.path(), None);
    assert!(!second.contains("compiling"), "served from the cache: {second}");
    // `compiled component` is flumen-wasm's debug event after a compile.
    let logged = run(fresh_cache.path(), Some("flumen_wasm=debug"));
    assert!(logged.contains("DEBUG") && logged.contains("compiled component"), "{logged}");
    assert!(!logged.contains('\x1b'), "ANSI escape codes in logs to a pipe: {logged:?}");
}

/// A plugin of the source checkout that is not built yet is built the first
/// time a job names it, with a line saying so; without cargo, the error says
/// what is missing and how to get it.
#[test]
fn a_plugin_not_built_yet_is_built_on_first_use() {
    let job = one_operator("plugin = \"project\"\nconfig = { columns = [\"id\"] }", 10);
    let (plugins, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |plugin_dir: &std::path::Path, cargo: Option<&str>| {
        let mut cmd = Command::new(flumen_bin());
        cmd.args(["run", "--quiet"])
            .arg(&job.path)
            .env("FLUMEN_PLUGIN_DIR", plugin_dir)
            .env("FLUMEN_CACHE_DIR", cache.path());
        if let Some(cargo) = cargo {
            cmd.env("CARGO", cargo);
        }
        cmd.output().unwrap()
    };
    let out = run(plugins.path(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_contains(&stderr, &["building plugin `project` from source (first use"]);
    assert!(plugins.path().join("project.wasm").is_file());
    assert_eq!(read_jsonl_ids(&job.file("out.jsonl")), (0..10).collect::<Vec<_>>());

    let again = run(plugins.path(), None);
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("building plugin"), "built only once");

    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path(), Some("/nonexistent/cargo"));
    assert_eq!(out.status.code(), Some(2));
    assert_contains(
        &String::from_utf8_lossy(&out.stderr),
        &["plugin `project` is not built yet", "cannot run `/nonexistent/cargo`", "rustup"],
    );
}
