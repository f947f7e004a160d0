//! `flumen plugin keygen|package|sign|verify|publish|pull|search|info` as a publisher and a
//! user drive them: real keys, the real `filter` component, directory registries and a real OCI
//! registry (`docker-registry`), with oras-py as the other OCI client.
//!
//! Every test has its own local store (`FLUMEN_REGISTRY`) and trust file (`FLUMEN_TRUST`). The
//! OCI tests run when `FLUMEN_OCI_TESTS=1` (with `docker-registry` on PATH, from Debian's
//! `docker-registry` package, and `FLUMEN_ORAS_PYTHON` naming a Python with the `oras`
//! package); otherwise they say they were skipped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_contains, ensure_guests, flumen_bin, guest};

#[test]
fn keygen_package_sign_then_verify_with_a_trust_file() {
    let w = Workspace::new();
    let keygen = w.ok(&["plugin", "keygen", "--out", w.path("acme").to_str().unwrap()]);
    let key_id = key_id_in(&keygen);
    assert!(w.path("acme.pem").is_file() && w.path("acme.pub.pem").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.path("acme.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key must be readable by its owner only");
    }
    // Keygen refuses to overwrite a key.
    let again = w.fails(&["plugin", "keygen", "--out", w.path("acme").to_str().unwrap()]);
    assert_contains(&again, &["already exists"]);

    let pkg = w.package();
    let packaged = w.last_stdout();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pkg.join("manifest.json")).unwrap()).unwrap();
    let component_digest = manifest["component"]["digest"].as_str().unwrap().to_owned();
    assert_contains(&packaged, &["filter", "1.0.0", &package_digest(&pkg), &component_digest]);
    assert_contains(&packaged, &[&std::fs::metadata(filter_wasm()).unwrap().len().to_string()]);
    assert_eq!(manifest["wit"], "flumen:dataflow@0.2.0");
    assert_eq!(std::fs::read(pkg.join("component.wasm")).unwrap(), std::fs::read(filter_wasm()).unwrap());

    let signed = w.ok(&["plugin", "sign", pkg.to_str().unwrap(), "--key", w.path("acme.pem").to_str().unwrap()]);
    assert_contains(&signed, &[&key_id]);
    assert!(pkg.join(format!("signatures/{key_id}.json")).is_file());

    w.trust_key("acme", "acme.pub.pem", &["filter"]);
    let verified = w.ok(&["plugin", "verify", pkg.to_str().unwrap()]);
    assert_contains(
        &verified,
        &[&format!("verified: filter@1.0.0 {}, signed by acme ({key_id})", package_digest(&pkg))],
    );

    // The entry keygen printed is a working trust file on its own.
    let snippet = &keygen[keygen.find("[[key]]").expect("keygen prints a trust entry")..];
    std::fs::write(w.path("snippet-trust.toml"), snippet).unwrap();
    let verified =
        w.ok(&["plugin", "verify", pkg.to_str().unwrap(), "--trust", w.path("snippet-trust.toml").to_str().unwrap()]);
    assert_contains(&verified, &["verified: filter@1.0.0", &key_id]);
}

#[test]
fn unsigned_untrusted_and_not_allowed_packages_are_refused() {
    let w = Workspace::new();
    w.ok(&["plugin", "keygen", "--out", w.path("acme").to_str().unwrap()]);
    w.ok(&["plugin", "keygen", "--out", w.path("stranger").to_str().unwrap()]);
    let pkg = w.package();

    // Unsigned, with a fail-closed policy.
    let err = w.fails(&["plugin", "verify", pkg.to_str().unwrap()]);
    assert_contains(&err, &["filter@1.0.0", "unsigned"]);

    // Signed by a key the trust file does not list.
    w.trust_key("acme", "acme.pub.pem", &["filter"]);
    w.ok(&["plugin", "sign", pkg.to_str().unwrap(), "--key", w.path("stranger.pem").to_str().unwrap()]);
    let err = w.fails(&["plugin", "verify", pkg.to_str().unwrap()]);
    assert_contains(&err, &["filter@1.0.0", "does not list"]);

    // Signed by a listed key that may sign only other names.
    w.trust_key("acme", "acme.pub.pem", &["acme-*"]);
    w.ok(&["plugin", "sign", pkg.to_str().unwrap(), "--key", w.path("acme.pem").to_str().unwrap()]);
    let err = w.fails(&["plugin", "verify", pkg.to_str().unwrap()]);
    assert_contains(&err, &["`acme`", "may not sign `filter`"]);

    // Nor will publish put it anywhere.
    let registry = w.path("shared");
    let err = w.fails(&["plugin", "publish", pkg.to_str().unwrap(), "--registry", registry.to_str().unwrap()]);
    assert_contains(&err, &["refusing to publish `filter@1.0.0`", "may not sign `filter`"]);
    assert!(!registry.join("filter").exists());
}

#[test]
fn tampered_packages_are_refused_even_when_unsigned_ones_are_allowed() {
    let w = Workspace::new();
    w.ok(&["plugin", "keygen", "--out", w.path("acme").to_str().unwrap()]);

    // --allow-unsigned (and FLUMEN_ALLOW_UNSIGNED=1) accept an unsigned package, with a warning.
    let pkg = w.package();
    let out = w.run(&["plugin", "verify", pkg.to_str().unwrap(), "--allow-unsigned"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_contains(&text(&out.stdout), &["verified: filter@1.0.0"]);
    assert_contains(&text(&out.stderr), &["warning", "development"]);
    let out = w.run(&["plugin", "verify", pkg.to_str().unwrap()], &[("FLUMEN_ALLOW_UNSIGNED", "1")]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A changed byte of the component: its digest no longer matches the manifest.
    w.ok(&["plugin", "sign", pkg.to_str().unwrap(), "--key", w.path("acme.pem").to_str().unwrap()]);
    w.trust_key("acme", "acme.pub.pem", &["*"]);
    w.ok(&["plugin", "verify", pkg.to_str().unwrap()]);
    let component = pkg.join("component.wasm");
    let original = std::fs::read(&component).unwrap();
    let mut altered = original.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x01;
    std::fs::write(&component, &altered).unwrap();
    for extra in [&[][..], &["--allow-unsigned"][..]] {
        let err = w.fails(&[&["plugin", "verify", pkg.to_str().unwrap()][..], extra].concat());
        assert_contains(&err, &["component.wasm", "does not match the manifest of `filter@1.0.0`"]);
    }
    std::fs::write(&component, &original).unwrap();
    w.ok(&["plugin", "verify", pkg.to_str().unwrap()]);

    // A changed description: still canonical JSON, but no longer what was signed.
    let manifest = pkg.join("manifest.json");
    let text_before = std::fs::read_to_string(&manifest).unwrap();
    assert!(text_before.contains("Keeps rows"), "{text_before}");
    std::fs::write(&manifest, text_before.replace("Keeps rows", "Drops rows")).unwrap();
    for extra in [&[][..], &["--allow-unsigned"][..]] {
        let err = w.fails(&[&["plugin", "verify", pkg.to_str().unwrap()][..], extra].concat());
        assert_contains(&err, &["bad signature", "the manifest changed after signing"]);
    }
}

#[test]
fn package_refuses_undeclared_capabilities_and_components_that_are_not_operators() {
    let w = Workspace::new();
    let counter = guest("keyed-counter");
    let err = w.fails(&[
        "plugin",
        "package",
        w.dir.path().to_str().unwrap(),
        "--component",
        counter.to_str().unwrap(),
        "--out",
        w.path("counter").to_str().unwrap(),
    ]);
    assert_contains(&err, &["keyed-counter.wasm", "imports `state`", "package.toml", "capabilities"]);
    assert!(!w.path("counter").exists());

    let not_operator = guest("wrong-world");
    let err =
        w.fails(&["plugin", "package", w.dir.path().to_str().unwrap(), "--component", not_operator.to_str().unwrap()]);
    assert_contains(&err, &["wrong-world.wasm", "not a Flumen operator"]);
}

#[test]
fn publish_pull_search_and_info_through_a_directory_registry() {
    let publisher = Workspace::new();
    publisher.ok(&["plugin", "keygen", "--out", publisher.path("acme").to_str().unwrap()]);
    publisher.trust_key("acme", "acme.pub.pem", &["filter"]);
    let pkg = publisher.package();
    publisher.ok(&["plugin", "sign", pkg.to_str().unwrap(), "--key", publisher.path("acme.pem").to_str().unwrap()]);
    let digest = package_digest(&pkg);
    let key_id = std::fs::read_dir(pkg.join("signatures")).unwrap().next().unwrap().unwrap().path();
    let key_id = key_id.file_stem().unwrap().to_str().unwrap().to_owned();

    let shared = publisher.path("shared");
    let published = publisher.ok(&["plugin", "publish", pkg.to_str().unwrap(), "--registry", shared.to_str().unwrap()]);
    assert_contains(&published, &["published filter@1.0.0", &digest]);
    assert!(shared.join("filter/1.0.0/manifest.json").is_file());
    // Publishing into the publisher's own store (the default registry).
    publisher.ok(&["plugin", "publish", pkg.to_str().unwrap()]);
    assert!(publisher.store.join("filter/1.0.0/component.wasm").is_file());

    // A user who trusts the publisher's key, with an empty store.
    let user = Workspace::new();
    std::fs::copy(publisher.path("acme.pub.pem"), user.path("acme.pub.pem")).unwrap();
    user.trust_key("acme", "acme.pub.pem", &["*"]);
    let registry = shared.to_str().unwrap();

    let found = user.ok(&["plugin", "search", "FILTER", "--registry", registry]);
    assert_contains(&found, &["filter 1.0.0 Keeps rows"]);
    let found = user.ok(&["plugin", "search", "--registry", registry]);
    assert_contains(&found, &["filter 1.0.0"]);
    let none = user.ok(&["plugin", "search", "no such thing", "--registry", registry]);
    assert!(!none.contains("filter"), "{none}");

    let info = user.ok(&["plugin", "info", "filter", "--registry", registry]);
    assert_contains(&info, &["filter", "1.0.0", "Keeps rows", "Apache-2.0", "flumen:dataflow@0.2.0", &digest, &key_id]);

    let pulled = user.ok(&["plugin", "pull", "filter@^1", "--registry", registry]);
    assert_contains(&pulled, &["filter@1.0.0", &digest]);
    assert_eq!(
        std::fs::read(user.store.join("filter/1.0.0/component.wasm")).unwrap(),
        std::fs::read(filter_wasm()).unwrap()
    );
    // Now in the user's store: verify and info by name.
    let verified = user.ok(&["plugin", "verify", "filter@1.0.0"]);
    assert_contains(&verified, &[&format!("verified: filter@1.0.0 {digest}, signed by acme ({key_id})")]);
    let info = user.ok(&["plugin", "info", "filter@1.0.0"]);
    assert_contains(&info, &[&digest, &key_id]);

    let err = user.fails(&["plugin", "pull", "filter@2.0.0", "--registry", registry]);
    assert_contains(&err, &["filter@2.0.0"]);
}

#[test]
fn a_pull_of_a_package_signed_by_an_untrusted_key_leaves_nothing_in_the_store() {
    let publisher = Workspace::new();
    publisher.ok(&["plugin", "keygen", "--out", publisher.path("acme").to_str().unwrap()]);
    let pkg = publisher.package();
    publisher.ok(&["plugin", "sign", pkg.to_str().unwrap(), "--key", publisher.path("acme.pem").to_str().unwrap()]);
    publisher.trust_key("acme", "acme.pub.pem", &["*"]);
    let shared = publisher.path("shared");
    publisher.ok(&["plugin", "publish", pkg.to_str().unwrap(), "--registry", shared.to_str().unwrap()]);

    // The user's trust file lists no key.
    let user = Workspace::new();
    let err = user.fails(&["plugin", "pull", "filter@1.0.0", "--registry", shared.to_str().unwrap()]);
    assert_contains(&err, &["filter@1.0.0", "does not list"]);
    assert_store_empty(&user.store);
}

#[test]
fn publish_to_an_oci_registry_and_pull_back_into_a_fresh_store() {
    let Some(registry) = TestRegistry::start_if_enabled() else { return };
    let publisher = Workspace::new();
    publisher.ok(&["plugin", "keygen", "--out", publisher.path("acme").to_str().unwrap()]);
    publisher.trust_key("acme", "acme.pub.pem", &["filter"]);
    let pkg = publisher.package();
    publisher.ok(&["plugin", "sign", pkg.to_str().unwrap(), "--key", publisher.path("acme.pem").to_str().unwrap()]);
    let digest = package_digest(&pkg);
    let oci = format!("oci://{}/flumen/ops", registry.addr);

    let published = publisher.ok(&["plugin", "publish", pkg.to_str().unwrap(), "--registry", &oci]);
    assert_contains(&published, &[&format!("{}/flumen/ops/filter@sha256:", registry.addr), &digest]);
    // The same package again is fine; another one under the same version is not.
    publisher.ok(&["plugin", "publish", pkg.to_str().unwrap(), "--registry", &oci]);
    let changed = publisher.path("changed");
    std::fs::write(publisher.path("package.toml"), PACKAGE_TOML.replace("Keeps rows", "Still keeps rows")).unwrap();
    publisher.ok(&[
        "plugin",
        "package",
        publisher.dir.path().to_str().unwrap(),
        "--component",
        filter_wasm().to_str().unwrap(),
        "--out",
        changed.to_str().unwrap(),
    ]);
    publisher.ok(&["plugin", "sign", changed.to_str().unwrap(), "--key", publisher.path("acme.pem").to_str().unwrap()]);
    let err = publisher.fails(&["plugin", "publish", changed.to_str().unwrap(), "--registry", &oci]);
    assert_contains(&err, &["filter@1.0.0", "immutable"]);

    let versions = publisher.ok(&["plugin", "search", "filter", "--registry", &oci]);
    assert_eq!(versions.trim(), "filter 1.0.0");

    // A user without the publisher's key is refused, and nothing is left in the store.
    let stranger = Workspace::new();
    let err = stranger.fails(&["plugin", "pull", "filter@1.0.0", "--registry", &oci]);
    assert_contains(&err, &["filter@1.0.0", "does not list"]);
    assert_store_empty(&stranger.store);

    // A user who trusts it gets the same package.
    let user = Workspace::new();
    std::fs::copy(publisher.path("acme.pub.pem"), user.path("acme.pub.pem")).unwrap();
    user.trust_key("acme", "acme.pub.pem", &["*"]);
    let info = user.ok(&["plugin", "info", "filter@1.0.0", "--registry", &oci]);
    assert_contains(&info, &["Keeps rows", &digest]);
    let pulled = user.ok(&["plugin", "pull", "filter@1.0.0", "--registry", &oci]);
    assert_contains(&pulled, &[&digest]);
    let stored = user.store.join("filter/1.0.0");
    assert_eq!(package_digest(&stored), digest);
    assert_eq!(std::fs::read(stored.join("component.wasm")).unwrap(), std::fs::read(filter_wasm()).unwrap());
    let verified = user.ok(&["plugin", "verify", "filter@1.0.0"]);
    assert_contains(&verified, &[&format!("verified: filter@1.0.0 {digest}, signed by acme")]);
}

#[test]
fn oras_pulls_the_component_of_a_package_flumen_published() {
    let Some(registry) = TestRegistry::start_if_enabled() else { return };
    let python = oras_python();
    let w = Workspace::new();
    let pkg = w.package();
    let oci = format!("oci://{}/interop", registry.addr);
    w.ok(&["plugin", "publish", pkg.to_str().unwrap(), "--registry", &oci, "--allow-unsigned"]);

    let out = w.path("oras-out");
    let manifest = run_python(
        &python,
        r#"
import json, sys, oras.client
host, target, outdir = sys.argv[1:4]
client = oras.client.OrasClient(hostname=host, insecure=True)
client.pull(target=target, outdir=outdir)
print(json.dumps(client.get_manifest(target)))
"#,
        &[&registry.addr, &format!("{}/interop/filter:1.0.0", registry.addr), out.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(out.join("component.wasm")).unwrap(), std::fs::read(filter_wasm()).unwrap());
    let manifest: serde_json::Value = serde_json::from_str(manifest.lines().last().unwrap_or_default()).unwrap();
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["dev.flumen.package.manifest"], std::fs::read_to_string(pkg.join("manifest.json")).unwrap());
    assert_eq!(annotations["org.opencontainers.image.title"], "filter");
    assert_eq!(annotations["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(annotations["org.opencontainers.image.licenses"], "Apache-2.0");
}

#[test]
fn an_artifact_oras_pushed_without_the_flumen_annotation_is_refused() {
    let Some(registry) = TestRegistry::start_if_enabled() else { return };
    let python = oras_python();
    let w = Workspace::new();
    std::fs::copy(filter_wasm(), w.path("component.wasm")).unwrap();
    std::fs::write(w.path("config.json"), r#"{"architecture":"wasm","os":"wasip2"}"#).unwrap();
    run_python(
        &python,
        &format!(
            r#"
import os, sys, oras.client
host, target, workdir = sys.argv[1:4]
os.chdir(workdir)
client = oras.client.OrasClient(hostname=host, insecure=True)
client.push(
    target=target,
    files=["component.wasm:{}"],
    manifest_config="config.json:{}",
    manifest_annotations={{"org.opencontainers.image.version": "1.0.0"}},
)
"#,
            flumen_registry::WASM_LAYER_MEDIA_TYPE,
            flumen_registry::WASM_CONFIG_MEDIA_TYPE
        ),
        &[&registry.addr, &format!("{}/plain/filter:1.0.0", registry.addr), w.dir.path().to_str().unwrap()],
    );

    let oci = format!("oci://{}/plain", registry.addr);
    let err = w.fails(&["plugin", "pull", "filter@1.0.0", "--registry", &oci, "--allow-unsigned"]);
    assert_contains(&err, &["not a Flumen package (no dev.flumen.package.manifest annotation)"]);
    assert_store_empty(&w.store);
}

const PACKAGE_TOML: &str = r#"name = "filter"
version = "1.0.0"
description = "Keeps rows whose column is at least a minimum"
license = "Apache-2.0"
capabilities = ["log"]
"#;

/// A temp dir holding a `package.toml`, a store, a trust file (empty: trusts nothing) and a
/// component cache shared by the tests.
struct Workspace {
    dir: tempfile::TempDir,
    store: PathBuf,
    trust: PathBuf,
    last_stdout: std::cell::RefCell<String>,
}

impl Workspace {
    fn new() -> Self {
        ensure_guests();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.toml"), PACKAGE_TOML).unwrap();
        let trust = dir.path().join("trust.toml");
        std::fs::write(&trust, "").unwrap();
        let store = dir.path().join("store");
        Workspace { dir, store, trust, last_stdout: Default::default() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Packages the `filter` component into `pkg/`.
    fn package(&self) -> PathBuf {
        let out = self.path("pkg");
        self.ok(&[
            "plugin",
            "package",
            self.dir.path().to_str().unwrap(),
            "--component",
            filter_wasm().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        out
    }

    /// Makes the trust file list one key, allowed to sign `packages`.
    fn trust_key(&self, name: &str, public_key: &str, packages: &[&str]) {
        let patterns: Vec<String> = packages.iter().map(|p| format!("{p:?}")).collect();
        std::fs::write(
            &self.trust,
            format!("[[key]]\nname = {name:?}\npublic_key = {public_key:?}\npackages = [{}]\n", patterns.join(", ")),
        )
        .unwrap();
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(flumen_bin());
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("FLUMEN_REGISTRY", &self.store)
            .env("FLUMEN_TRUST", &self.trust)
            .env("FLUMEN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"))
            .env_remove("FLUMEN_ALLOW_UNSIGNED")
            .env_remove("FLUMEN_OCI_INSECURE")
            .env_remove("FLUMEN_OCI_USERNAME")
            .env_remove("FLUMEN_OCI_PASSWORD");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    }

    /// Runs `flumen args…`, which must succeed; its stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, &[]);
        assert!(
            out.status.success(),
            "flumen {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        *self.last_stdout.borrow_mut() = text(&out.stdout);
        text(&out.stdout)
    }

    /// Runs `flumen args…`, which must be refused with exit code 2; its stderr.
    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "flumen {} should have been refused:\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    fn last_stdout(&self) -> String {
        self.last_stdout.borrow().clone()
    }
}

fn filter_wasm() -> PathBuf {
    ensure_guests();
    Path::new(env!("FLUMEN_PLUGIN_DIR")).join("filter.wasm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sha256:<hex>` of a package directory's `manifest.json`: its package digest.
fn package_digest(dir: &Path) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(std::fs::read(dir.join("manifest.json")).unwrap())))
}

/// The key id `flumen plugin keygen` printed.
fn key_id_in(keygen_stdout: &str) -> String {
    let id = keygen_stdout
        .lines()
        .find_map(|l| l.strip_prefix("key id "))
        .unwrap_or_else(|| panic!("no key id in:\n{keygen_stdout}"))
        .trim()
        .to_owned();
    assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    id
}

/// Asserts a store holds no package and no leftover temporary directory.
#[track_caller]
fn assert_store_empty(store: &Path) {
    let entries: Vec<String> = match std::fs::read_dir(store) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => return,
    };
    let unexpected: Vec<&String> = entries.iter().filter(|e| e.as_str() != "by-digest").collect();
    assert!(unexpected.is_empty(), "the store holds {unexpected:?}");
    let indexed = std::fs::read_dir(store.join("by-digest")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(indexed, 0, "the store's digest index is not empty");
}

/// The interpreter named by `FLUMEN_ORAS_PYTHON`; the interoperability tests fail without it.
fn oras_python() -> PathBuf {
    std::env::var_os("FLUMEN_ORAS_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "FLUMEN_OCI_TESTS=1 runs the oras interoperability tests, which need FLUMEN_ORAS_PYTHON naming a \
             Python with the `oras` package (`python3 -m venv V && V/bin/pip install oras`)"
        )
    })
}

/// Runs a Python snippet with arguments; panics with its output unless it succeeds.
fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "oras-py failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A `docker-registry serve` child on a free local port, storing into a temporary directory.
struct TestRegistry {
    /// `127.0.0.1:<port>`.
    addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// A running registry, or `None` (saying so) when `FLUMEN_OCI_TESTS` is not `1`.
    fn start_if_enabled() -> Option<TestRegistry> {
        if std::env::var("FLUMEN_OCI_TESTS").as_deref() != Ok("1") {
            eprintln!(
                "skipped: set FLUMEN_OCI_TESTS=1 (with `docker-registry` on PATH, `apt-get install \
                 docker-registry`, and FLUMEN_ORAS_PYTHON set) to run the OCI package tests"
            );
            return None;
        }
        let binary = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("docker-registry"))
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "FLUMEN_OCI_TESTS=1 but `docker-registry` is not on PATH: install it (`apt-get install \
                     docker-registry`) or unset FLUMEN_OCI_TESTS"
                )
            });
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let mut registry = TestRegistry { addr, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers_v2(&registry.addr) {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited ({status}) before answering:\n{}", log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {} within 20 s:\n{}",
                registry.addr,
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something on `addr` answers `GET /v2/` with 200.
fn answers_v2(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200")
}
