//! Conformance operator `filter` (tests/conformance/README.md), the Rust
//! reference the other guest languages are compared against byte for byte:
//! keeps the rows whose int64 `column` is non-null and at least `min`.
//!
//! It reads only `column` and carries every input column, so the host sends
//! one column in and gets a selection bitmap back.

use flumen_sdk::arrow_array::BooleanArray;
use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::types::Int64Type;
use flumen_sdk::{Context, DataType, Emitter, Error, Operator, RecordBatch, SchemaRef, Shape, export_operator};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    column: String,
    min: i64,
}

struct Filter {
    schema: SchemaRef,
    column: usize,
    min: i64,
}

impl Operator for Filter {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let column = ctx.typed_column(0, &config.column, &DataType::Int64, "filter")?;
        Ok(Self { schema: ctx.input(0)?.clone(), column, min: config.min })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        Shape::new().reads(0, [self.column]).carries((0..self.schema.fields().len()).map(Some))
    }

    /// `batch` holds only `column`.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let values = batch
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| Error::input("filter: the column must be int64"))?;
        let keep: BooleanArray = values.iter().map(|v| Some(v.is_some_and(|v| v >= self.min))).collect();
        out.keep(&keep)
    }
}

export_operator!(Filter);
