//! ONNX Runtime as Flumen's CPU inference backend: the only crate that names
//! `ort`. The runtime's shared library is found on the machine at run time
//! (`find_library`), loaded once per process, and each model instance is one
//! ONNX Runtime session with its own intra-op thread count.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use flumen_types::inference::{
    DType, InferenceBackend, LoadRequest, ModelInstance, ModelSignature, Tensor, TensorSpec,
};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, TensorElementType, ValueType};

/// The environment variable ONNX Runtime's own tooling reads for the library.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// How to get ONNX Runtime, for messages when it is missing.
pub const INSTALL_HINT: &str = "install it with `pip install onnxruntime` (its wheel ships libonnxruntime), \
     or set ORT_DYLIB_PATH to a libonnxruntime shared library (version 1.20 or later), \
     or name the file in the job spec (`[inference] runtime = \"...\"`)";

/// Where the library was found, in the order the places are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Named in the job spec.
    Spec(PathBuf),
    /// `ORT_DYLIB_PATH`.
    Env(PathBuf),
    /// The `onnxruntime` package of a Python on `PATH`.
    Python(PathBuf),
    /// A system library directory.
    System(PathBuf),
}

impl Found {
    pub fn path(&self) -> &Path {
        match self {
            Found::Spec(p) | Found::Env(p) | Found::Python(p) | Found::System(p) => p,
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (how, p) = match self {
            Found::Spec(p) => ("named in the job spec", p),
            Found::Env(p) => ("ORT_DYLIB_PATH", p),
            Found::Python(p) => ("Python's onnxruntime package", p),
            Found::System(p) => ("system library path", p),
        };
        write!(f, "{} ({how})", p.display())
    }
}

/// Why no ONNX Runtime could be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrtError {
    #[error("ONNX Runtime library {path} (named in the job spec) does not exist; {INSTALL_HINT}")]
    SpecMissing { path: PathBuf },
    #[error("ONNX Runtime library {path} (from ORT_DYLIB_PATH) does not exist; {INSTALL_HINT}")]
    EnvMissing { path: PathBuf },
    #[error("no ONNX Runtime found (tried: {tried}); {INSTALL_HINT}")]
    NotFound { tried: String },
    #[error("ONNX Runtime at {found} cannot be used: {message}")]
    Load { found: String, message: String },
}

const LIB_PREFIX: &str = "libonnxruntime.so";

/// Finds libonnxruntime: `explicit` (the job spec), then `ORT_DYLIB_PATH`, then
/// a Python `onnxruntime` package (`python3` on `PATH`), then the system
/// library directories.
pub fn find_library(explicit: Option<&Path>) -> Result<Found, OrtError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(Found::Spec(p.to_owned()))
        } else {
            Err(OrtError::SpecMissing { path: p.to_owned() })
        };
    }
    if let Some(p) = std::env::var_os(DYLIB_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(Found::Env(p)) } else { Err(OrtError::EnvMissing { path: p }) };
    }
    let mut tried = vec![format!("{DYLIB_ENV} (unset)")];
    for python in ["python3", "python"] {
        let out = Command::new(python)
            .args(["-c", "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))"])
            .stderr(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("capi");
                if let Some(p) = library_in(&dir) {
                    return Ok(Found::Python(p));
                }
                tried.push(format!("{python}'s onnxruntime package ({} has no {LIB_PREFIX}*)", dir.display()));
            }
            Ok(_) => tried.push(format!("{python} (no onnxruntime package)")),
            Err(_) => tried.push(format!("{python} (not on PATH)")),
        }
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("LD_LIBRARY_PATH").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    dirs.extend(
        ["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"].map(PathBuf::from),
    );
    for dir in &dirs {
        if let Some(p) = library_in(dir) {
            return Ok(Found::System(p));
        }
    }
    tried.push(format!(
        "system library directories ({})",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    ));
    Err(OrtError::NotFound { tried: tried.join("; ") })
}

/// `libonnxruntime.so` or its versioned file in `dir`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join(LIB_PREFIX);
    if plain.is_file() {
        return Some(plain);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{LIB_PREFIX}."))))
        .collect();
    versioned.sort();
    versioned.pop()
}

/// ONNX Runtime, loaded. One per process: the library and its environment are
/// process-wide.
pub struct OrtBackend {
    env: ort::environment::Environment,
    found: Found,
    version: String,
}

impl fmt::Debug for OrtBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrtBackend").field("found", &self.found).field("version", &self.version).finish()
    }
}

static LOADED: OnceLock<Mutex<Option<Arc<OrtBackend>>>> = OnceLock::new();

impl OrtBackend {
    /// Finds and loads ONNX Runtime (once per process; later calls return the
    /// same backend, whatever they name).
    pub fn load(explicit: Option<&Path>) -> Result<Arc<OrtBackend>, OrtError> {
        if let Some(p) = explicit.filter(|p| !p.is_file()) {
            return Err(OrtError::SpecMissing { path: p.to_owned() });
        }
        let slot = LOADED.get_or_init(|| Mutex::new(None));
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = slot.as_ref() {
            if let Some(p) = explicit.filter(|p| *p != b.found.path()) {
                tracing::warn!(asked = %p.display(), loaded = %b.found, "ONNX Runtime already loaded in this process");
            }
            return Ok(Arc::clone(b));
        }
        let found = find_library(explicit)?;
        let fail = |message: String| OrtError::Load { found: found.to_string(), message };
        let env = ort::init_from(found.path())
            .map_err(|e| fail(e.to_string()))?
            .with_name("flumen")
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let version = version_of(&found);
        tracing::info!(library = %found, %version, "ONNX Runtime loaded");
        let backend = Arc::new(OrtBackend { env, found, version });
        *slot = Some(Arc::clone(&backend));
        Ok(backend)
    }

    pub fn library(&self) -> &Found {
        &self.found
    }
}

/// The runtime's version, from its build string (`git-branch=rel-1.32.0`) or
/// its file name (`libonnxruntime.so.1.32.0`).
fn version_of(found: &Found) -> String {
    let info = ort::info();
    if let Some(v) = info.split("rel-").nth(1).and_then(|r| r.split([',', ' ']).next()) {
        return v.to_owned();
    }
    found
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(&format!("{LIB_PREFIX}.")))
        .unwrap_or("unknown")
        .to_owned()
}

impl InferenceBackend for OrtBackend {
    fn name(&self) -> &str {
        "onnxruntime"
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<Box<dyn ModelInstance>, String> {
        let bytes = std::fs::read(req.path).map_err(|e| format!("cannot read {}: {e}", req.path.display()))?;
        let session = Session::builder(&self.env)
            .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::Level3)?))
            .and_then(|b| Ok(b.with_intra_threads(req.threads.max(1))?))
            .and_then(|b| Ok(b.with_inter_threads(1)?))
            // A spinning pool burns the cores the engine's guests run on.
            .and_then(|b| Ok(b.with_intra_op_spinning(false)?))
            .and_then(|mut b| b.commit_from_memory(&bytes))
            .map_err(|e| format!("{} is not a model ONNX Runtime can load: {e}", req.path.display()))?;
        let signature = ModelSignature {
            inputs: session.inputs().iter().map(|o| spec_of(o.name(), o.dtype(), "input")).collect::<Result<_, _>>()?,
            outputs: session
                .outputs()
                .iter()
                .map(|o| spec_of(o.name(), o.dtype(), "output"))
                .collect::<Result<_, _>>()?,
        };
        Ok(Box::new(OrtInstance { session, signature }))
    }
}

fn dtype_of(t: TensorElementType) -> Option<DType> {
    Some(match t {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Bfloat16 => DType::BF16,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Uint16 => DType::U16,
        TensorElementType::Uint32 => DType::U32,
        TensorElementType::Uint64 => DType::U64,
        TensorElementType::Bool => DType::Bool,
        _ => return None,
    })
}

fn spec_of(name: &str, ty: &ValueType, role: &str) -> Result<TensorSpec, String> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => match dtype_of(*ty) {
            Some(dtype) => Ok(TensorSpec { name: name.to_owned(), dtype, shape: shape.to_vec() }),
            None => Err(format!("{role} `{name}` is a tensor of {ty:?}, which Flumen does not pass")),
        },
        other => Err(format!("{role} `{name}` is {other:?}; Flumen passes tensors only")),
    }
}

struct OrtInstance {
    session: Session,
    signature: ModelSignature,
}

impl ModelInstance for OrtInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        if inputs.len() != self.signature.inputs.len() {
            return Err(format!("{} inputs given, the model takes {}", inputs.len(), self.signature.inputs.len()));
        }
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for (spec, t) in self.signature.inputs.iter().zip(inputs) {
            spec.check(t)?;
            values.push((spec.name.clone(), to_value(t).map_err(|e| format!("input `{}`: {e}", spec.name))?));
        }
        let outputs = self.session.run(values).map_err(|e| e.to_string())?;
        let mut result = Vec::with_capacity(self.signature.outputs.len());
        for spec in &self.signature.outputs {
            let v = outputs.get(&spec.name).ok_or_else(|| format!("output `{}` missing from the run", spec.name))?;
            result.push(from_value(v, spec.dtype).map_err(|e| format!("output `{}`: {e}", spec.name))?);
        }
        Ok(result)
    }
}

fn to_value(t: &Tensor) -> ort::Result<DynValue> {
    let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
    macro_rules! typed {
        ($n:literal, $conv:expr) => {{
            let v: Vec<_> = t.data.chunks_exact($n).map($conv).collect();
            ort::value::Tensor::from_array((shape, v))?.into_dyn()
        }};
    }
    Ok(match t.dtype {
        DType::F32 => typed!(4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        DType::F64 => typed!(8, |c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
        DType::F16 => typed!(2, |c| half::f16::from_le_bytes([c[0], c[1]])),
        DType::BF16 => typed!(2, |c| half::bf16::from_le_bytes([c[0], c[1]])),
        DType::I8 => typed!(1, |c| c[0] as i8),
        DType::U8 => typed!(1, |c| c[0]),
        DType::Bool => typed!(1, |c| c[0] != 0),
        DType::I16 => typed!(2, |c| i16::from_le_bytes([c[0], c[1]])),
        DType::U16 => typed!(2, |c| u16::from_le_bytes([c[0], c[1]])),
        DType::I32 => typed!(4, |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        DType::U32 => typed!(4, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        DType::I64 => typed!(8, |c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
        DType::U64 => typed!(8, |c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
    })
}

fn from_value(v: &DynValue, dtype: DType) -> Result<Tensor, String> {
    macro_rules! typed {
        ($ty:ty, $bytes:expr) => {{
            let (shape, values) = v.try_extract_tensor::<$ty>().map_err(|e| e.to_string())?;
            let shape: Vec<usize> = shape.iter().map(|d| (*d).max(0) as usize).collect();
            let data: Vec<u8> = values.iter().flat_map($bytes).collect();
            (shape, data)
        }};
    }
    let (shape, data) = match dtype {
        DType::F32 => typed!(f32, |x: &f32| x.to_le_bytes()),
        DType::F64 => typed!(f64, |x: &f64| x.to_le_bytes()),
        DType::F16 => typed!(half::f16, |x: &half::f16| x.to_le_bytes()),
        DType::BF16 => typed!(half::bf16, |x: &half::bf16| x.to_le_bytes()),
        DType::I8 => typed!(i8, |x: &i8| x.to_le_bytes()),
        DType::U8 => typed!(u8, |x: &u8| [*x]),
        DType::Bool => typed!(bool, |x: &bool| [u8::from(*x)]),
        DType::I16 => typed!(i16, |x: &i16| x.to_le_bytes()),
        DType::U16 => typed!(u16, |x: &u16| x.to_le_bytes()),
        DType::I32 => typed!(i32, |x: &i32| x.to_le_bytes()),
        DType::U32 => typed!(u32, |x: &u32| x.to_le_bytes()),
        DType::I64 => typed!(i64, |x: &i64| x.to_le_bytes()),
        DType::U64 => typed!(u64, |x: &u64| x.to_le_bytes()),
    };
    Tensor::new(dtype, shape, Bytes::from(data))
}
