//! The executor's CUDA kernels (`kernels.cu`): compiled to PTX at run time
//! with NVRTC for the GPU at hand, cached on disk by source digest and
//! architecture, and loaded once per CUDA context. No `nvcc` at build time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx};
use sha2::{Digest as _, Sha256};

/// The kernels' source.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Every kernel `SOURCE` defines, by its `extern "C"` name.
pub const NAMES: [&str; 15] = [
    "binary_f32",
    "binary_simple_f32",
    "unary_f32",
    "add_bias_rows_f32",
    "softmax_rows_f32",
    "layernorm_rows_f32",
    "gather_rows_f32",
    "cast_i64_f32",
    "transpose_f32",
    "im2col_f32",
    "conv_out_f32",
    "channel_affine_f32",
    "maxpool_f32",
    "plane_mean_f32",
    "bias_act_nchw_f32",
];

/// The NVRTC target for a compute capability: the PTX virtual
/// architecture, which the driver finishes for the exact chip.
pub fn arch_for(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        (m, _) if m >= 9 => "compute_90",
        (8, _) => "compute_80",
        _ => "compute_75",
    }
}

/// Compiles `SOURCE` for `arch` with NVRTC (no GPU needed). The error is
/// NVRTC's log.
pub fn compile(arch: &'static str) -> Result<String, String> {
    let opts = CompileOptions {
        arch: Some(arch),
        options: vec!["--std=c++17".to_owned()],
        name: Some("flumen_kernels.cu".to_owned()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| format!("NVRTC could not compile the executor's kernels for {arch}: {e}"))
}

/// Where compiled PTX is kept: `$FLUMEN_CACHE_DIR/ptx`, else
/// `$XDG_CACHE_HOME/flumen/ptx` or `~/.cache/flumen/ptx`.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FLUMEN_CACHE_DIR") {
        return Some(PathBuf::from(d).join("ptx"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("flumen").join("ptx"))
}

/// The PTX for `arch`: from the cache when this source was compiled for it
/// before, else compiled now and cached (a cache that cannot be written is
/// only a warning).
pub fn ptx_for(arch: &'static str) -> Result<String, String> {
    let digest = hex::encode(&Sha256::digest(SOURCE.as_bytes())[..12]);
    let file = cache_dir().map(|d| d.join(format!("{digest}-{arch}.ptx")));
    if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
        return Ok(text);
    }
    let ptx = compile(arch)?;
    if let Some(f) = &file {
        let written = f
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| std::fs::write(f.with_extension("tmp"), &ptx))
            .and_then(|_| std::fs::rename(f.with_extension("tmp"), f));
        if let Err(e) = written {
            tracing::warn!("cannot cache compiled kernels at {}: {e}", f.display());
        }
    }
    Ok(ptx)
}

/// The kernels loaded into one context.
#[derive(Debug)]
pub struct Kernels {
    functions: HashMap<&'static str, CudaFunction>,
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Kernels, String> {
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("CUDA: {e}"))?;
        let ptx = ptx_for(arch_for(major, minor))?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| format!("CUDA cannot load the kernels: {e}"))?;
        let mut functions = HashMap::new();
        for name in NAMES {
            let f = module.load_function(name).map_err(|e| format!("kernel {name}: {e}"))?;
            functions.insert(name, f);
        }
        Ok(Kernels { functions })
    }

    pub fn get(&self, name: &'static str) -> &CudaFunction {
        // Every name in NAMES was loaded in `load`; callers use only those.
        &self.functions[name]
    }
}
