//! Builds guest components (Flumen's plugins and the test guests) from the
//! source checkout for `wasm32-wasip2`. One module, included by the build
//! script (the core plugins), the CLI (other plugins on first use) and the
//! integration tests and benchmarks (the test guests on first use), so that
//! each build does only what its user needs.
//!
//! Builds run a nested `cargo build --release` of the guest workspace
//! (`plugins/Cargo.toml`) into one target directory, under a file lock, and
//! copy each component atomically to `<dest>/<name>.wasm`.

#![allow(dead_code, reason = "each includer uses a part of this module")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const TARGET: &str = "wasm32-wasip2";

/// Plugins the build script builds with the host: the SQL-expression
/// operators, which share one small dependency tree and which the quickstart
/// uses. The media plugins are built on first use.
pub const CORE_PLUGINS: &[&str] = &["filter", "map", "project", "strings"];

/// A guest crate: its directory (whose name is the component's name) and package.
#[derive(Debug, Clone)]
pub struct Guest {
    pub name: String,
    pub package: String,
    pub dir: PathBuf,
}

/// Crates under `dir` that build a component (`cdylib`), in name order.
pub fn members(dir: &Path) -> Vec<Guest> {
    let mut out: Vec<Guest> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|dir| {
            let manifest = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
            if !manifest.contains("cdylib") {
                return None;
            }
            let name = dir.file_name()?.to_str()?.to_string();
            let package = package_name(&manifest).unwrap_or_else(|| name.clone());
            Some(Guest { name, package, dir })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The plugin crate named `name` in the checkout at `source_root`, if any.
pub fn plugin_source(source_root: &Path, name: &str) -> Option<Guest> {
    members(&source_root.join("plugins")).into_iter().find(|g| g.name == name)
}

fn package_name(manifest: &str) -> Option<String> {
    let line = manifest.lines().find(|l| l.trim_start().starts_with("name"))?;
    Some(line.split('"').nth(1)?.to_string())
}

/// How a build reports: quietly (its output only in the error), or with
/// cargo's progress on stderr (a person is waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Quiet,
    Stderr,
}

/// Builds `guests` of the checkout at `source_root` (release, `wasm32-wasip2`)
/// into `guest_target` and copies each to `<its dest>/<name>.wasm`. Concurrent
/// builds (test processes, a CLI run) wait for each other on a lock file.
pub fn build(
    source_root: &Path,
    guest_target: &Path,
    guests: &[(Guest, PathBuf)],
    progress: Progress,
) -> Result<(), String> {
    if guests.is_empty() {
        return Ok(());
    }
    ensure_target()?;
    fs::create_dir_all(guest_target).map_err(|e| format!("cannot create {}: {e}", guest_target.display()))?;
    let lock_path = guest_target.join("flumen-guest-build.lock");
    let lock = fs::File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(source_root.join("plugins/Cargo.toml"))
        .env("CARGO_TARGET_DIR", guest_target)
        .stdin(Stdio::null());
    for (g, _) in guests {
        cmd.args(["-p", g.package.as_str()]);
    }
    // What the outer build sets for the host must not leak into the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let packages = guests.iter().map(|(g, _)| g.package.as_str()).collect::<Vec<_>>().join(" -p ");
    let how_to = format!(
        "cargo build --release --target {TARGET} --manifest-path {} -p {packages}",
        source_root.join("plugins/Cargo.toml").display()
    );
    let failed = match progress {
        Progress::Quiet => match cmd.output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => return Err(no_cargo(&cargo, e, &how_to)),
        },
        Progress::Stderr => match cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).status() {
            Ok(status) if status.success() => None,
            Ok(status) => Some(format!("cargo exited with {status}")),
            Err(e) => return Err(no_cargo(&cargo, e, &how_to)),
        },
    };
    if let Some(output) = failed {
        return Err(format!("building the guest components failed ({how_to}):\n{output}"));
    }
    let built = guest_target.join(TARGET).join("release");
    for (g, dest) in guests {
        fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let artifact = built.join(format!("{}.wasm", g.package.replace('-', "_")));
        let to = dest.join(format!("{}.wasm", g.name));
        // Copy, then rename: a reader never sees half a component.
        let partial = dest.join(format!(".{}.wasm.{}", g.name, std::process::id()));
        fs::copy(&artifact, &partial)
            .and_then(|_| fs::rename(&partial, &to))
            .map_err(|e| format!("cannot copy {} to {}: {e}", artifact.display(), to.display()))?;
    }
    Ok(())
}

/// Every plugin and test guest of this checkout, built (or found up to date)
/// once per process: the integration tests and benchmarks call this before
/// they use a component. `FLUMEN_SKIP_GUEST_BUILD` set: they are prebuilt.
pub fn ensure_all() {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = DONE.get_or_init(|| {
        if std::env::var_os("FLUMEN_SKIP_GUEST_BUILD").is_some() {
            return Ok(());
        }
        let (Some(source), Some(target), Some(plugins), Some(test_guests)) = (
            option_env!("FLUMEN_SOURCE_DIR"),
            option_env!("FLUMEN_GUEST_TARGET_DIR"),
            option_env!("FLUMEN_PLUGIN_DIR"),
            option_env!("FLUMEN_TEST_GUEST_DIR"),
        ) else {
            return Err("the build script did not say where the guest components go".into());
        };
        let source = Path::new(source);
        let mut all: Vec<(Guest, PathBuf)> =
            members(&source.join("plugins")).into_iter().map(|g| (g, PathBuf::from(plugins))).collect();
        all.extend(members(&source.join("tests/guests")).into_iter().map(|g| (g, PathBuf::from(test_guests))));
        build(source, Path::new(target), &all, Progress::Quiet)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn no_cargo(cargo: &std::ffi::OsStr, e: std::io::Error, how_to: &str) -> String {
    format!(
        "cannot run `{}` to build the guest components ({e}): install Rust with rustup (https://rustup.rs), \
         or build them elsewhere with `{how_to}`",
        cargo.to_string_lossy()
    )
}

/// Installs the wasm target through rustup when it is missing: the build
/// machines set `RUSTUP_AUTO_INSTALL=0`, so nothing else would.
pub fn ensure_target() -> Result<(), String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc).args(["--print", "target-libdir", "--target", TARGET]).output();
    let present = libdir
        .as_ref()
        .is_ok_and(|o| o.status.success() && Path::new(String::from_utf8_lossy(&o.stdout).trim()).exists());
    if present {
        return Ok(());
    }
    let status = Command::new("rustup").args(["target", "add", TARGET]).status();
    if !status.is_ok_and(|s| s.success()) {
        return Err(format!(
            "the `{TARGET}` target is missing and `rustup target add {TARGET}` failed; install it and build again"
        ));
    }
    Ok(())
}
