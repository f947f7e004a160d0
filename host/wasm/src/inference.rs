//! The `inference` capability: host functions that let a guest look up a
//! model and run it on tensors. The model and its batcher belong to the
//! process (`flumen_types::inference::InferenceService`, implemented by
//! `flumen-inference`); a call awaits its outputs on the guest's fiber, so
//! only the calling instance waits. Failures are WIT `infer-error`s, never
//! host traps. A call's wait is bounded by the guest call's own deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flumen_types::blob::BlobRef;
use flumen_types::inference::{DType, InferError, ModelHandle, ModelInfo, Tensor, TensorSpec};
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, LinkerInstance, Lower, Resource, ResourceType};

use crate::blobs::WitBlobRef;
use crate::instance::HostState;

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WitTensorType {
    #[component(name = "float32")]
    Float32,
    #[component(name = "float16")]
    Float16,
    #[component(name = "bfloat16")]
    Bfloat16,
    #[component(name = "float64")]
    Float64,
    #[component(name = "int8")]
    Int8,
    #[component(name = "int16")]
    Int16,
    #[component(name = "int32")]
    Int32,
    #[component(name = "int64")]
    Int64,
    #[component(name = "uint8")]
    Uint8,
    #[component(name = "uint16")]
    Uint16,
    #[component(name = "uint32")]
    Uint32,
    #[component(name = "uint64")]
    Uint64,
    #[component(name = "boolean")]
    Boolean,
}

impl From<WitTensorType> for DType {
    fn from(t: WitTensorType) -> DType {
        match t {
            WitTensorType::Float32 => DType::F32,
            WitTensorType::Float16 => DType::F16,
            WitTensorType::Bfloat16 => DType::BF16,
            WitTensorType::Float64 => DType::F64,
            WitTensorType::Int8 => DType::I8,
            WitTensorType::Int16 => DType::I16,
            WitTensorType::Int32 => DType::I32,
            WitTensorType::Int64 => DType::I64,
            WitTensorType::Uint8 => DType::U8,
            WitTensorType::Uint16 => DType::U16,
            WitTensorType::Uint32 => DType::U32,
            WitTensorType::Uint64 => DType::U64,
            WitTensorType::Boolean => DType::Bool,
        }
    }
}

impl From<DType> for WitTensorType {
    fn from(t: DType) -> WitTensorType {
        match t {
            DType::F32 => WitTensorType::Float32,
            DType::F16 => WitTensorType::Float16,
            DType::BF16 => WitTensorType::Bfloat16,
            DType::F64 => WitTensorType::Float64,
            DType::I8 => WitTensorType::Int8,
            DType::I16 => WitTensorType::Int16,
            DType::I32 => WitTensorType::Int32,
            DType::I64 => WitTensorType::Int64,
            DType::U8 => WitTensorType::Uint8,
            DType::U16 => WitTensorType::Uint16,
            DType::U32 => WitTensorType::Uint32,
            DType::U64 => WitTensorType::Uint64,
            DType::Bool => WitTensorType::Boolean,
        }
    }
}

#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct WitTensor {
    dtype: WitTensorType,
    shape: Vec<u64>,
    data: Vec<u8>,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct WitTensorSpec {
    name: String,
    dtype: WitTensorType,
    shape: Vec<i64>,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct WitModelInfo {
    name: String,
    digest: String,
    inputs: Vec<WitTensorSpec>,
    outputs: Vec<WitTensorSpec>,
    #[component(name = "max-batch")]
    max_batch: u32,
    labels: Vec<String>,
    accepts: Option<String>,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct WitRowFailure {
    row: u32,
    message: String,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct WitBlobOutputs {
    outputs: Vec<WitTensor>,
    failed: Vec<WitRowFailure>,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(variant)]
pub(crate) enum WitInferError {
    #[component(name = "unknown-model")]
    UnknownModel(String),
    #[component(name = "mismatch")]
    Mismatch(String),
    #[component(name = "deadline-exceeded")]
    DeadlineExceeded(String),
    #[component(name = "refused")]
    Refused(String),
    #[component(name = "backend")]
    Backend(String),
}

impl From<InferError> for WitInferError {
    fn from(e: InferError) -> WitInferError {
        let text = e.to_string();
        match e {
            InferError::UnknownModel { .. } => WitInferError::UnknownModel(text),
            InferError::Mismatch { .. } => WitInferError::Mismatch(text),
            InferError::DeadlineExceeded { .. } => WitInferError::DeadlineExceeded(text),
            InferError::Refused { .. } => WitInferError::Refused(text),
            InferError::Backend { .. } | InferError::Load { .. } => WitInferError::Backend(text),
        }
    }
}

/// A `model` resource: the process's shared handle.
pub(crate) struct ModelRes(Arc<dyn ModelHandle>);

type Ret<T> = wasmtime::Result<(Result<T, WitInferError>,)>;

fn spec_to_wit(s: &TensorSpec) -> WitTensorSpec {
    WitTensorSpec { name: s.name.clone(), dtype: s.dtype.into(), shape: s.shape.clone() }
}

fn info_to_wit(i: &ModelInfo) -> WitModelInfo {
    WitModelInfo {
        name: i.name.clone(),
        digest: i.digest.clone(),
        inputs: i.signature.inputs.iter().map(spec_to_wit).collect(),
        outputs: i.signature.outputs.iter().map(spec_to_wit).collect(),
        max_batch: i.max_batch,
        labels: i.labels.clone(),
        accepts: i.accepts.clone(),
    }
}

/// A guest tensor, checked (its bytes must match its shape).
fn from_wit(model: &str, i: usize, t: WitTensor) -> Result<Tensor, WitInferError> {
    let shape: Vec<usize> = t.shape.iter().map(|d| usize::try_from(*d).unwrap_or(usize::MAX)).collect();
    Tensor::new(t.dtype.into(), shape, Bytes::from(t.data))
        .map_err(|e| WitInferError::Mismatch(format!("model `{model}`: input {i}: {e}")))
}

fn to_wit(t: Tensor) -> WitTensor {
    WitTensor { dtype: t.dtype.into(), shape: t.shape.iter().map(|d| *d as u64).collect(), data: t.data.to_vec() }
}

pub(crate) fn link(linker: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    linker.resource("model", ResourceType::host::<ModelRes>(), |mut store, rep| {
        store.data_mut().table_mut().delete(Resource::<ModelRes>::new_own(rep))?;
        Ok(())
    })?;
    linker.func_wrap(
        "load",
        |mut store: StoreContextMut<'_, HostState>, (name,): (String,)| -> Ret<Resource<ModelRes>> {
            let Some(service) = store.data().inference().cloned() else {
                return Ok((Err(WitInferError::Backend(
                    "this job has no model repository ([inference] models)".into(),
                )),));
            };
            match service.model(&name) {
                Ok(handle) => Ok((Ok(store.data_mut().table_mut().push(ModelRes(handle))?),)),
                Err(e) => Ok((Err(e.into()),)),
            }
        },
    )?;
    linker.func_wrap(
        "[method]model.info",
        |mut store: StoreContextMut<'_, HostState>, (this,): (Resource<ModelRes>,)| {
            let m = store.data_mut().table_mut().get(&this)?;
            Ok((info_to_wit(m.0.info()),))
        },
    )?;
    linker.func_wrap_async(
        "[method]model.infer",
        |mut store: StoreContextMut<'_, HostState>,
         (this, inputs, deadline_ms): (Resource<ModelRes>, Vec<WitTensor>, Option<u32>)| {
            Box::new(async move {
                let handle = Arc::clone(&store.data_mut().table_mut().get(&this)?.0);
                let name = handle.info().name.clone();
                let tensors: Result<Vec<Tensor>, WitInferError> =
                    inputs.into_iter().enumerate().map(|(i, t)| from_wit(&name, i, t)).collect();
                let tensors = match tensors {
                    Ok(t) => t,
                    Err(e) => return Ok((Err(e),)),
                };
                let deadline = Some(deadline_of(&store, deadline_ms));
                let result = handle.infer(tensors, deadline).await;
                Ok((result
                    .map(|outputs| outputs.into_iter().map(to_wit).collect::<Vec<WitTensor>>())
                    .map_err(WitInferError::from),))
            })
        },
    )?;
    linker.func_wrap_async(
        "[method]model.infer-blobs",
        |mut store: StoreContextMut<'_, HostState>,
         (this, blobs, deadline_ms): (Resource<ModelRes>, Vec<WitBlobRef>, Option<u32>)| {
            Box::new(async move {
                let handle = Arc::clone(&store.data_mut().table_mut().get(&this)?.0);
                let name = handle.info().name.clone();
                let (items, refs) = match read_blobs(&store, &name, blobs) {
                    Ok(read) => read,
                    Err(e) => return Ok((Err(e),)),
                };
                let deadline = Some(deadline_of(&store, deadline_ms));
                let result = handle.infer_encoded(items, deadline).await;
                Ok((match result {
                    Ok((outputs, failed)) => Ok(WitBlobOutputs {
                        outputs: outputs.into_iter().map(to_wit).collect(),
                        failed: failed
                            .into_iter()
                            .map(|(row, message)| {
                                let what = refs.get(row as usize).map(|r| name_of(&store, r)).unwrap_or_default();
                                WitRowFailure { row, message: format!("{what}: {message}") }
                            })
                            .collect(),
                    }),
                    Err(e) => Err(e.into()),
                },))
            })
        },
    )?;
    linker.func_wrap_async(
        "[method]model.infer-texts",
        |mut store: StoreContextMut<'_, HostState>,
         (this, texts, deadline_ms): (Resource<ModelRes>, Vec<String>, Option<u32>)| {
            Box::new(async move {
                let handle = Arc::clone(&store.data_mut().table_mut().get(&this)?.0);
                let deadline = Some(deadline_of(&store, deadline_ms));
                let items: Vec<Bytes> = texts.into_iter().map(Bytes::from).collect();
                let result = handle.infer_encoded(items, deadline).await;
                Ok((result
                    .map(|(outputs, failed)| WitBlobOutputs {
                        outputs: outputs.into_iter().map(to_wit).collect(),
                        failed: failed
                            .into_iter()
                            .map(|(row, message)| WitRowFailure { row, message: format!("row {row}: {message}") })
                            .collect(),
                    })
                    .map_err(WitInferError::from),))
            })
        },
    )?;
    Ok(())
}

/// Most bytes of blobs one `infer-blobs` call may name.
const BLOB_INFER_BYTES_MAX: u64 = 1 << 30;

/// When a call's wait must end: its own `deadline-ms`, never past the
/// guest call's deadline.
fn deadline_of(store: &StoreContextMut<'_, HostState>, deadline_ms: Option<u32>) -> Duration {
    let left = store.data().call_deadline().saturating_duration_since(Instant::now());
    deadline_ms.map(|ms| Duration::from_millis(ms as u64)).unwrap_or(left).min(left)
}

/// The bytes of each referenced blob, read in the host (tokens checked by
/// the store; the guest never sees them), with the references, to name a
/// row that fails.
fn read_blobs(
    store: &StoreContextMut<'_, HostState>,
    model: &str,
    blobs: Vec<WitBlobRef>,
) -> Result<(Vec<Bytes>, Vec<BlobRef>), WitInferError> {
    let Some(scope) = store.data().blobs() else {
        return Err(WitInferError::Backend("this job has no blob store".into()));
    };
    let total: u64 = blobs.iter().map(|b| b.size).fold(0, u64::saturating_add);
    if total > BLOB_INFER_BYTES_MAX {
        return Err(WitInferError::Refused(format!(
            "model `{model}`: {total} blob bytes in one call (at most {BLOB_INFER_BYTES_MAX})"
        )));
    }
    let mut items = Vec::with_capacity(blobs.len());
    let mut refs = Vec::with_capacity(blobs.len());
    for (i, b) in blobs.into_iter().enumerate() {
        let bad = |m: String| WitInferError::Mismatch(format!("model `{model}`: row {i}: {m}"));
        let r = crate::blobs::from_wit(b).map_err(|e| bad(e.message))?;
        items.push(scope.store().read(&r, 0, r.size).map_err(|e| bad(e.to_string()))?);
        refs.push(r);
    }
    Ok((items, refs))
}

/// A blob as a message names it: its source file or URI, else its digest.
fn name_of(store: &StoreContextMut<'_, HostState>, r: &BlobRef) -> String {
    let source = store.data().blobs().and_then(|s| s.store().stat(r).ok()).and_then(|i| i.source);
    format!("`{}` ({}, {} bytes)", source.unwrap_or_else(|| format!("blob {}", r.digest_hex())), r.media_type, r.size)
}
