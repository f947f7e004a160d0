//! Conformance operator `window` (tests/conformance/README.md), the Rust
//! reference the other guest languages are compared against byte for byte:
//! an event-time tumbling window per `key` over int64 millisecond `ts`,
//! counting rows and summing `amount`.
//!
//! The open windows live in this instance's memory, ordered by
//! `window_start` then by the key's UTF-8 bytes, and survive restarts through
//! the snapshot export (`save`/`restore`); no host state is used. `process`
//! emits nothing; `on_watermark(w)` emits, as one batch, every window that
//! ends at or before `w`. A row whose window already ended at the last
//! watermark is late and dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::types::{Float64Type, Int64Type};
use flumen_sdk::arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_size_ms")]
    size_ms: i64,
}

fn default_size_ms() -> i64 {
    1000
}

/// The columns the operator reads, with the type each must have.
const READS: [(&str, DataType); 3] = [("key", DataType::Utf8), ("ts", DataType::Int64), ("amount", DataType::Float64)];

/// The first byte of a snapshot; a snapshot of another version is refused.
const SNAPSHOT_VERSION: u8 = 1;

/// An open window: `(window_start, key)`, whose order is the output order.
type WindowId = (i64, String);

#[derive(Debug, Clone, Copy, PartialEq)]
struct Tally {
    count: i64,
    sum: f64,
}

struct Window {
    schema: SchemaRef,
    /// Input indices of `key`, `ts` and `amount`.
    reads: [usize; 3],
    size_ms: i64,
    open: BTreeMap<WindowId, Tally>,
    /// The last watermark heard, if any.
    watermark: Option<i64>,
}

impl Operator for Window {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if config.size_ms <= 0 {
            return Err(Error::config(format!("window: `size_ms` must be greater than 0, it is {}", config.size_ms)));
        }
        let mut reads = [0; 3];
        for (slot, (name, data_type)) in reads.iter_mut().zip(&READS) {
            *slot = ctx.typed_column(0, name, data_type, "window")?;
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("window_start", DataType::Int64, false),
            Field::new("count", DataType::Int64, false),
            Field::new("sum", DataType::Float64, false),
        ]));
        Ok(Self { schema, reads, size_ms: config.size_ms, open: BTreeMap::new(), watermark: None })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Reads `key`, `ts` and `amount`; carries nothing (it emits only from
    /// `on_watermark`, when no input batch is at hand).
    fn shape(&self) -> Shape {
        Shape::new().reads(0, self.reads)
    }

    /// `batch` holds `key`, `ts` and `amount`, in input order.
    fn process(&mut self, _port: u32, batch: RecordBatch, _out: &mut Emitter) -> Result<(), Error> {
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| Error::internal(format!("window: no `{name}` in the batch")))
        };
        let keys = column("key")?.as_string_opt::<i32>().ok_or_else(|| Error::input("window: `key` must be utf8"))?;
        let times =
            column("ts")?.as_primitive_opt::<Int64Type>().ok_or_else(|| Error::input("window: `ts` must be int64"))?;
        let amounts = column("amount")?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| Error::input("window: `amount` must be float64"))?;
        for ((key, ts), amount) in keys.iter().zip(times.iter()).zip(amounts.iter()) {
            let (Some(key), Some(ts)) = (key, ts) else {
                return Err(Error::input("window: a row has a null `key` or `ts`"));
            };
            let start = self.start_of(ts)?;
            if self.watermark.is_some_and(|w| end_at_or_before(start, self.size_ms, w)) {
                continue;
            }
            let tally = self.open.entry((start, key.to_owned())).or_insert(Tally { count: 0, sum: 0.0 });
            tally.count += 1;
            if let Some(amount) = amount {
                tally.sum += amount;
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter) -> Result<(), Error> {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        // Windows are ordered by start and all have the same size, so the
        // ones that end by the watermark are a prefix of the map.
        let still_open = match self.open.keys().find(|(start, _)| !end_at_or_before(*start, self.size_ms, watermark)) {
            Some(first_open) => {
                let first_open = first_open.clone();
                self.open.split_off(&first_open)
            }
            None => BTreeMap::new(),
        };
        let fired = std::mem::replace(&mut self.open, still_open);
        if fired.is_empty() {
            return Ok(());
        }
        let keys: StringArray = fired.keys().map(|(_, key)| Some(key.as_str())).collect();
        let starts: Int64Array = fired.keys().map(|(start, _)| *start).collect();
        let counts: Int64Array = fired.values().map(|t| t.count).collect();
        let sums: Float64Array = fired.values().map(|t| t.sum).collect();
        let columns: Vec<ArrayRef> = vec![Arc::new(keys), Arc::new(starts), Arc::new(counts), Arc::new(sums)];
        out.emit(&RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// `version (1) | has watermark (1) | watermark (i64 LE) | windows (u32 LE)`,
    /// then per window in order `start (i64 LE) | key length (u32 LE) | key |
    /// count (i64 LE) | sum (f64 LE)`.
    fn save(&mut self) -> Result<Vec<u8>, Error> {
        let mut data = vec![SNAPSHOT_VERSION, u8::from(self.watermark.is_some())];
        data.extend_from_slice(&self.watermark.unwrap_or(0).to_le_bytes());
        data.extend_from_slice(&length(self.open.len())?.to_le_bytes());
        for ((start, key), tally) in &self.open {
            data.extend_from_slice(&start.to_le_bytes());
            data.extend_from_slice(&length(key.len())?.to_le_bytes());
            data.extend_from_slice(key.as_bytes());
            data.extend_from_slice(&tally.count.to_le_bytes());
            data.extend_from_slice(&tally.sum.to_le_bytes());
        }
        Ok(data)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), Error> {
        let (open, watermark) = parse_snapshot(data)?;
        self.open = open;
        self.watermark = watermark;
        Ok(())
    }
}

impl Window {
    /// The start of the window holding `ts`: `floor(ts / size_ms) * size_ms`.
    fn start_of(&self, ts: i64) -> Result<i64, Error> {
        ts.div_euclid(self.size_ms)
            .checked_mul(self.size_ms)
            .ok_or_else(|| Error::input(format!("window: the window of ts {ts} starts before i64::MIN")))
    }
}

/// Whether the window starting at `start` ends (`start + size_ms`) at or
/// before `watermark`; computed without overflow.
fn end_at_or_before(start: i64, size_ms: i64, watermark: i64) -> bool {
    i128::from(start) + i128::from(size_ms) <= i128::from(watermark)
}

fn length(n: usize) -> Result<u32, Error> {
    u32::try_from(n).map_err(|_| Error::internal("window: the snapshot has a length over u32::MAX"))
}

/// Reads what `save` wrote; the bytes come back from the host, so nothing is trusted.
fn parse_snapshot(data: &[u8]) -> Result<(BTreeMap<WindowId, Tally>, Option<i64>), Error> {
    let mut bytes = Cursor(data);
    let version = bytes.u8()?;
    if version != SNAPSHOT_VERSION {
        return Err(Error::internal(format!("window: snapshot version {version} is not {SNAPSHOT_VERSION}")));
    }
    let has_watermark = match bytes.u8()? {
        0 => false,
        1 => true,
        _ => return Err(malformed()),
    };
    let watermark = i64::from_le_bytes(bytes.array()?);
    let windows = u32::from_le_bytes(bytes.array()?);
    let mut open = BTreeMap::new();
    for _ in 0..windows {
        let start = i64::from_le_bytes(bytes.array()?);
        let key_len = u32::from_le_bytes(bytes.array()?) as usize;
        let key = String::from_utf8(bytes.take(key_len)?.to_vec()).map_err(|_| malformed())?;
        let count = i64::from_le_bytes(bytes.array()?);
        let sum = f64::from_le_bytes(bytes.array()?);
        open.insert((start, key), Tally { count, sum });
    }
    if !bytes.0.is_empty() {
        return Err(malformed());
    }
    Ok((open, has_watermark.then_some(watermark)))
}

fn malformed() -> Error {
    Error::internal("window: the snapshot is malformed")
}

/// The unread rest of a snapshot.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(malformed)?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take(N)?.try_into().map_err(|_| malformed())
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
}

export_operator!(Window);
