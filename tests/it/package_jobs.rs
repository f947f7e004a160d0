//! Jobs that name operators as packages (`plugin = "counter@^1"`): the
//! lockfile `flumen lock` writes and `flumen run` requires, the trust policy
//! and the manifest's config schema at plan time, a tampered store, and live
//! upgrades to a package version (with its state-layout check).
//!
//! Everything goes through the `flumen` binary with its own store, trust file
//! and keys in a temp dir; the package content is the keyed-counter test guest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::checkpoint::check;
use crate::common::{Job, guest};

/// A temp world: a local store, a trust file naming one key, a registry to
/// publish to, and the keyed-counter component packaged in versions.
pub(crate) struct World {
    dir: tempfile::TempDir,
}

impl World {
    pub(crate) fn new() -> Self {
        let w = World { dir: tempfile::tempdir().unwrap() };
        let key = w.path("keys/dev");
        std::fs::create_dir_all(w.path("keys")).unwrap();
        w.ok(&["plugin", "keygen", "--out", key.to_str().unwrap()]);
        std::fs::write(
            w.path("trust.toml"),
            "[[key]]\nname = \"dev\"\npublic_key = \"keys/dev.pub.pem\"\npackages = [\"counter\"]\n",
        )
        .unwrap();
        w
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(crate) fn flumen(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flumen"));
        cmd.args(args)
            .env("FLUMEN_REGISTRY", self.path("store"))
            .env("FLUMEN_TRUST", self.path("trust.toml"))
            .env("FLUMEN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"))
            .env_remove("FLUMEN_ALLOW_UNSIGNED")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> (i32, String) {
        let Output { status, stdout, stderr } = self.flumen(args).output().unwrap();
        (
            status.code().unwrap_or(-1),
            format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr)),
        )
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let (code, text) = self.run(args);
        assert_eq!(code, 0, "flumen {args:?}: {text}");
        text
    }

    /// Packages keyed-counter as `counter@version` (signed by the trusted key)
    /// and publishes it to the registry directory `registry`.
    pub(crate) fn publish(&self, version: &str, extra_manifest: &str) {
        let src = self.path(&format!("src-{version}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("package.toml"),
            format!(
                "name = \"counter\"\nversion = \"{version}\"\ndescription = \"counts rows per key\"\n\
                 capabilities = [\"log\", \"state\"]\n{extra_manifest}\n\
                 [config_schema]\ntype = \"object\"\nrequired = [\"key\"]\n\
                 [config_schema.properties.key]\ntype = \"string\"\n"
            ),
        )
        .unwrap();
        let out = self.path(&format!("pkg-{version}"));
        let component = guest("keyed-counter");
        self.ok(&[
            "plugin",
            "package",
            src.to_str().unwrap(),
            "--component",
            component.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        self.ok(&["plugin", "sign", out.to_str().unwrap(), "--key", self.path("keys/dev.pem").to_str().unwrap()]);
        let registry = self.path("registry");
        self.ok(&["plugin", "publish", out.to_str().unwrap(), "--registry", registry.to_str().unwrap()]);
    }
}

/// The checkpoint tests' counting job with the counter named `plugin`.
pub(crate) fn job(plugin: &str, config: &str, rows: u64, rate: u64) -> Job {
    Job::new(&format!(
        r#"
[job]
name = "packaged"
batch_rows = 20

[checkpoint]
interval_ms = 80
dir = "ck"

[[source]]
id = "gen"
kind = "generator"
rows = {rows}
rows_per_second = {rate}
columns = [
  {{ name = "key", gen = "modulo", modulus = 16 }},
  {{ name = "seq", gen = "divide", divisor = 16 }},
]

[[operator]]
id = "count"
plugin = "{plugin}"
capabilities = ["log", "state"]
inputs = [{{ from = "gen", partition = "hash", keys = ["key"] }}]
config = {config}

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
inputs = ["count"]
"#
    ))
}

#[test]
fn a_job_runs_a_package_only_through_its_lock_and_the_trust_policy() {
    let w = World::new();
    w.publish("1.0.0", "");
    w.publish("1.1.0", "");
    let registry = w.path("registry");
    let job = job("counter@^1", r#"{ key = "key" }"#, 400, 100_000);
    let spec = job.path.to_str().unwrap();

    // A version requirement alone could mean other bytes tomorrow: refused.
    let (code, text) = w.run(&["run", "--quiet", spec]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("without a lock") && text.contains("flumen lock"), "{text}");

    let locked = w.ok(&["lock", spec, "--registry", registry.to_str().unwrap()]);
    assert!(locked.contains("counter@^1 → 1.1.0"), "the highest matching version: {locked}");
    let lock = std::fs::read_to_string(job.file("flumen.lock")).unwrap();
    assert!(lock.contains("version = \"1.1.0\"") && lock.contains("digest = \"sha256:"), "{lock}");

    w.ok(&["run", "--quiet", spec]);
    let o = check(&job.file("out"), 400, "packaged", true);
    assert!(o.clean() && o.rows == 400, "{o:?}");

    // A fresh store: `run` pulls what the lock pins from where it was locked.
    std::fs::remove_dir_all(w.path("store")).unwrap();
    let again = w.ok(&["run", "--quiet", "--from-scratch", spec]);
    assert!(again.contains("pulling counter@1.1.0"), "{again}");

    // Tampered bytes in the store: refused before anything runs.
    let component = w.path("store/counter/1.1.0/component.wasm");
    let mut bytes = std::fs::read(&component).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&component, bytes).unwrap();
    let (code, text) = w.run(&["run", "--quiet", "--from-scratch", spec]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("`count`") && text.contains("altered or damaged"), "{text}");
}

#[test]
fn a_config_that_breaks_the_package_schema_is_refused_at_its_line() {
    let w = World::new();
    w.publish("1.0.0", "");
    let job = job("counter@1.0.0", r#"{ key = 7 }"#, 100, 100_000);
    let spec = job.path.to_str().unwrap();
    w.ok(&["lock", spec, "--registry", w.path("registry").to_str().unwrap()]);
    let (code, text) = w.run(&["plan", spec]);
    assert_eq!(code, 2, "{text}");
    // Line 25 of the job is `config = { key = 7 }`.
    assert!(text.contains("job.toml:25") && text.contains("/key"), "{text}");
}

#[test]
fn a_package_signed_by_a_key_the_runner_does_not_trust_is_refused() {
    let w = World::new();
    w.publish("1.0.0", "");
    let job = job("counter@1.0.0", r#"{ key = "key" }"#, 100, 100_000);
    let spec = job.path.to_str().unwrap();
    w.ok(&["lock", spec, "--registry", w.path("registry").to_str().unwrap()]);
    // Another runner trusts another key only.
    std::fs::create_dir_all(w.path("other")).unwrap();
    w.ok(&["plugin", "keygen", "--out", w.path("other/k").to_str().unwrap()]);
    std::fs::write(w.path("other/trust.toml"), "[[key]]\nname = \"other\"\npublic_key = \"k.pub.pem\"\n").unwrap();
    let (code, text) = {
        let out = w.flumen(&["run", "--quiet", spec]).env("FLUMEN_TRUST", w.path("other/trust.toml")).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
    };
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("trust"), "{text}");
}

/// A running job upgrades its operator from `counter@1.0.0` to `2.0.0`
/// (a new state layout that migrates from 1); `3.0.0` (a layout that cannot
/// read 1's) is refused and the job never notices.
#[test]
fn a_running_job_upgrades_to_a_package_version_whose_state_carries_over() {
    let w = World::new();
    w.publish("1.0.0", "");
    w.publish("2.0.0", "state_schema = 2\nmigrates_from = [1]");
    w.publish("3.0.0", "state_schema = 3");
    for v in ["2.0.0", "3.0.0"] {
        w.ok(&["plugin", "pull", &format!("counter@{v}"), "--registry", w.path("registry").to_str().unwrap()]);
    }
    let rows = 8000;
    let job = job("counter@1.0.0", r#"{ key = "key" }"#, rows, 2500);
    let spec = job.path.to_str().unwrap();
    w.ok(&["lock", spec, "--registry", w.path("registry").to_str().unwrap()]);
    let socket = job.dir.path().join("control.sock");
    let child = w.flumen(&["run", "--quiet", spec, "--control", socket.to_str().unwrap()]).spawn().unwrap();
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sock = socket.to_str().unwrap();
    let (code, text) = w.run(&["job", "upgrade", "--control", sock, "--operator", "count", "--to", "counter@3.0.0"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("state") && text.contains('3') && text.contains('1'), "{text}");
    let text = w.ok(&["job", "upgrade", "--control", sock, "--operator", "count", "--to", "counter@^2"]);
    assert!(text.contains("\"outcome\":\"applied\""), "{text}");

    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let o = check(&job.file("out"), rows, "upgraded package", true);
    assert!(o.clean() && o.rows == rows, "{o:?}");
}
