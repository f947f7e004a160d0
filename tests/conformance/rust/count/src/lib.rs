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
                flumen_sdk::type_name(data_type)
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
        let counts: ArrayRef = Arc::new(Int64Array::from(self.counts.increment_many(&keys)?));
        out.emit(&RecordBatch::try_new(out.schema().clone(), vec![counts])?)
    }
}

export_operator!(Count);
