//! Operator state kept in fjall, and durable checkpoint storage (manifests and state files).
//!
//! This is the only crate that names fjall. It has two halves:
//!
//! - [`StateStore`] / [`OperatorState`]: the *working copy* of keyed state — value, list and map
//!   state of every operator subtask of a job process, in one fjall database. The working copy is
//!   scratch: it is never fsynced, and [`StateStore::open`] drops whatever a previous process left.
//!   Durability comes only from snapshot files.
//! - [`checkpoint::CheckpointStore`]: a directory of checkpoint manifests and the files they
//!   reference, written durably (temp file, fsync, rename, fsync the directory) and verified
//!   (size and SHA-256 of every file) before they are trusted.
//! - [`remote::RemoteStore`]: when `[checkpoint] store` is set, the durable copy of that
//!   directory in an object store (S3, or a `file://` path); the local directory is then the
//!   working area and cache. This is the only crate that names `object_store`.
//! - [`conditional::ConditionalStore`]: small documents written only create-if-absent in the
//!   same kinds of store; a cluster coordinator's state (jobs, leadership).
//!
//! # Checkpoint protocol (as this crate sees it)
//!
//! 1. Each subtask tracks the fjall keys it changed since its last snapshot (keys only, not values).
//! 2. At a barrier for checkpoint `n`, the engine calls [`OperatorState::snapshot`] with the
//!    region's [`checkpoint::CheckpointStore::files_dir`]. A delta file holds the current value, or
//!    a tombstone, of each changed key; a full file holds every entry of the subtask
//!    ([`should_write_full`] decides which). The file is fsynced before `snapshot` returns, and the
//!    change set is cleared.
//! 3. A subtask's *chain* is its last full file followed by every delta written after it, **whether
//!    or not the checkpoints of those deltas completed**: once `snapshot` returns, the changes it
//!    captured are no longer tracked, so a delta of an aborted checkpoint must stay in the chain
//!    (or the next snapshot must be full).
//! 4. When every participant has written its files, the engine writes the [`checkpoint::Manifest`]
//!    listing each participant's chain. Only when [`checkpoint::CheckpointStore::write_manifest`]
//!    returns is checkpoint `n` complete — or, with a remote store, only when
//!    [`remote::RemoteStore::upload_checkpoint`] has put the manifest there too.
//! 5. Recovery (after [`remote::RemoteStore::download_latest`] with a remote store) takes
//!    [`checkpoint::CheckpointStore::latest_valid`] (the newest manifest whose own
//!    checksum and every referenced file verify; damaged newer ones are quarantined) and calls
//!    [`OperatorState::restore`] with each participant's chain. A delta holds final values, so
//!    applying full then deltas in order reproduces the state exactly. Checkpoint ids continue
//!    above [`checkpoint::CheckpointStore::reserve_ids`]: no id is ever used twice.
//! 6. [`checkpoint::CheckpointStore::retain`] deletes only files whose checkpoint is at most the
//!    newest kept one and that no kept manifest references, so files of a checkpoint in progress
//!    (always numbered higher) and old bases of kept chains survive.

// Without `stores`, the snapshot writer and some helpers have no user (only the fuzz build does that).
#![cfg_attr(not(feature = "stores"), allow(dead_code))]

#[cfg(feature = "stores")]
mod cache;
#[cfg(feature = "stores")]
mod capability;
pub mod checkpoint;
#[cfg(feature = "stores")]
pub mod conditional;
mod durable;
mod format;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "stores")]
pub mod remote;
#[cfg(feature = "stores")]
mod store;
#[cfg(feature = "store-url")]
mod store_url;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use checkpoint::{CheckpointStore, Manifest, Participant, Rejected, Retained, checkpoint_file_name};
#[cfg(feature = "stores")]
pub use conditional::ConditionalStore;
pub use durable::{create_file_durably, verify_file, write_file_durably};
#[cfg(feature = "stores")]
pub use remote::{Downloaded, RemoteStore, Transfer};
#[cfg(feature = "stores")]
pub use store::{Admit, OperatorState, STATE_CACHE_BYTES_DEFAULT, StateStore};
#[cfg(feature = "store-url")]
pub use store_url::{StoreUrl, StoreUrlError, UrlProblem};

// The state limits are defined once, in `flumen-types`, for this store and the wasm layer alike.
pub use flumen_types::{STATE_KEY_BYTES_MAX, STATE_NAME_BYTES_MAX, STATE_VALUE_BYTES_MAX};

/// A chain longer than this is replaced by a full snapshot (bounds restore time).
const CHAIN_DELTAS_MAX: usize = 8;

/// Why a state or checkpoint operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing a file failed.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// A file's bytes are not what was recorded (size, checksum) or not a valid file of its kind.
    #[error("corrupt {}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    /// An argument crossed one of this crate's limits (name, key, value sizes) or is malformed.
    #[error("state limit: {0}")]
    Limit(String),
    /// The fjall working copy failed.
    #[error("state store: {0}")]
    Store(String),
    /// The object store holding checkpoints (`[checkpoint] store`) failed or cannot be reached.
    #[error("checkpoint store {url}: {message}")]
    Remote { url: String, message: String },
}

/// One file of a checkpoint, as a manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// File name, relative to the directory it was written to (a region's `files` directory).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// A full snapshot (or a self-contained file), as opposed to a delta.
    pub full: bool,
    /// The checkpoint this file was written for.
    pub checkpoint: u64,
}

/// Whether the next snapshot of a subtask whose current chain is `chain` (its last full snapshot
/// followed by the deltas after it) should be full.
///
/// True when there is no chain yet (or it does not start with a full snapshot), when it holds more
/// than 8 deltas, or when the deltas together are larger than the full snapshot. This keeps restore
/// time and storage within a small multiple of the state's size while each checkpoint's cost stays
/// proportional to what changed.
pub fn should_write_full(chain: &[StateFile]) -> bool {
    let Some((base, deltas)) = chain.split_first() else { return true };
    if !base.full || deltas.len() > CHAIN_DELTAS_MAX {
        return true;
    }
    let delta_bytes: u64 = deltas.iter().map(|f| f.bytes).fold(0, u64::saturating_add);
    delta_bytes > base.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: u64, full: bool, checkpoint: u64) -> StateFile {
        StateFile { name: format!("f{checkpoint}"), bytes, sha256: String::new(), full, checkpoint }
    }

    #[test]
    fn full_snapshot_policy() {
        assert!(should_write_full(&[]));
        assert!(should_write_full(&[file(100, false, 1)]), "a chain must start with a full snapshot");
        assert!(!should_write_full(&[file(100, true, 1)]));
        assert!(!should_write_full(&[file(100, true, 1), file(60, false, 2), file(40, false, 3)]));
        assert!(should_write_full(&[file(100, true, 1), file(60, false, 2), file(41, false, 3)]));
        let mut long = vec![file(1000, true, 1)];
        long.extend((2..10).map(|c| file(1, false, c)));
        assert!(!should_write_full(&long), "8 deltas are still fine");
        long.push(file(1, false, 10));
        assert!(should_write_full(&long), "9 deltas are too many");
    }
}
