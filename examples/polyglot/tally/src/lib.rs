//! Polyglot example, step 4 (Rust): `product_reviews`, how many reviews of
//! this row's product were seen so far (this one included), kept in the
//! host's keyed state so the count survives restarts.

use std::sync::Arc;

use flumen_sdk::arrow_array::{ArrayRef, Int64Array};
use flumen_sdk::state::{self, ValueState};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "product".into()
}

struct Tally {
    schema: SchemaRef,
    key: usize,
    counts: ValueState,
}

impl Operator for Tally {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let key =
            input.index_of(&config.key).map_err(|_| Error::config(format!("tally: no column `{}`", config.key)))?;
        state::check_key_field(input.field(key))?;
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new("product_reviews", DataType::Int64, false)));
        Ok(Self { schema: Arc::new(Schema::new(fields)), key, counts: ValueState::new("reviews") })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Reads the key column; carries every input column and computes one.
    fn shape(&self) -> Shape {
        let carried = self.schema.fields().len() - 1;
        Shape::new().reads(0, [self.key]).carries((0..carried).map(Some).chain([None]))
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let keys = state::keys_of(batch.column(0).as_ref())?;
        // One read of the batch's distinct keys, one write of their new counts.
        let counts = self.counts.increment_many(&keys)?;
        let column: ArrayRef = Arc::new(Int64Array::from(counts));
        out.emit(&RecordBatch::try_new(out.schema().clone(), vec![column])?)
    }
}

export_operator!(Tally);
