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
        let input = ctx.input(0)?;
        let column = input
            .index_of(&config.column)
            .map_err(|_| Error::config(format!("filter: the input has no column `{}`", config.column)))?;
        let data_type = input.field(column).data_type();
        if data_type != &DataType::Int64 {
            return Err(Error::config(format!(
                "filter: column `{}` must be int64, it is {}",
                config.column,
                type_name(data_type)
            )));
        }
        Ok(Self { schema: input.clone(), column, min: config.min })
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

/// A type as the job spec writes it (`int64`, `utf8`, …).
fn type_name(data_type: &DataType) -> String {
    data_type.to_string().to_lowercase()
}

export_operator!(Filter);
