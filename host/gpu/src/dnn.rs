//! Convolutions through cuDNN: for each convolution shape the executor
//! meets, cuDNN's own benchmark (`cudnnFindConvolutionForwardAlgorithm`)
//! picks the fastest algorithm that computes in strict float32 (FMA math,
//! no TF32), once; the plan (descriptors, algorithm, workspace size) is kept
//! and one workspace, grown as needed, serves every call. cudarc's safe
//! wrapper offers only cuDNN's heuristic choice, which on Hopper picked
//! algorithms ten times slower, so this module calls cuDNN's C API directly.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cudnn::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr as _, DevicePtrMut as _};

/// A cuDNN error, as text.
fn err(e: result::CudnnError) -> String {
    format!("cuDNN: {e:?}")
}

/// One convolution shape, planned.
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    algo: sys::cudnnConvolutionFwdAlgo_t,
    workspace: usize,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created by this plan and is destroyed once.
        unsafe {
            let _ = result::destroy_tensor_descriptor(self.x);
            let _ = result::destroy_filter_descriptor(self.w);
            let _ = result::destroy_tensor_descriptor(self.y);
            let _ = result::destroy_convolution_descriptor(self.conv);
        }
    }
}

/// Input, weights and geometry of one convolution:
/// `[n, c, h, w]`, `[k, c, kh, kw]`, pads, strides, dilations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub x: [i32; 4],
    pub w: [i32; 4],
    pub pad: [i32; 2],
    pub stride: [i32; 2],
    pub dilation: [i32; 2],
}

/// A cuDNN handle on one stream, its plans and its workspace. Not
/// thread-safe (cuDNN handles are not): owned by one executor, which one
/// thread uses at a time.
pub struct Dnn {
    handle: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
    plans: HashMap<ConvShape, Plan>,
    workspace: Option<CudaSlice<u8>>,
}

// SAFETY: the handle is used only through `&mut Dnn` (one thread at a time),
// with the stream's context current (every call binds it first).
unsafe impl Send for Dnn {}

impl Drop for Dnn {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: created in `new`, destroyed once, after its plans.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

impl Dnn {
    /// A handle on `stream`, or why cuDNN cannot be used.
    pub fn new(stream: Arc<CudaStream>) -> Result<Dnn, String> {
        stream.context().bind_to_thread().map_err(|e| format!("CUDA: {e:?}"))?;
        let handle = result::create_handle().map_err(err)?;
        // SAFETY: a fresh handle and a live stream of the same context.
        unsafe { result::set_stream(handle, stream.cu_stream() as sys::cudaStream_t) }.map_err(err)?;
        Ok(Dnn { handle, stream, plans: HashMap::new(), workspace: None })
    }

    fn plan(&mut self, s: ConvShape) -> Result<&Plan, String> {
        if !self.plans.contains_key(&s) {
            let plan = self.make_plan(s)?;
            tracing::debug!(?s, algo = ?plan.algo, workspace = plan.workspace, "cuDNN convolution planned");
            self.plans.insert(s, plan);
        }
        self.plans.get(&s).ok_or_else(|| "cuDNN plan vanished".to_owned())
    }

    fn make_plan(&self, s: ConvShape) -> Result<Plan, String> {
        let float = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let mut plan = Plan {
            x: result::create_tensor_descriptor().map_err(err)?,
            w: result::create_filter_descriptor().map_err(err)?,
            y: result::create_tensor_descriptor().map_err(err)?,
            conv: result::create_convolution_descriptor().map_err(err)?,
            algo: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            workspace: 0,
        };
        let fma = sys::cudnnMathType_t::CUDNN_FMA_MATH;
        // SAFETY: the descriptors were just created; the dimensions are the
        // checked shapes of the tensors the convolution will read and write.
        unsafe {
            result::set_tensor4d_descriptor(plan.x, nchw, float, s.x).map_err(err)?;
            result::set_filter4d_descriptor(plan.w, float, nchw, s.w).map_err(err)?;
            result::set_convolution2d_descriptor(
                plan.conv,
                s.pad[0],
                s.pad[1],
                s.stride[0],
                s.stride[1],
                s.dilation[0],
                s.dilation[1],
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                float,
            )
            .map_err(err)?;
            result::set_convolution_math_type(plan.conv, fma).map_err(err)?;
        }
        let mut out = [0i32; 4];
        // SAFETY: valid descriptors; `out` has room for the 4 dimensions.
        unsafe {
            sys::cudnnGetConvolution2dForwardOutputDim(
                plan.conv,
                plan.x,
                plan.w,
                &mut out[0],
                &mut out[1],
                &mut out[2],
                &mut out[3],
            )
            .result()
            .map_err(err)?;
            result::set_tensor4d_descriptor(plan.y, nchw, float, out).map_err(err)?;
        }
        let mut found = 0i32;
        // SAFETY: zeroed perf records are plain data that cuDNN overwrites.
        let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; 8] = unsafe { std::mem::zeroed() };
        // SAFETY: valid handle and descriptors; `perf` holds 8 records.
        unsafe {
            sys::cudnnFindConvolutionForwardAlgorithm(
                self.handle,
                plan.x,
                plan.w,
                plan.conv,
                plan.y,
                perf.len() as i32,
                &mut found,
                perf.as_mut_ptr(),
            )
            .result()
            .map_err(err)?;
        }
        // Fastest first; only algorithms that keep float32's precision.
        let best = perf[..found.clamp(0, 8) as usize]
            .iter()
            .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && p.mathType == fma)
            .ok_or("cuDNN found no float32 algorithm for this convolution")?;
        plan.algo = best.algo;
        plan.workspace = best.memory;
        Ok(plan)
    }

    /// `y = conv(x, w)` for the shape `s` (y sized for its output).
    pub fn forward(
        &mut self,
        s: ConvShape,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        self.stream.context().bind_to_thread().map_err(|e| format!("CUDA: {e:?}"))?;
        let (algo, need) = {
            let p = self.plan(s)?;
            (p.algo, p.workspace)
        };
        if need > 0 && self.workspace.as_ref().is_none_or(|ws| ws.len() < need) {
            // SAFETY: cuDNN's workspace is scratch it writes before reading.
            self.workspace = Some(unsafe { self.stream.alloc::<u8>(need) }.map_err(|e| format!("CUDA: {e:?}"))?);
        }
        let plan = self.plans.get(&s).ok_or("cuDNN plan vanished")?;
        let stream = Arc::clone(&self.stream);
        let (xp, _gx) = x.device_ptr(&stream);
        let (wp, _gw) = w.device_ptr(&stream);
        let (yp, _gy) = y.device_ptr_mut(&stream);
        let (wsp, size) = match self.workspace.as_mut() {
            Some(ws) if need > 0 => {
                let len = ws.len();
                (ws.device_ptr_mut(&stream).0 as *mut c_void, len)
            }
            _ => (std::ptr::null_mut(), 0),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the plan's descriptors describe x, w and y (the caller
        // sized them from the same shape); the workspace is at least as large
        // as the algorithm needs and lives on the same stream.
        unsafe {
            result::convolution_forward(
                self.handle,
                (&alpha as *const f32).cast(),
                plan.x,
                xp as *const c_void,
                plan.w,
                wp as *const c_void,
                plan.conv,
                algo,
                wsp,
                size,
                (&beta as *const f32).cast(),
                plan.y,
                yp as *mut c_void,
            )
        }
        .map_err(err)
    }
}
