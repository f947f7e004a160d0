//! The `predict` operator: runs a model of the job's repository over numeric
//! columns and appends its output as a fixed-size list of float32 per row.
//!
//! It reads only its feature columns (or one `FixedSizeList<Float32>` tensor
//! column), packs them into one `[rows, features]` float32 tensor, makes one
//! `inference` call per batch (the host batches calls from every instance),
//! and carries the input columns through. The output field's metadata names
//! the model and its digest, so every result says what computed it.

use std::sync::Arc;

use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use flumen_sdk::arrow_array::{Array, ArrayRef, RecordBatchOptions};
use flumen_sdk::inference::{Model, Tensor, TensorType};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

/// `config = { model = "mlp", features = ["f0", "f1"], output = "scores" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The model's folder in the repository.
    model: String,
    /// Numeric columns packed, in order, into each row's feature vector; or
    /// one `FixedSizeList<Float32>` column used as is.
    features: Vec<String>,
    /// The appended column (default `prediction`).
    #[serde(default = "default_output")]
    output: String,
    /// Give up on a call after this many ms (default: the model's).
    deadline_ms: Option<u32>,
}

fn default_output() -> String {
    "prediction".to_owned()
}

struct Predict {
    model: Model,
    schema: SchemaRef,
    /// Input columns read, in feature order.
    reads: Vec<usize>,
    carried: usize,
    width: usize,
    deadline_ms: Option<u32>,
}

impl Operator for Predict {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?.clone();
        if config.features.is_empty() {
            return Err(Error::config("predict: `features` is empty"));
        }
        let mut reads = Vec::with_capacity(config.features.len());
        for name in &config.features {
            let i = input.index_of(name).map_err(|_| {
                let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
                Error::config(format!("predict: feature `{name}` is not an input column ({})", names.join(", ")))
            })?;
            let t = input.field(i).data_type();
            let ok = t.is_numeric()
                || matches!(t, DataType::FixedSizeList(item, _) if item.data_type() == &DataType::Float32);
            if !ok {
                return Err(Error::config(format!(
                    "predict: feature `{name}` is {t}, not a number or a float32 tensor"
                )));
            }
            reads.push(i);
        }
        let tensor_column = matches!(input.field(reads[0]).data_type(), DataType::FixedSizeList(..));
        if tensor_column && reads.len() > 1 {
            return Err(Error::config("predict: a tensor column must be the only feature"));
        }
        let width = match input.field(reads[0]).data_type() {
            DataType::FixedSizeList(_, n) => *n as usize,
            _ => reads.len(),
        };
        let model = Model::load(&config.model)?;
        let info = model.info().clone();
        if info.inputs.len() != 1 || info.outputs.len() != 1 {
            return Err(Error::config(format!(
                "predict: model `{}` has {} inputs and {} outputs; predict runs models with one of each",
                info.name,
                info.inputs.len(),
                info.outputs.len()
            )));
        }
        let (i, o) = (&info.inputs[0], &info.outputs[0]);
        if i.dtype != TensorType::Float32 || i.shape.len() != 2 || (i.shape[1] >= 0 && i.shape[1] as usize != width) {
            return Err(Error::config(format!(
                "predict: model `{}` takes `{}` as {:?} {:?}; the features make float32 [rows, {width}]",
                info.name, i.name, i.dtype, i.shape
            )));
        }
        if o.dtype != TensorType::Float32 || o.shape.len() != 2 || o.shape[1] < 0 {
            return Err(Error::config(format!(
                "predict: model `{}` gives `{}` as {:?} {:?}; predict takes float32 [rows, n]",
                info.name, o.name, o.dtype, o.shape
            )));
        }
        let metadata: std::collections::HashMap<String, String> = [
            ("flumen.model".to_owned(), info.name.clone()),
            ("flumen.model.digest".to_owned(), format!("sha256:{}", info.digest)),
        ]
        .into_iter()
        .collect();
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let out = Field::new(config.output.clone(), DataType::FixedSizeList(item, o.shape[1] as i32), false)
            .with_metadata(metadata);
        if input.index_of(&config.output).is_ok() {
            return Err(Error::config(format!("predict: output `{}` is already an input column", config.output)));
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(out);
        let carried = input.fields().len();
        Ok(Predict {
            model,
            schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            reads,
            carried,
            width,
            deadline_ms: config.deadline_ms,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        let mut layout: Vec<Option<usize>> = (0..self.carried).map(Some).collect();
        layout.push(None);
        let mut reads = self.reads.clone();
        reads.sort_unstable();
        Shape::new().reads(0, reads).carries(layout)
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let tensor = self.features(&batch)?;
        let outputs = match self.deadline_ms {
            Some(ms) => self.model.infer_within(&[tensor], ms)?,
            None => self.model.infer(&[tensor])?,
        };
        let column: ArrayRef = Arc::new(outputs[0].to_fixed_size_list()?);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let result = RecordBatch::try_new_with_options(out.schema().clone(), vec![column], &options)?;
        out.emit(&result)
    }
}

impl Predict {
    /// The batch's features as one `[rows, width]` float32 tensor. The batch
    /// holds only the columns read, ascending; features keep config order.
    fn features(&self, batch: &RecordBatch) -> Result<Tensor, Error> {
        let mut sorted = self.reads.clone();
        sorted.sort_unstable();
        let at = |input_col: usize| sorted.iter().position(|c| *c == input_col).unwrap_or(0);
        let rows = batch.num_rows();
        if let DataType::FixedSizeList(..) = batch.column(0).data_type() {
            return Tensor::from_fixed_size_list(batch.column(0).as_ref());
        }
        let mut values = vec![0f32; rows * self.width];
        for (f, input_col) in self.reads.iter().enumerate() {
            let col = batch.column(at(*input_col));
            if col.null_count() > 0 {
                let name = self.schema.field(*input_col).name();
                return Err(Error::input(format!("predict: feature `{name}` has nulls")));
            }
            macro_rules! pack {
                ($t:ty) => {
                    for (r, v) in col.as_primitive::<$t>().values().iter().enumerate() {
                        values[r * self.width + f] = *v as f32;
                    }
                };
            }
            match col.data_type() {
                DataType::Float32 => pack!(Float32Type),
                DataType::Float64 => pack!(Float64Type),
                DataType::Int8 => pack!(Int8Type),
                DataType::Int16 => pack!(Int16Type),
                DataType::Int32 => pack!(Int32Type),
                DataType::Int64 => pack!(Int64Type),
                DataType::UInt8 => pack!(UInt8Type),
                DataType::UInt16 => pack!(UInt16Type),
                DataType::UInt32 => pack!(UInt32Type),
                DataType::UInt64 => pack!(UInt64Type),
                other => return Err(Error::input(format!("predict: cannot read a {other} feature as float32"))),
            }
        }
        Tensor::from_f32(vec![rows as u64, self.width as u64], &values)
    }
}

export_operator!(Predict);
