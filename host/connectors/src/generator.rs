//! The generator source: seeded synthetic rows for demos, tests and benchmarks.
//!
//! Every value is a function of (seed, column index, global row index) alone, so
//! the data is the same whatever the parallelism and batch size. Subtask `i` of
//! `n` generates the contiguous row range `[rows * i / n, rows * (i + 1) / n)`.
//!
//! A subtask's position is how many rows of its range it has generated (and
//! where the range starts, so that a position cannot be applied to another
//! range). With `rows_per_second`, each subtask sleeps to emit its share of the
//! rate, in batches small enough that one comes at least every
//! [`THROTTLED_BATCH_INTERVAL`].

use std::time::{Duration, Instant};

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use flumen_spec::connector::{GenKind, GeneratorColumn, Number};
use serde::Deserialize;

use super::file_source::check_common_fields;
use super::{ConnectorError, PlannedSource, SourcePosition, SourceReader, SourceSpec};

/// A column, checked and ready to generate.
#[derive(Clone, Debug)]
enum Gen {
    Sequence { start: i64 },
    UniformInt { min: i64, span: u64 },
    UniformFloat { min: f64, width: f64 },
    Choice { values: Arc<StringArray> },
    String { len: usize },
    Timestamp { start_ms: i64, step_ms: i64 },
    Modulo { modulus: u64 },
    Divide { divisor: u64 },
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
    if spec.rows_per_second == Some(0) {
        return Err(config(node, "`rows_per_second` must be at least 1 (leave it out for no throttling)"));
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
        rows_per_second: spec.rows_per_second,
    }))
}

/// The longest a throttled generator subtask goes without emitting a batch
/// (its batches shrink to fit), so that barriers and watermarks keep flowing.
const THROTTLED_BATCH_INTERVAL: Duration = Duration::from_millis(100);

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
        ("modulus", column.modulus.is_some()),
        ("divisor", column.divisor.is_some()),
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
        GenKind::Modulo => {
            let modulus = column.modulus.ok_or_else(|| needs("modulus"))?;
            if modulus == 0 {
                return Err(err("`modulus` must be at least 1".to_owned()));
            }
            (DataType::Int64, Gen::Modulo { modulus })
        }
        GenKind::Divide => {
            let divisor = column.divisor.ok_or_else(|| needs("divisor"))?;
            if divisor == 0 {
                return Err(err("`divisor` must be at least 1".to_owned()));
            }
            (DataType::Int64, Gen::Divide { divisor })
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
    rows_per_second: Option<u64>,
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
        let (first_row, end_row) = (bound(subtask), bound(subtask + 1));
        let mut batch_rows = self.batch_rows as u64;
        // This subtask's share of the rate, in proportion to its share of the rows.
        let throttle = self.rows_per_second.filter(|_| end_row > first_row).map(|rate| {
            let rows_per_second = rate as f64 * (end_row - first_row) as f64 / self.rows as f64;
            let per_interval = (rows_per_second * THROTTLED_BATCH_INTERVAL.as_secs_f64()).ceil() as u64;
            batch_rows = batch_rows.min(per_interval.max(1));
            Throttle { rows_per_second, started: None }
        });
        Ok(Box::new(GeneratorReader {
            node: self.node.clone(),
            schema: self.schema.clone(),
            columns: self.columns.clone(),
            keys: self.keys.clone(),
            first_row,
            next_row: first_row,
            end_row,
            batch_rows,
            throttle,
        }))
    }
}

struct GeneratorReader {
    node: String,
    schema: SchemaRef,
    columns: Arc<Vec<Gen>>,
    keys: Arc<Vec<u64>>,
    first_row: u64,
    next_row: u64,
    end_row: u64,
    batch_rows: u64,
    throttle: Option<Throttle>,
}

/// Paces a subtask: the rows emitted since `started` are due at `rows_per_second`.
struct Throttle {
    rows_per_second: f64,
    /// When the paced stretch began (at the first batch, or the first after a seek) and at which row.
    started: Option<(Instant, u64)>,
}

impl Throttle {
    /// Sleeps until emitting rows up to `end` (exclusive) keeps to the rate.
    fn wait(&mut self, start: u64, end: u64) {
        let (began, first) = *self.started.get_or_insert_with(|| (Instant::now(), start));
        let due = Duration::try_from_secs_f64((end - first) as f64 / self.rows_per_second).unwrap_or(Duration::MAX);
        let wait = due.saturating_sub(began.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A generator subtask's position: it has generated rows `[first_row, first_row + rows)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneratorPosition {
    first_row: u64,
    rows: u64,
}

impl GeneratorReader {
    fn error(&self, message: String) -> ConnectorError {
        ConnectorError::Other { node: self.node.clone(), message }
    }
}

impl SourceReader for GeneratorReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        if self.next_row >= self.end_row {
            return Ok(None);
        }
        let start = self.next_row;
        let end = start.saturating_add(self.batch_rows).min(self.end_row);
        if let Some(throttle) = &mut self.throttle {
            throttle.wait(start, end);
        }
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

    fn position(&self) -> SourcePosition {
        let mut position = serde_json::Map::new();
        position.insert("first_row".to_owned(), self.first_row.into());
        position.insert("rows".to_owned(), (self.next_row - self.first_row).into());
        SourcePosition::of(position.into())
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        let parsed = GeneratorPosition::deserialize(position.value())
            .map_err(|e| self.error(format!("cannot resume from the malformed position {position}: {e}")))?;
        if parsed.first_row != self.first_row {
            return Err(self.error(format!(
                "cannot resume from position {position}: it is of a subtask whose rows start at {}, this one's start at {}; \
                 `rows` or the parallelism changed since the checkpoint",
                parsed.first_row, self.first_row
            )));
        }
        let available = self.end_row - self.first_row;
        if parsed.rows > available {
            return Err(self.error(format!(
                "cannot resume from position {position}: this subtask generates only {available} rows"
            )));
        }
        self.next_row = self.first_row + parsed.rows;
        if let Some(throttle) = &mut self.throttle {
            throttle.started = None;
        }
        Ok(())
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
        // Rows are below 2^63 (checked at plan), so both fit in i64.
        Gen::Modulo { modulus } => Arc::new(Int64Array::from_iter_values(rows.map(|row| (row % modulus) as i64))),
        Gen::Divide { divisor } => Arc::new(Int64Array::from_iter_values(rows.map(|row| (row / divisor) as i64))),
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
    use arrow_select::concat::concat_batches;

    use super::*;
    use crate::plan_source;

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
        plan_source(&spec(text), std::path::Path::new("."), 1024, &crate::test_blobs())
            .unwrap_or_else(|e| panic!("plan failed: {e}"))
    }

    fn plan_err(text: &str) -> String {
        match plan_source(&spec(text), std::path::Path::new("."), 1024, &crate::test_blobs()) {
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

    #[test]
    fn a_fresh_reader_resumes_from_any_position() {
        let source = generator(50, 3, 7);
        for parallelism in [1, 3] {
            for subtask in 0..parallelism {
                let mut whole = Vec::new();
                let mut reader = source.open(subtask, parallelism).unwrap_or_else(|e| panic!("{e}"));
                while let Some(batch) = reader.next_batch().unwrap_or_else(|e| panic!("{e}")) {
                    whole.push(batch);
                }
                let whole = concat_batches(&source.schema(), &whole).unwrap_or_else(|e| panic!("{e}"));
                for stop in 0..=4 {
                    let mut first = source.open(subtask, parallelism).unwrap_or_else(|e| panic!("{e}"));
                    let mut batches: Vec<RecordBatch> =
                        (0..stop).filter_map(|_| first.next_batch().unwrap_or_else(|e| panic!("{e}"))).collect();
                    let text = first.position().to_string();
                    let position: SourcePosition = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
                    let mut second = source.open(subtask, parallelism).unwrap_or_else(|e| panic!("{e}"));
                    second.seek(&position).unwrap_or_else(|e| panic!("seek to {text}: {e}"));
                    while let Some(batch) = second.next_batch().unwrap_or_else(|e| panic!("{e}")) {
                        batches.push(batch);
                    }
                    let resumed = concat_batches(&source.schema(), &batches).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(
                        resumed, whole,
                        "subtask {subtask}/{parallelism}, stopped after {stop} batches at {text}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_positions_are_refused_naming_the_node() {
        let source = generator(50, 3, 7);
        let seek_err = |subtask: u32, position: serde_json::Value| {
            let position = SourcePosition::from(position);
            let mut reader = source.open(subtask, 2).unwrap_or_else(|e| panic!("{e}"));
            match reader.seek(&position) {
                Ok(()) => panic!("seek to {position} should fail"),
                Err(e) => e.to_string(),
            }
        };
        let cases = [
            (0, serde_json::json!(7), "malformed"),
            (0, serde_json::json!({ "rows": 7 }), "malformed"),
            (0, serde_json::json!({ "first_row": 0, "rows": -1 }), "malformed"),
            (0, serde_json::json!({ "first_row": 0, "rows": 26 }), "only 25 rows"),
            (1, serde_json::json!({ "first_row": 0, "rows": 3 }), "parallelism changed"),
        ];
        for (subtask, position, expected) in cases {
            let message = seek_err(subtask, position.clone());
            assert!(message.starts_with("gen: ") && message.contains(expected), "{position}: {message}");
        }
        let mut reader = source.open(1, 2).unwrap_or_else(|e| panic!("{e}"));
        reader.seek(&serde_json::json!({ "first_row": 25, "rows": 25 }).into()).unwrap_or_else(|e| panic!("{e}"));
        assert!(reader.next_batch().unwrap_or_else(|e| panic!("{e}")).is_none(), "a position at the end reads nothing");
    }

    #[test]
    fn modulo_and_divide_make_unique_keys_with_increasing_sequences() {
        let source = plan_ok(
            "id = 'g'\nkind = 'generator'\nrows = 20\nbatch_rows = 6\ncolumns = [\
             { name = 'key', gen = 'modulo', modulus = 3 }, { name = 'seq', gen = 'divide', divisor = 3 }]",
        );
        let (batch, _) = read(source.as_ref(), 3);
        let key = batch.column(0).as_primitive::<Int64Type>().values().to_vec();
        let seq = batch.column(1).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(key, (0..20).map(|row| row % 3).collect::<Vec<i64>>());
        assert_eq!(seq, (0..20).map(|row| row / 3).collect::<Vec<i64>>());
        assert_eq!(&key[..7], [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(&seq[..7], [0, 0, 0, 1, 1, 1, 2]);

        for (column, expected) in [
            ("{ name = 'k', gen = 'modulo', modulus = 0 }", "`modulus` must be at least 1"),
            ("{ name = 'k', gen = 'modulo' }", "needs `modulus`"),
            ("{ name = 'k', gen = 'divide', divisor = 0 }", "`divisor` must be at least 1"),
            ("{ name = 'k', gen = 'modulo', divisor = 2 }", "`divisor` does not apply to a modulo column"),
        ] {
            let message = plan_err(&format!("id = 'gen'\nkind = 'generator'\nrows = 5\ncolumns = [{column}]"));
            assert!(message.contains(expected), "{column}: {message}");
        }
    }

    #[test]
    fn rows_per_second_throttles_each_subtask_to_its_share() {
        let throttled = |rows: u64, rate: u64| {
            plan_ok(&format!(
                "id = 'g'\nkind = 'generator'\nrows = {rows}\nrows_per_second = {rate}\n\
                 columns = [{{ name = 'x', gen = 'sequence' }}]"
            ))
        };
        // 300 rows at 1000 rows/s: 0.3 s; only a lower bound is asserted (slow machines are slower).
        let source = throttled(300, 1000);
        let started = Instant::now();
        let (batch, sizes) = read(source.as_ref(), 1);
        let elapsed = started.elapsed();
        assert_eq!(batch.num_rows(), 300);
        assert!(elapsed >= Duration::from_millis(150), "took {elapsed:?}");
        // Batches shrink so that one comes every 100 ms (1024 rows per batch otherwise).
        assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");

        // Two subtasks share the rate: each of 150 rows emits at 500 rows/s.
        let source = throttled(300, 1000);
        let started = Instant::now();
        let mut reader = source.open(1, 2).unwrap_or_else(|e| panic!("{e}"));
        let mut rows = 0;
        while let Some(batch) = reader.next_batch().unwrap_or_else(|e| panic!("{e}")) {
            rows += batch.num_rows();
        }
        let elapsed = started.elapsed();
        assert_eq!(rows, 150);
        assert!(elapsed >= Duration::from_millis(150), "took {elapsed:?}");

        let message = plan_err(
            "id = 'gen'\nkind = 'generator'\nrows = 5\nrows_per_second = 0\ncolumns = [{ name = 'x', gen = 'sequence' }]",
        );
        assert!(message.contains("`rows_per_second` must be at least 1"), "{message}");
    }
}
