//! Test guest: keyed event-time windows (`flumen_sdk::window`) over host
//! state, emitting one row per window when the watermark passes its end.
//!
//! Output: `key: int64` (nullable: null keys are a key of their own),
//! `window_start`, `window_end` (timestamp[ms] with the time column's zone
//! when the time column is a timestamp, int64 milliseconds when it is an
//! int64), `value: int64`. Each `on-watermark` emits the windows it fired,
//! ordered by end, key and start.
//!
//! Config:
//! - `key`: an integer column; `time`: a timestamp or int64 (milliseconds) column.
//! - `kind`: `"tumbling"` (needs `size_ms`), `"sliding"` (`size_ms`,
//!   `slide_ms`) or `"session"` (`gap_ms`).
//! - `agg`: `"count"` (default), `"sum"`, `"min"` or `"max"`; all but count
//!   need `value`, an int64 column.
//!
//! Rows with a null time, or (sum, min, max) a null value, are skipped; late
//! rows are dropped by the SDK. `finish` logs how many of each there were.
//! Needs the `state` capability.

use std::sync::Arc;

use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::types::Int64Type;
use flumen_sdk::arrow_array::{ArrayRef, Int64Array, TimestampMillisecondArray};
use flumen_sdk::state::{self, KeyValue};
use flumen_sdk::window::{self, Assigner, Fired, WindowAgg, WindowState};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, arrow_schema::TimeUnit,
    export_operator,
};
use serde::Deserialize;

/// Rows per emitted batch.
const EMIT_ROWS: usize = 8192;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    key: String,
    time: String,
    kind: Kind,
    size_ms: Option<i64>,
    slide_ms: Option<i64>,
    gap_ms: Option<i64>,
    #[serde(default)]
    agg: Agg,
    value: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Tumbling,
    Sliding,
    Session,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Agg {
    #[default]
    Count,
    Sum,
    Min,
    Max,
}

struct WindowAggOp {
    schema: SchemaRef,
    key: usize,
    time: usize,
    value: Option<usize>,
    windows: WindowState,
    /// Rows skipped by this instance for a null time or value.
    skipped: u64,
}

impl Operator for WindowAggOp {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let column = |name: &str, what: &str| {
            input
                .index_of(name)
                .map_err(|_| Error::config(format!("window-agg: the input has no {what} column `{name}`")))
        };
        let key = column(&config.key, "key")?;
        if !input.field(key).data_type().is_integer() {
            return Err(Error::config(format!("window-agg: the key column `{}` must be an integer", config.key)));
        }
        let time = column(&config.time, "time")?;
        window::check_time_field(input.field(time))?;
        let needs = |field: &str, v: Option<i64>| {
            v.ok_or_else(|| Error::config(format!("window-agg: this kind of window needs `{field}`")))
        };
        let assigner = match config.kind {
            Kind::Tumbling => Assigner::Tumbling { size_ms: needs("size_ms", config.size_ms)? },
            Kind::Sliding => Assigner::Sliding {
                size_ms: needs("size_ms", config.size_ms)?,
                slide_ms: needs("slide_ms", config.slide_ms)?,
            },
            Kind::Session => Assigner::Session { gap_ms: needs("gap_ms", config.gap_ms)? },
        };
        let agg = match config.agg {
            Agg::Count => WindowAgg::Count,
            Agg::Sum => WindowAgg::Sum,
            Agg::Min => WindowAgg::Min,
            Agg::Max => WindowAgg::Max,
        };
        let value = match (&config.value, config.agg) {
            (Some(name), _) => {
                let i = column(name, "value")?;
                if input.field(i).data_type() != &DataType::Int64 {
                    return Err(Error::config(format!("window-agg: the value column `{name}` must be int64")));
                }
                Some(i)
            }
            (None, Agg::Count) => None,
            (None, _) => return Err(Error::config("window-agg: sum, min and max need a `value` column")),
        };
        let bound_type = match input.field(time).data_type() {
            DataType::Timestamp(_, zone) => DataType::Timestamp(TimeUnit::Millisecond, zone.clone()),
            _ => DataType::Int64,
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, true),
            Field::new("window_start", bound_type.clone(), false),
            Field::new("window_end", bound_type, false),
            Field::new("value", DataType::Int64, false),
        ]));
        Ok(Self { schema, key, time, value, windows: WindowState::new("windows", assigner, agg)?, skipped: 0 })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, _out: &mut Emitter) -> Result<(), Error> {
        let keys = state::keys_of(batch.column(self.key).as_ref())?;
        let times = window::times_ms(batch.column(self.time).as_ref())?;
        let values: Option<Vec<Option<i64>>> = match self.value {
            Some(i) => Some(
                batch
                    .column(i)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| Error::input("window-agg: the value column is not int64"))?
                    .iter()
                    .collect(),
            ),
            None => None,
        };
        let mut rows = Vec::with_capacity(keys.len());
        for (row, (key, time)) in keys.iter().zip(&times).enumerate() {
            let value = match &values {
                None => Some(1),
                Some(values) => values.get(row).copied().flatten(),
            };
            match (time, value) {
                (Some(time), Some(value)) => rows.push((key, *time, value)),
                _ => self.skipped += 1,
            }
        }
        self.windows.add(rows)?;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter) -> Result<(), Error> {
        let fired = self.windows.fire(watermark)?;
        for chunk in fired.chunks(EMIT_ROWS) {
            out.emit(&self.batch(chunk)?)?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter) -> Result<(), Error> {
        let late = self.windows.late_rows()?;
        flumen_sdk::info!("window-agg: {late} late rows dropped, {} rows without a time or value", self.skipped);
        Ok(())
    }
}

impl WindowAggOp {
    fn batch(&self, fired: &[Fired]) -> Result<RecordBatch, Error> {
        let keys = fired
            .iter()
            .map(|f| match state::decode_key(&f.key)? {
                KeyValue::Int(v) => Ok(Some(v)),
                KeyValue::Null => Ok(None),
                other => Err(Error::internal(format!("window-agg: a key of {other:?} does not fit int64"))),
            })
            .collect::<Result<Int64Array, Error>>()?;
        let starts = fired.iter().map(|f| f.start);
        let ends = fired.iter().map(|f| f.end);
        let (starts, ends): (ArrayRef, ArrayRef) = match self.schema.field(1).data_type() {
            DataType::Timestamp(_, zone) => (
                Arc::new(TimestampMillisecondArray::from_iter_values(starts).with_timezone_opt(zone.clone())),
                Arc::new(TimestampMillisecondArray::from_iter_values(ends).with_timezone_opt(zone.clone())),
            ),
            _ => (Arc::new(Int64Array::from_iter_values(starts)), Arc::new(Int64Array::from_iter_values(ends))),
        };
        let values = Int64Array::from_iter_values(fired.iter().map(|f| f.value));
        Ok(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(keys), starts, ends, Arc::new(values)])?)
    }
}

export_operator!(WindowAggOp);
