//! Models the host runs: look one up by name in the job's model repository
//! and run it on tensors, through the host's `inference` capability (granted
//! with `capabilities = ["inference"]`; the job names its repository in
//! `[inference] models = "models/"`).
//!
//! ```text
//! use flumen_sdk::inference::{Model, Tensor};
//!
//! let model = Model::load("mlp")?;                      // in `open`
//! let x = Tensor::from_fixed_size_list(features)?;     // a FixedSizeList<Float32> column: no per-row copy
//! let y = model.infer(&[x])?;                           // in `process`
//! let scores = y[0].to_fixed_size_list()?;              // back to an Arrow column
//! ```
//!
//! Calls from every instance of every operator that uses a model are batched
//! together by the host, so call with the whole batch: one call per
//! `process`, not one per row. The call suspends only this instance.

use std::sync::Arc;

use arrow_array::{Array, FixedSizeListArray, Float32Array};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_schema::{DataType, Field};

use crate::bindings::flumen::dataflow::inference as wit;
use crate::{Error, ErrorKind};

pub use wit::TensorType;

/// A dense tensor: little-endian values in row-major order; the first
/// dimension is rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dtype: TensorType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl Tensor {
    /// A float32 tensor of `shape` over `values`.
    pub fn from_f32(shape: Vec<u64>, values: &[f32]) -> Result<Tensor, Error> {
        let n: u64 = shape.iter().product();
        if n as usize != values.len() {
            return Err(Error::input(format!("shape {shape:?} holds {n} values, given {}", values.len())));
        }
        Ok(Tensor { dtype: TensorType::Float32, shape, data: values.iter().flat_map(|v| v.to_le_bytes()).collect() })
    }

    /// A `[rows, width]` float32 tensor from a `FixedSizeList<Float32>`
    /// column (Arrow's layout for fixed-shape tensors) without nulls.
    pub fn from_fixed_size_list(column: &dyn Array) -> Result<Tensor, Error> {
        let list = column.as_any().downcast_ref::<FixedSizeListArray>().ok_or_else(|| {
            Error::input(format!("a tensor column must be FixedSizeList<Float32>, got {}", column.data_type()))
        })?;
        if list.null_count() > 0 {
            return Err(Error::input("a tensor column must not have null rows"));
        }
        let width = list.value_length() as usize;
        let values =
            list.values().as_any().downcast_ref::<Float32Array>().ok_or_else(|| {
                Error::input(format!("tensor values must be Float32, got {}", list.values().data_type()))
            })?;
        let rows = list.len();
        let start = list.offset() * width;
        let slice = &values.values()[start..start + rows * width];
        let data: Vec<u8> = slice.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(Tensor { dtype: TensorType::Float32, shape: vec![rows as u64, width as u64], data })
    }

    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0) as usize
    }

    /// The values of a float32 tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>, Error> {
        if self.dtype != TensorType::Float32 {
            return Err(Error::internal(format!("tensor is {:?}, not float32", self.dtype)));
        }
        Ok(self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// A float32 tensor as a `FixedSizeList<Float32>` column: one row per
    /// first-dimension entry, the rest flattened.
    pub fn to_fixed_size_list(&self) -> Result<FixedSizeListArray, Error> {
        let values = self.to_f32()?;
        let rows = self.rows();
        let width = values.len().checked_div(rows).unwrap_or(0);
        let buffer = ScalarBuffer::<f32>::from(Buffer::from_vec(values));
        FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            width as i32,
            Arc::new(Float32Array::new(buffer, None)),
            None,
        )
        .map_err(|e| Error::internal(e.to_string()))
    }
}

/// A model input or output; `-1` marks a free dimension (the first is rows).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: TensorType,
    pub shape: Vec<i64>,
}

/// What a model takes and gives.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    /// SHA-256 of the model file, hex.
    pub digest: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub max_batch: u32,
    /// The model's class labels, in output order (may be empty).
    pub labels: Vec<String>,
    /// What blobs [`Model::infer_blobs`] takes (`image`, `text`); `None`: tensors only.
    pub accepts: Option<String>,
}

/// A row [`Model::infer_blobs`] could not preprocess; its outputs are zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFailure {
    pub row: u32,
    pub message: String,
}

/// A model of the job's repository, shared with every other caller in the
/// process.
#[derive(Debug)]
pub struct Model {
    inner: wit::Model,
    info: ModelInfo,
}

fn spec(s: wit::TensorSpec) -> TensorSpec {
    TensorSpec { name: s.name, dtype: s.dtype, shape: s.shape }
}

fn error(e: wit::InferError) -> Error {
    match e {
        wit::InferError::UnknownModel(m) => Error::new(ErrorKind::InvalidConfig, m),
        wit::InferError::Mismatch(m) => Error::new(ErrorKind::InvalidInput, m),
        wit::InferError::DeadlineExceeded(m) | wit::InferError::Refused(m) => Error::new(ErrorKind::Limit, m),
        wit::InferError::Backend(m) => Error::new(ErrorKind::Internal, m),
    }
}

impl Model {
    /// The model called `name` (its folder in the repository). An unknown
    /// name is an `InvalidConfig` error naming the models there are.
    pub fn load(name: &str) -> Result<Model, Error> {
        let inner = wit::load(name).map_err(error)?;
        let i = inner.info();
        let info = ModelInfo {
            name: i.name,
            digest: i.digest,
            inputs: i.inputs.into_iter().map(spec).collect(),
            outputs: i.outputs.into_iter().map(spec).collect(),
            max_batch: i.max_batch,
            labels: i.labels,
            accepts: i.accepts,
        };
        Ok(Model { inner, info })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Runs the model: one tensor per input, in [`ModelInfo::inputs`] order,
    /// all with the same rows. Returns the outputs in order.
    pub fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, Error> {
        self.call(inputs, None)
    }

    /// As [`Model::infer`], giving up after `deadline_ms` (queue and run).
    pub fn infer_within(&self, inputs: &[Tensor], deadline_ms: u32) -> Result<Vec<Tensor>, Error> {
        self.call(inputs, Some(deadline_ms))
    }

    /// Runs the model on blobs, one per row, that the host reads, decodes
    /// and preprocesses as the model's config says ([`ModelInfo::accepts`]):
    /// the bytes never enter this instance. Returns the outputs and the rows
    /// that could not be preprocessed.
    pub fn infer_blobs(&self, blobs: &[crate::blob::BlobRef]) -> Result<(Vec<Tensor>, Vec<RowFailure>), Error> {
        let params: Vec<wit::BlobInput<'_>> = blobs
            .iter()
            .map(|b| wit::BlobInput { digest: &b.digest, size: b.size, media_type: &b.media_type, token: &b.token })
            .collect();
        let out = self.inner.infer_blobs(&params, None).map_err(error)?;
        Ok((
            out.outputs.into_iter().map(|t| Tensor { dtype: t.dtype, shape: t.shape, data: t.data }).collect(),
            out.failed.into_iter().map(|f| RowFailure { row: f.row, message: f.message }).collect(),
        ))
    }

    /// Runs a text model on strings, one per row, that the host tokenizes
    /// with the model's own tokenizer (`accepts` is `text`); a pooling model
    /// returns one float32 `[rows, hidden]` tensor. Returns the outputs and
    /// the rows that could not be tokenized.
    pub fn infer_texts(&self, texts: &[&str]) -> Result<(Vec<Tensor>, Vec<RowFailure>), Error> {
        let out = self.inner.infer_texts(texts, None).map_err(error)?;
        Ok((
            out.outputs.into_iter().map(|t| Tensor { dtype: t.dtype, shape: t.shape, data: t.data }).collect(),
            out.failed.into_iter().map(|f| RowFailure { row: f.row, message: f.message }).collect(),
        ))
    }

    fn call(&self, inputs: &[Tensor], deadline_ms: Option<u32>) -> Result<Vec<Tensor>, Error> {
        let params: Vec<wit::TensorParam<'_>> =
            inputs.iter().map(|t| wit::TensorParam { dtype: t.dtype, shape: &t.shape, data: &t.data }).collect();
        let out = self.inner.infer(&params, deadline_ms).map_err(error)?;
        Ok(out.into_iter().map(|t| Tensor { dtype: t.dtype, shape: t.shape, data: t.data }).collect())
    }
}
