//! Running the `flumen` binary as a whole process and reading its summary,
//! shared by the process-level benches.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `flumen run --quiet <job>`; returns the wall time of the whole process and its stdout.
pub fn run_flumen(job: &Path, cache: &Path) -> (Duration, String) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["run", "--quiet"])
        .arg(job)
        .env("FLUMEN_CACHE_DIR", cache)
        .output()
        .expect("cannot start the flumen binary");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "flumen run {} failed ({}):\n{stdout}\n{}",
        job.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (elapsed, stdout)
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// The cargo target directory (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or_else(|| tmp.to_path_buf())
}

/// The `rows in` of the sink line (`sink  out  <rows in> ...`) of a run summary.
pub fn sink_rows(summary: &str) -> Option<u64> {
    summary.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("sink") && words.next() == Some("out"))
            .then(|| words.next()?.replace(',', "").parse().ok())
            .flatten()
    })
}

/// `N` of the summary's first line, `job `name` finished in N s`.
pub fn job_seconds(summary: &str) -> Option<f64> {
    let line = summary.lines().find(|l| l.starts_with("job "))?;
    line.split_whitespace().rev().nth(1)?.parse().ok()
}

/// Runs `job` on a fresh `workers`-worker cluster (`flumen cluster up -n` in `cluster_dir`,
/// emptied first) with `flumen submit --wait`, then takes the cluster down. Returns the
/// seconds from submit to its return and what it printed (the job's final status).
#[allow(dead_code, reason = "the benches that run on a cluster (W2, W3) call it; the others share the file")]
pub fn run_on_cluster(job: &Path, workers: u32, cluster_dir: &Path, cache: &Path) -> (f64, String) {
    let _ = std::fs::remove_dir_all(cluster_dir);
    let flumen = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
            .args(args)
            .env("FLUMEN_CLUSTER", cluster_dir)
            .env("FLUMEN_CACHE_DIR", cache)
            .env_remove("FLUMEN_FAILPOINTS")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("cannot start the flumen binary");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "flumen {args:?} failed:\n{text}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    flumen(&["cluster", "up", "-n", &workers.to_string()]);
    let started = Instant::now();
    let status = flumen(&["submit", "--wait", job.to_str().expect("a UTF-8 path")]);
    let wall_s = started.elapsed().as_secs_f64();
    flumen(&["cluster", "down"]);
    (wall_s, status)
}
