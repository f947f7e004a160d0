//! Fuzz target: the files of an operator package as the engine and `flumen
//! plugin` read them from a store, a pull or an author's directory —
//! `manifest.json`, `component.wasm` and a signature record (through
//! `Package::read_dir`), then the trust check; a lockfile; a trust file; a
//! `package.toml`; and a plugin reference. None may panic; a package that
//! reads must name a component of its size and digest.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use flumen_package::{Lockfile, Package, PackageSource, PluginRef, TrustPolicy};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Files {
    manifest: Vec<u8>,
    component: Vec<u8>,
    signature: Vec<u8>,
    lock: Vec<u8>,
    trust: Vec<u8>,
    source: String,
    reference: String,
}

/// One scratch directory per fuzzing process.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("flumen-fuzz-package-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pkg/signatures")).expect("scratch dir");
        dir
    })
}

fuzz_target!(|files: Files| {
    let dir = scratch();
    let pkg = dir.join("pkg");
    let write = |rel: &str, bytes: &[u8]| std::fs::write(dir.join(rel), bytes).expect("scratch write");
    write("pkg/manifest.json", &files.manifest);
    write("pkg/component.wasm", &files.component);
    write("pkg/signatures/0123456789abcdef.json", &files.signature);
    if let Ok(p) = Package::read_dir(&pkg) {
        assert_eq!(p.manifest().component.size, files.component.len() as u64);
        assert_eq!(p.manifest().component.digest, flumen_package::content_digest(&files.component));
        let _ = TrustPolicy::default().allow_unsigned(true).check(&p);
        let _ = p.manifest().check_config(&serde_json::json!({ "key": "k", "n": 1 }));
    }
    write("flumen.lock", &files.lock);
    if let Ok(lock) = Lockfile::read(&dir.join("flumen.lock")) {
        if let Ok(r) = PluginRef::parse(&files.reference) {
            let _ = lock.pin(&r);
        }
    }
    write("trust.toml", &files.trust);
    let _ = TrustPolicy::from_file(&dir.join("trust.toml"));
    let _ = PackageSource::from_toml_str(&files.source, "package.toml");
    let _ = PluginRef::parse(&files.reference);
});
