//! Running the `flumen` binary as a whole process, shared by the process-level benches.

use std::path::Path;
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
