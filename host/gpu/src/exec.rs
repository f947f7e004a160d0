//! Running a checked graph on one GPU: weights uploaded once at load, each
//! run's activations allocated stream-ordered from the driver's pool (freed
//! as the last node using them finishes), GEMMs through cuBLAS and the rest
//! through the NVRTC kernels. Shapes are worked out per run on the host, so
//! batch and sequence dimensions may change from run to run; shape
//! arithmetic (Shape, Range, Gather on shapes, Concat) stays on the host.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cudarc::cublas::{CudaBlas, Gemm as _, GemmConfig, StridedBatchedConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg as _};
use flumen_types::inference::{DType, Tensor};

use crate::graph::{BinOp, Graph, HostData, HostTensor, Node, Op, UnOp, Window};
use crate::kernels::Kernels;

const MAX_RANK: usize = 6;

/// Most values a Range may make (shape arithmetic, positions): a model file
/// cannot make the host allocate without bound.
const RANGE_MAX: usize = 1 << 24;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Bcast {
    n: i64,
    rank: i32,
    dims: [i64; MAX_RANK],
    sa: [i64; MAX_RANK],
    sb: [i64; MAX_RANK],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Perm {
    n: i64,
    rank: i32,
    dims: [i64; MAX_RANK],
    strides: [i64; MAX_RANK],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct ConvGeom {
    n: i32,
    c: i32,
    h: i32,
    w: i32,
    kh: i32,
    kw: i32,
    sh: i32,
    sw: i32,
    ph: i32,
    pw: i32,
    dh: i32,
    dw: i32,
    oh: i32,
    ow: i32,
}

// SAFETY: plain `#[repr(C)]` structs of integers whose layout matches the
// structs of the same names in kernels.cu; passed by value as kernel
// parameters.
unsafe impl DeviceRepr for Bcast {}
unsafe impl DeviceRepr for Perm {}
unsafe impl DeviceRepr for ConvGeom {}

/// Device memory of one tensor.
#[derive(Debug)]
enum DevBuf {
    F32(CudaSlice<f32>),
    I64(CudaSlice<i64>),
}

/// A tensor on the device: a shape over a (shared) buffer.
#[derive(Debug, Clone)]
struct DevTensor {
    shape: Vec<usize>,
    buf: Arc<DevBuf>,
}

impl DevTensor {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn f32(&self) -> Result<&CudaSlice<f32>, String> {
        match &*self.buf {
            DevBuf::F32(s) => Ok(s),
            DevBuf::I64(_) => Err("expects float32, got int64".into()),
        }
    }

    fn i64(&self) -> Result<&CudaSlice<i64>, String> {
        match &*self.buf {
            DevBuf::I64(s) => Ok(s),
            DevBuf::F32(_) => Err("expects int64, got float32".into()),
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    Host(Arc<HostTensor>),
    Dev(DevTensor),
}

impl Value {
    fn shape(&self) -> &[usize] {
        match self {
            Value::Host(h) => &h.shape,
            Value::Dev(d) => &d.shape,
        }
    }
}

fn launch(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(256).max(1) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn cuda<E: std::fmt::Debug>(e: E) -> String {
    format!("CUDA: {e:?}")
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// Strides of `shape` (right-aligned in a tensor of rank `rank`) as
/// broadcast to `out`: 0 along broadcast dimensions.
fn bstrides(shape: &[usize], out: &[usize]) -> Vec<i64> {
    let rank = out.len();
    let mut strides = vec![0i64; rank];
    let mut s = 1i64;
    for i in (0..rank).rev() {
        let j = (i + shape.len()).checked_sub(rank);
        let d = j.map_or(1, |j| shape[j]);
        strides[i] = if d == 1 { 0 } else { s };
        s *= d as i64;
    }
    strides
}

fn axis_of(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|a| *a < rank.max(1))
        .ok_or_else(|| format!("axis {axis} out of range for rank {rank}"))
}

/// The executor of one model instance.
pub struct Executor {
    graph: Graph,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Arc<Kernels>,
    weights: HashMap<String, DevTensor>,
    /// How many nodes read each value (to free activations early).
    uses: HashMap<String, usize>,
    /// cuDNN, when the library is here: convolutions; else im2col + GEMM.
    dnn: Option<std::sync::Mutex<crate::dnn::Dnn>>,
    /// With FLUMEN_GPU_PROFILE=1: time per operator type (each node synchronized).
    profile: Option<std::sync::Mutex<HashMap<String, (u64, std::time::Duration)>>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("graph", &self.graph.name).finish()
    }
}

impl Executor {
    /// Uploads the graph's float32 weights; int64 initializers stay on the host.
    pub fn new(graph: Graph, stream: Arc<CudaStream>, kernels: Arc<Kernels>) -> Result<Executor, String> {
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(|e| format!("cuBLAS: {e:?}"))?;
        let mut weights = HashMap::new();
        for (name, t) in &graph.initializers {
            if let HostData::F32(v) = &t.data {
                let buf = stream.clone_htod(v.as_slice()).map_err(cuda)?;
                weights.insert(name.clone(), DevTensor { shape: t.shape.clone(), buf: Arc::new(DevBuf::F32(buf)) });
            }
        }
        let mut uses = HashMap::new();
        for n in &graph.nodes {
            for i in &n.inputs {
                *uses.entry(i.clone()).or_insert(0) += 1;
            }
        }
        stream.synchronize().map_err(cuda)?;
        let forced_im2col = std::env::var("FLUMEN_GPU_CONV").as_deref() == Ok("im2col");
        let has_conv = graph.nodes.iter().any(|n| matches!(n.op, Op::Conv { .. }));
        // SAFETY: only tries to load the library.
        let dnn = if has_conv && !forced_im2col && unsafe { cudarc::cudnn::sys::is_culib_present() } {
            match crate::dnn::Dnn::new(Arc::clone(&stream)) {
                Ok(d) => Some(std::sync::Mutex::new(d)),
                Err(e) => {
                    tracing::warn!("cuDNN is present but unusable ({e}); convolutions use im2col + cuBLAS");
                    None
                }
            }
        } else {
            None
        };
        let profile = (std::env::var("FLUMEN_GPU_PROFILE").as_deref() == Ok("1")).then(Default::default);
        Ok(Executor { graph, stream, blas, kernels, weights, uses, dnn, profile })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// How convolutions run: `cudnn` or `im2col`.
    pub fn conv_path(&self) -> &'static str {
        if self.dnn.is_some() { "cudnn" } else { "im2col" }
    }

    /// Times every node (synchronizing after each) from now on, or stops.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(Default::default);
    }

    /// With FLUMEN_GPU_PROFILE=1 or after `set_profiling(true)`, the time
    /// per operator type so far, most first.
    pub fn profile(&self) -> Vec<(String, u64, std::time::Duration)> {
        let Some(p) = &self.profile else { return Vec::new() };
        let mut v: Vec<_> =
            p.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, (n, d))| (k.clone(), *n, *d)).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.2));
        v
    }

    /// Runs the graph on `inputs` (in the graph's input order); returns its
    /// outputs, copied back to the host.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(format!("{} inputs given, the model takes {}", inputs.len(), self.graph.inputs.len()));
        }
        let mut values: HashMap<String, Value> = HashMap::new();
        for (spec, t) in self.graph.inputs.iter().zip(inputs) {
            let buf = match t.dtype {
                DType::F32 => DevBuf::F32(self.upload(&t.data, le_f32)?),
                DType::I64 => DevBuf::I64(self.upload(&t.data, le_i64)?),
                other => return Err(format!("input `{}` is {other} (float32 or int64)", spec.name)),
            };
            values.insert(spec.name.clone(), Value::Dev(DevTensor { shape: t.shape.clone(), buf: Arc::new(buf) }));
        }
        let mut left = self.uses.clone();
        let mut err_flag = self.stream.alloc_zeros::<i32>(1).map_err(cuda)?;
        for node in &self.graph.nodes {
            let args: Vec<Option<Value>> = node
                .inputs
                .iter()
                .map(|name| {
                    if name.is_empty() {
                        return Ok(None);
                    }
                    if let Some(v) = values.get(name) {
                        return Ok(Some(v.clone()));
                    }
                    if let Some(w) = self.weights.get(name) {
                        return Ok(Some(Value::Dev(w.clone())));
                    }
                    if let Some(h) = self.graph.initializers.get(name) {
                        return Ok(Some(Value::Host(Arc::new(h.clone()))));
                    }
                    Err(format!("node `{}` ({}): input `{name}` is not computed before it", node.name, node.op_type))
                })
                .collect::<Result<_, String>>()?;
            let started = self.profile.as_ref().map(|_| std::time::Instant::now());
            let out = self
                .node(node, &args, &mut err_flag)
                .map_err(|why| format!("node `{}` ({}): {why}", node.name, node.op_type))?;
            if let (Some(p), Some(t)) = (&self.profile, started) {
                self.stream.synchronize().map_err(cuda)?;
                let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                let e = p.entry(node.op_type.clone()).or_default();
                e.0 += 1;
                e.1 += t.elapsed();
            }
            for name in &node.inputs {
                if let Some(n) = left.get_mut(name) {
                    *n -= 1;
                    if *n == 0 && !self.graph.outputs.iter().any(|o| &o.name == name) {
                        values.remove(name);
                    }
                }
            }
            if let Some(name) = node.outputs.first() {
                values.insert(name.clone(), out);
            }
        }
        let flag = self.stream.clone_dtoh(&err_flag).map_err(cuda)?;
        if flag.first().copied().unwrap_or(0) != 0 {
            return Err("an index was out of range in a Gather (e.g. a token id past the vocabulary)".into());
        }
        let mut outputs = Vec::with_capacity(self.graph.outputs.len());
        for o in &self.graph.outputs {
            let v = values.get(&o.name).ok_or_else(|| format!("output `{}` was never computed", o.name))?;
            outputs.push(self.download(v)?);
        }
        Ok(outputs)
    }

    /// Copies little-endian `bytes` to the device as `T`s: straight from
    /// the bytes when they are aligned for `T` (the usual case), else
    /// through `convert`.
    fn upload<T: bytemuck::Pod + cudarc::driver::DeviceRepr>(
        &self,
        bytes: &[u8],
        convert: fn(&[u8]) -> Vec<T>,
    ) -> Result<CudaSlice<T>, String> {
        match bytemuck::try_cast_slice::<u8, T>(bytes) {
            Ok(values) if cfg!(target_endian = "little") => self.stream.clone_htod(values).map_err(cuda),
            _ => self.stream.clone_htod(&convert(bytes)).map_err(cuda),
        }
    }

    /// The first `n` values of a device buffer as little-endian bytes,
    /// copied straight into the byte vector when it is aligned for `T` (the
    /// allocator's usual case), else through a `T` vector.
    fn bytes_of<T: bytemuck::Pod + cudarc::driver::DeviceRepr>(
        &self,
        s: &CudaSlice<T>,
        n: usize,
    ) -> Result<Vec<u8>, String> {
        let size = std::mem::size_of::<T>();
        let mut bytes = vec![0u8; s.len() * size];
        match bytemuck::try_cast_slice_mut::<u8, T>(&mut bytes) {
            Ok(host) if cfg!(target_endian = "little") => self.stream.memcpy_dtoh(s, host).map_err(cuda)?,
            _ => {
                let mut host = vec![T::zeroed(); s.len()];
                self.stream.memcpy_dtoh(s, host.as_mut_slice()).map_err(cuda)?;
                bytes.copy_from_slice(bytemuck::cast_slice::<T, u8>(&host));
            }
        }
        bytes.truncate(n * size);
        Ok(bytes)
    }

    fn download(&self, v: &Value) -> Result<Tensor, String> {
        let (dtype, shape, data) = match v {
            Value::Host(h) => match &h.data {
                HostData::F32(x) => (DType::F32, h.shape.clone(), bytemuck::cast_slice::<f32, u8>(x).to_vec()),
                HostData::I64(x) => (DType::I64, h.shape.clone(), bytemuck::cast_slice::<i64, u8>(x).to_vec()),
            },
            Value::Dev(d) => match &*d.buf {
                DevBuf::F32(s) => (DType::F32, d.shape.clone(), self.bytes_of(s, d.len())?),
                DevBuf::I64(s) => (DType::I64, d.shape.clone(), self.bytes_of(s, d.len())?),
            },
        };
        let shape = if shape.is_empty() { vec![1] } else { shape };
        Tensor::new(dtype, shape, Bytes::from(data))
    }

    /// A value on the device as float32 (host values are uploaded).
    fn dev_f32(&self, v: &Value) -> Result<DevTensor, String> {
        match v {
            Value::Dev(d) => {
                d.f32()?;
                Ok(d.clone())
            }
            Value::Host(h) => {
                let buf = self.stream.clone_htod(&h.as_f32()).map_err(cuda)?;
                Ok(DevTensor { shape: h.shape.clone(), buf: Arc::new(DevBuf::F32(buf)) })
            }
        }
    }

    fn dev_i64(&self, v: &Value) -> Result<DevTensor, String> {
        match v {
            Value::Dev(d) => {
                d.i64()?;
                Ok(d.clone())
            }
            Value::Host(h) => {
                let buf = self.stream.clone_htod(&h.as_i64()).map_err(cuda)?;
                Ok(DevTensor { shape: h.shape.clone(), buf: Arc::new(DevBuf::I64(buf)) })
            }
        }
    }

    fn alloc(&self, n: usize) -> Result<CudaSlice<f32>, String> {
        // SAFETY: every kernel and GEMM that receives this buffer writes all
        // of its `n` elements before anything reads them.
        unsafe { self.stream.alloc::<f32>(n.max(1)) }.map_err(cuda)
    }

    fn node(&self, node: &Node, args: &[Option<Value>], err: &mut CudaSlice<i32>) -> Result<Value, String> {
        let arg = |k: usize| -> Result<&Value, String> {
            args.get(k).and_then(Option::as_ref).ok_or_else(|| format!("input {k} is missing"))
        };
        let all_host = args.iter().flatten().all(|v| matches!(v, Value::Host(_)));
        match &node.op {
            Op::Constant(t) => Ok(Value::Host(Arc::new(t.clone()))),
            Op::Identity => arg(0).cloned(),
            Op::Shape { start, end } => {
                let shape = arg(0)?.shape();
                let r = shape.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
                let v: Vec<i64> = shape[s..e.max(s)].iter().map(|d| *d as i64).collect();
                Ok(Value::Host(Arc::new(HostTensor::i64(vec![v.len()], v))))
            }
            Op::Binary(op) if all_host => host_binary(*op, arg(0)?, arg(1)?),
            Op::Binary(op) => self.binary(*op, &self.dev_f32(arg(0)?)?, &self.dev_f32(arg(1)?)?),
            Op::Unary(op) => self.unary(*op, &self.dev_f32(arg(0)?)?),
            Op::MatMul { alpha, bias, trans_b } => {
                let b = if *bias { Some(self.dev_f32(arg(2)?)?) } else { None };
                self.matmul(&self.dev_f32(arg(0)?)?, &self.dev_f32(arg(1)?)?, *alpha, *trans_b, b.as_ref())
            }
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                let c = match args.get(2).and_then(Option::as_ref) {
                    Some(c) => Some(self.dev_f32(c)?),
                    None => None,
                };
                self.gemm(
                    &self.dev_f32(arg(0)?)?,
                    &self.dev_f32(arg(1)?)?,
                    c.as_ref(),
                    *alpha,
                    *beta,
                    *trans_a,
                    *trans_b,
                )
            }
            Op::Softmax { axis } => {
                let x = self.dev_f32(arg(0)?)?;
                if axis_of(*axis, x.shape.len())? + 1 != x.shape.len().max(1) {
                    return Err(format!("axis {axis} is not the last (only the last axis is supported)"));
                }
                self.rows_kernel("softmax_rows_f32", &x, None, None, 0.0)
            }
            Op::LayerNorm { axis, eps } => {
                let x = self.dev_f32(arg(0)?)?;
                if axis_of(*axis, x.shape.len())? + 1 != x.shape.len().max(1) {
                    return Err(format!("axis {axis} is not the last (only the last axis is supported)"));
                }
                let gamma = self.dev_f32(arg(1)?)?;
                let beta = match args.get(2).and_then(Option::as_ref) {
                    Some(b) => Some(self.dev_f32(b)?),
                    None => None,
                };
                self.rows_kernel("layernorm_rows_f32", &x, Some(&gamma), beta.as_ref(), *eps)
            }
            Op::Gather { axis } => match (arg(0)?, arg(1)?) {
                (Value::Host(d), Value::Host(i)) => host_gather(d, i, *axis),
                (data, idx) => {
                    let table = self.dev_f32(data)?;
                    if axis_of(*axis, table.shape.len())? != 0 {
                        return Err("a device Gather takes rows (axis 0) only".into());
                    }
                    self.gather_rows(&table, &self.dev_i64(idx)?, err)
                }
            },
            Op::Cast { to } => match arg(0)? {
                Value::Host(h) => Ok(Value::Host(Arc::new(match *to {
                    1 => HostTensor::f32(h.shape.clone(), h.as_f32()),
                    6 | 7 => HostTensor::i64(h.shape.clone(), h.as_i64()),
                    other => return Err(format!("cast to element type {other} is not supported")),
                }))),
                Value::Dev(d) => match (&*d.buf, *to) {
                    (DevBuf::F32(_), 1) | (DevBuf::I64(_), 7) => Ok(Value::Dev(d.clone())),
                    (DevBuf::I64(s), 1) => {
                        let mut y = self.alloc(d.len())?;
                        let f = self.kernels.get("cast_i64_f32");
                        let n = d.len() as i64;
                        let mut b = self.stream.launch_builder(f);
                        b.arg(s).arg(&mut y).arg(&n);
                        // SAFETY: `s` and `y` hold `n` elements; the kernel reads and writes only those.
                        unsafe { b.launch(launch(d.len())) }.map_err(cuda)?;
                        Ok(Value::Dev(DevTensor { shape: d.shape.clone(), buf: Arc::new(DevBuf::F32(y)) }))
                    }
                    (_, other) => Err(format!("a device cast to element type {other} is not supported")),
                },
            },
            Op::Transpose { perm } => self.transpose(&self.dev_f32(arg(0)?)?, perm.as_deref()),
            Op::Reshape { allowzero } => {
                let x = arg(0)?;
                let spec = match arg(1)? {
                    Value::Host(h) => h.as_i64(),
                    Value::Dev(_) => return Err("the target shape must be known on the host".into()),
                };
                let shape = reshape(x.shape(), &spec, *allowzero)?;
                Ok(with_shape(x, shape))
            }
            Op::Unsqueeze { axes } => {
                let x = arg(0)?;
                let axes = match axes {
                    Some(a) => a.clone(),
                    None => host_ints(arg(1)?)?,
                };
                let rank = x.shape().len() + axes.len();
                let mut axes: Vec<usize> = axes.iter().map(|a| axis_of(*a, rank)).collect::<Result<_, _>>()?;
                axes.sort_unstable();
                let mut shape = x.shape().to_vec();
                for a in axes {
                    shape.insert(a.min(shape.len()), 1);
                }
                Ok(with_shape(x, shape))
            }
            Op::Squeeze { axes } => {
                let x = arg(0)?;
                let axes = match (axes, args.get(1).and_then(Option::as_ref)) {
                    (Some(a), _) => Some(a.clone()),
                    (None, Some(v)) => Some(host_ints(v)?),
                    (None, None) => None,
                };
                let rank = x.shape().len();
                let drop: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|a| axis_of(*a, rank)).collect::<Result<_, _>>()?,
                    None => (0..rank).filter(|i| x.shape()[*i] == 1).collect(),
                };
                let shape: Vec<usize> =
                    x.shape().iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, d)| *d).collect();
                Ok(with_shape(x, shape))
            }
            Op::Flatten { axis } => {
                let x = arg(0)?;
                let a = if *axis < 0 { *axis + x.shape().len() as i64 } else { *axis } as usize;
                let a = a.min(x.shape().len());
                let outer: usize = x.shape()[..a].iter().product();
                let inner: usize = x.shape()[a..].iter().product();
                Ok(with_shape(x, vec![outer, inner]))
            }
            Op::Range => {
                let (s, l, d) = (host_scalar(arg(0)?)?, host_scalar(arg(1)?)?, host_scalar(arg(2)?)?);
                if d == 0 {
                    return Err("delta is 0".into());
                }
                let n = ((l as f64 - s as f64) / d as f64).ceil().max(0.0) as usize;
                if n > RANGE_MAX {
                    return Err(format!("Range of {n} values (at most {RANGE_MAX})"));
                }
                let v: Vec<i64> = (0..n as i64).map(|i| s + i * d).collect();
                Ok(Value::Host(Arc::new(HostTensor::i64(vec![n], v))))
            }
            Op::Concat { axis } => {
                let parts: Vec<&Value> = args.iter().flatten().collect();
                if parts.iter().all(|p| matches!(p, Value::Host(_)) && p.shape().len() == 1)
                    && (*axis == 0 || *axis == -1)
                {
                    let mut v = Vec::new();
                    for p in &parts {
                        v.extend(host_ints(p)?);
                    }
                    return Ok(Value::Host(Arc::new(HostTensor::i64(vec![v.len()], v))));
                }
                Err("only host (shape) values of rank 1 are concatenated".into())
            }
            Op::Conv { window, relu } => {
                self.conv(&self.dev_f32(arg(0)?)?, &self.dev_f32(arg(1)?)?, &self.dev_f32(arg(2)?)?, window, *relu)
            }
            Op::ChannelAffine => {
                let x = self.dev_f32(arg(0)?)?;
                let (scale, shift) = (self.dev_f32(arg(1)?)?, self.dev_f32(arg(2)?)?);
                if x.shape.len() < 2 || x.shape[1] != scale.len() {
                    return Err(format!("input {:?} does not have {} channels", x.shape, scale.len()));
                }
                let c = x.shape[1] as i32;
                let rest: i64 = x.shape[2..].iter().product::<usize>() as i64;
                let n = x.len() as i64;
                let mut y = self.alloc(x.len())?;
                let mut b = self.stream.launch_builder(self.kernels.get("channel_affine_f32"));
                b.arg(x.f32()?).arg(scale.f32()?).arg(shift.f32()?).arg(&mut y).arg(&n).arg(&c).arg(&rest);
                // SAFETY: x and y hold n values; scale and shift hold c.
                unsafe { b.launch(launch(x.len())) }.map_err(cuda)?;
                Ok(Value::Dev(DevTensor { shape: x.shape.clone(), buf: Arc::new(DevBuf::F32(y)) }))
            }
            Op::MaxPool { window } => self.maxpool(&self.dev_f32(arg(0)?)?, window),
            Op::GlobalAveragePool => {
                let x = self.dev_f32(arg(0)?)?;
                if x.shape.len() != 4 {
                    return Err(format!("input {:?} is not [N, C, H, W]", x.shape));
                }
                let planes = x.shape[0] * x.shape[1];
                let hw = (x.shape[2] * x.shape[3]) as i64;
                let mut y = self.alloc(planes)?;
                let p = planes as i64;
                let mut b = self.stream.launch_builder(self.kernels.get("plane_mean_f32"));
                b.arg(x.f32()?).arg(&mut y).arg(&p).arg(&hw);
                // SAFETY: one warp per plane; x holds planes × hw values, y planes.
                unsafe { b.launch(launch(planes * 32)) }.map_err(cuda)?;
                Ok(Value::Dev(DevTensor { shape: vec![x.shape[0], x.shape[1], 1, 1], buf: Arc::new(DevBuf::F32(y)) }))
            }
            Op::BatchNorm { .. } => Err("BatchNormalization was not prepared at load".into()),
        }
    }

    fn binary(&self, op: BinOp, a: &DevTensor, b: &DevTensor) -> Result<Value, String> {
        let out = broadcast(&a.shape, &b.shape)?;
        if out.len() > MAX_RANK {
            return Err(format!("rank {} (at most {MAX_RANK})", out.len()));
        }
        let n: usize = out.iter().product();
        let mut y = self.alloc(n)?;
        let code = op as i32;
        // b (or a) repeating along the leading dimensions of the other.
        let tail_of = |small: &[usize], big: &[usize]| -> bool {
            let s: Vec<usize> = small.iter().copied().skip_while(|d| *d == 1).collect();
            big.len() >= s.len() && big[big.len() - s.len()..] == s[..]
        };
        let simple = if a.shape == b.shape {
            Some((0i32, 1))
        } else if b.len() == 1 {
            Some((2, 1))
        } else if a.len() == 1 {
            Some((3, 1))
        } else if out == a.shape && tail_of(&b.shape, &a.shape) {
            Some((1, b.len()))
        } else if out == b.shape && tail_of(&a.shape, &b.shape) {
            Some((4, a.len()))
        } else {
            None
        };
        if let Some((mode, inner)) = simple {
            let (total, inner) = (n as i64, inner.max(1) as i64);
            let mut b_ = self.stream.launch_builder(self.kernels.get("binary_simple_f32"));
            b_.arg(a.f32()?).arg(b.f32()?).arg(&mut y).arg(&total).arg(&inner).arg(&mode).arg(&code);
            // SAFETY: the mode matches how a and b broadcast to n values (checked above).
            unsafe { b_.launch(launch(n)) }.map_err(cuda)?;
            return Ok(Value::Dev(DevTensor { shape: out, buf: Arc::new(DevBuf::F32(y)) }));
        }
        let mut m = Bcast { n: n as i64, rank: out.len() as i32, ..Default::default() };
        for (i, (d, (sa, sb))) in
            out.iter().zip(bstrides(&a.shape, &out).into_iter().zip(bstrides(&b.shape, &out))).enumerate()
        {
            m.dims[i] = *d as i64;
            m.sa[i] = sa;
            m.sb[i] = sb;
        }
        let mut b_ = self.stream.launch_builder(self.kernels.get("binary_f32"));
        b_.arg(a.f32()?).arg(b.f32()?).arg(&mut y).arg(&m).arg(&code);
        // SAFETY: the strides index within a and b (broadcast of their shapes); y holds n values.
        unsafe { b_.launch(launch(n)) }.map_err(cuda)?;
        Ok(Value::Dev(DevTensor { shape: out, buf: Arc::new(DevBuf::F32(y)) }))
    }

    fn unary(&self, op: UnOp, x: &DevTensor) -> Result<Value, String> {
        let n = x.len();
        let mut y = self.alloc(n)?;
        let (len, code) = (n as i64, op as i32);
        let mut b = self.stream.launch_builder(self.kernels.get("unary_f32"));
        b.arg(x.f32()?).arg(&mut y).arg(&len).arg(&code);
        // SAFETY: x and y hold n values.
        unsafe { b.launch(launch(n)) }.map_err(cuda)?;
        Ok(Value::Dev(DevTensor { shape: x.shape.clone(), buf: Arc::new(DevBuf::F32(y)) }))
    }

    /// Row-major `y[m, n] = op(a) · op(b)` as cuBLAS (column-major) sees it:
    /// `yᵀ = op(b)ᵀ · op(a)ᵀ`. `a_rows_major_k`: a is stored [m, k] (else
    /// [k, m]); likewise b is stored [k, n] (else [n, k]).
    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
        (m, n, k): (usize, usize, usize),
        a: &CudaSlice<f32>,
        a_transposed: bool,
        b: &CudaSlice<f32>,
        b_transposed: bool,
        y: &mut CudaSlice<f32>,
        alpha: f32,
        beta: f32,
        batch: Option<(usize, i64, i64, i64)>,
    ) -> Result<(), String> {
        let (transa, lda) =
            if b_transposed { (cublasOperation_t::CUBLAS_OP_T, k) } else { (cublasOperation_t::CUBLAS_OP_N, n) };
        let (transb, ldb) =
            if a_transposed { (cublasOperation_t::CUBLAS_OP_T, m) } else { (cublasOperation_t::CUBLAS_OP_N, k) };
        let gemm = GemmConfig {
            transa,
            transb,
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha,
            lda: lda as i32,
            ldb: ldb as i32,
            beta,
            ldc: n as i32,
        };
        // SAFETY: the dimensions and leading dimensions describe buffers of
        // the sizes the callers allocated or checked (m·k, k·n, m·n per batch).
        unsafe {
            match batch {
                None => self.blas.gemm(gemm, b, a, y),
                Some((count, sa, sb, sc)) => self.blas.gemm_strided_batched(
                    StridedBatchedConfig { gemm, batch_size: count as i32, stride_a: sb, stride_b: sa, stride_c: sc },
                    b,
                    a,
                    y,
                ),
            }
        }
        .map_err(|e| format!("cuBLAS: {e:?}"))
    }

    /// `alpha · (a × b)`, plus `bias` (one value per column) added in place.
    fn matmul(
        &self,
        a: &DevTensor,
        b: &DevTensor,
        alpha: f32,
        trans_b: bool,
        bias: Option<&DevTensor>,
    ) -> Result<Value, String> {
        let out = self.matmul_only(a, b, alpha, trans_b)?;
        let Some(bias) = bias else { return Ok(out) };
        let Value::Dev(y) = out else { return Err("MatMul stayed on the host".into()) };
        let cols = y.shape.last().copied().unwrap_or(1);
        if bias.len() != cols {
            return Err(format!("bias of {} values for rows of {cols}", bias.len()));
        }
        self.add_bias_rows(y, bias)
    }

    /// `y += bias` on every row, in place (`y` is a fresh GEMM output whose
    /// last dimension is the bias's length).
    fn add_bias_rows(&self, y: DevTensor, bias: &DevTensor) -> Result<Value, String> {
        let Some(mut buf) = Arc::into_inner(y.buf) else { return Err("GEMM output shared".into()) };
        let DevBuf::F32(ys) = &mut buf else { return Err("GEMM output is not float32".into()) };
        let (total, cols) = (y.shape.iter().product::<usize>() as i64, bias.len() as i64);
        let mut b_ = self.stream.launch_builder(self.kernels.get("add_bias_rows_f32"));
        b_.arg(ys).arg(bias.f32()?).arg(&total).arg(&cols);
        // SAFETY: ys holds `total` values, the bias `cols`, and cols divides total.
        unsafe { b_.launch(launch(total as usize)) }.map_err(cuda)?;
        Ok(Value::Dev(DevTensor { shape: y.shape, buf: Arc::new(buf) }))
    }

    fn matmul_only(&self, a: &DevTensor, b: &DevTensor, alpha: f32, trans_b: bool) -> Result<Value, String> {
        let (ar, br) = (a.shape.len(), b.shape.len());
        if ar < 2 || br < 2 {
            return Err(format!("shapes {:?} × {:?}: both need 2 or more dimensions", a.shape, b.shape));
        }
        let (m, k) = (a.shape[ar - 2], a.shape[ar - 1]);
        let (k2, n) = if trans_b { (b.shape[br - 1], b.shape[br - 2]) } else { (b.shape[br - 2], b.shape[br - 1]) };
        if k != k2 {
            return Err(format!("shapes {:?} × {:?}: inner dimensions differ", a.shape, b.shape));
        }
        if br == 2 {
            // [.., m, k] × [k, n]: one GEMM over every row of a.
            let rows: usize = a.shape[..ar - 1].iter().product();
            let mut y = self.alloc(rows * n)?;
            self.sgemm((rows, n, k), a.f32()?, false, b.f32()?, trans_b, &mut y, alpha, 0.0, None)?;
            let mut shape = a.shape[..ar - 1].to_vec();
            shape.push(n);
            return Ok(Value::Dev(DevTensor { shape, buf: Arc::new(DevBuf::F32(y)) }));
        }
        if a.shape[..ar - 2] != b.shape[..br - 2] {
            return Err(format!("shapes {:?} × {:?}: batch dimensions differ (no broadcasting)", a.shape, b.shape));
        }
        let count: usize = a.shape[..ar - 2].iter().product();
        let mut y = self.alloc(count * m * n)?;
        let strides = (count, (m * k) as i64, (k * n) as i64, (m * n) as i64);
        self.sgemm((m, n, k), a.f32()?, false, b.f32()?, trans_b, &mut y, alpha, 0.0, Some(strides))?;
        let mut shape = a.shape[..ar - 2].to_vec();
        shape.extend([m, n]);
        Ok(Value::Dev(DevTensor { shape, buf: Arc::new(DevBuf::F32(y)) }))
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        a: &DevTensor,
        b: &DevTensor,
        c: Option<&DevTensor>,
        alpha: f32,
        beta: f32,
        ta: bool,
        tb: bool,
    ) -> Result<Value, String> {
        let ([a0, a1], [b0, b1]) = match (a.shape.as_slice(), b.shape.as_slice()) {
            ([a0, a1], [b0, b1]) => ([*a0, *a1], [*b0, *b1]),
            _ => return Err(format!("shapes {:?} and {:?}: Gemm takes 2-D inputs", a.shape, b.shape)),
        };
        let (m, k) = if ta { (a1, a0) } else { (a0, a1) };
        let (k2, n) = if tb { (b1, b0) } else { (b0, b1) };
        if k != k2 {
            return Err(format!("shapes {:?} and {:?}: inner dimensions differ", a.shape, b.shape));
        }
        let mut y = self.alloc(m * n)?;
        self.sgemm((m, n, k), a.f32()?, ta, b.f32()?, tb, &mut y, alpha, 0.0, None)?;
        let y = DevTensor { shape: vec![m, n], buf: Arc::new(DevBuf::F32(y)) };
        let Some(c) = c.filter(|_| beta != 0.0) else { return Ok(Value::Dev(y)) };
        let c = if beta == 1.0 {
            c.clone()
        } else {
            let beta_t =
                DevTensor { shape: vec![], buf: Arc::new(DevBuf::F32(self.stream.clone_htod(&[beta]).map_err(cuda)?)) };
            match self.binary(BinOp::Mul, c, &beta_t)? {
                Value::Dev(d) => d,
                Value::Host(_) => return Err("bias scaling stayed on the host".into()),
            }
        };
        if c.shape.iter().product::<usize>() == n && c.shape.last().copied().unwrap_or(1) == n {
            // The usual bias row: added in place.
            return self.add_bias_rows(y, &c);
        }
        self.binary(BinOp::Add, &y, &c)
    }

    /// Softmax or LayerNormalization over the last axis, one block per row.
    fn rows_kernel(
        &self,
        name: &'static str,
        x: &DevTensor,
        gamma: Option<&DevTensor>,
        beta: Option<&DevTensor>,
        eps: f32,
    ) -> Result<Value, String> {
        let cols = x.shape.last().copied().unwrap_or(1);
        let rows = x.len() / cols.max(1);
        let mut y = self.alloc(x.len())?;
        let threads: u32 = if cols >= 256 { 256 } else { (cols.next_power_of_two() as u32).clamp(32, 256) };
        let cfg = LaunchConfig {
            grid_dim: (rows.max(1) as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: threads * 4,
        };
        let c = cols as i64;
        let has_beta = beta.is_some() as i32;
        if let Some(g) = gamma {
            for (what, t) in [("scale", Some(g)), ("bias", beta)] {
                if let Some(t) = t.filter(|t| t.len() != cols) {
                    return Err(format!("{what} has {} values for rows of {cols}", t.len()));
                }
            }
        }
        let mut b = self.stream.launch_builder(self.kernels.get(name));
        b.arg(x.f32()?);
        if let Some(g) = gamma {
            b.arg(g.f32()?).arg(beta.unwrap_or(g).f32()?);
        }
        b.arg(&mut y).arg(&c);
        if gamma.is_some() {
            b.arg(&eps).arg(&has_beta);
        }
        // SAFETY: rows × cols values in x and y; scale and bias checked to hold cols.
        unsafe { b.launch(cfg) }.map_err(cuda)?;
        Ok(Value::Dev(DevTensor { shape: x.shape.clone(), buf: Arc::new(DevBuf::F32(y)) }))
    }

    fn gather_rows(&self, table: &DevTensor, idx: &DevTensor, err: &mut CudaSlice<i32>) -> Result<Value, String> {
        if table.shape.is_empty() {
            return Err("Gather from a scalar".into());
        }
        let rows = table.shape.first().copied().unwrap_or(0);
        let row: usize = table.shape[1..].iter().product();
        let n = idx.len() * row;
        let mut y = self.alloc(n)?;
        let (total, row_i, rows_i) = (n as i64, row as i64, rows as i64);
        let mut b = self.stream.launch_builder(self.kernels.get("gather_rows_f32"));
        b.arg(table.f32()?).arg(idx.i64()?).arg(&mut y).arg(&total).arg(&row_i).arg(&rows_i).arg(err);
        // SAFETY: indices are range-checked in the kernel against `rows`; y holds n values.
        unsafe { b.launch(launch(n)) }.map_err(cuda)?;
        let mut shape = idx.shape.clone();
        shape.extend_from_slice(&table.shape[1..]);
        Ok(Value::Dev(DevTensor { shape, buf: Arc::new(DevBuf::F32(y)) }))
    }

    fn transpose(&self, x: &DevTensor, perm: Option<&[i64]>) -> Result<Value, String> {
        let rank = x.shape.len();
        if rank > MAX_RANK {
            return Err(format!("rank {rank} (at most {MAX_RANK})"));
        }
        let perm: Vec<usize> = match perm {
            Some(p) => p.iter().map(|a| axis_of(*a, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).rev().collect(),
        };
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..rank).collect::<Vec<_>>() {
            return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
        }
        let mut in_strides = vec![1i64; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            in_strides[i] = in_strides[i + 1] * x.shape[i + 1] as i64;
        }
        let shape: Vec<usize> = perm.iter().map(|p| x.shape[*p]).collect();
        let n = x.len();
        let mut m = Perm { n: n as i64, rank: rank as i32, ..Default::default() };
        for (i, p) in perm.iter().enumerate() {
            m.dims[i] = shape[i] as i64;
            m.strides[i] = in_strides[*p];
        }
        let mut y = self.alloc(n)?;
        let mut b = self.stream.launch_builder(self.kernels.get("transpose_f32"));
        b.arg(x.f32()?).arg(&mut y).arg(&m);
        // SAFETY: a permutation of x's own strides indexes within x; y holds n values.
        unsafe { b.launch(launch(n)) }.map_err(cuda)?;
        Ok(Value::Dev(DevTensor { shape, buf: Arc::new(DevBuf::F32(y)) }))
    }

    fn geometry(x: &DevTensor, w: &Window) -> Result<ConvGeom, String> {
        let [n, c, h, wd] = x.shape[..] else { return Err(format!("input {:?} is not [N, C, H, W]", x.shape)) };
        let out = |size: usize, k: usize, s: usize, p0: usize, p1: usize, d: usize| -> Result<usize, String> {
            if k == 0 || s == 0 || d == 0 {
                return Err(format!("window {k}, stride {s}, dilation {d}: each must be at least 1"));
            }
            let span = d.saturating_mul(k - 1).saturating_add(1);
            let padded = size.saturating_add(p0).saturating_add(p1);
            if padded < span {
                return Err(format!("a {k}-wide window does not fit {size} (+ pads)"));
            }
            Ok((padded - span) / s + 1)
        };
        let oh = out(h, w.kernel[0], w.strides[0], w.pads[0], w.pads[2], w.dilations[0])?;
        let ow = out(wd, w.kernel[1], w.strides[1], w.pads[1], w.pads[3], w.dilations[1])?;
        let i = |v: usize| i32::try_from(v).map_err(|_| format!("dimension {v} too large"));
        Ok(ConvGeom {
            n: i(n)?,
            c: i(c)?,
            h: i(h)?,
            w: i(wd)?,
            kh: i(w.kernel[0])?,
            kw: i(w.kernel[1])?,
            sh: i(w.strides[0])?,
            sw: i(w.strides[1])?,
            ph: i(w.pads[0])?,
            pw: i(w.pads[1])?,
            dh: i(w.dilations[0])?,
            dw: i(w.dilations[1])?,
            oh: i(oh)?,
            ow: i(ow)?,
        })
    }

    fn conv(
        &self,
        x: &DevTensor,
        w: &DevTensor,
        bias: &DevTensor,
        window: &Window,
        relu: bool,
    ) -> Result<Value, String> {
        let symmetric = window.pads[0] == window.pads[2] && window.pads[1] == window.pads[3];
        match &self.dnn {
            Some(d) if symmetric => self.conv_cudnn(d, x, w, bias, window, relu),
            _ => self.conv_im2col(x, w, bias, window, relu),
        }
    }

    /// A convolution by cuDNN in strict float32 (see `dnn.rs`), then bias
    /// and ReLU in place.
    fn conv_cudnn(
        &self,
        d: &std::sync::Mutex<crate::dnn::Dnn>,
        x: &DevTensor,
        w: &DevTensor,
        bias: &DevTensor,
        window: &Window,
        relu: bool,
    ) -> Result<Value, String> {
        let g = Self::geometry(x, window)?;
        let [oc, ci, kh, kw] = w.shape[..] else { return Err(format!("weights {:?} are not 4-D", w.shape)) };
        if ci != g.c as usize || [kh, kw] != window.kernel || bias.len() != oc {
            return Err(format!("weights {:?} and bias {:?} do not fit input {:?}", w.shape, bias.shape, x.shape));
        }
        let shape = crate::dnn::ConvShape {
            x: [g.n, g.c, g.h, g.w],
            w: [oc as i32, ci as i32, kh as i32, kw as i32],
            pad: [g.ph, g.pw],
            stride: [g.sh, g.sw],
            dilation: [g.dh, g.dw],
        };
        let n = g.n as usize * g.oh as usize * g.ow as usize * oc;
        let mut y = self.alloc(n)?;
        d.lock().unwrap_or_else(|e| e.into_inner()).forward(shape, x.f32()?, w.f32()?, &mut y)?;
        let (total, c, plane, relu_i) = (n as i64, oc as i32, g.oh as i64 * g.ow as i64, relu as i32);
        let mut b = self.stream.launch_builder(self.kernels.get("bias_act_nchw_f32"));
        b.arg(&mut y).arg(bias.f32()?).arg(&total).arg(&c).arg(&plane).arg(&relu_i);
        // SAFETY: y holds n values, the bias oc.
        unsafe { b.launch(launch(n)) }.map_err(cuda)?;
        let shape = vec![g.n as usize, oc, g.oh as usize, g.ow as usize];
        Ok(Value::Dev(DevTensor { shape, buf: Arc::new(DevBuf::F32(y)) }))
    }

    fn conv_im2col(
        &self,
        x: &DevTensor,
        w: &DevTensor,
        bias: &DevTensor,
        window: &Window,
        relu: bool,
    ) -> Result<Value, String> {
        let g = Self::geometry(x, window)?;
        let [oc, ci, kh, kw] = w.shape[..] else { return Err(format!("weights {:?} are not 4-D", w.shape)) };
        if ci != g.c as usize || [kh, kw] != window.kernel || bias.len() != oc {
            return Err(format!("weights {:?} and bias {:?} do not fit input {:?}", w.shape, bias.shape, x.shape));
        }
        let (n, p) = (g.n as usize, g.oh as usize * g.ow as usize);
        let ck = ci * kh * kw;
        let np = n * p;
        let one_by_one = kh == 1 && kw == 1 && window.strides == [1, 1] && window.pads == [0; 4] && n == 1;
        let mut yp = self.alloc(oc * np)?;
        let col_holder;
        let col: &CudaSlice<f32> = if one_by_one {
            x.f32()?
        } else {
            let mut col = self.alloc(ck * np)?;
            let mut b = self.stream.launch_builder(self.kernels.get("im2col_f32"));
            b.arg(x.f32()?).arg(&mut col).arg(&g);
            // SAFETY: the kernel reads x inside its [N, C, H, W] bounds and writes ck × np values.
            unsafe { b.launch(launch(ck * np)) }.map_err(cuda)?;
            col_holder = col;
            &col_holder
        };
        // yp[oc, np] = w[oc, ck] · col[ck, np]
        self.sgemm((oc, np, ck), w.f32()?, false, col, false, &mut yp, 1.0, 0.0, None)?;
        let mut y = self.alloc(oc * np)?;
        let (n_i, oc_i, p_i, relu_i) = (g.n, oc as i32, p as i64, relu as i32);
        let mut b = self.stream.launch_builder(self.kernels.get("conv_out_f32"));
        b.arg(&yp).arg(bias.f32()?).arg(&mut y).arg(&n_i).arg(&oc_i).arg(&p_i).arg(&relu_i);
        // SAFETY: yp and y hold oc × n × p values, the bias oc.
        unsafe { b.launch(launch(oc * np)) }.map_err(cuda)?;
        let shape = vec![n, oc, g.oh as usize, g.ow as usize];
        Ok(Value::Dev(DevTensor { shape, buf: Arc::new(DevBuf::F32(y)) }))
    }

    fn maxpool(&self, x: &DevTensor, window: &Window) -> Result<Value, String> {
        let g = Self::geometry(x, window)?;
        let n = g.n as usize * g.c as usize * g.oh as usize * g.ow as usize;
        let mut y = self.alloc(n)?;
        let mut b = self.stream.launch_builder(self.kernels.get("maxpool_f32"));
        b.arg(x.f32()?).arg(&mut y).arg(&g);
        // SAFETY: reads stay inside each [H, W] plane; y holds n values.
        unsafe { b.launch(launch(n)) }.map_err(cuda)?;
        let shape = vec![g.n as usize, g.c as usize, g.oh as usize, g.ow as usize];
        Ok(Value::Dev(DevTensor { shape, buf: Arc::new(DevBuf::F32(y)) }))
    }
}

fn with_shape(v: &Value, shape: Vec<usize>) -> Value {
    match v {
        Value::Host(h) => Value::Host(Arc::new(HostTensor { shape, data: h.data.clone() })),
        Value::Dev(d) => Value::Dev(DevTensor { shape, buf: Arc::clone(&d.buf) }),
    }
}

fn host_ints(v: &Value) -> Result<Vec<i64>, String> {
    match v {
        Value::Host(h) => Ok(h.as_i64()),
        Value::Dev(_) => Err("axes and shapes must be known on the host".into()),
    }
}

fn host_scalar(v: &Value) -> Result<i64, String> {
    host_ints(v)?.first().copied().ok_or_else(|| "an empty scalar".into())
}

/// ONNX Reshape: 0 copies the input's dimension (unless allowzero), -1 is inferred.
pub fn reshape(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, d) in spec.iter().enumerate() {
        match *d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => {
                out.push(*input.get(i).ok_or_else(|| format!("shape {spec:?}: no dimension {i} to copy"))?)
            }
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("shape {spec:?} is not a valid target")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {input:?} ({total} values) to {spec:?}"));
    }
    Ok(out)
}

fn host_binary(op: BinOp, a: &Value, b: &Value) -> Result<Value, String> {
    let (Value::Host(a), Value::Host(b)) = (a, b) else { return Err("host arithmetic on device values".into()) };
    let out = broadcast(&a.shape, &b.shape)?;
    let n: usize = out.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d)).unwrap_or(usize::MAX);
    if n > RANGE_MAX {
        return Err(format!("host arithmetic on {out:?} (at most {RANGE_MAX} values)"));
    }
    let (sa, sb) = (bstrides(&a.shape, &out), bstrides(&b.shape, &out));
    let index = |i: usize, s: &[i64]| -> usize {
        let (mut r, mut off) = (i, 0i64);
        for d in (0..out.len()).rev() {
            off += (r % out[d]) as i64 * s[d];
            r /= out[d];
        }
        off as usize
    };
    let t = match (&a.data, &b.data) {
        (HostData::I64(x), HostData::I64(y)) => {
            let f = |p: i64, q: i64| -> i64 {
                match op {
                    BinOp::Add => p.wrapping_add(q),
                    BinOp::Sub => p.wrapping_sub(q),
                    BinOp::Mul => p.wrapping_mul(q),
                    BinOp::Div => p.checked_div(q).unwrap_or(0),
                    BinOp::Pow => p.wrapping_pow(q.clamp(0, 63) as u32),
                }
            };
            HostTensor::i64(out.clone(), (0..n).map(|i| f(x[index(i, &sa)], y[index(i, &sb)])).collect())
        }
        _ => {
            let (x, y) = (a.as_f32(), b.as_f32());
            let f = |p: f32, q: f32| -> f32 {
                match op {
                    BinOp::Add => p + q,
                    BinOp::Sub => p - q,
                    BinOp::Mul => p * q,
                    BinOp::Div => p / q,
                    BinOp::Pow => p.powf(q),
                }
            };
            HostTensor::f32(out.clone(), (0..n).map(|i| f(x[index(i, &sa)], y[index(i, &sb)])).collect())
        }
    };
    Ok(Value::Host(Arc::new(t)))
}

fn host_gather(data: &HostTensor, idx: &HostTensor, axis: i64) -> Result<Value, String> {
    if data.shape.is_empty() {
        return Err("Gather from a scalar".into());
    }
    let axis = axis_of(axis, data.shape.len())?;
    let dim = data.shape[axis];
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let picks: Vec<usize> = idx
        .as_i64()
        .iter()
        .map(|i| {
            let j = if *i < 0 { *i + dim as i64 } else { *i };
            usize::try_from(j).ok().filter(|j| *j < dim).ok_or_else(|| format!("index {i} out of range for {dim}"))
        })
        .collect::<Result<_, _>>()?;
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    if outer.saturating_mul(picks.len()).saturating_mul(inner) > RANGE_MAX {
        return Err(format!("host Gather of {shape:?} (at most {RANGE_MAX} values)"));
    }
    let pick = |o: usize, p: usize, k: usize| (o * dim + p) * inner + k;
    let t = match &data.data {
        HostData::I64(v) => HostTensor::i64(
            shape,
            (0..outer)
                .flat_map(|o| picks.iter().flat_map(move |p| (0..inner).map(move |k| (o, *p, k))))
                .map(|(o, p, k)| v[pick(o, p, k)])
                .collect(),
        ),
        HostData::F32(v) => HostTensor::f32(
            shape,
            (0..outer)
                .flat_map(|o| picks.iter().flat_map(move |p| (0..inner).map(move |k| (o, *p, k))))
                .map(|(o, p, k)| v[pick(o, p, k)])
                .collect(),
        ),
    };
    Ok(Value::Host(Arc::new(t)))
}

fn le_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn le_i64(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
}
