//! `examples/live-upgrade/run.sh`, run as a user would (with this build's
//! `flumen`): `pricing` 1.0.0 and 2.0.0 built from Python, signed, published,
//! the job locked to ^1 and upgraded live to 2.0.0. Checks what the example
//! promises: every committed part file (one checkpoint epoch of one sink
//! subtask) is wholly one version's, each subtask's 1.0.0 epochs come before
//! its 2.0.0 epochs, each version computed its own prices, and every
//! generated order is in the output exactly once. Needs componentize-py: it
//! skips with a message without it, unless FLUMEN_CONFORMANCE_TESTS=1 (CI)
//! makes that a failure; `sdk/install-toolchains.sh python` installs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/live-upgrade")
}

/// Whether `flumen plugin build` finds componentize-py (its own venv, or `PATH`).
fn have_componentize_py() -> bool {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk-tools/python/bin/componentize-py");
    local.is_file()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("componentize-py").is_file()))
}

/// The generator's `rows` in the example's job.toml.
fn generated_rows() -> i64 {
    let job = std::fs::read_to_string(example().join("job.toml")).unwrap();
    job.lines()
        .find_map(|l| l.strip_prefix("rows =").map(|v| v.split('#').next().unwrap_or("").trim().parse().unwrap()))
        .expect("job.toml has `rows = N`")
}

/// What `pricing` `version` computes for one order: 1.0.0 converts at 0.92;
/// 2.0.0 also takes 10% off orders of 10 items or more (its defaults).
fn expected_price_eur(version: &str, price: f64, qty: i64) -> f64 {
    let eur = price * 0.92;
    match version {
        "1.0.0" => eur,
        "2.0.0" if qty >= 10 => eur * 0.9,
        "2.0.0" => eur,
        other => panic!("a row of unknown version {other:?}"),
    }
}

#[test]
fn the_live_upgrade_example_switches_versions_at_an_epoch_boundary() {
    if !have_componentize_py() {
        assert!(
            std::env::var("FLUMEN_CONFORMANCE_TESTS").as_deref() != Ok("1"),
            "FLUMEN_CONFORMANCE_TESTS=1 but componentize-py is missing: run sdk/install-toolchains.sh python"
        );
        eprintln!(
            "skipped: the live-upgrade example needs componentize-py (sdk/install-toolchains.sh python; \
             FLUMEN_CONFORMANCE_TESTS=1 makes this a failure)"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(example().join("run.sh"))
        .env("FLUMEN", env!("CARGO_BIN_EXE_flumen"))
        .env("WORK", work.path())
        .env("FLUMEN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"))
        .env_remove("FLUMEN_REGISTRY")
        .env_remove("FLUMEN_TRUST")
        .env_remove("FLUMEN_ALLOW_UNSIGNED")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run.sh failed ({}):\n{stdout}\n{stderr}", out.status);
    for needle in ["pricing@^1 → 1.0.0", "\"outcome\":\"applied\"", "epochs by 1.0.0, then", "epochs by 2.0.0"] {
        assert!(stdout.contains(needle), "expected {needle:?} in run.sh's output:\n{stdout}");
    }

    // Every committed part file, in name order: by sink subtask, then checkpoint.
    let dir = work.path().join("out");
    let mut parts: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && entry.file_type().unwrap().is_dir() {
            continue; // a sink's staging area, hidden from readers
        }
        assert!(name.starts_with("part-") && name.ends_with(".jsonl"), "a stray file in the output: {name}");
        parts.push(entry.path());
    }
    parts.sort();

    let mut versions_by_subtask: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids: Vec<i64> = Vec::new();
    for part in &parts {
        let name = part.file_name().unwrap().to_string_lossy().to_string();
        let mut versions: Vec<String> = Vec::new();
        for line in std::fs::read_to_string(part).unwrap().lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let version = row["version"].as_str().unwrap().to_string();
            let (price, qty, eur) =
                (row["price"].as_f64().unwrap(), row["qty"].as_i64().unwrap(), row["price_eur"].as_f64().unwrap());
            let want = expected_price_eur(&version, price, qty);
            // The operator rounds to cents.
            assert!((eur - want).abs() <= 0.005 + 1e-9, "{name}: {version} priced {row} at {eur}, not {want:.4}");
            ids.push(row["order_id"].as_i64().unwrap());
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        assert!(versions.len() <= 1, "{name} holds rows of several versions: {versions:?}");
        // part-<subtask>-<checkpoint>.jsonl
        let subtask = name.split('-').nth(1).unwrap().to_string();
        versions_by_subtask.entry(subtask).or_default().extend(versions);
    }
    assert_eq!(versions_by_subtask.len(), 2, "the job has two sink subtasks: {versions_by_subtask:?}");
    for (subtask, mut versions) in versions_by_subtask {
        versions.dedup();
        assert_eq!(versions, ["1.0.0", "2.0.0"], "sink subtask {subtask}: 1.0.0's epochs, then 2.0.0's, never back");
    }

    ids.sort_unstable();
    let rows = generated_rows();
    let lost = (0..rows).filter(|id| ids.binary_search(id).is_err()).count();
    let repeated = ids.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!((lost, repeated), (0, 0), "every generated order exactly once ({} rows of {rows})", ids.len());
    assert_eq!(ids, (0..rows).collect::<Vec<_>>());
}
