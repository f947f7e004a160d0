//! Conformance operator `infer` (tests/conformance/README.md), the Rust
//! reference the other guest languages are compared against byte for byte:
//! runs the job's model (the test MLP, 4 float32 features in, 3 scores out)
//! once per batch through the host's `inference` capability and appends
//! `best`, the index of each row's largest score (the first on ties), and
//! `score`, that score.
//!
//! Row `i` of the model's input is `[id, qty or 0, amount or 0, 1]`, each
//! converted to float32 by rounding to nearest.

use std::sync::Arc;

use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::types::{Float64Type, Int64Type};
use flumen_sdk::arrow_array::{ArrayRef, Float32Array, Int64Array};
use flumen_sdk::inference::{Model, Tensor, TensorType};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_model")]
    model: String,
}

fn default_model() -> String {
    "mlp".into()
}

/// The columns the operator reads, with the type each must have.
const READS: [(&str, DataType); 3] = [("id", DataType::Int64), ("qty", DataType::Int64), ("amount", DataType::Float64)];

/// Values per row of the model's input (`id`, `qty`, `amount`, 1) and output.
const FEATURES: usize = 4;
const SCORES: usize = 3;

/// The computed columns, appended in this order.
const BEST: &str = "best";
const SCORE: &str = "score";

struct Infer {
    schema: SchemaRef,
    /// Input indices of `id`, `qty` and `amount`.
    reads: [usize; 3],
    model: Model,
}

impl Operator for Infer {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let mut reads = [0; 3];
        for (slot, (name, data_type)) in reads.iter_mut().zip(&READS) {
            *slot = ctx.typed_column(0, name, data_type, "infer")?;
        }
        for name in [BEST, SCORE] {
            if input.index_of(name).is_ok() {
                return Err(Error::config(format!("infer: the input already has a column `{name}`")));
            }
        }
        let model = Model::load(&config.model)?;
        check_model(&model, &config.model)?;
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new(BEST, DataType::Int64, false)));
        fields.push(Arc::new(Field::new(SCORE, DataType::Float32, false)));
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Self { schema, reads, model })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Every input column carried, then `best` and `score`.
    fn shape(&self) -> Shape {
        let carried = self.schema.fields().len() - 2;
        Shape::new().reads(0, self.reads).carries((0..carried).map(Some).chain([None, None]))
    }

    /// `batch` holds `id`, `qty` and `amount`, in input order.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let outputs = self.model.infer(&[features(&batch)?])?;
        let scores = outputs.first().ok_or_else(|| Error::internal("infer: the model returned no output"))?.to_f32()?;
        if scores.len() != rows * SCORES {
            return Err(Error::internal(format!(
                "infer: the model returned {} scores for {rows} rows of {SCORES}",
                scores.len()
            )));
        }
        let (best, score): (Vec<i64>, Vec<f32>) = scores.chunks_exact(SCORES).map(best_of).unzip();
        let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(best)), Arc::new(Float32Array::from(score))];
        out.emit(&RecordBatch::try_new(out.schema().clone(), columns)?)
    }
}

/// Checks that `model` takes one float32 `[-1, 4]` tensor and gives a float32 `[-1, 3]` one.
fn check_model(model: &Model, name: &str) -> Result<(), Error> {
    let info = model.info();
    let fits = |shape: &[i64], width: usize| shape.len() == 2 && shape[1] == width as i64;
    let input_fits =
        matches!(info.inputs.as_slice(), [x] if x.dtype == TensorType::Float32 && fits(&x.shape, FEATURES));
    let output_fits =
        matches!(info.outputs.first(), Some(y) if y.dtype == TensorType::Float32 && fits(&y.shape, SCORES));
    if !input_fits || !output_fits {
        return Err(Error::config(format!(
            "infer: model `{name}` must take one float32 [-1, {FEATURES}] input \
             and give a float32 [-1, {SCORES}] output"
        )));
    }
    Ok(())
}

/// The model's input: row `i` is `[id, qty or 0, amount or 0, 1]` as float32.
fn features(batch: &RecordBatch) -> Result<Tensor, Error> {
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| Error::internal(format!("infer: no `{name}` in the batch")))
    };
    let ids = column("id")?.as_primitive_opt::<Int64Type>().ok_or_else(|| Error::input("infer: `id` must be int64"))?;
    let qty =
        column("qty")?.as_primitive_opt::<Int64Type>().ok_or_else(|| Error::input("infer: `qty` must be int64"))?;
    let amounts = column("amount")?
        .as_primitive_opt::<Float64Type>()
        .ok_or_else(|| Error::input("infer: `amount` must be float64"))?;
    let mut values = Vec::with_capacity(batch.num_rows() * FEATURES);
    for ((id, qty), amount) in ids.iter().zip(qty.iter()).zip(amounts.iter()) {
        let id = id.ok_or_else(|| Error::input("infer: a row has a null `id`"))?;
        // `as` rounds an integer or a float64 to the nearest float32.
        values.extend([id as f32, qty.unwrap_or(0) as f32, amount.unwrap_or(0.0) as f32, 1.0]);
    }
    Tensor::from_f32(vec![batch.num_rows() as u64, FEATURES as u64], &values)
}

/// The index of the largest of a row's scores (the first on ties) and that score.
fn best_of(row: &[f32]) -> (i64, f32) {
    let mut best = 0;
    for (i, score) in row.iter().enumerate().skip(1) {
        if *score > row[best] {
            best = i;
        }
    }
    (best as i64, row[best])
}

export_operator!(Infer);
