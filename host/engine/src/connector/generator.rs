//! The generator source: seeded synthetic rows for demos, tests and benchmarks.
//!
//! Every value is a function of (seed, column index, global row index) alone, so
//! the data is the same whatever the parallelism and batch size. Subtask `i` of
//! `n` generates the contiguous row range `[rows * i / n, rows * (i + 1) / n)`.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::file_source::check_common_fields;
use super::{ConnectorError, PlannedSource, SourceReader, SourceSpec};

/// One generated column of a generator source, e.g.
/// `{ name = "price", gen = "uniform-float", min = 1, max = 100 }`.
///
/// Kinds (`gen`) and their fields:
/// - `sequence`: int64, the global row index plus `start` (default 0);
/// - `uniform-int`: int64, uniform in `[min, max]`;
/// - `uniform-float`: float64, uniform in `[min, max)`;
/// - `choice`: utf8, one of `values`, uniformly;
/// - `string`: utf8, `len` random ASCII letters and digits;
/// - `timestamp`: timestamp[ms], `start_ms` (default 0) plus `step_ms` (default 1000) per row index.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorColumn {
    name: String,
    #[serde(rename = "gen")]
    kind: GenKind,
    start: Option<i64>,
    min: Option<Number>,
    max: Option<Number>,
    values: Option<Vec<String>>,
    len: Option<usize>,
    start_ms: Option<i64>,
    step_ms: Option<i64>,
}

impl GeneratorColumn {
    /// The column's name in the generated schema.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum GenKind {
    Sequence,
    UniformInt,
    UniformFloat,
    Choice,
    String,
    Timestamp,
}

impl GenKind {
    fn name(self) -> &'static str {
        match self {
            GenKind::Sequence => "sequence",
            GenKind::UniformInt => "uniform-int",
            GenKind::UniformFloat => "uniform-float",
            GenKind::Choice => "choice",
            GenKind::String => "string",
            GenKind::Timestamp => "timestamp",
        }
    }

    /// The optional fields this kind reads.
    fn fields(self) -> &'static [&'static str] {
        match self {
            GenKind::Sequence => &["start"],
            GenKind::UniformInt | GenKind::UniformFloat => &["min", "max"],
            GenKind::Choice => &["values"],
            GenKind::String => &["len"],
            GenKind::Timestamp => &["start_ms", "step_ms"],
        }
    }
}

/// A TOML number: `min = 1` and `min = 1.5` are both accepted.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Number {
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
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(v) => v as f64,
            Number::Float(v) => v,
        }
    }
}

/// A column, checked and ready to generate.
#[derive(Clone, Debug)]
enum Gen {
    Sequence { start: i64 },
    UniformInt { min: i64, span: u64 },
    UniformFloat { min: f64, width: f64 },
    Choice { values: Arc<StringArray> },
    String { len: usize },
    Timestamp { start_ms: i64, step_ms: i64 },
}

/// Plans a generator source.
pub(super) fn plan(spec: &SourceSpec, job_batch_rows: usize) -> Result<Box<dyn PlannedSource>, ConnectorError> {
    let node = spec.id.as_str();
    for (field, set) in [
        ("path", spec.path.is_some()),
        ("schema", spec.schema.is_some()),
        ("has_header", spec.has_header.is_some()),
        ("delimiter", spec.delimiter.is_some()),
    ] {
        if set {
            return Err(config(node, format!("`{field}` does not apply to a generator source")));
        }
    }
    let batch_rows = check_common_fields(spec, job_batch_rows)?;
    let rows = spec.rows.ok_or_else(|| config(node, "a generator source needs `rows` (the total number of rows)"))?;
    if rows > i64::MAX as u64 {
        return Err(config(node, format!("`rows` must be at most {}", i64::MAX)));
    }
    let columns = match spec.columns.as_deref() {
        None | Some([]) => {
            return Err(config(
                node,
                "a generator source needs `columns`, e.g. [{ name = \"id\", gen = \"sequence\" }]",
            ));
        }
        Some(columns) => columns,
    };
    let mut seen = HashSet::new();
    let mut fields = Vec::with_capacity(columns.len());
    let mut gens = Vec::with_capacity(columns.len());
    for column in columns {
        if column.name.is_empty() {
            return Err(config(node, "a generator column has an empty `name`"));
        }
        if !seen.insert(column.name.as_str()) {
            return Err(config(node, format!("column `{}` is declared twice", column.name)));
        }
        let (data_type, generator) = check_column(node, column, rows, batch_rows)?;
        fields.push(Field::new(&column.name, data_type, false));
        gens.push(generator);
    }
    let seed = spec.seed.unwrap_or(0);
    let keys = (0..gens.len()).map(|index| column_key(seed, index)).collect();
    Ok(Box::new(Generator {
        node: node.to_owned(),
        schema: Arc::new(Schema::new(fields)),
        columns: Arc::new(gens),
        keys: Arc::new(keys),
        rows,
        batch_rows,
    }))
}

fn config(node: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config { node: node.to_owned(), message: message.into() }
}

/// The largest number of string bytes one utf8 array can hold.
const MAX_UTF8_BYTES: usize = i32::MAX as usize;

fn check_column(
    node: &str,
    column: &GeneratorColumn,
    rows: u64,
    batch_rows: usize,
) -> Result<(DataType, Gen), ConnectorError> {
    let name = &column.name;
    let kind = column.kind;
    let err = |message: String| config(node, format!("column `{name}`: {message}"));
    let set = [
        ("start", column.start.is_some()),
        ("min", column.min.is_some()),
        ("max", column.max.is_some()),
        ("values", column.values.is_some()),
        ("len", column.len.is_some()),
        ("start_ms", column.start_ms.is_some()),
        ("step_ms", column.step_ms.is_some()),
    ];
    if let Some((field, _)) = set.iter().find(|(field, is_set)| *is_set && !kind.fields().contains(field)) {
        return Err(err(format!("`{field}` does not apply to a {} column", kind.name())));
    }
    let last_row = rows.saturating_sub(1) as i64;
    let needs = |field: &str| err(format!("a {} column needs `{field}`", kind.name()));
    let bytes_fit = |longest: usize, field: &str| {
        if longest.checked_mul(batch_rows).is_none_or(|bytes| bytes > MAX_UTF8_BYTES) {
            Err(err(format!(
                "`{field}` times batch_rows ({batch_rows}) exceeds the 2 GiB a utf8 batch can hold; lower one of them"
            )))
        } else {
            Ok(())
        }
    };
    Ok(match kind {
        GenKind::Sequence => {
            let start = column.start.unwrap_or(0);
            if start.checked_add(last_row).is_none() {
                return Err(err(format!("`start` + rows overflows int64 (start {start}, {rows} rows)")));
            }
            (DataType::Int64, Gen::Sequence { start })
        }
        GenKind::UniformInt => {
            let (Some(min), Some(max)) = (column.min, column.max) else { return Err(needs("min` and `max")) };
            let (Number::Int(min), Number::Int(max)) = (min, max) else {
                return Err(err("`min` and `max` of a uniform-int column must be integers".to_owned()));
            };
            if min > max {
                return Err(err(format!("`min` ({min}) is greater than `max` ({max})")));
            }
            (DataType::Int64, Gen::UniformInt { min, span: max.abs_diff(min) })
        }
        GenKind::UniformFloat => {
            let (Some(min), Some(max)) = (column.min, column.max) else { return Err(needs("min` and `max")) };
            let (min, max) = (min.as_f64(), max.as_f64());
            let width = max - min;
            if !width.is_finite() || width < 0.0 {
                return Err(err(format!("`min` ({min}) and `max` ({max}) must be finite with min <= max")));
            }
            (DataType::Float64, Gen::UniformFloat { min, width })
        }
        GenKind::Choice => {
            let values = column.values.as_ref().ok_or_else(|| needs("values"))?;
            if values.is_empty() {
                return Err(err("`values` is empty".to_owned()));
            }
            bytes_fit(values.iter().map(String::len).max().unwrap_or(0), "the longest of `values`")?;
            (DataType::Utf8, Gen::Choice { values: Arc::new(StringArray::from_iter_values(values)) })
        }
        GenKind::String => {
            let len = column.len.ok_or_else(|| needs("len"))?;
            bytes_fit(len, "`len`")?;
            (DataType::Utf8, Gen::String { len })
        }
        GenKind::Timestamp => {
            let start_ms = column.start_ms.unwrap_or(0);
            let step_ms = column.step_ms.unwrap_or(1000);
            if last_row.checked_mul(step_ms).and_then(|offset| offset.checked_add(start_ms)).is_none() {
                return Err(err(format!("`start_ms` + rows × `step_ms` overflows int64 ({rows} rows)")));
            }
            (DataType::Timestamp(TimeUnit::Millisecond, None), Gen::Timestamp { start_ms, step_ms })
        }
    })
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser: a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn column_key(seed: u64, column: usize) -> u64 {
    mix(mix(seed.wrapping_add(GOLDEN_GAMMA)) ^ (column as u64).wrapping_add(1).wrapping_mul(GOLDEN_GAMMA))
}

/// The random bits of `row` in the column with `key`: element `row` of a SplitMix64 stream.
fn row_bits(key: u64, row: u64) -> u64 {
    mix(key.wrapping_add(row.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
}

/// A uniform integer in `[0, span]` (the multiply-shift reduction).
fn below_inclusive(bits: u64, span: u64) -> u64 {
    ((u128::from(bits) * (u128::from(span) + 1)) >> 64) as u64
}

const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug)]
struct Generator {
    node: String,
    schema: SchemaRef,
    columns: Arc<Vec<Gen>>,
    keys: Arc<Vec<u64>>,
    rows: u64,
    batch_rows: usize,
}

impl PlannedSource for Generator {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn open(&self, subtask: u32, parallelism: u32) -> Result<Box<dyn SourceReader>, ConnectorError> {
        if subtask >= parallelism {
            return Err(ConnectorError::Other {
                node: self.node.clone(),
                message: format!("cannot open subtask {subtask} of {parallelism}"),
            });
        }
        let bound = |i: u32| (u128::from(self.rows) * u128::from(i) / u128::from(parallelism)) as u64;
        Ok(Box::new(GeneratorReader {
            node: self.node.clone(),
            schema: self.schema.clone(),
            columns: self.columns.clone(),
            keys: self.keys.clone(),
            next_row: bound(subtask),
            end_row: bound(subtask + 1),
            batch_rows: self.batch_rows as u64,
        }))
    }
}

struct GeneratorReader {
    node: String,
    schema: SchemaRef,
    columns: Arc<Vec<Gen>>,
    keys: Arc<Vec<u64>>,
    next_row: u64,
    end_row: u64,
    batch_rows: u64,
}

impl SourceReader for GeneratorReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        if self.next_row >= self.end_row {
            return Ok(None);
        }
        let start = self.next_row;
        let end = start.saturating_add(self.batch_rows).min(self.end_row);
        self.next_row = end;
        let arrays = self
            .columns
            .iter()
            .zip(self.keys.iter())
            .map(|(generator, &key)| generate(generator, key, start, end))
            .collect();
        RecordBatch::try_new(self.schema.clone(), arrays).map(Some).map_err(|e| ConnectorError::Other {
            node: self.node.clone(),
            message: format!("cannot build a batch: {e}"),
        })
    }
}

/// Generates rows `[start, end)` of one column. Row indexes fit in i64 (checked at plan).
fn generate(generator: &Gen, key: u64, start: u64, end: u64) -> ArrayRef {
    let rows = start..end;
    match generator {
        Gen::Sequence { start: first } => {
            Arc::new(Int64Array::from_iter_values(rows.map(|row| first.wrapping_add(row as i64))))
        }
        Gen::UniformInt { min, span } => Arc::new(Int64Array::from_iter_values(
            rows.map(|row| min.wrapping_add(below_inclusive(row_bits(key, row), *span) as i64)),
        )),
        Gen::UniformFloat { min, width } => Arc::new(Float64Array::from_iter_values(rows.map(|row| {
            // 53 random bits: a uniform float in [0, 1).
            let unit = (row_bits(key, row) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            min + unit * width
        }))),
        Gen::Choice { values } => {
            let last = values.len().saturating_sub(1) as u64;
            Arc::new(StringArray::from_iter_values(
                rows.map(|row| values.value(below_inclusive(row_bits(key, row), last) as usize)),
            ))
        }
        Gen::String { len } => {
            let count = (end - start) as usize;
            let mut builder = StringBuilder::with_capacity(count, count * len);
            let mut value = String::with_capacity(*len);
            for row in rows {
                value.clear();
                let row_key = row_bits(key, row);
                // Ten characters from each 64-bit word (62^10 < 2^64).
                for chunk in 0..len.div_ceil(10) {
                    let mut bits = mix(row_key.wrapping_add((chunk as u64).wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)));
                    for _ in 0..(len - chunk * 10).min(10) {
                        value.push(char::from(ALPHANUMERIC[(bits % 62) as usize]));
                        bits /= 62;
                    }
                }
                builder.append_value(&value);
            }
            Arc::new(builder.finish())
        }
        Gen::Timestamp { start_ms, step_ms } => Arc::new(TimestampMillisecondArray::from_iter_values(
            rows.map(|row| start_ms.wrapping_add((row as i64).wrapping_mul(*step_ms))),
        )),
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
    use arrow_select::concat::concat_batches;

    use super::*;
    use crate::connector::plan_source;

    const COLUMNS: &str = r#"
columns = [
  { name = "id", gen = "sequence", start = 100 },
  { name = "qty", gen = "uniform-int", min = -5, max = 5 },
  { name = "price", gen = "uniform-float", min = 1, max = 2.5 },
  { name = "city", gen = "choice", values = ["Lyon", "Oslo", "Lima"] },
  { name = "code", gen = "string", len = 13 },
  { name = "ts", gen = "timestamp", start_ms = 1700000000000, step_ms = 250 },
]
"#;

    fn spec(text: &str) -> SourceSpec {
        toml::from_str(text).unwrap_or_else(|e| panic!("bad test spec: {e}"))
    }

    fn plan_ok(text: &str) -> Box<dyn PlannedSource> {
        plan_source(&spec(text), std::path::Path::new("."), 1024).unwrap_or_else(|e| panic!("plan failed: {e}"))
    }

    fn plan_err(text: &str) -> String {
        match plan_source(&spec(text), std::path::Path::new("."), 1024) {
            Ok(source) => panic!("plan should fail, got {source:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// All rows of all subtasks, in subtask order, as one batch; plus the batch sizes seen.
    fn read(source: &dyn PlannedSource, parallelism: u32) -> (RecordBatch, Vec<usize>) {
        let mut batches = Vec::new();
        for subtask in 0..parallelism {
            let mut reader = source.open(subtask, parallelism).unwrap_or_else(|e| panic!("{e}"));
            while let Some(batch) = reader.next_batch().unwrap_or_else(|e| panic!("{e}")) {
                batches.push(batch);
            }
        }
        let sizes = batches.iter().map(RecordBatch::num_rows).collect();
        (concat_batches(&source.schema(), &batches).unwrap_or_else(|e| panic!("{e}")), sizes)
    }

    fn generator(rows: u64, seed: u64, batch_rows: usize) -> Box<dyn PlannedSource> {
        plan_ok(&format!(
            "id = 'gen'\nkind = 'generator'\nrows = {rows}\nseed = {seed}\nbatch_rows = {batch_rows}\n{COLUMNS}"
        ))
    }

    #[test]
    fn same_rows_whatever_the_parallelism_and_batch_size() {
        let (one, sizes) = read(generator(100, 7, 1024).as_ref(), 1);
        assert_eq!(sizes, [100]);
        let (three, sizes) = read(generator(100, 7, 8).as_ref(), 3);
        assert!(sizes.iter().all(|&n| n <= 8), "{sizes:?}");
        assert_eq!(one, three);
        let (seven, _) = read(generator(100, 7, 3).as_ref(), 7);
        assert_eq!(one, seven);

        let (other_seed, _) = read(generator(100, 8, 1024).as_ref(), 1);
        for column in ["qty", "price", "city", "code"] {
            assert_ne!(one.column_by_name(column), other_seed.column_by_name(column), "{column} depends on the seed");
        }
        assert_eq!(one.column_by_name("id"), other_seed.column_by_name("id"));
    }

    #[test]
    fn subtasks_read_contiguous_ranges_of_the_row_index() {
        let source = generator(10, 0, 1024);
        let firsts: Vec<Vec<i64>> = (0..3)
            .map(|subtask| {
                let mut reader = source.open(subtask, 3).unwrap_or_else(|e| panic!("{e}"));
                let mut ids = Vec::new();
                while let Some(batch) = reader.next_batch().unwrap_or_else(|e| panic!("{e}")) {
                    ids.extend(batch.column(0).as_primitive::<Int64Type>().values().iter().copied());
                }
                ids
            })
            .collect();
        assert_eq!(firsts, [vec![100, 101, 102], vec![103, 104, 105], vec![106, 107, 108, 109]]);
        assert!(source.open(3, 3).is_err());
    }

    #[test]
    fn values_follow_their_column_specs() {
        let (batch, _) = read(generator(2000, 42, 300).as_ref(), 1);
        let schema = batch.schema();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [
                &DataType::Int64,
                &DataType::Int64,
                &DataType::Float64,
                &DataType::Utf8,
                &DataType::Utf8,
                &DataType::Timestamp(TimeUnit::Millisecond, None)
            ]
        );
        let qty = batch.column(1).as_primitive::<Int64Type>().values();
        assert!(qty.iter().all(|v| (-5..=5).contains(v)));
        let distinct: HashSet<i64> = qty.iter().copied().collect();
        assert_eq!(distinct.len(), 11, "all of [-5, 5] appear in 2000 rows");
        let price = batch.column(2).as_primitive::<Float64Type>().values();
        assert!(price.iter().all(|v| (1.0..=2.5).contains(v)));
        let mean = price.iter().sum::<f64>() / price.len() as f64;
        assert!((mean - 1.75).abs() < 0.05, "mean {mean}");
        let cities: HashSet<&str> = batch.column(3).as_string::<i32>().iter().flatten().collect();
        assert_eq!(cities, HashSet::from(["Lyon", "Oslo", "Lima"]));
        let codes = batch.column(4).as_string::<i32>();
        assert!(codes.iter().flatten().all(|c| c.len() == 13 && c.bytes().all(|b| b.is_ascii_alphanumeric())));
        let distinct_codes: HashSet<&str> = codes.iter().flatten().collect();
        assert_eq!(distinct_codes.len(), 2000);
        let ts = batch.column(5).as_primitive::<TimestampMillisecondType>().values();
        assert_eq!(ts[0], 1_700_000_000_000);
        assert_eq!(ts[1999], 1_700_000_000_000 + 1999 * 250);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(1999), 2099);
    }

    #[test]
    fn full_int64_range_and_zero_rows() {
        let source = plan_ok(&format!(
            "id = 'g'\nkind = 'generator'\nrows = 50\ncolumns = [{{ name = 'x', gen = 'uniform-int', min = {}, max = {} }}]",
            i64::MIN,
            i64::MAX
        ));
        let (batch, _) = read(source.as_ref(), 2);
        assert_eq!(batch.num_rows(), 50);
        let source = plan_ok("id = 'g'\nkind = 'generator'\nrows = 0\ncolumns = [{ name = 'x', gen = 'sequence' }]");
        let mut reader = source.open(0, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(reader.next_batch().unwrap_or_else(|e| panic!("{e}")).is_none());
    }

    #[test]
    fn rejects_invalid_configurations() {
        let cases = [
            ("columns = [{ name = 'x', gen = 'sequence' }]", "`rows`"),
            ("rows = 5", "`columns`"),
            ("rows = 5\ncolumns = []", "`columns`"),
            ("rows = 5\npath = 'x.csv'\ncolumns = [{ name = 'x', gen = 'sequence' }]", "`path`"),
            ("rows = 5\nschema = []\ncolumns = [{ name = 'x', gen = 'sequence' }]", "`schema`"),
            ("rows = 5\nhas_header = true\ncolumns = [{ name = 'x', gen = 'sequence' }]", "`has_header`"),
            (
                "rows = 5\ncolumns = [{ name = 'x', gen = 'sequence', min = 1 }]",
                "column `x`: `min` does not apply to a sequence column",
            ),
            ("rows = 5\ncolumns = [{ name = 'x', gen = 'uniform-int', min = 1 }]", "needs `min` and `max`"),
            ("rows = 5\ncolumns = [{ name = 'x', gen = 'uniform-int', min = 3, max = 1 }]", "greater than `max`"),
            ("rows = 5\ncolumns = [{ name = 'x', gen = 'uniform-int', min = 0.5, max = 1 }]", "must be integers"),
            ("rows = 5\ncolumns = [{ name = 'x', gen = 'choice', values = [] }]", "`values` is empty"),
            ("rows = 5\ncolumns = [{ name = 'x', gen = 'string' }]", "needs `len`"),
            ("rows = 5\ncolumns = [{ name = 'x', gen = 'sequence' }, { name = 'x', gen = 'sequence' }]", "twice"),
            ("rows = 5\ncolumns = [{ name = 'x', gen = 'sequence', start = 9223372036854775805 }]", "overflows"),
            ("rows = 5\nbatch_rows = 1000000\ncolumns = [{ name = 'x', gen = 'string', len = 100000 }]", "2 GiB"),
        ];
        for (body, expected) in cases {
            let message = plan_err(&format!("id = 'gen'\nkind = 'generator'\n{body}"));
            assert!(
                message.starts_with("gen: invalid configuration: ") && message.contains(expected),
                "{body}: {message}"
            );
        }
    }

    #[test]
    fn unknown_column_fields_are_rejected_when_parsing() {
        let result: Result<SourceSpec, _> = toml::from_str(
            "id = 'g'\nkind = 'generator'\nrows = 1\ncolumns = [{ name = 'x', gen = 'sequence', step = 2 }]",
        );
        assert!(result.is_err_and(|e| e.to_string().contains("step")));
        let result: Result<SourceSpec, _> =
            toml::from_str("id = 'g'\nkind = 'generator'\nrows = 1\ncolumns = [{ name = 'x', gen = 'gauss' }]");
        assert!(result.is_err_and(|e| e.to_string().contains("gauss")));
    }
}
