//! The working copy of keyed state: one fjall keyspace per operator, one key prefix per subtask,
//! change tracking, and snapshot/restore of a subtask through snapshot files.
//!
//! # Key layout
//!
//! ```text
//! fjall key = subtask: varint · key_len: varint · key · kind: u8 · name_len: varint · name · suffix
//!   kind 'v' value state   suffix = (none)
//!   kind 'l' list item     suffix = seq: u64 BE   (appends take increasing seqs: list order)
//!   kind 'm' map entry     suffix = field          (prefix scans return fields in byte order)
//! ```
//!
//! Varints are unsigned LEB128, which is prefix-free, so the layout is too: the entries of one
//! list or map are exactly the keys that start with `subtask · key · kind · name`, and the entries
//! of one subtask those that start with `subtask`. The user key comes before the name and the
//! lengths are varints to keep keys short: fjall stores keys of up to 20 bytes inline, and a
//! 17-byte key (8-byte user key, 5-byte name) compares without chasing a pointer in the memtable,
//! which is most of a point read's cost (see `benches/w4_state.rs`). The longest key is
//! 5 + 3 + 16 KiB + 1 + 2 + 256 + 16 KiB, under fjall's 65,535-byte limit.
//!
//! # Write-back cache
//!
//! Each subtask reads and writes through a cache of its keys (`cache.rs`): a key read or
//! written once is served from memory, and writes reach fjall in one batch when the cache
//! passes its budget ([`OperatorState::set_cache_budget`]), before a snapshot and when the
//! handle is dropped. List and map reads merge the unwritten entries of their prefix with
//! fjall's.
//!
//! # Change tracking
//!
//! Each subtask keeps the set of fjall keys it wrote or deleted since its last snapshot, and for
//! each whether it may have existed at that snapshot. A delta snapshot reads their current
//! values (absent: a tombstone), so its cost is proportional to the changes; a key created and
//! removed again between two snapshots is left out (it existed in neither). The set and the
//! cache belong to the subtask, not to the handle: dropping an [`OperatorState`] parks them in
//! the [`StateStore`] and the next [`StateStore::operator`] call for that subtask takes them
//! back; two live handles for one subtask are refused, since each would miss the other's changes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use sha2::{Digest, Sha256};

use crate::cache::StateCache;
use crate::durable::{DurableFile, io_error, verify_file};
use crate::format::{Header, Record, SnapshotReader, SnapshotWriter};
use crate::{STATE_KEY_BYTES_MAX, STATE_NAME_BYTES_MAX, STATE_VALUE_BYTES_MAX, StateError, StateFile};

const KIND_VALUE: u8 = b'v';
const KIND_LIST: u8 = b'l';
const KIND_MAP: u8 = b'm';
const VARINT_BYTES_MAX: usize = 5;
const LIST_SEQ_BYTES: usize = 8;
/// Longest key without its subtask prefix: what a snapshot record may hold.
const RELATIVE_KEY_BYTES_MAX: usize = 3 + STATE_KEY_BYTES_MAX + 1 + 2 + STATE_NAME_BYTES_MAX + STATE_KEY_BYTES_MAX;
const _: () =
    assert!(VARINT_BYTES_MAX + RELATIVE_KEY_BYTES_MAX <= u16::MAX as usize, "fjall keys are at most 65535 bytes");
const _: () =
    assert!(STATE_NAME_BYTES_MAX < 1 << 14 && STATE_KEY_BYTES_MAX < 1 << 21, "their varints fit 2 and 3 bytes");
/// Writes per fjall batch while clearing or restoring, and bytes: bounds the memory a batch holds.
const BATCH_ENTRIES_MAX: usize = 4096;
const BATCH_BYTES_MAX: usize = 8 << 20;

/// The keyed state of one job process: a fjall database holding every operator's state.
///
/// A cheap handle (`Clone`, `Send`, `Sync`); each subtask takes its own [`OperatorState`].
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    db: Database,
    dir: PathBuf,
    /// Change tracking of every subtask that has been opened, by (keyspace, subtask).
    subtasks: Mutex<HashMap<(String, u32), Slot>>,
}

enum Slot {
    /// An [`OperatorState`] holds the subtask's tracking.
    InUse,
    /// The handle was dropped; its tracking waits for the next one.
    Parked(Tracking),
}

/// Bytes of a subtask's state cache unless [`OperatorState::set_cache_budget`] says otherwise.
pub const STATE_CACHE_BYTES_DEFAULT: usize = 32 << 20;

/// What a subtask remembers between snapshots.
struct Tracking {
    /// Full fjall keys written or deleted since the last snapshot, each with whether it may
    /// have existed at that snapshot (`false` only when it is known it did not).
    changed: HashMap<Box<[u8]>, bool>,
    /// The write-back cache (parked with the rest when the handle is dropped).
    cache: StateCache,
    /// The seq of the next list append: above every list item of the subtask.
    next_list_seq: u64,
    /// Bytes of every snapshot file this subtask wrote.
    snapshot_bytes: u64,
}

impl Default for Tracking {
    fn default() -> Self {
        Self {
            changed: HashMap::new(),
            cache: StateCache::new(STATE_CACHE_BYTES_DEFAULT),
            next_list_seq: 0,
            snapshot_bytes: 0,
        }
    }
}

impl StateStore {
    /// Opens (creating) the working fjall database at `dir`.
    ///
    /// The working copy is scratch: recovery rebuilds it from checkpoint files, so it is never
    /// fsynced, and any state a previous process left in `dir` is dropped here. fjall locks the
    /// directory, so a second process opening the same `dir` fails instead of sharing it.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        let store_error = |e: fjall::Error| StateError::Store(format!("{}: {e}", dir.display()));
        let db = Database::builder(dir).manual_journal_persist(true).open().map_err(store_error)?;
        for name in db.list_keyspace_names() {
            let keyspace = db.keyspace(&name, keyspace_options).map_err(store_error)?;
            db.delete_keyspace(keyspace).map_err(store_error)?;
        }
        let subtasks = Mutex::new(HashMap::new());
        Ok(Self { inner: Arc::new(StoreInner { db, dir: dir.to_owned(), subtasks }) })
    }

    /// State of subtask `subtask` of operator `operator_id`: one fjall keyspace per operator;
    /// subtasks' entries are separated by a subtask prefix inside it.
    ///
    /// At most one handle per subtask lives at a time (a second is [`StateError::Store`]); a
    /// handle opened after an earlier one was dropped continues its change tracking.
    pub fn operator(&self, operator_id: &str, subtask: u32) -> Result<OperatorState, StateError> {
        let keyspace_name = keyspace_name(operator_id);
        let keyspace = self
            .inner
            .db
            .keyspace(&keyspace_name, keyspace_options)
            .map_err(|e| StateError::Store(format!("keyspace of operator {operator_id:?}: {e}")))?;
        let tracking = {
            let mut subtasks = self.inner.subtasks.lock().unwrap_or_else(PoisonError::into_inner);
            match subtasks.entry((keyspace_name.clone(), subtask)) {
                Entry::Vacant(slot) => {
                    slot.insert(Slot::InUse);
                    Tracking::default()
                }
                Entry::Occupied(mut slot) => match std::mem::replace(slot.get_mut(), Slot::InUse) {
                    Slot::Parked(tracking) => tracking,
                    Slot::InUse => {
                        return Err(StateError::Store(format!(
                            "state of {operator_id}[{subtask}] is already held by another handle"
                        )));
                    }
                },
            }
        };
        let mut tracking = tracking;
        let cache = RefCell::new(std::mem::take(&mut tracking.cache));
        Ok(OperatorState {
            store: Arc::clone(&self.inner),
            cache,
            keyspace,
            file_stem: format!("{keyspace_name}-s{subtask}"),
            keyspace_name,
            prefix: subtask_prefix(subtask),
            operator_id: operator_id.to_owned(),
            subtask,
            tracking,
            scratch: RefCell::new(Vec::new()),
        })
    }
}

/// Asked with the length of each value (or map entry) a read is about to copy out of the store,
/// before it copies it; an error (typically [`StateError::Limit`]) stops the read there.
pub type Admit<'a> = &'a mut dyn FnMut(usize) -> Result<(), StateError>;

fn admit_all(_: usize) -> Result<(), StateError> {
    Ok(())
}

fn copy_admitted(value: &[u8], admit: Admit<'_>) -> Result<Vec<u8>, StateError> {
    admit(value.len())?;
    Ok(value.to_vec())
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

/// The keyed state of one operator subtask; owned by that subtask's task.
///
/// Every write records its key for the next [`Self::snapshot`]. Reads take `&self` and reuse one
/// key buffer, so the hot path allocates only what fjall and the returned values need.
pub struct OperatorState {
    store: Arc<StoreInner>,
    keyspace: Keyspace,
    keyspace_name: String,
    /// `<keyspace name>-s<subtask>`: unique per subtask, safe in file names.
    file_stem: String,
    operator_id: String,
    subtask: u32,
    /// The subtask's key prefix (its varint).
    prefix: Vec<u8>,
    /// The subtask's tracking; its `cache` is moved into [`Self::cache`] while the handle lives.
    tracking: Tracking,
    cache: RefCell<StateCache>,
    /// The encoded key of the current call (reads need it behind `&self`).
    scratch: RefCell<Vec<u8>>,
}

impl OperatorState {
    pub fn value_get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.value_get_admitted(name, key, &mut admit_all)
    }

    /// As [`Self::value_get`], asking `admit` before copying the value out of the store.
    pub fn value_get_admitted(&self, name: &str, key: &[u8], admit: Admit<'_>) -> Result<Option<Vec<u8>>, StateError> {
        let mut buf = self.scratch.borrow_mut();
        self.encode(&mut buf, KIND_VALUE, name, key, &[])?;
        self.point_get(&buf, admit)
    }

    pub fn value_get_many(&self, name: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.value_get_many_admitted(name, keys, &mut admit_all)
    }

    /// As [`Self::value_get_many`], asking `admit` before copying each value: a caller that
    /// refuses stops the read before the values it would not take are copied.
    pub fn value_get_many_admitted(
        &self,
        name: &str,
        keys: &[Vec<u8>],
        admit: Admit<'_>,
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let mut buf = self.scratch.borrow_mut();
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            self.encode(&mut buf, KIND_VALUE, name, key, &[])?;
            values.push(self.point_get(&buf, admit)?);
        }
        Ok(values)
    }

    pub fn value_set(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        check_value(value)?;
        self.write_key(KIND_VALUE, name, key, &[], Some(value))
    }

    /// Sets every entry (through the cache: one fjall batch at the next flush).
    pub fn value_set_many(&mut self, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        for (_, value) in entries {
            check_value(value)?;
        }
        let mut buf = std::mem::take(self.scratch.get_mut());
        let written = entries.iter().try_for_each(|(key, value)| {
            encode_key(&mut buf, &self.prefix, KIND_VALUE, name, key, &[])?;
            self.point_write(&buf, Some(value))
        });
        *self.scratch.get_mut() = buf;
        written
    }

    pub fn value_delete(&mut self, name: &str, key: &[u8]) -> Result<(), StateError> {
        self.write_key(KIND_VALUE, name, key, &[], None)
    }

    /// The items of a list, in append order.
    pub fn list_get(&self, name: &str, key: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        self.list_get_admitted(name, key, &mut admit_all)
    }

    /// As [`Self::list_get`], asking `admit` before copying each item.
    pub fn list_get_admitted(&self, name: &str, key: &[u8], admit: Admit<'_>) -> Result<Vec<Vec<u8>>, StateError> {
        let mut buf = self.scratch.borrow_mut();
        self.encode(&mut buf, KIND_LIST, name, key, &[])?;
        let mut items = Vec::new();
        self.scan(&buf, |_, item| {
            items.push(copy_admitted(item, admit)?);
            Ok(())
        })?;
        Ok(items)
    }

    /// Appends an item: one write under a fresh seq, whatever the list's length.
    pub fn list_append(&mut self, name: &str, key: &[u8], item: &[u8]) -> Result<(), StateError> {
        check_value(item)?;
        let seq = self.tracking.next_list_seq;
        let mut buf = std::mem::take(self.scratch.get_mut());
        let written = encode_key(&mut buf, &self.prefix, KIND_LIST, name, key, &seq.to_be_bytes()).and_then(|()| {
            self.tracking.next_list_seq =
                seq.checked_add(1).ok_or_else(|| StateError::Limit("list seqs exhausted".into()))?;
            // A fresh seq: the item did not exist at the last snapshot.
            self.tracking.changed.entry(buf[..].into()).or_insert(false);
            self.cache.get_mut().write(&buf, Some(item));
            self.make_room()
        });
        *self.scratch.get_mut() = buf;
        written
    }

    pub fn list_clear(&mut self, name: &str, key: &[u8]) -> Result<(), StateError> {
        // The prefix lives in the scratch buffer, moved out while `remove_prefix` borrows `self`.
        let mut prefix = std::mem::take(self.scratch.get_mut());
        let removed = encode_key(&mut prefix, &self.prefix, KIND_LIST, name, key, &[])
            .and_then(|()| self.remove_prefix(&prefix, true));
        *self.scratch.get_mut() = prefix;
        removed
    }

    pub fn map_get(&self, name: &str, key: &[u8], field: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.map_get_admitted(name, key, field, &mut admit_all)
    }

    /// As [`Self::map_get`], asking `admit` before copying the value.
    pub fn map_get_admitted(
        &self,
        name: &str,
        key: &[u8],
        field: &[u8],
        admit: Admit<'_>,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let mut buf = self.scratch.borrow_mut();
        self.encode(&mut buf, KIND_MAP, name, key, field)?;
        self.point_get(&buf, admit)
    }

    pub fn map_put(&mut self, name: &str, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), StateError> {
        check_value(value)?;
        self.write_key(KIND_MAP, name, key, field, Some(value))
    }

    pub fn map_remove(&mut self, name: &str, key: &[u8], field: &[u8]) -> Result<(), StateError> {
        self.write_key(KIND_MAP, name, key, field, None)
    }

    /// The entries of a map, ordered by field bytes.
    #[allow(clippy::type_complexity, reason = "(field, value) pairs read plainly in this signature")]
    pub fn map_entries(&self, name: &str, key: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        self.map_entries_admitted(name, key, &mut admit_all)
    }

    /// As [`Self::map_entries`], asking `admit` before copying each entry (field and value).
    #[allow(clippy::type_complexity, reason = "(field, value) pairs read plainly in this signature")]
    pub fn map_entries_admitted(
        &self,
        name: &str,
        key: &[u8],
        admit: Admit<'_>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        let mut buf = self.scratch.borrow_mut();
        self.encode(&mut buf, KIND_MAP, name, key, &[])?;
        let prefix_len = buf.len();
        let mut entries = Vec::new();
        self.scan(&buf, |k, v| {
            let field = k.get(prefix_len..).unwrap_or_default();
            admit(field.len() + v.len())?;
            entries.push((field.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(entries)
    }

    /// Sets the byte budget of this subtask's write-back cache (0: every write goes straight
    /// to fjall, nothing read is kept). A smaller budget flushes and evicts at once.
    pub fn set_cache_budget(&mut self, bytes: usize) -> Result<(), StateError> {
        self.cache.get_mut().set_budget(bytes);
        self.make_room()
    }

    /// Bytes the write-back cache holds now (for metrics).
    pub fn cache_bytes(&self) -> usize {
        self.cache.borrow().bytes()
    }

    /// Writes every cached write and delete to fjall, in bounded batches.
    pub fn flush(&self) -> Result<(), StateError> {
        let mut cache = self.cache.borrow_mut();
        if !cache.has_dirty() {
            return Ok(());
        }
        let mut batch = self.store.db.batch();
        let mut batch_bytes = 0usize;
        for (key, value) in cache.dirty_entries() {
            match value {
                Some(value) => {
                    batch_bytes += key.len() + value.len();
                    batch.insert(&self.keyspace, key, value);
                }
                None => {
                    batch_bytes += key.len();
                    batch.remove(&self.keyspace, key);
                }
            }
            if batch.len() >= BATCH_ENTRIES_MAX || batch_bytes >= BATCH_BYTES_MAX {
                std::mem::replace(&mut batch, self.store.db.batch()).commit().map_err(fjall_error)?;
                batch_bytes = 0;
            }
        }
        batch.commit().map_err(fjall_error)?;
        // Only now: a failed commit leaves the entries dirty, to be written again.
        cache.mark_clean();
        Ok(())
    }

    /// Removes every entry of this subtask (before a restore). The removals are tracked, so the
    /// next delta snapshot records them.
    pub fn clear(&mut self) -> Result<(), StateError> {
        let prefix = self.prefix.clone();
        self.remove_prefix(&prefix, true)
    }

    /// Writes a snapshot file for checkpoint `checkpoint` into `dir` and fsyncs it (and `dir`).
    ///
    /// With `full` = false, a delta: the current value, or a tombstone, of every entry changed
    /// since the previous snapshot (cost proportional to the changes); `None` when nothing
    /// changed — no file is written, and the engine leaves this subtask's chain as it is. With
    /// `full` = true, every entry of the subtask, always written (even when empty).
    ///
    /// The change set is cleared once the file is durable: from then on the file must stay in the
    /// subtask's chain even if checkpoint `checkpoint` never completes (see the crate docs). The
    /// file is named `c<checkpoint:012>-<operator>-s<subtask>-<delta|full>.state`.
    pub fn snapshot(&mut self, dir: &Path, checkpoint: u64, full: bool) -> Result<Option<StateFile>, StateError> {
        if !full && self.tracking.changed.is_empty() {
            return Ok(None);
        }
        self.flush()?;
        let name = crate::checkpoint_file_name(
            checkpoint,
            &format!("{}-{}.state", self.file_stem, if full { "full" } else { "delta" }),
        );
        let file = DurableFile::create(dir, &name)?;
        let temp = file.temp_path().to_owned();
        let io = |e: std::io::Error| io_error(&temp, &e);
        let mut writer = SnapshotWriter::new(file, Header { full, checkpoint }).map_err(io)?;
        let mut records = 0usize;
        if full {
            for guard in self.keyspace.prefix(&self.prefix) {
                let (k, v) = guard.into_inner().map_err(fjall_error)?;
                writer.put(self.relative(&k), &v).map_err(io)?;
                records += 1;
            }
        } else {
            let mut keys: Vec<(&[u8], bool)> = self.tracking.changed.iter().map(|(k, e)| (&k[..], *e)).collect();
            keys.sort_unstable();
            for (key, existed) in keys {
                match self.keyspace.get(key).map_err(fjall_error)? {
                    Some(v) => writer.put(self.relative(key), &v).map_err(io)?,
                    None if existed => writer.tombstone(self.relative(key)).map_err(io)?,
                    // Created and removed since the last snapshot: in neither state.
                    None => continue,
                }
                records += 1;
            }
        }
        let (bytes, sha256) = writer.finish().map_err(io)?.commit()?;
        self.tracking.changed.clear();
        self.tracking.snapshot_bytes += bytes;
        tracing::debug!(operator = %self.operator_id, subtask = self.subtask, checkpoint, full, records, bytes, "state snapshot");
        Ok(Some(StateFile { name, bytes, sha256, full, checkpoint }))
    }

    /// Clears this subtask's entries and applies `chain` in order (a full snapshot, then deltas).
    ///
    /// Every file's size and SHA-256 are verified before anything is cleared; a mismatch, a chain
    /// not starting with a full snapshot, or a file whose header disagrees with its description
    /// is [`StateError::Corrupt`] naming the file. The change set is cleared. If applying fails
    /// part-way the subtask's state is unspecified: restore again (or clear) before using it.
    pub fn restore(&mut self, dir: &Path, chain: &[StateFile]) -> Result<(), StateError> {
        for f in chain {
            verify_file(dir, f)?;
        }
        if let Some(first) = chain.first().filter(|f| !f.full) {
            let message = "a restore chain must start with a full snapshot".to_owned();
            return Err(StateError::Corrupt { path: dir.join(&first.name), message });
        }
        self.cache.get_mut().clear();
        let prefix = self.prefix.clone();
        self.remove_prefix(&prefix, false)?;
        for f in chain {
            self.apply(dir, f)?;
        }
        self.tracking.changed.clear();
        Ok(())
    }

    /// Entries changed since the last snapshot (for metrics).
    pub fn pending_changes(&self) -> usize {
        self.tracking.changed.len()
    }

    /// Bytes of every snapshot file this subtask has written (for metrics).
    pub fn snapshot_bytes(&self) -> u64 {
        self.tracking.snapshot_bytes
    }

    fn encode(&self, buf: &mut Vec<u8>, kind: u8, name: &str, key: &[u8], suffix: &[u8]) -> Result<(), StateError> {
        encode_key(buf, &self.prefix, kind, name, key, suffix)
    }

    /// Reads one fjall key through the cache, remembering what fjall said.
    fn point_get(&self, key: &[u8], admit: Admit<'_>) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(known) = self.cache.borrow().get(key) {
            return known.map(|v| copy_admitted(v, admit)).transpose();
        }
        let value = self.keyspace.get(key).map_err(fjall_error)?;
        self.cache.borrow_mut().fill(key, value.as_deref());
        self.make_room()?;
        value.map(|v| copy_admitted(&v, admit)).transpose()
    }

    /// Encodes one key in the scratch buffer and writes (`Some`) or deletes (`None`) it.
    fn write_key(
        &mut self,
        kind: u8,
        name: &str,
        key: &[u8],
        suffix: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StateError> {
        // The buffer is moved out while `point_write` borrows `self`.
        let mut buf = std::mem::take(self.scratch.get_mut());
        let written =
            encode_key(&mut buf, &self.prefix, kind, name, key, suffix).and_then(|()| self.point_write(&buf, value));
        *self.scratch.get_mut() = buf;
        written
    }

    /// Writes (`Some`) or deletes (`None`) one fjall key through the cache, tracking it.
    fn point_write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StateError> {
        let cache = self.cache.get_mut();
        if !self.tracking.changed.contains_key(key) {
            // Unchanged since the last snapshot: what the cache knows is what that snapshot
            // holds. Not cached: it may have existed.
            let existed = cache.get(key).is_none_or(|v| v.is_some());
            self.tracking.changed.insert(key.into(), existed);
        }
        cache.write(key, value);
        self.make_room()
    }

    /// Brings the cache under its budget: clean entries are evicted first (to half the
    /// budget); if unwritten ones still fill it, they are flushed and evicted in turn.
    fn make_room(&self) -> Result<(), StateError> {
        let mut cache = self.cache.borrow_mut();
        if !cache.over_budget() {
            return Ok(());
        }
        let target = cache.budget() / 2;
        cache.evict_to(target);
        if !cache.over_budget() {
            return Ok(());
        }
        drop(cache);
        self.flush()?;
        self.cache.borrow_mut().evict_to(target);
        Ok(())
    }

    /// Calls `f` on every entry whose fjall key starts with `prefix`, in key order: fjall's
    /// entries merged with the cache's unwritten ones (which win, and hide deleted keys).
    fn scan(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StateError>) -> Result<(), StateError> {
        let cache = self.cache.borrow();
        let mut unwritten = cache.dirty_under(prefix).peekable();
        for guard in self.keyspace.prefix(prefix) {
            let (key, value) = guard.into_inner().map_err(fjall_error)?;
            while let Some((k, v)) = unwritten.next_if(|(k, _)| *k < &key[..]) {
                if let Some(v) = v {
                    f(k, v)?;
                }
            }
            match unwritten.next_if(|(k, _)| *k == &key[..]) {
                Some((_, Some(v))) => f(&key, v)?,
                Some((_, None)) => {}
                None => f(&key, &value)?,
            }
        }
        for (k, v) in unwritten {
            if let Some(v) = v {
                f(k, v)?;
            }
        }
        Ok(())
    }

    /// A fjall key of this subtask without its subtask prefix.
    fn relative<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        key.get(self.prefix.len()..).unwrap_or_default()
    }

    /// Removes every entry whose fjall key starts with `prefix`, in bounded batches.
    /// Unwritten entries of the prefix were tracked when written; they are dropped from the cache.
    fn remove_prefix(&mut self, prefix: &[u8], track_removals: bool) -> Result<(), StateError> {
        self.cache.get_mut().forget_under(prefix);
        let mut batch = self.store.db.batch();
        for guard in self.keyspace.prefix(prefix) {
            let key = guard.key().map_err(fjall_error)?;
            if track_removals && !self.tracking.changed.contains_key(&key[..]) {
                // In fjall and unchanged since the last snapshot: it existed then.
                self.tracking.changed.insert(key[..].into(), true);
            }
            batch.remove(&self.keyspace, key);
            if batch.len() >= BATCH_ENTRIES_MAX {
                std::mem::replace(&mut batch, self.store.db.batch()).commit().map_err(fjall_error)?;
            }
        }
        batch.commit().map_err(fjall_error)
    }

    /// Applies one verified snapshot file on top of the current state.
    fn apply(&mut self, dir: &Path, f: &StateFile) -> Result<(), StateError> {
        let path = dir.join(&f.name);
        let file = File::open(&path).map_err(|e| io_error(&path, &e))?;
        let input = BufReader::with_capacity(256 * 1024, file);
        let (mut reader, header) = SnapshotReader::new(input, &path, RELATIVE_KEY_BYTES_MAX)?;
        let corrupt = |message: String| StateError::Corrupt { path: path.clone(), message };
        if header != (Header { full: f.full, checkpoint: f.checkpoint }) {
            return Err(corrupt(format!(
                "header says full={} checkpoint={}, the manifest says full={} checkpoint={}",
                header.full, header.checkpoint, f.full, f.checkpoint
            )));
        }
        let mut batch = self.store.db.batch();
        let mut batch_bytes = 0usize;
        let mut key = Vec::new();
        while let Some(record) = reader.next_record()? {
            let list_seq = parse_relative_key(&reader.key).map_err(|m| corrupt(format!("record key: {m}")))?;
            if let Some(seq) = list_seq {
                self.tracking.next_list_seq = self.tracking.next_list_seq.max(seq.saturating_add(1));
            }
            key.clear();
            key.extend_from_slice(&self.prefix);
            key.extend_from_slice(&reader.key);
            match record {
                Record::Put => {
                    batch_bytes += key.len() + reader.value.len();
                    batch.insert(&self.keyspace, &key[..], &reader.value[..]);
                }
                Record::Tombstone if header.full => return Err(corrupt("a tombstone in a full snapshot".to_owned())),
                Record::Tombstone => {
                    batch_bytes += key.len();
                    batch.remove(&self.keyspace, &key[..]);
                }
            }
            if batch.len() >= BATCH_ENTRIES_MAX || batch_bytes >= BATCH_BYTES_MAX {
                std::mem::replace(&mut batch, self.store.db.batch()).commit().map_err(fjall_error)?;
                batch_bytes = 0;
            }
        }
        batch.commit().map_err(fjall_error)
    }
}

impl Drop for OperatorState {
    fn drop(&mut self) {
        let mut tracking = std::mem::take(&mut self.tracking);
        tracking.cache = std::mem::take(self.cache.get_mut());
        let mut subtasks = self.store.subtasks.lock().unwrap_or_else(PoisonError::into_inner);
        subtasks.insert((std::mem::take(&mut self.keyspace_name), self.subtask), Slot::Parked(tracking));
    }
}

impl fmt::Debug for OperatorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorState")
            .field("operator", &self.operator_id)
            .field("subtask", &self.subtask)
            .field("pending_changes", &self.tracking.changed.len())
            .finish_non_exhaustive()
    }
}

fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().manual_journal_persist(true)
}

/// A fjall keyspace name for any operator id: its safe characters (at most 40), for people
/// reading the directory, then 128 bits of its SHA-256, for uniqueness. Also used in file names.
fn keyspace_name(operator_id: &str) -> String {
    let readable: String = operator_id
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    let digest = Sha256::digest(operator_id.as_bytes());
    format!("op-{readable}-{}", hex::encode(&digest[..16]))
}

/// Encodes a fjall key (see the module docs) into `buf`, checking the limits.
fn encode_key(
    buf: &mut Vec<u8>,
    subtask_prefix: &[u8],
    kind: u8,
    name: &str,
    key: &[u8],
    suffix: &[u8],
) -> Result<(), StateError> {
    if name.len() > STATE_NAME_BYTES_MAX {
        return Err(StateError::Limit(format!(
            "state name of {} bytes is longer than {STATE_NAME_BYTES_MAX} bytes",
            name.len()
        )));
    }
    if key.len() > STATE_KEY_BYTES_MAX {
        return Err(StateError::Limit(format!(
            "key of {} bytes is longer than {STATE_KEY_BYTES_MAX} bytes",
            key.len()
        )));
    }
    if suffix.len() > STATE_KEY_BYTES_MAX {
        return Err(StateError::Limit(format!(
            "map field of {} bytes is longer than {STATE_KEY_BYTES_MAX} bytes",
            suffix.len()
        )));
    }
    buf.clear();
    buf.extend_from_slice(subtask_prefix);
    push_varint(buf, key.len());
    buf.extend_from_slice(key);
    buf.push(kind);
    push_varint(buf, name.len());
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(suffix);
    Ok(())
}

fn subtask_prefix(subtask: u32) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(VARINT_BYTES_MAX);
    push_varint(&mut prefix, subtask as usize);
    prefix
}

/// Appends `value` as unsigned LEB128: 7 bits a byte, low bits first, high bit set on all but the last.
fn push_varint(buf: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads a canonical (shortest) LEB128 varint of at most `max`; returns it and the rest.
fn split_varint(bytes: &[u8], max: usize) -> Option<(usize, &[u8])> {
    let mut value = 0usize;
    for (i, &byte) in bytes.iter().enumerate().take(3) {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let canonical = i == 0 || byte != 0;
            return (canonical && value <= max).then(|| (value, &bytes[i + 1..]));
        }
    }
    None
}

fn split_len_prefixed(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let (len, rest) = split_varint(bytes, max)?;
    rest.split_at_checked(len)
}

/// Checks a relative key (without its subtask prefix) read from a snapshot file; returns the seq
/// of a list item.
fn parse_relative_key(key: &[u8]) -> Result<Option<u64>, String> {
    let (_, rest) = split_len_prefixed(key, STATE_KEY_BYTES_MAX).ok_or("bad key")?;
    let (&kind, rest) = rest.split_first().ok_or("no kind")?;
    let (name, suffix) = split_len_prefixed(rest, STATE_NAME_BYTES_MAX).ok_or("bad name")?;
    std::str::from_utf8(name).map_err(|_| "name is not UTF-8")?;
    match kind {
        KIND_VALUE if suffix.is_empty() => Ok(None),
        KIND_LIST => match <[u8; LIST_SEQ_BYTES]>::try_from(suffix) {
            Ok(seq) => Ok(Some(u64::from_be_bytes(seq))),
            Err(_) => Err("bad list seq".to_owned()),
        },
        KIND_MAP if suffix.len() <= STATE_KEY_BYTES_MAX => Ok(None),
        _ => Err(format!("bad kind {kind:#04x} or suffix")),
    }
}

fn check_value(value: &[u8]) -> Result<(), StateError> {
    if value.len() > STATE_VALUE_BYTES_MAX {
        return Err(StateError::Limit(format!(
            "value of {} bytes is larger than {STATE_VALUE_BYTES_MAX} bytes",
            value.len()
        )));
    }
    Ok(())
}

fn fjall_error(e: fjall::Error) -> StateError {
    StateError::Store(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_names_are_valid_and_distinct() {
        let names: Vec<String> = ["count", "count ", "a/b", "ünïcødé", "x".repeat(1000).as_str(), ""]
            .iter()
            .map(|id| keyspace_name(id))
            .collect();
        for name in &names {
            assert!(name.len() <= 80, "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{name}");
        }
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert!(names[0].starts_with("op-count-"));
    }

    #[test]
    fn relative_keys_parse_back() {
        let prefix = subtask_prefix(300);
        assert_eq!(prefix, [0xAC, 0x02]);
        let relative = |buf: &[u8]| buf[prefix.len()..].to_vec();
        let mut buf = Vec::new();
        encode_key(&mut buf, &prefix, KIND_LIST, "n", b"k", &9u64.to_be_bytes()).unwrap();
        assert_eq!(parse_relative_key(&relative(&buf)), Ok(Some(9)));
        encode_key(&mut buf, &prefix, KIND_MAP, "n", b"k", b"field").unwrap();
        assert_eq!(parse_relative_key(&relative(&buf)), Ok(None));
        encode_key(&mut buf, &prefix, KIND_VALUE, "n", &[7; 200], &[]).unwrap();
        assert_eq!(parse_relative_key(&relative(&buf)), Ok(None));
        assert!(parse_relative_key(&relative(&buf)[..4]).is_err());
        buf.push(0);
        assert!(parse_relative_key(&relative(&buf)).is_err(), "a value key has no suffix");
    }

    #[test]
    fn varints_are_canonical_and_bounded() {
        for value in [0, 1, 127, 128, 255, 256, 16_383, 16_384, STATE_KEY_BYTES_MAX] {
            let mut buf = Vec::new();
            push_varint(&mut buf, value);
            buf.push(0xEE);
            assert_eq!(split_varint(&buf, STATE_KEY_BYTES_MAX), Some((value, &[0xEE][..])), "{value}");
        }
        assert_eq!(split_varint(&[0x80, 0x00], 1000), None, "not the shortest encoding");
        assert_eq!(split_varint(&[0x81, 0x01], 128), None, "129 is above the maximum");
        assert_eq!(split_varint(&[0x80, 0x80, 0x80, 0x01], usize::MAX), None, "longer than 3 bytes");
        assert_eq!(split_varint(&[0x80], 1000), None, "truncated");
    }

    #[test]
    fn short_keys_stay_within_fjalls_inline_size() {
        let mut buf = Vec::new();
        encode_key(&mut buf, &subtask_prefix(5), KIND_VALUE, "count", &[0; 8], &[]).unwrap();
        assert_eq!(buf.len(), 17);
    }
}
