//! The `inference` capability's vocabulary: tensors, model signatures, the
//! errors a call can end in, and the two traits that keep the pieces apart —
//! `InferenceBackend` (a runtime that loads a model file: ONNX Runtime on the
//! CPU, CUDA later), implemented by the backend crates, and `InferenceService`
//! (what an operator instance calls), implemented by `flumen-inference`'s hub
//! and called by `flumen-wasm`, which knows neither.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// Element type of a tensor; data is little-endian, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// The name used in model configs and messages (`float32`, `int64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
        }
    }

    pub fn parse(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A model input or output: name, element type and shape. A dimension of
/// `-1` is free; the first dimension is the batch (rows) dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// The shape as people write it: `[-1, 3, 224, 224]` → `[?, 3, 224, 224]`.
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> =
            self.shape.iter().map(|d| if *d < 0 { "?".to_owned() } else { d.to_string() }).collect();
        format!("[{}]", dims.join(", "))
    }

    /// Checks a tensor against this spec (dtype, rank, fixed dimensions past
    /// the batch one); the message names the input.
    pub fn check(&self, t: &Tensor) -> Result<(), String> {
        if t.dtype != self.dtype {
            return Err(format!("input `{}` wants {}, got {}", self.name, self.dtype, t.dtype));
        }
        let fits = t.shape.len() == self.shape.len()
            && t.shape.iter().zip(&self.shape).skip(1).all(|(have, want)| *want < 0 || *have as i64 == *want);
        if !fits {
            return Err(format!("input `{}` wants shape {}, got {:?}", self.name, self.shape_text(), t.shape));
        }
        Ok(())
    }
}

/// What a model takes and gives, in its own order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// A dense tensor: element type, shape and little-endian row-major bytes. The
/// first dimension is rows; slicing rows shares the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} {:?}, {} bytes)", self.dtype, self.shape, self.data.len())
    }
}

impl Tensor {
    /// A tensor over `data`, checked: its length must be the shape's element
    /// count times the element size, and the shape must have a rows dimension.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Tensor, String> {
        if shape.is_empty() {
            return Err("a tensor needs at least one dimension (rows)".to_owned());
        }
        let want = shape
            .iter()
            .try_fold(dtype.size(), |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| format!("shape {shape:?} is too large"))?;
        if data.len() != want {
            return Err(format!("shape {shape:?} of {dtype} needs {want} bytes, got {}", data.len()));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// A float32 tensor from values (tests, preprocessing).
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Tensor, String> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(DType::F32, shape, Bytes::from(data))
    }

    /// The values of a float32 tensor.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::F32)
            .then(|| self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.shape.iter().skip(1).product::<usize>() * self.dtype.size()
    }

    /// Rows `[start, start + n)`, sharing the bytes.
    pub fn slice_rows(&self, start: usize, n: usize) -> Tensor {
        let rb = self.row_bytes();
        let mut shape = self.shape.clone();
        shape[0] = n;
        Tensor { dtype: self.dtype, shape, data: self.data.slice(start * rb..(start + n) * rb) }
    }

    /// The rows of several tensors of one dtype and row shape, in order. One
    /// tensor is returned as is (no copy).
    pub fn concat_rows(parts: &[Tensor]) -> Result<Tensor, String> {
        let first = parts.first().ok_or("nothing to concatenate")?;
        if parts.len() == 1 {
            return Ok(first.clone());
        }
        let mut rows = 0;
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            if p.dtype != first.dtype || p.shape[1..] != first.shape[1..] {
                return Err(format!(
                    "rows of {} {:?} cannot join rows of {} {:?}",
                    p.dtype, p.shape, first.dtype, first.shape
                ));
            }
            rows += p.rows();
            data.extend_from_slice(&p.data);
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Ok(Tensor { dtype: first.dtype, shape, data: Bytes::from(data) })
    }
}

impl Tensor {
    /// Like [`Tensor::concat_rows`], but parts whose second dimension differs
    /// (token sequences of different lengths) are zero-padded on the right
    /// to the longest; every other dimension must agree.
    pub fn concat_rows_padded(parts: &[Tensor]) -> Result<Tensor, String> {
        let first = parts.first().ok_or("nothing to concatenate")?;
        let width = parts.iter().map(|p| p.shape.get(1).copied().unwrap_or(0)).max().unwrap_or(0);
        if first.shape.len() < 2 || parts.iter().all(|p| p.shape[1] == width) {
            return Tensor::concat_rows(parts);
        }
        let inner = first.shape[2..].iter().product::<usize>() * first.dtype.size();
        let rows: usize = parts.iter().map(Tensor::rows).sum();
        let mut data = Vec::with_capacity(rows * width * inner);
        for p in parts {
            if p.dtype != first.dtype || p.shape.len() != first.shape.len() || p.shape[2..] != first.shape[2..] {
                return Err(format!(
                    "rows of {} {:?} cannot join rows of {} {:?}",
                    p.dtype, p.shape, first.dtype, first.shape
                ));
            }
            let row = p.shape[1] * inner;
            for r in 0..p.rows() {
                data.extend_from_slice(&p.data[r * row..(r + 1) * row]);
                data.resize(data.len() + (width - p.shape[1]) * inner, 0);
            }
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        shape[1] = width;
        Ok(Tensor { dtype: first.dtype, shape, data: Bytes::from(data) })
    }
}

/// Where a model wants to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Gpu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        })
    }
}

/// What a backend needs to load one instance of a model.
#[derive(Debug, Clone)]
pub struct LoadRequest<'a> {
    /// The model's name in its repository (for messages).
    pub name: &'a str,
    /// The model file.
    pub path: &'a Path,
    pub device: Device,
    /// Threads one run may use (the backend's intra-op pool); at least 1.
    pub threads: usize,
}

/// A runtime that can load model files. Implementations live in their own
/// crates (`flumen-ort` names ONNX Runtime); the engine picks one per model.
pub trait InferenceBackend: Send + Sync + fmt::Debug {
    /// Short name for plans and summaries (`onnxruntime`).
    fn name(&self) -> &str;
    /// Version of the runtime actually loaded.
    fn version(&self) -> String;
    /// Loads one instance; called once per configured instance. A model the
    /// backend cannot run is an error here, never a wrong answer later.
    fn load(&self, req: &LoadRequest<'_>) -> Result<Box<dyn ModelInstance>, String>;
}

/// One loaded copy of a model, owned by one batcher worker thread.
pub trait ModelInstance: Send {
    fn signature(&self) -> &ModelSignature;
    /// Runs a batch: one tensor per model input, in signature order, all with
    /// the same number of rows. Returns one tensor per output, same rows.
    /// Blocking; the batcher calls it from its own threads.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String>;
}

/// How an inference call can fail. Every case is an answer to the caller,
/// never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("unknown model `{model}`{known}")]
    UnknownModel { model: String, known: String },
    #[error("model `{model}`: {detail}")]
    Mismatch { model: String, detail: String },
    #[error("model `{model}`: deadline of {deadline_ms} ms exceeded")]
    DeadlineExceeded { model: String, deadline_ms: u64 },
    #[error("model `{model}` refused the call: {reason}")]
    Refused { model: String, reason: String },
    #[error("model `{model}` failed: {message}")]
    Backend { model: String, message: String },
    #[error("model `{model}` cannot be loaded: {message}")]
    Load { model: String, message: String },
}

/// What an operator sees of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    /// SHA-256 of the model file, hex.
    pub digest: String,
    pub signature: ModelSignature,
    /// Most rows one backend run takes.
    pub max_batch: u32,
    /// Labels of the model's classes (its folder's labels file), if any.
    pub labels: Vec<String>,
    /// What encoded rows the host preprocesses for it (`image`), if any.
    pub accepts: Option<String>,
}

pub type InferFuture = Pin<Box<dyn Future<Output = Result<Vec<Tensor>, InferError>> + Send + 'static>>;

/// Outputs of encoded rows, and the rows that could not be preprocessed
/// (row index, reason); those rows' outputs are zeros.
pub type EncodedOutputs = (Vec<Tensor>, Vec<(u32, String)>);

pub type EncodedFuture = Pin<Box<dyn Future<Output = Result<EncodedOutputs, InferError>> + Send + 'static>>;

/// A model as operators call it: shared by every operator instance in the
/// process that names it.
pub trait ModelHandle: Send + Sync + fmt::Debug {
    fn info(&self) -> &ModelInfo;
    /// Queues `inputs` (one tensor per model input, in signature order, same
    /// rows) for the model's batcher. Resolves when the rows' outputs are
    /// back, the deadline passes, or the call is refused.
    fn infer(&self, inputs: Vec<Tensor>, deadline: Option<Duration>) -> InferFuture;
    /// Runs the model on encoded rows (one item each, e.g. an image file's
    /// bytes) that the host preprocesses as the model's config says; a row
    /// that cannot be preprocessed fails alone.
    fn infer_encoded(&self, items: Vec<Bytes>, deadline: Option<Duration>) -> EncodedFuture;
}

/// The `inference` capability as granted to one operator.
pub trait InferenceService: Send + Sync + fmt::Debug {
    /// A model by name, loading it on first use (once per process).
    fn model(&self, name: &str) -> Result<Arc<dyn ModelHandle>, InferError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_slice_and_join_rows() {
        let t = Tensor::from_f32(vec![3, 2], &[1., 2., 3., 4., 5., 6.]).expect("tensor");
        let a = t.slice_rows(0, 1);
        let b = t.slice_rows(1, 2);
        assert_eq!(b.to_f32(), Some(vec![3., 4., 5., 6.]));
        assert_eq!(Tensor::concat_rows(&[a, b]).expect("concat"), t);
        assert!(Tensor::new(DType::F32, vec![2, 2], Bytes::from_static(&[0; 12])).is_err());
        let other = Tensor::from_f32(vec![1, 3], &[0.; 3]).expect("tensor");
        assert!(Tensor::concat_rows(&[t, other]).is_err());
    }

    #[test]
    fn specs_check_dtype_and_fixed_dims() {
        let spec = TensorSpec { name: "x".into(), dtype: DType::F32, shape: vec![-1, 2] };
        assert!(spec.check(&Tensor::from_f32(vec![5, 2], &[0.; 10]).expect("t")).is_ok());
        let err = spec.check(&Tensor::from_f32(vec![5, 1], &[0.; 5]).expect("t")).expect_err("shape");
        assert!(err.contains("input `x` wants shape [?, 2]"), "{err}");
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()), Some(d));
        }
    }
}
