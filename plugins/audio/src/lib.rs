//! Placeholder while the plugin is written: emits every input batch unchanged.
use flumen_sdk::{Context, Emitter, Error, Operator, RecordBatch, SchemaRef, export_operator};

struct Op {
    schema: SchemaRef,
}

impl Operator for Op {
    type Config = serde::de::IgnoredAny;
    fn open(ctx: &Context, _config: Self::Config) -> Result<Self, Error> {
        Ok(Self { schema: ctx.input(0)?.clone() })
    }
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        out.emit(&batch)
    }
}

export_operator!(Op);
