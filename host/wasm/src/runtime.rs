//! The shared wasmtime engine: configuration, the epoch ticker, and the
//! compile-once cache of components keyed by content digest.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::WasmError;
use crate::instance::{Capabilities, HostState, WitVersion};

/// How often the epoch advances. A guest's call deadline is checked at each
/// tick, so this bounds how late a runaway guest is stopped.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Native stack a guest may use. Well below the async fiber stack, so that
/// deep recursion traps cleanly instead of overflowing the host's stack.
pub const WASM_STACK_BYTES_MAX: usize = 512 * 1024;

/// How long compiling one component may take. wasmtime treats compile-time
/// DoS as out of its scope, so the host bounds it.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of a freed instance's linear memory kept resident in its pooling
/// slot, so the next instance in that slot does not fault them in again.
/// Covers a Rust guest's stack, data and a small heap; memory a guest grew
/// beyond it is given back to the kernel. It costs resident memory only in
/// slots that were used: at most this much per slot.
pub const MEMORY_KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// Like [`MEMORY_KEEP_RESIDENT_BYTES`], for each table.
pub const TABLE_KEEP_RESIDENT_BYTES: usize = 64 << 10;

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

/// Linkers by the contract version and the capabilities they link.
type Linkers = HashMap<(WitVersion, Capabilities), Arc<Linker<HostState>>>;

struct RuntimeInner {
    engine: Engine,
    config: RuntimeConfig,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// Host functions linked once per contract version and set of capabilities.
    linkers: Mutex<Linkers>,
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

/// Core instances one component may make: a Python or JavaScript component
/// built with its WASI imports stubbed out (none linked) holds a core instance
/// per stubbed interface beside its runtime's own, about 30 in all.
pub(crate) const CORE_INSTANCES_PER_COMPONENT: u32 = 48;

impl WasmRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, WasmError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.instances_max)
            .total_core_instances(config.instances_max * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(config.instances_max * 2)
            .total_tables(config.instances_max * 4)
            .max_memory_size(config.memory_bytes_max)
            .max_memories_per_component(4)
            .max_component_instance_size(1 << 20)
            // Keep a freed slot's pages mapped and reset the dirty ones in
            // place (found with the `PAGEMAP_SCAN` ioctl where the kernel has
            // it), instead of `madvise`-ing them away for the next instance
            // to fault in again.
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_BYTES)
            .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES)
            .pagemap_scan(Enabled::Auto);
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
                linkers: Mutex::new(HashMap::new()),
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

    /// The linker for contract `version` with `capabilities`, made by `build`
    /// the first time a process asks for it.
    pub(crate) fn linker(
        &self,
        version: WitVersion,
        capabilities: Capabilities,
        build: impl FnOnce() -> Result<Linker<HostState>, WasmError>,
    ) -> Result<Arc<Linker<HostState>>, WasmError> {
        let mut linkers = self.inner.linkers.lock().map_err(|_| poisoned())?;
        if let Some(l) = linkers.get(&(version, capabilities)) {
            return Ok(l.clone());
        }
        let linker = Arc::new(build()?);
        linkers.insert((version, capabilities), linker.clone());
        Ok(linker)
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
        // Most starts find the component compiled: they need only its digest,
        // hashed through a small buffer, not the whole file in memory.
        let digest = sha256_of_file(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
        if let Some(loaded) = self.load_compiled(&digest)? {
            return Ok(loaded);
        }
        let bytes = fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
        let name = notice_name(path);
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
        if let Some(loaded) = self.load_compiled(&digest)? {
            return Ok(loaded);
        }
        // Seconds of silence otherwise: the CLI prints this target as a plain line.
        let after = if self.inner.config.cache_dir.is_some() { "cached afterwards" } else { "no cache directory" };
        tracing::info!(target: "flumen::notice", "compiling plugin `{name}` (first run, {after})…");
        let started = Instant::now();
        let serialized = self.compile_bounded(bytes).map_err(err)?;
        tracing::debug!(digest = %hex::encode(digest), ms = started.elapsed().as_millis() as u64, "compiled component");
        self.write_cached(&digest, &serialized);
        let component = deserialize(&self.inner.engine, &serialized).map_err(err)?;
        self.inner.compiled.lock().map_err(|_| poisoned())?.insert(digest, component.clone());
        Ok(LoadedComponent { component, digest, cached: false })
    }

    /// The component with content digest `digest` if this process loaded it
    /// already or the disk cache holds it intact; `None` if it must be compiled.
    fn load_compiled(&self, digest: &[u8; 32]) -> Result<Option<LoadedComponent>, WasmError> {
        if let Some(c) = self.inner.compiled.lock().map_err(|_| poisoned())?.get(digest) {
            return Ok(Some(LoadedComponent { component: c.clone(), digest: *digest, cached: true }));
        }
        let Some(component) = self.read_cached(digest) else { return Ok(None) };
        self.inner.compiled.lock().map_err(|_| poisoned())?.insert(*digest, component.clone());
        Ok(Some(LoadedComponent { component, digest: *digest, cached: true }))
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

    /// `<cache>/<engine compatibility hash>/`: an artifact is only ever
    /// loaded by an engine that can run it.
    fn cache_dir(&self) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.inner.config.cache_dir.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{:016x}", h.finish())))
    }

    /// Loads the cached artifact of the component whose digest is `digest`:
    /// `<digest>.<checksum>.cwasm`, where the checksum (see [`Checksum`]) is of
    /// the file's whole content. The file is checked against its name and then
    /// memory-mapped by wasmtime, not copied. A file that does not match its
    /// name (truncated, altered) is removed and ignored (so it is recompiled),
    /// never handed to wasmtime.
    fn read_cached(&self, digest: &[u8; 32]) -> Option<Component> {
        let dir = self.cache_dir()?;
        let prefix = format!("{}.", hex::encode(digest));
        let entries = fs::read_dir(&dir).ok()?;
        // Normally one entry per digest; several only if two compiles of the
        // same component differed, and then any intact one will do.
        let candidates: Vec<(PathBuf, Checksum)> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let sum = name.strip_prefix(&prefix)?.strip_suffix("cwasm")?;
                match sum.strip_suffix('.') {
                    Some(sum) => Some((dir.join(&name), Checksum::parse(sum)?)),
                    // `<digest>.cwasm`: the layout before checksums moved into
                    // the name (a SHA-256 header, then the artifact); never used.
                    None => {
                        let _ = fs::remove_file(dir.join(&name));
                        None
                    }
                }
            })
            .collect();
        candidates.into_iter().find_map(|(path, sum)| match load_checked(&self.inner.engine, &path, sum) {
            Ok(c) => Some(c),
            Err(why) => {
                tracing::warn!(path = %path.display(), "ignoring a compiled-component cache entry: {why}");
                if why.damaged {
                    let _ = fs::remove_file(&path);
                }
                None
            }
        })
    }

    fn write_cached(&self, digest: &[u8; 32], serialized: &[u8]) {
        let Some(dir) = self.cache_dir() else { return };
        let path = dir.join(format!("{}.{}.cwasm", hex::encode(digest), Checksum::of(serialized)));
        let write = || -> std::io::Result<()> {
            fs::create_dir_all(&dir)?;
            // One rename publishes the artifact and its checksum together.
            flumen_types::durable::write(&path, &temp_name(), serialized)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), "cannot cache a compiled component: {e}");
        }
    }
}

/// The checksum of a cached artifact, written into its file name.
///
/// XXH3-128: it guards against accidental damage (a truncated write, a
/// flipped bit, a file cut short by a full disk), not against someone who
/// can write the cache directory (they could rewrite any checksum kept
/// beside the file too). For that threat a cryptographic hash buys nothing,
/// and XXH3 runs at memory speed where SHA-256 costs several times the read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checksum(u128);

impl Checksum {
    fn of(bytes: &[u8]) -> Self {
        Self(xxhash_rust::xxh3::xxh3_128(bytes))
    }

    fn parse(hex32: &str) -> Option<Self> {
        if hex32.len() != 32 {
            return None;
        }
        u128::from_str_radix(hex32, 16).ok().map(Self)
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Why a cache entry was not used.
#[derive(Debug)]
struct Unusable {
    /// The file's content does not match its name: remove it.
    damaged: bool,
    message: String,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Reads the file at `path` once through a small buffer, checks it against
/// `expected`, then has wasmtime map it. If the path no longer names the file
/// that was checked (another process renamed a fresh entry over it in
/// between), the mapped component is dropped unused.
fn load_checked(engine: &Engine, path: &Path, expected: Checksum) -> Result<Component, Unusable> {
    let io = |what: &str, e: std::io::Error| Unusable { damaged: false, message: format!("cannot {what} it: {e}") };
    let mut file = fs::File::open(path).map_err(|e| io("open", e))?;
    let checked = file.metadata().map_err(|e| io("stat", e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; CHECK_CHUNK_BYTES];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| io("read", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let found = Checksum(hasher.digest128());
    if found != expected || len != checked.len() {
        return Err(Unusable {
            damaged: true,
            message: format!("its content ({len} bytes, checksum {found}) does not match its name"),
        });
    }
    let component = deserialize_file(engine, path).map_err(|message| Unusable { damaged: true, message })?;
    let now = fs::metadata(path).map_err(|e| io("stat", e))?;
    if !same_file(&checked, &now) {
        return Err(Unusable { damaged: false, message: "it was replaced while being loaded".into() });
    }
    Ok(component)
}

/// The SHA-256 of the file at `path`, read through a small buffer.
fn sha256_of_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHECK_CHUNK_BYTES];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

/// Bytes read at a time when checking a cached artifact: small enough to
/// stay in cache between the read and the hash.
const CHECK_CHUNK_BYTES: usize = 256 * 1024;

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino(), a.len(), a.mtime(), a.mtime_nsec()) == (b.dev(), b.ino(), b.len(), b.mtime(), b.mtime_nsec())
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    (a.len(), a.modified().ok()) == (b.len(), b.modified().ok())
}

/// A cache entry being written: distinct between processes and threads.
fn temp_name() -> String {
    format!(".tmp-{}-{:016x}", std::process::id(), rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id())
}

fn poisoned() -> WasmError {
    WasmError::Engine("component or linker cache lock poisoned".into())
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
    // SAFETY: `serialized` was produced by `Engine::precompile_component` of
    // this engine just now, in this process.
    unsafe { Component::deserialize(engine, serialized) }.map_err(|e| format!("cannot load compiled component: {e:#}"))
}

#[allow(unsafe_code)]
fn deserialize_file(engine: &Engine, path: &Path) -> Result<Component, String> {
    // SAFETY: wasmtime maps the file and runs the code in it, so the file
    // must hold what `Engine::precompile_component` wrote and must not change
    // while mapped.
    // 1. Content: `load_checked` read the whole file just before and its
    //    checksum matched the one in its name, which `write_cached` computed
    //    from the artifact of an engine with the same compatibility hash (the
    //    directory's name); wasmtime checks its own header, version and
    //    engine settings on top. After mapping, `load_checked` verifies that
    //    the path still names the file it checked, and drops the component
    //    otherwise, before any of its code has run.
    // 2. No change while mapped: Flumen never writes a cache entry in place;
    //    it writes a temporary file and renames it, which leaves a mapped old
    //    file intact. Only someone else writing into the file in place (or
    //    truncating it) while a process runs could change the mapped code or
    //    fault a read; the cache directory is the user's own, and whoever can
    //    write it can already run code as that user.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("cannot load compiled component: {e:#}"))
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

/// How the "compiling plugin …" notice names a component file: its stem, or
/// for a package in a store (`<name>/<version>/component.wasm`) `name@version`.
fn notice_name(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let version_dir = path.parent();
    let name_dir = version_dir.and_then(Path::parent);
    match (stem.as_str(), version_dir.and_then(Path::file_name), name_dir.and_then(Path::file_name)) {
        ("component", Some(version), Some(name)) => format!("{}@{}", name.to_string_lossy(), version.to_string_lossy()),
        _ => stem,
    }
}
