//! The directory registry: packages kept under a root directory by name and version, with an
//! index by package digest. Versions are immutable once published.
//!
//! # Layout
//!
//! ```text
//! <root>/<name>/<version>/        a package directory (manifest.json, component.wasm, signatures/)
//! <root>/by-digest/<64 hex>       a text file: "<name>/<version>"
//! <root>/.tmp-…                   work in progress (a publish not yet renamed into place)
//! ```
//!
//! # Publishing
//!
//! 1. If `<name>/<version>` exists, its digest must equal the new package's: a version is
//!    never replaced by other contents. Signatures the new package adds are written beside the
//!    old ones (each file atomically), and nothing else changes.
//! 2. Otherwise the package is written whole into a fresh `.tmp-…` directory inside the root,
//!    then renamed to `<name>/<version>`. A reader sees no version or a complete one. If a
//!    concurrent publisher won the rename, step 1 decides against its package.
//! 3. Last, `by-digest/<hex>` is written (atomically). A crash before this leaves a version
//!    that `get` finds and `by_digest` does not until it is published again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};

use crate::digest::{digest_hex, digest_problem};
use crate::fsio::{self, ReadError};
use crate::manifest::check_name;
use crate::package::{self, Package, PackageError};

/// The directory of the digest index; not a package name ([`DirRegistry::publish`] refuses it).
pub const BY_DIGEST_DIR: &str = "by-digest";

/// The most bytes of a `by-digest` entry (`<name>/<version>` is under 200). Stops a large file
/// placed in the index from being read into memory.
pub const INDEX_ENTRY_BYTES_MAX: u64 = 1024;

/// A registry kept in a local (or shared) directory.
#[derive(Debug, Clone)]
pub struct DirRegistry {
    root: PathBuf,
}

/// One package as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSummary {
    pub name: String,
    /// The highest version published.
    pub latest: Version,
    /// The description of the latest version.
    pub description: String,
}

/// A registry operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(
        "`{name}@{version}` is already published with digest {existing}; versions are immutable, so \
         publish {new} under a new version"
    )]
    VersionExists { name: String, version: Version, existing: String, new: String },
    #[error("`{name}@{version}` is not in the registry at {}", root.display())]
    NotFound { root: PathBuf, name: String, version: Version },
    #[error("no package with digest {digest} is in the registry at {}", root.display())]
    DigestNotFound { root: PathBuf, digest: String },
    #[error("`{digest}` is not a package digest: {problem}")]
    BadDigest { digest: String, problem: String },
    #[error("`{0}` is not a valid package name: {1}")]
    BadName(String, String),
    #[error("`{BY_DIGEST_DIR}` is reserved by the registry's layout and cannot be a package name")]
    ReservedName,
    #[error("registry entry {} is damaged: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

impl DirRegistry {
    /// Opens the registry at `root`, creating the directory if it is missing.
    pub fn open(root: &Path) -> Result<DirRegistry, RegistryError> {
        fs::create_dir_all(root.join(BY_DIGEST_DIR)).map_err(|source| io_error(root, source))?;
        Ok(DirRegistry { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Publishes a package (see the module docs). Re-publishing the same digest succeeds and
    /// adds the signatures it brings.
    pub fn publish(&self, pkg: &Package) -> Result<(), RegistryError> {
        let manifest = pkg.manifest();
        check_package_name(&manifest.name)?;
        let name_dir = self.root.join(&manifest.name);
        let version_dir = name_dir.join(manifest.version.to_string());

        if !version_dir.exists() {
            let temp = self.root.join(format!(".{}", fsio::unique_suffix()));
            let staged = pkg.write_dir(&temp).map_err(RegistryError::from).and_then(|()| {
                fs::create_dir_all(&name_dir).map_err(|source| io_error(&name_dir, source))?;
                fs::rename(&temp, &version_dir).map_err(|source| io_error(&version_dir, source))
            });
            if staged.is_err() {
                let _ = fs::remove_dir_all(&temp);
                // Lost a race to another publisher: fall through to compare with theirs.
                if !version_dir.exists() {
                    return staged;
                }
            } else {
                fsio::sync_dir(&name_dir);
            }
        }
        self.merge_into_existing(pkg, &version_dir)?;
        self.write_digest_index(pkg)
    }

    /// The package `name@version`, read and verified.
    pub fn get(&self, name: &str, version: &Version) -> Result<Package, RegistryError> {
        check_package_name(name)?;
        let dir = self.root.join(name).join(version.to_string());
        if !dir.join(package::MANIFEST_FILE).exists() {
            return Err(RegistryError::NotFound {
                root: self.root.clone(),
                name: name.to_owned(),
                version: version.clone(),
            });
        }
        let pkg = Package::read_dir(&dir)?;
        let m = pkg.manifest();
        if m.name != name || &m.version != version {
            return Err(RegistryError::Corrupt {
                path: dir,
                message: format!("it holds `{}`, not `{name}@{version}`", m.id()),
            });
        }
        Ok(pkg)
    }

    /// The package whose package digest is `digest` (`sha256:<64 hex>`).
    pub fn by_digest(&self, digest: &str) -> Result<Package, RegistryError> {
        let hex = digest_hex(digest)
            .ok_or_else(|| RegistryError::BadDigest { digest: digest.to_owned(), problem: digest_problem(digest) })?;
        let index = self.root.join(BY_DIGEST_DIR).join(hex);
        let not_found = || RegistryError::DigestNotFound { root: self.root.clone(), digest: digest.to_owned() };
        let text = match fsio::read_text_limited(&index, INDEX_ENTRY_BYTES_MAX) {
            Ok(text) => text,
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            Err(ReadError::Io(source)) => return Err(io_error(&index, source)),
            Err(ReadError::TooLarge { size }) => {
                return Err(RegistryError::Corrupt {
                    path: index,
                    message: format!("{size} bytes; an entry holds at most {INDEX_ENTRY_BYTES_MAX}"),
                });
            }
        };
        let corrupt = |message: String| RegistryError::Corrupt { path: index.clone(), message };
        let (name, version) =
            text.trim_end().split_once('/').ok_or_else(|| corrupt("it must hold `<name>/<version>`".to_owned()))?;
        check_name(name).map_err(&corrupt)?;
        let version = Version::parse(version).map_err(|e| corrupt(format!("`{version}` is not a version: {e}")))?;
        let pkg = self.get(name, &version)?;
        if pkg.digest() != digest {
            return Err(corrupt(format!("it points at `{name}@{version}`, whose digest is {}", pkg.digest())));
        }
        Ok(pkg)
    }

    /// The published versions of `name`, lowest first (none when the name is unknown).
    pub fn versions(&self, name: &str) -> Result<Vec<Version>, RegistryError> {
        check_package_name(name)?;
        let dir = self.root.join(name);
        let mut versions: Vec<Version> = subdirectories(&dir)?
            .into_iter()
            .filter_map(|v| Version::parse(&v).ok())
            .filter(|v| dir.join(v.to_string()).join(package::MANIFEST_FILE).is_file())
            .collect();
        versions.sort();
        Ok(versions)
    }

    /// The highest published version of `name` that satisfies `requirement`.
    pub fn resolve(&self, name: &str, requirement: &VersionReq) -> Result<Option<Version>, RegistryError> {
        Ok(self.versions(name)?.into_iter().rev().find(|v| requirement.matches(v)))
    }

    /// Every package, by name.
    pub fn list(&self) -> Result<Vec<PackageSummary>, RegistryError> {
        let mut summaries = Vec::new();
        for name in subdirectories(&self.root)? {
            if name == BY_DIGEST_DIR || check_name(&name).is_err() {
                continue;
            }
            let Some(latest) = self.versions(&name)?.pop() else { continue };
            let path = self.root.join(&name).join(latest.to_string()).join(package::MANIFEST_FILE);
            let (manifest, _) = package::read_manifest(&path)?;
            summaries.push(PackageSummary { name, latest, description: manifest.description });
        }
        summaries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(summaries)
    }

    /// The packages whose name or latest description holds `substring` (ignoring ASCII case).
    pub fn search(&self, substring: &str) -> Result<Vec<PackageSummary>, RegistryError> {
        let needle = substring.to_ascii_lowercase();
        let mut found = self.list()?;
        found.retain(|s| s.name.contains(&needle) || s.description.to_ascii_lowercase().contains(&needle));
        Ok(found)
    }

    fn merge_into_existing(&self, pkg: &Package, version_dir: &Path) -> Result<(), RegistryError> {
        let manifest = pkg.manifest();
        let (_, existing_json) = package::read_manifest(&version_dir.join(package::MANIFEST_FILE))?;
        let existing = crate::content_digest(existing_json.as_bytes());
        if existing != pkg.digest() {
            return Err(RegistryError::VersionExists {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                existing,
                new: pkg.digest().to_owned(),
            });
        }
        let signatures_dir = version_dir.join(package::SIGNATURES_DIR);
        let present = package::read_signatures(&signatures_dir)?;
        let added: Vec<_> = pkg.signatures().iter().filter(|s| !present.contains(s)).collect();
        if added.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&signatures_dir).map_err(|source| io_error(&signatures_dir, source))?;
        for signature in added {
            let path = signatures_dir.join(format!("{}.json", signature.key_id));
            fsio::write_atomic(&path, &package::signature_file_bytes(signature))
                .map_err(|source| io_error(&path, source))?;
        }
        Ok(())
    }

    fn write_digest_index(&self, pkg: &Package) -> Result<(), RegistryError> {
        let Some(hex) = digest_hex(pkg.digest()) else {
            return Err(RegistryError::BadDigest {
                digest: pkg.digest().to_owned(),
                problem: digest_problem(pkg.digest()),
            });
        };
        let dir = self.root.join(BY_DIGEST_DIR);
        fs::create_dir_all(&dir).map_err(|source| io_error(&dir, source))?;
        let path = dir.join(hex);
        let m = pkg.manifest();
        fsio::write_atomic(&path, format!("{}/{}\n", m.name, m.version).as_bytes())
            .map_err(|source| io_error(&path, source))
    }
}

fn check_package_name(name: &str) -> Result<(), RegistryError> {
    check_name(name).map_err(|m| RegistryError::BadName(name.to_owned(), m))?;
    if name == BY_DIGEST_DIR {
        return Err(RegistryError::ReservedName);
    }
    Ok(())
}

/// The names of the directories in `dir` that are valid UTF-8 (none when `dir` is missing).
fn subdirectories(dir: &Path) -> Result<Vec<String>, RegistryError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io_error(dir, source)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| io_error(dir, source))?;
        let is_dir = entry.file_type().map_err(|source| io_error(&entry.path(), source))?.is_dir();
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn io_error(path: &Path, source: io::Error) -> RegistryError {
    RegistryError::Io { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use crate::package::tests::build;

    fn registry() -> (tempfile::TempDir, DirRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let registry = DirRegistry::open(&dir.path().join("registry")).unwrap();
        (dir, registry)
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn publish_then_get_and_by_digest() {
        let (_dir, registry) = registry();
        let pkg = build("upper", "1.2.0", b"component");
        registry.publish(&pkg).unwrap();
        assert_eq!(registry.get("upper", &v("1.2.0")).unwrap(), pkg);
        assert_eq!(registry.by_digest(pkg.digest()).unwrap(), pkg);
        assert!(registry.root().join("upper/1.2.0/manifest.json").is_file());

        let err = registry.get("upper", &v("9.9.9")).unwrap_err();
        assert!(matches!(err, RegistryError::NotFound { .. }) && err.to_string().contains("upper@9.9.9"), "{err}");
        let missing = crate::content_digest(b"nothing");
        assert!(matches!(registry.by_digest(&missing), Err(RegistryError::DigestNotFound { .. })));
        assert!(matches!(registry.by_digest("sha256:zz"), Err(RegistryError::BadDigest { .. })));
    }

    #[test]
    fn versions_are_immutable() {
        let (_dir, registry) = registry();
        registry.publish(&build("upper", "1.2.0", b"component")).unwrap();
        let err = registry.publish(&build("upper", "1.2.0", b"other component")).unwrap_err();
        assert!(matches!(err, RegistryError::VersionExists { .. }), "{err}");
        assert!(err.to_string().contains("immutable"), "{err}");
        // The original is untouched.
        assert_eq!(registry.get("upper", &v("1.2.0")).unwrap().component_bytes(), b"component");
    }

    #[test]
    fn republishing_the_same_digest_adds_signatures() {
        let (_dir, registry) = registry();
        let (a, b) = (SigningKey::generate().unwrap(), SigningKey::generate().unwrap());
        let mut pkg = build("upper", "1.2.0", b"component");
        pkg.sign(&a);
        registry.publish(&pkg).unwrap();
        registry.publish(&pkg).unwrap();

        let mut other = build("upper", "1.2.0", b"component");
        other.sign(&b);
        registry.publish(&other).unwrap();
        let stored = registry.get("upper", &v("1.2.0")).unwrap();
        let ids: Vec<&str> = stored.signatures().iter().map(|s| s.key_id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&a.key_id().as_str()) && ids.contains(&b.key_id().as_str()));
        // No temporary directories are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(registry.root())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn versions_resolve_list_and_search() {
        let (_dir, registry) = registry();
        for version in ["1.0.0", "1.10.0", "1.2.0", "2.0.0", "2.1.0-rc.1"] {
            registry.publish(&build("upper", version, version.as_bytes())).unwrap();
        }
        registry.publish(&build("filter", "0.3.0", b"f")).unwrap();
        assert_eq!(
            registry.versions("upper").unwrap(),
            vec![v("1.0.0"), v("1.2.0"), v("1.10.0"), v("2.0.0"), v("2.1.0-rc.1")]
        );
        assert!(registry.versions("absent").unwrap().is_empty());

        let req = |r: &str| VersionReq::parse(r).unwrap();
        assert_eq!(registry.resolve("upper", &req("^1")).unwrap(), Some(v("1.10.0")));
        assert_eq!(registry.resolve("upper", &req("^2")).unwrap(), Some(v("2.0.0")));
        assert_eq!(registry.resolve("upper", &req("^3")).unwrap(), None);
        assert_eq!(registry.resolve("absent", &req("*")).unwrap(), None);

        let list = registry.list().unwrap();
        let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["filter", "upper"]);
        assert_eq!(list[1].latest, v("2.1.0-rc.1"));
        assert_eq!(list[1].description, "The upper operator");

        let found = registry.search("UPP").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "upper");
        assert_eq!(registry.search("operator").unwrap().len(), 2);
        assert!(registry.search("nothing like it").unwrap().is_empty());
    }

    #[test]
    fn reserved_and_invalid_names_are_refused() {
        let (_dir, registry) = registry();
        let pkg = build("by-digest", "1.0.0", b"c");
        assert!(matches!(registry.publish(&pkg), Err(RegistryError::ReservedName)));
        assert!(matches!(registry.versions("../etc"), Err(RegistryError::BadName(..))));
        assert!(matches!(registry.get("Upper", &v("1.0.0")), Err(RegistryError::BadName(..))));
    }

    #[test]
    fn a_tampered_registry_entry_is_refused() {
        let (_dir, registry) = registry();
        let pkg = build("upper", "1.2.0", b"component");
        registry.publish(&pkg).unwrap();
        std::fs::write(registry.root().join("upper/1.2.0/component.wasm"), b"c0mponent").unwrap();
        let err = registry.get("upper", &v("1.2.0")).unwrap_err();
        assert!(matches!(err, RegistryError::Package(PackageError::ComponentMismatch { .. })), "{err}");

        // An index entry pointing at another package.
        let other = build("lower", "1.0.0", b"x");
        registry.publish(&other).unwrap();
        let hex = digest_hex(other.digest()).unwrap();
        std::fs::write(registry.root().join(BY_DIGEST_DIR).join(hex), "lower/9.0.0\n").unwrap();
        assert!(matches!(registry.by_digest(other.digest()), Err(RegistryError::NotFound { .. })));
        std::fs::write(registry.root().join(BY_DIGEST_DIR).join(hex), "garbage").unwrap();
        assert!(matches!(registry.by_digest(other.digest()), Err(RegistryError::Corrupt { .. })));
        let index = std::fs::File::create(registry.root().join(BY_DIGEST_DIR).join(hex)).unwrap();
        index.set_len(INDEX_ENTRY_BYTES_MAX + 1).unwrap();
        let err = registry.by_digest(other.digest()).unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt { .. }) && err.to_string().contains("at most"), "{err}");
    }
}
