//! W1 per language: reads no column, carries every column and emits every
//! row (the fixed cost of a call), in Rust.

use flumen_sdk::arrow_array::RecordBatchOptions;
use flumen_sdk::{Context, Emitter, Error, Operator, RecordBatch, SchemaRef, Shape, export_operator};

struct Passthrough {
    schema: SchemaRef,
}

impl Operator for Passthrough {
    type Config = serde::de::IgnoredAny;

    fn open(ctx: &Context, _config: Self::Config) -> Result<Self, Error> {
        Ok(Self { schema: ctx.input(0)?.clone() })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        Shape::new().reads(0, []).carries((0..self.schema.fields().len()).map(Some))
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.emit(&RecordBatch::try_new_with_options(out.schema().clone(), Vec::new(), &options)?)
    }
}

export_operator!(Passthrough);
