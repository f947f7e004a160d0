//! The job key that signs blob references, bound to one job's checkpoint lineage.
//!
//! A run without checkpoints keys its store with fresh random bytes. A
//! checkpointed job keeps its key beside its checkpoints so that references
//! in a restored checkpoint still check, but only for that job and that line
//! of checkpoints: the file is named after the job
//! (`<checkpoint dir>/.blobs/key-<hash of the job name>`) and records the
//! name; a fresh run (not `--resume`) replaces it with a new key and a new
//! lineage id, so references written by an earlier run, or by another job
//! sharing the directory, never check again. A run of only some of a job's
//! regions (the others run in other processes) joins the lineage instead:
//! it reads the key back, and makes one only when there is none, atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{BlobError, KEY_BYTES};

/// What a key file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    /// The job the key belongs to.
    job: String,
    /// Made afresh with the key; names the line of checkpoints that uses it.
    lineage: String,
    /// The key, hex.
    key: String,
}

/// A key bound to a lineage, as [`load_or_make`] returns it.
#[derive(Debug, Clone)]
pub struct LineageKey {
    pub key: [u8; KEY_BYTES],
    pub lineage: String,
    /// Whether it was read back (a resumed lineage) rather than made.
    pub reused: bool,
}

pub(crate) fn random_key() -> Result<[u8; KEY_BYTES], BlobError> {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| BlobError::Io(format!("no randomness for the job's blob key: {e}")))?;
    Ok(key)
}

/// Where job `job` keeps its key in the durable directory `dir`.
pub fn key_path(dir: &Path, job: &str) -> PathBuf {
    let h = Sha256::digest(job.as_bytes());
    dir.join(format!("key-{}", hex::encode(&h[..8])))
}

/// The key of `job`'s lineage in `dir`: read back when `resume` and the file
/// is this job's, otherwise made afresh (a new lineage) and written durably.
pub(crate) fn load_or_make(dir: &Path, job: &str, resume: bool) -> Result<LineageKey, BlobError> {
    let path = key_path(dir, job);
    if resume && let Read::Key(found) = read_key(&path, job)? {
        return Ok(found);
    }
    let (made, text) = make_key(job)?;
    crate::write_file(&path, &text, true)?;
    restrict(&path);
    Ok(made)
}

/// The key of `job`'s lineage in `dir` for a process that runs only some of the
/// job's regions while other processes run the others: read back when the file
/// exists and is this job's; made only when there is none, by an atomic
/// create-if-absent, so processes starting at once agree on one key and none
/// replaces a key another one already signs with.
pub(crate) fn load_or_make_shared(dir: &Path, job: &str) -> Result<LineageKey, BlobError> {
    let path = key_path(dir, job);
    let io = |e: std::io::Error| BlobError::Io(format!("writing {}: {e}", path.display()));
    // Twice at most: a file another process created between the read and the create is read back.
    for _ in 0..2 {
        let found = read_key(&path, job)?;
        let (made, text) = make_key(job)?;
        match found {
            Read::Key(found) => return Ok(found),
            Read::OtherJob => {
                // Another job's key under the same hash: replaced, as a fresh run does.
                crate::write_file(&path, &text, true)?;
                restrict(&path);
                return Ok(made);
            }
            Read::Missing => {}
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| BlobError::Io(format!("no randomness: {e}")))?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = format!("{file_name}.{}.tmp", hex::encode(nonce));
        match flumen_types::durable::create(&path, &temp, &text) {
            Ok(()) => {
                restrict(&path);
                return Ok(made);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(e)),
        }
    }
    Err(BlobError::Io(format!("{}: the key file keeps changing under this process", path.display())))
}

/// What a key file holds for a job.
enum Read {
    Key(LineageKey),
    Missing,
    /// The file is another job's (whose name hashes alike): never reused.
    OtherJob,
}

/// `job`'s key read back from `path`.
fn read_key(path: &Path, job: &str) -> Result<Read, BlobError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let damaged = |why: String| {
                BlobError::Io(format!(
                    "{} is damaged ({why}); the blob references of the checkpoints cannot be checked",
                    path.display()
                ))
            };
            let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
            let key: [u8; KEY_BYTES] = hex::decode(&file.key)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| damaged(format!("not a {KEY_BYTES}-byte key")))?;
            if file.job == job {
                return Ok(Read::Key(LineageKey { key, lineage: file.lineage, reused: true }));
            }
            // Another job whose name hashes alike: its key is never reused; a new lineage starts.
            tracing::warn!(path = %path.display(), other = %file.job, "a blob key of another job; making a new one");
            Ok(Read::OtherJob)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Read::Missing),
        Err(e) => Err(BlobError::Io(format!("{}: {e}", path.display()))),
    }
}

/// A new key and lineage for `job`, and the bytes of its key file.
fn make_key(job: &str) -> Result<(LineageKey, Vec<u8>), BlobError> {
    let key = random_key()?;
    let mut lineage = [0u8; 16];
    getrandom::fill(&mut lineage).map_err(|e| BlobError::Io(format!("no randomness for a lineage id: {e}")))?;
    let lineage = hex::encode(lineage);
    let file = KeyFile { job: job.to_string(), lineage: lineage.clone(), key: hex::encode(key) };
    let text = serde_json::to_vec(&file).map_err(|e| BlobError::Io(e.to_string()))?;
    Ok((LineageKey { key, lineage, reused: false }, text))
}

/// Only the owner may read a key file (best effort).
fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = path;
}
