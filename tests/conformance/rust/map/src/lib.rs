//! Conformance operator `map` (tests/conformance/README.md), the Rust
//! reference the other guest languages are compared against byte for byte:
//! appends `out = amount * qty` (float64, null if either is null) to every row.
//!
//! With `fail_on_id` set, a batch holding that `id` panics before emitting
//! anything: the suite checks that every language's natural failure (here a
//! trap) reaches the operator's failure policy the same way.

use std::sync::Arc;

use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::types::{Float64Type, Int64Type};
use flumen_sdk::arrow_array::{Float64Array, Int64Array};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_out")]
    out: String,
    #[serde(default)]
    fail_on_id: Option<i64>,
}

fn default_out() -> String {
    "total".into()
}

/// The columns the operator reads, with the type each must have.
const READS: [(&str, DataType); 3] = [("id", DataType::Int64), ("qty", DataType::Int64), ("amount", DataType::Float64)];

struct Map {
    schema: SchemaRef,
    /// Input indices of `id`, `qty` and `amount`.
    reads: [usize; 3],
    fail_on_id: Option<i64>,
}

impl Operator for Map {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let mut reads = [0; 3];
        for (slot, (name, data_type)) in reads.iter_mut().zip(&READS) {
            *slot = ctx.typed_column(0, name, data_type, "map")?;
        }
        if input.index_of(&config.out).is_ok() {
            return Err(Error::config(format!("map: `out`: the input already has a column `{}`", config.out)));
        }
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new(&config.out, DataType::Float64, true)));
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Self { schema, reads, fail_on_id: config.fail_on_id })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Every input column carried, then the computed `out`.
    fn shape(&self) -> Shape {
        let carried = self.schema.fields().len() - 1;
        Shape::new().reads(0, self.reads).carries((0..carried).map(Some).chain([None]))
    }

    /// `batch` holds `id`, `qty` and `amount`, in input order.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let ids = int64(&batch, "id")?;
        if let Some(id) = self.fail_on_id
            && ids.iter().any(|v| v == Some(id))
        {
            panic!("map: failing on id {id}");
        }
        let qty = int64(&batch, "qty")?;
        let amount = batch
            .column_by_name("amount")
            .and_then(|c| c.as_primitive_opt::<Float64Type>())
            .ok_or_else(|| Error::input("map: `amount` must be float64"))?;
        let total: Float64Array = qty.iter().zip(amount.iter()).map(|(q, a)| Some(a? * q? as f64)).collect();
        let computed = RecordBatch::try_new(out.schema().clone(), vec![Arc::new(total)])?;
        out.emit(&computed)
    }
}

fn int64<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array, Error> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| Error::input(format!("map: `{name}` must be int64")))
}

export_operator!(Map);
