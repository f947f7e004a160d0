//! Operator packages between this machine and registries: the local store, the trust policy,
//! where packages come from ([`Source`]), and pulling, pushing and listing through a directory
//! registry or an OCI registry.
//!
//! # The local store
//!
//! A [`DirRegistry`] at [`store_dir`]. Every package a job runs was first put here by a pull
//! (or a publish to it), which checked it against the trust policy.
//!
//! # A package in an OCI registry
//!
//! `name@version` lives at `<registry>/<namespace>/<name>:<tag>`, the tag being the version
//! with `+` (not allowed in OCI tags) written as `_`. The artifact is the CNCF Wasm layout
//! [`flumen_registry`] speaks: the config is [`flumen_registry::wasm_config`] for the component
//! (its target world is the manifest's `wit`, its imports and exports what inspecting the
//! component finds), the single layer is the component's bytes, and the manifest carries these
//! annotations:
//!
//! - `dev.flumen.package.manifest`: the package's `manifest.json`, byte for byte;
//! - `dev.flumen.package.signatures`: a JSON array of its signature records;
//! - `org.opencontainers.image.title` (the name), `.version`, `.description` and `.licenses`
//!   (when the manifest has a license), for generic tools.
//!
//! A pull rebuilds the package directory from these (in a temporary directory inside the
//! store), reads it back with [`Package::read_dir`] (which checks the component's digest and
//! that the manifest is canonical), checks that it is the package asked for and that the trust
//! policy accepts it, and only then publishes it into the store. An artifact without the
//! manifest annotation is not a Flumen package and is refused.
//!
//! A push refuses to replace a version that holds another package (versions are immutable,
//! as in a directory registry); pushing the same package again adds the signatures it brings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use flumen_package::{DirRegistry, Package, Signature, TrustPolicy};
use flumen_registry::{Artifact, OciOptions, OciRegistry};
use semver::Version;

/// The annotation holding a package's `manifest.json`.
pub(crate) const MANIFEST_ANNOTATION: &str = "dev.flumen.package.manifest";

/// The annotation holding a package's signature records, as a JSON array.
pub(crate) const SIGNATURES_ANNOTATION: &str = "dev.flumen.package.signatures";

/// The most signature records a pulled artifact may carry (what a package directory may hold).
/// Stops an artifact from making a pull write an unbounded number of files.
const SIGNATURES_MAX: usize = 64;

/// The local store: `$FLUMEN_REGISTRY`, else `$XDG_DATA_HOME/flumen/registry`, else
/// `$HOME/.local/share/flumen/registry` (with no home at all, `.flumen/registry` here).
pub(crate) fn store_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("FLUMEN_REGISTRY") {
        return dir;
    }
    if let Some(data) = var("XDG_DATA_HOME") {
        return data.join("flumen/registry");
    }
    match var("HOME") {
        Some(home) => home.join(".local/share/flumen/registry"),
        None => PathBuf::from(".flumen/registry"),
    }
}

/// The local store, opened (created when missing).
pub(crate) fn store() -> anyhow::Result<DirRegistry> {
    let dir = store_dir();
    DirRegistry::open(&dir).with_context(|| format!("opening the local package store {}", dir.display()))
}

/// The trust policy: the file `trust` (`--trust`), else `$FLUMEN_TRUST`, else
/// `$XDG_CONFIG_HOME/flumen/trust.toml` or `$HOME/.config/flumen/trust.toml` when it exists,
/// else the fail-closed default (no keys, no unsigned packages). `allow_unsigned` (or
/// `FLUMEN_ALLOW_UNSIGNED=1`) accepts packages no trusted key vouches for, with a warning;
/// altered packages and bad signatures are refused all the same.
pub(crate) fn trust_policy(trust: Option<&Path>, allow_unsigned: bool) -> anyhow::Result<TrustPolicy> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let file = match trust {
        Some(path) => Some(path.to_path_buf()),
        None => var("FLUMEN_TRUST").or_else(|| {
            let config = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?;
            Some(config.join("flumen/trust.toml")).filter(|p| p.is_file())
        }),
    };
    let policy = match &file {
        Some(path) => TrustPolicy::from_file(path)?,
        None => TrustPolicy::default(),
    };
    let allow_unsigned = allow_unsigned || std::env::var("FLUMEN_ALLOW_UNSIGNED").as_deref() == Ok("1");
    if !allow_unsigned {
        return Ok(policy);
    }
    eprintln!(
        "warning: --allow-unsigned (or FLUMEN_ALLOW_UNSIGNED=1): accepting packages that no trusted key \
         signed; for development only (altered packages are still refused)"
    );
    Ok(policy.allow_unsigned(true))
}

/// Where packages are pulled from and pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A directory registry.
    Dir(PathBuf),
    /// An OCI registry: `registry` is `host[:port]`, `namespace` the repository path under
    /// which each package name is a repository (may be empty).
    Oci { registry: String, namespace: String },
}

impl Default for Source {
    /// The local store.
    fn default() -> Self {
        Source::Dir(absolute(&store_dir()))
    }
}

impl Source {
    /// `oci://host[:port]/namespace`, `dir:<path>` or a directory path. What [`fmt::Display`]
    /// writes reads back as the same source.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Source> {
        if let Some(rest) = text.strip_prefix("oci://") {
            let (registry, namespace) = rest.split_once('/').unwrap_or((rest, ""));
            let namespace = namespace.trim_end_matches('/');
            check_registry_host(registry).with_context(|| format!("`{text}` is not an OCI registry"))?;
            check_namespace(namespace).with_context(|| format!("`{text}` is not an OCI registry"))?;
            return Ok(Source::Oci { registry: registry.to_owned(), namespace: namespace.to_owned() });
        }
        if let Some((scheme, _)) = text.split_once("://") {
            bail!("`{text}`: unknown registry scheme `{scheme}://`; write oci://host[:port]/namespace or a directory");
        }
        let path = text.strip_prefix("dir:").unwrap_or(text);
        if path.is_empty() {
            bail!("`{text}` names no directory");
        }
        Ok(Source::Dir(absolute(Path::new(path))))
    }

    /// Whether this is the local store.
    fn is_store(&self) -> bool {
        let Source::Dir(dir) = self else { return false };
        let store = store_dir();
        match (dir.canonicalize(), store.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => absolute(dir) == absolute(&store),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(dir) => write!(f, "dir:{}", absolute(dir).display()),
            Source::Oci { registry, namespace } if namespace.is_empty() => write!(f, "oci://{registry}"),
            Source::Oci { registry, namespace } => write!(f, "oci://{registry}/{namespace}"),
        }
    }
}

/// Fetches `name@version` from `source`, checks it against `trust`, and publishes it into the
/// local store (unless `source` is the store). A refused package leaves nothing in the store.
pub(crate) async fn pull(
    source: &Source,
    name: &str,
    version: &Version,
    trust: &TrustPolicy,
) -> anyhow::Result<Package> {
    let pkg = fetch(source, name, version).await?;
    trust.check(&pkg).with_context(|| format!("refusing `{name}@{version}` from {source}"))?;
    if !source.is_store() {
        store()?.publish(&pkg).with_context(|| format!("storing `{}` in the local store", pkg.id()))?;
    }
    Ok(pkg)
}

/// Reads `name@version` from `source` and verifies its contents (digests, canonical manifest,
/// that it is the package asked for); does not check trust and stores nothing.
pub(crate) async fn fetch(source: &Source, name: &str, version: &Version) -> anyhow::Result<Package> {
    check_name(name)?;
    match source {
        Source::Dir(dir) => {
            let registry = existing_dir_registry(dir)?;
            registry.get(name, version).with_context(|| format!("reading `{name}@{version}` from {source}"))
        }
        Source::Oci { registry, namespace } => {
            let reference = oci_reference(registry, namespace, name, Some(version));
            let (artifact, digest) = oci_client(registry)
                .pull(&reference)
                .await
                .map_err(oci_error)
                .with_context(|| format!("pulling `{name}@{version}` from {source}"))?;
            let pkg = package_from_artifact(&artifact).with_context(|| format!("{reference} ({digest})"))?;
            let m = pkg.manifest();
            if m.name != name || &m.version != version {
                bail!("{reference} ({digest}) holds `{}`, not `{name}@{version}`; refusing it", m.id());
            }
            Ok(pkg)
        }
    }
}

/// The versions of `name` in `source`, lowest first (none when it holds no such package). In an
/// OCI registry: the tags of its repository that are versions.
pub(crate) async fn versions(source: &Source, name: &str) -> anyhow::Result<Vec<Version>> {
    check_name(name)?;
    match source {
        Source::Dir(dir) => {
            let registry = existing_dir_registry(dir)?;
            registry.versions(name).with_context(|| format!("listing the versions of `{name}` in {source}"))
        }
        Source::Oci { registry, namespace } => {
            let repository = oci_reference(registry, namespace, name, None);
            let tags = match oci_client(registry).tags(&repository).await {
                Ok(tags) => tags,
                Err(flumen_registry::RegistryError::NotFound { .. }) => Vec::new(),
                Err(e) => {
                    return Err(oci_error(e)).with_context(|| format!("listing the versions of `{name}` in {source}"));
                }
            };
            let mut versions: Vec<Version> =
                tags.iter().filter_map(|t| Version::parse(&t.replace('_', "+")).ok()).collect();
            versions.sort();
            Ok(versions)
        }
    }
}

/// Publishes `pkg` to `source` and says where it went: the directory, or the OCI reference
/// pinned by the manifest's digest. Does not check trust (the caller decides).
pub(crate) async fn push(pkg: &Package, source: &Source) -> anyhow::Result<String> {
    let id = pkg.id();
    match source {
        Source::Dir(dir) => {
            let registry = DirRegistry::open(dir).with_context(|| format!("opening the registry {}", dir.display()))?;
            registry.publish(pkg).with_context(|| format!("publishing `{id}` to {source}"))?;
            Ok(dir.join(&pkg.manifest().name).join(pkg.manifest().version.to_string()).display().to_string())
        }
        Source::Oci { registry, namespace } => {
            let m = pkg.manifest();
            let reference = oci_reference(registry, namespace, &m.name, Some(&m.version));
            let client = oci_client(registry);
            let merged = merge_with_published(&client, &reference, pkg).await?;
            let artifact = artifact_of(merged.as_ref().unwrap_or(pkg))?;
            let pushed = client
                .push(&reference, &artifact)
                .await
                .map_err(oci_error)
                .with_context(|| format!("publishing `{id}` to {source}"))?;
            Ok(pushed.reference)
        }
    }
}

/// What inspecting a component found: the `flumen:dataflow` version its operator targets (none
/// when it is not a Flumen operator), and its imports and exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ComponentWorld {
    pub(crate) target: Option<String>,
    pub(crate) imports: Vec<String>,
    pub(crate) exports: Vec<String>,
}

impl ComponentWorld {
    /// Inspects the component at `path` (checking that it is a valid component).
    pub(crate) fn inspect(path: &Path) -> anyhow::Result<ComponentWorld> {
        let text = flumen_engine::inspect_component(path)?;
        Ok(ComponentWorld::parse(&text))
    }

    /// Inspects a component held in memory.
    pub(crate) fn inspect_bytes(bytes: &[u8]) -> anyhow::Result<ComponentWorld> {
        let mut file = tempfile::Builder::new().suffix(".wasm").tempfile().context("a temporary file")?;
        std::io::Write::write_all(&mut file, bytes).context("writing a temporary file")?;
        ComponentWorld::inspect(file.path())
    }

    /// The capabilities (`flumen:dataflow` interfaces besides `types` and `output`) it imports.
    pub(crate) fn capabilities(&self) -> Vec<&str> {
        self.imports
            .iter()
            .filter_map(|i| i.strip_prefix("flumen:dataflow/"))
            .map(|i| i.split('@').next().unwrap_or(i))
            .filter(|i| !matches!(*i, "types" | "output"))
            .collect()
    }

    /// Reads `flumen inspect`'s text: the `targets` line, and the `imports:` and `exports:`
    /// sections (indented lines, up to the first line that is not).
    fn parse(text: &str) -> ComponentWorld {
        let mut world = ComponentWorld::default();
        let mut section: Option<&mut Vec<String>> = None;
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("targets flumen:dataflow@")
                && world.target.is_none()
            {
                world.target = rest.split_whitespace().next().map(str::to_owned);
            }
            section = match line {
                "imports:" => Some(&mut world.imports),
                "exports:" => Some(&mut world.exports),
                _ if line.starts_with("  ") && !line.trim().is_empty() => {
                    if let Some(list) = section.as_mut() {
                        list.push(line.trim().to_owned());
                    }
                    section
                }
                _ => None,
            };
        }
        world
    }
}

/// `name@version` split, for commands that take one.
pub(crate) fn parse_name_version(text: &str) -> anyhow::Result<(String, Option<Version>)> {
    let (name, version) = match text.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (text, None),
    };
    check_name(name).with_context(|| format!("`{text}` is not `name` or `name@version`"))?;
    let version = version
        .map(|v| Version::parse(v).with_context(|| format!("`{text}`: `{v}` is not a version (like 1.2.0)")))
        .transpose()?;
    Ok((name.to_owned(), version))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    flumen_package::manifest::check_name(name).map_err(anyhow::Error::msg)
}

/// The directory registry at `dir`, which must exist (reading never creates one).
fn existing_dir_registry(dir: &Path) -> anyhow::Result<DirRegistry> {
    if !dir.is_dir() {
        bail!("no package registry at {}: it is not a directory", dir.display());
    }
    DirRegistry::open(dir).with_context(|| format!("opening the registry {}", dir.display()))
}

/// `<registry>/<namespace>/<name>`, with `:<tag>` when a version is given.
fn oci_reference(registry: &str, namespace: &str, name: &str, version: Option<&Version>) -> String {
    let mut reference = String::from(registry);
    for part in [namespace, name].into_iter().filter(|p| !p.is_empty()) {
        reference.push('/');
        reference.push_str(part);
    }
    if let Some(version) = version {
        reference.push(':');
        reference.push_str(&oci_tag(version));
    }
    reference
}

/// A version as an OCI tag: tags cannot hold `+`, so build metadata follows a `_`.
fn oci_tag(version: &Version) -> String {
    version.to_string().replace('+', "_")
}

/// A client for `registry`: plain HTTP for loopback addresses and those listed in
/// `$FLUMEN_OCI_INSECURE` (comma-separated `host:port`), HTTPS otherwise; credentials from
/// `$FLUMEN_OCI_USERNAME` and `$FLUMEN_OCI_PASSWORD` when set.
fn oci_client(registry: &str) -> OciRegistry {
    let mut insecure_http: Vec<String> = std::env::var("FLUMEN_OCI_INSECURE")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if is_loopback(registry) {
        insecure_http.push(registry.to_owned());
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    OciRegistry::new(OciOptions {
        insecure_http,
        username: var("FLUMEN_OCI_USERNAME"),
        password: var("FLUMEN_OCI_PASSWORD"),
    })
}

/// A registry error in this tool's terms: its advice names the library's `insecure_http`
/// option, which a user sets here through `$FLUMEN_OCI_INSECURE`.
fn oci_error(error: flumen_registry::RegistryError) -> anyhow::Error {
    anyhow::Error::msg(
        error
            .to_string()
            .replace("list it in `insecure_http`", "list it in FLUMEN_OCI_INSECURE (comma-separated host:port)"),
    )
}

fn is_loopback(registry: &str) -> bool {
    let host = if registry.starts_with('[') {
        registry.split_once(']').map(|(h, _)| format!("{h}]")).unwrap_or_default()
    } else {
        registry.split(':').next().unwrap_or_default().to_owned()
    };
    matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]")
}

/// The OCI artifact of a package (the layout in the module docs).
fn artifact_of(pkg: &Package) -> anyhow::Result<Artifact> {
    let m = pkg.manifest();
    let world = ComponentWorld::inspect_bytes(pkg.component_bytes())
        .with_context(|| format!("inspecting the component of `{}`", pkg.id()))?;
    let config = flumen_registry::wasm_config(
        pkg.component_bytes(),
        Some(&m.wit),
        &world.imports,
        &world.exports,
        SystemTime::now(),
    );
    let signatures = serde_json::to_string(pkg.signatures()).context("writing the signature records")?;
    let mut annotations = BTreeMap::from([
        (MANIFEST_ANNOTATION.to_owned(), pkg.manifest_json().to_owned()),
        (SIGNATURES_ANNOTATION.to_owned(), signatures),
        ("org.opencontainers.image.title".to_owned(), m.name.clone()),
        ("org.opencontainers.image.version".to_owned(), m.version.to_string()),
        ("org.opencontainers.image.description".to_owned(), m.description.clone()),
    ]);
    if let Some(license) = &m.license {
        annotations.insert("org.opencontainers.image.licenses".to_owned(), license.clone());
    }
    Ok(Artifact { config, component: pkg.component_bytes().to_vec(), annotations })
}

/// Rebuilds the package an artifact carries, in a temporary directory inside the local store,
/// and reads it back verified.
fn package_from_artifact(artifact: &Artifact) -> anyhow::Result<Package> {
    let Some(manifest_json) = artifact.annotations.get(MANIFEST_ANNOTATION) else {
        bail!("not a Flumen package (no {MANIFEST_ANNOTATION} annotation)");
    };
    let signatures: Vec<Signature> = match artifact.annotations.get(SIGNATURES_ANNOTATION) {
        None => Vec::new(),
        Some(text) => serde_json::from_str(text)
            .with_context(|| format!("the {SIGNATURES_ANNOTATION} annotation is not a list of signature records"))?,
    };
    if signatures.len() > SIGNATURES_MAX {
        bail!("it carries {} signatures; a package holds at most {SIGNATURES_MAX}", signatures.len());
    }
    let store = store()?;
    let temp = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(store.root())
        .with_context(|| format!("making a temporary directory in {}", store.root().display()))?;
    let dir = temp.path();
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write(dir.join("manifest.json"), manifest_json.as_bytes())?;
    write(dir.join("component.wasm"), &artifact.component)?;
    let signatures_dir = dir.join("signatures");
    std::fs::create_dir_all(&signatures_dir).with_context(|| format!("creating {}", signatures_dir.display()))?;
    for signature in &signatures {
        // The key id names a file: it must be exactly what a key id is, nothing a path could use.
        let id = &signature.key_id;
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            bail!("a signature record names key `{}`, which is not a key id (16 hex digits)", id.escape_debug());
        }
        let mut bytes = serde_json::to_vec_pretty(signature).context("writing a signature record")?;
        bytes.push(b'\n');
        write(signatures_dir.join(format!("{id}.json")), &bytes)?;
    }
    Ok(Package::read_dir(dir)?)
}

/// When `reference` already holds a package: refuses another package (versions are
/// immutable), and for the same package returns it with the signatures both carry.
async fn merge_with_published(client: &OciRegistry, reference: &str, pkg: &Package) -> anyhow::Result<Option<Package>> {
    let artifact = match client.pull(reference).await {
        Ok((artifact, _)) => artifact,
        Err(flumen_registry::RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => {
            return Err(oci_error(e)).with_context(|| format!("checking what {reference} holds before publishing"));
        }
    };
    let Some(existing) = artifact.annotations.get(MANIFEST_ANNOTATION) else {
        bail!("{reference} holds something that is not a Flumen package; refusing to replace it");
    };
    let existing = flumen_package::content_digest(existing.as_bytes());
    if existing != pkg.digest() {
        bail!(
            "`{}` is already published at {reference} with digest {existing}; versions are immutable, so publish {} \
             under a new version",
            pkg.id(),
            pkg.digest()
        );
    }
    let present: Vec<Signature> = match artifact.annotations.get(SIGNATURES_ANNOTATION) {
        Some(text) => serde_json::from_str(text).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut merged = pkg.clone();
    for signature in present {
        if !merged.signatures().iter().any(|s| s.key_id == signature.key_id)
            && merged.signatures().len() < SIGNATURES_MAX
        {
            merged.add_signature(signature);
        }
    }
    Ok(Some(merged))
}

fn check_registry_host(host: &str) -> anyhow::Result<()> {
    let ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok {
        bail!("`{}` is not host[:port]", host.escape_debug());
    }
    Ok(())
}

/// An OCI repository path: `/`-separated parts of lowercase letters and digits, joined inside by
/// `.`, `_` or `-`.
fn check_namespace(namespace: &str) -> anyhow::Result<()> {
    if namespace.is_empty() {
        return Ok(());
    }
    for part in namespace.split('/') {
        let ok = part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            bail!(
                "namespace `{}`: each `/`-separated part must be lowercase letters and digits, joined by `.`, `_` or `-`",
                namespace.escape_debug()
            );
        }
    }
    Ok(())
}

/// `path` made absolute against the working directory (left as it is if that is unknown).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_back_what_they_write() {
        for text in ["oci://127.0.0.1:5000/flumen/ops", "oci://registry.example", "dir:/srv/flumen/registry"] {
            let source = Source::parse(text).unwrap();
            assert_eq!(source.to_string(), text);
            assert_eq!(Source::parse(&source.to_string()).unwrap(), source);
        }
        assert_eq!(
            Source::parse("oci://[::1]:5000/a/b/").unwrap(),
            Source::Oci { registry: "[::1]:5000".into(), namespace: "a/b".into() }
        );
        let relative = Source::parse("some/dir").unwrap();
        assert!(matches!(&relative, Source::Dir(p) if p.is_absolute()), "{relative:?}");
        assert!(Source::parse("https://example.com/x").is_err());
        assert!(Source::parse("oci:///ns").is_err());
        assert!(Source::parse("oci://host/Upper").is_err());
    }

    #[test]
    fn references_and_tags() {
        let v = Version::parse("1.2.0+build.5").unwrap();
        assert_eq!(oci_reference("h:1", "a/b", "upper", Some(&v)), "h:1/a/b/upper:1.2.0_build.5");
        assert_eq!(oci_reference("h:1", "", "upper", None), "h:1/upper");
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80"));
        assert!(!is_loopback("registry.example:443"));
    }

    #[test]
    fn inspect_text_is_read() {
        let text = "component x\n  targets flumen:dataflow@0.2.0 (runs here)\nimports:\n  flumen:dataflow/types@0.2.0\n  \
                    flumen:dataflow/state@0.2.0\n  wasi:io/poll@0.2.6\nexports:\n  flumen:dataflow/transform@0.2.0\n\n\
                    world (WIT):\npackage root:component;\n  import foo;\n";
        let world = ComponentWorld::parse(text);
        assert_eq!(world.target.as_deref(), Some("0.2.0"));
        assert_eq!(world.imports.len(), 3);
        assert_eq!(world.exports, ["flumen:dataflow/transform@0.2.0"]);
        assert_eq!(world.capabilities(), ["state"]);
    }
}
