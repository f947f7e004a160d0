//! The subtasks of a running job: sources, operators and sinks, each one
//! tokio task, and what each does at a checkpoint.
//!
//! At a checkpoint (see ARCHITECTURE.md, "Checkpoints"): a source records its
//! position and forwards the barrier; an operator writes its keyed state
//! (a delta, or a full snapshot now and then), its guest's own snapshot and,
//! in unaligned mode, the in-flight batches it processed between the snapshot
//! and the last barrier; a sink pre-commits. Each then acknowledges to its
//! region's coordinator. A subtask that ends reports `Done` with what a
//! restart needs to know about it, and counts as acknowledging every later
//! checkpoint with that.
//!
//! Event time: a source with a `watermark` column emits its watermark after
//! every batch that advanced it, and records it beside its position. An
//! operator whose guest exports `event-time` hands each watermark the gate
//! releases to the guest (`on-watermark`), routes what it emitted, then
//! forwards the watermark; once every input ended it calls `on-watermark`
//! with `i64::MAX` before `finish`, so windows still open are released.
//!
//! Blobs: a checkpoint pins the blobs a restart needs that replay cannot make
//! again: those an operator's guest retained (kept in its state or memory)
//! and those referenced by stored in-flight batches. They are written durably
//! before the acknowledgement and listed in the participant's `blobs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use flumen_blob::{BlobStore, PinnedBlob};
use flumen_state::StateFile;
use flumen_types::FailureAction;
use flumen_wasm::{CallError, OpenContext, OperatorFactory, OperatorInstance};
use tokio::sync::mpsc;

use crate::EngineError;
use crate::gate::{GateEvent, InputGate};
use crate::meta::{InflightFile, ParticipantMeta};
use crate::metrics::NodeMetrics;
use crate::router::Router;
use crate::upgrade::{SwapBoard, Version, VersionRecord};
use flumen_connectors::{SinkWriter, SourceReader};

/// What a finished subtask hands back to the driver.
pub(crate) enum Finished {
    Done,
    /// A sink of a job without checkpoints: the driver commits it once the whole job succeeded.
    Sink(Box<dyn SinkWriter>),
}

/// A subtask's report to its region's coordinator.
#[derive(Debug)]
pub(crate) enum TaskMsg {
    Ack { checkpoint: u64, participant: String, files: Vec<StateFile>, meta: ParticipantMeta },
    Done { participant: String, files: Vec<StateFile>, meta: ParticipantMeta },
}

/// A subtask's link to its region's coordinator, when the job checkpoints.
#[derive(Debug, Clone)]
pub(crate) struct TaskCkpt {
    pub(crate) participant: String,
    pub(crate) to_coordinator: mpsc::UnboundedSender<TaskMsg>,
    /// Where this region's checkpoint files go.
    pub(crate) files_dir: PathBuf,
    /// The newest checkpoint whose sink transactions the coordinator published.
    pub(crate) committed: Arc<std::sync::atomic::AtomicU64>,
    /// The region's name (checkpoint ids are per region) and the job's blob store.
    pub(crate) region: String,
    pub(crate) blobs: BlobStore,
}

impl TaskCkpt {
    fn ack(&self, checkpoint: u64, files: Vec<StateFile>, meta: ParticipantMeta) {
        // A coordinator that is gone has stopped the region; nothing to tell.
        let _ =
            self.to_coordinator.send(TaskMsg::Ack { checkpoint, participant: self.participant.clone(), files, meta });
    }

    fn done(&self, files: Vec<StateFile>, meta: ParticipantMeta) {
        let _ = self.to_coordinator.send(TaskMsg::Done { participant: self.participant.clone(), files, meta });
    }

    /// A file name for this participant: ids may hold any character.
    fn file_name(&self, what: &str, checkpoint: u64, ext: &str) -> String {
        flumen_state::checkpoint_file_name(checkpoint, &format!("{what}-{}.{ext}", safe_name(&self.participant)))
    }
}

/// `id[3]` → a name safe in every file system, distinct for distinct ids.
pub(crate) fn safe_name(s: &str) -> String {
    let clean: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let changed = clean.chars().zip(s.chars()).filter(|(a, b)| a != b).count() > 0 || clean.len() != s.len();
    let clean = clean.trim_matches('_').to_string();
    if changed {
        use sha2::Digest;
        let h = sha2::Sha256::digest(s.as_bytes());
        format!("{clean}-{}", hex::encode(&h[..4]))
    } else {
        clean
    }
}

/// What a participant's entry in the restored manifest says.
#[derive(Debug, Clone)]
pub(crate) struct Restore {
    pub(crate) dir: PathBuf,
    pub(crate) files: Vec<StateFile>,
    pub(crate) meta: ParticipantMeta,
    /// The restored checkpoint and its region.
    pub(crate) checkpoint: u64,
    pub(crate) region: String,
}

impl Restore {
    fn finished(&self) -> bool {
        self.meta.finished
    }

    fn file(&self, name: &str) -> Result<&StateFile, EngineError> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| EngineError::checkpoint(format!("the manifest names `{name}` but does not describe it")))
    }

    /// Registers the blobs this participant's checkpoint pinned with `store`
    /// (so they outlive the restart) and returns the digests its guest had retained.
    fn restore_blobs(&self, store: &BlobStore) -> Result<Vec<flumen_blob::Digest>, EngineError> {
        let pinned: &[PinnedBlob] = &self.meta.blobs;
        if !pinned.is_empty() {
            tokio::task::block_in_place(|| store.restore_pins(&self.region, self.checkpoint, pinned))
                .map_err(EngineError::checkpoint)?;
        }
        self.meta.retained_digests().map_err(EngineError::checkpoint)
    }

    /// The in-flight batches stored with this participant, per input port,
    /// with their blob references checked and pinned.
    fn inflight(&self, blobs: &BlobStore) -> Result<Vec<(u32, RecordBatch)>, EngineError> {
        let mut out = Vec::new();
        for InflightFile { port, file: name } in &self.meta.inflight {
            let port = *port;
            let bytes = read_verified(&self.dir, self.file(name)?)?;
            for b in crate::inflight::decode(&bytes).map_err(|e| EngineError::checkpoint(format!("{name}: {e}")))? {
                let b = blobs.pin_batch(b, true).map_err(|e| EngineError::checkpoint(format!("{name}: {e}")))?;
                out.push((port, b));
            }
        }
        Ok(out)
    }
}

/// Reads a checkpoint file after checking its size and digest.
fn read_verified(dir: &Path, f: &StateFile) -> Result<Vec<u8>, EngineError> {
    flumen_state::verify_file(dir, f).map_err(EngineError::checkpoint)?;
    std::fs::read(dir.join(&f.name))
        .map_err(|e| EngineError::checkpoint(format!("{}: {e}", dir.join(&f.name).display())))
}

/// Pins `digests` for checkpoint `checkpoint` (written durably first) and
/// adds them to the participant's `blobs` list in `meta`.
fn pin_blobs(
    ck: &TaskCkpt,
    checkpoint: u64,
    digests: &[flumen_blob::Digest],
    meta: &mut ParticipantMeta,
) -> Result<(), EngineError> {
    if digests.is_empty() {
        return Ok(());
    }
    let pinned = tokio::task::block_in_place(|| ck.blobs.pin_checkpoint(&ck.region, checkpoint, digests))
        .map_err(|e| EngineError::checkpoint(format!("{}: {e}", ck.participant)))?;
    meta.blobs.extend(pinned);
    Ok(())
}

/// In-flight batches of an unaligned checkpoint, per port, written as one
/// file per port; the blobs they refer to are pinned into `meta`.
fn write_inflight(
    ck: &TaskCkpt,
    checkpoint: u64,
    recorded: &mut Vec<(u32, RecordBatch)>,
    meta: &mut ParticipantMeta,
) -> Result<Vec<StateFile>, EngineError> {
    let digests: Vec<flumen_blob::Digest> = recorded.iter().flat_map(|(_, b)| BlobStore::digests_in(b)).collect();
    pin_blobs(ck, checkpoint, &digests, meta)?;
    let mut files = Vec::new();
    let mut ports: Vec<u32> = recorded.iter().map(|(p, _)| *p).collect();
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        let batches: Vec<RecordBatch> = recorded.iter().filter(|(p, _)| *p == port).map(|(_, b)| b.clone()).collect();
        let bytes = crate::inflight::encode(&batches).map_err(|e| {
            EngineError::Checkpoint(crate::CheckpointError::Write(format!("cannot encode in-flight batches: {e}")))
        })?;
        let name = ck.file_name(&format!("inflight{port}"), checkpoint, "arrow");
        let file =
            tokio::task::block_in_place(|| flumen_state::write_file_durably(&ck.files_dir, &name, &bytes, checkpoint))
                .map_err(EngineError::checkpoint)?;
        meta.inflight.push(InflightFile { port, file: file.name.clone() });
        files.push(file);
    }
    recorded.clear();
    Ok(files)
}

// ---- sources ----

pub(crate) struct SourceTask {
    pub(crate) reader: Box<dyn SourceReader>,
    pub(crate) router: Router,
    pub(crate) metrics: Arc<NodeMetrics>,
    /// Barrier injections from the coordinator, with the link back to it.
    pub(crate) ckpt: Option<(TaskCkpt, mpsc::UnboundedReceiver<u64>)>,
    /// `id[subtask]`, as dead-lettered rows name it.
    pub(crate) name: String,
}

impl SourceTask {
    pub(crate) async fn run(mut self, restore: Option<Restore>) -> Result<Finished, EngineError> {
        if let Some(r) = restore {
            if let Some(pos) = &r.meta.position {
                let reader = &mut self.reader;
                tokio::task::block_in_place(|| reader.seek(pos)).map_err(EngineError::Connector)?;
            }
            if let Some(w) = r.meta.watermark {
                self.reader.resume_watermark(w);
            }
        }
        // The watermark last sent downstream. A resumed source announces the
        // one it had reached: its consumers start over without any.
        let mut sent: Option<i64> = None;
        self.send_watermark(&mut sent).await?;
        loop {
            if let Some((ck, cmds)) = &mut self.ckpt {
                while let Ok(n) = cmds.try_recv() {
                    ck.ack(n, Vec::new(), source_meta(self.reader.as_ref(), false));
                    self.router.barrier(n).await?;
                }
            }
            let t = Instant::now();
            let reader = &mut self.reader;
            let next = tokio::task::block_in_place(|| reader.next_batch()).map_err(EngineError::Connector)?;
            NodeMetrics::add(&self.metrics.busy_ns, t.elapsed().as_nanos() as u64);
            for failed in self.reader.take_failed() {
                NodeMetrics::add(&self.metrics.dead_lettered_rows, failed.row.num_rows() as u64);
                self.router.dead_letter_rows(&failed.row, &self.name, &failed.error).await?;
            }
            match next {
                // Every row of it was dead-lettered.
                Some(batch) if batch.num_rows() == 0 => {}
                Some(batch) => {
                    self.router.send(batch).await?;
                    self.send_watermark(&mut sent).await?;
                }
                None => break,
            }
        }
        // No final watermark: `End` stops this channel holding time back.
        self.router.end().await;
        if let Some((ck, _)) = &self.ckpt {
            ck.done(Vec::new(), source_meta(self.reader.as_ref(), true));
        }
        Ok(Finished::Done)
    }

    /// Sends the reader's watermark downstream if it advanced past `sent`.
    async fn send_watermark(&mut self, sent: &mut Option<i64>) -> Result<(), EngineError> {
        if let Some(w) = self.reader.watermark()
            && sent.is_none_or(|s| w > s)
        {
            self.router.watermark(w).await?;
            *sent = Some(w);
        }
        Ok(())
    }
}

/// A source's entry in a checkpoint: its position, and its watermark when it has one.
fn source_meta(reader: &dyn SourceReader, finished: bool) -> ParticipantMeta {
    ParticipantMeta {
        position: Some(reader.position()),
        watermark: reader.watermark(),
        finished,
        ..ParticipantMeta::new()
    }
}

// ---- sinks ----

pub(crate) struct SinkTask {
    pub(crate) writer: Box<dyn SinkWriter>,
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) ckpt: Option<TaskCkpt>,
    pub(crate) blobs: BlobStore,
    /// How blob columns are written.
    pub(crate) blob_mode: SinkBlobMode,
    /// The sink's id, for errors.
    pub(crate) node: String,
    /// Rows this subtask received before the current batch (row numbers in errors).
    pub(crate) rows_seen: u64,
}

/// Blob bytes a file sink holds at once when it writes them inline: a batch
/// is written a few rows at a time (one row if its blob alone is larger).
pub(crate) const INLINE_CHUNK_BYTES: u64 = 8 << 20;

/// How a sink writes blob reference columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinkBlobMode {
    /// As they flow (the reference struct): console, blackhole, `blobs = "reference"`.
    Reference,
    /// As their bytes (`large_binary`): file sinks by default.
    Inline,
    /// As their digests in hex: a dead-letter file sink without `blobs =
    /// "reference"`. It never reads a blob, so the row whose blob failed
    /// (corrupt, changed or gone) is recorded instead of failing the job.
    Digest,
}

impl SinkBlobMode {
    pub(crate) fn of(spec: &flumen_connectors::SinkSpec, dead_letter: bool) -> Self {
        match (spec.inlines_blobs(), dead_letter) {
            (false, _) => SinkBlobMode::Reference,
            (true, false) => SinkBlobMode::Inline,
            (true, true) => SinkBlobMode::Digest,
        }
    }

    /// The schema the sink's writer gets for input of `schema`.
    pub(crate) fn schema(self, schema: &arrow_schema::SchemaRef) -> arrow_schema::SchemaRef {
        match self {
            SinkBlobMode::Reference => schema.clone(),
            SinkBlobMode::Inline => Arc::new(flumen_blob::materialized_schema(schema)),
            SinkBlobMode::Digest => Arc::new(flumen_blob::digest_schema(schema)),
        }
    }
}

impl SinkTask {
    pub(crate) async fn run(mut self, mut gate: InputGate, restore: Option<Restore>) -> Result<Finished, EngineError> {
        let mut last_barrier = 0;
        if let Some(r) = &restore {
            // A sink that acknowledged no barrier yet has none.
            last_barrier = r.meta.checkpoint.unwrap_or(0);
            if r.finished() {
                // Everything this subtask wrote is in the restored checkpoint.
                while let Some(ev) = gate.next().await {
                    if let GateEvent::Batch { .. } = ev {
                        return Err(EngineError::checkpoint(
                            "a sink restored as finished received data; the checkpoint does not match this job",
                        ));
                    }
                }
                if let Some(ck) = &self.ckpt {
                    ck.done(r.files.clone(), r.meta.clone());
                }
                return Ok(Finished::Done);
            }
            r.restore_blobs(&self.blobs)?;
            for (_, batch) in r.inflight(&self.blobs)? {
                self.write(&batch)?;
            }
        }
        // Pre-committed transactions not yet known to be published, oldest
        // first: each acknowledgement carries them all, so a transaction of a
        // checkpoint that was aborted is published with the next one.
        let mut uncommitted: Vec<(u64, flumen_connectors::Transaction)> = Vec::new();
        let mut recorded: Vec<(u32, RecordBatch)> = Vec::new();
        while let Some(event) = gate.next().await {
            match event {
                GateEvent::Batch { port, batch, record } => {
                    if record.is_some() {
                        recorded.push((port, batch.clone()));
                    }
                    self.write(&batch)?;
                }
                GateEvent::Watermark(_) => {}
                GateEvent::Snapshot { checkpoint } => {
                    let writer = &mut self.writer;
                    let p = tokio::task::block_in_place(|| writer.pre_commit(checkpoint))
                        .map_err(EngineError::Connector)?;
                    fail::fail_point!("sink::after-pre-commit", |_| std::process::abort());
                    if let Some(ck) = &self.ckpt {
                        let done = ck.committed.load(std::sync::atomic::Ordering::Acquire);
                        uncommitted.retain(|(n, _)| *n > done);
                    }
                    if let Some(p) = p {
                        uncommitted.push((checkpoint, p));
                    }
                    last_barrier = checkpoint;
                }
                GateEvent::Complete { checkpoint } => {
                    let Some(ck) = &self.ckpt else { continue };
                    let mut meta = ParticipantMeta {
                        checkpoint: Some(checkpoint),
                        pending: uncommitted.iter().map(|(_, t)| t.clone()).collect(),
                        ..ParticipantMeta::new()
                    };
                    let files = write_inflight(ck, checkpoint, &mut recorded, &mut meta)?;
                    ck.ack(checkpoint, files, meta);
                }
            }
        }
        match self.ckpt {
            None => Ok(Finished::Sink(self.writer)),
            Some(ck) => {
                // The last transaction is named after the barrier that would
                // come next; no other transaction of this subtask can have it.
                let id = last_barrier + 1;
                let writer = &mut self.writer;
                let p = tokio::task::block_in_place(|| writer.pre_commit(id)).map_err(EngineError::Connector)?;
                let done = ck.committed.load(std::sync::atomic::Ordering::Acquire);
                uncommitted.retain(|(n, _)| *n > done);
                if let Some(p) = p {
                    uncommitted.push((id, p));
                }
                let meta = ParticipantMeta {
                    pending: uncommitted.into_iter().map(|(_, t)| t).collect(),
                    checkpoint: Some(id),
                    ..ParticipantMeta::finished()
                };
                ck.done(Vec::new(), meta);
                Ok(Finished::Done)
            }
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        NodeMetrics::add(&self.metrics.rows_in, batch.num_rows() as u64);
        NodeMetrics::add(&self.metrics.batches_in, 1);
        let t = Instant::now();
        let writer = &mut self.writer;
        let blobs = &self.blobs;
        let node = &self.node;
        let rows_before = self.rows_seen;
        self.rows_seen += batch.num_rows() as u64;
        let other = |message: String| flumen_connectors::ConnectorError::Other { node: node.clone(), message };
        let has_blobs = !flumen_blob::blob_columns(batch.schema_ref()).is_empty();
        let mode = self.blob_mode;
        tokio::task::block_in_place(|| match mode {
            SinkBlobMode::Inline if has_blobs => {
                flumen_blob::materialize_in_chunks(blobs, batch, INLINE_CHUNK_BYTES, |chunk| writer.write(&chunk))
                    .map_err(|e| match e {
                        flumen_blob::ChunkError::Write(e) => e,
                        flumen_blob::ChunkError::Row(e) => other(sink_row_error(blobs, batch, rows_before, &e)),
                    })
            }
            SinkBlobMode::Digest if has_blobs => {
                writer.write(&flumen_blob::digest_batch(batch).map_err(|e| other(e.to_string()))?)
            }
            _ => writer.write(batch),
        })
        .map_err(EngineError::Connector)?;
        NodeMetrics::add(&self.metrics.busy_ns, t.elapsed().as_nanos() as u64);
        Ok(())
    }
}

/// A sink's failure to read a blob: the row within the subtask's whole
/// input, the column, and the file or URI the blob came from.
fn sink_row_error(blobs: &BlobStore, batch: &RecordBatch, rows_before: u64, e: &flumen_blob::RowError) -> String {
    let row = rows_before + e.row as u64;
    let origin = batch
        .schema_ref()
        .index_of(&e.column)
        .ok()
        .and_then(|i| flumen_batch::media::BlobColumn::new(batch.column(i).as_ref()).ok()?.get(e.row))
        .and_then(|r| blobs.source_of(&r.digest));
    let from = origin.map(|s| format!(" (from {s})")).unwrap_or_default();
    format!("cannot write the blob in column `{}` of input row {row}{from}: {}", e.column, e.error)
}

// ---- operators ----

pub(crate) struct OperatorTask {
    pub(crate) factory: OperatorFactory,
    pub(crate) ctx: OpenContext,
    pub(crate) instance: OperatorInstance,
    pub(crate) policy: flumen_types::FailurePolicy,
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) ckpt: Option<TaskCkpt>,
    /// The state files a restore would need now: a full snapshot, then deltas.
    pub(crate) chain: Vec<StateFile>,
    /// Its keyed state (granted `state`), the store its instances' handle shares.
    pub(crate) state: Option<crate::state::SharedState>,
    /// The version it runs, and the one the spec names (checkpoints record
    /// the version only when it differs: after a live upgrade).
    pub(crate) version: VersionRecord,
    pub(crate) spec_version: VersionRecord,
    /// Its region's live upgrades (`upgrade.rs`).
    pub(crate) board: Option<Arc<SwapBoard>>,
}

impl OperatorTask {
    fn state(&self) -> Option<&crate::state::SharedState> {
        self.state.as_ref()
    }

    /// Brings state, guest memory and in-flight batches back to the restored checkpoint.
    async fn restore(&mut self, restore: Option<&Restore>, router: &mut Router) -> Result<bool, EngineError> {
        let Some(r) = restore else {
            if let Some(state) = self.state() {
                crate::state::with_store(state, |s| s.clear()).map_err(EngineError::checkpoint)?;
            }
            // A start from scratch: nothing an earlier attempt retained is kept.
            if let Some(scope) = &self.ctx.blobs {
                scope.restore_retained(&[]).map_err(EngineError::checkpoint)?;
            }
            return Ok(false);
        };
        if r.finished() {
            return Ok(true);
        }
        let chain: Vec<StateFile> = r.meta.state.iter().map(|n| r.file(n).cloned()).collect::<Result<_, _>>()?;
        if let Some(state) = self.state.clone() {
            let dir = r.dir.clone();
            let c = chain.clone();
            tokio::task::block_in_place(|| crate::state::with_store(&state, |s| s.restore(&dir, &c)))
                .map_err(EngineError::checkpoint)?;
        } else if !chain.is_empty() {
            return Err(EngineError::checkpoint(format!(
                "{}: the checkpoint holds keyed state, but the operator is no longer granted `state`",
                self.ctx.operator_id
            )));
        }
        self.chain = chain;
        let Some(blobs) = self.ckpt.as_ref().map(|c| c.blobs.clone()) else {
            return Err(EngineError::Internal(format!(
                "{}: restoring a job that does not checkpoint",
                self.ctx.operator_id
            )));
        };
        if let Some(scope) = &self.ctx.blobs {
            let retained = r.restore_blobs(&blobs)?;
            scope.restore_retained(&retained).map_err(EngineError::checkpoint)?;
        }
        if let Some(name) = &r.meta.guest {
            let bytes = read_verified(&r.dir, r.file(name)?)?;
            self.instance.restore(&bytes).await.map_err(EngineError::Operator)?;
        }
        let inflight = r.inflight(&blobs)?;
        for (port, batch) in inflight {
            if let Some(out) = self.process(port, &batch, router).await? {
                for b in out {
                    router.send(b).await?;
                }
            }
        }
        Ok(false)
    }

    pub(crate) async fn run(
        mut self,
        mut gate: InputGate,
        mut router: Router,
        restore: Option<Restore>,
    ) -> Result<Finished, EngineError> {
        if self.restore(restore.as_ref(), &mut router).await? {
            // It had finished before the checkpoint: its inputs only end.
            while gate.next().await.is_some() {}
            router.end().await;
            if let (Some(ck), Some(r)) = (&self.ckpt, &restore) {
                ck.done(Vec::new(), r.meta.clone());
            }
            return Ok(Finished::Done);
        }
        let mut pending: Option<(Vec<StateFile>, ParticipantMeta)> = None;
        let mut recorded: Vec<(u32, RecordBatch)> = Vec::new();
        while let Some(event) = gate.next().await {
            match event {
                GateEvent::Batch { port, batch, record } => {
                    if record.is_some() {
                        recorded.push((port, batch.clone()));
                    }
                    NodeMetrics::add(&self.metrics.rows_in, batch.num_rows() as u64);
                    NodeMetrics::add(&self.metrics.batches_in, 1);
                    if let Some(out) = self.process(port, &batch, &mut router).await? {
                        for b in out {
                            router.send(b).await?;
                        }
                    }
                }
                GateEvent::Watermark(w) => {
                    self.on_watermark(w, &mut router).await?;
                    router.watermark(w).await?;
                }
                GateEvent::Snapshot { checkpoint } => {
                    let (files, mut meta, saved) = self.snapshot(checkpoint).await?;
                    let next = self.board.as_ref().and_then(|b| b.swap_at(&self.ctx.operator_id, checkpoint));
                    if let Some(next) = next {
                        meta.version = Some(self.swap(next, saved).await?);
                    }
                    pending = Some((files, meta));
                    router.barrier(checkpoint).await?;
                }
                GateEvent::Complete { checkpoint } => {
                    let Some(ck) = &self.ckpt else { continue };
                    let (mut files, mut meta) = pending.take().unwrap_or_default();
                    files.extend(write_inflight(ck, checkpoint, &mut recorded, &mut meta)?);
                    ck.ack(checkpoint, files, meta);
                }
            }
        }
        // Every input ended: event time reached the end of time, so whatever
        // waits for it (windows) is released before `finish`.
        self.on_watermark(i64::MAX, &mut router).await?;
        let t = Instant::now();
        let before = self.instance.boundary_bytes();
        let result = self.instance.finish().await;
        self.route_unretried(t, before, result, &mut router).await?;
        router.end().await;
        if let Some(ck) = &self.ckpt {
            ck.done(Vec::new(), ParticipantMeta::finished());
        }
        Ok(Finished::Done)
    }

    /// Hands `watermark` to a guest that exports `event-time` and routes what
    /// it emitted. A failure fails the job, as one of `finish` does: a
    /// watermark is no batch that could be retried or dead-lettered.
    async fn on_watermark(&mut self, watermark: i64, router: &mut Router) -> Result<(), EngineError> {
        if !self.instance.has_event_time() {
            return Ok(());
        }
        let t = Instant::now();
        let before = self.instance.boundary_bytes();
        let result = self.instance.on_watermark(watermark).await;
        self.route_unretried(t, before, result, router).await
    }

    /// Accounts a call that is never retried (`finish`, `on-watermark`) and
    /// routes what it emitted; its failure fails the task.
    async fn route_unretried(
        &mut self,
        started: Instant,
        before: flumen_wasm::BoundaryBytes,
        result: Result<Vec<RecordBatch>, CallError>,
        router: &mut Router,
    ) -> Result<(), EngineError> {
        self.account(started, before);
        let out = result.map_err(|e| {
            NodeMetrics::add(&self.metrics.failures, 1);
            EngineError::Operator(e)
        })?;
        for b in out {
            router.send(b).await?;
        }
        Ok(())
    }

    /// Writes this subtask's part of checkpoint `checkpoint`: its keyed state
    /// (a delta, or a full snapshot when the chain has grown long) and the
    /// guest's own snapshot. Returns the files a restore needs and their roles.
    async fn snapshot(
        &mut self,
        checkpoint: u64,
    ) -> Result<(Vec<StateFile>, ParticipantMeta, Option<Vec<u8>>), EngineError> {
        let Some(ck) = self.ckpt.clone() else { return Ok(Default::default()) };
        if let Some(state) = self.state.clone() {
            let full = flumen_state::should_write_full(&self.chain);
            let dir = ck.files_dir.clone();
            let written = tokio::task::block_in_place(|| {
                crate::state::with_store(&state, |s| s.snapshot(&dir, checkpoint, full))
            })
            .map_err(EngineError::checkpoint)?;
            if let Some(f) = written {
                if f.full {
                    self.chain.clear();
                }
                self.chain.push(f);
            }
        }
        let mut files = self.chain.clone();
        let mut meta =
            ParticipantMeta { state: self.chain.iter().map(|f| f.name.clone()).collect(), ..ParticipantMeta::new() };
        if self.version != self.spec_version {
            meta.version = Some(self.version.clone());
        }
        let mut saved = None;
        if self.instance.has_snapshot() {
            let bytes = self.instance.save().await.map_err(EngineError::Operator)?.unwrap_or_default();
            saved = Some(bytes.clone());
            if !bytes.is_empty() {
                let name = ck.file_name("guest", checkpoint, "bin");
                let f = tokio::task::block_in_place(|| {
                    flumen_state::write_file_durably(&ck.files_dir, &name, &bytes, checkpoint)
                })
                .map_err(EngineError::checkpoint)?;
                meta.guest = Some(f.name.clone());
                files.push(f);
            }
        }
        // Blobs the guest retained (referenced from its state or memory).
        if let Some(scope) = &self.ctx.blobs {
            let retained = scope.retained_digests();
            if !retained.is_empty() {
                pin_blobs(&ck, checkpoint, &retained, &mut meta)?;
                meta.retained = retained.iter().map(hex::encode).collect();
            }
        }
        Ok((files, meta, saved))
    }

    /// Step 4 of a live upgrade (`upgrade.rs`): right after the snapshot for
    /// the armed checkpoint, the new version opens on the same state and
    /// takes the old one's saved memory. Returns what the checkpoint records.
    async fn swap(&mut self, next: Version, saved: Option<Vec<u8>>) -> Result<VersionRecord, EngineError> {
        let operator = self.ctx.operator_id.clone();
        let failed = |reason: String| EngineError::Upgrade { operator: operator.clone(), reason };
        let mut ctx = self.ctx.clone();
        ctx.config_json = next.record.config.clone();
        let mut fresh = next.factory.instantiate(&ctx).await.map_err(|e| failed(format!("open: {e}")))?;
        fresh.set_state(ctx.state.clone());
        if let Some(bytes) = saved.filter(|b| !b.is_empty()) {
            if !fresh.has_snapshot() {
                return Err(failed(
                    "the running version keeps memory it saves at checkpoints (`snapshot`), and the new one cannot \
                     restore it (it does not export `snapshot`)"
                        .into(),
                ));
            }
            fresh.restore(&bytes).await.map_err(|e| failed(format!("restore: {e}")))?;
        }
        let recorded = VersionRecord { rollback: Some(Box::new(self.version.clone())), ..next.record.clone() };
        tracing::info!(operator = %operator, subtask = ctx.subtask, version = %next.record.plugin, "swapped to the new version");
        self.instance = fresh;
        self.factory = next.factory;
        self.ctx = ctx;
        self.version = next.record;
        Ok(recorded)
    }

    fn on_probation(&self) -> bool {
        self.board.as_ref().is_some_and(|b| b.on_probation(&self.ctx.operator_id, &self.version))
    }

    /// One batch under the failure policy: `Some(outputs)` on success, `None`
    /// if it was dead-lettered.
    async fn process(
        &mut self,
        port: u32,
        batch: &RecordBatch,
        router: &mut Router,
    ) -> Result<Option<Vec<RecordBatch>>, EngineError> {
        let mut attempt = 0;
        loop {
            let t = Instant::now();
            let before = self.instance.boundary_bytes();
            let result = self.instance.process(port, batch).await;
            self.account(t, before);
            let error = match result {
                Ok(out) => {
                    if let Some(board) = &self.board {
                        board.batch_ok(&self.ctx.operator_id, &self.version);
                    }
                    self.recycle_if_due().await?;
                    return Ok(Some(out));
                }
                Err(e) => e,
            };
            NodeMetrics::add(&self.metrics.failures, 1);
            if self.on_probation() {
                // Whatever the failure policy: a new version that fails on probation rolls back.
                return Err(EngineError::Upgrade { operator: self.ctx.operator_id.clone(), reason: error.to_string() });
            }
            tracing::warn!(operator = %error.operator, attempt, "{}", error.message);
            // The instance is poisoned: replace it before anything else.
            self.instance = self.factory.instantiate(&self.ctx).await.map_err(EngineError::Operator)?;
            if attempt < self.policy.retries {
                attempt += 1;
                NodeMetrics::add(&self.metrics.retries, 1);
                continue;
            }
            return match self.policy.then {
                FailureAction::Fail => Err(EngineError::Operator(with_attempts(error, attempt))),
                FailureAction::DeadLetter if batch.num_rows() > 1 => Ok(Some(self.isolate(port, batch, router).await?)),
                FailureAction::DeadLetter => {
                    NodeMetrics::add(&self.metrics.dead_lettered_rows, batch.num_rows() as u64);
                    router.dead_letter(batch, &error).await?;
                    Ok(None)
                }
            };
        }
    }

    /// Replaces the instance by a fresh one when it asks to be recycled (its
    /// memory grew past `limits.recycle_memory_pct`, or it made
    /// `limits.recycle_after_calls` calls), between two batches: the old
    /// instance's `save` goes to the new one's `restore`, so instance memory
    /// that a checkpoint would keep is kept. Nothing is lost, repeated or
    /// reordered: the batch just processed was routed by the caller.
    async fn recycle_if_due(&mut self) -> Result<(), EngineError> {
        let Some(reason) = self.instance.recycle_reason() else { return Ok(()) };
        let saved = if self.instance.has_snapshot() {
            self.instance.save().await.map_err(EngineError::Operator)?
        } else {
            None
        };
        let mut fresh = self.factory.instantiate(&self.ctx).await.map_err(EngineError::Operator)?;
        if let Some(bytes) = saved.filter(|b| !b.is_empty()) {
            fresh.restore(&bytes).await.map_err(EngineError::Operator)?;
        }
        tracing::info!(operator = %self.ctx.operator_id, subtask = self.ctx.subtask, "instance recycled: {reason}");
        NodeMetrics::add(&self.metrics.recycled, 1);
        self.instance = fresh;
        Ok(())
    }

    /// A batch failed under a dead-letter policy: finds the rows that fail by
    /// halving it (each piece on a fresh instance after a failure) until a
    /// failing piece is one row, which goes to the dead-letter sink with its
    /// error. Returns what the pieces that succeeded emitted, in row order.
    /// One bad image in a batch of 64 costs about 2·log2(64) extra calls, and
    /// the other 63 go on.
    async fn isolate(
        &mut self,
        port: u32,
        batch: &RecordBatch,
        router: &mut Router,
    ) -> Result<Vec<RecordBatch>, EngineError> {
        let mut out = Vec::new();
        let mut todo: std::collections::VecDeque<RecordBatch> = std::collections::VecDeque::new();
        let half = batch.num_rows() / 2;
        todo.push_back(batch.slice(0, half));
        todo.push_back(batch.slice(half, batch.num_rows() - half));
        while let Some(piece) = todo.pop_front() {
            let n = piece.num_rows();
            if n == 0 {
                continue;
            }
            let t = Instant::now();
            let before = self.instance.boundary_bytes();
            let result = self.instance.process(port, &piece).await;
            self.account(t, before);
            match result {
                Ok(emitted) => out.extend(emitted),
                Err(error) => {
                    NodeMetrics::add(&self.metrics.failures, 1);
                    self.instance = self.factory.instantiate(&self.ctx).await.map_err(EngineError::Operator)?;
                    if n == 1 {
                        tracing::warn!(operator = %error.operator, "row dead-lettered: {}", error.message);
                        NodeMetrics::add(&self.metrics.dead_lettered_rows, 1);
                        router.dead_letter(&piece, &error).await?;
                    } else {
                        todo.push_front(piece.slice(n / 2, n - n / 2));
                        todo.push_front(piece.slice(0, n / 2));
                    }
                }
            }
        }
        Ok(out)
    }

    fn account(&self, started: Instant, before: flumen_wasm::BoundaryBytes) {
        let after = self.instance.boundary_bytes();
        NodeMetrics::add(&self.metrics.busy_ns, started.elapsed().as_nanos() as u64);
        NodeMetrics::add(&self.metrics.guest_bytes_in, after.bytes_in.saturating_sub(before.bytes_in));
        NodeMetrics::add(&self.metrics.guest_bytes_out, after.bytes_out.saturating_sub(before.bytes_out));
        NodeMetrics::add(&self.metrics.blob_bytes_read, after.blob_bytes_read.saturating_sub(before.blob_bytes_read));
        NodeMetrics::add(
            &self.metrics.blob_bytes_created,
            after.blob_bytes_created.saturating_sub(before.blob_bytes_created),
        );
    }
}

fn with_attempts(mut e: CallError, retries: u32) -> CallError {
    if retries > 0 {
        e.message = format!("{} (after {retries} retries on fresh instances)", e.message);
    }
    e
}
