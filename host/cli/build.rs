//! Builds the core plugins (`filter`, `map`, `project`, `strings`) for
//! `wasm32-wasip2`, so that `cargo run` works from a fresh clone, and tells
//! the CLI and the tests where guest components live.
//!
//! The guest workspace (`plugins/Cargo.toml`) is built by a nested cargo into
//! `target/guest`; components are copied to `target/plugins/<name>.wasm` (the
//! CLI's default plugin directory). The other plugins (the media operators,
//! with heavier dependencies) are built by the CLI the first time a job names
//! them, and the test guests (`target/test-guests`) by the integration tests
//! on first use: a `cargo run` builds only what `flumen run` needs. Set
//! `FLUMEN_SKIP_GUEST_BUILD=1` to skip building here (the components must
//! then exist).

use std::path::PathBuf;

#[path = "src/guests.rs"]
mod guests;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target_root = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target_root = if target_root.is_absolute() { target_root } else { root.join(target_root) };
    let plugin_dir = target_root.join("plugins");
    let test_guest_dir = target_root.join("test-guests");
    let guest_target = target_root.join("guest");
    println!("cargo:rustc-env=FLUMEN_PLUGIN_DIR={}", plugin_dir.display());
    println!("cargo:rustc-env=FLUMEN_TEST_GUEST_DIR={}", test_guest_dir.display());
    println!("cargo:rustc-env=FLUMEN_GUEST_TARGET_DIR={}", guest_target.display());
    println!("cargo:rustc-env=FLUMEN_SOURCE_DIR={}", root.display());
    println!("cargo:rerun-if-env-changed=FLUMEN_SKIP_GUEST_BUILD");
    println!("cargo:rerun-if-changed=host/cli/src/guests.rs");
    if std::env::var_os("FLUMEN_SKIP_GUEST_BUILD").is_some() {
        return;
    }

    let plugins = guests::members(&root.join("plugins"));
    for path in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "sdk/rust/Cargo.toml",
        "sdk/rust/src",
        "wit",
        "host/batch/src",
        "host/batch/Cargo.toml",
        "plugins/expr/src",
        "plugins/expr/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    for g in &plugins {
        println!("cargo:rerun-if-changed={}", g.dir.join("src").display());
        println!("cargo:rerun-if-changed={}", g.dir.join("Cargo.toml").display());
    }
    let (core, lazy): (Vec<_>, Vec<_>) =
        plugins.into_iter().partition(|g| guests::CORE_PLUGINS.contains(&g.name.as_str()));
    // Plugins built on first use may be stale now that their sources (or the
    // SDK) changed: remove them, and the next job that names one rebuilds it.
    for g in &lazy {
        let _ = std::fs::remove_file(plugin_dir.join(format!("{}.wasm", g.name)));
    }
    let core: Vec<_> = core.into_iter().map(|g| (g, plugin_dir.clone())).collect();
    if let Err(e) = guests::build(&root, &guest_target, &core, guests::Progress::Quiet) {
        panic!("{e}");
    }
}
