//! File sources: Parquet, CSV and JSON Lines files named by a path, a directory or a glob.
//!
//! Planning resolves the files (sorted), fixes the schema (declared, or inferred
//! from the first file) and checks the fields of the spec. Subtask `i` of `n`
//! reads files `i`, `i + n`, `i + 2n`, … in order; every batch it emits has
//! exactly the planned schema and at most `batch_rows` rows.
//!
//! A subtask's position is the index of the file it is reading in its own file
//! list, that file's path, and how many of its rows were returned; every
//! earlier file was returned whole. Seeking re-opens that file and skips the
//! rows: Parquet by skipping whole row groups and then an offset within one
//! (no rows before it are decoded), CSV by skipping records without parsing
//! their values, JSON Lines by decoding and dropping them. A seek refuses a
//! position whose path is not the subtask's file at that index (the files
//! changed since the checkpoint) or that lies past the end of the file.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::Deserialize;

use super::{ColumnSpec, ConnectorError, PlannedSource, SourceKind, SourcePosition, SourceReader, SourceSpec};

/// How many records of the first file schema inference reads (CSV and JSON Lines).
const INFER_MAX_RECORDS: usize = 1000;

/// Plans a Parquet, CSV or JSON Lines source.
pub(super) fn plan(
    spec: &SourceSpec,
    base_dir: &Path,
    job_batch_rows: usize,
) -> Result<Box<dyn PlannedSource>, ConnectorError> {
    let node = spec.id.as_str();
    let kind = spec.kind;
    for (field, set) in [
        ("rows", spec.rows.is_some()),
        ("seed", spec.seed.is_some()),
        ("columns", spec.columns.is_some()),
        ("rows_per_second", spec.rows_per_second.is_some()),
    ] {
        if set {
            return Err(config(node, format!("`{field}` does not apply to a {} source", kind_name(kind))));
        }
    }
    if kind != SourceKind::Csv {
        for (field, set) in [("has_header", spec.has_header.is_some()), ("delimiter", spec.delimiter.is_some())] {
            if set {
                return Err(config(
                    node,
                    format!("`{field}` applies only to csv sources, not to a {} source", kind_name(kind)),
                ));
            }
        }
    }
    let batch_rows = check_common_fields(spec, job_batch_rows)?;
    let csv = CsvOptions {
        has_header: spec.has_header.unwrap_or(true),
        delimiter: parse_delimiter(node, spec.delimiter.as_deref())?,
    };
    let Some(pattern) = spec.path.as_deref() else {
        return Err(config(node, format!("a {} source needs `path` (a file, a directory or a glob)", kind_name(kind))));
    };
    let files = resolve_files(node, kind, base_dir, pattern)?;
    let schema = match &spec.schema {
        Some(columns) => declared_schema(node, columns)?,
        None => infer_schema(node, kind, &csv, &files[0])?,
    };
    Ok(Box::new(FileSource {
        config: Arc::new(ReadConfig { node: node.to_owned(), kind, schema, batch_rows, csv, unread: Vec::new() }),
        files,
    }))
}

/// Checks the fields every kind of source shares and returns the rows per
/// batch: the source's `batch_rows`, else the job's; at least 1.
pub(super) fn check_common_fields(spec: &SourceSpec, job_batch_rows: usize) -> Result<usize, ConnectorError> {
    if spec.parallelism == Some(0) {
        return Err(config(&spec.id, "`parallelism` must be at least 1"));
    }
    match spec.batch_rows.unwrap_or(job_batch_rows) {
        0 => Err(config(&spec.id, "`batch_rows` must be at least 1")),
        n => Ok(n),
    }
}

/// Parses an Arrow type name of a declared schema. Names are case-insensitive,
/// except for the time zone of a timestamp, which is kept as written.
pub(super) fn parse_type_name(name: &str) -> Option<DataType> {
    let name = name.trim();
    let lower = name.to_ascii_lowercase();
    let data_type = match lower.as_str() {
        "null" => DataType::Null,
        "bool" | "boolean" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float16" => DataType::Float16,
        "float32" | "f32" | "float" => DataType::Float32,
        "float64" | "f64" | "double" => DataType::Float64,
        "utf8" | "string" => DataType::Utf8,
        "large_utf8" | "large_string" => DataType::LargeUtf8,
        "binary" => DataType::Binary,
        "large_binary" => DataType::LargeBinary,
        "date32" => DataType::Date32,
        "date64" => DataType::Date64,
        _ => {
            if let Some(args) = lower.strip_prefix("timestamp[").and_then(|rest| rest.strip_suffix(']')) {
                // `lower` and `name` have the same byte offsets (ASCII lowercasing).
                let offset = "timestamp[".len();
                let args_original = &name[offset..offset + args.len()];
                return parse_timestamp(args, args_original);
            }
            if let Some(args) = lower.strip_prefix("decimal128(").and_then(|rest| rest.strip_suffix(')')) {
                let (precision, scale) = args.split_once(',')?;
                let precision: u8 = precision.trim().parse().ok()?;
                let scale: i8 = scale.trim().parse().ok()?;
                let valid = (1..=arrow_schema::DECIMAL128_MAX_PRECISION).contains(&precision)
                    && i16::from(scale) <= i16::from(precision);
                return valid.then_some(DataType::Decimal128(precision, scale));
            }
            return None;
        }
    };
    Some(data_type)
}

/// `s`, `ms`, `us` or `ns`, optionally followed by `, <time zone>`.
fn parse_timestamp(args: &str, args_original: &str) -> Option<DataType> {
    let (unit, tz) = match args.split_once(',') {
        Some((unit, _)) => {
            let tz = args_original[unit.len() + 1..].trim();
            if tz.is_empty() || tz.contains([',', '[', ']']) {
                return None;
            }
            (unit, Some(Arc::from(tz)))
        }
        None => (args, None),
    };
    let unit = match unit.trim() {
        "s" => TimeUnit::Second,
        "ms" => TimeUnit::Millisecond,
        "us" => TimeUnit::Microsecond,
        "ns" => TimeUnit::Nanosecond,
        _ => return None,
    };
    Some(DataType::Timestamp(unit, tz))
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Parquet => "parquet",
        SourceKind::Csv => "csv",
        SourceKind::Jsonl => "jsonl",
        SourceKind::Generator => "generator",
        SourceKind::Blobs => "blobs",
    }
}

fn config(node: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config { node: node.to_owned(), message: message.into() }
}

fn file_error(node: &str, path: &Path, message: impl Into<String>) -> ConnectorError {
    ConnectorError::File { node: node.to_owned(), path: path.to_owned(), message: message.into() }
}

fn parse_delimiter(node: &str, delimiter: Option<&str>) -> Result<u8, ConnectorError> {
    let Some(delimiter) = delimiter else { return Ok(b',') };
    match delimiter.as_bytes() {
        [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(*byte),
        _ => Err(config(
            node,
            format!("`delimiter` must be one ASCII character other than a quote or a line break, got {delimiter:?}"),
        )),
    }
}

/// Every file a blobs source path names: the file itself, the files of a
/// directory (not hidden ones, not recursively) or the regular files a glob matches; sorted.
pub(super) fn resolve_all_files(node: &str, base_dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, ConnectorError> {
    resolve_files(node, SourceKind::Blobs, base_dir, pattern)
}

/// The files a source path names: the file itself, the matching files of a
/// directory (any file that is not hidden, for a blobs source), or the regular
/// files a glob matches; sorted.
fn resolve_files(node: &str, kind: SourceKind, base_dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, ConnectorError> {
    if pattern.trim().is_empty() {
        return Err(config(node, "`path` is empty"));
    }
    let resolved = base_dir.join(pattern);
    let mut files = if resolved.is_file() {
        vec![resolved.clone()]
    } else if resolved.is_dir() {
        let extensions = extensions(kind);
        let entries = std::fs::read_dir(&resolved)
            .map_err(|e| file_error(node, &resolved, format!("cannot list the directory: {e}")))?;
        let mut files = Vec::new();
        for entry in entries {
            let path =
                entry.map_err(|e| file_error(node, &resolved, format!("cannot list the directory: {e}")))?.path();
            let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
            let matches = if kind == SourceKind::Blobs {
                !hidden
            } else {
                path.extension()
                    .and_then(|ext| ext.to_str())
                    .is_some_and(|ext| extensions.iter().any(|wanted| ext.eq_ignore_ascii_case(wanted)))
            };
            if matches && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            let listed = extensions.iter().map(|ext| format!(".{ext}")).collect::<Vec<_>>().join(" or ");
            return Err(config(
                node,
                format!("`path` {pattern:?} is a directory with no {listed} files ({})", resolved.display()),
            ));
        }
        files
    } else if pattern.contains(['*', '?', '[']) {
        glob_files(node, base_dir, pattern)?
    } else {
        return Err(config(node, format!("`path` {pattern:?} does not exist ({})", resolved.display())));
    };
    if files.is_empty() {
        return Err(config(
            node,
            format!("no files match the glob `path` {pattern:?} (relative to {})", base_dir.display()),
        ));
    }
    files.sort();
    Ok(files)
}

fn extensions(kind: SourceKind) -> &'static [&'static str] {
    match kind {
        SourceKind::Parquet => &["parquet"],
        SourceKind::Csv => &["csv"],
        SourceKind::Jsonl => &["jsonl", "json"],
        SourceKind::Generator | SourceKind::Blobs => &[],
    }
}

fn glob_files(node: &str, base_dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, ConnectorError> {
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_owned()
    } else {
        let base = base_dir.to_str().ok_or_else(|| {
            config(node, format!("cannot use a glob `path` under the non-UTF-8 directory {}", base_dir.display()))
        })?;
        if base.is_empty() {
            pattern.to_owned()
        } else {
            Path::new(&glob::Pattern::escape(base)).join(pattern).to_string_lossy().into_owned()
        }
    };
    let paths = glob::glob(&full).map_err(|e| config(node, format!("`path` {pattern:?} is not a valid glob: {e}")))?;
    let mut files = Vec::new();
    for path in paths {
        let path = path.map_err(|e| {
            file_error(node, e.path(), format!("cannot read while matching {pattern:?}: {}", e.error()))
        })?;
        if path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

fn declared_schema(node: &str, columns: &[ColumnSpec]) -> Result<SchemaRef, ConnectorError> {
    if columns.is_empty() {
        return Err(config(node, "`schema` declares no columns"));
    }
    let mut seen = HashSet::new();
    let mut fields = Vec::with_capacity(columns.len());
    for column in columns {
        if column.name.is_empty() {
            return Err(config(node, "`schema` has a column with an empty name"));
        }
        if !seen.insert(column.name.as_str()) {
            return Err(config(node, format!("`schema` declares column `{}` twice", column.name)));
        }
        let data_type = parse_type_name(&column.data_type).ok_or_else(|| {
            config(
                node,
                format!(
                    "column `{}` has unknown type {:?} (expected e.g. int64, float64, utf8, bool, date32, timestamp[ms], timestamp[us, UTC], decimal128(10, 2))",
                    column.name, column.data_type
                ),
            )
        })?;
        fields.push(Field::new(&column.name, data_type, column.nullable));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Infers the schema from the first file (CSV and JSON Lines read at most
/// [`INFER_MAX_RECORDS`] records).
fn infer_schema(node: &str, kind: SourceKind, csv: &CsvOptions, path: &Path) -> Result<SchemaRef, ConnectorError> {
    let file = File::open(path).map_err(|e| file_error(node, path, format!("cannot open: {e}")))?;
    let schema = match kind {
        SourceKind::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| file_error(node, path, format!("cannot read the Parquet metadata: {e}")))?;
            // Keep the columns, drop file-level metadata (writer details).
            Schema::new(builder.schema().fields().clone())
        }
        SourceKind::Csv => {
            let format = arrow_csv::reader::Format::default().with_header(csv.has_header).with_delimiter(csv.delimiter);
            let (schema, _) = format
                .infer_schema(file, Some(INFER_MAX_RECORDS))
                .map_err(|e| file_error(node, path, format!("cannot infer the schema: {e}")))?;
            // A column empty in every inferred record would read as all-null and
            // silently drop later values; read it as text instead.
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Null => Field::new(f.name(), DataType::Utf8, true),
                    _ => f.as_ref().clone(),
                })
                .collect();
            Schema::new(fields)
        }
        SourceKind::Jsonl => {
            let (schema, _) =
                arrow_json::reader::infer_json_schema_from_seekable(BufReader::new(file), Some(INFER_MAX_RECORDS))
                    .map_err(|e| file_error(node, path, format!("cannot infer the schema: {e}")))?;
            schema
        }
        SourceKind::Generator | SourceKind::Blobs => {
            return Err(config(node, "a generator or blobs source has no schema to infer"));
        }
    };
    if schema.fields().is_empty() {
        return Err(file_error(
            node,
            path,
            "cannot infer a schema: the file has no columns; declare `schema` or check the file",
        ));
    }
    Ok(Arc::new(schema))
}

#[derive(Clone, Copy, Debug)]
struct CsvOptions {
    has_header: bool,
    delimiter: u8,
}

/// What every subtask of a file source needs to read a file.
#[derive(Debug, Clone)]
struct ReadConfig {
    node: String,
    kind: SourceKind,
    schema: SchemaRef,
    batch_rows: usize,
    csv: CsvOptions,
    /// Per top-level field: no consumer reads it (see `PlannedSource::prune`).
    /// Parquet files then skip decoding it where a placeholder can stand in.
    unread: Vec<bool>,
}

#[derive(Debug)]
struct FileSource {
    config: Arc<ReadConfig>,
    files: Vec<PathBuf>,
}

impl PlannedSource for FileSource {
    fn schema(&self) -> SchemaRef {
        self.config.schema.clone()
    }

    fn prune(&mut self, needed: &[bool]) {
        let unread: Vec<bool> =
            (0..self.config.schema.fields().len()).map(|i| !needed.get(i).copied().unwrap_or(true)).collect();
        let mut config = (*self.config).clone();
        config.unread = unread;
        self.config = Arc::new(config);
    }

    fn open(&self, subtask: u32, parallelism: u32) -> Result<Box<dyn SourceReader>, ConnectorError> {
        if subtask >= parallelism {
            return Err(ConnectorError::Other {
                node: self.config.node.clone(),
                message: format!("cannot open subtask {subtask} of {parallelism}"),
            });
        }
        let (subtask, parallelism) = (subtask as usize, parallelism as usize);
        let files = self
            .files
            .iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism == subtask)
            .map(|(_, path)| path.clone())
            .collect();
        Ok(Box::new(FileSourceReader {
            config: self.config.clone(),
            files,
            file: 0,
            rows: 0,
            current: None,
            skipped: None,
        }))
    }
}

/// Reads one file's batches, already in the planned schema.
trait FileBatches: Send {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError>;
}

struct FileSourceReader {
    config: Arc<ReadConfig>,
    /// This subtask's files, in reading order.
    files: Vec<PathBuf>,
    /// Index in `files` of the file being read (`current`), or of the next to open.
    file: usize,
    /// Rows of `files[file]` returned so far (counting rows skipped by a seek).
    rows: u64,
    current: Option<Box<dyn FileBatches>>,
    /// The rest of a batch read while seeking, returned first.
    skipped: Option<RecordBatch>,
}

/// A file source subtask's position: the first `rows` rows of file `file` (an
/// index into the subtask's files, whose path is `path`) were returned, and all
/// files before it. `file` equal to the number of files, with `path` null, is the end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePosition {
    file: usize,
    /// Required, though it may be null (a plain `Option` field could be left out).
    #[serde(deserialize_with = "Option::deserialize")]
    path: Option<String>,
    rows: u64,
}

impl SourceReader for FileSourceReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        if let Some(batch) = self.skipped.take() {
            self.rows += batch.num_rows() as u64;
            return Ok(Some(batch));
        }
        loop {
            if let Some(current) = &mut self.current {
                match current.next_batch()? {
                    Some(batch) if batch.num_rows() > 0 => {
                        self.rows += batch.num_rows() as u64;
                        return Ok(Some(batch));
                    }
                    Some(_) => continue,
                    None => {
                        self.current = None;
                        self.file += 1;
                        self.rows = 0;
                    }
                }
            }
            let Some(path) = self.files.get(self.file) else { return Ok(None) };
            self.current = Some(open_file(&self.config, path.clone())?);
        }
    }

    fn position(&self) -> SourcePosition {
        let mut position = serde_json::Map::new();
        position.insert("file".to_owned(), (self.file as u64).into());
        let path = self.files.get(self.file).map(|path| path.to_string_lossy().into_owned());
        position.insert("path".to_owned(), path.into());
        position.insert("rows".to_owned(), self.rows.into());
        SourcePosition::of(position.into())
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        let node = self.config.node.as_str();
        let refuse = |why: String| ConnectorError::Other {
            node: node.to_owned(),
            message: format!("cannot resume from position {position}: {why}"),
        };
        let parsed = FilePosition::deserialize(position.value()).map_err(|e| refuse(format!("malformed: {e}")))?;
        if parsed.file > self.files.len() {
            return Err(refuse(format!(
                "this subtask reads only {} files; the source's files or parallelism changed since the checkpoint",
                self.files.len()
            )));
        }
        let now = self.files.get(parsed.file).map(|path| path.to_string_lossy().into_owned());
        if parsed.path != now {
            let name = |path: &Option<String>| path.as_deref().map_or("none".to_owned(), |path| format!("{path:?}"));
            return Err(refuse(format!(
                "file {} of this subtask was {} at the checkpoint but is {} now; the source's files or parallelism changed since the checkpoint",
                parsed.file,
                name(&parsed.path),
                name(&now)
            )));
        }
        self.current = None;
        self.skipped = None;
        self.file = parsed.file;
        self.rows = 0;
        match self.files.get(parsed.file) {
            Some(path) => {
                let (current, skipped) = open_file_at(&self.config, path.clone(), parsed.rows)?;
                self.current = Some(current);
                self.skipped = skipped;
                self.rows = parsed.rows;
            }
            None if parsed.rows != 0 => return Err(refuse("it counts rows past the last file".to_owned())),
            None => {}
        }
        Ok(())
    }
}

/// Opens `path` and skips its first `skip` rows; returns the file and, when
/// skipping ended inside a batch, the rest of that batch. A file with fewer
/// than `skip` rows is an error.
fn open_file_at(
    cfg: &ReadConfig,
    path: PathBuf,
    skip: u64,
) -> Result<(Box<dyn FileBatches>, Option<RecordBatch>), ConnectorError> {
    if skip == 0 {
        return Ok((open_file(cfg, path)?, None));
    }
    let node = cfg.node.as_str();
    match cfg.kind {
        SourceKind::Parquet => {
            let file = File::open(&path).map_err(|e| file_error(node, &path, format!("cannot open: {e}")))?;
            Ok((Box::new(ParquetFile::open(cfg, path, file, skip)?), None))
        }
        SourceKind::Csv => {
            // The CSV reader skips records without parsing their values, but
            // cannot say whether it ran out of them: skip one fewer and drop it.
            let skip_records = usize::try_from(skip - 1).map_err(|_| past_end(node, &path, skip))?;
            let mut csv = CsvFile::open(cfg, path, Some(skip_records))?;
            let rest = skip_rows(&mut csv, 1).map_err(|e| e.unwrap_or_else(|| past_end(node, &csv.path, skip)))?;
            Ok((Box::new(csv), rest))
        }
        SourceKind::Jsonl => {
            let file = File::open(&path).map_err(|e| file_error(node, &path, format!("cannot open: {e}")))?;
            let mut json = JsonFile::open(cfg, path, file)?;
            let rest = skip_rows(&mut json, skip).map_err(|e| e.unwrap_or_else(|| past_end(node, &json.path, skip)))?;
            Ok((Box::new(json), rest))
        }
        SourceKind::Generator | SourceKind::Blobs => Err(config(node, "a generator or blobs source has no files")),
    }
}

/// Reads and drops `skip` rows; returns the rest of the batch that held the
/// last of them. `Err(None)`: the file ended first.
fn skip_rows(batches: &mut dyn FileBatches, skip: u64) -> Result<Option<RecordBatch>, Option<ConnectorError>> {
    let mut left = skip;
    while left > 0 {
        let Some(batch) = batches.next_batch().map_err(Some)? else { return Err(None) };
        let rows = batch.num_rows() as u64;
        if rows > left {
            let offset = left as usize;
            return Ok(Some(batch.slice(offset, batch.num_rows() - offset)));
        }
        left -= rows;
    }
    Ok(None)
}

fn past_end(node: &str, path: &Path, skip: u64) -> ConnectorError {
    file_error(
        node,
        path,
        format!("cannot resume after row {skip}: the file has fewer rows; it changed since the checkpoint"),
    )
}

fn open_file(cfg: &ReadConfig, path: PathBuf) -> Result<Box<dyn FileBatches>, ConnectorError> {
    let node = cfg.node.as_str();
    let file = File::open(&path).map_err(|e| file_error(node, &path, format!("cannot open: {e}")))?;
    Ok(match cfg.kind {
        SourceKind::Parquet => Box::new(ParquetFile::open(cfg, path, file, 0)?),
        SourceKind::Csv => {
            drop(file);
            Box::new(CsvFile::open(cfg, path, None)?)
        }
        SourceKind::Jsonl => Box::new(JsonFile::open(cfg, path, file)?),
        SourceKind::Generator | SourceKind::Blobs => {
            return Err(config(node, "a generator or blobs source has no files"));
        }
    })
}

struct ParquetFile {
    node: String,
    path: PathBuf,
    schema: SchemaRef,
    reader: ParquetRecordBatchReader,
    /// Per planned field: not decoded, a placeholder of its type stands in.
    placeholder: Vec<bool>,
}

impl ParquetFile {
    /// Projects the file onto the planned columns (by name), checking their
    /// types, and starts after its first `skip` rows.
    fn open(config: &ReadConfig, path: PathBuf, file: File, skip: u64) -> Result<Self, ConnectorError> {
        let node = config.node.as_str();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| file_error(node, &path, format!("cannot read the Parquet metadata: {e}")))?;
        let file_schema = builder.schema().clone();
        let mut roots = Vec::with_capacity(config.schema.fields().len());
        let mut placeholder = vec![false; config.schema.fields().len()];
        for (i, field) in config.schema.fields().iter().enumerate() {
            let Some((index, found)) = file_schema.column_with_name(field.name()) else {
                let names: Vec<&str> = file_schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(file_error(
                    node,
                    &path,
                    format!(
                        "column `{}` of the source schema is missing from the file (it has: {})",
                        field.name(),
                        names.join(", ")
                    ),
                ));
            };
            if found.data_type() != field.data_type() {
                return Err(file_error(
                    node,
                    &path,
                    format!(
                        "column `{}` is {} in the file, but the source schema says {}",
                        field.name(),
                        found.data_type(),
                        field.data_type()
                    ),
                ));
            }
            // Skip a column no consumer reads, unless it is the last one
            // left (the reader needs one column to count rows by).
            let last = i + 1 == config.schema.fields().len() && roots.is_empty();
            if config.unread.get(i).copied().unwrap_or(false)
                && !last
                && placeholder_array(field.data_type(), 0).is_some()
            {
                placeholder[i] = true;
            } else {
                roots.push(index);
            }
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let builder = if skip == 0 {
            builder
        } else {
            // Skip whole row groups without reading them, then an offset into the next.
            let mut left = skip;
            let mut groups = Vec::new();
            for (index, group) in builder.metadata().row_groups().iter().enumerate() {
                let rows = u64::try_from(group.num_rows()).unwrap_or(0);
                if groups.is_empty() && left >= rows {
                    left -= rows;
                } else {
                    groups.push(index);
                }
            }
            if groups.is_empty() && left > 0 {
                return Err(past_end(node, &path, skip));
            }
            let offset = usize::try_from(left).map_err(|_| past_end(node, &path, skip))?;
            builder.with_row_groups(groups).with_offset(offset)
        };
        let reader = builder
            .with_projection(mask)
            .with_batch_size(config.batch_rows)
            .build()
            .map_err(|e| file_error(node, &path, format!("cannot read Parquet: {e}")))?;
        Ok(Self { node: config.node.clone(), path, schema: config.schema.clone(), reader, placeholder })
    }
}

impl FileBatches for ParquetFile {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        let Some(batch) = self.reader.next() else { return Ok(None) };
        let batch = batch.map_err(|e| file_error(&self.node, &self.path, format!("cannot read Parquet: {e}")))?;
        // The projection keeps file order; put the columns in planned order.
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(&self.placeholder)
            .map(|(field, skipped)| {
                let found = if *skipped {
                    placeholder_array(field.data_type(), batch.num_rows())
                } else {
                    batch.column_by_name(field.name()).cloned()
                };
                found.ok_or_else(|| {
                    file_error(&self.node, &self.path, format!("column `{}` is missing from the file", field.name()))
                })
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map(Some)
            .map_err(|e| file_error(&self.node, &self.path, format!("data does not match the source schema: {e}")))
    }
}

/// `rows` zeroes (or empty strings) of `data_type` without a validity
/// bitmap, standing in for a column no consumer reads: zeroed pages cost
/// nothing until touched. `None` for types without such a cheap placeholder
/// (those are decoded).
fn placeholder_array(data_type: &DataType, rows: usize) -> Option<ArrayRef> {
    use arrow::buffer::{Buffer, MutableBuffer};
    let zeroed = |bytes: usize| Buffer::from(MutableBuffer::from_len_zeroed(bytes));
    let buffers = match data_type {
        DataType::Boolean => vec![zeroed(rows.div_ceil(8))],
        DataType::Utf8 | DataType::Binary => vec![zeroed((rows + 1) * 4), Buffer::from_vec(Vec::<u8>::new())],
        DataType::LargeUtf8 | DataType::LargeBinary => vec![zeroed((rows + 1) * 8), Buffer::from_vec(Vec::<u8>::new())],
        t if t.is_primitive() => vec![zeroed(rows * t.primitive_width()?)],
        _ => return None,
    };
    let data = arrow::array::ArrayData::builder(data_type.clone()).len(rows).buffers(buffers).build().ok()?;
    Some(arrow_array::make_array(data))
}

struct CsvFile {
    node: String,
    path: PathBuf,
    reader: arrow_csv::Reader<File>,
}

impl CsvFile {
    /// Opens a CSV file; with `skip`, starts after that many records (not
    /// counting the header), which are split into fields but not parsed.
    fn open(cfg: &ReadConfig, path: PathBuf, skip: Option<usize>) -> Result<Self, ConnectorError> {
        let node = cfg.node.as_str();
        let file = File::open(&path).map_err(|e| file_error(node, &path, format!("cannot open: {e}")))?;
        let mut builder = arrow_csv::ReaderBuilder::new(cfg.schema.clone())
            .with_header(cfg.csv.has_header)
            .with_header_validation(true)
            .with_delimiter(cfg.csv.delimiter)
            .with_batch_size(cfg.batch_rows);
        if let Some(skip) = skip {
            // The reader adds the header line to both bounds; leave room for it.
            builder = builder.with_bounds(skip, usize::MAX - 1);
        }
        let reader = builder.build(file).map_err(|e| file_error(node, &path, format!("cannot read CSV: {e}")))?;
        Ok(Self { node: cfg.node.clone(), path, reader })
    }
}

impl FileBatches for CsvFile {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        self.reader
            .next()
            .transpose()
            .map_err(|e| file_error(&self.node, &self.path, format!("cannot parse CSV: {}", csv_error_message(&e))))
    }
}

/// Arrow numbers the lines of CSV value errors from 0 (the header being line 0)
/// but those of malformed records from 1; report both from 1, as editors do.
fn csv_error_message(error: &ArrowError) -> String {
    let message = error.to_string();
    const AT_LINE: &str = " at line ";
    if let ArrowError::ParseError(_) = error
        && let Some(at) = message.find(AT_LINE)
    {
        let start = at + AT_LINE.len();
        let digits = message[start..].bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(line) = message[start..start + digits].parse::<usize>() {
            return format!("{}{}{}", &message[..start], line + 1, &message[start + digits..]);
        }
    }
    message
}

/// JSON Lines, fed to the decoder one line at a time so that errors can name
/// the line (syntax errors) or the lines of the batch (type errors).
struct JsonFile {
    node: String,
    path: PathBuf,
    reader: BufReader<File>,
    decoder: arrow_json::reader::Decoder,
    line: Vec<u8>,
    /// Bytes of `line` already given to the decoder.
    consumed: usize,
    line_number: usize,
    /// First and last lines of the rows the decoder holds.
    batch_first_line: usize,
    batch_last_line: usize,
    done: bool,
}

impl JsonFile {
    fn open(config: &ReadConfig, path: PathBuf, file: File) -> Result<Self, ConnectorError> {
        let decoder = arrow_json::ReaderBuilder::new(config.schema.clone())
            .with_batch_size(config.batch_rows)
            .build_decoder()
            .map_err(|e| file_error(&config.node, &path, format!("cannot read JSON Lines: {e}")))?;
        Ok(Self {
            node: config.node.clone(),
            path,
            reader: BufReader::new(file),
            decoder,
            line: Vec::new(),
            consumed: 0,
            line_number: 0,
            batch_first_line: 1,
            batch_last_line: 1,
            done: false,
        })
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        let (first, last) = (self.batch_first_line, self.batch_last_line);
        let batch = self.decoder.flush().map_err(|e| {
            let lines = if first >= last { format!("line {last}") } else { format!("lines {first}-{last}") };
            self.error(format!("cannot parse JSON in {lines}: {e}"))
        })?;
        Ok(batch)
    }

    fn error(&self, message: String) -> ConnectorError {
        file_error(&self.node, &self.path, message)
    }

    fn parse_error(&self, e: &ArrowError) -> ConnectorError {
        self.error(format!("cannot parse JSON at line {}: {e}", self.line_number))
    }
}

impl FileBatches for JsonFile {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.consumed == self.line.len() {
                self.line.clear();
                self.consumed = 0;
                let read = self
                    .reader
                    .read_until(b'\n', &mut self.line)
                    .map_err(|e| self.error(format!("cannot read: {e}")))?;
                if read == 0 {
                    self.done = true;
                    return self.flush();
                }
                self.line_number += 1;
            }
            let was_empty = self.decoder.is_empty();
            let decoded = self.decoder.decode(&self.line[self.consumed..]).map_err(|e| self.parse_error(&e))?;
            self.consumed += decoded;
            if decoded > 0 && !self.decoder.is_empty() {
                if was_empty {
                    self.batch_first_line = self.line_number;
                }
                self.batch_last_line = self.line_number;
            }
            if self.consumed < self.line.len() {
                // The decoder holds a full batch; the rest of the line goes into the next one.
                if self.decoder.is_empty() {
                    return Err(self.error(format!(
                        "cannot parse JSON at line {}: the decoder made no progress",
                        self.line_number
                    )));
                }
                return self.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};
    use arrow_array::{Int32Array, Int64Array, StringArray};
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::plan_source;

    fn spec(toml_text: &str) -> SourceSpec {
        match toml::from_str(toml_text) {
            Ok(spec) => spec,
            Err(e) => panic!("bad test spec: {e}"),
        }
    }

    fn plan_ok(toml_text: &str, base: &Path) -> Box<dyn PlannedSource> {
        match plan_source(&spec(toml_text), base, 1024, &crate::test_blobs()) {
            Ok(source) => source,
            Err(e) => panic!("plan failed: {e}"),
        }
    }

    fn plan_err(toml_text: &str, base: &Path) -> String {
        match plan_source(&spec(toml_text), base, 1024, &crate::test_blobs()) {
            Ok(source) => panic!("plan should fail, got {source:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn read_all(
        source: &dyn PlannedSource,
        subtask: u32,
        parallelism: u32,
    ) -> Result<Vec<RecordBatch>, ConnectorError> {
        let mut reader = source.open(subtask, parallelism)?;
        let mut batches = Vec::new();
        while let Some(batch) = reader.next_batch()? {
            assert_eq!(batch.schema(), source.schema(), "every batch has the planned schema");
            batches.push(batch);
        }
        Ok(batches)
    }

    fn read_ok(source: &dyn PlannedSource, subtask: u32, parallelism: u32) -> Vec<RecordBatch> {
        read_all(source, subtask, parallelism).unwrap_or_else(|e| panic!("read failed: {e}"))
    }

    fn read_err(source: &dyn PlannedSource) -> String {
        match read_all(source, 0, 1) {
            Ok(batches) => panic!("read should fail, got {} batches", batches.len()),
            Err(e) => e.to_string(),
        }
    }

    fn i64_column(batches: &[RecordBatch], index: usize) -> Vec<i64> {
        batches.iter().flat_map(|b| b.column(index).as_primitive::<Int64Type>().values().to_vec()).collect()
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    }

    fn write_parquet(path: &Path, batch: &RecordBatch) {
        let file = File::create(path).unwrap_or_else(|e| panic!("{e}"));
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap_or_else(|e| panic!("{e}"));
        writer.write(batch).unwrap_or_else(|e| panic!("{e}"));
        writer.close().unwrap_or_else(|e| panic!("{e}"));
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_type_names() {
        let cases = [
            ("int64", DataType::Int64),
            ("Boolean", DataType::Boolean),
            ("bool", DataType::Boolean),
            ("uint16", DataType::UInt16),
            ("double", DataType::Float64),
            ("f32", DataType::Float32),
            ("float16", DataType::Float16),
            ("string", DataType::Utf8),
            ("large_utf8", DataType::LargeUtf8),
            ("large_binary", DataType::LargeBinary),
            ("date32", DataType::Date32),
            ("timestamp[ms]", DataType::Timestamp(TimeUnit::Millisecond, None)),
            ("timestamp[ns]", DataType::Timestamp(TimeUnit::Nanosecond, None)),
            ("timestamp[us, UTC]", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
            ("timestamp[s,Europe/Paris]", DataType::Timestamp(TimeUnit::Second, Some("Europe/Paris".into()))),
            ("decimal128(10, 2)", DataType::Decimal128(10, 2)),
            ("decimal128(38,-2)", DataType::Decimal128(38, -2)),
        ];
        for (name, expected) in cases {
            assert_eq!(parse_type_name(name), Some(expected), "{name}");
        }
        for bad in [
            "int",
            "timestamp",
            "timestamp[m]",
            "timestamp[ms, ]",
            "decimal128(39, 2)",
            "decimal128(0, 0)",
            "decimal128(5, 6)",
            "list<int64>",
            "",
        ] {
            assert_eq!(parse_type_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn csv_round_trip_with_inferred_schema_and_small_batches() {
        let dir = tempdir();
        let mut text = String::from("id,score,name,empty\n");
        for i in 0..10 {
            text.push_str(&format!("{i},{}.5,n{i},\n", i * 2));
        }
        write(&dir.path().join("in.csv"), &text);
        let source = plan_ok("id = 'src'\nkind = 'csv'\npath = 'in.csv'\nbatch_rows = 3", dir.path());
        let schema = source.schema();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(types, [&DataType::Int64, &DataType::Float64, &DataType::Utf8, &DataType::Utf8]);
        let batches = read_ok(source.as_ref(), 0, 1);
        assert_eq!(batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(i64_column(&batches, 0), (0..10).collect::<Vec<_>>());
        assert_eq!(batches[3].column(1).as_primitive::<Float64Type>().value(0), 18.5);
        assert_eq!(batches[3].column(2).as_string::<i32>().value(0), "n9");
    }

    #[test]
    fn csv_without_header_and_custom_delimiter() {
        let dir = tempdir();
        write(&dir.path().join("in.csv"), "1;a\n2;b\n");
        let source =
            plan_ok("id = 'src'\nkind = 'csv'\npath = 'in.csv'\nhas_header = false\ndelimiter = ';'", dir.path());
        let names: Vec<String> = source.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["column_1", "column_2"]);
        let batches = read_ok(source.as_ref(), 0, 1);
        assert_eq!(i64_column(&batches, 0), [1, 2]);
        assert_eq!(batches[0].column(1).as_string::<i32>().value(1), "b");
    }

    #[test]
    fn csv_parse_error_names_node_file_and_line() {
        let dir = tempdir();
        write(&dir.path().join("bad.csv"), "a,b\n1,x\n2,y\nthree,z\n");
        let source = plan_ok(
            "id = 'orders'\nkind = 'csv'\npath = 'bad.csv'\nschema = [{ name = 'a', type = 'int64' }, { name = 'b', type = 'utf8' }]",
            dir.path(),
        );
        let message = read_err(source.as_ref());
        assert!(message.starts_with("orders: "), "{message}");
        assert!(message.contains("bad.csv"), "{message}");
        assert!(message.contains("'three'") && message.contains("at line 4."), "{message}");

        write(&dir.path().join("short.csv"), "a,b\n1,x\n2\n");
        let source = plan_ok(
            "id = 'orders'\nkind = 'csv'\npath = 'short.csv'\nschema = [{ name = 'a', type = 'int64' }, { name = 'b', type = 'utf8' }]",
            dir.path(),
        );
        let message = read_err(source.as_ref());
        assert!(message.contains("short.csv") && message.contains("line 3"), "{message}");
    }

    #[test]
    fn csv_header_must_match_declared_schema() {
        let dir = tempdir();
        write(&dir.path().join("in.csv"), "a,c\n1,2\n");
        let source = plan_ok(
            "id = 'src'\nkind = 'csv'\npath = 'in.csv'\nschema = [{ name = 'a', type = 'int64' }, { name = 'b', type = 'int64' }]",
            dir.path(),
        );
        let message = read_err(source.as_ref());
        assert!(message.contains("in.csv") && message.contains("\"b\""), "{message}");
    }

    #[test]
    fn files_are_dealt_round_robin_to_subtasks() {
        let dir = tempdir();
        for i in 0..5 {
            write(&dir.path().join(format!("data/part-{i}.csv")), &format!("id\n{i}\n"));
        }
        let source = plan_ok("id = 'src'\nkind = 'csv'\npath = 'data'", dir.path());
        assert_eq!(i64_column(&read_ok(source.as_ref(), 0, 2), 0), [0, 2, 4]);
        assert_eq!(i64_column(&read_ok(source.as_ref(), 1, 2), 0), [1, 3]);
        // More subtasks than files: the extra ones read nothing.
        assert_eq!(i64_column(&read_ok(source.as_ref(), 6, 7), 0), Vec::<i64>::new());
        assert!(source.open(2, 2).is_err());
    }

    #[test]
    fn directory_lists_only_files_with_the_kind_extension() {
        let dir = tempdir();
        write(&dir.path().join("data/b.csv"), "id\n2\n");
        write(&dir.path().join("data/a.CSV"), "id\n1\n");
        write(&dir.path().join("data/notes.txt"), "not csv\n");
        write(&dir.path().join("data/nested.csv/c.csv"), "id\n3\n");
        let source = plan_ok("id = 'src'\nkind = 'csv'\npath = 'data'", dir.path());
        assert_eq!(i64_column(&read_ok(source.as_ref(), 0, 1), 0), [1, 2]);

        write(&dir.path().join("empty/readme.md"), "x");
        let message = plan_err("id = 'src'\nkind = 'csv'\npath = 'empty'", dir.path());
        assert!(message.contains("src") && message.contains("\"empty\"") && message.contains(".csv"), "{message}");
    }

    #[test]
    fn glob_matches_sorted_files_and_no_match_is_an_error() {
        let dir = tempdir();
        write(&dir.path().join("logs/2024-02.jsonl"), "{\"id\": 2}\n");
        write(&dir.path().join("logs/2024-01.jsonl"), "{\"id\": 1}\n");
        write(&dir.path().join("logs/2023-12.jsonl"), "{\"id\": 0}\n");
        let source = plan_ok("id = 'src'\nkind = 'jsonl'\npath = 'logs/2024-*.jsonl'", dir.path());
        assert_eq!(i64_column(&read_ok(source.as_ref(), 0, 1), 0), [1, 2]);

        let message = plan_err("id = 'events'\nkind = 'jsonl'\npath = 'logs/2025-*.jsonl'", dir.path());
        assert!(message.starts_with("events: ") && message.contains("logs/2025-*.jsonl"), "{message}");
        let message = plan_err("id = 'events'\nkind = 'jsonl'\npath = 'missing.jsonl'", dir.path());
        assert!(message.contains("missing.jsonl") && message.contains("does not exist"), "{message}");
    }

    #[test]
    fn jsonl_inference_and_declared_projection() {
        let dir = tempdir();
        write(
            &dir.path().join("in.jsonl"),
            "{\"a\": 1, \"b\": \"x\"}\n\n{\"a\": 2, \"b\": \"y\", \"c\": true}\n{\"a\": 3}\n",
        );
        let source = plan_ok("id = 'src'\nkind = 'jsonl'\npath = 'in.jsonl'\nbatch_rows = 2", dir.path());
        let names: Vec<String> = source.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let batches = read_ok(source.as_ref(), 0, 1);
        assert_eq!(batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(i64_column(&batches, 0), [1, 2, 3]);
        assert!(batches[1].column(1).is_null(0));

        let source = plan_ok(
            "id = 'src'\nkind = 'jsonl'\npath = 'in.jsonl'\nschema = [{ name = 'b', type = 'string' }]",
            dir.path(),
        );
        let batches = read_ok(source.as_ref(), 0, 1);
        let values: Vec<Option<&str>> = batches.iter().flat_map(|b| b.column(0).as_string::<i32>().iter()).collect();
        assert_eq!(values, [Some("x"), Some("y"), None]);
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let dir = tempdir();
        write(&dir.path().join("syntax.jsonl"), "{\"a\": 1}\n{\"a\": 2}\n{\"a\" 3}\n");
        let source = plan_ok(
            "id = 'src'\nkind = 'jsonl'\npath = 'syntax.jsonl'\nschema = [{ name = 'a', type = 'int64' }]",
            dir.path(),
        );
        let message = read_err(source.as_ref());
        assert!(message.contains("syntax.jsonl") && message.contains("line 3"), "{message}");

        write(&dir.path().join("types.jsonl"), "{\"a\": 1}\n{\"a\": \"two\"}\n");
        let source = plan_ok(
            "id = 'src'\nkind = 'jsonl'\npath = 'types.jsonl'\nbatch_rows = 1\nschema = [{ name = 'a', type = 'int64' }]",
            dir.path(),
        );
        let message = read_err(source.as_ref());
        assert!(message.contains("types.jsonl") && message.contains("line 2"), "{message}");
    }

    /// `t.parquet` in `dir`: (a int32, b utf8 with a null, c int64), 3 rows.
    fn write_abc_parquet(dir: &Path) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("x"), None, Some("z")])),
                Arc::new(Int64Array::from(vec![10, 20, 30])),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        write_parquet(&dir.join("t.parquet"), &batch);
    }

    #[test]
    fn parquet_round_trip_with_projection_and_reordering() {
        let dir = tempdir();
        write_abc_parquet(dir.path());

        let source = plan_ok("id = 'src'\nkind = 'parquet'\npath = 't.parquet'\nbatch_rows = 2", dir.path());
        assert_eq!(source.schema().fields().len(), 3);
        let batches = read_ok(source.as_ref(), 0, 1);
        assert_eq!(batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), [2, 1]);

        let source = plan_ok(
            "id = 'src'\nkind = 'parquet'\npath = 't.parquet'\nschema = [{ name = 'c', type = 'int64' }, { name = 'a', type = 'int32' }]",
            dir.path(),
        );
        let batches = read_ok(source.as_ref(), 0, 1);
        assert_eq!(i64_column(&batches, 0), [10, 20, 30]);
        assert_eq!(batches[0].column(1).as_primitive::<Int32Type>().values().to_vec(), [1, 2, 3]);
    }

    #[test]
    fn parquet_skips_decoding_columns_no_consumer_reads() {
        let dir = tempdir();
        write_abc_parquet(dir.path());
        let mut source = plan_ok("id = 'src'\nkind = 'parquet'\npath = 't.parquet'", dir.path());
        source.prune(&[false, false, true]);
        let batches = read_ok(source.as_ref(), 0, 1);
        // `c` is decoded; `a` and `b` are placeholders of their types (not
        // the file's values), and the schema is unchanged.
        assert_eq!(i64_column(&batches, 2), [10, 20, 30]);
        assert_eq!(batches[0].schema(), source.schema());
        assert_eq!(batches[0].column(0).as_primitive::<Int32Type>().values().to_vec(), [0, 0, 0]);
        assert_eq!(batches[0].column(1).as_string::<i32>().iter().collect::<Vec<_>>(), [Some(""); 3]);
        // Nothing needed: one column is still decoded, to count rows by.
        source.prune(&[false, false, false]);
        let batches = read_ok(source.as_ref(), 0, 1);
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        assert_eq!(i64_column(&batches, 2), [10, 20, 30]);
    }

    #[test]
    fn parquet_declared_schema_mismatch_names_node_file_and_column() {
        let dir = tempdir();
        let schema =
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true), Field::new("b", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int32Array::from(vec![Some(1), None])), Arc::new(StringArray::from(vec!["x", "y"]))],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        write_parquet(&dir.path().join("t.parquet"), &batch);

        let source = plan_ok(
            "id = 'facts'\nkind = 'parquet'\npath = 't.parquet'\nschema = [{ name = 'a', type = 'int64' }]",
            dir.path(),
        );
        let message = read_err(source.as_ref());
        assert!(message.starts_with("facts: ") && message.contains("t.parquet"), "{message}");
        assert!(message.contains("`a` is Int32 in the file") && message.contains("Int64"), "{message}");

        let source = plan_ok(
            "id = 'facts'\nkind = 'parquet'\npath = 't.parquet'\nschema = [{ name = 'z', type = 'int32' }]",
            dir.path(),
        );
        let message = read_err(source.as_ref());
        assert!(message.contains("`z`") && message.contains("missing") && message.contains("a, b"), "{message}");

        let source = plan_ok(
            "id = 'facts'\nkind = 'parquet'\npath = 't.parquet'\nschema = [{ name = 'a', type = 'int32', nullable = false }]",
            dir.path(),
        );
        let message = read_err(source.as_ref());
        assert!(message.contains("t.parquet") && message.contains("does not match the source schema"), "{message}");
    }

    #[test]
    fn rejects_fields_that_do_not_apply() {
        let dir = tempdir();
        write(&dir.path().join("in.csv"), "a\n1\n");
        let cases = [
            ("kind = 'csv'\npath = 'in.csv'\nrows = 10", "`rows`"),
            ("kind = 'csv'\npath = 'in.csv'\nseed = 1", "`seed`"),
            ("kind = 'csv'\npath = 'in.csv'\nrows_per_second = 10", "`rows_per_second`"),
            ("kind = 'parquet'\npath = 'in.csv'\ncolumns = []", "`columns`"),
            ("kind = 'parquet'\npath = 'in.csv'\ndelimiter = ';'", "`delimiter`"),
            ("kind = 'jsonl'\npath = 'in.csv'\nhas_header = true", "`has_header`"),
            ("kind = 'csv'\npath = 'in.csv'\ndelimiter = ';;'", "`delimiter`"),
            ("kind = 'csv'\npath = 'in.csv'\nbatch_rows = 0", "`batch_rows`"),
            ("kind = 'csv'", "`path`"),
            ("kind = 'csv'\npath = 'in.csv'\nschema = [{ name = 'a', type = 'int' }]", "unknown type \"int\""),
            (
                "kind = 'csv'\npath = 'in.csv'\nschema = [{ name = 'a', type = 'int8' }, { name = 'a', type = 'int8' }]",
                "twice",
            ),
        ];
        for (body, expected) in cases {
            let message = plan_err(&format!("id = 'src'\n{body}"), dir.path());
            assert!(
                message.starts_with("src: invalid configuration: ") && message.contains(expected),
                "{body}: {message}"
            );
        }
    }

    /// Rows `ids` as CSV, JSON Lines or Parquet (row groups of 4 rows) at `path`.
    fn write_rows(kind: &str, path: &Path, ids: std::ops::Range<i64>) {
        let name = |i: i64| format!("n{i}");
        match kind {
            "csv" => write(path, &ids.fold(String::from("id,name\n"), |text, i| text + &format!("{i},{}\n", name(i)))),
            "jsonl" => write(
                path,
                &ids.fold(String::new(), |text, i| text + &format!("{{\"id\": {i}, \"name\": \"{}\"}}\n", name(i))),
            ),
            _ => {
                let schema = Arc::new(Schema::new(vec![
                    Field::new("id", DataType::Int64, false),
                    Field::new("name", DataType::Utf8, false),
                ]));
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(ids.clone())),
                        Arc::new(StringArray::from_iter_values(ids.map(name))),
                    ],
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let properties =
                    parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(4)).build();
                write(path, "");
                let file = File::create(path).unwrap_or_else(|e| panic!("{e}"));
                let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).unwrap_or_else(|e| panic!("{e}"));
                writer.write(&batch).unwrap_or_else(|e| panic!("{e}"));
                writer.close().unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// A source over `data/` of `kind`: files of 7, 0, 10, 5 and 1 rows, 3 rows per batch.
    fn resumable_source(kind: &str, dir: &Path) -> Box<dyn PlannedSource> {
        let mut first = 0;
        for (i, rows) in [7, 0, 10, 5, 1].into_iter().enumerate() {
            write_rows(kind, &dir.join(format!("data/f{i}.{kind}")), first..first + rows);
            first += rows;
        }
        plan_ok(
            &format!(
                "id = 'src'\nkind = '{kind}'\npath = 'data'\nbatch_rows = 3\n\
                 schema = [{{ name = 'id', type = 'int64', nullable = false }}, {{ name = 'name', type = 'utf8' }}]"
            ),
            dir,
        )
    }

    fn seek_err(
        source: &dyn PlannedSource,
        subtask: u32,
        parallelism: u32,
        position: impl Into<SourcePosition>,
    ) -> String {
        let position = position.into();
        let mut reader = source.open(subtask, parallelism).unwrap_or_else(|e| panic!("{e}"));
        match reader.seek(&position) {
            Ok(()) => panic!("seek to {position} should fail"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_fresh_reader_resumes_from_any_position() {
        for kind in ["csv", "jsonl", "parquet"] {
            let dir = tempdir();
            let source = resumable_source(kind, dir.path());
            let schema = source.schema();
            for (subtask, parallelism) in [(0, 1), (0, 2), (1, 2)] {
                let whole =
                    arrow_select::concat::concat_batches(&schema, &read_ok(source.as_ref(), subtask, parallelism))
                        .unwrap_or_else(|e| panic!("{e}"));
                assert!(whole.num_rows() > 0, "{kind}");
                // Stop after every number of batches, including after the end.
                for stop in 0.. {
                    let mut first = source.open(subtask, parallelism).unwrap_or_else(|e| panic!("{e}"));
                    let mut batches = Vec::new();
                    let mut ended = false;
                    for _ in 0..stop {
                        match first.next_batch().unwrap_or_else(|e| panic!("{e}")) {
                            Some(batch) => batches.push(batch),
                            None => ended = true,
                        }
                    }
                    // Positions travel through the checkpoint manifest as JSON text.
                    let text = first.position().to_string();
                    let position: SourcePosition = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
                    let mut second = source.open(subtask, parallelism).unwrap_or_else(|e| panic!("{e}"));
                    second.seek(&position).unwrap_or_else(|e| panic!("{kind} seek to {text}: {e}"));
                    while let Some(batch) = second.next_batch().unwrap_or_else(|e| panic!("{kind} after {text}: {e}")) {
                        batches.push(batch);
                    }
                    let resumed =
                        arrow_select::concat::concat_batches(&schema, &batches).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(
                        resumed, whole,
                        "{kind}, subtask {subtask}/{parallelism}, stopped after {stop} batches at {text}"
                    );
                    if ended {
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn seeking_past_the_rows_read_by_a_position_in_the_middle_of_a_parquet_row_group() {
        // Row groups hold 4 rows; 3-row batches stop inside them. Position: file 2 (10 rows), 6 rows read.
        let dir = tempdir();
        let source = resumable_source("parquet", dir.path());
        let mut reader = source.open(0, 1).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("data/f2.parquet").to_string_lossy().into_owned();
        reader
            .seek(&serde_json::json!({ "file": 2, "path": path, "rows": 6 }).into())
            .unwrap_or_else(|e| panic!("{e}"));
        let batches = std::iter::from_fn(|| reader.next_batch().unwrap_or_else(|e| panic!("{e}"))).collect::<Vec<_>>();
        assert_eq!(i64_column(&batches, 0), (13..23).collect::<Vec<_>>());
    }

    #[test]
    fn bad_positions_are_refused_naming_the_node() {
        for kind in ["csv", "jsonl", "parquet"] {
            let dir = tempdir();
            let source = resumable_source(kind, dir.path());
            let path = |i: usize| dir.path().join(format!("data/f{i}.{kind}")).to_string_lossy().into_owned();
            let cases = [
                (serde_json::json!("start"), "malformed"),
                (serde_json::json!({ "file": 0, "rows": 1 }), "malformed"),
                (serde_json::json!({ "file": 0, "path": path(0), "rows": 1, "extra": 1 }), "malformed"),
                (serde_json::json!({ "file": -1, "path": path(0), "rows": 1 }), "malformed"),
                (serde_json::json!({ "file": 9, "path": null, "rows": 0 }), "reads only 5 files"),
                (serde_json::json!({ "file": 5, "path": null, "rows": 3 }), "past the last file"),
                (serde_json::json!({ "file": 1, "path": path(2), "rows": 0 }), "changed since the checkpoint"),
                (serde_json::json!({ "file": 0, "path": path(0), "rows": 8 }), "fewer rows"),
                (serde_json::json!({ "file": 1, "path": path(1), "rows": 1 }), "fewer rows"),
            ];
            for (position, expected) in cases {
                let message = seek_err(source.as_ref(), 0, 1, position.clone());
                assert!(message.starts_with("src: ") && message.contains(expected), "{kind} {position}: {message}");
            }
            // A position of subtask 0 does not fit subtask 1, whose first file differs.
            let reader = source.open(0, 2).unwrap_or_else(|e| panic!("{e}"));
            let message = seek_err(source.as_ref(), 1, 2, reader.position());
            assert!(
                message.contains(&format!("f0.{kind}"))
                    && message.contains(&format!("f1.{kind}"))
                    && message.contains("changed"),
                "{message}"
            );
            // Exactly all rows of a file is a valid position: reading goes on with the next file.
            let mut reader = source.open(0, 1).unwrap_or_else(|e| panic!("{e}"));
            reader
                .seek(&serde_json::json!({ "file": 0, "path": path(0), "rows": 7 }).into())
                .unwrap_or_else(|e| panic!("{e}"));
            let batch = reader.next_batch().unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no batch"));
            assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 7, "{kind}");
        }
    }

    #[test]
    fn a_file_added_before_the_position_is_refused() {
        let dir = tempdir();
        let source = resumable_source("csv", dir.path());
        let mut reader = source.open(0, 1).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..4 {
            reader.next_batch().unwrap_or_else(|e| panic!("{e}"));
        }
        let position = reader.position();
        write_rows("csv", &dir.path().join("data/f0a.csv"), 100..102);
        let replanned = plan_ok("id = 'src'\nkind = 'csv'\npath = 'data'\nbatch_rows = 3", dir.path());
        let message = seek_err(replanned.as_ref(), 0, 1, position);
        // Index 2 was f2.csv; f0a.csv sorts before it, so it is f1.csv now.
        assert!(
            message.contains("f2.csv")
                && message.contains("f1.csv")
                && message.contains("changed since the checkpoint"),
            "{message}"
        );
    }
}
