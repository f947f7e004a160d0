//! Source watermarks: event time read from a column of every batch.
//!
//! A source with `watermark = { column = "ts", delay_ms = D }` tracks the
//! largest event time its subtask has returned, `M`; its watermark is
//! `M - D` (milliseconds since the epoch). The source task emits it after
//! every batch that advanced it ([`SourceReader::watermark`]), so an operator
//! downstream learns "no row earlier than this will come" from every source
//! subtask, and the input gate takes the minimum over its channels. Rows more
//! than `D` older than the newest row already read are late for operators
//! that act on event time.
//!
//! The column must be an int64 (milliseconds) or a timestamp of any unit
//! (converted to milliseconds, rounding down); nulls are ignored. Wrapping a
//! planned source leaves its positions untouched: they round-trip through
//! checkpoints exactly as without a watermark. The watermark itself is
//! recorded in a checkpoint beside the position and given back on resume
//! ([`SourceReader::resume_watermark`]), so a resumed source never emits a
//! watermark below one it emitted before the checkpoint. End of input needs no
//! final watermark: `End` stops a channel holding time back, and an operator
//! whose inputs all ended tells its guest that time reached `i64::MAX`.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrowPrimitiveType, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};

use flumen_spec::connector::WatermarkSpec;

use super::{ConnectorError, PlannedSource, SourcePosition, SourceReader};

/// A checked watermark column of a planned source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkColumn {
    /// Index of the column in the source's schema.
    pub index: usize,
    pub delay_ms: i64,
    /// The column's unit; `None` for int64 (milliseconds).
    unit: Option<TimeUnit>,
}

/// Wraps `source` so that its readers track the watermark of `spec`'s column,
/// or fails with a configuration error naming `node`.
pub(super) fn wrap(
    node: &str,
    spec: &WatermarkSpec,
    source: Box<dyn PlannedSource>,
) -> Result<Box<dyn PlannedSource>, ConnectorError> {
    let column = plan(node, spec, &source.schema())?;
    Ok(Box::new(Watermarked { source, column }))
}

fn plan(node: &str, spec: &WatermarkSpec, schema: &SchemaRef) -> Result<WatermarkColumn, ConnectorError> {
    let config = |message: String| ConnectorError::Config { node: node.to_owned(), message };
    if spec.delay_ms < 0 {
        return Err(config(format!("`watermark.delay_ms` must be at least 0, not {}", spec.delay_ms)));
    }
    let index = schema.index_of(&spec.column).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        config(format!(
            "`watermark.column` `{}` is not a column of the source; it has [{}]",
            spec.column,
            names.join(", ")
        ))
    })?;
    let unit = match schema.field(index).data_type() {
        DataType::Int64 => None,
        DataType::Timestamp(unit, _) => Some(*unit),
        other => {
            return Err(config(format!(
                "`watermark.column` `{}` has type {other}; it must be a timestamp or an int64 of milliseconds",
                spec.column
            )));
        }
    };
    Ok(WatermarkColumn { index, delay_ms: spec.delay_ms, unit })
}

#[derive(Debug)]
struct Watermarked {
    source: Box<dyn PlannedSource>,
    column: WatermarkColumn,
}

impl PlannedSource for Watermarked {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
    }

    fn open(&self, subtask: u32, parallelism: u32) -> Result<Box<dyn SourceReader>, ConnectorError> {
        let reader = self.source.open(subtask, parallelism)?;
        Ok(Box::new(WatermarkedReader { reader, column: self.column, watermark: None }))
    }

    fn watermark_column(&self) -> Option<WatermarkColumn> {
        Some(self.column)
    }

    /// The event-time column is read here, whoever else reads it.
    fn prune(&mut self, needed: &[bool]) {
        let mut needed = needed.to_vec();
        if let Some(n) = needed.get_mut(self.column.index) {
            *n = true;
        }
        self.source.prune(&needed);
    }
}

struct WatermarkedReader {
    reader: Box<dyn SourceReader>,
    column: WatermarkColumn,
    /// The largest event time returned so far, less the delay.
    watermark: Option<i64>,
}

impl SourceReader for WatermarkedReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        let batch = self.reader.next_batch()?;
        if let Some(batch) = &batch
            && let Some(max) = max_ms(batch.column(self.column.index).as_ref(), self.column.unit)
        {
            let candidate = max.saturating_sub(self.column.delay_ms);
            if self.watermark.is_none_or(|w| candidate > w) {
                self.watermark = Some(candidate);
            }
        }
        Ok(batch)
    }

    fn position(&self) -> SourcePosition {
        self.reader.position()
    }

    /// Seeks the wrapped reader. The watermark starts over from the rows
    /// read after the seek, unless [`resume_watermark`](SourceReader::resume_watermark) gives it back.
    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        self.reader.seek(position)?;
        self.watermark = None;
        Ok(())
    }

    fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    fn resume_watermark(&mut self, watermark: i64) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }
}

/// The largest non-null value of `array` in milliseconds (`unit`: `None` is int64 milliseconds).
fn max_ms(array: &dyn Array, unit: Option<TimeUnit>) -> Option<i64> {
    fn max<T: ArrowPrimitiveType<Native = i64>>(array: &dyn Array) -> Option<i64> {
        array.as_primitive_opt::<T>()?.iter().flatten().max()
    }
    match unit {
        None => max::<Int64Type>(array),
        Some(TimeUnit::Millisecond) => max::<TimestampMillisecondType>(array),
        Some(TimeUnit::Second) => max::<TimestampSecondType>(array).map(|s| s.saturating_mul(1000)),
        Some(TimeUnit::Microsecond) => max::<TimestampMicrosecondType>(array).map(|us| us.div_euclid(1000)),
        Some(TimeUnit::Nanosecond) => max::<TimestampNanosecondType>(array).map(|ns| ns.div_euclid(1_000_000)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, TimestampMicrosecondArray, TimestampSecondArray};

    use crate::{SourceSpec, plan_source};

    use super::*;

    fn plan(text: &str) -> Result<Box<dyn PlannedSource>, ConnectorError> {
        let spec: SourceSpec = toml::from_str(text).unwrap_or_else(|e| panic!("bad test spec: {e}"));
        plan_source(&spec, std::path::Path::new("."), 1024, &crate::test_blobs())
    }

    const GEN: &str = r#"
id = "gen"
kind = "generator"
rows = 10
batch_rows = 4
columns = [
  { name = "n", gen = "sequence" },
  { name = "ts", gen = "timestamp", start_ms = 1000, step_ms = 10 },
  { name = "s", gen = "string", len = 2 },
]
"#;

    /// Every watermark a reader of `source` reports after each batch.
    fn watermarks(reader: &mut dyn SourceReader) -> Vec<Option<i64>> {
        let mut seen = Vec::new();
        while reader.next_batch().unwrap().is_some() {
            seen.push(reader.watermark());
        }
        seen
    }

    #[test]
    fn the_watermark_is_the_largest_time_read_less_the_delay() {
        let source = plan(&format!("{GEN}watermark = {{ column = \"ts\", delay_ms = 5 }}")).unwrap();
        assert_eq!(source.watermark_column().map(|c| (c.index, c.delay_ms)), Some((1, 5)));
        let mut reader = source.open(0, 1).unwrap();
        assert_eq!(reader.watermark(), None, "nothing read yet");
        // Rows 0..4, 4..8, 8..10 at 1000 + 10·row.
        assert_eq!(watermarks(reader.as_mut()), [Some(1025), Some(1065), Some(1085)]);
        let int = plan(&format!("{GEN}watermark = {{ column = \"n\" }}")).unwrap();
        assert_eq!(watermarks(int.open(1, 2).unwrap().as_mut()), [Some(8), Some(9)]);
    }

    #[test]
    fn positions_round_trip_and_a_resumed_watermark_never_goes_back() {
        let source = plan(&format!("{GEN}watermark = {{ column = \"ts\" }}")).unwrap();
        let plain = plan(GEN).unwrap();
        let mut reader = source.open(0, 1).unwrap();
        let mut unwrapped = plain.open(0, 1).unwrap();
        reader.next_batch().unwrap();
        unwrapped.next_batch().unwrap();
        assert_eq!(reader.position(), unwrapped.position(), "the wrapper does not change positions");
        let (position, watermark) = (reader.position(), reader.watermark());
        assert_eq!(watermark, Some(1030));

        let mut resumed = source.open(0, 1).unwrap();
        resumed.seek(&position).unwrap();
        assert_eq!(resumed.watermark(), None, "a seek alone starts the watermark over");
        resumed.resume_watermark(1030);
        assert_eq!(resumed.watermark(), Some(1030));
        assert_eq!(watermarks(resumed.as_mut()), [Some(1070), Some(1090)]);
        let mut ahead = source.open(0, 1).unwrap();
        ahead.resume_watermark(5000);
        assert_eq!(watermarks(ahead.as_mut()), [Some(5000); 3], "a smaller time does not lower it");
    }

    #[test]
    fn a_bad_watermark_column_is_a_config_error_naming_the_node() {
        for (table, needle) in [
            ("{ column = \"nope\" }", "`nope` is not a column of the source; it has [n, ts, s]"),
            ("{ column = \"s\" }", "`s` has type Utf8; it must be a timestamp or an int64"),
            ("{ column = \"ts\", delay_ms = -1 }", "`watermark.delay_ms` must be at least 0"),
        ] {
            let e = plan(&format!("{GEN}watermark = {table}")).unwrap_err().to_string();
            assert!(e.starts_with("gen: invalid configuration: ") && e.contains(needle), "{e}");
        }
        let spec: Result<SourceSpec, _> = toml::from_str(&format!("{GEN}watermark = {{ column = \"ts\", lag = 1 }}"));
        assert!(spec.unwrap_err().to_string().contains("unknown field `lag`"));
    }

    #[test]
    fn times_of_every_unit_become_milliseconds() {
        let secs = TimestampSecondArray::from(vec![Some(2), None, Some(1)]);
        assert_eq!(max_ms(&secs, Some(TimeUnit::Second)), Some(2000));
        let micros = TimestampMicrosecondArray::from(vec![-1500, -2500]);
        assert_eq!(max_ms(&micros, Some(TimeUnit::Microsecond)), Some(-2));
        let ints: Arc<dyn Array> = Arc::new(Int64Array::from(vec![None, None]));
        assert_eq!(max_ms(ints.as_ref(), None), None, "only nulls: no event time");
    }
}
