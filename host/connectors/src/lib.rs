//! Built-in host connectors: file, blob and generator sources, file, console and blackhole sinks.
//!
//! A source is planned once (its schema is known before any data flows, so
//! operators can agree on schemas at `open`) and then opened once per subtask.
//! A source subtask can say where it stands ([`SourceReader::position`]) and a
//! fresh one can resume there ([`SourceReader::seek`]), so a checkpointed job
//! replays exactly the rows after its last checkpoint. A source with a
//! `watermark` column also says how far its event time has come
//! ([`SourceReader::watermark`]; see `watermark.rs`).
//!
//! Sinks work in one of two modes:
//! - **Without checkpoints** ([`open_sink`]): a subtask writes batches and makes
//!   its output visible only in [`SinkWriter::commit`]; dropping an uncommitted
//!   writer removes what it wrote, so a failed job never leaves a file that
//!   looks complete.
//! - **Checkpointed, exactly once** ([`recover_sink`], [`open_transactional_sink`],
//!   [`SinkWriter::pre_commit`], [`commit_pending`]): a two-phase commit of part
//!   files, one per subtask and checkpoint. The protocol and its correctness
//!   argument are in `transactional.rs`.
//!
//! Readers and writers are blocking; the executor runs them on blocking threads.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

mod blob_source;
mod file_sink;
mod file_source;
mod generator;
mod sinks;
mod transactional;
mod watermark;

pub use flumen_spec::connector::{
    BlobColumnType, ColumnSpec, GeneratorColumn, SinkBlobs, SinkKind, SinkSpec, SourceKind, SourceSpec, WatermarkSpec,
};
pub use transactional::Transaction;
pub use watermark::WatermarkColumn;

/// Where a source subtask stands (see [`SourceReader::position`]). Each reader
/// writes and reads back its own layout, strictly; the engine only stores it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SourcePosition(serde_json::Value);

impl SourcePosition {
    fn of(value: serde_json::Value) -> Self {
        Self(value)
    }

    fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

#[cfg(test)]
impl From<serde_json::Value> for SourcePosition {
    fn from(value: serde_json::Value) -> Self {
        Self(value)
    }
}

impl std::fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A failure of a connector, naming the node and (where there is one) the file.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{node}: invalid configuration: {message}")]
    Config { node: String, message: String },
    #[error("{node}: {path}: {message}")]
    File { node: String, path: PathBuf, message: String },
    #[error("{node}: {message}")]
    Other { node: String, message: String },
}

/// A source, planned: its schema is fixed before any subtask opens.
pub trait PlannedSource: Send + Sync + std::fmt::Debug {
    fn schema(&self) -> SchemaRef;
    /// Opens subtask `subtask` of `parallelism`; subtasks read disjoint parts
    /// (files, row ranges) whose union is the whole input.
    fn open(&self, subtask: u32, parallelism: u32) -> Result<Box<dyn SourceReader>, ConnectorError>;
    /// The column its readers take watermarks from, if the spec names one.
    fn watermark_column(&self) -> Option<WatermarkColumn> {
        None
    }

    /// Tells the source which of its columns some consumer reads (`needed`,
    /// one flag per top-level field of its schema). It may then skip
    /// decoding the others and emit placeholders of their type in their
    /// place (the plan guarantees nothing downstream looks at them). The
    /// default decodes everything.
    fn prune(&mut self, _needed: &[bool]) {}
}

/// A row a source could not read, for its dead-letter sink: the row (in the
/// source's schema, what could not be read left null) and why.
#[derive(Debug)]
pub struct FailedRow {
    pub row: RecordBatch,
    pub error: String,
}

/// One source subtask: yields batches until the input is exhausted.
pub trait SourceReader: Send {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError>;
    /// Where this subtask stands, after the batches returned so far: after
    /// [`seek`](Self::seek) to it on a freshly opened reader of the same subtask
    /// (same spec, same parallelism), `next_batch` yields exactly the rows not
    /// yet returned, in the same order (batch boundaries may differ).
    ///
    /// The position is opaque to the engine, which stores it in the checkpoint manifest.
    fn position(&self) -> SourcePosition;
    /// Resumes at a position returned by [`position`](Self::position). A
    /// malformed position, or one that does not fit this subtask's input (files
    /// changed, parallelism changed, past the end), is an error naming the node.
    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError>;
    /// The watermark after the batches returned so far (milliseconds since
    /// the epoch): the largest event time read less the delay, for a source
    /// with a `watermark` column; `None` before any time was read, or without one.
    /// The engine emits it downstream whenever it advances, and records it in
    /// checkpoints beside the position.
    fn watermark(&self) -> Option<i64> {
        None
    }
    /// Resumes the watermark a checkpoint recorded (after [`seek`](Self::seek)):
    /// it never goes below it.
    fn resume_watermark(&mut self, _watermark: i64) {}
    /// Rows the last [`next_batch`](Self::next_batch) could not read and
    /// skipped (a source whose `on_error` dead-letters them); the engine sends
    /// them to the dead-letter sink. They count as read in the position.
    fn take_failed(&mut self) -> Vec<FailedRow> {
        Vec::new()
    }
}

/// One sink subtask.
pub trait SinkWriter: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError>;
    /// Checkpoint barrier `checkpoint`: makes everything written since the
    /// previous pre-commit durable (fsync) but invisible, and returns what
    /// [`commit_pending`] needs to publish it; the engine stores that in the
    /// checkpoint manifest. Nothing written returns `None` ("nothing to publish").
    ///
    /// Checkpoint ids must increase from one call to the next. Console and
    /// blackhole sinks return `None` (console output is at-least-once); a file
    /// sink opened by [`open_sink`] (not for checkpointing) refuses.
    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Transaction>, ConnectorError>;
    /// Makes everything written visible (e.g. renames the temporary file into place).
    /// Dropping a writer without committing removes its partial output.
    ///
    /// On a writer from [`open_transactional_sink`] it pre-commits what was
    /// written since the last pre-commit as checkpoint [`FINAL_CHECKPOINT`] and
    /// publishes it at once; it publishes no earlier pre-commit. A checkpointed
    /// job should rather end with `pre_commit` and [`commit_pending`].
    fn commit(self: Box<Self>) -> Result<SinkReport, ConnectorError>;
}

/// The largest checkpoint id a transactional sink accepts (part file names
/// hold it in 12 digits so that they sort by it); [`SinkWriter::commit`] on a
/// transactional writer uses it.
pub const FINAL_CHECKPOINT: u64 = transactional::CHECKPOINT_MAX;

/// What a committed sink subtask wrote.
#[derive(Debug, Default, Clone)]
pub struct SinkReport {
    pub rows: u64,
    /// Files made visible by the commit.
    pub files: Vec<PathBuf>,
}

/// Plans a source: validates its fields for its kind and fixes its schema
/// (declared, or inferred from the first file). Relative paths resolve against `base_dir`.
pub fn plan_source(
    spec: &SourceSpec,
    base_dir: &Path,
    job_batch_rows: usize,
    blobs: &flumen_blob::BlobStore,
) -> Result<Box<dyn PlannedSource>, ConnectorError> {
    if spec.kind != SourceKind::Blobs {
        for (field, set) in [
            ("uris", spec.uris.is_some()),
            ("column", spec.column.is_some()),
            ("column_type", spec.column_type.is_some()),
            ("on_error", spec.on_error.is_some()),
        ] {
            if set {
                return Err(ConnectorError::Config {
                    node: spec.id.clone(),
                    message: format!("`{field}` applies only to blobs sources"),
                });
            }
        }
    }
    let source = match spec.kind {
        SourceKind::Blobs => blob_source::plan(spec, base_dir, job_batch_rows, blobs)?,
        SourceKind::Generator => generator::plan(spec, job_batch_rows)?,
        SourceKind::Parquet | SourceKind::Csv | SourceKind::Jsonl => file_source::plan(spec, base_dir, job_batch_rows)?,
    };
    match &spec.watermark {
        Some(watermark) => watermark::wrap(&spec.id, watermark, source),
        None => Ok(source),
    }
}

/// Opens subtask `subtask` of a sink whose input has `schema`.
pub fn open_sink(
    spec: &SinkSpec,
    base_dir: &Path,
    schema: SchemaRef,
    subtask: u32,
    parallelism: u32,
) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    match spec.kind {
        SinkKind::Parquet | SinkKind::Csv | SinkKind::Jsonl => {
            file_sink::open(spec, base_dir, schema, subtask, parallelism)
        }
        SinkKind::Console => sinks::console(spec, schema),
        SinkKind::Blackhole => Ok(sinks::blackhole()),
    }
}

/// Opens subtask `subtask` of a sink for a checkpointed (exactly-once) run.
///
/// File sinks treat `path` as a directory (whatever the parallelism) and write
/// `part-<subtask:04>-<checkpoint:012>.<ext>` files in it through `.staging/`;
/// console and blackhole sinks are the same as from [`open_sink`], except that a
/// console sink prints rows as they arrive.
pub fn open_transactional_sink(
    spec: &SinkSpec,
    base_dir: &Path,
    schema: SchemaRef,
    subtask: u32,
    parallelism: u32,
) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    match spec.kind {
        SinkKind::Parquet | SinkKind::Csv | SinkKind::Jsonl => {
            transactional::open(spec, base_dir, schema, subtask, parallelism)
        }
        SinkKind::Console => sinks::console_streaming(spec, schema),
        SinkKind::Blackhole => Ok(sinks::blackhole()),
    }
}

/// Publishes a transaction returned by [`SinkWriter::pre_commit`]. Idempotent:
/// publishing one that is already (fully or partly) published finishes it and
/// succeeds; a staged file that is missing while its published file exists is
/// fine; both missing is an error naming the file.
pub fn commit_pending(spec: &SinkSpec, base_dir: &Path, pending: &Transaction) -> Result<SinkReport, ConnectorError> {
    transactional::commit_pending(spec, base_dir, pending)
}

/// Called once per sink (not per subtask) before the sink's subtasks open for
/// a checkpointed run. `restored`: the checkpoint the job resumes from (`None`:
/// fresh start). `keep`: the pending transactions of the restored checkpoint,
/// which the engine is still to commit, so their staged files stay.
///
/// Removes staged and in-progress files not in `keep`, and published parts of
/// checkpoints newer than `restored` (they exist only if the engine fell back
/// to an older checkpoint; left there, their rows would appear twice). On a
/// fresh start removes every published part: the engine gets there only when
/// there are none, or the user asked (`--from-scratch`). Only names of this
/// sink's part pattern are ever removed, never other files. Returns the
/// published parts removed.
pub fn recover_sink(
    spec: &SinkSpec,
    base_dir: &Path,
    restored: Option<u64>,
    keep: &[Transaction],
) -> Result<Vec<std::path::PathBuf>, ConnectorError> {
    transactional::recover(spec, base_dir, restored, keep)
}

/// The published part files of a checkpointed file sink (none for other sinks): the committed
/// output a start from nothing would remove.
pub fn published_parts(spec: &SinkSpec, base_dir: &Path) -> Result<Vec<std::path::PathBuf>, ConnectorError> {
    transactional::published(spec, base_dir)
}

/// Checks a sink's fields for its kind before the job starts.
pub fn validate_sink(spec: &SinkSpec) -> Result<(), ConnectorError> {
    sinks::validate(spec)
}

/// Parses an Arrow type name of a declared schema (`int64`, `utf8`, `timestamp[ms]`, …).
pub fn parse_type_name(name: &str) -> Option<arrow_schema::DataType> {
    file_source::parse_type_name(name)
}

/// A blob store for connector unit tests (a fresh key; spill files under the system temp dir).
#[cfg(test)]
pub(crate) fn test_blobs() -> flumen_blob::BlobStore {
    flumen_blob::BlobStore::with_key(
        flumen_blob::BlobConfig { memory_budget: 1 << 20, spill_dir: std::env::temp_dir(), durable_dir: None },
        [7; flumen_blob::KEY_BYTES],
    )
}
