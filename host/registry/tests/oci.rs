//! Pushes, pulls and lists operator packages against a real OCI registry, and checks that
//! another OCI client (oras-py) reads what Flumen writes and the other way round.
//!
//! The registry is the CNCF distribution server (`docker-registry serve`, Debian's
//! `docker-registry` package), one per test on a free local port. These tests run when
//! `FLUMEN_OCI_TESTS=1`; the interoperability tests also need `FLUMEN_ORAS_PYTHON`, a Python
//! interpreter with the `oras` package (`python3 -m venv V && V/bin/pip install oras`, then
//! `FLUMEN_ORAS_PYTHON=V/bin/python`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use flumen_registry::{
    Artifact, COMPONENT_BYTES_MAX, CONFIG_BYTES_MAX, MANIFEST_BYTES_MAX, OciOptions, OciRegistry, RegistryError,
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, wasm_config,
};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

#[tokio::test]
async fn a_pushed_component_pulls_back_unchanged_by_tag_and_by_digest() {
    let Some(registry) = TestRegistry::start_if_enabled() else {
        return;
    };
    let oci = registry.client();
    let original = artifact(1);
    let reference = registry.reference("flumen/ops/map:1.0.0");

    let pushed = oci.push(&reference, &original).await.expect("push");
    assert!(pushed.digest.starts_with("sha256:"), "{pushed:?}");
    assert_eq!(pushed.reference, format!("{}/flumen/ops/map@{}", registry.addr, pushed.digest));

    let (pulled, digest) = oci.pull(&reference).await.expect("pull by tag");
    assert_eq!(pulled, original);
    assert_eq!(digest, pushed.digest);

    let (by_digest, digest) = oci.pull(&pushed.reference).await.expect("pull by digest");
    assert_eq!(by_digest, original);
    assert_eq!(digest, pushed.digest);

    // The same artifact, pushed again (under another tag too), is the same manifest.
    let again = oci.push(&reference, &original).await.expect("push again");
    assert_eq!(again.digest, pushed.digest);
    let other_tag = registry.reference("flumen/ops/map:stable");
    let other = oci.push(&other_tag, &original).await.expect("push other tag");
    assert_eq!(other.digest, pushed.digest);

    // A different component is a different manifest.
    let changed = oci.push(&registry.reference("flumen/ops/map:1.0.1"), &artifact(2)).await.expect("push changed");
    assert_ne!(changed.digest, pushed.digest);
}

#[tokio::test]
async fn tags_lists_a_repository_sorted_and_a_missing_one_is_not_found() {
    let Some(registry) = TestRegistry::start_if_enabled() else {
        return;
    };
    let oci = registry.client();
    for tag in ["1.1.0", "latest", "1.0.0"] {
        oci.push(&registry.reference(&format!("flumen/filter:{tag}")), &artifact(3)).await.expect("push");
    }
    let tags = oci.tags(&registry.reference("flumen/filter")).await.expect("tags");
    assert_eq!(tags, ["1.0.0", "1.1.0", "latest"]);

    let missing = oci.tags(&registry.reference("flumen/never-pushed")).await.expect_err("no such repository");
    assert!(matches!(missing, RegistryError::NotFound { .. }), "{missing}");
}

#[tokio::test]
async fn pulling_a_missing_tag_or_digest_says_not_found_naming_both() {
    let Some(registry) = TestRegistry::start_if_enabled() else {
        return;
    };
    let oci = registry.client();
    oci.push(&registry.reference("flumen/join:1"), &artifact(4)).await.expect("push");

    let reference = registry.reference("flumen/join:2");
    let error = oci.pull(&reference).await.expect_err("no such tag");
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&registry.addr), "{message}");
    assert!(message.contains(&reference), "{message}");

    let absent_digest = registry.reference(&format!("flumen/join@sha256:{}", "0".repeat(64)));
    let error = oci.pull(&absent_digest).await.expect_err("no such digest");
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error}");

    let error = oci.pull(&registry.reference("flumen/no-such-repository:1")).await.expect_err("no such repository");
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error}");
}

#[tokio::test]
async fn manifests_of_other_layouts_are_refused_with_the_reason() {
    let Some(registry) = TestRegistry::start_if_enabled() else {
        return;
    };
    let oci = registry.client();
    let raw = registry.raw_client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();

    // A container image: OCI image config, one tar+gzip layer.
    let image = registry.reference("flumen/not-wasm:image");
    raw.push(&image, &[ImageLayer::oci_v1_gzip(b"not a tarball".to_vec(), None)], Config::oci_v1(config.clone(), None))
        .await;
    let error = oci.pull(&image).await.expect_err("an image is not Wasm");
    assert!(matches!(error, RegistryError::NotWasm { .. }), "{error}");
    assert!(error.to_string().contains("config media type is application/vnd.oci.image.config.v1+json"), "{error}");

    // The Wasm config, but the layer under another media type.
    let wrong_layer = registry.reference("flumen/not-wasm:layer");
    raw.push(
        &wrong_layer,
        &[ImageLayer::new(component(5), "application/vnd.wasm.content.layer.v1+wasm".to_owned(), None)],
        wasm_config_blob(&component(5)),
    )
    .await;
    let error = oci.pull(&wrong_layer).await.expect_err("a wrong layer type");
    assert!(error.to_string().contains("layer's media type is application/vnd.wasm.content.layer.v1+wasm"), "{error}");

    // Two Wasm layers.
    let two = registry.reference("flumen/not-wasm:two");
    raw.push(&two, &[wasm_layer(component(6)), wasm_layer(component(7))], wasm_config_blob(&component(6))).await;
    let error = oci.pull(&two).await.expect_err("two layers");
    assert!(error.to_string().contains("it has 2 layers"), "{error}");
}

#[tokio::test]
async fn blobs_are_held_to_their_declared_size_and_the_limits() {
    let Some(registry) = TestRegistry::start_if_enabled() else {
        return;
    };
    let oci = registry.client();
    let raw = registry.raw_client();
    let bytes = component(8);
    let config = wasm_config_blob(&bytes);

    // The registry checks that blobs exist, not the sizes a manifest declares for them.
    let lie = |size: i64| {
        let mut manifest = OciImageManifest::build(&[wasm_layer(bytes.clone())], &config, None);
        manifest.layers[0].size = size;
        manifest
    };

    let short = registry.reference("flumen/lies:short");
    raw.push_manifest(&short, &[wasm_layer(bytes.clone())], config.clone(), lie(8)).await;
    let error = oci.pull(&short).await.expect_err("more bytes than declared");
    assert!(matches!(error, RegistryError::SizeMismatch { declared: 8, cut_off: true, .. }), "{error}");

    let long = registry.reference("flumen/lies:long");
    let declared = bytes.len() as i64 + 1;
    raw.push_manifest(&long, &[wasm_layer(bytes.clone())], config.clone(), lie(declared)).await;
    let error = oci.pull(&long).await.expect_err("fewer bytes than declared");
    assert!(matches!(error, RegistryError::SizeMismatch { .. }), "{error}");

    let huge = registry.reference("flumen/lies:huge");
    let over = COMPONENT_BYTES_MAX as i64 + 1;
    raw.push_manifest(&huge, &[wasm_layer(bytes.clone())], config.clone(), lie(over)).await;
    let error = oci.pull(&huge).await.expect_err("over the limit");
    assert!(matches!(error, RegistryError::TooLarge { what: "component", .. }), "{error}");
}

#[tokio::test]
async fn push_refuses_what_pull_would_refuse_before_sending_anything() {
    // No registry listens here: every refusal comes before the network.
    let oci = OciRegistry::new(OciOptions { insecure_http: vec!["127.0.0.1:9".to_owned()], ..OciOptions::default() });
    let reference = "127.0.0.1:9/flumen/big:1";
    let base = artifact(9);

    let too_big_component = Artifact { component: vec![0; COMPONENT_BYTES_MAX as usize + 1], ..base.clone() };
    let error = oci.push(reference, &too_big_component).await.expect_err("");
    assert!(matches!(error, RegistryError::TooLarge { what: "component", .. }), "{error}");

    let mut config = b"{\"pad\":\"".to_vec();
    config.resize(CONFIG_BYTES_MAX as usize, b'x');
    config.extend_from_slice(b"\"}");
    let too_big_config = Artifact { config, ..base.clone() };
    let error = oci.push(reference, &too_big_config).await.expect_err("");
    assert!(matches!(error, RegistryError::TooLarge { what: "config", .. }), "{error}");

    let too_many_annotations =
        Artifact { annotations: BTreeMap::from([("pad".to_owned(), "x".repeat(MANIFEST_BYTES_MAX))]), ..base.clone() };
    let error = oci.push(reference, &too_many_annotations).await.expect_err("");
    assert!(matches!(error, RegistryError::TooLarge { what: "manifest", .. }), "{error}");

    let not_json = Artifact { config: b"created=today".to_vec(), ..base.clone() };
    let error = oci.push(reference, &not_json).await.expect_err("");
    assert!(matches!(error, RegistryError::InvalidConfig { .. }), "{error}");

    let by_digest = format!("127.0.0.1:9/flumen/big@sha256:{}", "0".repeat(64));
    let error = oci.push(&by_digest, &base).await.expect_err("");
    assert!(matches!(error, RegistryError::InvalidReference { .. }), "{error}");
}

#[tokio::test]
async fn an_unreachable_registry_is_named_with_a_hint_about_plain_http() {
    // A port that was free a moment ago: nothing listens there.
    let addr =
        TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").to_string();
    let oci = OciRegistry::new(OciOptions::default());
    let reference = format!("{addr}/flumen/op:1");
    let error = oci.pull(&reference).await.expect_err("nothing listens");
    assert!(matches!(error, RegistryError::Registry { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&reference), "{message}");
    assert!(message.contains(&format!("if {addr} serves plain HTTP, list it in `insecure_http`")), "{message}");
}

#[tokio::test]
async fn oras_pulls_what_flumen_pushed() {
    let Some(registry) = TestRegistry::start_if_enabled() else {
        return;
    };
    let python = oras_python();
    let oci = registry.client();
    let artifact = artifact(10);
    let reference = registry.reference("flumen/interop/flumen-pushed:1");
    oci.push(&reference, &artifact).await.expect("push");

    let out = tempfile::tempdir().expect("tempdir");
    let manifest = run_python(
        &python,
        r#"
import json, sys, oras.client
host, target, outdir = sys.argv[1:4]
client = oras.client.OrasClient(hostname=host, insecure=True)
client.pull(target=target, outdir=outdir)
print(json.dumps(client.get_manifest(target)))
"#,
        &[&registry.addr, &reference, &out.path().display().to_string()],
    )
    .await;
    let manifest: serde_json::Value = serde_json::from_str(manifest.lines().last().unwrap_or_default())
        .unwrap_or_else(|error| panic!("oras printed no manifest ({error}): {manifest}"));
    assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
    assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "map");

    let pulled = std::fs::read(out.path().join("component.wasm")).expect("oras wrote the layer");
    assert_eq!(pulled, artifact.component);
}

#[tokio::test]
async fn flumen_pulls_what_oras_pushed() {
    let Some(registry) = TestRegistry::start_if_enabled() else {
        return;
    };
    let python = oras_python();
    let oci = registry.client();
    let bytes = component(11);
    let config = wasm_config(
        &bytes,
        Some("flumen:operator/map@0.1.0"),
        &[],
        &["flumen:operator/process@0.1.0".to_owned()],
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("component.wasm"), &bytes).expect("write component");
    std::fs::write(work.path().join("config.json"), &config).expect("write config");
    let reference = registry.reference("flumen/interop/oras-pushed:1");

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
    files=["component.wasm:{WASM_LAYER_MEDIA_TYPE}"],
    manifest_config="config.json:{WASM_CONFIG_MEDIA_TYPE}",
    manifest_annotations={{"org.opencontainers.image.version": "0.1.0"}},
)
"#
        ),
        &[&registry.addr, &reference, &work.path().display().to_string()],
    )
    .await;

    let (artifact, digest) = oci.pull(&reference).await.expect("pull what oras pushed");
    assert_eq!(artifact.component, bytes);
    assert_eq!(artifact.config, config);
    assert_eq!(
        artifact.annotations,
        BTreeMap::from([("org.opencontainers.image.version".to_owned(), "0.1.0".to_owned())])
    );
    let pinned = registry.reference(&format!("flumen/interop/oras-pushed@{digest}"));
    let (again, _) = oci.pull(&pinned).await.expect("pull by the digest returned");
    assert_eq!(again, artifact);
}

/// A component-shaped blob (the component preamble, then bytes that differ per `seed`),
/// large enough to take several reads.
fn component(seed: u64) -> Vec<u8> {
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    bytes.extend((0..300_000).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    }));
    bytes
}

fn artifact(seed: u64) -> Artifact {
    let component = component(seed);
    let config = wasm_config(
        &component,
        Some("flumen:operator/map@0.1.0"),
        &["wasi:io/streams@0.2.0".to_owned()],
        &["flumen:operator/process@0.1.0".to_owned()],
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seed),
    );
    Artifact {
        config,
        component,
        annotations: BTreeMap::from([
            ("org.opencontainers.image.title".to_owned(), "map".to_owned()),
            ("org.opencontainers.image.version".to_owned(), format!("1.0.{seed}")),
        ]),
    }
}

fn wasm_layer(bytes: Vec<u8>) -> ImageLayer {
    ImageLayer::new(bytes, WASM_LAYER_MEDIA_TYPE.to_owned(), None)
}

fn wasm_config_blob(component: &[u8]) -> Config {
    Config::new(wasm_config(component, None, &[], &[], UNIX_EPOCH), WASM_CONFIG_MEDIA_TYPE.to_owned(), None)
}

/// The interpreter named by `FLUMEN_ORAS_PYTHON`; the interoperability tests fail without it.
fn oras_python() -> PathBuf {
    match std::env::var_os("FLUMEN_ORAS_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => panic!(
            "FLUMEN_OCI_TESTS=1 runs the oras interoperability tests, which need \
             FLUMEN_ORAS_PYTHON naming a Python interpreter with the `oras` package: \
             `python3 -m venv V && V/bin/pip install oras`, then FLUMEN_ORAS_PYTHON=V/bin/python"
        ),
    }
}

/// Runs a Python snippet with arguments; panics with its output unless it succeeds.
async fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "oras-py failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A `docker-registry serve` child on a free local port, storing into a temporary directory;
/// killed on drop.
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
                "skipped: set FLUMEN_OCI_TESTS=1 (with `docker-registry` installed, \
                 `apt-get install docker-registry`, and FLUMEN_ORAS_PYTHON set) to run the OCI \
                 registry tests"
            );
            return None;
        }
        Some(TestRegistry::start())
    }

    fn start() -> TestRegistry {
        let binary = find_on_path("docker-registry").unwrap_or_else(|| {
            panic!(
                "FLUMEN_OCI_TESTS=1 but `docker-registry` is not on PATH: install it \
                 (`apt-get install docker-registry`) or unset FLUMEN_OCI_TESTS"
            )
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write the registry config");
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).expect("registry log");
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let mut registry = TestRegistry { addr, child, _dir: dir };
        registry.wait_until_ready(&log_path);
        registry
    }

    fn wait_until_ready(&mut self, log_path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if answers_v2(&self.addr) {
                return;
            }
            let log = || std::fs::read_to_string(log_path).unwrap_or_default();
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}) before answering:\n{}", log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer GET /v2/ on {} within 20 s:\n{}",
                self.addr,
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn reference(&self, path: &str) -> String {
        format!("{}/{path}", self.addr)
    }

    fn client(&self) -> OciRegistry {
        OciRegistry::new(OciOptions { insecure_http: vec![self.addr.clone()], ..OciOptions::default() })
    }

    fn raw_client(&self) -> RawClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        RawClient(Client::new(ClientConfig { protocol: ClientProtocol::Http, ..ClientConfig::default() }))
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `oci-client` used directly, to push what Flumen would not.
struct RawClient(Client);

impl RawClient {
    async fn push(&self, reference: &str, layers: &[ImageLayer], config: Config) {
        let manifest = OciImageManifest::build(layers, &config, None);
        self.push_manifest(reference, layers, config, manifest).await;
    }

    async fn push_manifest(&self, reference: &str, layers: &[ImageLayer], config: Config, manifest: OciImageManifest) {
        let image: Reference = reference.parse().expect("a reference");
        self.0
            .push(&image, layers, config, &RegistryAuth::Anonymous, Some(manifest))
            .await
            .unwrap_or_else(|error| panic!("oci-client push of {reference}: {error}"));
    }
}

/// Whether something on `addr` answers `GET /v2/` with 200.
fn answers_v2(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|path| path.is_file())
}
