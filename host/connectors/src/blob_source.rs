//! The `blobs` source: one row per file (of a directory or a glob) or URI,
//! carrying a reference to its bytes, not the bytes.
//!
//! Local files are hashed as they are read and then served in place by the
//! blob store (never copied into memory); `s3://` and `http(s)://` objects
//! are fetched once, when the source reaches them, into the store (memory up
//! to its budget, then spill files). Each row has `path` (as written, or the
//! file's path relative to the job), `size` and the reference column
//! (`blob` by default) typed `flumen.blob`, `flumen.image` or `flumen.video`.
//!
//! Subtask `i` of `n` reads entries `i`, `i + n`, … in order; its position is
//! how many of its entries it has emitted and the last one's name, so a
//! resumed job replays exactly the rest (and refuses if the listing changed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use flumen_batch::media::{self, BlobColumnBuilder};
use flumen_blob::{BlobStore, Pin};
use serde::Deserialize;

use flumen_spec::connector::BlobColumnType;

use super::{ConnectorError, FailedRow, PlannedSource, SourcePosition, SourceReader, SourceSpec};

/// Rows per batch of a blobs source without its own `batch_rows` (at most the job's).
pub const BLOB_BATCH_ROWS_DEFAULT: usize = 32;

#[derive(Clone, Debug)]
enum Entry {
    File { path: PathBuf, name: String },
    Uri(String),
}

impl Entry {
    fn name(&self) -> &str {
        match self {
            Entry::File { name, .. } => name,
            Entry::Uri(u) => u,
        }
    }
}

#[derive(Debug)]
struct BlobSource {
    node: String,
    schema: SchemaRef,
    column: String,
    entries: Arc<Vec<Entry>>,
    batch_rows: usize,
    store: BlobStore,
    /// `on_error` dead-letters unreadable objects (else they fail the job).
    dead_letter: bool,
}

fn config(node: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config { node: node.to_owned(), message: message.into() }
}

/// Plans a `blobs` source.
pub(super) fn plan(
    spec: &SourceSpec,
    base_dir: &Path,
    job_batch_rows: usize,
    store: &BlobStore,
) -> Result<Box<dyn PlannedSource>, ConnectorError> {
    let node = spec.id.as_str();
    for (field, set) in [
        ("rows", spec.rows.is_some()),
        ("seed", spec.seed.is_some()),
        ("columns", spec.columns.is_some()),
        ("rows_per_second", spec.rows_per_second.is_some()),
        ("schema", spec.schema.is_some()),
        ("has_header", spec.has_header.is_some()),
        ("delimiter", spec.delimiter.is_some()),
        ("watermark", spec.watermark.is_some()),
    ] {
        if set {
            return Err(config(node, format!("`{field}` does not apply to a blobs source")));
        }
    }
    // A row is a whole object, which an operator may turn into megabytes of
    // tensors: batches are small unless the source asks otherwise.
    let batch_rows = super::file_source::check_common_fields(spec, job_batch_rows.min(BLOB_BATCH_ROWS_DEFAULT))?;
    let entries: Vec<Entry> = match (&spec.path, &spec.uris) {
        (Some(_), Some(_)) => return Err(config(node, "give either `path` or `uris`, not both")),
        (None, None) => {
            return Err(config(node, "a blobs source needs `path` (a file, a directory or a glob) or `uris` (a list)"));
        }
        (Some(pattern), None) => super::file_source::resolve_all_files(node, base_dir, pattern)?
            .into_iter()
            .map(|path| {
                let name = path.strip_prefix(base_dir).unwrap_or(&path).display().to_string();
                Entry::File { path, name }
            })
            .collect(),
        (None, Some(uris)) => {
            if uris.is_empty() {
                return Err(config(node, "`uris` is empty"));
            }
            let mut out = Vec::with_capacity(uris.len());
            for u in uris {
                match flumen_blob::local_path(u) {
                    Some(p) => {
                        let path = base_dir.join(&p);
                        if !path.is_file() {
                            return Err(config(node, format!("`uris`: {u} is not a file ({})", path.display())));
                        }
                        out.push(Entry::File { path, name: u.clone() });
                    }
                    None => {
                        let scheme = u.split("://").next().unwrap_or_default();
                        if !["s3", "http", "https"].contains(&scheme) {
                            return Err(config(
                                node,
                                format!("`uris`: {u}: unsupported scheme (use file://, http://, https:// or s3://)"),
                            ));
                        }
                        out.push(Entry::Uri(u.clone()));
                    }
                }
            }
            out
        }
    };
    let dead_letter = match &spec.on_error {
        None => false,
        Some(p) if p.retries > 0 => {
            return Err(config(node, "`on_error.retries` does not apply to a source (an object is read once)"));
        }
        Some(p) => p.then == flumen_types::FailureAction::DeadLetter,
    };
    let column = spec.column.clone().unwrap_or_else(|| "blob".into());
    if column == "path" || column == "size" || column.is_empty() {
        return Err(config(node, format!("`column` {column:?} clashes with the columns `path` and `size`")));
    }
    // Dead-lettered rows have no reference, so the column is nullable then
    // (rows that reach the source's consumers always have one).
    let ref_field = match spec.column_type.unwrap_or(BlobColumnType::Blob) {
        BlobColumnType::Blob => media::blob_field(&column, dead_letter),
        BlobColumnType::Image => media::image_field(&column, dead_letter),
        BlobColumnType::Video => media::video_field(&column, dead_letter),
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        ref_field,
    ]));
    Ok(Box::new(BlobSource {
        node: node.to_owned(),
        schema,
        column,
        entries: Arc::new(entries),
        batch_rows,
        store: store.clone(),
        dead_letter,
    }))
}

impl PlannedSource for BlobSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn open(&self, subtask: u32, parallelism: u32) -> Result<Box<dyn SourceReader>, ConnectorError> {
        if subtask >= parallelism {
            return Err(config(&self.node, format!("cannot open subtask {subtask} of {parallelism}")));
        }
        let mine: Vec<usize> =
            (0..self.entries.len()).filter(|i| i % parallelism as usize == subtask as usize).collect();
        let _ = &self.column;
        Ok(Box::new(BlobReader {
            node: self.node.clone(),
            schema: self.schema.clone(),
            entries: self.entries.clone(),
            mine,
            next: 0,
            batch_rows: self.batch_rows,
            store: self.store.clone(),
            dead_letter: self.dead_letter,
            failed: Vec::new(),
        }))
    }
}

struct BlobReader {
    node: String,
    schema: SchemaRef,
    entries: Arc<Vec<Entry>>,
    /// Indices into `entries` this subtask reads, in order.
    mine: Vec<usize>,
    /// How many of `mine` were emitted.
    next: usize,
    batch_rows: usize,
    store: BlobStore,
    dead_letter: bool,
    /// Entries the last `next_batch` could not read (with `dead_letter`).
    failed: Vec<FailedRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlobPosition {
    emitted: usize,
    last: Option<String>,
}

impl BlobReader {
    fn read_entry(&self, entry: &Entry) -> Result<(flumen_blob::BlobRef, Pin, u64), ConnectorError> {
        let fail = |path: &str, message: String| ConnectorError::File {
            node: self.node.clone(),
            path: PathBuf::from(path),
            message,
        };
        let name = entry.name();
        let media_type = flumen_blob::media_type_of(name);
        match entry {
            Entry::File { path, name } => {
                let (r, pin) = self
                    .store
                    .put_file(path, &media_type, name)
                    .map_err(|e| fail(&path.display().to_string(), e.to_string()))?;
                let size = r.size;
                Ok((r, pin, size))
            }
            Entry::Uri(uri) => {
                // Into memory within the budget, else streamed to a spill file.
                let fetch = flumen_blob::fetch_uri_into(&self.store, uri, &media_type);
                let (r, pin) = match tokio::runtime::Handle::try_current() {
                    Ok(h) => h.block_on(fetch),
                    Err(_) => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| fail(uri, e.to_string()))?
                        .block_on(fetch),
                }
                .map_err(|e| fail(uri, format!("cannot fetch: {e}")))?;
                let size = r.size;
                Ok((r, pin, size))
            }
        }
    }
}

impl BlobReader {
    /// The row of an entry that could not be read: its name, size 0, no reference.
    fn failed_row(&self, entry: &Entry, error: &ConnectorError) -> Result<FailedRow, ConnectorError> {
        let mut refs = BlobColumnBuilder::new();
        refs.append(None);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(arrow_array::StringArray::from(vec![entry.name()])),
            Arc::new(arrow_array::UInt64Array::from(vec![0u64])),
            Arc::new(refs.finish()),
        ];
        let row = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ConnectorError::Other { node: self.node.clone(), message: e.to_string() })?;
        Ok(FailedRow { row, error: error.to_string() })
    }
}

impl SourceReader for BlobReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        if self.next >= self.mine.len() {
            return Ok(None);
        }
        let end = (self.next + self.batch_rows).min(self.mine.len());
        let mut paths = StringBuilder::new();
        let mut sizes = UInt64Builder::new();
        let mut refs = BlobColumnBuilder::new();
        let mut pins = Vec::with_capacity(end - self.next);
        for &i in &self.mine[self.next..end] {
            let entry = &self.entries[i];
            let (r, pin, size) = match self.read_entry(entry) {
                Ok(read) => read,
                Err(e) if self.dead_letter => {
                    let failed = self.failed_row(entry, &e)?;
                    self.failed.push(failed);
                    continue;
                }
                Err(e) => return Err(e),
            };
            paths.append_value(entry.name());
            sizes.append_value(size);
            refs.append(Some(&r));
            pins.push(pin);
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(paths.finish()), Arc::new(sizes.finish()), Arc::new(refs.finish())];
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ConnectorError::Other { node: self.node.clone(), message: e.to_string() })?;
        // The batch pins its blobs from here on; the pins of making them go.
        let batch = self
            .store
            .pin_batch(batch, false)
            .map_err(|e| ConnectorError::Other { node: self.node.clone(), message: e.to_string() })?;
        drop(pins);
        self.next = end;
        Ok(Some(batch))
    }

    fn take_failed(&mut self) -> Vec<FailedRow> {
        std::mem::take(&mut self.failed)
    }

    fn position(&self) -> SourcePosition {
        let last = self.next.checked_sub(1).map(|k| self.entries[self.mine[k]].name().to_string());
        SourcePosition::of(serde_json::json!({ "emitted": self.next, "last": last }))
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        let bad = |m: String| ConnectorError::Other { node: self.node.clone(), message: m };
        let p: BlobPosition = serde_json::from_value(position.value().clone())
            .map_err(|e| bad(format!("malformed position in the checkpoint: {e}")))?;
        if p.emitted > self.mine.len() {
            return Err(bad(format!(
                "the checkpoint says {} entries were read, but this subtask has only {} now (the files changed)",
                p.emitted,
                self.mine.len()
            )));
        }
        let last = p.emitted.checked_sub(1).map(|k| self.entries[self.mine[k]].name().to_string());
        if last != p.last {
            return Err(bad(format!(
                "the checkpoint's last entry was {:?}, but it is {:?} now (the files changed since the checkpoint)",
                p.last, last
            )));
        }
        self.next = p.emitted;
        Ok(())
    }
}
