//! The GPU inference backend: ONNX models run by Flumen's own graph executor
//! on CUDA — GEMMs and convolutions (im2col) through cuBLAS, every other
//! operator a kernel compiled at run time by NVRTC — behind the same
//! `InferenceBackend` interface as ONNX Runtime on the CPU. The only crate
//! that names cudarc. CUDA is loaded at run time: on a machine without a GPU
//! the backend reports itself unavailable (and a model falls back to the CPU
//! or fails, as its config says), and the binary still builds and runs.
//!
//! Unsafe code is allowed in this crate alone: kernel launches and the
//! library loader are `unsafe` in cudarc; each use says why it is sound.
#![allow(unsafe_code)]

mod dnn;
pub mod exec;
pub mod graph;
pub mod kernels;
mod libs;
pub mod onnx;

use std::sync::{Arc, OnceLock};

use cudarc::driver::CudaContext;
use flumen_types::inference::{InferenceBackend, LoadRequest, ModelInstance, ModelSignature, Tensor};

pub use exec::Executor;
pub use graph::{Graph, OPS};
pub use kernels::Kernels;

/// The process's GPU (the first CUDA device) with its kernels loaded.
pub struct GpuBackend {
    ctx: Arc<CudaContext>,
    kernels: Arc<Kernels>,
    description: String,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend").field("device", &self.description).finish()
    }
}

/// Why NVRTC or cuBLAS was not found: what to install.
const INSTALL: &str = "install CUDA 13's cuBLAS and NVRTC (`pip install nvidia-cublas nvidia-cuda-nvrtc`) \
                       or name the folder holding them in FLUMEN_CUDA_LIBS";

/// Whether NVRTC can be loaded here (for compiling kernels without a GPU).
pub fn nvrtc_available() -> Result<(), String> {
    libs::preload();
    // SAFETY: only tries to load the library; no CUDA call is made.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } { Ok(()) } else { Err(format!("NVRTC not found: {INSTALL}")) }
}

impl GpuBackend {
    /// The GPU backend, set up once per process; the error says why there
    /// is no usable GPU (no driver, no device, missing libraries).
    pub fn load() -> Result<Arc<GpuBackend>, String> {
        static BACKEND: OnceLock<Result<Arc<GpuBackend>, String>> = OnceLock::new();
        BACKEND.get_or_init(|| GpuBackend::probe().map(Arc::new)).clone()
    }

    fn probe() -> Result<GpuBackend, String> {
        libs::preload();
        // SAFETY: each check only tries to load a library; no CUDA call is made.
        let (driver, blas, nvrtc) = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::cublas::sys::is_culib_present(),
                cudarc::nvrtc::sys::is_culib_present(),
            )
        };
        if !driver {
            return Err("no CUDA driver on this machine (libcuda.so not found)".into());
        }
        if !blas || !nvrtc {
            let missing = if blas { "NVRTC" } else { "cuBLAS" };
            return Err(format!("{missing} not found: {INSTALL}"));
        }
        let count = CudaContext::device_count().map_err(|e| format!("CUDA: {e}"))?;
        if count < 1 {
            return Err("the CUDA driver sees no GPU".into());
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("CUDA: {e}"))?;
        let name = ctx.name().unwrap_or_else(|_| "GPU".into());
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("CUDA: {e}"))?;
        let memory = ctx.total_mem().unwrap_or(0) >> 20;
        keep_pool_memory(&ctx);
        let kernels = Arc::new(Kernels::load(&ctx)?);
        let description = format!("{name} (compute {major}.{minor}, {memory} MiB)");
        tracing::info!(gpu = %description, "CUDA backend ready");
        Ok(GpuBackend { ctx, kernels, description })
    }

    /// The GPU, as plans and summaries name it.
    pub fn device(&self) -> &str {
        &self.description
    }

    /// A graph executor on its own stream, for tests and benchmarks.
    pub fn executor(&self, graph: Graph) -> Result<Executor, String> {
        let stream = self.ctx.new_stream().map_err(|e| format!("CUDA: {e}"))?;
        Executor::new(graph, stream, Arc::clone(&self.kernels))
    }
}

/// Activations come from the device's default memory pool (stream-ordered
/// allocation). By default the pool hands its memory back to the driver at
/// every synchronization — after every batch — so the next batch maps it
/// again; keeping it makes the pool a per-process cache, sized by the
/// largest batch seen (the usual setting for inference servers).
fn keep_pool_memory(ctx: &Arc<CudaContext>) {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold: u64 = u64::MAX;
    // SAFETY: the context is current (bound in `CudaContext::new`); `pool`
    // receives the device's default pool, whose attribute takes a u64.
    let status = unsafe {
        let _ = ctx.bind_to_thread();
        match sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) {
            sys::CUresult::CUDA_SUCCESS => sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            ),
            other => other,
        }
    };
    if status != sys::CUresult::CUDA_SUCCESS {
        tracing::debug!("cannot keep the memory pool's memory ({status:?}); allocations may be slower");
    }
}

impl InferenceBackend for GpuBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn version(&self) -> String {
        self.description.clone()
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<Box<dyn ModelInstance>, String> {
        let bytes = std::fs::read(req.path).map_err(|e| format!("{}: {e}", req.path.display()))?;
        let graph = Graph::parse(&bytes).map_err(|e| format!("{}: {e}", req.path.display()))?;
        let signature = ModelSignature { inputs: graph.inputs.clone(), outputs: graph.outputs.clone() };
        let (free, _) = self.ctx.mem_get_info().map_err(|e| format!("CUDA: {e}"))?;
        if graph.weight_bytes() > free {
            return Err(format!("{} bytes of weights, {free} bytes free on the GPU", graph.weight_bytes()));
        }
        Ok(Box::new(GpuInstance { exec: self.executor(graph)?, signature }))
    }
}

/// One model loaded on the GPU, run by one batcher worker.
struct GpuInstance {
    exec: Executor,
    signature: ModelSignature,
}

impl ModelInstance for GpuInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        self.exec.run(inputs)
    }
}
