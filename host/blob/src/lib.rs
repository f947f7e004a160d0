//! The host blob store: large objects held by reference, content-addressed,
//! reference-counted, kept in memory up to a budget and spilled to disk past
//! it, pinned while a retained checkpoint needs them.
//!
//! A blob is named by the SHA-256 of its bytes; a reference to it
//! ([`BlobRef`]) also carries its size, media type and a token: the first 16
//! bytes of an HMAC-SHA-256 over digest, size and media type under a secret
//! of the job. Guests can pass references along but cannot forge one, nor use
//! one from another job ([`BlobStore::check`]).
//!
//! Who keeps a blob alive (its reference count):
//! - every live Arrow batch whose blob column carries it: [`BlobStore::pin_batch`]
//!   rebuilds the column's digest buffer over an owner that holds a [`Pin`],
//!   so the count follows the batch through channels, clones and slices, and
//!   drops when the last copy of the buffer does;
//! - explicit [`Pin`]s: a blob being made, a guest's `retain`;
//! - checkpoints: [`BlobStore::pin_checkpoint`] writes the blob durably and
//!   records the checkpoint's id; [`BlobStore::release_checkpoints_except`]
//!   drops those pins when a checkpoint is no longer retained.
//!
//! A blob nothing keeps is removed at once (its memory freed, its spill file
//! deleted). Blobs read from local files are not copied: the store remembers
//! the file's identity and change time ([`FileStamp`]), refuses to serve it if
//! they differ, and checks the digest of every whole read (see `file.rs`).
//!
//! Spill files go to a directory the store makes and owns inside the
//! configured one (`spill.rs`); the job key is bound to one job's
//! checkpoint lineage (`key.rs`).

mod batch;
mod fetch;
mod file;
mod key;
mod spill;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_array::RecordBatch;
use bytes::Bytes;
pub use flumen_batch::media::{BlobRef, DIGEST_BYTES, OCTET_STREAM, TOKEN_BYTES};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use batch::{
    ChunkError, carry_pins, digest_batch, digest_schema, materialize_batch, materialize_in_chunks, materialized_schema,
};
pub use fetch::{EXTERNAL_OBJECT_BYTES_MAX, FetchError, fetch_uri, fetch_uri_into, local_path};
pub use file::FileStamp;
pub use flumen_batch::pins::{RowError, blob_columns};
/// Keeps blobs alive while it lives (the capability's [`flumen_types::BlobPin`]).
pub use flumen_types::blob::BlobPin as Pin;
pub use flumen_types::blob::{BlobBackend, BlobError, BlobInfo, Digest, PinHolder, short};
pub use key::{LineageKey, key_path};
pub use spill::{SPILL_DIR_PREFIX, SPILL_MARKER, reclaim_dead_spill_dirs};

/// Bytes of the job secret that keys reference tokens.
pub const KEY_BYTES: usize = 32;

/// How a store is set up.
#[derive(Debug, Clone)]
pub struct BlobConfig {
    /// Bytes of blob data kept in memory; more is spilled to `spill_dir`.
    pub memory_budget: u64,
    /// The directory in which the store makes its own spill directory
    /// (`flumen-spill-<pid>-<random>`, on first spill; removed by
    /// [`BlobStore::close`]). This directory itself is never removed.
    pub spill_dir: PathBuf,
    /// Where blobs pinned by checkpoints are written durably, with the job's
    /// key: a checkpointed job's `<checkpoint dir>/blobs`. `None`: no checkpoints.
    pub durable_dir: Option<PathBuf>,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
enum Location {
    Memory(Bytes),
    /// A spill file of ours (deleted with the entry).
    Spilled(PathBuf),
    /// A file written for a checkpoint (deleted when no checkpoint pins it).
    Durable(PathBuf),
    /// A user's file, read in place; served only while unchanged.
    File {
        path: PathBuf,
        stamp: FileStamp,
        /// Whether the stamp was seen old enough that any later change to the
        /// file must change it (until then every read checks the digest).
        settled: bool,
    },
}

#[derive(Debug)]
struct Entry {
    size: u64,
    media_type: String,
    source: Option<String>,
    location: Location,
    /// Live pins: batches, retains, blobs being made.
    refs: u64,
    /// Checkpoints (region, id) that need this blob after a restart.
    checkpoints: BTreeSet<(String, u64)>,
    last_use: u64,
}

impl Entry {
    /// Equal bytes added again: one more pin, a fresh use, and the first
    /// source the blob is known by kept.
    fn pin_again(&mut self, now: u64, source: Option<String>) {
        self.refs += 1;
        self.last_use = now;
        if self.source.is_none() {
            self.source = source;
        }
    }
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Digest, Entry>,
    memory: u64,
    clock: u64,
    /// Whether the store's own spill directory exists (made on first spill).
    spill_made: bool,
}

/// Counters of a store, for the run summary and tests.
#[derive(Debug, Default)]
struct Counters {
    created: AtomicU64,
    bytes_created: AtomicU64,
    bytes_read: AtomicU64,
    spilled: AtomicU64,
    bytes_spilled: AtomicU64,
    peak_memory: AtomicU64,
    released: AtomicU64,
}

/// What the store did, for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStats {
    /// Blobs held now and their bytes (in memory, spilled, durable or in place).
    pub blobs: u64,
    pub bytes: u64,
    pub memory_bytes: u64,
    /// The most bytes ever held in memory at once (at most the budget, plus one
    /// blob being checked while it is spilled).
    pub peak_memory_bytes: u64,
    pub memory_budget: u64,
    /// Blobs made (new digests only) and their bytes.
    pub created: u64,
    pub bytes_created: u64,
    /// Bytes served to readers (guests and sinks).
    pub bytes_read: u64,
    /// Blobs written to the spill directory and their bytes.
    pub spilled: u64,
    pub bytes_spilled: u64,
    /// Blobs removed because nothing needed them any more.
    pub released: u64,
}

/// What a checkpoint records about a blob it pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedBlob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A user's file read in place (not copied); otherwise the bytes are in the durable directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// The blob store of one job. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("stats", &self.stats()).finish()
    }
}

struct Inner {
    /// The job key: random, until [`BlobStore::bind_lineage`] binds a checkpointed job's.
    key: std::sync::RwLock<[u8; KEY_BYTES]>,
    config: BlobConfig,
    /// The spill directory this store owns (inside `config.spill_dir`).
    spill: PathBuf,
    entries: Mutex<Entries>,
    counters: Counters,
}

/// A pin's drop: one reference fewer on each digest, and the blobs nothing
/// keeps any more removed.
impl PinHolder for Inner {
    fn unpin(&self, digests: &[Digest]) {
        let mut e = self.lock();
        for d in digests {
            if let Some(entry) = e.map.get_mut(d) {
                entry.refs = entry.refs.saturating_sub(1);
            }
            self.collect(&mut e, d);
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes `d` if nothing needs it any more.
    fn collect(&self, e: &mut Entries, d: &Digest) {
        let Some(entry) = e.map.get(d) else { return };
        if entry.refs > 0 || !entry.checkpoints.is_empty() {
            return;
        }
        let Some(entry) = e.map.remove(d) else { return };
        self.counters.released.fetch_add(1, Relaxed);
        match entry.location {
            Location::Memory(b) => e.memory -= b.len() as u64,
            Location::Spilled(p) | Location::Durable(p) => {
                if let Err(err) = std::fs::remove_file(&p)
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %p.display(), "cannot remove a released blob: {err}");
                }
            }
            Location::File { .. } => {}
        }
    }

    fn token(&self, digest: &Digest, size: u64, media_type: &str) -> [u8; TOKEN_BYTES] {
        let mac = self.mac(digest, size, media_type).finalize().into_bytes();
        let mut t = [0u8; TOKEN_BYTES];
        t.copy_from_slice(&mac[..TOKEN_BYTES]);
        t
    }

    fn mac(&self, digest: &Digest, size: u64, media_type: &str) -> Hmac<Sha256> {
        let key = *self.key.read().unwrap_or_else(|p| p.into_inner());
        // A key of any length is accepted by HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
        mac.update(digest);
        mac.update(&size.to_le_bytes());
        mac.update(media_type.as_bytes());
        mac
    }

    /// Spills least recently used in-memory blobs until `extra` more bytes fit the budget.
    fn make_room(&self, e: &mut Entries, extra: u64) -> Result<(), BlobError> {
        while e.memory + extra > self.config.memory_budget {
            let victim = e
                .map
                .iter()
                .filter(|(_, en)| matches!(en.location, Location::Memory(_)))
                .min_by_key(|(_, en)| en.last_use)
                .map(|(d, _)| *d);
            let Some(d) = victim else { break };
            self.ensure_spill_dir(e)?;
            let path = self.spill_path(&d);
            let Some(entry) = e.map.get_mut(&d) else { break };
            if let Location::Memory(bytes) = &entry.location {
                write_file(&path, bytes, false)?;
                e.memory -= bytes.len() as u64;
                self.counters.spilled.fetch_add(1, Relaxed);
                self.counters.bytes_spilled.fetch_add(bytes.len() as u64, Relaxed);
                entry.location = Location::Spilled(path);
            }
        }
        Ok(())
    }

    fn spill_path(&self, d: &Digest) -> PathBuf {
        self.spill.join(hex::encode(d))
    }

    /// Makes the store's own spill directory, with its marker, on first use.
    fn ensure_spill_dir(&self, e: &mut Entries) -> Result<(), BlobError> {
        if !e.spill_made {
            spill::make_own_dir(&self.spill)?;
            e.spill_made = true;
        }
        Ok(())
    }

    fn note_memory(&self, e: &Entries) {
        self.counters.peak_memory.fetch_max(e.memory, Relaxed);
    }
}

pub(crate) fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<(), BlobError> {
    let io = |e: std::io::Error| BlobError::Io(format!("writing {}: {e}", path.display()));
    let dir = path.parent().ok_or_else(|| BlobError::Io(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    if durable {
        let name = tmp.file_name().ok_or_else(|| BlobError::Io(format!("{} has no file name", path.display())))?;
        return flumen_types::durable::write(path, &name.to_string_lossy(), bytes).map_err(io);
    }
    // A spill file: atomic (never seen half-written) but not worth an fsync.
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).map_err(io)
}

/// The media type of a file name, from its extension (`application/octet-stream` when unknown).
pub fn media_type_of(name: &str) -> String {
    mime_guess::from_path(name).first_raw().unwrap_or(OCTET_STREAM).to_string()
}

impl BlobStore {
    /// A store with a fresh random key: references made by it are valid only
    /// in it (a checkpointed job then binds its lineage's key with
    /// [`BlobStore::bind_lineage`]). Spill directories that killed runs left in
    /// the configured spill directory are reclaimed here.
    pub fn new(config: BlobConfig) -> Result<Self, BlobError> {
        let key = key::random_key()?;
        reclaim_dead_spill_dirs(&config.spill_dir);
        Ok(Self::with_key(config, key))
    }

    /// A store keyed by `key` (tests).
    pub fn with_key(config: BlobConfig, key: [u8; KEY_BYTES]) -> Self {
        let spill = spill::own_dir_in(&config.spill_dir);
        Self {
            inner: Arc::new(Inner {
                key: std::sync::RwLock::new(key),
                config,
                spill,
                entries: Mutex::new(Entries::default()),
                counters: Counters::default(),
            }),
        }
    }

    /// Binds the key of a checkpointed job to its checkpoint lineage, before
    /// the run makes any reference: `resume` reads back the key that job
    /// `job` kept in the durable directory (the same lineage continues); a
    /// fresh run makes a new key and lineage, replacing that job's old one.
    /// Keys are kept per job, so jobs sharing a checkpoint directory never
    /// share a key. Without a durable directory the random key stays.
    pub fn bind_lineage(&self, job: &str, resume: bool) -> Result<Option<LineageKey>, BlobError> {
        let Some(dir) = &self.inner.config.durable_dir else { return Ok(None) };
        let bound = key::load_or_make(dir, job, resume)?;
        *self.inner.key.write().unwrap_or_else(|p| p.into_inner()) = bound.key;
        Ok(Some(bound))
    }

    /// [`BlobStore::bind_lineage`] for a run of only some of a job's
    /// regions while other processes run the others on the same checkpoint
    /// directory: the key that job `job` kept is read back, fresh run or not,
    /// and a new one is made only when there is none — atomically, so
    /// processes starting at once agree on one key and none replaces the key
    /// another already signs with. Without a durable directory the random key stays.
    pub fn bind_shared_lineage(&self, job: &str) -> Result<Option<LineageKey>, BlobError> {
        let Some(dir) = &self.inner.config.durable_dir else { return Ok(None) };
        let bound = key::load_or_make_shared(dir, job)?;
        *self.inner.key.write().unwrap_or_else(|p| p.into_inner()) = bound.key;
        Ok(Some(bound))
    }

    /// The memory budget, in bytes.
    pub fn memory_budget(&self) -> u64 {
        self.inner.config.memory_budget
    }

    /// A new file in the spill directory for bytes arriving in pieces (a
    /// fetched object), to be handed to [`BlobStore::adopt_spilled`].
    pub fn incoming_file(&self) -> Result<(PathBuf, std::fs::File), BlobError> {
        self.inner.ensure_spill_dir(&mut self.inner.lock())?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| BlobError::Io(format!("no randomness: {e}")))?;
        let path = self.inner.spill.join(format!("incoming-{}.tmp", hex::encode(nonce)));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| BlobError::Io(format!("{}: {e}", path.display())))?;
        Ok((path, file))
    }

    /// Takes the file `path` (from [`BlobStore::incoming_file`], holding
    /// `size` bytes whose SHA-256 is `digest`) as a spilled blob and pins it;
    /// if the store holds those bytes already, the file is removed.
    pub fn adopt_spilled(
        &self,
        path: &Path,
        digest: Digest,
        size: u64,
        media_type: &str,
        source: Option<String>,
    ) -> Result<(BlobRef, Pin), BlobError> {
        let inner = &self.inner;
        let mut e = inner.lock();
        e.clock += 1;
        let now = e.clock;
        if let Some(entry) = e.map.get_mut(&digest) {
            entry.pin_again(now, source);
            let _ = std::fs::remove_file(path);
        } else {
            let target = inner.spill_path(&digest);
            std::fs::rename(path, &target)
                .map_err(|err| BlobError::Io(format!("{} → {}: {err}", path.display(), target.display())))?;
            inner.counters.created.fetch_add(1, Relaxed);
            inner.counters.bytes_created.fetch_add(size, Relaxed);
            inner.counters.spilled.fetch_add(1, Relaxed);
            inner.counters.bytes_spilled.fetch_add(size, Relaxed);
            let entry = Entry {
                size,
                media_type: media_type.to_string(),
                source,
                location: Location::Spilled(target),
                refs: 1,
                checkpoints: BTreeSet::new(),
                last_use: now,
            };
            e.map.insert(digest, entry);
        }
        drop(e);
        Ok((self.reference(digest, size, media_type), self.pin_held(vec![digest])))
    }

    /// The directory this store spills into (it exists once something spilled).
    pub fn spill_dir(&self) -> &Path {
        &self.inner.spill
    }

    /// The reference the store gives `digest` with this size and media type.
    fn reference(&self, digest: Digest, size: u64, media_type: &str) -> BlobRef {
        let token = self.inner.token(&digest, size, media_type);
        BlobRef { digest, size, media_type: media_type.to_string(), token }
    }

    /// Adds `data` (or finds it: equal bytes are stored once) and pins it.
    pub fn put(&self, data: Bytes, media_type: &str, source: Option<String>) -> Result<(BlobRef, Pin), BlobError> {
        let digest: Digest = Sha256::digest(&data).into();
        let size = data.len() as u64;
        let inner = &self.inner;
        let mut e = inner.lock();
        e.clock += 1;
        let now = e.clock;
        if let Some(entry) = e.map.get_mut(&digest) {
            entry.pin_again(now, source);
        } else {
            inner.counters.created.fetch_add(1, Relaxed);
            inner.counters.bytes_created.fetch_add(size, Relaxed);
            let location = if size > inner.config.memory_budget {
                // Larger than the whole budget: straight to disk.
                inner.ensure_spill_dir(&mut e)?;
                let path = inner.spill_path(&digest);
                write_file(&path, &data, false)?;
                inner.counters.spilled.fetch_add(1, Relaxed);
                inner.counters.bytes_spilled.fetch_add(size, Relaxed);
                Location::Spilled(path)
            } else {
                inner.make_room(&mut e, size)?;
                e.memory += size;
                Location::Memory(data)
            };
            let entry = Entry {
                size,
                media_type: media_type.to_string(),
                source,
                location,
                refs: 1,
                checkpoints: BTreeSet::new(),
                last_use: now,
            };
            e.map.insert(digest, entry);
            inner.note_memory(&e);
        }
        drop(e);
        Ok((self.reference(digest, size, media_type), self.pin_held(vec![digest])))
    }

    /// Adds a local file in place (hashed as it is read, not copied) and pins it.
    pub fn put_file(&self, path: &Path, media_type: &str, source: &str) -> Result<(BlobRef, Pin), BlobError> {
        let err = |m: String| BlobError::Source { source_name: source.to_string(), message: m };
        let (digest, size, stamp) = file::hash_file(path).map_err(err)?;
        let settled = stamp.settled_now();
        let inner = &self.inner;
        let mut e = inner.lock();
        e.clock += 1;
        let now = e.clock;
        match e.map.get_mut(&digest) {
            Some(entry) => {
                entry.refs += 1;
                entry.last_use = now;
            }
            None => {
                inner.counters.created.fetch_add(1, Relaxed);
                inner.counters.bytes_created.fetch_add(size, Relaxed);
                let location = Location::File { path: path.to_path_buf(), stamp, settled };
                let entry = Entry {
                    size,
                    media_type: media_type.to_string(),
                    source: Some(source.to_string()),
                    location,
                    refs: 1,
                    checkpoints: BTreeSet::new(),
                    last_use: now,
                };
                e.map.insert(digest, entry);
            }
        }
        drop(e);
        Ok((self.reference(digest, size, media_type), self.pin_held(vec![digest])))
    }

    /// A pin over digests whose counts the caller already raised.
    fn pin_held(&self, digests: Vec<Digest>) -> Pin {
        let holder: Arc<dyn PinHolder> = self.inner.clone();
        Pin::held(Arc::downgrade(&holder), digests)
    }

    /// Checks that `r` was made by this store (its token) and that the store still holds it.
    pub fn check(&self, r: &BlobRef) -> Result<(), BlobError> {
        let mac = self.inner.mac(&r.digest, r.size, &r.media_type);
        if mac.verify_truncated_left(&r.token).is_err() {
            return Err(BlobError::Forged { digest: short(&r.digest) });
        }
        if !self.inner.lock().map.contains_key(&r.digest) {
            return Err(BlobError::Released { digest: short(&r.digest) });
        }
        Ok(())
    }

    /// Checks `r` and pins it (a guest's `retain`, a blob kept across a call).
    pub fn pin(&self, r: &BlobRef) -> Result<Pin, BlobError> {
        self.check(r)?;
        self.pin_digests(std::slice::from_ref(&r.digest))
    }

    /// Pins blobs by digest (every one must be held).
    /// Ties the blobs referenced by `batch`'s blob columns to the batch's
    /// lifetime ([`flumen_batch::pins::pin_batch`] over this store).
    pub fn pin_batch(&self, batch: RecordBatch, check: bool) -> Result<RecordBatch, RowError> {
        flumen_batch::pins::pin_batch(self, batch, check)
    }

    /// Every blob digest `batch` refers to (rows in order, repeats included).
    pub fn digests_in(batch: &RecordBatch) -> Vec<Digest> {
        flumen_batch::pins::digests_in(batch)
    }

    fn pin_digests(&self, digests: &[Digest]) -> Result<Pin, BlobError> {
        let mut e = self.inner.lock();
        if let Some(missing) = digests.iter().find(|d| !e.map.contains_key(*d)) {
            return Err(BlobError::Released { digest: short(missing) });
        }
        for d in digests {
            if let Some(entry) = e.map.get_mut(d) {
                entry.refs += 1;
            }
        }
        drop(e);
        Ok(self.pin_held(digests.to_vec()))
    }

    /// Size, media type and source of a checked reference.
    pub fn stat(&self, r: &BlobRef) -> Result<BlobInfo, BlobError> {
        self.check(r)?;
        let e = self.inner.lock();
        let entry = e.map.get(&r.digest).ok_or_else(|| BlobError::Released { digest: short(&r.digest) })?;
        Ok(BlobInfo { size: entry.size, media_type: entry.media_type.clone(), source: entry.source.clone() })
    }

    /// Bytes `[offset, offset + len)` of a checked reference, cut at its end.
    pub fn read(&self, r: &BlobRef, offset: u64, len: u64) -> Result<Bytes, BlobError> {
        self.check(r)?;
        let d = &r.digest;
        let (location, size) = {
            let mut e = self.inner.lock();
            e.clock += 1;
            let now = e.clock;
            let entry = e.map.get_mut(d).ok_or_else(|| BlobError::Released { digest: short(d) })?;
            entry.last_use = now;
            (entry.location.clone(), entry.size)
        };
        let start = offset.min(size);
        let end = offset.saturating_add(len).min(size);
        let n = (end - start) as usize;
        let fail = |m: String| BlobError::Read { digest: short(d), message: m };
        let out = match location {
            Location::Memory(b) => b.slice(start as usize..end as usize),
            Location::Spilled(p) | Location::Durable(p) => read_range(&p, start, n).map_err(fail)?,
            Location::File { path, stamp, settled } => {
                let whole = start == 0 && end == size;
                let (bytes, now_settled) =
                    file::read_checked(&path, &stamp, settled, d, start, n, whole).map_err(fail)?;
                if now_settled && !settled {
                    let mut e = self.inner.lock();
                    if let Some(Entry { location: Location::File { settled, .. }, .. }) = e.map.get_mut(d) {
                        *settled = true;
                    }
                }
                bytes
            }
        };
        self.inner.counters.bytes_read.fetch_add(out.len() as u64, Relaxed);
        Ok(out)
    }

    /// All bytes of a checked reference.
    pub fn read_all(&self, r: &BlobRef) -> Result<Bytes, BlobError> {
        self.read(r, 0, r.size)
    }

    /// Writes every blob in `digests` durably (a copy in the durable
    /// directory, or nothing for a user's file read in place) and pins it for
    /// checkpoint `checkpoint` of `region`; returns what the checkpoint must record.
    pub fn pin_checkpoint(
        &self,
        region: &str,
        checkpoint: u64,
        digests: &[Digest],
    ) -> Result<Vec<PinnedBlob>, BlobError> {
        let Some(dir) = self.inner.config.durable_dir.clone() else {
            return Err(BlobError::Io("checkpoint pins need a durable directory".into()));
        };
        let mut out = Vec::with_capacity(digests.len());
        let unique: BTreeSet<&Digest> = digests.iter().collect();
        for d in unique {
            let (location, size, media_type, source) = {
                let e = self.inner.lock();
                let entry = e.map.get(d).ok_or_else(|| BlobError::Released { digest: short(d) })?;
                (entry.location.clone(), entry.size, entry.media_type.clone(), entry.source.clone())
            };
            let mut file = None;
            match location {
                Location::Durable(_) => {}
                Location::File { path, .. } => file = Some(path),
                Location::Memory(bytes) => write_file(&dir.join(hex::encode(d)), &bytes, true)?,
                Location::Spilled(p) => {
                    let bytes = std::fs::read(&p).map_err(|e| BlobError::Io(format!("{}: {e}", p.display())))?;
                    write_file(&dir.join(hex::encode(d)), &bytes, true)?;
                }
            }
            let mut e = self.inner.lock();
            let Some(entry) = e.map.get_mut(d) else { return Err(BlobError::Released { digest: short(d) }) };
            if file.is_none() && !matches!(entry.location, Location::Durable(_)) {
                // Durable now: the in-memory or spilled copy is no longer needed.
                let old = std::mem::replace(&mut entry.location, Location::Durable(dir.join(hex::encode(d))));
                match old {
                    Location::Memory(b) => e.memory -= b.len() as u64,
                    Location::Spilled(p) => {
                        let _ = std::fs::remove_file(p);
                    }
                    _ => {}
                }
            }
            if let Some(entry) = e.map.get_mut(d) {
                entry.checkpoints.insert((region.to_string(), checkpoint));
            }
            out.push(PinnedBlob { digest: hex::encode(d), size, media_type, source, file });
        }
        Ok(out)
    }

    /// Drops the pins of every checkpoint of `region` not in `keep` and not
    /// newer than `latest` (newer ones may still complete); removes what nothing needs.
    pub fn release_checkpoints_except(&self, region: &str, keep: &[u64], latest: u64) {
        let mut e = self.inner.lock();
        let digests: Vec<Digest> = e.map.keys().copied().collect();
        for d in digests {
            if let Some(entry) = e.map.get_mut(&d) {
                entry.checkpoints.retain(|(r, c)| r != region || *c > latest || keep.contains(c));
            }
            self.inner.collect(&mut e, &d);
        }
    }

    /// Registers the blobs a restored checkpoint of `region` pinned (from its
    /// durable directory or the user's files), pinned for `checkpoint`.
    pub fn restore_pins(&self, region: &str, checkpoint: u64, pinned: &[PinnedBlob]) -> Result<(), BlobError> {
        let key = (region.to_string(), checkpoint);
        let dir = self.inner.config.durable_dir.clone();
        let mut e = self.inner.lock();
        for p in pinned {
            let d: Digest = hex::decode(&p.digest).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| {
                BlobError::Io(format!("checkpoint {checkpoint} pins a malformed digest `{}`", p.digest))
            })?;
            if let Some(entry) = e.map.get_mut(&d) {
                entry.checkpoints.insert(key.clone());
                continue;
            }
            let location = match (&p.file, &dir) {
                (Some(path), _) => {
                    let meta = std::fs::metadata(path).map_err(|err| {
                        BlobError::Io(format!(
                            "checkpoint {checkpoint} needs blob {}… from {}: {err}",
                            &p.digest[..16.min(p.digest.len())],
                            path.display()
                        ))
                    })?;
                    // Not settled: the file may have changed since the earlier
                    // run hashed it, so every read checks the digest until it is.
                    Location::File { path: path.clone(), stamp: FileStamp::of(&meta), settled: false }
                }
                (None, Some(dir)) => {
                    let path = dir.join(&p.digest);
                    let bytes = std::fs::read(&path).map_err(|err| {
                        BlobError::Io(format!("checkpoint {checkpoint} needs blob {}: {err}", path.display()))
                    })?;
                    if hex::encode(Sha256::digest(&bytes)) != p.digest || bytes.len() as u64 != p.size {
                        return Err(BlobError::Io(format!(
                            "checkpoint {checkpoint}: blob file {} is damaged (its digest or size differs)",
                            path.display()
                        )));
                    }
                    Location::Durable(path)
                }
                (None, None) => return Err(BlobError::Io("checkpoint pins need a durable directory".into())),
            };
            e.map.insert(
                d,
                Entry {
                    size: p.size,
                    media_type: p.media_type.clone(),
                    source: p.source.clone(),
                    location,
                    refs: 0,
                    checkpoints: BTreeSet::from([key.clone()]),
                    last_use: 0,
                },
            );
        }
        Ok(())
    }

    /// A reference to a blob the store holds (after a restore: references
    /// kept in a guest's state are re-made with the same key, so they match).
    pub fn reference_of(&self, digest: &Digest) -> Option<BlobRef> {
        let e = self.inner.lock();
        let entry = e.map.get(digest)?;
        Some(self.reference(*digest, entry.size, &entry.media_type))
    }

    /// The file or URI a held blob was read from (host-side errors; no token check).
    pub fn source_of(&self, digest: &Digest) -> Option<String> {
        self.inner.lock().map.get(digest).and_then(|e| e.source.clone())
    }

    /// Whether the store holds `digest`.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.inner.lock().map.contains_key(digest)
    }

    pub fn stats(&self) -> BlobStats {
        let e = self.inner.lock();
        let c = &self.inner.counters;
        BlobStats {
            blobs: e.map.len() as u64,
            bytes: e.map.values().map(|en| en.size).sum(),
            memory_bytes: e.memory,
            peak_memory_bytes: c.peak_memory.load(Relaxed),
            memory_budget: self.inner.config.memory_budget,
            created: c.created.load(Relaxed),
            bytes_created: c.bytes_created.load(Relaxed),
            bytes_read: c.bytes_read.load(Relaxed),
            spilled: c.spilled.load(Relaxed),
            bytes_spilled: c.bytes_spilled.load(Relaxed),
            released: c.released.load(Relaxed),
        }
    }

    /// Digests of every blob held (tests, diagnostics).
    pub fn digests(&self) -> Vec<Digest> {
        let mut v: Vec<Digest> = self.inner.lock().map.keys().copied().collect();
        v.sort();
        v
    }

    /// The end of a job: forgets every blob no retained checkpoint pins and
    /// removes the spill directory the store made (only that one). Blobs
    /// pinned by checkpoints stay in the durable directory (a durable file is deleted only when the store
    /// itself releases its last pin: files it never learnt of, pinned by
    /// older checkpoints of an earlier run, are left alone).
    pub fn close(&self) {
        let mut e = self.inner.lock();
        e.map.retain(|_, en| !en.checkpoints.is_empty());
        e.memory = 0;
        let made = std::mem::take(&mut e.spill_made);
        drop(e);
        // Only the directory the store made itself, never the configured one.
        if made && let Err(err) = std::fs::remove_dir_all(&self.inner.spill) {
            tracing::warn!(path = %self.inner.spill.display(), "cannot remove the spill directory: {err}");
        }
    }
}

/// The `blobs` capability, as operators and the host's batch handling use it.
impl BlobBackend for BlobStore {
    fn put(&self, data: Bytes, media_type: &str, source: Option<String>) -> Result<(BlobRef, Pin), BlobError> {
        BlobStore::put(self, data, media_type, source)
    }
    fn check(&self, r: &BlobRef) -> Result<(), BlobError> {
        BlobStore::check(self, r)
    }
    fn pin(&self, r: &BlobRef) -> Result<Pin, BlobError> {
        BlobStore::pin(self, r)
    }
    fn pin_digests(&self, digests: &[Digest]) -> Result<Pin, BlobError> {
        BlobStore::pin_digests(self, digests)
    }
    fn stat(&self, r: &BlobRef) -> Result<BlobInfo, BlobError> {
        BlobStore::stat(self, r)
    }
    fn read(&self, r: &BlobRef, offset: u64, len: u64) -> Result<Bytes, BlobError> {
        BlobStore::read(self, r, offset, len)
    }
    fn reference_of(&self, digest: &Digest) -> Option<BlobRef> {
        BlobStore::reference_of(self, digest)
    }
}

fn read_range(path: &Path, start: u64, n: usize) -> Result<Bytes, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(start)).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests;
