//! Checkpoint storage: a root directory of regions, each with its manifests and the files they
//! reference; manifests are written durably and trusted only once they and their files verify.
//!
//! ```text
//! <root>/<region>/chk-<checkpoint:012>.json     one manifest per completed checkpoint
//! <root>/<region>/files/c<checkpoint:012>-...   state snapshots, guest snapshots, in-flight data
//! <root>/<region>/.last-checkpoint-<n:012>      the highest checkpoint id ever used (empty file)
//! <root>/<region>/.quarantine/chk-<n:012>.json  a manifest found damaged, moved aside
//! <root>/<region>/.quarantine/chk-<n:012>.json.reason   why (text)
//! ```
//!
//! A manifest file is `{"sha256": "<hex>", "manifest": {...}}`: the checksum covers the exact
//! bytes of the `manifest` value, so a torn or altered manifest is detected before it is parsed.
//! Files in `files/` are named with their checkpoint first ([`checkpoint_file_name`]); that is how
//! [`CheckpointStore::retain`] tells files of old checkpoints from those of one in progress.
//!
//! # Checkpoint ids and quarantine
//!
//! 1. **Ids are never reused.** [`CheckpointStore::reserve_ids`] returns the highest id the region
//!    ever used — the largest of the high-water mark, every manifest name, every quarantined
//!    manifest name and every file name in `files/` — and makes it the durable high-water mark;
//!    a run, a resumed run and a restarted region hand out ids only above it.
//!    [`CheckpointStore::write_manifest`] raises the mark *before* the manifest appears and
//!    refuses a manifest whose name is taken; it creates the manifest atomically (a hard link of
//!    a durable temporary file, which fails when the name exists), so of two processes sharing
//!    the directory that race for one id exactly one succeeds. So no file or manifest of an older attempt — intact,
//!    damaged, quarantined or deleted — can ever be mistaken for one of a newer checkpoint, and a
//!    damaged file is never rewritten under its old name to make an old manifest verify again.
//! 2. **Damaged manifests are quarantined.** A manifest whose own checksum, format or name does
//!    not check, or that references a file that is missing or has another size or SHA-256, is
//!    moved into `.quarantine/` (with a `.reason` file beside it) and logged with both paths and
//!    the reason: it is never a candidate again. A file shared by several manifests (the base or
//!    a delta of a state chain) makes every manifest referencing it damaged. A manifest that
//!    cannot be *read* (an I/O error other than "missing") is an error, not damage: recovery
//!    stops rather than fall back past a checkpoint that may be intact.
//! 3. **Retention counts only intact checkpoints** ([`CheckpointStore::retain`]): a manifest is
//!    intact once this process wrote it or verified it and all its files; a damaged one is
//!    quarantined and never displaces an intact one. The newest intact checkpoint is the one just
//!    written (ids only grow), so it is never deleted by the retention that follows it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::durable::{TEMP_SUFFIX, create_dir_durably, create_file_durably, io_error, verify_file, write_file_durably};
use crate::{StateError, StateFile};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Largest manifest file read. Stops a corrupt or hostile manifest from exhausting memory during
/// recovery; a real one lists a few files per subtask.
pub const MANIFEST_BYTES_MAX: u64 = 64 << 20;

/// Longest region name; regions are directory names (defined once, in `flumen-types`).
pub use flumen_types::REGION_NAME_BYTES_MAX;

const MANIFEST_PREFIX: &str = "chk-";
const MANIFEST_SUFFIX: &str = ".json";
pub(crate) const FILES_DIR: &str = "files";
/// Where damaged manifests of a region are moved (a dot-dir: never a region, never listed).
pub const QUARANTINE_DIR: &str = ".quarantine";
const QUARANTINE_REASON_SUFFIX: &str = ".reason";
/// Prefix of the empty file whose name holds a region's highest checkpoint id ever used.
const MARK_PREFIX: &str = ".last-checkpoint-";

/// A root directory of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
    /// Per region, the manifests this process wrote or verified (with every file): retention
    /// counts them as intact without hashing their files again.
    intact: Arc<Mutex<HashMap<String, BTreeSet<u64>>>>,
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
    /// Where the manifest was found.
    pub path: PathBuf,
    pub reason: String,
    /// Where it was moved ([`QUARANTINE_DIR`]); `None` for a manifest in an object store, which
    /// is deleted there instead.
    pub quarantined: Option<PathBuf>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)?;
        if let Some(q) = &self.quarantined {
            write!(f, " (moved to {})", q.display())?;
        }
        Ok(())
    }
}

/// What [`CheckpointStore::retain`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retained {
    /// The intact checkpoints kept, newest first.
    pub kept: Vec<u64>,
    /// Bytes of manifests and files deleted.
    pub freed: u64,
    /// Damaged manifests found and quarantined.
    pub quarantined: Vec<Rejected>,
}

/// Why a manifest cannot be used: damaged (quarantine it) or unreadable (stop).
enum Refusal {
    Damaged(String),
    Unreadable(StateError),
    Gone,
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
        Ok(Self { root: root.to_owned(), intact: Arc::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory where participants of `region` write their files for any checkpoint
    /// (`<root>/<region>/files`); created.
    pub fn files_dir(&self, region: &str) -> Result<PathBuf, StateError> {
        let dir = self.region_dir(region)?.join(FILES_DIR);
        create_dir_durably(&dir)?;
        Ok(dir)
    }

    /// Makes `manifest` durable as `<root>/<region>/chk-<checkpoint:012>.json`, created only if
    /// that name is free: a temporary file is written and fsynced, hard-linked under the final
    /// name and removed, and the directory fsynced ([`create_file_durably`]). Only after this
    /// returns is the checkpoint complete.
    ///
    /// Creation is atomic between processes sharing the directory: when another writer takes the
    /// id first (or took it before, or it is quarantined) this refuses, as ids are never reused,
    /// and the existing manifest is untouched.
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
        let name = manifest_name(manifest.checkpoint);
        let used = || {
            StateError::Limit(format!(
                "checkpoint id {} of region {:?} was used before (its manifest exists in {}); ids are never reused",
                manifest.checkpoint,
                manifest.region,
                dir.display()
            ))
        };
        if dir.join(&name).exists() || self.is_quarantined(&manifest.region, manifest.checkpoint)? {
            return Err(used());
        }
        // The mark first: once the manifest exists, the mark covers its id.
        self.raise_mark(&manifest.region, manifest.checkpoint)?;
        // The check above is only a shortcut: between processes, the create-if-absent decides.
        if create_file_durably(&dir, &name, &bytes, manifest.checkpoint)?.is_none() {
            return Err(used());
        }
        self.note_intact(&manifest.region, manifest.checkpoint);
        tracing::info!(region = %manifest.region, checkpoint = manifest.checkpoint, "checkpoint complete");
        Ok(())
    }

    /// The newest manifest of `region` that is intact: its own checksum matches and every file it
    /// references exists in the files directory with the recorded size and SHA-256.
    ///
    /// Newer damaged manifests are quarantined (moved into [`QUARANTINE_DIR`]) and listed (file,
    /// reason, new place) in the second element; `(None, rejected)` when none is intact. A
    /// manifest or file that cannot be read for another reason than damage (permissions, an I/O
    /// error) is an error: falling back past it could throw away an intact checkpoint.
    pub fn latest_valid(&self, region: &str) -> Result<(Option<Manifest>, Vec<Rejected>), StateError> {
        let dir = self.region_dir(region)?;
        let files = dir.join(FILES_DIR);
        let mut rejected = Vec::new();
        for (checkpoint, path) in list_manifests(&dir)? {
            match check_manifest(&path, &files, region, checkpoint) {
                Ok(manifest) => {
                    self.note_intact(region, checkpoint);
                    return Ok((Some(manifest), rejected));
                }
                Err(Refusal::Gone) => {}
                Err(Refusal::Unreadable(e)) => return Err(e),
                Err(Refusal::Damaged(reason)) => rejected.push(self.quarantine(region, checkpoint, &path, reason)?),
            }
        }
        Ok((None, rejected))
    }

    /// Manifest `checkpoint` of `region`, checked as [`CheckpointStore::latest_valid`] checks one
    /// (its checksum and every file it references); an error when it is missing or damaged (it
    /// is not quarantined: whoever chose it, another process, decides about damage). A region
    /// run by several processes restores, in every process, the checkpoint its leader chose.
    pub fn manifest(&self, region: &str, checkpoint: u64) -> Result<Manifest, StateError> {
        let dir = self.region_dir(region)?;
        let path = dir.join(manifest_name(checkpoint));
        match check_manifest(&path, &dir.join(FILES_DIR), region, checkpoint) {
            Ok(manifest) => Ok(manifest),
            Err(Refusal::Unreadable(e)) => Err(e),
            Err(Refusal::Gone) => Err(StateError::Io { path, message: "no such checkpoint manifest".into() }),
            Err(Refusal::Damaged(message)) => Err(StateError::Corrupt { path, message }),
        }
    }

    /// Moves `region`'s damaged manifest `path` of `checkpoint` into [`QUARANTINE_DIR`] with a
    /// `.reason` file beside it, durably, and logs both places and the reason.
    fn quarantine(&self, region: &str, checkpoint: u64, path: &Path, reason: String) -> Result<Rejected, StateError> {
        let dir = self.region_dir(region)?;
        let quarantine = dir.join(QUARANTINE_DIR);
        create_dir_durably(&quarantine)?;
        let base = manifest_name(checkpoint);
        let mut target = quarantine.join(&base);
        let mut n = 1;
        while target.exists() {
            target = quarantine.join(format!("{base}.{n}"));
            n += 1;
        }
        let target_name = target.file_name().and_then(|n| n.to_str()).unwrap_or(&base).to_owned();
        let note = format!("{}: {reason}\n", path.display());
        write_file_durably(
            &quarantine,
            &format!("{target_name}{QUARANTINE_REASON_SUFFIX}"),
            note.as_bytes(),
            checkpoint,
        )?;
        fs::rename(path, &target).map_err(|e| io_error(path, &e))?;
        crate::durable::sync_dir(&quarantine)?;
        crate::durable::sync_dir(&dir)?;
        self.forget_intact(region, checkpoint);
        tracing::warn!(
            path = %path.display(),
            moved_to = %target.display(),
            %reason,
            "damaged checkpoint manifest quarantined"
        );
        Ok(Rejected { path: path.to_owned(), reason, quarantined: Some(target) })
    }

    /// The manifests of `region` in [`QUARANTINE_DIR`], oldest first.
    pub fn quarantined(&self, region: &str) -> Result<Vec<PathBuf>, StateError> {
        let quarantine = self.region_dir(region)?.join(QUARANTINE_DIR);
        let mut found: Vec<(u64, PathBuf)> = read_dir(&quarantine)?
            .into_iter()
            .filter_map(|name| {
                let name = name.to_str()?;
                if name.ends_with(QUARANTINE_REASON_SUFFIX) {
                    return None;
                }
                Some((quarantined_checkpoint(name)?, quarantine.join(name)))
            })
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    fn is_quarantined(&self, region: &str, checkpoint: u64) -> Result<bool, StateError> {
        let quarantine = self.region_dir(region)?.join(QUARANTINE_DIR);
        Ok(read_dir(&quarantine)?.iter().any(|n| {
            n.to_str().is_some_and(|n| {
                !n.ends_with(QUARANTINE_REASON_SUFFIX) && quarantined_checkpoint(n) == Some(checkpoint)
            })
        }))
    }

    /// Step 1 of the id rules (module docs): the highest checkpoint id `region` ever used, or
    /// `at_least` if higher (ids an object store has seen), made the durable high-water mark.
    /// The caller hands out ids above it only.
    pub fn reserve_ids(&self, region: &str, at_least: u64) -> Result<u64, StateError> {
        let dir = self.region_dir(region)?;
        let mut highest = at_least.max(read_mark(&dir)?);
        highest = highest.max(list_manifests(&dir)?.first().map_or(0, |m| m.0));
        for name in read_dir(&dir.join(QUARANTINE_DIR))? {
            if let Some(c) = name.to_str().and_then(quarantined_checkpoint) {
                highest = highest.max(c);
            }
        }
        for name in read_dir(&dir.join(FILES_DIR))? {
            let Some(name) = name.to_str() else { continue };
            let base = name.strip_suffix(TEMP_SUFFIX).unwrap_or(name);
            if let Some(c) = file_checkpoint(base) {
                highest = highest.max(c);
            }
        }
        if highest > 0 {
            self.raise_mark(region, highest)?;
        }
        Ok(highest)
    }

    /// Makes `checkpoint` the region's durable high-water mark unless it already is higher.
    fn raise_mark(&self, region: &str, checkpoint: u64) -> Result<(), StateError> {
        let dir = self.region_dir(region)?;
        create_dir_durably(&dir)?;
        let marks = list_marks(&dir)?;
        if marks.iter().any(|(c, _)| *c >= checkpoint) {
            return Ok(());
        }
        // Create-if-absent: another process raising the same mark at once is no error.
        create_file_durably(&dir, &format!("{MARK_PREFIX}{checkpoint:012}"), b"", checkpoint)?;
        // Older marks are only clutter once the new one is durable; the highest always wins.
        for (_, name) in marks {
            remove_file(&dir.join(name))?;
        }
        Ok(())
    }

    /// Removes every manifest of `region`, intact or quarantined (for a start from scratch the
    /// user asked for), after raising the high-water mark over them. Their files stay for
    /// [`Self::retain`]. Returns the manifests removed.
    pub fn discard_all(&self, region: &str) -> Result<Vec<PathBuf>, StateError> {
        self.reserve_ids(region, 0)?;
        let dir = self.region_dir(region)?;
        let mut removed = Vec::new();
        for (_, path) in list_manifests(&dir)? {
            remove_file(&path)?;
            removed.push(path);
        }
        let quarantine = dir.join(QUARANTINE_DIR);
        for name in read_dir(&quarantine)? {
            let path = quarantine.join(&name);
            if !name.to_str().is_some_and(|n| n.ends_with(QUARANTINE_REASON_SUFFIX)) {
                removed.push(path.clone());
            }
            remove_file(&path)?;
        }
        if !removed.is_empty() {
            crate::durable::sync_dir(&dir)?;
        }
        self.intact.lock().unwrap_or_else(PoisonError::into_inner).remove(region);
        Ok(removed)
    }

    fn note_intact(&self, region: &str, checkpoint: u64) {
        self.intact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(region.to_owned())
            .or_default()
            .insert(checkpoint);
    }

    fn forget_intact(&self, region: &str, checkpoint: u64) {
        if let Some(set) = self.intact.lock().unwrap_or_else(PoisonError::into_inner).get_mut(region) {
            set.remove(&checkpoint);
        }
    }

    fn known_intact(&self, region: &str, checkpoint: u64) -> bool {
        self.intact.lock().unwrap_or_else(PoisonError::into_inner).get(region).is_some_and(|s| s.contains(&checkpoint))
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

    /// Whether `region` has any manifest (valid or not): [`Self::has_checkpoints`] for one region,
    /// for a process that runs only some regions of a job.
    pub fn has_region_checkpoints(&self, region: &str) -> Result<bool, StateError> {
        Ok(!list_manifests(&self.region_dir(region)?)?.is_empty())
    }

    /// Keeps the newest `keep` (at least 1) *intact* manifests of `region` and deletes the
    /// manifests older than them, plus every file in the files directory that no kept manifest
    /// references and whose checkpoint (from its name) is at most the newest kept checkpoint.
    ///
    /// A manifest counts as intact when this process wrote or verified it, or when it and every
    /// file it references verify now (then it is remembered); a damaged one met on the way is
    /// quarantined and never counts, so it cannot displace an intact one. Files of a checkpoint
    /// in progress are numbered above every complete checkpoint, so they survive; so do old
    /// files that a kept manifest still references (the base of a chain). Files whose names carry
    /// no checkpoint are never deleted.
    pub fn retain(&self, region: &str, keep: usize) -> Result<Retained, StateError> {
        if keep == 0 {
            return Err(StateError::Limit("retain must keep at least one checkpoint".to_owned()));
        }
        let dir = self.region_dir(region)?;
        let files = dir.join(FILES_DIR);
        let manifests = list_manifests(&dir)?;
        let mut done = Retained::default();
        let mut kept: Vec<Manifest> = Vec::new();
        let mut oldest_kept = None;
        for (index, (checkpoint, path)) in manifests.iter().enumerate() {
            let checked = if self.known_intact(region, *checkpoint) {
                read_manifest(path, region, *checkpoint)
            } else {
                check_manifest(path, &files, region, *checkpoint)
            };
            match checked {
                Ok(manifest) => {
                    self.note_intact(region, *checkpoint);
                    kept.push(manifest);
                    if kept.len() == keep {
                        oldest_kept = Some(index);
                        break;
                    }
                }
                Err(Refusal::Damaged(reason)) => {
                    done.quarantined.push(self.quarantine(region, *checkpoint, path, reason)?);
                }
                // Unreadable now: neither kept nor deleted; recovery will say why.
                Err(Refusal::Unreadable(_) | Refusal::Gone) => {}
            }
        }
        done.kept = kept.iter().map(|m| m.checkpoint).collect();
        let Some(&newest_kept) = done.kept.first() else { return Ok(done) };
        if let Some(oldest) = oldest_kept {
            for (checkpoint, path) in &manifests[oldest + 1..] {
                done.freed += remove_file(path)?;
                self.forget_intact(region, *checkpoint);
            }
        }
        let referenced: HashSet<&str> =
            kept.iter().flat_map(|m| m.participants.values()).flat_map(|p| &p.files).map(|f| f.name.as_str()).collect();
        for entry in read_dir(&files)? {
            let Some(name) = entry.to_str() else { continue };
            if referenced.contains(name) {
                continue;
            }
            let base = name.strip_suffix(TEMP_SUFFIX).unwrap_or(name);
            if file_checkpoint(base).is_some_and(|c| c <= newest_kept) {
                done.freed += remove_file(&files.join(name))?;
            }
        }
        Ok(done)
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

/// Reads and checks one manifest and every file it references.
fn check_manifest(path: &Path, files: &Path, region: &str, checkpoint: u64) -> Result<Manifest, Refusal> {
    let manifest = read_manifest(path, region, checkpoint)?;
    verify_files_of(files, &manifest)?;
    Ok(manifest)
}

/// Reads and checks one manifest (not its files).
fn read_manifest(path: &Path, region: &str, checkpoint: u64) -> Result<Manifest, Refusal> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Refusal::Gone),
        Err(e) => return Err(Refusal::Unreadable(io_error(path, &e))),
    };
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MANIFEST_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Refusal::Unreadable(io_error(path, &e)))?;
    if bytes.len() as u64 > MANIFEST_BYTES_MAX {
        return Err(Refusal::Damaged(format!("larger than {MANIFEST_BYTES_MAX} bytes")));
    }
    parse_manifest(&bytes, region, checkpoint).map_err(Refusal::Damaged)
}

/// Verifies every file a manifest references, telling damage from a file that cannot be read.
fn verify_files_of(files: &Path, manifest: &Manifest) -> Result<(), Refusal> {
    for (participant, p) in &manifest.participants {
        for f in &p.files {
            if f.checkpoint > manifest.checkpoint {
                return Err(Refusal::Damaged(format!(
                    "{participant}: file {} is of a later checkpoint {}",
                    f.name, f.checkpoint
                )));
            }
            match verify_file(files, f) {
                Ok(()) => {}
                Err(StateError::Corrupt { path, message }) => {
                    return Err(Refusal::Damaged(format!("{participant}: {}: {message}", path.display())));
                }
                Err(e) => return Err(Refusal::Unreadable(e)),
            }
        }
    }
    Ok(())
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

/// The checkpoint of a manifest in [`QUARANTINE_DIR`]: `chk-<n:012>.json`, maybe with a
/// `.<k>` suffix.
fn quarantined_checkpoint(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(MANIFEST_PREFIX)?;
    let (digits, _) = rest.split_once(MANIFEST_SUFFIX)?;
    parse_checkpoint(digits)
}

/// The high-water marks in a region directory: (checkpoint, file name).
fn list_marks(dir: &Path) -> Result<Vec<(u64, std::ffi::OsString)>, StateError> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter_map(|name| {
            let c = name.to_str()?.strip_prefix(MARK_PREFIX).and_then(parse_checkpoint)?;
            Some((c, name))
        })
        .collect())
}

/// The highest high-water mark of a region directory, 0 when there is none.
fn read_mark(dir: &Path) -> Result<u64, StateError> {
    Ok(list_marks(dir)?.into_iter().map(|(c, _)| c).max().unwrap_or(0))
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
        && region.len() <= REGION_NAME_BYTES_MAX
        && !region.starts_with('.')
        && region.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.+%~".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(StateError::Limit(format!(
            "region name {region:?} must be 1 to {REGION_NAME_BYTES_MAX} characters of [A-Za-z0-9._+%~-], not starting with '.'"
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
