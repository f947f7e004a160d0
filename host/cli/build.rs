//! Builds every guest component (plugins and test guests) for `wasm32-wasip2`,
//! so that `cargo run` and `cargo test` work from a fresh clone.
//!
//! The guest workspace (`plugins/Cargo.toml`) is built by a nested cargo into
//! `target/guest`, and each component is copied to `target/plugins/<name>.wasm`
//! (Flumen's own plugins: the CLI's default plugin directory) or
//! `target/test-guests/<name>.wasm` (the test programs). Set
//! `FLUMEN_SKIP_GUEST_BUILD=1` to skip this (the directories must then exist).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target_root = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target_root = if target_root.is_absolute() { target_root } else { root.join(target_root) };
    let plugin_dir = target_root.join("plugins");
    let test_guest_dir = target_root.join("test-guests");
    println!("cargo:rustc-env=FLUMEN_PLUGIN_DIR={}", plugin_dir.display());
    println!("cargo:rustc-env=FLUMEN_TEST_GUEST_DIR={}", test_guest_dir.display());
    println!("cargo:rerun-if-env-changed=FLUMEN_SKIP_GUEST_BUILD");
    if std::env::var_os("FLUMEN_SKIP_GUEST_BUILD").is_some() {
        return;
    }

    let plugins = members(&root.join("plugins"));
    let test_guests = members(&root.join("tests/guests"));
    for path in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "sdk/rust/Cargo.toml",
        "sdk/rust/src",
        "wit",
        "host/batch/src",
        "host/batch/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    for dir in plugins.iter().chain(&test_guests) {
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!("cargo:rerun-if-changed={}", dir.join("Cargo.toml").display());
    }

    ensure_target();
    let guest_target = target_root.join("guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET, "--workspace", "--manifest-path"])
        .arg(root.join("plugins/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &guest_target);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run cargo to build the guest components: {e}"));
    if !out.status.success() {
        panic!("building the guest components failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let built = guest_target.join(TARGET).join("release");
    copy_components(&plugins, &built, &plugin_dir);
    copy_components(&test_guests, &built, &test_guest_dir);
}

/// Crate directories under `dir` that build a component (`cdylib`).
fn members(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    out.retain(|p| fs::read_to_string(p.join("Cargo.toml")).is_ok_and(|t| t.contains("cdylib")));
    out.sort();
    out
}

fn copy_components(dirs: &[PathBuf], built: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap_or_else(|e| panic!("cannot create {}: {e}", dest.display()));
    for dir in dirs {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let package = package_name(&dir.join("Cargo.toml")).unwrap_or_else(|| name.clone());
        let artifact = built.join(format!("{}.wasm", package.replace('-', "_")));
        let to = dest.join(format!("{name}.wasm"));
        fs::copy(&artifact, &to)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", artifact.display(), to.display()));
    }
}

fn package_name(manifest: &Path) -> Option<String> {
    let text = fs::read_to_string(manifest).ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("name"))?;
    Some(line.split('"').nth(1)?.to_string())
}

/// Installs the wasm target through rustup when it is missing: the build
/// machines set `RUSTUP_AUTO_INSTALL=0`, so nothing else would.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc).args(["--print", "target-libdir", "--target", TARGET]).output();
    let present = libdir
        .as_ref()
        .is_ok_and(|o| o.status.success() && Path::new(String::from_utf8_lossy(&o.stdout).trim()).exists());
    if present {
        return;
    }
    let status = Command::new("rustup").args(["target", "add", TARGET]).status();
    if !status.is_ok_and(|s| s.success()) {
        panic!("the `{TARGET}` target is missing and `rustup target add {TARGET}` failed; install it and build again");
    }
}
