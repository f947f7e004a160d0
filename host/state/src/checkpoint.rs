//! Checkpoint storage: a root directory of regions, each with its manifests and the files they
//! reference; manifests are written durably and trusted only once they and their files verify.
//!
//! ```text
//! <root>/<region>/chk-<checkpoint:012>.json     one manifest per completed checkpoint
//! <root>/<region>/files/c<checkpoint:012>-...   state snapshots, guest snapshots, in-flight data
//! ```
//!
//! A manifest file is `{"sha256": "<hex>", "manifest": {...}}`: the checksum covers the exact
//! bytes of the `manifest` value, so a torn or altered manifest is detected before it is parsed.
//! Files in `files/` are named with their checkpoint first ([`checkpoint_file_name`]); that is how
//! [`CheckpointStore::retain`] tells files of old checkpoints from those of one in progress.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::durable::{TEMP_SUFFIX, create_dir_durably, io_error, verify_file, write_file_durably};
use crate::{StateError, StateFile};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Largest manifest file read. Stops a corrupt or hostile manifest from exhausting memory during
/// recovery; a real one lists a few files per subtask.
pub const MANIFEST_BYTES_MAX: u64 = 64 << 20;

/// Longest region name; regions are directory names.
pub const REGION_BYTES_MAX: usize = 128;

const MANIFEST_PREFIX: &str = "chk-";
const MANIFEST_SUFFIX: &str = ".json";
pub(crate) const FILES_DIR: &str = "files";

/// A root directory of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
}

/// What a completed checkpoint of one region consists of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    pub job: String,
    pub region: String,
    pub checkpoint: u64,
    pub created_unix_ms: u64,
    /// The job ended and this is its final checkpoint.
    pub finished: bool,
    /// One entry per participating subtask, keyed by e.g. `count[0]`.
    pub participants: BTreeMap<String, Participant>,
}

/// What one subtask contributed to a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// Its files in the region's `files` directory; for keyed state, its chain in order.
    pub files: Vec<StateFile>,
    /// Whatever else the engine records (offsets, guest snapshot info).
    pub meta: serde_json::Value,
}

/// A manifest that [`CheckpointStore::latest_valid`] refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub path: PathBuf,
    pub reason: String,
}

/// The name of a file of checkpoint `checkpoint` in a `files` directory: `c<checkpoint:012>-<stem>`.
/// [`CheckpointStore::retain`] reads the checkpoint back from it.
pub fn checkpoint_file_name(checkpoint: u64, stem: &str) -> String {
    format!("c{checkpoint:012}-{stem}")
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    sha256: String,
    manifest: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn<'a> {
    sha256: String,
    #[serde(borrow)]
    manifest: &'a RawValue,
}

impl CheckpointStore {
    /// Opens the checkpoint directory `root`, creating it.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        create_dir_durably(root)?;
        Ok(Self { root: root.to_owned() })
    }

    /// The directory where participants of `region` write their files for any checkpoint
    /// (`<root>/<region>/files`); created.
    pub fn files_dir(&self, region: &str) -> Result<PathBuf, StateError> {
        let dir = self.region_dir(region)?.join(FILES_DIR);
        create_dir_durably(&dir)?;
        Ok(dir)
    }

    /// Makes `manifest` durable as `<root>/<region>/chk-<checkpoint:012>.json` (temp file, fsync,
    /// rename, fsync the directory). Only after this returns is the checkpoint complete.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), StateError> {
        let dir = self.region_dir(&manifest.region)?;
        create_dir_durably(&dir)?;
        let body = serde_json::to_string_pretty(manifest)
            .map_err(|e| StateError::Limit(format!("manifest of checkpoint {}: {e}", manifest.checkpoint)))?;
        let sha256 = hex::encode(Sha256::digest(body.as_bytes()));
        let raw = RawValue::from_string(body)
            .map_err(|e| StateError::Limit(format!("manifest of checkpoint {}: {e}", manifest.checkpoint)))?;
        let mut bytes = serde_json::to_vec(&EnvelopeOut { sha256, manifest: &raw })
            .map_err(|e| StateError::Limit(format!("manifest of checkpoint {}: {e}", manifest.checkpoint)))?;
        bytes.push(b'\n');
        write_file_durably(&dir, &manifest_name(manifest.checkpoint), &bytes, manifest.checkpoint)?;
        tracing::info!(region = %manifest.region, checkpoint = manifest.checkpoint, "checkpoint complete");
        Ok(())
    }

    /// The newest manifest of `region` that is intact: its own checksum matches and every file it
    /// references exists in the files directory with the recorded size and SHA-256.
    ///
    /// Newer broken manifests are skipped and listed (file and reason) in the second element;
    /// `(None, rejected)` when none is intact.
    pub fn latest_valid(&self, region: &str) -> Result<(Option<Manifest>, Vec<Rejected>), StateError> {
        let dir = self.region_dir(region)?;
        let files = dir.join(FILES_DIR);
        let mut rejected = Vec::new();
        for (checkpoint, path) in list_manifests(&dir)? {
            match read_manifest(&path, region, checkpoint).and_then(|m| verify_files(&files, &m).map(|()| m)) {
                Ok(manifest) => return Ok((Some(manifest), rejected)),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping a broken checkpoint manifest");
                    rejected.push(Rejected { path, reason });
                }
            }
        }
        Ok((None, rejected))
    }

    /// Whether any manifest (valid or not) exists for any region.
    pub fn has_checkpoints(&self) -> Result<bool, StateError> {
        for region in self.regions()? {
            if !list_manifests(&self.root.join(&region))?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Keeps the newest `keep` (at least 1) readable manifests of `region` and deletes the
    /// manifests older than them, plus every file in the files directory that no kept manifest
    /// references and whose checkpoint (from its name) is at most the newest kept checkpoint.
    /// Returns the bytes freed.
    ///
    /// Files of a checkpoint in progress are numbered above every complete checkpoint, so they
    /// survive; so do old files that a kept manifest still references (the base of a chain).
    /// Files whose names carry no checkpoint are never deleted. Broken manifests newer than the
    /// oldest kept one are left for [`Self::latest_valid`] to report.
    pub fn retain(&self, region: &str, keep: usize) -> Result<u64, StateError> {
        if keep == 0 {
            return Err(StateError::Limit("retain must keep at least one checkpoint".to_owned()));
        }
        let dir = self.region_dir(region)?;
        let manifests = list_manifests(&dir)?;
        let mut kept = Vec::new();
        let mut oldest_kept = None;
        for (index, (checkpoint, path)) in manifests.iter().enumerate() {
            if let Ok(manifest) = read_manifest(path, region, *checkpoint) {
                kept.push(manifest);
                if kept.len() == keep {
                    oldest_kept = Some(index);
                    break;
                }
            }
        }
        let Some(newest_kept) = kept.first().map(|m| m.checkpoint) else { return Ok(0) };
        let mut freed = 0u64;
        if let Some(oldest) = oldest_kept {
            for (_, path) in &manifests[oldest + 1..] {
                freed += remove_file(path)?;
            }
        }
        let referenced: HashSet<&str> =
            kept.iter().flat_map(|m| m.participants.values()).flat_map(|p| &p.files).map(|f| f.name.as_str()).collect();
        let files = dir.join(FILES_DIR);
        for entry in read_dir(&files)? {
            let Some(name) = entry.to_str() else { continue };
            if referenced.contains(name) {
                continue;
            }
            let base = name.strip_suffix(TEMP_SUFFIX).unwrap_or(name);
            if file_checkpoint(base).is_some_and(|c| c <= newest_kept) {
                freed += remove_file(&files.join(name))?;
            }
        }
        Ok(freed)
    }

    /// The regions that have a directory here, sorted.
    pub fn regions(&self) -> Result<Vec<String>, StateError> {
        let mut regions: Vec<String> = read_dir(&self.root)?
            .into_iter()
            .filter_map(|name| name.into_string().ok())
            .filter(|name| check_region(name).is_ok() && self.root.join(name).is_dir())
            .collect();
        regions.sort();
        Ok(regions)
    }

    fn region_dir(&self, region: &str) -> Result<PathBuf, StateError> {
        check_region(region)?;
        Ok(self.root.join(region))
    }

    /// The exact bytes of `region`'s manifest of `checkpoint`; `None` when there is none. The
    /// error says why it cannot be read (or is larger than [`MANIFEST_BYTES_MAX`]).
    pub(crate) fn manifest_bytes(&self, region: &str, checkpoint: u64) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.region_dir(region)?.join(manifest_name(checkpoint));
        if !path.exists() {
            return Ok(None);
        }
        read_manifest_bytes(&path).map(Some).map_err(|message| StateError::Io { path, message })
    }

    /// Makes `bytes` (a manifest already checked by [`parse_manifest`]) durable as `region`'s
    /// manifest of `checkpoint`, replacing whatever was there.
    pub(crate) fn install_manifest(&self, region: &str, checkpoint: u64, bytes: &[u8]) -> Result<(), StateError> {
        let dir = self.region_dir(region)?;
        create_dir_durably(&dir)?;
        write_file_durably(&dir, &manifest_name(checkpoint), bytes, checkpoint).map(drop)
    }

    /// Removes `region`'s manifests of the checkpoints `which` selects (their files stay for
    /// [`Self::retain`]); returns the checkpoints removed.
    pub(crate) fn remove_manifests(&self, region: &str, which: impl Fn(u64) -> bool) -> Result<Vec<u64>, StateError> {
        let dir = self.region_dir(region)?;
        let mut removed = Vec::new();
        for (checkpoint, path) in list_manifests(&dir)? {
            if which(checkpoint) {
                remove_file(&path)?;
                removed.push(checkpoint);
            }
        }
        if !removed.is_empty() {
            crate::durable::sync_dir(&dir)?;
        }
        Ok(removed)
    }
}

/// Reads and checks one manifest; the error is the reason to reject it.
fn read_manifest(path: &Path, region: &str, checkpoint: u64) -> Result<Manifest, String> {
    let bytes = read_manifest_bytes(path)?;
    parse_manifest(&bytes, region, checkpoint)
}

/// The bytes of a manifest file, at most [`MANIFEST_BYTES_MAX`]; the error is the reason to
/// reject it.
fn read_manifest_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let mut file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.by_ref().take(MANIFEST_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MANIFEST_BYTES_MAX {
        return Err(format!("larger than {MANIFEST_BYTES_MAX} bytes"));
    }
    Ok(bytes)
}

/// Checks the bytes of the manifest stored as `region`'s checkpoint `checkpoint`: its checksum,
/// format and what it says it is. The error is the reason to reject it.
pub(crate) fn parse_manifest(bytes: &[u8], region: &str, checkpoint: u64) -> Result<Manifest, String> {
    let envelope: EnvelopeIn<'_> = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    let actual = hex::encode(Sha256::digest(envelope.manifest.get().as_bytes()));
    if actual != envelope.sha256 {
        return Err(format!("checksum mismatch: content has sha256 {actual}, recorded {}", envelope.sha256));
    }
    let manifest: Manifest =
        serde_json::from_str(envelope.manifest.get()).map_err(|e| format!("invalid manifest content: {e}"))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(format!("unsupported manifest format {} (this build reads {MANIFEST_FORMAT})", manifest.format));
    }
    if manifest.region != region || manifest.checkpoint != checkpoint {
        return Err(format!(
            "describes region {:?} checkpoint {}, but is stored as region {region:?} checkpoint {checkpoint}",
            manifest.region, manifest.checkpoint
        ));
    }
    Ok(manifest)
}

/// Verifies every file a manifest references; the error is the reason to reject the manifest.
pub(crate) fn verify_files(files: &Path, manifest: &Manifest) -> Result<(), String> {
    for (participant, p) in &manifest.participants {
        for f in &p.files {
            if f.checkpoint > manifest.checkpoint {
                return Err(format!("{participant}: file {} is of a later checkpoint {}", f.name, f.checkpoint));
            }
            verify_file(files, f).map_err(|e| format!("{participant}: {e}"))?;
        }
    }
    Ok(())
}

/// The manifests in a region directory, newest first; none when the directory does not exist.
fn list_manifests(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StateError> {
    let mut manifests: Vec<(u64, PathBuf)> = read_dir(dir)?
        .into_iter()
        .filter_map(|name| {
            let name = name.to_str()?;
            Some((manifest_checkpoint(name)?, dir.join(name)))
        })
        .collect();
    manifests.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
    Ok(manifests)
}

pub(crate) fn manifest_name(checkpoint: u64) -> String {
    format!("{MANIFEST_PREFIX}{checkpoint:012}{MANIFEST_SUFFIX}")
}

/// The checkpoint of a manifest named by [`manifest_name`].
pub(crate) fn manifest_checkpoint(name: &str) -> Option<u64> {
    name.strip_prefix(MANIFEST_PREFIX)?.strip_suffix(MANIFEST_SUFFIX).and_then(parse_checkpoint)
}

/// The checkpoint of a file named by [`checkpoint_file_name`].
pub(crate) fn file_checkpoint(name: &str) -> Option<u64> {
    let (digits, _) = name.strip_prefix('c')?.split_once('-')?;
    parse_checkpoint(digits)
}

/// A checkpoint number exactly as `{:012}` writes it (so each number has one name).
fn parse_checkpoint(digits: &str) -> Option<u64> {
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let checkpoint: u64 = digits.parse().ok()?;
    (format!("{checkpoint:012}") == digits).then_some(checkpoint)
}

pub(crate) fn check_region(region: &str) -> Result<(), StateError> {
    let valid = !region.is_empty()
        && region.len() <= REGION_BYTES_MAX
        && !region.starts_with('.')
        && region.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.+%~".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(StateError::Limit(format!(
            "region name {region:?} must be 1 to {REGION_BYTES_MAX} characters of [A-Za-z0-9._+%~-], not starting with '.'"
        )))
    }
}

/// The entry names of a directory; none when it does not exist.
fn read_dir(dir: &Path) -> Result<Vec<std::ffi::OsString>, StateError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, &e)),
    };
    entries.map(|entry| entry.map(|e| e.file_name()).map_err(|e| io_error(dir, &e))).collect()
}

/// Removes a file; returns its size (0 when it was already gone).
fn remove_file(path: &Path) -> Result<u64, StateError> {
    let bytes = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(path, &e)),
    };
    match fs::remove_file(path) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(path, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_numbers_in_names() {
        assert_eq!(manifest_name(7), "chk-000000000007.json");
        assert_eq!(checkpoint_file_name(7, "x"), "c000000000007-x");
        assert_eq!(file_checkpoint("c000000000007-x"), Some(7));
        assert_eq!(file_checkpoint("c1234567890123-x"), Some(1_234_567_890_123));
        assert_eq!(file_checkpoint("c00000000007-x"), None, "11 digits");
        assert_eq!(file_checkpoint("c0000000000007-x"), None, "not canonical");
        assert_eq!(file_checkpoint("guest-000000000007"), None);
        assert_eq!(parse_checkpoint("99999999999999999999"), None, "overflow");
    }

    #[test]
    fn region_names() {
        for ok in ["r0", "region-1", "a.b_c"] {
            assert!(check_region(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(matches!(check_region(bad), Err(StateError::Limit(_))), "{bad}");
        }
    }
}
