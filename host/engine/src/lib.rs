//! The Flumen engine: the one public host API. Loads a job spec, plans it,
//! opens its operators and runs it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flumen_engine::EngineError> {
//! let engine = flumen_engine::Engine::new(flumen_engine::EngineOptions::default())?;
//! let job = engine.prepare(std::path::Path::new("job.toml")).await?;
//! let summary = job.run(std::future::pending()).await?;
//! println!("{}", summary.render());
//! # Ok(()) }
//! ```

mod exec;
mod executor;
mod gate;
mod inflight;
mod meta;
mod metrics;
mod models;
mod plan;
mod route;
mod router;
mod split;
mod state;
mod task;
mod upgrade;

use std::path::PathBuf;

pub use arrow_array::RecordBatch;
pub use arrow_schema::{Schema, SchemaRef};
pub use exec::{CHECKPOINT_ID_FLOOR_MAX, CommitFence, RunOptions};
pub use flumen_dataflow::Event;
pub use flumen_package::Manifest as PackageManifest;
pub use split::{LinkFuture, PartLink, RemoteReceiver, RemoteSender, Split};
pub use upgrade::{HEALTH_BATCHES_DEFAULT, JobControl, UpgradeError, UpgradeOutcome, UpgradeRequest};

pub use flumen_connectors::ConnectorError;
pub use flumen_dataflow::{LogicalGraph, NodeKind, Region};
pub use flumen_spec::SpecError;
pub use flumen_wasm::{CallError, CallErrorKind, GuestErrorKind};
pub use metrics::{JobMetrics, JobSummary, ModelStats, NodeMetrics, NodeSummary, RegionMetrics, RegionSummary};
pub use models::{inspect_models, list_models};
pub use plan::{DEAD_LETTER_ERROR_COLUMN, DEAD_LETTER_OPERATOR_COLUMN, PreparedJob, job_graph};

/// Describes a component file: digest, kind, capabilities, imports and exports.
pub fn inspect_component(path: &std::path::Path) -> Result<String, EngineError> {
    Ok(flumen_wasm::inspect(path)?)
}

/// Arms the fail points named in `FLUMEN_FAILPOINTS`, e.g.
/// `checkpoint::after-manifest=return` (the process aborts there) or
/// `checkpoint::after-manifest=2*off->return` (on the third pass). Used by
/// fault-injection tests to crash at each step of the commit protocol; the
/// points are listed in ARCHITECTURE.md.
pub fn arm_fail_points_from_env() -> Result<(), FailPointsError> {
    let Ok(spec) = std::env::var("FLUMEN_FAILPOINTS") else { return Ok(()) };
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let refused = |reason: String| FailPointsError { item: item.to_owned(), reason };
        let (name, actions) = item.split_once('=').ok_or_else(|| refused("not `name=actions`".into()))?;
        fail::cfg(name.trim(), actions.trim()).map_err(refused)?;
    }
    Ok(())
}

/// A `FLUMEN_FAILPOINTS` item that cannot be armed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FLUMEN_FAILPOINTS: `{item}`: {reason}")]
pub struct FailPointsError {
    pub item: String,
    pub reason: String,
}

/// Why a run cannot start or resume as asked. Nothing was deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// `--resume` or `--from-scratch` on a job without a `[checkpoint]` table.
    #[error("{}: --{flag} needs a [checkpoint] table in the job spec", spec.display())]
    NotCheckpointed { spec: PathBuf, flag: &'static str },
    /// The checkpoint store holds an earlier run and neither flag says what to do.
    #[error(
        "{store} holds checkpoints of an earlier run of this job; pass --resume to continue it, or --from-scratch \
         to start over (this deletes its checkpoints and committed output)"
    )]
    EarlierRun { store: String },
    /// No intact checkpoint, and starting over would delete what an earlier run left.
    #[error(
        "region `{region}` {}: its checkpoint directory {} has no intact checkpoint to continue from, and starting \
         over would lose what an earlier run left:{}\nNo output was deleted (damaged manifests are kept in \
         .quarantine). To start over, deleting that output and those checkpoints, run: flumen run --resume \
         --from-scratch {}",
        if *first { "cannot start" } else { "failed and cannot restart" },
        dir.display(),
        in_the_way.iter().map(|w| format!("\n  - {w}")).collect::<String>(),
        spec.display()
    )]
    NoIntactCheckpoint { region: String, first: bool, dir: PathBuf, in_the_way: Vec<String>, spec: PathBuf },
    /// The checkpoint has a participant the job no longer has.
    #[error(
        "checkpoint {checkpoint} of region `{region}` holds `{participant}`, which this job does not have (an \
         operator was removed or its parallelism changed)"
    )]
    UnknownParticipant { region: String, checkpoint: u64, participant: String },
    /// [`RunOptions::regions`] on a job without a `[checkpoint]` table.
    #[error(
        "{}: running only some of a job's regions needs a [checkpoint] table in the job spec (without checkpoints a \
         job commits all or nothing across its regions, which cannot be split)",
        spec.display()
    )]
    RegionsNeedCheckpoints { spec: PathBuf },
    /// [`RunOptions::split`] without exactly one region chosen in [`RunOptions::regions`].
    #[error("{}: a region split across processes is run one region at a time ({regions} chosen)", spec.display())]
    SplitNeedsOneRegion { spec: PathBuf, regions: usize },
    /// [`RunOptions::split`] is not a valid split.
    #[error("{}: {reason}", spec.display())]
    BadSplit { spec: PathBuf, reason: String },
    /// [`RunOptions::regions`] names regions the job does not have, or none at all.
    #[error(
        "{}: {}; this job's regions are: {}",
        spec.display(),
        if unknown.is_empty() {
            "no region was chosen to run".to_owned()
        } else {
            format!(
                "no pipelined region named {}",
                unknown.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
            )
        },
        regions.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
    )]
    UnknownRegions { spec: PathBuf, unknown: Vec<String>, regions: Vec<String> },
    /// [`RunOptions::checkpoint_id_floor`] above [`CHECKPOINT_ID_FLOOR_MAX`].
    #[error("checkpoint id floor {floor} is above the largest, {CHECKPOINT_ID_FLOOR_MAX}")]
    IdFloorTooHigh { floor: u64 },
}

/// Settings of an [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Directories searched for plugins named by bare name (`plugin = "filter"`).
    pub plugin_dirs: Vec<PathBuf>,
    /// Where compiled components are cached across runs (`None`: memory only).
    pub cache_dir: Option<PathBuf>,
    /// Where plugins named as packages (`plugin = "name@1.2"`) come from, and
    /// which signers are trusted. `None`: a job naming a package is refused.
    pub packages: Option<PackageOptions>,
}

/// The local package store and the trust policy every package a job names
/// must pass before it is loaded (fail-closed: see `flumen_package::trust`).
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// A directory registry (`flumen_package::DirRegistry`) holding pulled packages.
    pub store: PathBuf,
    pub trust: std::sync::Arc<flumen_package::TrustPolicy>,
}

/// Runs jobs; holds the compiled-component cache shared by all of them and
/// the engine's own threads (one pool for guests, one for I/O). Its async
/// methods may be awaited from any runtime, current-thread included.
#[derive(Debug, Clone)]
pub struct Engine {
    runtime: flumen_wasm::WasmRuntime,
    options: EngineOptions,
    executors: std::sync::Arc<executor::Executors>,
}

impl Engine {
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let runtime = flumen_wasm::WasmRuntime::new(flumen_wasm::RuntimeConfig {
            cache_dir: options.cache_dir.clone(),
            ..Default::default()
        })
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        let executors = std::sync::Arc::new(executor::Executors::new()?);
        Ok(Self { runtime, options, executors })
    }

    /// Makes a package of the local store ready to run: reads it by version
    /// (`name@1.2.0`) or digest (`name@sha256:…`) — which checks the component
    /// against the manifest — checks it against the trust policy, and
    /// compiles it into the component cache (a no-op when cached). What a
    /// cluster worker does when a package is hot-loaded, and before a live
    /// upgrade to it.
    pub fn load_package(&self, reference: &str) -> Result<LoadedPackage, EngineError> {
        use flumen_package::{DirRegistry, PluginRef};
        let failed = |e: String| EngineError::Package(format!("{reference}: {e}"));
        let Some(packages) = &self.options.packages else {
            return Err(failed("this engine has no package store".into()));
        };
        let store = DirRegistry::open(&packages.store).map_err(|e| failed(e.to_string()))?;
        let package = match PluginRef::parse(reference).map_err(|e| failed(e.to_string()))? {
            PluginRef::Digest { digest, .. } => store.by_digest(&digest),
            PluginRef::Version { name, requirement, text } => match store.resolve(&name, &requirement) {
                Ok(Some(v)) => store.get(&name, &v),
                Ok(None) => return Err(failed(format!("no version of `{name}` matching `{text}` in the store"))),
                Err(e) => Err(e),
            },
            PluginRef::Bare(_) => return Err(failed("names no version: write name@version or name@sha256:…".into())),
        }
        .map_err(|e| failed(e.to_string()))?;
        packages.trust.check(&package).map_err(|e| failed(format!("refused by the trust policy: {e}")))?;
        let m = package.manifest().clone();
        let path = store.root().join(&m.name).join(m.version.to_string()).join(flumen_package::package::COMPONENT_FILE);
        let started = std::time::Instant::now();
        let loaded = self.runtime.load_component(&path).map_err(|e| failed(e.to_string()))?;
        if flumen_package::digest::digest_hex(&m.component.digest) != Some(hex::encode(loaded.digest).as_str()) {
            return Err(failed(format!("{} changed after it was checked", path.display())));
        }
        Ok(LoadedPackage {
            reference: format!("{}@{}", m.name, package.digest()),
            path,
            manifest: m,
            cached: loaded.cached,
            compile: started.elapsed(),
        })
    }
}

/// A package [`Engine::load_package`] made ready.
#[derive(Debug, Clone)]
pub struct LoadedPackage {
    /// `name@sha256:<package digest>`.
    pub reference: String,
    /// Its component in the store.
    pub path: PathBuf,
    pub manifest: flumen_package::Manifest,
    /// The compiled component came from the cache.
    pub cached: bool,
    /// How long loading (and compiling, unless cached) took.
    pub compile: std::time::Duration,
}

/// Why a checkpoint could not be written, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint store failed (I/O, the object store), or holds damaged
    /// or mismatching files or manifests; also keyed state being saved or restored.
    #[error(transparent)]
    Store(#[from] flumen_state::StateError),
    /// Pinning or restoring the blobs a checkpoint keeps failed.
    #[error(transparent)]
    Blobs(#[from] flumen_blob::BlobError),
    /// A part of a checkpoint could not be prepared for writing (in-flight
    /// batches that do not encode, a working directory that cannot be made).
    #[error("{0}")]
    Write(String),
    /// The checkpoint does not fit this job (an operator lost a capability, a
    /// finished sink got data), or a participant's record in it is malformed
    /// or of an unknown version.
    #[error("{0}")]
    Mismatch(String),
}

impl From<String> for CheckpointError {
    fn from(message: String) -> Self {
        Self::Mismatch(message)
    }
}

impl From<&str> for CheckpointError {
    fn from(message: &str) -> Self {
        Self::Mismatch(message.to_owned())
    }
}

impl EngineError {
    pub(crate) fn checkpoint<E: Into<CheckpointError>>(e: E) -> Self {
        Self::Checkpoint(e.into())
    }
}

/// Why a job could not be prepared or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The job spec (or what it names) is unusable; located in the file.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A source or sink failed while running.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// An operator failed and its policy says to fail the job.
    #[error(transparent)]
    Operator(CallError),
    /// A component could not be loaded or linked.
    #[error(transparent)]
    Wasm(#[from] flumen_wasm::WasmError),
    /// A consumer stopped before its input ended (it failed; see its error).
    #[error("a downstream subtask stopped early")]
    DownstreamGone,
    #[error("cancelled")]
    Cancelled,
    /// Stopped on request after checkpoint `checkpoint` was committed; `--resume` continues.
    #[error("stopped after checkpoint {checkpoint}; run again with --resume to continue")]
    Stopped { checkpoint: u64 },
    /// The run's [`CommitFence`] refused: the run ended at once, no region
    /// restarted, and nothing more was written or committed.
    #[error("this process was fenced: {reason}; nothing more is committed")]
    Fenced { reason: String },
    /// Writing or reading checkpoints failed, or a checkpoint is damaged.
    #[error("checkpoint: {0}")]
    Checkpoint(#[source] CheckpointError),
    /// A run cannot start or resume as asked.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// A region kept failing after every restart it was allowed.
    #[error("region `{region}` failed after {attempts} restarts; last failure: {last}")]
    Restarts { region: String, attempts: u32, last: Box<EngineError> },
    /// Another part of a region run by several processes failed its attempt
    /// (the region restarts on every part per `[restart]`).
    #[error("part {part} of the region failed: {reason}")]
    Part { part: u32, reason: String },
    /// The link to another part of a region run by several processes broke,
    /// or that part ended the run: this part stops, restarting nothing on its own.
    #[error("lost the link to another part of the region: {reason}")]
    PartLost { part: u32, reason: String },
    /// A model repository cannot be read, or one of its models loaded.
    #[error("{0}")]
    Models(String),
    /// A package could not be made ready ([`Engine::load_package`]).
    #[error("package {0}")]
    Package(String),
    /// A version on probation after a live upgrade failed (to open, to
    /// restore, or a call): the region restarts from a checkpoint that runs
    /// the old version (see `upgrade.rs`). Not counted as a restart.
    #[error("operator `{operator}`: the upgraded version failed on probation, rolling back: {reason}")]
    Upgrade { operator: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
}
