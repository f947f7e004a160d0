//! Test guest: counts rows per key and appends the running count to every row,
//! for the state, snapshot, backpressure and failover scenarios.
//!
//! Output: every input column, then `count: int64` (non-null), the number of
//! rows with this row's key seen so far, this one included. With an input of
//! `(key, seq)` where `seq` runs 0, 1, 2, … per key, an exactly-once run gives
//! `count == seq + 1` on every row.
//!
//! Config (all optional):
//! - `key`: the key column (default `"key"`): an integer, boolean, string or
//!   binary column; nulls are one key of their own.
//! - `mode`: `"state"` (default) keeps the counts in the host's keyed state
//!   (one `get_many` and one `set_many` per batch; needs the `state`
//!   capability); `"memory"` keeps them in this instance's memory, saved and
//!   restored through the `snapshot` export. Either way the component imports
//!   `state` (it is one component), so its job must grant it.
//! - `sleep_ms`: sleeps this long before each batch (a slow operator, for
//!   backpressure).
//! - `trap_after_rows`: panics on the batch that takes the rows this
//!   *instance* has received past this number, before counting or emitting
//!   any of it. The tally lives in the instance, not in state: every fresh
//!   instance (after a retry or a restore) may take this many rows again.
//! - `big_reads = { values, value_kib, keys }`: on this instance's first
//!   batch, before counting, sets `values` values of `value_kib` KiB each in
//!   the state `big`, then reads `keys` keys cycling over them with one
//!   `value-get-many` and checks every length; the host must charge what it
//!   copies to `limits.host_memory_mb` (a read over it fails the batch).
//! - `tag`: appends a column `tag: utf8` (non-null) holding this string on
//!   every row: which version of the operator processed a row (live upgrades).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flumen_sdk::arrow_array::{ArrayRef, Int64Array, StringArray};
use flumen_sdk::state::{self, ValueState};
use flumen_sdk::{Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, export_operator};
use serde::Deserialize;

/// The name of the output column and of the host state holding the counts.
const COUNT: &str = "count";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_key")]
    key: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    trap_after_rows: Option<u64>,
    #[serde(default)]
    big_reads: Option<BigReads>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct BigReads {
    values: u32,
    value_kib: u32,
    keys: u32,
}

fn default_key() -> String {
    "key".into()
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    State,
    Memory,
}

/// Where the counts live.
enum Counts {
    Host(ValueState),
    Memory(HashMap<Vec<u8>, i64>),
}

struct KeyedCounter {
    schema: SchemaRef,
    key: usize,
    counts: Counts,
    sleep: Duration,
    trap_after_rows: Option<u64>,
    /// Rows this instance has received, across all its batches.
    rows_received: u64,
    /// `big_reads` still to do (on the first batch).
    big_reads: Option<BigReads>,
    tag: Option<String>,
}

impl Operator for KeyedCounter {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let key = input
            .index_of(&config.key)
            .map_err(|_| Error::config(format!("keyed-counter: the input has no key column `{}`", config.key)))?;
        state::check_key_field(input.field(key))?;
        if input.index_of(COUNT).is_ok() {
            return Err(Error::config(format!("keyed-counter: the input already has a column `{COUNT}`")));
        }
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(COUNT, DataType::Int64, false)));
        if config.tag.is_some() {
            fields.push(Arc::new(Field::new("tag", DataType::Utf8, false)));
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        let counts = match config.mode {
            Mode::State => Counts::Host(ValueState::new(COUNT)),
            Mode::Memory => Counts::Memory(HashMap::new()),
        };
        Ok(Self {
            schema,
            key,
            counts,
            sleep: Duration::from_millis(config.sleep_ms),
            trap_after_rows: config.trap_after_rows,
            rows_received: 0,
            big_reads: config.big_reads,
            tag: config.tag,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        self.rows_received += batch.num_rows() as u64;
        if let Some(limit) = self.trap_after_rows
            && self.rows_received > limit
        {
            panic!(
                "keyed-counter: this instance has received {} rows, over trap_after_rows = {limit}",
                self.rows_received
            );
        }
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        if let Some(big) = self.big_reads.take() {
            big_reads(big)?;
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = state::keys_of(batch.column(self.key).as_ref())?;
        let counts = match &mut self.counts {
            Counts::Host(state) => state.increment_many(&keys)?,
            Counts::Memory(map) => keys
                .into_iter()
                .map(|key| {
                    let count = map.entry(key).or_insert(0);
                    *count += 1;
                    *count
                })
                .collect(),
        };
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let rows = counts.len();
        columns.push(Arc::new(Int64Array::from(counts)));
        if let Some(tag) = &self.tag {
            columns.push(Arc::new(StringArray::from(vec![tag.as_str(); rows])));
        }
        out.emit(&RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// In memory mode, every `(key, count)` sorted by key, each as
    /// `key length (u32 LE) | key | count (i64 LE)`; nothing in state mode.
    fn save(&mut self) -> Result<Vec<u8>, Error> {
        let Counts::Memory(map) = &self.counts else {
            return Ok(Vec::new());
        };
        let mut entries: Vec<(&Vec<u8>, &i64)> = map.iter().collect();
        entries.sort();
        let mut data = Vec::new();
        for (key, count) in entries {
            let len = u32::try_from(key.len()).map_err(|_| Error::internal("keyed-counter: a key over 4 GiB"))?;
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(key);
            data.extend_from_slice(&count.to_le_bytes());
        }
        Ok(data)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), Error> {
        match &mut self.counts {
            Counts::Memory(map) => {
                *map = parse_snapshot(data)?;
                Ok(())
            }
            Counts::Host(_) if data.is_empty() => Ok(()),
            Counts::Host(_) => Err(Error::internal(format!(
                "keyed-counter: state mode saves no snapshot, but was given {} bytes (from a memory-mode run?)",
                data.len()
            ))),
        }
    }
}

/// Sets a few large values, then reads many keys over them at once.
fn big_reads(big: BigReads) -> Result<(), Error> {
    let state = ValueState::new("big");
    let len = big.value_kib as usize * 1024;
    let value = vec![0x5a_u8; len];
    let names: Vec<Vec<u8>> = (0..big.values.max(1)).map(|i| format!("big-{i}").into_bytes()).collect();
    for name in &names {
        state.set(name, &value)?;
    }
    drop(value);
    let keys: Vec<&[u8]> = (0..big.keys as usize).map(|i| names[i % names.len()].as_slice()).collect();
    let got = state.get_many(&keys)?;
    if got.len() != keys.len() || got.iter().any(|v| v.as_ref().map(Vec::len) != Some(len)) {
        return Err(Error::internal("keyed-counter: value-get-many returned the wrong values"));
    }
    Ok(())
}

/// Parses what `save` wrote; the bytes come from the host, so nothing is trusted.
fn parse_snapshot(mut data: &[u8]) -> Result<HashMap<Vec<u8>, i64>, Error> {
    let malformed = || Error::internal("keyed-counter: the snapshot is malformed");
    let mut map = HashMap::new();
    while !data.is_empty() {
        let (len, rest) = data.split_first_chunk::<4>().ok_or_else(malformed)?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| malformed())?;
        let (key, rest) = rest.split_at_checked(len).ok_or_else(malformed)?;
        let (count, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
        map.insert(key.to_vec(), i64::from_le_bytes(*count));
        data = rest;
    }
    Ok(map)
}

export_operator!(KeyedCounter);
