//! The `[[source]]` and `[[sink]]` tables of a job spec: what a user writes,
//! deserialized. Which fields apply to which kind, and what they do, is checked
//! and implemented by the engine's connectors.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The formats and kinds of built-in sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Parquet,
    Csv,
    Jsonl,
    Generator,
    /// One row per file or URI with a reference to its bytes.
    Blobs,
}

/// A `[[source]]` table of a job spec. Which fields apply depends on `kind`;
/// [`plan_source`] rejects fields that do not apply.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub id: String,
    pub kind: SourceKind,
    /// File, directory or glob (file sources), relative to the job file.
    pub path: Option<String>,
    /// Declared schema; inferred from the files when absent (file sources).
    pub schema: Option<Vec<ColumnSpec>>,
    /// CSV: whether the first line is a header (default true).
    pub has_header: Option<bool>,
    /// CSV: one-character field delimiter (default ",").
    pub delimiter: Option<String>,
    /// Rows per emitted batch (default: the job's `batch_rows`).
    pub batch_rows: Option<usize>,
    /// Parallel subtasks (default: the job's `parallelism`).
    pub parallelism: Option<u32>,
    /// Generator: total rows across all subtasks.
    pub rows: Option<u64>,
    /// Generator: seed of the synthetic data (default 0).
    pub seed: Option<u64>,
    /// Generator: the columns to generate.
    pub columns: Option<Vec<GeneratorColumn>>,
    /// Generator: throttles the source to about this many rows per second in
    /// total (each subtask sleeps to emit its share), so that a run lasts long
    /// enough to checkpoint, fail and recover in. Unthrottled when absent.
    pub rows_per_second: Option<u64>,
    /// Emit watermarks from this event-time column (all kinds).
    pub watermark: Option<WatermarkSpec>,
    /// Blobs: objects named by URI (`file://`, `http(s)://`, `s3://`) instead of `path`.
    pub uris: Option<Vec<String>>,
    /// Blobs: the name of the reference column (default `blob`).
    pub column: Option<String>,
    /// Blobs: the reference column's type (default `blob`).
    pub column_type: Option<BlobColumnType>,
    /// Blobs: what happens to an object that cannot be read (missing,
    /// unreadable, changed while read, a failed fetch): fail the job (the
    /// default) or send its row, with the error, to a dead-letter sink.
    pub on_error: Option<flumen_types::FailurePolicy>,
}

/// A declared column: name and Arrow type name (see the job spec reference).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default = "default_true")]
    pub nullable: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    Parquet,
    Csv,
    Jsonl,
    Console,
    Blackhole,
}

/// A `[[sink]]` table of a job spec.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    pub id: String,
    pub kind: SinkKind,
    /// Upstream node ids, or `{ from, partition, keys }` tables.
    #[serde(default)]
    pub inputs: Vec<crate::InputSpec>,
    /// Output file (parallelism 1) or directory (parallelism > 1), relative to the job file.
    pub path: Option<String>,
    /// Console: most rows to print (default 20).
    pub max_rows: Option<usize>,
    /// CSV: whether to write a header line (default true).
    pub has_header: Option<bool>,
    pub parallelism: Option<u32>,
    /// File sinks: how blob reference columns are written (default `inline`).
    pub blobs: Option<SinkBlobs>,
}

/// How a file sink writes a column of blob references.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkBlobs {
    /// The bytes themselves, as a `large_binary` column of the same name.
    #[default]
    Inline,
    /// The reference struct (digest, size, media type, token), as it flows.
    Reference,
}

impl SinkSpec {
    /// Whether this sink writes blob columns as their bytes.
    pub fn inlines_blobs(&self) -> bool {
        matches!(self.kind, SinkKind::Parquet | SinkKind::Csv | SinkKind::Jsonl)
            && self.blobs.unwrap_or_default() == SinkBlobs::Inline
    }
}

/// One generated column of a generator source, e.g.
/// `{ name = "price", gen = "uniform-float", min = 1, max = 100 }`.
///
/// Kinds (`gen`) and their fields:
/// - `sequence`: int64, the global row index plus `start` (default 0);
/// - `uniform-int`: int64, uniform in `[min, max]`;
/// - `uniform-float`: float64, uniform in `[min, max)`;
/// - `choice`: utf8, one of `values`, uniformly;
/// - `string`: utf8, `len` random ASCII letters and digits;
/// - `timestamp`: timestamp[ms], `start_ms` (default 0) plus `step_ms` (default 1000) per row index;
/// - `modulo`: int64, the global row index modulo `modulus`;
/// - `divide`: int64, the global row index divided by `divisor` (rounded down).
///
/// `key = { gen = "modulo", modulus = K }` with `seq = { gen = "divide", divisor = K }`
/// makes every (key, seq) pair unique, and seq increase by one per key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorColumn {
    pub name: String,
    #[serde(rename = "gen")]
    pub kind: GenKind,
    pub start: Option<i64>,
    pub min: Option<Number>,
    pub max: Option<Number>,
    pub values: Option<Vec<String>>,
    pub len: Option<usize>,
    pub start_ms: Option<i64>,
    pub step_ms: Option<i64>,
    pub modulus: Option<u64>,
    pub divisor: Option<u64>,
}

impl GeneratorColumn {
    /// The column's name in the generated schema.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GenKind {
    Sequence,
    UniformInt,
    UniformFloat,
    Choice,
    String,
    Timestamp,
    Modulo,
    Divide,
}

impl GenKind {
    pub fn name(self) -> &'static str {
        match self {
            GenKind::Sequence => "sequence",
            GenKind::UniformInt => "uniform-int",
            GenKind::UniformFloat => "uniform-float",
            GenKind::Choice => "choice",
            GenKind::String => "string",
            GenKind::Timestamp => "timestamp",
            GenKind::Modulo => "modulo",
            GenKind::Divide => "divide",
        }
    }

    /// The optional fields this kind reads.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            GenKind::Sequence => &["start"],
            GenKind::UniformInt | GenKind::UniformFloat => &["min", "max"],
            GenKind::Choice => &["values"],
            GenKind::String => &["len"],
            GenKind::Timestamp => &["start_ms", "step_ms"],
            GenKind::Modulo => &["modulus"],
            GenKind::Divide => &["divisor"],
        }
    }
}

/// A TOML number: `min = 1` and `min = 1.5` are both accepted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                i64::try_from(v).map(Number::Int).map_err(|_| E::custom(format!("{v} is out of the int64 range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Float(v))
            }
        }
        deserializer.deserialize_any(NumberVisitor)
    }
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(v) => v as f64,
            Number::Float(v) => v,
        }
    }
}

/// The `watermark` table of a source: `{ column = "ts", delay_ms = 0 }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// The event-time column: timestamp (any unit) or int64 milliseconds.
    pub column: String,
    /// How far the watermark trails the largest event time read (default 0).
    #[serde(default)]
    pub delay_ms: i64,
}

/// What the reference column is typed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobColumnType {
    Blob,
    Image,
    Video,
}
