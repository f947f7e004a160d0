//! A package: its manifest, component bytes and signatures, built from a [`PackageSource`] or
//! read from (and written to) a package directory, whose contents it verifies on read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::{canonical_json, content_digest};
use crate::fsio::{self, ReadError};
use crate::manifest::{ComponentRef, Manifest, PackageSource};
use crate::sign::{Signature, SigningKey};

/// The most bytes of a component. Stops a package (from a registry, a copied directory) from
/// making a host read an arbitrarily large file into memory; operators are a few MiB.
pub const COMPONENT_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// The most bytes of `manifest.json` (and of `package.toml`). A manifest is parsed, and its
/// config schema compiled, at every plan: this bounds the memory and time a hostile manifest
/// (a huge or deeply nested schema) can take. Real manifests are a few KiB.
pub const MANIFEST_BYTES_MAX: u64 = 1024 * 1024;

/// The most bytes of one signature file (a real one is about 400). Stops a large file in
/// `signatures/` from being read into memory.
pub const SIGNATURE_BYTES_MAX: u64 = 16 * 1024;

/// The most signature files a package directory may hold. Each one is read and may be checked
/// against the trust policy; this bounds that work for a directory filled by someone else.
pub const SIGNATURES_MAX: usize = 64;

/// The file names inside a package directory.
pub const MANIFEST_FILE: &str = "manifest.json";
pub const COMPONENT_FILE: &str = "component.wasm";
pub const SIGNATURES_DIR: &str = "signatures";

/// A package that cannot be built, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is {size} bytes; a {what} may be at most {max} bytes", path.display())]
    TooLarge { path: PathBuf, what: &'static str, size: u64, max: u64 },
    #[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Toml { origin: String, line: Option<usize>, message: String },
    #[error("{origin}: `{key}`: {message}")]
    Invalid { origin: String, key: &'static str, message: String },
    #[error("{}: not a package manifest: {message}", path.display())]
    ManifestJson { path: PathBuf, message: String },
    #[error(
        "{} is not in canonical form (sorted keys, no whitespace); it was not written by a package \
         build, or was edited afterwards",
        path.display()
    )]
    NotCanonical { path: PathBuf },
    #[error(
        "the manifest of `{package}` would be {size} bytes; the most is {MANIFEST_BYTES_MAX} (shorten the \
         description or the config schema)"
    )]
    ManifestTooLarge { package: String, size: u64 },
    #[error("the component is {size} bytes; a component may be at most {COMPONENT_BYTES_MAX} bytes")]
    ComponentTooLarge { size: u64 },
    #[error(
        "{}: the component does not match the manifest of `{package}` (manifest: {expected}; file: {actual}); \
         the package was altered or damaged, fetch it again",
        path.display()
    )]
    ComponentMismatch { path: PathBuf, package: String, expected: String, actual: String },
    #[error("{}: not a signature record: {message}", path.display())]
    SignatureFile { path: PathBuf, message: String },
    #[error("{} holds more than {SIGNATURES_MAX} signature files", path.display())]
    TooManySignatures { path: PathBuf },
}

/// A built package: a checked manifest, its canonical JSON and digest, the component bytes and
/// the signatures (sorted by key id, at most one per key).
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    manifest: Manifest,
    manifest_json: String,
    digest: String,
    component: Vec<u8>,
    signatures: Vec<Signature>,
}

impl Package {
    /// Builds a package from its source, the WIT package the component targets (found by the
    /// caller, who inspected the component) and the component's bytes. Checks every field,
    /// the config schema included.
    pub fn build(source: PackageSource, wit: String, component_bytes: &[u8]) -> Result<Package, PackageError> {
        let size = component_bytes.len() as u64;
        if size > COMPONENT_BYTES_MAX {
            return Err(PackageError::ComponentTooLarge { size });
        }
        let manifest = Manifest {
            name: source.name,
            version: source.version,
            description: source.description,
            license: source.license,
            capabilities: source.capabilities,
            state_schema: source.state_schema,
            migrates_from: source.migrates_from,
            resources: source.resources,
            config_schema: source.config_schema,
            wit,
            component: ComponentRef { digest: content_digest(component_bytes), size },
        };
        let origin = format!("package `{}`", manifest.id());
        manifest.check().map_err(|(key, message)| PackageError::Invalid { origin: origin.clone(), key, message })?;
        let manifest_json = manifest_to_canonical_json(&manifest);
        if manifest_json.len() as u64 > MANIFEST_BYTES_MAX {
            return Err(PackageError::ManifestTooLarge { package: manifest.id(), size: manifest_json.len() as u64 });
        }
        // Keep the manifest as a reader will see it (a `1.0` in the schema reads back as `1`),
        // and refuse one a reader would not see as written.
        let unstable = || PackageError::Invalid {
            origin: origin.clone(),
            key: "config_schema",
            message: "a number in it does not read back as written; write it with fewer significant digits".to_owned(),
        };
        let manifest: Manifest = serde_json::from_str(&manifest_json).map_err(|_| unstable())?;
        if manifest_to_canonical_json(&manifest) != manifest_json {
            return Err(unstable());
        }
        let digest = content_digest(manifest_json.as_bytes());
        Ok(Package { manifest, manifest_json, digest, component: component_bytes.to_vec(), signatures: Vec::new() })
    }

    /// Reads a package directory and verifies it: the manifest is canonical JSON and passes
    /// every check; the component matches the manifest's digest and size; each signature file
    /// parses and is named after its key id. Signatures are not checked against any key here:
    /// that is [`crate::TrustPolicy::check`]'s work.
    pub fn read_dir(dir: &Path) -> Result<Package, PackageError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let (manifest, manifest_json) = read_manifest(&manifest_path)?;
        let digest = content_digest(manifest_json.as_bytes());

        let component_path = dir.join(COMPONENT_FILE);
        let mismatch = |expected: String, actual: String| PackageError::ComponentMismatch {
            path: component_path.clone(),
            package: manifest.id(),
            expected,
            actual,
        };
        let size = fs::metadata(&component_path)
            .map_err(|source| PackageError::Read { path: component_path.clone(), source })?
            .len();
        if size != manifest.component.size {
            return Err(mismatch(format!("{} bytes", manifest.component.size), format!("{size} bytes")));
        }
        // The manifest's size passed its check against the limit, so this read is bounded.
        let component = fsio::read_limited(&component_path, manifest.component.size).map_err(|e| match e {
            ReadError::Io(source) => PackageError::Read { path: component_path.clone(), source },
            ReadError::TooLarge { size } => {
                mismatch(format!("{} bytes", manifest.component.size), format!("{size} bytes"))
            }
        })?;
        let actual = content_digest(&component);
        if actual != manifest.component.digest {
            return Err(mismatch(manifest.component.digest.clone(), actual));
        }

        let signatures = read_signatures(&dir.join(SIGNATURES_DIR))?;
        Ok(Package { manifest, manifest_json, digest, component, signatures })
    }

    /// Writes the package into `dir` (created if missing): `manifest.json`, `component.wasm` and
    /// one `signatures/<key-id>.json` per signature. Signature files of keys this package no
    /// longer holds are removed, so the directory holds exactly this package. Each file is
    /// replaced atomically.
    pub fn write_dir(&self, dir: &Path) -> Result<(), PackageError> {
        let write = |path: PathBuf, bytes: &[u8]| {
            fsio::write_atomic(&path, bytes).map_err(|source| PackageError::Write { path, source })
        };
        let signatures_dir = dir.join(SIGNATURES_DIR);
        fs::create_dir_all(&signatures_dir)
            .map_err(|source| PackageError::Write { path: signatures_dir.clone(), source })?;
        write(dir.join(COMPONENT_FILE), &self.component)?;
        write(dir.join(MANIFEST_FILE), self.manifest_json.as_bytes())?;
        for signature in &self.signatures {
            write(signatures_dir.join(format!("{}.json", signature.key_id)), &signature_file_bytes(signature))?;
        }
        let entries = fs::read_dir(&signatures_dir)
            .map_err(|source| PackageError::Read { path: signatures_dir.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| PackageError::Read { path: signatures_dir.clone(), source })?;
            let file_name = entry.file_name();
            let Some(key_id) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if !self.signatures.iter().any(|s| s.key_id == key_id) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|source| PackageError::Write { path, source })?;
            }
        }
        Ok(())
    }

    /// Adds this key's signature, replacing one the same key made before.
    pub fn sign(&mut self, key: &SigningKey) -> &Signature {
        let signature = Signature::new(key, &self.digest, &self.manifest.name, &self.manifest.version);
        self.add_signature(signature)
    }

    /// Adds a signature record (made elsewhere), replacing one with the same key id. It is not
    /// checked here; [`crate::TrustPolicy::check`] checks every signature a package holds.
    pub fn add_signature(&mut self, signature: Signature) -> &Signature {
        self.signatures.retain(|s| s.key_id != signature.key_id);
        let at = self.signatures.partition_point(|s| s.key_id < signature.key_id);
        self.signatures.insert(at, signature);
        &self.signatures[at]
    }

    /// `sha256:<64 hex>` of `manifest.json`: the package's identity.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact bytes of `manifest.json`.
    pub fn manifest_json(&self) -> &str {
        &self.manifest_json
    }

    pub fn component_bytes(&self) -> &[u8] {
        &self.component
    }

    /// The signatures, sorted by key id.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// `name@version`.
    pub fn id(&self) -> String {
        self.manifest.id()
    }
}

/// The canonical JSON of a manifest (see [`crate::digest`]).
pub fn manifest_to_canonical_json(manifest: &Manifest) -> String {
    // A Manifest holds only strings, integers, lists and JSON values: it always serializes.
    let value = serde_json::to_value(manifest).unwrap_or(serde_json::Value::Null);
    canonical_json(&value)
}

/// Reads and checks `manifest.json` alone (not the component): the manifest and its exact text.
pub(crate) fn read_manifest(path: &Path) -> Result<(Manifest, String), PackageError> {
    let text = fsio::read_text_limited(path, MANIFEST_BYTES_MAX).map_err(|e| match e {
        ReadError::Io(source) => PackageError::Read { path: path.to_path_buf(), source },
        ReadError::TooLarge { size } => {
            PackageError::TooLarge { path: path.to_path_buf(), what: "manifest", size, max: MANIFEST_BYTES_MAX }
        }
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| PackageError::ManifestJson { path: path.to_path_buf(), message: e.to_string() })?;
    manifest.check().map_err(|(key, message)| PackageError::Invalid {
        origin: path.display().to_string(),
        key,
        message,
    })?;
    if manifest_to_canonical_json(&manifest) != text {
        return Err(PackageError::NotCanonical { path: path.to_path_buf() });
    }
    if manifest.component.size > COMPONENT_BYTES_MAX {
        return Err(PackageError::ComponentTooLarge { size: manifest.component.size });
    }
    Ok((manifest, text))
}

/// A signature record as its file holds it: pretty JSON and a final newline.
pub(crate) fn signature_file_bytes(signature: &Signature) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(signature).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Reads `signatures/*.json` (a missing directory is no signatures). Names starting with `.`
/// (temporary files of an interrupted write) and names not ending in `.json` are skipped.
pub(crate) fn read_signatures(dir: &Path) -> Result<Vec<Signature>, PackageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PackageError::Read { path: dir.to_path_buf(), source }),
    };
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PackageError::Read { path: dir.to_path_buf(), source })?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".json") else { continue };
        if name.starts_with('.') {
            continue;
        }
        if files.len() == SIGNATURES_MAX {
            return Err(PackageError::TooManySignatures { path: dir.to_path_buf() });
        }
        files.push((entry.path(), stem.to_owned()));
    }
    let mut signatures = Vec::with_capacity(files.len());
    for (path, stem) in files {
        let signature = read_signature_file(&path)?;
        if signature.key_id != stem {
            return Err(PackageError::SignatureFile {
                path,
                message: format!("it holds a signature by key {}; the file must be named {0}.json", signature.key_id),
            });
        }
        signatures.push(signature);
    }
    signatures.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    Ok(signatures)
}

fn read_signature_file(path: &Path) -> Result<Signature, PackageError> {
    let bytes = fsio::read_limited(path, SIGNATURE_BYTES_MAX).map_err(|e| match e {
        ReadError::Io(source) => PackageError::Read { path: path.to_path_buf(), source },
        ReadError::TooLarge { size } => {
            PackageError::TooLarge { path: path.to_path_buf(), what: "signature file", size, max: SIGNATURE_BYTES_MAX }
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| PackageError::SignatureFile { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use semver::Version;

    pub(crate) fn source(name: &str, version: &str) -> PackageSource {
        PackageSource::from_toml_str(
            &format!(
                "name = \"{name}\"\nversion = \"{version}\"\ndescription = \"The {name} operator\"\n\
                 capabilities = [\"log\", \"state\"]\n[config_schema]\ntype = \"object\"\n"
            ),
            "package.toml",
        )
        .unwrap()
    }

    pub(crate) fn build(name: &str, version: &str, component: &[u8]) -> Package {
        Package::build(source(name, version), "flumen:dataflow@0.2.0".to_owned(), component).unwrap()
    }

    #[test]
    fn build_fills_in_the_component_and_digest() {
        let pkg = build("upper", "1.2.0", b"\0asm component");
        let m = pkg.manifest();
        assert_eq!(m.component.digest, content_digest(b"\0asm component"));
        assert_eq!(m.component.size, 14);
        assert_eq!(m.wit, "flumen:dataflow@0.2.0");
        assert_eq!(pkg.digest(), content_digest(pkg.manifest_json().as_bytes()));
        assert_eq!(pkg.component_bytes(), b"\0asm component");
        assert!(pkg.signatures().is_empty());
    }

    #[test]
    fn manifest_json_has_sorted_keys_and_omits_unset_fields() {
        let pkg = build("upper", "1.2.0", b"c");
        let json = pkg.manifest_json();
        assert!(json.starts_with(r#"{"capabilities":["log","state"],"component":{"digest":"sha256:"#), "{json}");
        assert!(json.contains(r#""version":"1.2.0","wit":"flumen:dataflow@0.2.0"}"#), "{json}");
        assert!(!json.contains("license") && !json.contains("resources"), "{json}");
        assert!(!json.contains(": ") && !json.contains(", ") && !json.contains('\n'), "{json}");
    }

    #[test]
    fn digest_is_stable_and_changes_with_every_field() {
        let base = build("upper", "1.2.0", b"component");
        assert_eq!(base.digest(), build("upper", "1.2.0", b"component").digest());

        let wit = |m: &mut Manifest| m.wit = "flumen:dataflow@0.1.0".to_owned();
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let edits: Vec<(&str, Edit)> = vec![
            ("name", Box::new(|m| m.name = "lower".to_owned())),
            ("version", Box::new(|m| m.version = Version::new(1, 2, 1))),
            ("description", Box::new(|m| m.description.push('!'))),
            ("license", Box::new(|m| m.license = Some("MIT".to_owned()))),
            ("capabilities", Box::new(|m| m.capabilities.push(crate::Capability::Blobs))),
            ("state_schema", Box::new(|m| m.state_schema = 2)),
            ("migrates_from", Box::new(|m| (m.state_schema, m.migrates_from) = (2, vec![1]))),
            ("resources", Box::new(|m| m.resources.gpu = Some(1))),
            ("config_schema", Box::new(|m| m.config_schema = None)),
            ("wit", Box::new(wit)),
            ("component.digest", Box::new(|m| m.component.digest = content_digest(b"other"))),
            ("component.size", Box::new(|m| m.component.size += 1)),
        ];
        for (field, edit) in edits {
            let mut m = base.manifest().clone();
            edit(&mut m);
            let digest = content_digest(manifest_to_canonical_json(&m).as_bytes());
            assert_ne!(digest, base.digest(), "changing {field} must change the digest");
        }
    }

    #[test]
    fn fractional_numbers_in_the_schema_survive_write_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let text = "name = \"score\"\nversion = \"0.1.0\"\ndescription = \"x\"\n[config_schema]\ntype = \"object\"\n\
                    [config_schema.properties.p]\ntype = \"number\"\nminimum = 0.0\nmaximum = 1.0\nmultipleOf = 0.01\n\
                    [config_schema.properties.tiny]\nexclusiveMinimum = 1.5e-7\n";
        let source = PackageSource::from_toml_str(text, "package.toml").unwrap();
        let pkg = Package::build(source, "flumen:dataflow@0.2.0".to_owned(), b"c").unwrap();
        assert!(
            pkg.manifest_json().contains(r#""maximum":1,"minimum":0,"multipleOf":0.01,"#),
            "{}",
            pkg.manifest_json()
        );
        assert!(pkg.manifest_json().contains(r#""exclusiveMinimum":0.00000015"#), "{}", pkg.manifest_json());
        pkg.write_dir(dir.path()).unwrap();
        assert_eq!(Package::read_dir(dir.path()).unwrap(), pkg);
        pkg.manifest().check_config(&serde_json::json!({"p": 0.25})).unwrap();
        assert!(pkg.manifest().check_config(&serde_json::json!({"p": 1.5})).is_err());
    }

    #[test]
    fn write_then_read_gives_the_same_package() {
        let dir = tempfile::tempdir().unwrap();
        let mut pkg = build("upper", "1.2.0", b"component bytes");
        let key = SigningKey::generate().unwrap();
        pkg.sign(&key);
        pkg.write_dir(dir.path()).unwrap();
        let read = Package::read_dir(dir.path()).unwrap();
        assert_eq!(read, pkg);
        assert!(dir.path().join(SIGNATURES_DIR).join(format!("{}.json", key.key_id())).is_file());
    }

    #[test]
    fn sign_replaces_the_same_keys_signature_and_write_dir_drops_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut pkg = build("upper", "1.2.0", b"c");
        let (a, b) = (SigningKey::generate().unwrap(), SigningKey::generate().unwrap());
        pkg.sign(&a);
        pkg.sign(&b);
        pkg.sign(&a);
        assert_eq!(pkg.signatures().len(), 2);
        assert!(pkg.signatures().is_sorted_by(|x, y| x.key_id < y.key_id));
        pkg.write_dir(dir.path()).unwrap();

        let unsigned = build("upper", "1.2.0", b"c");
        unsigned.write_dir(dir.path()).unwrap();
        assert!(Package::read_dir(dir.path()).unwrap().signatures().is_empty());
    }

    #[test]
    fn tampered_component_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        build("upper", "1.2.0", b"component bytes").write_dir(dir.path()).unwrap();
        let path = dir.path().join(COMPONENT_FILE);

        std::fs::write(&path, b"component bytez").unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PackageError::ComponentMismatch { .. }), "{err}");
        assert!(err.to_string().contains("upper@1.2.0") && err.to_string().contains("altered"), "{err}");

        std::fs::write(&path, b"longer component bytes").unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("15 bytes") && err.to_string().contains("22 bytes"), "{err}");

        std::fs::remove_file(&path).unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PackageError::Read { .. }) && err.to_string().contains(COMPONENT_FILE), "{err}");
    }

    #[test]
    fn non_canonical_or_invalid_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = build("upper", "1.2.0", b"c");
        pkg.write_dir(dir.path()).unwrap();
        let path = dir.path().join(MANIFEST_FILE);

        let pretty = serde_json::to_string_pretty(pkg.manifest()).unwrap();
        std::fs::write(&path, pretty).unwrap();
        assert!(matches!(Package::read_dir(dir.path()), Err(PackageError::NotCanonical { .. })));

        std::fs::write(&path, pkg.manifest_json().replace("\"name\":\"upper\"", "\"name\":\"Upper\"")).unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PackageError::Invalid { key: "name", .. }), "{err}");

        std::fs::write(&path, pkg.manifest_json().replace("{\"capabilities\"", "{\"extra\":1,\"capabilities\""))
            .unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PackageError::ManifestJson { .. }) && err.to_string().contains("extra"), "{err}");

        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert!(matches!(Package::read_dir(dir.path()), Err(PackageError::Read { .. })));
    }

    #[test]
    fn oversized_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        build("upper", "1.2.0", b"c").write_dir(dir.path()).unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        std::fs::File::create(&path).unwrap().set_len(MANIFEST_BYTES_MAX + 1).unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PackageError::TooLarge { what: "manifest", .. }), "{err}");

        // A manifest claiming a component above the limit is refused without reading it.
        let mut m = build("upper", "1.2.0", b"c").manifest().clone();
        m.component.size = COMPONENT_BYTES_MAX + 1;
        std::fs::write(&path, manifest_to_canonical_json(&m)).unwrap();
        assert!(matches!(Package::read_dir(dir.path()), Err(PackageError::ComponentTooLarge { .. })));
    }

    #[test]
    fn build_refuses_a_component_above_the_limit() {
        let big = vec![0u8; (COMPONENT_BYTES_MAX + 1) as usize];
        let err = Package::build(source("upper", "1.0.0"), "flumen:dataflow@0.2.0".to_owned(), &big).unwrap_err();
        assert!(matches!(err, PackageError::ComponentTooLarge { .. }), "{err}");
    }

    #[test]
    fn build_refuses_a_manifest_above_the_limit() {
        let mut s = source("upper", "1.0.0");
        s.description = "x".repeat(MANIFEST_BYTES_MAX as usize);
        let err = Package::build(s, "flumen:dataflow@0.2.0".to_owned(), b"c").unwrap_err();
        assert!(matches!(err, PackageError::ManifestTooLarge { .. }), "{err}");
    }

    #[test]
    fn oversized_signature_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        build("upper", "1.2.0", b"c").write_dir(dir.path()).unwrap();
        let path = dir.path().join(SIGNATURES_DIR).join("0123456789abcdef.json");
        std::fs::File::create(&path).unwrap().set_len(SIGNATURE_BYTES_MAX + 1).unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PackageError::TooLarge { what: "signature file", .. }), "{err}");
    }

    #[test]
    fn build_refuses_a_bad_schema_or_wit() {
        let mut s = source("upper", "1.0.0");
        s.config_schema = Some(serde_json::json!({"type": 5}));
        let err = Package::build(s, "flumen:dataflow@0.2.0".to_owned(), b"c").unwrap_err();
        assert!(matches!(err, PackageError::Invalid { key: "config_schema", .. }), "{err}");
        assert!(err.to_string().contains("package `upper@1.0.0`"), "{err}");
        let err = Package::build(source("upper", "1.0.0"), String::new(), b"c").unwrap_err();
        assert!(matches!(err, PackageError::Invalid { key: "wit", .. }), "{err}");
        let long = format!("flumen:dataflow@0.2.0-{}", "x".repeat(crate::manifest::WIT_BYTES_MAX));
        let err = Package::build(source("upper", "1.0.0"), long, b"c").unwrap_err();
        assert!(matches!(err, PackageError::Invalid { key: "wit", .. }), "{err}");
    }

    #[test]
    fn bad_signature_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut pkg = build("upper", "1.2.0", b"c");
        let key = SigningKey::generate().unwrap();
        pkg.sign(&key);
        pkg.write_dir(dir.path()).unwrap();
        let sigs = dir.path().join(SIGNATURES_DIR);
        let file = sigs.join(format!("{}.json", key.key_id()));
        std::fs::rename(&file, sigs.join("0000000000000000.json")).unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains(&format!("must be named {}.json", key.key_id())), "{err}");

        std::fs::write(sigs.join("0000000000000000.json"), b"{\"algorithm\":").unwrap();
        let err = Package::read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PackageError::SignatureFile { .. }) && err.to_string().contains("0000000000000000.json"));

        // Leftover temporary files and other names are ignored.
        std::fs::remove_file(sigs.join("0000000000000000.json")).unwrap();
        std::fs::write(sigs.join(".x.json.tmp-1"), b"junk").unwrap();
        std::fs::write(sigs.join("README"), b"junk").unwrap();
        assert!(Package::read_dir(dir.path()).unwrap().signatures().is_empty());

        for i in 0..=SIGNATURES_MAX {
            std::fs::write(sigs.join(format!("{i:016}.json")), b"{}").unwrap();
        }
        assert!(matches!(Package::read_dir(dir.path()), Err(PackageError::TooManySignatures { .. })));
    }
}
