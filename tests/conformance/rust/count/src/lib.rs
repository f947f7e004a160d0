//! Conformance operator `count` (tests/conformance/README.md), the Rust
//! reference the other guest languages are compared against byte for byte:
//! appends `count`, the number of rows with this row's key seen so far (this
//! one included), kept in the host's value state `count`.
//!
//! The state layout is shared by every language: the key is the byte `0x04`
//! followed by the key's UTF-8 bytes (what `state::keys_of` makes of a utf8
//! column), the value the count as an 8-byte little-endian int64 (what the
//! `*_i64` helpers store). Each batch makes one `value-get-many` of its
//! distinct keys and one `value-set-many` of their new counts.

use std::collections::HashMap;
use std::sync::Arc;

use flumen_sdk::arrow_array::{ArrayRef, Int64Array};
use flumen_sdk::state::{self, ValueState};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

/// The name of the output column and of the value state holding the counts.
const COUNT: &str = "count";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "key".into()
}

struct Count {
    schema: SchemaRef,
    key: usize,
    counts: ValueState,
}

impl Operator for Count {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let key = input
            .index_of(&config.key)
            .map_err(|_| Error::config(format!("count: the input has no key column `{}`", config.key)))?;
        let data_type = input.field(key).data_type();
        if data_type != &DataType::Utf8 {
            return Err(Error::config(format!(
                "count: key column `{}` must be utf8, it is {}",
                config.key,
                type_name(data_type)
            )));
        }
        if input.index_of(COUNT).is_ok() {
            return Err(Error::config(format!("count: the input already has a column `{COUNT}`")));
        }
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new(COUNT, DataType::Int64, false)));
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Self { schema, key, counts: ValueState::new(COUNT) })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Every input column carried, then `count`.
    fn shape(&self) -> Shape {
        let carried = self.schema.fields().len() - 1;
        Shape::new().reads(0, [self.key]).carries((0..carried).map(Some).chain([None]))
    }

    /// `batch` holds only the key column.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = state::keys_of(batch.column(0).as_ref())?;
        let counts: ArrayRef = Arc::new(Int64Array::from(self.running_counts(&keys)?));
        out.emit(&RecordBatch::try_new(out.schema().clone(), vec![counts])?)
    }
}

impl Count {
    /// The running count of each row's key: the batch's distinct keys read
    /// in one call, counted in order in memory (a key may come back within
    /// the batch), each one's final count written in one more call.
    fn running_counts(&self, keys: &[Vec<u8>]) -> Result<Vec<i64>, Error> {
        let mut slot_of_key: HashMap<&[u8], usize> = HashMap::new();
        let mut distinct: Vec<&[u8]> = Vec::new();
        let slots: Vec<usize> = keys
            .iter()
            .map(|key| {
                *slot_of_key.entry(key.as_slice()).or_insert_with(|| {
                    distinct.push(key);
                    distinct.len() - 1
                })
            })
            .collect();
        let mut running: Vec<i64> = self.counts.get_many_i64(&distinct)?.into_iter().map(|c| c.unwrap_or(0)).collect();
        let counts = slots
            .into_iter()
            .map(|slot| {
                running[slot] += 1;
                running[slot]
            })
            .collect();
        let updates: Vec<(&[u8], i64)> = distinct.into_iter().zip(running).collect();
        self.counts.set_many_i64(&updates)?;
        Ok(counts)
    }
}

/// A type as the job spec writes it (`int64`, `utf8`, …).
fn type_name(data_type: &DataType) -> String {
    data_type.to_string().to_lowercase()
}

export_operator!(Count);
