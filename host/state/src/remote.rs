//! Checkpoint storage in an object store (`[checkpoint] store`): the durable copy of each
//! region's checkpoints, with the local [`CheckpointStore`] as the working area and cache.
//!
//! ```text
//! <prefix>/<region>/chk-<checkpoint:012>.json     the exact bytes of the local manifest
//! <prefix>/<region>/files/<name>                  the exact bytes of the local file
//! ```
//!
//! Credentials and the endpoint of an `s3://` store come from the usual AWS environment
//! variables; a `file://` store is a directory (a mounted network file system, say).
//!
//! # Protocol
//!
//! 1. **Upload** ([`RemoteStore::upload_checkpoint`]), once the local manifest of checkpoint `n`
//!    is durable: every file the manifest references that the store may lack is PUT, then the
//!    manifest, **last**, in one PUT. A PUT is atomic (an object is absent or whole), so
//!    checkpoint `n` is complete exactly when the manifest PUT returns. *Safe:* the manifest
//!    appears only after every file it references, so a crash or an unreachable store at any
//!    point leaves either no remote manifest `n` (recovery uses an older one) or a complete one.
//! 2. **Which files.** A file of a checkpoint no newer than `L`, the newest checkpoint this
//!    process knows complete in the store (the one it restored or last uploaded), is skipped when
//!    the store lists it with the recorded size. *Safe:* a manifest references such a file only
//!    through a chain that manifest `L` references too, and `L`'s upload (or an earlier one) put
//!    it; the size check catches an object that went missing since. Files of checkpoints after
//!    `L` are always PUT: an object of that name may hold bytes of an attempt that never
//!    completed (ids are never handed out twice by one checkpoint directory, but a machine that
//!    lost its directory knows only the ids the store lists).
//!    Every file is checked against the manifest's size and SHA-256 as it is read for upload.
//! 3. **Download** ([`RemoteStore::download_latest`]), before a region (re)starts: the remote
//!    manifests are tried newest first. The manifest's checksum must verify; every file it
//!    references that is missing locally or does not verify is fetched, reading at most its
//!    recorded size, and kept only if its SHA-256 matches; then the manifest is written locally.
//!    The first one that verifies is the restore point `R`, which
//!    [`CheckpointStore::latest_valid`] then finds as usual; a damaged one is reported and the
//!    next older one tried. Finally every manifest newer than `R` is removed, locally and in the
//!    store. *Safe:* nothing from the store is trusted before its digest matches the manifest,
//!    whose own checksum matched. A local manifest newer than `R` never completed (the process
//!    stopped between the local write and the remote PUT) or is damaged, and so is a remote one:
//!    none of them may be restored later, nor count as kept in step 4. Their ids are not handed
//!    out again: the region continues above [`Downloaded::newest_seen`] and above every id its
//!    local directory used ([`CheckpointStore::reserve_ids`]).
//! 4. **Retention** ([`RemoteStore::retain`]) mirrors [`CheckpointStore::retain`]: the newest
//!    `keep` readable remote manifests stay, older ones go, and so do files that no kept manifest
//!    references and whose checkpoint is at most the newest kept one. *Safe:* for the same
//!    reasons as locally; a file of a checkpoint being uploaded is numbered higher.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::checkpoint::{
    FILES_DIR, MANIFEST_BYTES_MAX, check_region, file_checkpoint, manifest_checkpoint, manifest_name, parse_manifest,
};
use crate::durable::{DurableFile, check_file_name, io_error, verify_file};
use crate::store_url::{StoreUrl, Target};
use crate::{CheckpointStore, Manifest, Rejected, StateError, StateFile};

/// Files moved to or from the store at once by one operation. Bounds the load put on the store
/// and, with [`UPLOAD_PARTS_IN_FLIGHT_MAX`] and [`UPLOAD_PART_BYTES`], the memory of an upload.
pub const STORE_REQUESTS_MAX: usize = 8;

/// Parts of one large file being uploaded at once.
pub const UPLOAD_PARTS_IN_FLIGHT_MAX: usize = 2;

/// Files up to this size are uploaded with one PUT, larger ones in parts of this size. Bounds
/// the memory an upload holds per request; S3 wants parts of at least 5 MiB.
pub const UPLOAD_PART_BYTES: usize = 16 << 20;

/// Retries of one failed request to the store. An unreachable store must fail the checkpoint
/// (and the region restart) within seconds, not after the client's default of minutes.
const STORE_RETRIES_MAX: usize = 3;
const STORE_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Files moved to or from the store by one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    pub files: usize,
    pub bytes: u64,
}

/// What [`RemoteStore::download_latest`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Downloaded {
    /// The newest remote checkpoint that verified, now in the local directory.
    pub checkpoint: Option<u64>,
    /// Files fetched because they were missing or damaged locally.
    pub transfer: Transfer,
    /// Newer remote manifests that did not verify, and why (newest first).
    pub rejected: Vec<Rejected>,
    /// Local manifests removed because they are newer than the restored one: they never reached
    /// the store, or are damaged there.
    pub discarded: Vec<u64>,
    /// The highest checkpoint id the store listed (intact or not): the region's ids continue
    /// above it, so none of them is handed out again.
    pub newest_seen: u64,
}

/// A region's checkpoints in an object store; see the module docs for the protocol.
pub struct RemoteStore {
    url: StoreUrl,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    part_bytes: usize,
    regions: Mutex<HashMap<String, RegionView>>,
}

/// What this process knows of one region in the store.
#[derive(Debug, Default)]
struct RegionView {
    /// `L` of the protocol: the newest checkpoint this process restored or uploaded.
    complete: u64,
    /// The file names each remote manifest references, of manifests this process wrote or read.
    references: BTreeMap<u64, Arc<HashSet<String>>>,
}

impl fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStore").field("url", &self.url.text).finish_non_exhaustive()
    }
}

/// The object store at `url` and the prefix under which its objects live. An `s3://` store
/// takes its credentials, region and endpoint from the usual AWS environment variables; a
/// `file://` store's directory is created.
pub(crate) fn connect(url: &StoreUrl) -> Result<(Arc<dyn ObjectStore>, ObjectPath), StateError> {
    // TLS is rustls on `ring`, which must be installed as the process's provider
    // before a client is built (once; a second install is refused, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(match &url.target {
        Target::S3 { bucket, prefix } => {
            let retry = RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: STORE_RETRIES_MAX,
                retry_timeout: STORE_RETRY_TIMEOUT,
            };
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .build()
                .map_err(|e| remote_error(url, &e))?;
            (Arc::new(s3), prefix.clone())
        }
        Target::File { root } => {
            std::fs::create_dir_all(root).map_err(|e| io_error(root, &e))?;
            let local = LocalFileSystem::new_with_prefix(root).map_err(|e| remote_error(url, &e))?;
            (Arc::new(local), ObjectPath::default())
        }
    })
}

impl RemoteStore {
    /// Connects to the store at `url` (no request is sent yet). An `s3://` store takes its
    /// credentials, region and endpoint from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` and
    /// `AWS_ALLOW_HTTP`; a `file://` store's directory is created.
    pub fn open(url: &StoreUrl) -> Result<Self, StateError> {
        let (store, prefix) = connect(url)?;
        Ok(Self { url: url.clone(), store, prefix, part_bytes: UPLOAD_PART_BYTES, regions: Mutex::default() })
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// Step 1 of the protocol: makes checkpoint `manifest.checkpoint` of `manifest.region`
    /// complete in the store — its files, then its manifest (the bytes `local` holds). Returns
    /// what was uploaded. A local file that does not match the manifest is
    /// [`StateError::Corrupt`] and nothing more is sent.
    pub async fn upload_checkpoint(
        &self,
        local: &CheckpointStore,
        manifest: &Manifest,
    ) -> Result<Transfer, StateError> {
        let region = manifest.region.as_str();
        let checkpoint = manifest.checkpoint;
        check_region(region)?;
        let body = local.manifest_bytes(region, checkpoint)?.ok_or_else(|| {
            StateError::Limit(format!("region {region:?} has no local manifest of checkpoint {checkpoint} to upload"))
        })?;
        let files_dir = local.files_dir(region)?;
        let complete = self.view(region, |v| v.complete);
        let listed = self.list_files(region).await?;
        let mut seen = HashSet::new();
        let todo: Vec<StateFile> = referenced(manifest)
            .filter(|f| seen.insert(f.name.as_str()))
            .filter(|f| {
                f.checkpoint > complete || listed.get(PathPart::from(f.name.as_str()).as_ref()) != Some(&f.bytes)
            })
            .cloned()
            .collect();
        let transfer = Transfer { files: todo.len(), bytes: todo.iter().map(|f| f.bytes).sum() };
        stream::iter(todo)
            .map(|f| self.upload_file(&files_dir, region, f))
            .buffer_unordered(STORE_REQUESTS_MAX)
            .try_collect::<Vec<()>>()
            .await?;
        self.store
            .put(&self.region_path(region).join(manifest_name(checkpoint)), PutPayload::from(body))
            .await
            .map_err(|e| remote_error(&self.url, &e))?;
        let names = Arc::new(referenced(manifest).map(|f| f.name.clone()).collect());
        self.view(region, |v| {
            v.complete = checkpoint;
            v.references.insert(checkpoint, names);
        });
        tracing::debug!(store = %self.url, region, checkpoint, files = transfer.files, bytes = transfer.bytes, "checkpoint uploaded");
        Ok(transfer)
    }

    /// Step 3 of the protocol: brings the newest remote checkpoint of `region` that verifies
    /// into `local`, fetching only the files `local` lacks or holds damaged, so that
    /// [`CheckpointStore::latest_valid`] then finds it; removes every manifest newer than it,
    /// locally and in the store.
    pub async fn download_latest(&self, local: &CheckpointStore, region: &str) -> Result<Downloaded, StateError> {
        check_region(region)?;
        let files_dir = local.files_dir(region)?;
        let mut done = Downloaded::default();
        let mut dead = Vec::new();
        let listed = self.list_manifests(region).await?;
        done.newest_seen = listed.first().map_or(0, |m| m.0);
        for (checkpoint, size) in listed {
            let location = self.region_path(region).join(manifest_name(checkpoint));
            let verdict = match self.fetch_manifest(&location, size).await? {
                Err(reason) => Err(reason),
                Ok(body) => match parse_manifest(&body, region, checkpoint) {
                    Err(reason) => Err(reason),
                    Ok(manifest) => {
                        let (fetched, verdict) = self.fetch_files(&files_dir, region, &manifest).await?;
                        done.transfer.files += fetched.files;
                        done.transfer.bytes += fetched.bytes;
                        verdict.map(|()| (manifest, body))
                    }
                },
            };
            let (manifest, body) = match verdict {
                Ok(found) => found,
                Err(reason) => {
                    done.rejected.push(Rejected {
                        path: PathBuf::from(self.display(&location)),
                        reason,
                        quarantined: None,
                    });
                    dead.push(location);
                    continue;
                }
            };
            if local.manifest_bytes(region, checkpoint).ok().flatten().as_deref() != Some(body.as_slice()) {
                let store = local.clone();
                let owned = region.to_owned();
                blocking(move || store.install_manifest(&owned, checkpoint, &body)).await?;
            }
            let names = Arc::new(referenced(&manifest).map(|f| f.name.clone()).collect());
            self.view(region, |v| {
                v.complete = checkpoint;
                v.references.insert(checkpoint, names);
            });
            done.checkpoint = Some(checkpoint);
            break;
        }
        // Newer manifests are damaged (in the store) or never completed (only local), and their
        // checkpoint numbers are handed out again after this restore: none may be restored later.
        let restored = done.checkpoint;
        let store = local.clone();
        let owned = region.to_owned();
        done.discarded = blocking(move || store.remove_manifests(&owned, |c| restored.is_none_or(|r| c > r))).await?;
        for location in dead {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(remote_error(&self.url, &e)),
            }
        }
        if !done.discarded.is_empty() {
            tracing::warn!(store = %self.url, region, checkpoints = ?done.discarded, "discarding local checkpoints that are not intact in the store");
        }
        Ok(done)
    }

    /// Step 4 of the protocol: keeps the newest `keep` (at least 1) readable remote manifests of
    /// `region` and deletes older manifests and the files no kept manifest references whose
    /// checkpoint is at most the newest kept one. Returns what was deleted.
    pub async fn retain(&self, region: &str, keep: usize) -> Result<Transfer, StateError> {
        if keep == 0 {
            return Err(StateError::Limit("retain must keep at least one checkpoint".to_owned()));
        }
        check_region(region)?;
        let manifests = self.list_manifests(region).await?;
        let mut kept: Vec<(u64, Arc<HashSet<String>>)> = Vec::new();
        let mut oldest_kept = None;
        for (index, &(checkpoint, size)) in manifests.iter().enumerate() {
            if let Some(names) = self.references(region, checkpoint, size).await? {
                kept.push((checkpoint, names));
                if kept.len() == keep {
                    oldest_kept = Some(index);
                    break;
                }
            }
        }
        let Some(&(newest_kept, _)) = kept.first() else { return Ok(Transfer::default()) };
        let mut doomed: Vec<(ObjectPath, u64)> = Vec::new();
        if let Some(oldest) = oldest_kept {
            for &(checkpoint, size) in &manifests[oldest + 1..] {
                doomed.push((self.region_path(region).join(manifest_name(checkpoint)), size));
            }
        }
        let referenced: HashSet<String> = kept
            .iter()
            .flat_map(|(_, names)| names.iter())
            .map(|n| PathPart::from(n.as_str()).as_ref().to_owned())
            .collect();
        for (name, size) in self.list_files(region).await? {
            if !referenced.contains(&name) && file_checkpoint(&name).is_some_and(|c| c <= newest_kept) {
                doomed.push((self.files_path(region).join(name.as_str()), size));
            }
        }
        let freed = Transfer { files: doomed.len(), bytes: doomed.iter().map(|d| d.1).sum() };
        let locations = stream::iter(doomed.into_iter().map(|(location, _)| Ok(location))).boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(remote_error(&self.url, &e)),
            }
        }
        self.view(region, |v| v.references.retain(|c, _| kept.iter().any(|(k, _)| k == c)));
        Ok(freed)
    }

    /// Deletes every manifest of `region` in the store (a start from scratch the user asked
    /// for); their files go with the next retention. Returns the checkpoints deleted.
    pub async fn discard_all(&self, region: &str) -> Result<Vec<u64>, StateError> {
        check_region(region)?;
        let mut removed = Vec::new();
        for (checkpoint, _) in self.list_manifests(region).await? {
            match self.store.delete(&self.region_path(region).join(manifest_name(checkpoint))).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed.push(checkpoint),
                Err(e) => return Err(remote_error(&self.url, &e)),
            }
        }
        self.view(region, |v| {
            v.complete = 0;
            v.references.clear();
        });
        Ok(removed)
    }

    /// Whether the store holds any manifest of any region (valid or not).
    pub async fn has_checkpoints(&self) -> Result<bool, StateError> {
        let listing =
            self.store.list_with_delimiter(Some(&self.prefix)).await.map_err(|e| remote_error(&self.url, &e))?;
        for region in listing.common_prefixes {
            let Some(name) = region.filename() else { continue };
            if check_region(name).is_ok() && !self.list_manifests(name).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `region` has any manifest in the store: [`Self::has_checkpoints`] for one region,
    /// for a process that runs only some regions of a job.
    pub async fn has_region_checkpoints(&self, region: &str) -> Result<bool, StateError> {
        check_region(region)?;
        Ok(!self.list_manifests(region).await?.is_empty())
    }

    /// The manifests of `region` in the store, with their sizes, newest first.
    async fn list_manifests(&self, region: &str) -> Result<Vec<(u64, u64)>, StateError> {
        let dir = self.region_path(region);
        let listing = self.store.list_with_delimiter(Some(&dir)).await.map_err(|e| remote_error(&self.url, &e))?;
        let mut manifests: Vec<(u64, u64)> = listing
            .objects
            .iter()
            .filter_map(|o| Some((manifest_checkpoint(o.location.filename()?)?, o.size)))
            .collect();
        manifests.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
        Ok(manifests)
    }

    /// The objects in `region`'s files directory: name (as the store spells it) and size.
    async fn list_files(&self, region: &str) -> Result<HashMap<String, u64>, StateError> {
        let dir = self.files_path(region);
        let depth = dir.parts().count() + 1;
        let mut listed = HashMap::new();
        let mut objects = self.store.list(Some(&dir));
        while let Some(object) = objects.next().await {
            let object = object.map_err(|e| remote_error(&self.url, &e))?;
            if object.location.parts().count() == depth
                && let Some(name) = object.location.filename()
            {
                listed.insert(name.to_owned(), object.size);
            }
        }
        Ok(listed)
    }

    /// The file names the remote manifest of `checkpoint` references: remembered, or read.
    /// `None` when the manifest cannot be read or does not verify.
    async fn references(
        &self,
        region: &str,
        checkpoint: u64,
        size: u64,
    ) -> Result<Option<Arc<HashSet<String>>>, StateError> {
        if let Some(names) = self.view(region, |v| v.references.get(&checkpoint).cloned()) {
            return Ok(Some(names));
        }
        let location = self.region_path(region).join(manifest_name(checkpoint));
        let Ok(body) = self.fetch_manifest(&location, size).await? else { return Ok(None) };
        let Ok(manifest) = parse_manifest(&body, region, checkpoint) else { return Ok(None) };
        let names: Arc<HashSet<String>> = Arc::new(referenced(&manifest).map(|f| f.name.clone()).collect());
        self.view(region, |v| v.references.insert(checkpoint, names.clone()));
        Ok(Some(names))
    }

    /// A manifest's bytes, at most [`MANIFEST_BYTES_MAX`]. The inner error is a reason to reject
    /// it; the outer one, a store that failed.
    async fn fetch_manifest(&self, location: &ObjectPath, size: u64) -> Result<Result<Vec<u8>, String>, StateError> {
        if size > MANIFEST_BYTES_MAX {
            return Ok(Err(format!("larger than {MANIFEST_BYTES_MAX} bytes")));
        }
        let got = match self.store.get(location).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(Err("gone from the store".to_owned())),
            Err(e) => return Err(remote_error(&self.url, &e)),
        };
        let mut body = Vec::new();
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| remote_error(&self.url, &e))?;
            if (body.len() + chunk.len()) as u64 > MANIFEST_BYTES_MAX {
                return Ok(Err(format!("larger than {MANIFEST_BYTES_MAX} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Ok(body))
    }

    /// Makes every file `manifest` references present and intact in `files_dir`, fetching those
    /// that are not; returns what was fetched and, as an error, the reason to reject the
    /// manifest.
    async fn fetch_files(
        &self,
        files_dir: &Path,
        region: &str,
        manifest: &Manifest,
    ) -> Result<(Transfer, Result<(), String>), StateError> {
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        for (participant, p) in &manifest.participants {
            for f in &p.files {
                if f.checkpoint > manifest.checkpoint {
                    let reason = format!("{participant}: file {} is of a later checkpoint {}", f.name, f.checkpoint);
                    return Ok((Transfer::default(), Err(reason)));
                }
                if let Err(message) = check_file_name(&f.name) {
                    return Ok((Transfer::default(), Err(format!("{participant}: {message}"))));
                }
                if seen.insert(f.name.as_str()) {
                    files.push(f.clone());
                }
            }
        }
        let results: Vec<Result<Result<Option<u64>, String>, StateError>> = stream::iter(files)
            .map(|f| self.fetch_file_if_needed(files_dir, region, f))
            .buffer_unordered(STORE_REQUESTS_MAX)
            .collect()
            .await;
        let mut transfer = Transfer::default();
        let mut reason = None;
        for result in results {
            match result? {
                Ok(Some(bytes)) => {
                    transfer.files += 1;
                    transfer.bytes += bytes;
                }
                Ok(None) => {}
                Err(r) => reason = reason.or(Some(r)),
            }
        }
        Ok((transfer, reason.map_or(Ok(()), Err)))
    }

    /// Fetches `f` unless `files_dir` holds it intact; `Some(bytes)` when it was fetched.
    async fn fetch_file_if_needed(
        &self,
        files_dir: &Path,
        region: &str,
        f: StateFile,
    ) -> Result<Result<Option<u64>, String>, StateError> {
        let dir = files_dir.to_owned();
        let wanted = f.clone();
        match blocking(move || verify_file(&dir, &wanted)).await {
            Ok(()) => return Ok(Ok(None)),
            Err(StateError::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
        let location = self.files_path(region).join(f.name.as_str());
        let got = match self.store.get(&location).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Err(format!("{} is missing", self.display(&location))));
            }
            Err(e) => return Err(remote_error(&self.url, &e)),
        };
        if got.meta.size != f.bytes {
            return Ok(Err(format!("{} has {} bytes, expected {}", self.display(&location), got.meta.size, f.bytes)));
        }
        let mut out = DurableFile::create(files_dir, &f.name)?;
        let mut chunks = got.into_stream();
        let mut received = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| remote_error(&self.url, &e))?;
            received += chunk.len() as u64;
            if received > f.bytes {
                return Ok(Err(format!("{} sent more than {} bytes", self.display(&location), f.bytes)));
            }
            out.write_all(&chunk).map_err(|e| io_error(out.temp_path(), &e))?;
        }
        let (bytes, sha256) = out.digest();
        if bytes != f.bytes || sha256 != f.sha256 {
            return Ok(Err(format!(
                "{} has {bytes} bytes with sha256 {sha256}, expected {} bytes with sha256 {}",
                self.display(&location),
                f.bytes,
                f.sha256
            )));
        }
        blocking(move || out.commit()).await?;
        Ok(Ok(Some(bytes)))
    }

    /// PUTs one local file, checking it against the manifest as it is read.
    async fn upload_file(&self, files_dir: &Path, region: &str, f: StateFile) -> Result<(), StateError> {
        check_file_name(&f.name).map_err(StateError::Limit)?;
        let path = files_dir.join(&f.name);
        let location = self.files_path(region).join(f.name.as_str());
        let part_bytes = self.part_bytes;
        let opened = path.clone();
        let mut file = blocking(move || std::fs::File::open(&opened).map_err(|e| io_error(&opened, &e))).await?;
        let mut hasher = Sha256::new();
        let mut sent = 0u64;
        let corrupt = |message: String| StateError::Corrupt { path: files_dir.join(&f.name), message };
        let (rest, first) = read_part(file, &path, part_bytes).await?;
        file = rest;
        hasher.update(&first);
        sent += first.len() as u64;
        if first.len() < part_bytes {
            check_digest(&f, sent, &hasher).map_err(corrupt)?;
            self.store.put(&location, PutPayload::from(first)).await.map_err(|e| remote_error(&self.url, &e))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&location).await.map_err(|e| remote_error(&self.url, &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_bytes);
        writer.write(&first);
        loop {
            let (rest, part) = read_part(file, &path, part_bytes).await?;
            file = rest;
            if part.is_empty() {
                break;
            }
            hasher.update(&part);
            sent += part.len() as u64;
            if sent > f.bytes {
                break;
            }
            writer.wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT_MAX).await.map_err(|e| remote_error(&self.url, &e))?;
            writer.write(&part);
        }
        if let Err(message) = check_digest(&f, sent, &hasher) {
            let _ = writer.abort().await;
            return Err(corrupt(message));
        }
        writer.finish().await.map_err(|e| remote_error(&self.url, &e))?;
        Ok(())
    }

    fn region_path(&self, region: &str) -> ObjectPath {
        self.prefix.clone().join(region)
    }

    fn files_path(&self, region: &str) -> ObjectPath {
        self.region_path(region).join(FILES_DIR)
    }

    /// An object's location as a user would write it: the store URL and the key under it.
    fn display(&self, location: &ObjectPath) -> String {
        let key = location
            .prefix_match(&self.prefix)
            .map(|parts| parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>().join("/"));
        format!("{}/{}", self.url.text.trim_end_matches('/'), key.unwrap_or_else(|| location.to_string()))
    }

    fn view<T>(&self, region: &str, f: impl FnOnce(&mut RegionView) -> T) -> T {
        let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        f(regions.entry(region.to_owned()).or_default())
    }

    #[cfg(test)]
    fn with_part_bytes(mut self, part_bytes: usize) -> Self {
        self.part_bytes = part_bytes;
        self
    }
}

/// Every file a manifest references (a name may appear more than once).
fn referenced(manifest: &Manifest) -> impl Iterator<Item = &StateFile> {
    manifest.participants.values().flat_map(|p| &p.files)
}

fn check_digest(f: &StateFile, bytes: u64, hasher: &Sha256) -> Result<(), String> {
    if bytes != f.bytes {
        return Err(format!("{bytes} bytes or more, expected {}", f.bytes));
    }
    let actual = hex::encode(hasher.clone().finalize());
    if actual != f.sha256 {
        return Err(format!("sha256 {actual}, expected {}", f.sha256));
    }
    Ok(())
}

fn remote_error(url: &StoreUrl, e: &object_store::Error) -> StateError {
    StateError::Remote { url: url.text.clone(), message: e.to_string() }
}

/// The next `part_bytes` of `file` (fewer only at its end).
async fn read_part(
    mut file: std::fs::File,
    path: &Path,
    part_bytes: usize,
) -> Result<(std::fs::File, Vec<u8>), StateError> {
    let path = path.to_owned();
    blocking(move || {
        let mut part = Vec::with_capacity(part_bytes);
        (&mut file).take(part_bytes as u64).read_to_end(&mut part).map_err(|e| io_error(&path, &e))?;
        Ok((file, part))
    })
    .await
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StateError::Io { path: PathBuf::new(), message: format!("a file task failed: {e}") }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Participant;
    use crate::checkpoint::checkpoint_file_name;
    use crate::durable::write_file_durably;

    const REGION: &str = "r0";

    /// A local checkpoint directory, a `file://` store and the store's directory.
    struct Fixture {
        dir: tempfile::TempDir,
        local: CheckpointStore,
        remote: RemoteStore,
        remote_root: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let remote_root = dir.path().join("bucket");
        let url = StoreUrl::parse(&format!("file://{}", remote_root.join("prefix").display())).unwrap();
        let remote = RemoteStore::open(&url).unwrap();
        let local = CheckpointStore::open(&dir.path().join("local")).unwrap();
        Fixture { dir, local, remote, remote_root: remote_root.join("prefix") }
    }

    impl Fixture {
        /// A fresh local directory (the machine lost its disk), same store.
        fn lose_local_disk(&mut self) {
            let root = self.dir.path().join(format!("local-{}", rand_suffix()));
            self.local = CheckpointStore::open(&root).unwrap();
        }

        fn remote_file(&self, name: &str) -> PathBuf {
            self.remote_root.join(REGION).join(FILES_DIR).join(name)
        }
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    }

    /// Writes checkpoint `n` locally: a chain `base` (files of earlier checkpoints) plus one new
    /// file of `n` holding `content`.
    fn checkpoint(local: &CheckpointStore, n: u64, base: &[StateFile], content: &[u8]) -> Manifest {
        let dir = local.files_dir(REGION).unwrap();
        let mut files = base.to_vec();
        files.push(write_file_durably(&dir, &checkpoint_file_name(n, "state"), content, n).unwrap());
        let participants = BTreeMap::from([(
            "count[0]".to_owned(),
            Participant { files, meta: serde_json::json!({ "checkpoint": n }) },
        )]);
        let manifest = Manifest {
            format: crate::checkpoint::MANIFEST_FORMAT,
            job: "t".to_owned(),
            region: REGION.to_owned(),
            checkpoint: n,
            created_unix_ms: 0,
            finished: false,
            participants,
        };
        local.write_manifest(&manifest).unwrap();
        manifest
    }

    fn files_of(m: &Manifest) -> Vec<StateFile> {
        m.participants["count[0]"].files.clone()
    }

    #[tokio::test]
    async fn a_checkpoint_survives_the_loss_of_the_local_directory() {
        let mut fx = fixture();
        let m1 = checkpoint(&fx.local, 1, &[], b"full state of checkpoint one");
        let sent = fx.remote.upload_checkpoint(&fx.local, &m1).await.unwrap();
        assert_eq!(sent, Transfer { files: 1, bytes: 28 });
        let m2 = checkpoint(&fx.local, 2, &files_of(&m1), b"delta two");
        let sent = fx.remote.upload_checkpoint(&fx.local, &m2).await.unwrap();
        assert_eq!(sent, Transfer { files: 1, bytes: 9 }, "the chain's base is already in the store");
        assert!(fx.remote.has_checkpoints().await.unwrap());

        fx.lose_local_disk();
        let fresh = RemoteStore::open(fx.remote.url()).unwrap();
        let got = fresh.download_latest(&fx.local, REGION).await.unwrap();
        assert_eq!(got.checkpoint, Some(2));
        assert_eq!(got.transfer, Transfer { files: 2, bytes: 37 });
        assert!(got.rejected.is_empty() && got.discarded.is_empty(), "{got:?}");
        let (restored, rejected) = fx.local.latest_valid(REGION).unwrap();
        assert_eq!(restored, Some(m2.clone()));
        assert!(rejected.is_empty());

        let again = fresh.download_latest(&fx.local, REGION).await.unwrap();
        assert_eq!(again.transfer, Transfer::default(), "intact local files are not fetched again");
        assert_eq!(again.checkpoint, Some(2));
    }

    /// A machine that lost its directory still continues ids above every id the store listed,
    /// damaged ones included; a start from scratch deletes the store's manifests.
    #[tokio::test]
    async fn ids_the_store_listed_are_not_handed_out_again() {
        let mut fx = fixture();
        let m1 = checkpoint(&fx.local, 1, &[], b"one");
        fx.remote.upload_checkpoint(&fx.local, &m1).await.unwrap();
        let m2 = checkpoint(&fx.local, 2, &files_of(&m1), b"two");
        fx.remote.upload_checkpoint(&fx.local, &m2).await.unwrap();
        std::fs::write(fx.remote_file(&checkpoint_file_name(2, "state")), b"TWO").unwrap();

        fx.lose_local_disk();
        let fresh = RemoteStore::open(fx.remote.url()).unwrap();
        let got = fresh.download_latest(&fx.local, REGION).await.unwrap();
        assert_eq!(got.checkpoint, Some(1));
        assert_eq!(got.newest_seen, 2, "{got:?}");
        assert_eq!(fx.local.reserve_ids(REGION, got.newest_seen).unwrap(), 2);

        assert_eq!(fresh.discard_all(REGION).await.unwrap(), [1]);
        assert!(!fresh.has_checkpoints().await.unwrap());
    }

    #[tokio::test]
    async fn a_damaged_remote_file_falls_back_to_the_previous_checkpoint() {
        for (damage, says) in [
            (Some(b"delta TWO".to_vec()), "sha256"),                 // same size, other bytes
            (Some(vec![7u8; 1 << 20]), "1048576 bytes, expected 9"), // refused before reading it
            (None, "is missing"),
        ] {
            let mut fx = fixture();
            let m1 = checkpoint(&fx.local, 1, &[], b"full one");
            fx.remote.upload_checkpoint(&fx.local, &m1).await.unwrap();
            let m2 = checkpoint(&fx.local, 2, &files_of(&m1), b"delta two");
            fx.remote.upload_checkpoint(&fx.local, &m2).await.unwrap();
            let victim = fx.remote_file(&checkpoint_file_name(2, "state"));
            match &damage {
                Some(bytes) => std::fs::write(&victim, bytes).unwrap(),
                None => std::fs::remove_file(&victim).unwrap(),
            }

            fx.lose_local_disk();
            let got = fx.remote.download_latest(&fx.local, REGION).await.unwrap();
            assert_eq!(got.checkpoint, Some(1), "{says}");
            assert_eq!(got.rejected.len(), 1, "{got:?}");
            assert!(got.rejected[0].reason.contains(says), "{got:?}");
            assert!(got.rejected[0].path.to_string_lossy().ends_with("/r0/chk-000000000002.json"), "{got:?}");
            let local_file = fx.local.files_dir(REGION).unwrap().join(checkpoint_file_name(2, "state"));
            assert!(!local_file.exists(), "{says}: damaged bytes are never kept");
            assert_eq!(fx.local.latest_valid(REGION).unwrap().0, Some(m1), "{says}");
            assert!(
                !fx.remote_root.join(REGION).join(manifest_name(2)).exists(),
                "{says}: the damaged manifest is retired, its number will be used again"
            );
        }
    }

    #[tokio::test]
    async fn a_damaged_remote_manifest_is_rejected() {
        let mut fx = fixture();
        let m1 = checkpoint(&fx.local, 1, &[], b"one");
        fx.remote.upload_checkpoint(&fx.local, &m1).await.unwrap();
        let m2 = checkpoint(&fx.local, 2, &[], b"two");
        fx.remote.upload_checkpoint(&fx.local, &m2).await.unwrap();
        let path = fx.remote_root.join(REGION).join(manifest_name(2));
        let text = std::fs::read_to_string(&path).unwrap().replace("\"checkpoint\": 2", "\"checkpoint\": 3");
        std::fs::write(&path, text).unwrap();
        fx.lose_local_disk();
        let got = fx.remote.download_latest(&fx.local, REGION).await.unwrap();
        assert_eq!(got.checkpoint, Some(1));
        assert!(got.rejected[0].reason.contains("checksum mismatch"), "{got:?}");
    }

    #[tokio::test]
    async fn local_checkpoints_that_never_reached_the_store_are_discarded() {
        let fx = fixture();
        let m1 = checkpoint(&fx.local, 1, &[], b"one");
        fx.remote.upload_checkpoint(&fx.local, &m1).await.unwrap();
        checkpoint(&fx.local, 2, &files_of(&m1), b"two: written, never uploaded");
        let got = fx.remote.download_latest(&fx.local, REGION).await.unwrap();
        assert_eq!(got.discarded, [2]);
        assert_eq!(got.checkpoint, Some(1));
        assert_eq!(fx.local.latest_valid(REGION).unwrap().0, Some(m1));
    }

    #[tokio::test]
    async fn files_of_reused_checkpoint_numbers_are_uploaded_again() {
        let fx = fixture();
        let m1 = checkpoint(&fx.local, 1, &[], b"one");
        fx.remote.upload_checkpoint(&fx.local, &m1).await.unwrap();
        // An attempt put checkpoint 2's file and died before the manifest.
        let m2 = checkpoint(&fx.local, 2, &files_of(&m1), b"two, first attempt");
        let stale = fx.remote_file(&checkpoint_file_name(2, "state"));
        std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
        std::fs::write(&stale, b"two, first attempt").unwrap();
        // The restarted process restores 1 and writes checkpoint 2 again, same size.
        let restarted = RemoteStore::open(fx.remote.url()).unwrap();
        restarted.download_latest(&fx.local, REGION).await.unwrap();
        let m2b = checkpoint(&fx.local, 2, &files_of(&m1), b"two, other attempt");
        assert_ne!(m2, m2b);
        let sent = restarted.upload_checkpoint(&fx.local, &m2b).await.unwrap();
        assert_eq!(sent.files, 1, "the base is skipped, the reused name is not");
        assert_eq!(std::fs::read(&stale).unwrap(), b"two, other attempt");
    }

    #[tokio::test]
    async fn large_files_go_in_parts_and_are_checked_while_read() {
        let fx = fixture();
        let remote = RemoteStore::open(fx.remote.url()).unwrap().with_part_bytes(1000);
        let content: Vec<u8> = (0..4500u32).map(|i| (i % 251) as u8).collect();
        let m1 = checkpoint(&fx.local, 1, &[], &content);
        assert_eq!(remote.upload_checkpoint(&fx.local, &m1).await.unwrap().bytes, 4500);
        assert_eq!(std::fs::read(fx.remote_file(&checkpoint_file_name(1, "state"))).unwrap(), content);

        let m2 = checkpoint(&fx.local, 2, &[], &content);
        let local_file = fx.local.files_dir(REGION).unwrap().join(checkpoint_file_name(2, "state"));
        let mut damaged = content.clone();
        damaged[3000] ^= 1;
        std::fs::write(&local_file, damaged).unwrap();
        let err = remote.upload_checkpoint(&fx.local, &m2).await.unwrap_err();
        assert!(matches!(&err, StateError::Corrupt { message, .. } if message.contains("sha256")), "{err}");
        assert!(!fx.remote_file(&checkpoint_file_name(2, "state")).exists());
        assert!(!fx.remote_root.join(REGION).join(manifest_name(2)).exists(), "no manifest for a bad file");
    }

    #[tokio::test]
    async fn retention_keeps_chains_and_checkpoints_in_progress() {
        let fx = fixture();
        let full = checkpoint(&fx.local, 1, &[], b"full");
        fx.remote.upload_checkpoint(&fx.local, &full).await.unwrap();
        let mut chain = files_of(&full);
        for n in 2..=4 {
            let m = checkpoint(&fx.local, n, &chain, format!("delta {n}").as_bytes());
            fx.remote.upload_checkpoint(&fx.local, &m).await.unwrap();
            chain = files_of(&m);
        }
        let other = checkpoint(&fx.local, 5, &[], b"new full");
        fx.remote.upload_checkpoint(&fx.local, &other).await.unwrap();
        // A file of checkpoint 6, being uploaded.
        let in_progress = fx.remote_file(&checkpoint_file_name(6, "state"));
        std::fs::write(&in_progress, b"six").unwrap();

        let freed = RemoteStore::open(fx.remote.url()).unwrap().retain(REGION, 2).await.unwrap();
        let mut left: Vec<String> = std::fs::read_dir(fx.remote_root.join(REGION))
            .unwrap()
            .chain(std::fs::read_dir(fx.remote_root.join(REGION).join(FILES_DIR)).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != FILES_DIR)
            .collect();
        left.sort();
        let state = |n| checkpoint_file_name(n, "state");
        let mut expected =
            vec![manifest_name(4), manifest_name(5), state(1), state(2), state(3), state(4), state(5), state(6)];
        expected.sort();
        assert_eq!(left, expected, "4's chain reaches back to 1; 6 is in progress");
        assert_eq!(freed.files, 3, "manifests 1 to 3");

        assert!(matches!(fx.remote.retain(REGION, 0).await, Err(StateError::Limit(_))));
    }
}
