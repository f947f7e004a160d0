//! Helpers: an engine wired to the built plugins and test guests, and jobs in temp dirs.

use std::path::{Path, PathBuf};

use flumen_engine::{Engine, EngineError, EngineOptions, JobSummary};

#[path = "../../host/cli/src/guests.rs"]
mod guests;

/// Builds every plugin and test guest once per test process (a quick
/// up-to-date check after the first time); the build script builds only the
/// core plugins. Call before using a component or running the binary.
pub fn ensure_guests() {
    guests::ensure_all();
}

pub fn guest(name: &str) -> PathBuf {
    ensure_guests();
    let p = Path::new(env!("FLUMEN_TEST_GUEST_DIR")).join(format!("{name}.wasm"));
    assert!(p.is_file(), "test guest {} is missing although the guests were built", p.display());
    p
}

/// The `flumen` binary, with every guest component built.
pub fn flumen_bin() -> &'static str {
    ensure_guests();
    env!("CARGO_BIN_EXE_flumen")
}

pub fn engine() -> Engine {
    ensure_guests();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
    Engine::new(EngineOptions {
        plugin_dirs: vec![PathBuf::from(env!("FLUMEN_PLUGIN_DIR"))],
        cache_dir: Some(cache),
        packages: None,
    })
    .expect("engine starts")
}

/// A temp dir holding `job.toml` with `text` (where `{guest:NAME}` becomes a
/// test guest's path) and an `input.csv` of `ids` 0..rows.
pub struct Job {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Job {
    pub fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut text = text.to_string();
        while let Some(start) = text.find("{guest:") {
            let end = start + text[start..].find('}').expect("closing brace");
            let name = text[start + 7..end].to_string();
            text.replace_range(start..=end, &guest(&name).display().to_string());
        }
        let path = dir.path().join("job.toml");
        std::fs::write(&path, text).expect("write job");
        Self { dir, path }
    }

    pub fn with_ids_csv(self, rows: usize) -> Self {
        let mut csv = String::from("id,name\n");
        for i in 0..rows {
            csv.push_str(&format!("{i},name-{i}\n"));
        }
        std::fs::write(self.dir.path().join("input.csv"), csv).expect("write csv");
        self
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub async fn run(&self) -> Result<JobSummary, EngineError> {
        let engine = engine();
        let job = engine.prepare(&self.path).await?;
        job.run(std::future::pending()).await
    }

    pub async fn run_err(&self) -> String {
        match self.run().await {
            Ok(s) => panic!("job succeeded but should have failed:\n{}", s.render()),
            Err(e) => e.to_string(),
        }
    }
}

/// A job: ids.csv → one operator → JSONL sink `out.jsonl`.
pub fn one_operator(operator_toml: &str, rows: usize) -> Job {
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
inputs = ["in"]
{operator_toml}

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["op"]
"#
    ))
    .with_ids_csv(rows)
}

pub fn read_jsonl_ids(path: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut ids: Vec<i64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line")["id"].as_i64().expect("id"))
        .collect();
    ids.sort();
    ids
}

/// Asserts that `haystack` contains every needle.
#[track_caller]
pub fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "expected {n:?} in:\n{haystack}");
    }
}

/// Waits until `ready` holds — e.g. until `child` has written two
/// checkpoints — rather than a fixed time, which a loaded machine may not
/// give it; gives up after a minute or when the child ends by itself.
pub fn wait_until(child: &mut std::process::Child, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() && std::time::Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kills `child` (SIGKILL) as soon as `ready` holds (see [`wait_until`]), and reaps it.
pub fn kill_when(child: &mut std::process::Child, ready: impl Fn() -> bool) {
    wait_until(child, ready);
    let _ = child.kill();
    let _ = child.wait();
}
