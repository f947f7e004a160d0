//! The shared wasmtime engine: configuration, the epoch ticker, and the
//! compile-once cache of components keyed by content digest.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::WasmError;

/// How often the epoch advances. A guest's call deadline is checked at each
/// tick, so this bounds how late a runaway guest is stopped.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Native stack a guest may use. Well below the async fiber stack, so that
/// deep recursion traps cleanly instead of overflowing the host's stack.
pub const WASM_STACK_BYTES_MAX: usize = 512 * 1024;

/// How long compiling one component may take. wasmtime treats compile-time
/// DoS as out of its scope, so the host bounds it.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of a [`WasmRuntime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Largest linear memory any instance may have, in bytes: an operator
    /// whose `memory_mb` is above it is refused, never silently capped.
    /// Sizes the pooling allocator's slots (each slot reserves 4 GiB of
    /// address space, not memory, whatever this is).
    pub memory_bytes_max: usize,
    /// Instances that can live at once (pooling allocator slots).
    pub instances_max: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            memory_bytes_max: usize::try_from(flumen_types::MEMORY_MB_MAX << 20).unwrap_or(usize::MAX),
            instances_max: flumen_types::OPERATOR_INSTANCES_MAX + flumen_types::INSTANCE_SLOTS_SPARE,
        }
    }
}

/// The wasmtime engine shared by every operator of a process.
#[derive(Clone, Debug)]
pub struct WasmRuntime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    config: RuntimeConfig,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    ticker_stop: Arc<AtomicBool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RuntimeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl WasmRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, WasmError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.instances_max)
            .total_core_instances(config.instances_max * 4)
            .total_memories(config.instances_max * 2)
            .total_tables(config.instances_max * 4)
            .max_memory_size(config.memory_bytes_max)
            .max_memories_per_component(4)
            .max_component_instance_size(1 << 20);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .max_wasm_stack(WASM_STACK_BYTES_MAX)
            .async_stack_size(WASM_STACK_BYTES_MAX + 1024 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("flumen-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| WasmError::Engine(format!("cannot start the epoch thread: {e}")))?
        };
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                config,
                compiled: Mutex::new(HashMap::new()),
                ticker_stop,
                ticker: Mutex::new(Some(ticker)),
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Loads the component at `path`: compiles it once per content digest
    /// (or loads the compiled artifact from the disk cache).
    pub fn load_component(&self, path: &Path) -> Result<LoadedComponent, WasmError> {
        let file_err = |message: String| WasmError::Component { path: path.to_path_buf(), message };
        let meta = fs::metadata(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
        if meta.len() > flumen_types::COMPONENT_BYTES_MAX {
            return Err(file_err(format!(
                "{} bytes is over the limit of {} bytes for a component",
                meta.len(),
                flumen_types::COMPONENT_BYTES_MAX
            )));
        }
        let bytes = fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.load_named(&bytes, &name).map_err(|e| match e {
            WasmError::Component { message, .. } => file_err(message),
            other => other,
        })
    }

    /// Like [`Self::load_component`], for bytes in memory.
    pub fn load_component_bytes(&self, bytes: &[u8]) -> Result<LoadedComponent, WasmError> {
        self.load_named(bytes, "a component")
    }

    fn load_named(&self, bytes: &[u8], name: &str) -> Result<LoadedComponent, WasmError> {
        let err = |message: String| WasmError::Component { path: PathBuf::from("<memory>"), message };
        check_header(bytes).map_err(err)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(c) = self.inner.compiled.lock().map_err(|_| poisoned())?.get(&digest) {
            return Ok(LoadedComponent { component: c.clone(), digest, cached: true });
        }
        let (component, cached) = match self.read_cached(&digest) {
            Some(c) => (c, true),
            None => {
                // Seconds of silence otherwise: the CLI prints this target as a plain line.
                let after =
                    if self.inner.config.cache_dir.is_some() { "cached afterwards" } else { "no cache directory" };
                tracing::info!(target: "flumen::notice", "compiling plugin `{name}` (first run, {after})…");
                let started = Instant::now();
                let serialized = self.compile_bounded(bytes).map_err(err)?;
                tracing::debug!(digest = %hex::encode(digest), ms = started.elapsed().as_millis() as u64, "compiled component");
                self.write_cached(&digest, &serialized);
                (deserialize(&self.inner.engine, &serialized).map_err(err)?, false)
            }
        };
        self.inner.compiled.lock().map_err(|_| poisoned())?.insert(digest, component.clone());
        Ok(LoadedComponent { component, digest, cached })
    }

    fn compile_bounded(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let engine = self.inner.engine.clone();
        let bytes = bytes.to_vec();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("flumen-compile".into())
            .spawn(move || {
                let _ = tx.send(engine.precompile_component(&bytes).map_err(|e| format!("{e:#}")));
            })
            .map_err(|e| format!("cannot start a compile thread: {e}"))?;
        match rx.recv_timeout(COMPILE_TIMEOUT) {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("not a valid component: {e}")),
            Err(_) => Err(format!("compiling took longer than {} s; refused", COMPILE_TIMEOUT.as_secs())),
        }
    }

    /// `<cache>/<engine compatibility hash>/<digest>.cwasm`: an artifact is only
    /// ever loaded by an engine that can run it.
    fn cache_path(&self, digest: &[u8; 32]) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.inner.config.cache_dir.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{:016x}", h.finish())).join(format!("{}.cwasm", hex::encode(digest))))
    }

    /// Reads a cached artifact, whose first 32 bytes are the SHA-256 of the
    /// rest: a truncated or altered file is ignored (and recompiled), never
    /// handed to `deserialize`.
    fn read_cached(&self, digest: &[u8; 32]) -> Option<Component> {
        let path = self.cache_path(digest)?;
        let data = fs::read(&path).ok()?;
        if data.len() < 32 || Sha256::digest(&data[32..]).as_slice() != &data[..32] {
            tracing::warn!(path = %path.display(), "ignoring a damaged compiled-component cache entry");
            return None;
        }
        deserialize(&self.inner.engine, &data[32..]).ok()
    }

    fn write_cached(&self, digest: &[u8; 32], serialized: &[u8]) {
        let Some(path) = self.cache_path(digest) else { return };
        let write = || -> std::io::Result<()> {
            let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent"))?;
            fs::create_dir_all(dir)?;
            let mut tmp = tempfile_in(dir)?;
            tmp.1.write_all(&Sha256::digest(serialized))?;
            tmp.1.write_all(serialized)?;
            tmp.1.sync_all()?;
            fs::rename(&tmp.0, &path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), "cannot cache a compiled component: {e}");
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let name = format!(".tmp-{}-{:016x}", std::process::id(), rand_u64());
    let path = dir.join(name);
    let file = fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok((path, file))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id())
}

fn poisoned() -> WasmError {
    WasmError::Engine("component cache lock poisoned".into())
}

/// Tells a core module, a component and garbage apart before compiling.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (missing the `\\0asm` header)".into());
    }
    match &bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err("this is a core WebAssembly module, not a component: build it for \
             `wasm32-wasip2`, or wrap it with `wasm-tools component new`"
            .into()),
        v => Err(format!("unsupported WebAssembly binary version {v:02x?}; expected a component")),
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, serialized: &[u8]) -> Result<Component, String> {
    // SAFETY: `serialized` was produced by `Engine::precompile_component` of an
    // engine with the same compatibility hash, either just now or read back
    // from the cache after its SHA-256 matched the one written beside it.
    unsafe { Component::deserialize(engine, serialized) }.map_err(|e| format!("cannot load compiled component: {e:#}"))
}

/// A compiled component and its content digest.
#[derive(Clone)]
pub struct LoadedComponent {
    pub(crate) component: Component,
    pub digest: [u8; 32],
    /// Whether it came from a cache rather than a fresh compile.
    pub cached: bool,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("digest", &hex::encode(self.digest))
            .field("cached", &self.cached)
            .finish()
    }
}
