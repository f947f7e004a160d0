//! File sinks: Parquet, CSV and JSON Lines, written atomically.
//!
//! A subtask writes to a hidden temporary file next to its output
//! (`.{name}.inprogress-{random}`); `commit` flushes and fsyncs it, renames it
//! into place and fsyncs the directory. Dropping an uncommitted writer removes
//! the temporary file, so a failed job never leaves a file that looks complete.
//! With parallelism 1 `path` is the output file; with more, `path` is a
//! directory and subtask `i` writes `part-{i:05}.{ext}` in it.
//!
//! This is the sink of runs without checkpoints; checkpointed runs use the
//! two-phase commit of `transactional.rs`, which shares the format writers here.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufWriter, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::{ConnectorError, SinkKind, SinkReport, SinkSpec, SinkWriter, Transaction};
use flumen_types::durable::TempPath;

/// Encoded bytes a Parquet file sink buffers before it writes a row group out.
const PARQUET_ROW_GROUP_BYTES: usize = 64 << 20;

/// Opens subtask `subtask` of `parallelism` of a Parquet, CSV or JSON Lines sink.
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
        return Err(ConnectorError::Other {
            node: node.to_owned(),
            message: format!("cannot open subtask {subtask} of {parallelism}"),
        });
    }
    let Some(path) = spec.path.as_deref() else {
        return Err(config(node, "a file sink needs `path`"));
    };
    let path = base_dir.join(path);
    let Some(extension) = extension(spec.kind) else { return Err(config(node, "not a file sink")) };
    let final_path = if parallelism == 1 {
        if path.is_dir() {
            return Err(config(
                node,
                format!("`path` {} is a directory; with parallelism 1 it names the output file", path.display()),
            ));
        }
        path
    } else {
        if path.is_file() {
            return Err(config(
                node,
                format!(
                    "`path` {} is a file; with parallelism {parallelism} it names a directory for part-NNNNN.{extension} files",
                    path.display()
                ),
            ));
        }
        path.join(format!("part-{subtask:05}.{extension}"))
    };
    let Some(file_name) = final_path.file_name().map(|name| name.to_string_lossy().into_owned()) else {
        return Err(config(node, format!("`path` {} does not name a file", final_path.display())));
    };
    let dir = match final_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| file_error(node, &dir, format!("cannot create the output directory: {e}")))?;
    let (temp, file) = TempFile::create(node, &dir, &file_name)?;
    let writer = FormatWriter::new(spec, file, schema.clone()).map_err(|e| file_error(node, &final_path, e))?;
    Ok(Box::new(FileSink { node: node.to_owned(), schema, final_path, rows: 0, wrote_batch: false, writer, temp }))
}

/// The file extension of a file sink kind; `None` for other kinds.
pub(super) fn extension(kind: SinkKind) -> Option<&'static str> {
    match kind {
        SinkKind::Parquet => Some("parquet"),
        SinkKind::Csv => Some("csv"),
        SinkKind::Jsonl => Some("jsonl"),
        SinkKind::Console | SinkKind::Blackhole => None,
    }
}

fn config(node: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config { node: node.to_owned(), message: message.into() }
}

pub(super) fn file_error(node: &str, path: &Path, message: impl Into<String>) -> ConnectorError {
    ConnectorError::File { node: node.to_owned(), path: path.to_owned(), message: message.into() }
}

/// The Arrow schema a Parquet file stores: `arrow.fixed_shape_tensor` columns
/// get a nullable child, the storage type Arrow C++ (pyarrow) builds for the
/// extension and compares against when it reads Parquet: with a non-nullable
/// child it drops the extension and returns a bare fixed-size list. The
/// values written are the same (a tensor never holds a null).
fn parquet_schema(schema: &SchemaRef) -> SchemaRef {
    use arrow_schema::{DataType, Field, Schema};
    let is_tensor = |f: &Field| {
        f.metadata().get("ARROW:extension:name").is_some_and(|n| n == flumen_batch::media::FIXED_SHAPE_TENSOR)
    };
    if !schema.fields().iter().any(|f| is_tensor(f)) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::FixedSizeList(item, n) if is_tensor(f) && !item.is_nullable() => {
                f.as_ref().clone().with_data_type(DataType::FixedSizeList(
                    std::sync::Arc::new(item.as_ref().clone().with_nullable(true)),
                    *n,
                ))
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    std::sync::Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A file being written in the sink's format.
pub(super) enum FormatWriter {
    Parquet(Box<ArrowWriter<File>>),
    Csv(Box<arrow_csv::Writer<BufWriter<File>>>),
    Jsonl(arrow_json::LineDelimitedWriter<BufWriter<File>>),
}

impl FormatWriter {
    /// Starts a file of `spec`'s kind (JSON Lines for any kind but Parquet and CSV).
    pub(super) fn new(spec: &SinkSpec, file: File, schema: SchemaRef) -> Result<Self, String> {
        Ok(match spec.kind {
            SinkKind::Parquet => {
                let mut properties =
                    WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default()));
                // Whole objects (blob bytes, usually compressed media already):
                // no dictionary, no compression (each copies the value once
                // more) and no statistics over them.
                for field in schema.fields().iter().filter(|f| f.data_type() == &DataType::LargeBinary) {
                    let column = ColumnPath::from(field.name().as_str());
                    properties = properties
                        .set_column_dictionary_enabled(column.clone(), false)
                        .set_column_compression(column.clone(), Compression::UNCOMPRESSED)
                        .set_column_statistics_enabled(column, EnabledStatistics::None);
                }
                let properties = properties.build();
                let writer = ArrowWriter::try_new(file, parquet_schema(&schema), Some(properties))
                    .map_err(|e| format!("cannot write this schema as Parquet: {e}"))?;
                FormatWriter::Parquet(Box::new(writer))
            }
            SinkKind::Csv => {
                let header = spec.has_header.unwrap_or(true);
                FormatWriter::Csv(Box::new(
                    arrow_csv::WriterBuilder::new().with_header(header).build(BufWriter::new(file)),
                ))
            }
            _ => FormatWriter::Jsonl(arrow_json::LineDelimitedWriter::new(BufWriter::new(file))),
        })
    }

    pub(super) fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let written = match self {
            FormatWriter::Parquet(writer) => writer
                .write(batch)
                .and_then(|()| {
                    // A row group is buffered in memory until flushed: bound it by bytes, not only rows.
                    if writer.in_progress_size() >= PARQUET_ROW_GROUP_BYTES { writer.flush() } else { Ok(()) }
                })
                .map_err(|e| e.to_string()),
            FormatWriter::Csv(writer) => writer.write(batch).map_err(|e| e.to_string()),
            FormatWriter::Jsonl(writer) => writer.write(batch).map_err(|e| e.to_string()),
        };
        written.map_err(|e| format!("cannot write: {e}"))
    }

    /// Writes the file's footer and flushes it; returns the file, not yet synced.
    /// A CSV file to which no batch was written still gets its header line.
    pub(super) fn finish(self, schema: SchemaRef, wrote_batch: bool) -> Result<File, String> {
        match self {
            FormatWriter::Parquet(writer) => {
                writer.into_inner().map_err(|e| format!("cannot finish the Parquet file: {e}"))
            }
            FormatWriter::Csv(mut writer) => {
                if !wrote_batch {
                    writer.write(&RecordBatch::new_empty(schema)).map_err(|e| format!("cannot write: {e}"))?;
                }
                writer.into_inner().into_inner().map_err(|e| format!("cannot write: {}", e.error()))
            }
            FormatWriter::Jsonl(mut writer) => {
                writer.finish().map_err(|e| format!("cannot write: {e}"))?;
                writer.into_inner().into_inner().map_err(|e| format!("cannot write: {}", e.error()))
            }
        }
    }
}

/// An output file being written, removed when dropped unless kept.
pub(super) struct TempFile;

impl TempFile {
    /// Creates `<dir>/.<name>.inprogress-<16 hex digits>`.
    pub(super) fn create(node: &str, dir: &Path, name: &str) -> Result<(TempPath, File), ConnectorError> {
        let mut last_error = None;
        for _ in 0..16 {
            let path = dir.join(format!(".{name}.inprogress-{}", random_suffix()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((TempPath::new(path), file)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => return Err(file_error(node, &path, format!("cannot create a temporary output file: {e}"))),
            }
        }
        let reason = last_error.map(|e| e.to_string()).unwrap_or_default();
        Err(file_error(node, dir, format!("cannot create a temporary output file: {reason}")))
    }
}

/// 16 hex digits that differ between calls and processes.
fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(elapsed) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(elapsed.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

struct FileSink {
    node: String,
    schema: SchemaRef,
    final_path: PathBuf,
    rows: u64,
    wrote_batch: bool,
    // Declared before `temp`: the file is closed before the temporary is removed.
    writer: FormatWriter,
    temp: TempPath,
}

impl FileSink {
    fn error(&self, message: String) -> ConnectorError {
        file_error(&self.node, &self.final_path, message)
    }
}

impl SinkWriter for FileSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        // Rebuilding the batch checks it against the sink's schema (types and nullability).
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
            .map_err(|e| self.error(format!("a batch does not match the sink's input schema: {e}")))?;
        self.writer.write(&batch).map_err(|e| self.error(e))?;
        self.rows += batch.num_rows() as u64;
        self.wrote_batch = true;
        Ok(())
    }

    fn pre_commit(&mut self, _checkpoint: u64) -> Result<Option<Transaction>, ConnectorError> {
        Err(ConnectorError::Other {
            node: self.node.clone(),
            message: "this sink was opened for a run without checkpoints and cannot pre-commit; \
                      a checkpointed run opens it with `open_transactional_sink`"
                .to_owned(),
        })
    }

    fn commit(self: Box<Self>) -> Result<SinkReport, ConnectorError> {
        let FileSink { node, schema, final_path, rows, wrote_batch, writer, mut temp } = *self;
        let error = |message: String| file_error(&node, &final_path, message);
        // An empty result still gets its CSV header line.
        let file = writer.finish(schema, wrote_batch).map_err(error)?;
        flumen_types::durable::publish(&file, temp.path(), &final_path)
            .map_err(|e| error(format!("cannot move the finished file into place durably: {e}")))?;
        temp.keep();
        Ok(SinkReport { rows, files: vec![final_path] })
    }
}

/// Fsyncs a directory, so that the renames and removals in it are durable.
pub(super) use flumen_types::durable::sync_dir;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::open_sink;

    fn spec(text: &str) -> SinkSpec {
        toml::from_str(text).unwrap_or_else(|e| panic!("bad test spec: {e}"))
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

    fn open_ok(text: &str, base: &Path, subtask: u32, parallelism: u32) -> Box<dyn SinkWriter> {
        open_sink(&spec(text), base, schema(), subtask, parallelism).unwrap_or_else(|e| panic!("open failed: {e}"))
    }

    fn open_err(text: &str, base: &Path, parallelism: u32) -> String {
        match open_sink(&spec(text), base, schema(), 0, parallelism) {
            Ok(_) => panic!("open should fail"),
            Err(e) => e.to_string(),
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn read_text(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parquet_is_invisible_until_commit_and_round_trips() {
        let dir = tempdir();
        let mut sink = open_ok("id = 'out'\nkind = 'parquet'\npath = 'results/day.parquet'", dir.path(), 0, 1);
        sink.write(&batch(0..4)).unwrap_or_else(|e| panic!("{e}"));
        sink.write(&batch(4..6)).unwrap_or_else(|e| panic!("{e}"));
        let results = dir.path().join("results");
        let names = names_in(&results);
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with(".day.parquet.inprogress-"), "{names:?}");

        let report = sink.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.rows, 6);
        assert_eq!(report.files, [results.join("day.parquet")]);
        assert_eq!(names_in(&results), ["day.parquet"]);

        let file = File::open(results.join("day.parquet")).unwrap_or_else(|e| panic!("{e}"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{e}"))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{e}"));
        let read = arrow_select::concat::concat_batches(&schema(), &batches).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, batch(0..6));
    }

    #[test]
    fn dropping_without_commit_removes_the_temporary_file() {
        let dir = tempdir();
        for kind in ["parquet", "csv", "jsonl"] {
            let mut sink = open_ok(&format!("id = 'out'\nkind = '{kind}'\npath = 'o/out.{kind}'"), dir.path(), 0, 1);
            sink.write(&batch(0..3)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(names_in(&dir.path().join("o")).len(), 1);
            drop(sink);
            assert_eq!(names_in(&dir.path().join("o")), Vec::<String>::new(), "{kind}");
        }
    }

    #[test]
    fn commit_replaces_an_existing_output_only_at_commit() {
        let dir = tempdir();
        let target = dir.path().join("out.jsonl");
        fs::write(&target, "old\n").unwrap_or_else(|e| panic!("{e}"));
        let mut sink = open_ok("id = 'out'\nkind = 'jsonl'\npath = 'out.jsonl'", dir.path(), 0, 1);
        sink.write(&batch(1..3)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_text(&target), "old\n");
        sink.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_text(&target), "{\"id\":1,\"name\":\"n1\"}\n{\"id\":2,\"name\":\"n2\"}\n");
    }

    #[test]
    fn parallel_subtasks_write_part_files_in_a_directory() {
        let dir = tempdir();
        let text = "id = 'out'\nkind = 'csv'\npath = 'parts'";
        let mut sinks: Vec<Box<dyn SinkWriter>> = (0..3).map(|i| open_ok(text, dir.path(), i, 3)).collect();
        for (i, sink) in sinks.iter_mut().enumerate() {
            let start = i as i64 * 10;
            sink.write(&batch(start..start + 2)).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut files = Vec::new();
        for sink in sinks {
            let report = sink.commit().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(report.rows, 2);
            files.extend(report.files);
        }
        let parts = dir.path().join("parts");
        assert_eq!(names_in(&parts), ["part-00000.csv", "part-00001.csv", "part-00002.csv"]);
        assert_eq!(files, [parts.join("part-00000.csv"), parts.join("part-00001.csv"), parts.join("part-00002.csv")]);
        assert_eq!(read_text(&parts.join("part-00001.csv")), "id,name\n10,n10\n11,n11\n");
        assert_eq!(read_text(&parts.join("part-00000.csv")), "id,name\n0,\n1,n1\n");
    }

    #[test]
    fn csv_header_option_and_empty_output() {
        let dir = tempdir();
        let mut sink = open_ok("id = 'out'\nkind = 'csv'\npath = 'a.csv'\nhas_header = false", dir.path(), 0, 1);
        sink.write(&batch(1..3)).unwrap_or_else(|e| panic!("{e}"));
        sink.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_text(&dir.path().join("a.csv")), "1,n1\n2,n2\n");

        let sink = open_ok("id = 'out'\nkind = 'csv'\npath = 'b.csv'", dir.path(), 0, 1);
        let report = sink.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.rows, 0);
        assert_eq!(read_text(&dir.path().join("b.csv")), "id,name\n");
    }

    #[test]
    fn rejects_batches_of_another_schema() {
        let dir = tempdir();
        let mut sink = open_ok("id = 'out'\nkind = 'jsonl'\npath = 'a.jsonl'", dir.path(), 0, 1);
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let message = match sink.write(&other) {
            Ok(()) => panic!("write should fail"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.starts_with("out: ") && message.contains("a.jsonl") && message.contains("does not match"),
            "{message}"
        );
    }

    #[test]
    fn path_must_fit_the_parallelism() {
        let dir = tempdir();
        fs::create_dir(dir.path().join("existing")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("file.csv"), "").unwrap_or_else(|e| panic!("{e}"));
        let message = open_err("id = 'out'\nkind = 'csv'\npath = 'existing'", dir.path(), 1);
        assert!(message.contains("is a directory"), "{message}");
        let message = open_err("id = 'out'\nkind = 'csv'\npath = 'file.csv'", dir.path(), 2);
        assert!(message.contains("is a file") && message.contains("parallelism 2"), "{message}");
        let message = open_err("id = 'out'\nkind = 'csv'", dir.path(), 1);
        assert!(message.contains("`path`"), "{message}");
    }
}
