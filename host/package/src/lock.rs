//! The lockfile (`flumen.lock`, next to a job file): which version and package digest each
//! version requirement a job uses was resolved to, so a run never depends on what a tag means
//! today.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::digest::{digest_problem, is_digest};
use crate::fsio::{self, ReadError};
use crate::manifest::check_name;
use crate::reference::PluginRef;

/// The lockfile format version this crate reads and writes.
pub const LOCKFILE_VERSION: u32 = 1;

/// The most bytes of a lockfile.
pub const LOCKFILE_BYTES_MAX: u64 = 1024 * 1024;

/// The conventional file name, next to the job file.
pub const LOCKFILE_NAME: &str = "flumen.lock";

/// A lockfile: one entry per (name, requirement) a job uses, sorted by both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    pub version: u32,
    #[serde(default, rename = "package", skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<LockedPackage>,
}

/// One resolved requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    /// The requirement as the job wrote it (`^1`, `1.2.0`).
    pub requirement: String,
    pub version: Version,
    /// The package digest (`sha256:<64 hex>`).
    pub digest: String,
    /// Where it was resolved (`dir:…`, `oci://host:port/repo`); free text.
    pub source: String,
}

/// A reference pinned to one package digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedRef {
    pub name: String,
    /// Unknown when the reference was a digest.
    pub version: Option<Version>,
    pub digest: String,
}

/// A lockfile that cannot be read or written, or that does not pin a reference.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lockfile {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write lockfile {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("lockfile {} is {size} bytes; the most is {LOCKFILE_BYTES_MAX}", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Toml { path: PathBuf, line: Option<usize>, message: String },
    #[error("lockfile {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("`{name}@{requirement}` is a tag-only reference without a lock: run `flumen lock <job>`")]
    NotLocked { name: String, requirement: String },
    #[error(
        "the lock for `{name}@{requirement}` names version {version}, which does not satisfy `{requirement}`: \
         run `flumen lock <job>` again"
    )]
    Stale { name: String, requirement: String, version: Version },
    #[error("`{0}` is not a package reference; only `name@…` references are pinned")]
    Bare(String),
}

impl Default for Lockfile {
    fn default() -> Lockfile {
        Lockfile { version: LOCKFILE_VERSION, packages: Vec::new() }
    }
}

impl Lockfile {
    /// Reads and checks a lockfile: the format version, names, digests, and one entry per
    /// (name, requirement).
    pub fn read(path: &Path) -> Result<Lockfile, LockError> {
        let text = fsio::read_text_limited(path, LOCKFILE_BYTES_MAX).map_err(|e| match e {
            ReadError::Io(source) => LockError::Read { path: path.to_path_buf(), source },
            ReadError::TooLarge { size } => LockError::TooLarge { path: path.to_path_buf(), size },
        })?;
        let lock: Lockfile = toml::from_str(&text).map_err(|e| LockError::Toml {
            path: path.to_path_buf(),
            line: fsio::toml_error_line(&text, &e),
            message: e.message().trim_end().to_owned(),
        })?;
        lock.check().map_err(|message| LockError::Invalid { path: path.to_path_buf(), message })?;
        Ok(lock)
    }

    /// Writes the lockfile atomically (a temporary file beside it, then a rename).
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        self.check().map_err(|message| LockError::Invalid { path: path.to_path_buf(), message })?;
        let text = toml::to_string(self)
            .map_err(|e| LockError::Invalid { path: path.to_path_buf(), message: e.to_string() })?;
        let text = format!("# Written by flumen: the package each requirement resolved to. Commit it.\n{text}");
        fsio::write_atomic(path, text.as_bytes())
            .map_err(|source| LockError::Write { path: path.to_path_buf(), source })
    }

    /// The entry for `name` locked under exactly this requirement text.
    pub fn find(&self, name: &str, requirement: &str) -> Option<&LockedPackage> {
        self.packages.iter().find(|p| p.name == name && p.requirement == requirement)
    }

    /// Adds an entry, replacing the one with the same name and requirement; entries stay sorted.
    pub fn upsert(&mut self, entry: LockedPackage) {
        self.packages.retain(|p| !(p.name == entry.name && p.requirement == entry.requirement));
        let key = |p: &LockedPackage| (p.name.clone(), p.requirement.clone());
        let at = self.packages.partition_point(|p| key(p) < key(&entry));
        self.packages.insert(at, entry);
    }

    /// Pins a reference: a digest pins itself; a requirement must have a lock entry whose
    /// version satisfies it.
    pub fn pin(&self, r: &PluginRef) -> Result<PinnedRef, LockError> {
        match r {
            PluginRef::Digest { name, digest } => {
                Ok(PinnedRef { name: name.clone(), version: None, digest: digest.clone() })
            }
            PluginRef::Version { name, requirement, text } => {
                let entry = self
                    .find(name, text)
                    .ok_or_else(|| LockError::NotLocked { name: name.clone(), requirement: text.clone() })?;
                if !requirement.matches(&entry.version) {
                    return Err(LockError::Stale {
                        name: name.clone(),
                        requirement: text.clone(),
                        version: entry.version.clone(),
                    });
                }
                Ok(PinnedRef { name: name.clone(), version: Some(entry.version.clone()), digest: entry.digest.clone() })
            }
            PluginRef::Bare(text) => Err(LockError::Bare(text.clone())),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.version != LOCKFILE_VERSION {
            return Err(format!(
                "format version {} is not one this flumen reads (it reads {LOCKFILE_VERSION})",
                self.version
            ));
        }
        let mut seen = HashSet::new();
        for p in &self.packages {
            let at = format!("package `{}@{}`", p.name, p.requirement);
            check_name(&p.name).map_err(|m| format!("{at}: {m}"))?;
            if !is_digest(&p.digest) {
                return Err(format!("{at}: `digest` `{}` is not a digest: {}", p.digest, digest_problem(&p.digest)));
            }
            if !seen.insert((&p.name, &p.requirement)) {
                return Err(format!("{at} is locked twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, requirement: &str, version: &str) -> LockedPackage {
        LockedPackage {
            name: name.to_owned(),
            requirement: requirement.to_owned(),
            version: Version::parse(version).unwrap(),
            digest: crate::content_digest(format!("{name}{version}").as_bytes()),
            source: "dir:registry".to_owned(),
        }
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCKFILE_NAME);
        let mut lock = Lockfile::default();
        lock.upsert(entry("upper", "^1", "1.2.0"));
        lock.upsert(entry("filter", "=0.3.0", "0.3.0"));
        lock.upsert(entry("upper", "^1", "1.3.0"));
        lock.write(&path).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("version = 1\n") && text.contains("[[package]]"), "{text}");
        let read = Lockfile::read(&path).unwrap();
        assert_eq!(read, lock);
        assert_eq!(read.packages.len(), 2);
        assert_eq!(read.packages[0].name, "filter", "entries are sorted");
        assert_eq!(read.find("upper", "^1").unwrap().version, Version::new(1, 3, 0));
        assert!(read.find("upper", "^2").is_none());
    }

    #[test]
    fn pin_uses_the_lock_and_says_what_to_run() {
        let mut lock = Lockfile::default();
        lock.upsert(entry("upper", "^1", "1.2.0"));
        let pinned = lock.pin(&PluginRef::parse("upper@^1").unwrap()).unwrap();
        assert_eq!(pinned.version, Some(Version::new(1, 2, 0)));
        assert_eq!(pinned.digest, lock.packages[0].digest);

        let err = lock.pin(&PluginRef::parse("upper@^2").unwrap()).unwrap_err();
        assert!(matches!(err, LockError::NotLocked { .. }), "{err}");
        assert_eq!(err.to_string(), "`upper@^2` is a tag-only reference without a lock: run `flumen lock <job>`");

        let err = lock.pin(&PluginRef::parse("upper").unwrap()).unwrap_err();
        assert!(matches!(err, LockError::Bare(_)), "{err}");

        // An entry edited by hand to a version outside its requirement.
        let mut stale = lock.clone();
        stale.packages[0].version = Version::new(2, 0, 0);
        assert!(matches!(stale.pin(&PluginRef::parse("upper@^1").unwrap()), Err(LockError::Stale { .. })));
    }

    #[test]
    fn digest_references_pin_themselves() {
        let digest = crate::content_digest(b"m");
        let pinned = Lockfile::default().pin(&PluginRef::parse(&format!("upper@{digest}")).unwrap()).unwrap();
        assert_eq!(pinned, PinnedRef { name: "upper".to_owned(), version: None, digest });
    }

    #[test]
    fn bad_lockfiles_are_refused_naming_file_and_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCKFILE_NAME);
        let good = entry("upper", "^1", "1.2.0");
        let body = |digest: &str| {
            format!(
                "version = 1\n[[package]]\nname = \"upper\"\nrequirement = \"^1\"\nversion = \"1.2.0\"\n\
                 digest = \"{digest}\"\nsource = \"dir:x\"\n"
            )
        };

        std::fs::write(&path, body("sha256:12")).unwrap();
        let err = Lockfile::read(&path).unwrap_err();
        assert!(err.to_string().contains("flumen.lock") && err.to_string().contains("`upper@^1`"), "{err}");

        std::fs::write(&path, format!("{}{}", body(&good.digest), &body(&good.digest)[12..])).unwrap();
        let err = Lockfile::read(&path).unwrap_err();
        assert!(err.to_string().contains("locked twice"), "{err}");

        std::fs::write(&path, "version = 2\n").unwrap();
        let err = Lockfile::read(&path).unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");

        std::fs::write(&path, format!("{}extra = 1\n", body(&good.digest))).unwrap();
        let err = Lockfile::read(&path).unwrap_err();
        assert!(err.to_string().contains("flumen.lock:8:") && err.to_string().contains("extra"), "{err}");

        std::fs::File::create(&path).unwrap().set_len(LOCKFILE_BYTES_MAX + 1).unwrap();
        assert!(matches!(Lockfile::read(&path), Err(LockError::TooLarge { .. })));

        let err = Lockfile::read(&dir.path().join("absent.lock")).unwrap_err();
        assert!(matches!(err, LockError::Read { .. }), "{err}");
    }
}
