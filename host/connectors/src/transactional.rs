//! Transactional file sinks: exactly-once Parquet, CSV and JSON Lines part files by two-phase commit.
//!
//! # Layout
//!
//! In a checkpointed run a file sink's `path` is a directory, whatever the
//! parallelism. Committed output is `<dir>/part-<subtask:04>-<checkpoint:012>.<ext>`:
//! each part file holds one subtask's rows of one checkpoint, is complete, and
//! is never rewritten. Work in progress lives in `<dir>/.staging/`.
//!
//! # Protocol
//!
//! 1. **Recover** ([`recover`], once per sink before its subtasks open). Given
//!    the checkpoint the job resumes from (`r`, or none on a fresh start) and
//!    the pending transactions of `r` (`keep`), remove every in-progress file,
//!    every staged file not in `keep`, and every published part of a
//!    checkpoint after `r` (all published parts on a fresh start).
//! 2. **Write.** A subtask writes rows into `.staging/.part-<subtask:04>.<ext>.inprogress-<random>`,
//!    opened at the first row after the previous pre-commit. Dropping the
//!    writer removes that file.
//! 3. **Pre-commit** (barrier of checkpoint `n`, [`SinkWriter::pre_commit`]).
//!    The subtask finishes the file, fsyncs it, renames it to
//!    `.staging/part-<subtask:04>-<n:012>.<ext>` and fsyncs `.staging`. It returns
//!    the transaction `{"files": [{"staged": ".staging/<name>", "final": "<name>"}], "rows": k}`
//!    (or `null` when nothing was written); the engine stores it in checkpoint
//!    `n`'s manifest.
//! 4. **Commit** ([`commit_pending`], once checkpoint `n` is complete). Rename
//!    each staged file to `<dir>/<name>`, then fsync `<dir>`. A staged file
//!    already gone whose final file exists was published by an earlier
//!    (interrupted) commit, so committing again finishes the job and succeeds.
//!
//! # Why each row is published exactly once
//!
//! A row becomes visible only when its part file is renamed into `<dir>`, and
//! that happens only in step 4, for a transaction stored in a complete
//! checkpoint. Say the job fails and resumes from checkpoint `r`; its sources
//! rewind to their positions at `r`'s barrier, so every row after that barrier
//! is produced again. Its earlier copies were in in-progress files, staged
//! files of checkpoints after `r`, or published parts of checkpoints after `r`
//! (if the engine fell back past a newer, corrupted checkpoint): step 1 removes
//! all three. Every row before `r`'s barrier is in a part of a checkpoint up
//! to `r`: either already published (kept) or staged in one of `r`'s pending
//! transactions (kept by step 1, published by the engine's idempotent step 4).
//! Renames within one directory are atomic, so a reader never sees half a part.
//!
//! The engine must therefore pass as `keep` every transaction of the restored
//! checkpoint's manifest that it has not seen fully committed.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

use super::file_sink::{FormatWriter, TempFile, extension, file_error, sync_dir};
use super::{ConnectorError, SinkReport, SinkSpec, SinkWriter};
use flumen_types::durable::TempPath;

/// The largest checkpoint id: part names hold checkpoint ids in 12 digits, so
/// that names sort by checkpoint within a subtask.
pub(super) const CHECKPOINT_MAX: u64 = 999_999_999_999;

/// The directory of staged and in-progress files, inside the sink's directory.
const STAGING_DIR: &str = ".staging";

/// Opens subtask `subtask` of `parallelism` of a transactional Parquet, CSV or JSON Lines sink.
pub(super) fn open(
    spec: &SinkSpec,
    base_dir: &Path,
    schema: SchemaRef,
    subtask: u32,
    parallelism: u32,
) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    super::sinks::validate(spec)?;
    let node = spec.id.as_str();
    if subtask >= parallelism {
        return Err(other(node, format!("cannot open subtask {subtask} of {parallelism}")));
    }
    let (dir, extension) = sink_dir(spec, base_dir)?;
    if dir.is_file() {
        return Err(config(
            node,
            format!("`path` {} is a file; in a checkpointed job it names a directory of part files", dir.display()),
        ));
    }
    let staging = dir.join(STAGING_DIR);
    fs::create_dir_all(&staging)
        .map_err(|e| file_error(node, &staging, format!("cannot create the staging directory: {e}")))?;
    // Make the new directories themselves durable before files are published in them.
    for synced in
        [Some(dir.as_path()), dir.parent().filter(|parent| !parent.as_os_str().is_empty())].into_iter().flatten()
    {
        sync_dir(synced).map_err(|e| file_error(node, synced, format!("cannot sync the directory to disk: {e}")))?;
    }
    Ok(Box::new(TransactionalSink {
        spec: spec.clone(),
        schema,
        dir,
        staging,
        extension,
        subtask,
        part: None,
        last_checkpoint: None,
        poisoned: false,
    }))
}

/// Publishes a transaction returned by `pre_commit` (see the module docs, step 4).
pub(super) fn commit_pending(
    spec: &SinkSpec,
    base_dir: &Path,
    pending: &Transaction,
) -> Result<SinkReport, ConnectorError> {
    let node = spec.id.as_str();
    if extension(spec.kind).is_none() {
        return Err(other(
            node,
            format!("a {} sink has nothing to commit, but was given {pending}", super::sinks::kind_name(spec.kind)),
        ));
    }
    let (dir, extension) = sink_dir(spec, base_dir)?;
    publish(node, &dir, extension, pending)
}

/// Publishes `pending` into the resolved sink directory `dir`.
fn publish(node: &str, dir: &Path, extension: &str, transaction: &Transaction) -> Result<SinkReport, ConnectorError> {
    transaction.check(node, extension)?;
    let staging = dir.join(STAGING_DIR);
    let mut files = Vec::with_capacity(transaction.files.len());
    for file in &transaction.files {
        let staged = staging.join(&file.final_name);
        let published = dir.join(&file.final_name);
        match fs::rename(&staged, &published) {
            Ok(()) => {}
            // Published by an earlier commit that was interrupted or repeated.
            Err(e) if e.kind() == ErrorKind::NotFound && published.is_file() => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(file_error(
                    node,
                    &staged,
                    format!(
                        "cannot commit: neither the staged file nor the published {} exists; the output of this checkpoint is lost",
                        published.display()
                    ),
                ));
            }
            Err(e) => return Err(file_error(node, &staged, format!("cannot publish the staged file: {e}"))),
        }
        files.push(published);
    }
    sync_dir(dir).map_err(|e| file_error(node, dir, format!("cannot sync the directory to disk: {e}")))?;
    Ok(SinkReport { rows: transaction.rows, files })
}

/// Clears what a resumed or fresh checkpointed run must not see (see the module docs, step 1).
/// Returns the published parts it removed.
pub(super) fn recover(
    spec: &SinkSpec,
    base_dir: &Path,
    restored: Option<u64>,
    keep: &[Transaction],
) -> Result<Vec<PathBuf>, ConnectorError> {
    if extension(spec.kind).is_none() {
        return Ok(Vec::new());
    }
    let node = spec.id.as_str();
    let (dir, extension) = sink_dir(spec, base_dir)?;
    let mut kept = HashSet::new();
    for pending in keep {
        pending.check(node, extension)?;
        kept.extend(pending.files.iter().map(|file| file.final_name.clone()));
    }
    if !dir.exists() {
        return Ok(Vec::new());
    }
    if !dir.is_dir() {
        return Err(config(
            node,
            format!("`path` {} is a file; in a checkpointed job it names a directory of part files", dir.display()),
        ));
    }
    let staging = dir.join(STAGING_DIR);
    if staging.is_dir() {
        let removed = remove_matching(node, &staging, |name| {
            is_in_progress_name(name, extension) || (parse_part_name(name, extension).is_some() && !kept.contains(name))
        })?;
        if !removed.is_empty() {
            sync_dir(&staging)
                .map_err(|e| file_error(node, &staging, format!("cannot sync the directory to disk: {e}")))?;
        }
    }
    let removed = remove_matching(node, &dir, |name| match (parse_part_name(name, extension), restored) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some((_, checkpoint)), Some(restored)) => checkpoint > restored,
    })?;
    if !removed.is_empty() {
        sync_dir(&dir).map_err(|e| file_error(node, &dir, format!("cannot sync the directory to disk: {e}")))?;
    }
    Ok(removed)
}

/// The published parts of a checkpointed file sink: what a start from nothing would remove.
pub(super) fn published(spec: &SinkSpec, base_dir: &Path) -> Result<Vec<PathBuf>, ConnectorError> {
    if extension(spec.kind).is_none() {
        return Ok(Vec::new());
    }
    let node = spec.id.as_str();
    let (dir, extension) = sink_dir(spec, base_dir)?;
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let list_error = |e: std::io::Error| file_error(node, &dir, format!("cannot list the directory: {e}"));
    let mut parts = Vec::new();
    for entry in fs::read_dir(&dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if parse_part_name(&name, extension).is_some() && entry.file_type().map_err(list_error)?.is_file() {
            parts.push(entry.path());
        }
    }
    parts.sort();
    Ok(parts)
}

/// The sink's directory and file extension.
fn sink_dir(spec: &SinkSpec, base_dir: &Path) -> Result<(PathBuf, &'static str), ConnectorError> {
    let node = spec.id.as_str();
    let Some(extension) = extension(spec.kind) else { return Err(config(node, "not a file sink")) };
    match spec.path.as_deref() {
        Some(path) if !path.trim().is_empty() => Ok((base_dir.join(path), extension)),
        _ => Err(config(node, "a file sink needs `path` (in a checkpointed job, a directory of part files)")),
    }
}

/// Removes the regular files of `dir` whose names `remove` selects; returns those it removed.
fn remove_matching(node: &str, dir: &Path, remove: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, ConnectorError> {
    let list_error = |e: std::io::Error| file_error(node, dir, format!("cannot list the directory: {e}"));
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if !remove(&name) || !entry.file_type().map_err(list_error)?.is_file() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed.push(entry.path()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(node, &entry.path(), format!("cannot remove a stale part file: {e}"))),
        }
    }
    Ok(removed)
}

/// The name of the part file of `subtask` for `checkpoint`.
fn part_name(subtask: u32, checkpoint: u64, extension: &str) -> String {
    format!("part-{subtask:04}-{checkpoint:012}.{extension}")
}

/// `part-<subtask, 4 or more digits>-<checkpoint, 12 digits>.<extension>` → (subtask, checkpoint).
fn parse_part_name(name: &str, extension: &str) -> Option<(u32, u64)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(extension)?.strip_suffix('.')?;
    let (subtask, checkpoint) = stem.split_once('-')?;
    let digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if subtask.len() < 4 || checkpoint.len() != 12 || !digits(subtask) || !digits(checkpoint) {
        return None;
    }
    Some((subtask.parse().ok()?, checkpoint.parse().ok()?))
}

/// `.part-<subtask>.<extension>.inprogress-<16 hex digits>`, as `TempFile::create` names them.
fn is_in_progress_name(name: &str, extension: &str) -> bool {
    let Some(rest) = name.strip_prefix(".part-") else { return false };
    let Some((subtask, suffix)) = rest.split_once('.') else { return false };
    let Some(random) = suffix.strip_prefix(extension).and_then(|s| s.strip_prefix(".inprogress-")) else {
        return false;
    };
    subtask.len() >= 4
        && subtask.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit())
}

fn config(node: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config { node: node.to_owned(), message: message.into() }
}

fn other(node: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Other { node: node.to_owned(), message: message.into() }
}

/// A pre-committed transaction of a checkpointed file sink: what
/// [`SinkWriter::pre_commit`] returns, the checkpoint manifest stores and
/// [`commit_pending`](super::commit_pending) publishes. It comes back from the
/// manifest on disk, so it is read strictly (unknown fields refused) and every
/// name is checked before use: it must be one of this sink's part names, which
/// keeps renames inside the sink's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    files: Vec<StagedFile>,
    rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StagedFile {
    /// Relative to the sink's directory: `.staging/<final>`.
    staged: String,
    /// Relative to the sink's directory: a part name.
    #[serde(rename = "final")]
    final_name: String,
}

impl Transaction {
    /// Refuses a transaction whose names are not this sink's (`extension`) part and staged names.
    fn check(&self, node: &str, extension: &str) -> Result<(), ConnectorError> {
        let malformed = |why: String| other(node, format!("malformed pending transaction {self}: {why}"));
        for file in &self.files {
            if parse_part_name(&file.final_name, extension).is_none() {
                return Err(malformed(format!("{:?} is not a part file name of this sink", file.final_name)));
            }
            if file.staged != format!("{STAGING_DIR}/{}", file.final_name) {
                return Err(malformed(format!("{:?} is not the staged name of {:?}", file.staged, file.final_name)));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.files.iter().map(|file| file.final_name.as_str()).collect();
        write!(f, "{{{} rows in {names:?}}}", self.rows)
    }
}

/// A file being written since the last pre-commit.
struct OpenPart {
    rows: u64,
    // Declared before `temp`: the file is closed before the temporary is removed.
    writer: FormatWriter,
    temp: TempPath,
}

struct TransactionalSink {
    spec: SinkSpec,
    schema: SchemaRef,
    dir: PathBuf,
    staging: PathBuf,
    extension: &'static str,
    subtask: u32,
    /// Opened at the first row after a pre-commit.
    part: Option<OpenPart>,
    last_checkpoint: Option<u64>,
    /// Set by a failed write or pre-commit: the rows it guarded may be lost, so
    /// the writer refuses further work (recovery goes through the last checkpoint).
    poisoned: bool,
}

impl TransactionalSink {
    fn node(&self) -> &str {
        &self.spec.id
    }

    fn check_not_poisoned(&self) -> Result<(), ConnectorError> {
        if self.poisoned {
            return Err(other(self.node(), "the sink failed earlier and accepts no more work"));
        }
        Ok(())
    }

    fn write_unpoisoned(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        // Rebuilding the batch checks it against the sink's schema (types and nullability).
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(|e| {
            file_error(self.node(), &self.dir, format!("a batch does not match the sink's input schema: {e}"))
        })?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let part = match &mut self.part {
            Some(part) => part,
            None => {
                let name = format!("part-{:04}.{}", self.subtask, self.extension);
                let (temp, file) = TempFile::create(&self.spec.id, &self.staging, &name)?;
                let writer = FormatWriter::new(&self.spec, file, self.schema.clone())
                    .map_err(|e| file_error(&self.spec.id, temp.path(), e))?;
                self.part.insert(OpenPart { rows: 0, writer, temp })
            }
        };
        part.writer.write(&batch).map_err(|e| file_error(&self.spec.id, part.temp.path(), e))?;
        part.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn pre_commit_unpoisoned(&mut self, checkpoint: u64) -> Result<Option<Transaction>, ConnectorError> {
        if checkpoint > CHECKPOINT_MAX {
            return Err(other(
                self.node(),
                format!("checkpoint {checkpoint} is above the largest id, {CHECKPOINT_MAX}"),
            ));
        }
        if let Some(last) = self.last_checkpoint
            && checkpoint <= last
        {
            return Err(other(
                self.node(),
                format!("checkpoint {checkpoint} is not after the previous pre-commit's, {last}"),
            ));
        }
        self.last_checkpoint = Some(checkpoint);
        let Some(OpenPart { rows, writer, mut temp }) = self.part.take() else { return Ok(None) };
        let name = part_name(self.subtask, checkpoint, self.extension);
        let staged = self.staging.join(&name);
        let error = |message: String| file_error(&self.spec.id, &staged, message);
        if staged.exists() || self.dir.join(&name).exists() {
            return Err(error(format!(
                "{name} already exists: a checkpoint id was reused, or the sink was not recovered before opening"
            )));
        }
        let file = writer.finish(self.schema.clone(), true).map_err(error)?;
        flumen_types::durable::publish(&file, temp.path(), &staged)
            .map_err(|e| error(format!("cannot stage the finished file durably: {e}")))?;
        temp.keep();
        Ok(Some(Transaction {
            files: vec![StagedFile { staged: format!("{STAGING_DIR}/{name}"), final_name: name }],
            rows,
        }))
    }
}

impl SinkWriter for TransactionalSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        self.check_not_poisoned()?;
        let written = self.write_unpoisoned(batch);
        self.poisoned = written.is_err();
        written
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Transaction>, ConnectorError> {
        self.check_not_poisoned()?;
        let transaction = self.pre_commit_unpoisoned(checkpoint);
        self.poisoned = transaction.is_err();
        transaction
    }

    fn commit(mut self: Box<Self>) -> Result<SinkReport, ConnectorError> {
        self.check_not_poisoned()?;
        match self.pre_commit(CHECKPOINT_MAX)? {
            Some(pending) => publish(&self.spec.id, &self.dir, self.extension, &pending),
            None => Ok(SinkReport::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use crate::{PlannedSource, plan_source};

    fn spec(text: &str) -> SinkSpec {
        toml::from_str(text).unwrap_or_else(|e| panic!("bad test spec: {e}"))
    }

    fn file_spec(kind: &str) -> SinkSpec {
        spec(&format!("id = 'out'\nkind = '{kind}'\npath = 'out'"))
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]))
    }

    fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
        let names: Vec<Option<String>> = ids.clone().map(|i| (i % 3 != 0).then(|| format!("n{i}"))).collect();
        RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(StringArray::from(names))],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn open_ok(spec: &SinkSpec, base: &Path, subtask: u32, parallelism: u32) -> Box<dyn SinkWriter> {
        open(spec, base, schema(), subtask, parallelism).unwrap_or_else(|e| panic!("open failed: {e}"))
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    /// A pre-commit's transaction in its manifest form (`null` for none).
    fn pre_commit(sink: &mut Box<dyn SinkWriter>, checkpoint: u64) -> serde_json::Value {
        let pending = sink.pre_commit(checkpoint).unwrap_or_else(|e| panic!("pre-commit {checkpoint}: {e}"));
        serde_json::to_value(pending).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A transaction read back from its manifest form, as the engine does.
    fn transaction(pending: &serde_json::Value) -> Transaction {
        Transaction::deserialize(pending).unwrap_or_else(|e| panic!("{pending}: {e}"))
    }

    fn commit(spec: &SinkSpec, base: &Path, pending: &serde_json::Value) -> SinkReport {
        if pending.is_null() {
            return SinkReport::default();
        }
        commit_pending(spec, base, &transaction(pending)).unwrap_or_else(|e| panic!("commit of {pending}: {e}"))
    }

    /// The ids of the committed output, read back by a file source over the part files (sorted by name).
    fn committed_ids(kind: &str, base: &Path) -> Vec<i64> {
        let source: Box<dyn PlannedSource> = plan_source(
            &toml::from_str(&format!(
                "id = 'in'\nkind = '{kind}'\npath = 'out/part-*-????????????.{kind}'\n\
                 schema = [{{ name = 'id', type = 'int64', nullable = false }}, {{ name = 'name', type = 'utf8' }}]"
            ))
            .unwrap_or_else(|e| panic!("{e}")),
            base,
            1024,
            &crate::test_blobs(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut reader = source.open(0, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut ids = Vec::new();
        while let Some(batch) = reader.next_batch().unwrap_or_else(|e| panic!("{e}")) {
            ids.extend(batch.column(0).as_primitive::<Int64Type>().values().iter().copied());
        }
        ids
    }

    #[test]
    fn pre_committed_rows_are_invisible_until_committed_and_commit_is_idempotent() {
        for kind in ["parquet", "csv", "jsonl"] {
            let dir = tempdir();
            let base = dir.path();
            let spec = file_spec(kind);
            let out = base.join("out");
            let mut first = open_ok(&spec, base, 0, 2);
            let mut second = open_ok(&spec, base, 1, 2);
            first.write(&batch(0..3)).unwrap_or_else(|e| panic!("{e}"));
            second.write(&batch(100..102)).unwrap_or_else(|e| panic!("{e}"));
            let one = pre_commit(&mut first, 1);
            let one_second = pre_commit(&mut second, 1);
            let part = format!("part-0000-000000000001.{kind}");
            assert_eq!(
                one,
                serde_json::json!({ "files": [{ "staged": format!(".staging/{part}"), "final": part }], "rows": 3 })
            );
            first.write(&batch(3..5)).unwrap_or_else(|e| panic!("{e}"));
            first.write(&batch(5..5)).unwrap_or_else(|e| panic!("{e}"));
            let two = pre_commit(&mut first, 2);
            assert_eq!(pre_commit(&mut second, 2), serde_json::Value::Null, "nothing written: nothing to publish");
            assert_eq!(pre_commit(&mut first, 3), serde_json::Value::Null);
            assert_eq!(names_in(&out), [".staging"], "{kind}: nothing is visible before the commit");
            assert_eq!(
                names_in(&out.join(STAGING_DIR)),
                [part.clone(), format!("part-0000-000000000002.{kind}"), format!("part-0001-000000000001.{kind}")]
            );

            for _ in 0..2 {
                let report = commit(&spec, base, &one);
                assert_eq!((report.rows, report.files), (3, vec![out.join(&part)]));
            }
            assert_eq!(committed_ids(kind, base), [0, 1, 2]);
            commit(&spec, base, &two);
            commit(&spec, base, &one_second);
            commit(&spec, base, &two);
            assert_eq!(commit(&spec, base, &serde_json::Value::Null).rows, 0);
            assert_eq!(committed_ids(kind, base), [0, 1, 2, 3, 4, 100, 101], "{kind}");
            assert_eq!(names_in(&out.join(STAGING_DIR)), Vec::<String>::new());
        }
    }

    #[test]
    fn a_partly_published_transaction_is_finished_and_a_lost_one_is_an_error() {
        let dir = tempdir();
        let base = dir.path();
        let spec = file_spec("jsonl");
        let mut first = open_ok(&spec, base, 0, 2);
        let mut second = open_ok(&spec, base, 1, 2);
        first.write(&batch(0..2)).unwrap_or_else(|e| panic!("{e}"));
        second.write(&batch(2..4)).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (pre_commit(&mut first, 4), pre_commit(&mut second, 4));
        let both = serde_json::json!({ "files": [a["files"][0].clone(), b["files"][0].clone()], "rows": 4 });
        commit(&spec, base, &a);
        let report = commit(&spec, base, &both);
        assert_eq!(report.rows, 4);
        assert_eq!(committed_ids("jsonl", base), [0, 1, 2, 3]);

        first.write(&batch(4..6)).unwrap_or_else(|e| panic!("{e}"));
        let lost = pre_commit(&mut first, 5);
        fs::remove_file(base.join("out/.staging/part-0000-000000000005.jsonl")).unwrap_or_else(|e| panic!("{e}"));
        let message = commit_pending(&spec, base, &transaction(&lost)).map(|_| ()).unwrap_err().to_string();
        assert!(message.starts_with("out: ") && message.contains("part-0000-000000000005.jsonl"), "{message}");
    }

    #[test]
    fn malformed_transactions_are_refused() {
        let dir = tempdir();
        let base = dir.path();
        let spec = file_spec("csv");
        // Not a transaction at all: refused when the manifest is read.
        for pending in [
            serde_json::json!({ "files": [] }),
            serde_json::json!([1]),
            serde_json::json!({ "files": [], "rows": 1, "extra": true }),
        ] {
            assert!(Transaction::deserialize(&pending).is_err(), "{pending}");
        }
        for pending in [
            serde_json::json!({ "files": [{ "staged": ".staging/../x.csv", "final": "../x.csv" }], "rows": 1 }),
            serde_json::json!({ "files": [{ "staged": "x", "final": "part-0000-000000000001.csv" }], "rows": 1 }),
            serde_json::json!({ "files": [{ "staged": ".staging/part-0000-1.csv", "final": "part-0000-1.csv" }], "rows": 1 }),
        ] {
            let pending = transaction(&pending);
            let message = commit_pending(&spec, base, &pending).map(|_| ()).unwrap_err().to_string();
            assert!(message.starts_with("out: ") && message.contains("malformed"), "{pending}: {message}");
            let message = recover(&spec, base, Some(1), std::slice::from_ref(&pending)).unwrap_err().to_string();
            assert!(message.contains("malformed"), "{pending}: {message}");
        }
        assert!(!base.join("out").exists());
    }

    #[test]
    fn checkpoint_ids_must_increase_and_a_failure_poisons_the_writer() {
        let dir = tempdir();
        let spec = file_spec("csv");
        let mut sink = open_ok(&spec, dir.path(), 0, 1);
        sink.write(&batch(0..2)).unwrap_or_else(|e| panic!("{e}"));
        pre_commit(&mut sink, 7);
        sink.write(&batch(2..4)).unwrap_or_else(|e| panic!("{e}"));
        let message = sink.pre_commit(7).map(|_| ()).unwrap_err().to_string();
        assert!(message.contains("not after"), "{message}");
        let message = sink.write(&batch(4..5)).unwrap_err().to_string();
        assert!(message.contains("failed earlier"), "{message}");
        let message = open_ok(&spec, dir.path(), 0, 1).pre_commit(CHECKPOINT_MAX + 1).map(|_| ()).unwrap_err();
        assert!(message.to_string().contains("largest"), "{message}");
    }

    #[test]
    fn dropping_a_writer_removes_its_in_progress_file_but_not_staged_ones() {
        let dir = tempdir();
        let spec = file_spec("parquet");
        let staging = dir.path().join("out").join(STAGING_DIR);
        let mut sink = open_ok(&spec, dir.path(), 3, 4);
        sink.write(&batch(0..2)).unwrap_or_else(|e| panic!("{e}"));
        pre_commit(&mut sink, 1);
        sink.write(&batch(2..4)).unwrap_or_else(|e| panic!("{e}"));
        let names = names_in(&staging);
        assert_eq!(names.len(), 2);
        assert!(is_in_progress_name(&names[0], "parquet"), "{names:?}");
        drop(sink);
        assert_eq!(names_in(&staging), ["part-0003-000000000001.parquet"]);
    }

    #[test]
    fn commit_on_a_transactional_writer_publishes_the_rest_as_the_final_checkpoint() {
        let dir = tempdir();
        let spec = file_spec("csv");
        let mut sink = open_ok(&spec, dir.path(), 0, 1);
        sink.write(&batch(0..2)).unwrap_or_else(|e| panic!("{e}"));
        let one = pre_commit(&mut sink, 1);
        sink.write(&batch(2..3)).unwrap_or_else(|e| panic!("{e}"));
        let report = sink.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.rows, 1);
        assert_eq!(report.files, [dir.path().join("out/part-0000-999999999999.csv")]);
        commit(&spec, dir.path(), &one);
        assert_eq!(committed_ids("csv", dir.path()), [0, 1, 2]);
        let text =
            fs::read_to_string(dir.path().join("out/part-0000-000000000001.csv")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, "id,name\n0,\n1,n1\n", "each part is a complete file with its header");
    }

    #[test]
    fn recovery_keeps_what_the_restored_checkpoint_needs_and_removes_the_rest() {
        let dir = tempdir();
        let base = dir.path();
        let spec = file_spec("parquet");
        let out = base.join("out");
        let staging = out.join(STAGING_DIR);
        let mut first = open_ok(&spec, base, 0, 2);
        let mut second = open_ok(&spec, base, 1, 2);
        let checkpoint = |sink: &mut Box<dyn SinkWriter>, rows: std::ops::Range<i64>, id: u64| {
            sink.write(&batch(rows)).unwrap_or_else(|e| panic!("{e}"));
            pre_commit(sink, id)
        };
        let one = checkpoint(&mut first, 0..2, 1);
        let two_first = checkpoint(&mut first, 2..4, 2);
        let two_second = checkpoint(&mut second, 10..12, 2);
        let three_first = checkpoint(&mut first, 4..6, 3);
        let three_second = checkpoint(&mut second, 12..14, 3);
        commit(&spec, base, &one);
        // The engine crashed while committing checkpoint 2: one of its parts is published.
        commit(&spec, base, &two_second);
        // Checkpoint 3 was committed in part, then found corrupted: the engine falls back to 2.
        commit(&spec, base, &three_first);
        first.write(&batch(6..8)).unwrap_or_else(|e| panic!("{e}"));
        std::mem::forget(first); // A crash: the in-progress file stays.
        drop(second);
        let foreign = ["notes.txt", "part-00000.parquet", "part-0000-000000000001.csv", "part-0000-1.parquet"];
        for name in foreign {
            fs::write(out.join(name), "not ours").unwrap_or_else(|e| panic!("{e}"));
        }
        fs::write(staging.join("keep-me.txt"), "not ours").unwrap_or_else(|e| panic!("{e}"));
        assert!(names_in(&staging).iter().any(|name| is_in_progress_name(name, "parquet")));

        let keep = [transaction(&two_first), transaction(&two_second)];
        recover(&spec, base, Some(2), &keep).unwrap_or_else(|e| panic!("{e}"));
        let mut expected =
            vec![".staging", "notes.txt", "part-0000-000000000001.csv", "part-0000-000000000001.parquet"];
        expected.extend(["part-0000-1.parquet", "part-00000.parquet", "part-0001-000000000002.parquet"]);
        assert_eq!(names_in(&out), expected);
        assert_eq!(names_in(&staging), ["keep-me.txt", "part-0000-000000000002.parquet"]);
        commit(&spec, base, &two_first);
        commit(&spec, base, &two_second);
        assert_eq!(committed_ids("parquet", base), [0, 1, 2, 3, 10, 11]);
        let message = commit_pending(&spec, base, &transaction(&three_second)).map(|_| ()).unwrap_err().to_string();
        assert!(message.contains("part-0001-000000000003.parquet"), "not kept, so removed: {message}");

        // A fresh start removes every part of ours, and nothing else.
        recover(&spec, base, None, &[]).unwrap_or_else(|e| panic!("{e}"));
        let expected =
            [".staging", "notes.txt", "part-0000-000000000001.csv", "part-0000-1.parquet", "part-00000.parquet"];
        assert_eq!(names_in(&out), expected);
        assert_eq!(names_in(&staging), ["keep-me.txt"]);

        // Nothing to recover when the directory does not exist yet; console sinks have nothing to recover.
        recover(&file_spec("csv"), &base.join("elsewhere"), None, &[]).unwrap_or_else(|e| panic!("{e}"));
        let console = self::spec("id = 'show'\nkind = 'console'");
        recover(&console, base, Some(3), &[]).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn path_must_be_a_directory() {
        let dir = tempdir();
        fs::write(dir.path().join("out"), "").unwrap_or_else(|e| panic!("{e}"));
        let spec = file_spec("jsonl");
        let message = open(&spec, dir.path(), schema(), 0, 1).map(|_| ()).unwrap_err().to_string();
        assert!(message.contains("is a file") && message.contains("directory"), "{message}");
        let message = recover(&spec, dir.path(), None, &[]).unwrap_err().to_string();
        assert!(message.contains("is a file"), "{message}");
        assert!(open(&spec, dir.path(), schema(), 1, 1).is_err());
    }
}
