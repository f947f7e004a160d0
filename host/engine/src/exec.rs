//! Running a prepared job: one supervisor per pipelined region, one task per
//! subtask, bounded channels between them, batches shared by reference,
//! control events (watermarks, barriers, end) in band.
//!
//! Without `[checkpoint]` a job is all-or-nothing: sinks commit only after
//! every subtask of every region succeeded, and any failure fails the job.
//!
//! With `[checkpoint]` each region checkpoints and recovers on its own (the
//! protocol, step by step, is in ARCHITECTURE.md, "Checkpoints"):
//! 1. the region's coordinator injects barrier `n` at its sources on a timer;
//! 2. subtasks snapshot at the barrier and acknowledge (sinks pre-commit);
//! 3. when every subtask acknowledged, the manifest is written durably (and,
//!    with `[checkpoint] store`, put in the object store after the files it
//!    references), and only then are the sinks' pre-committed transactions
//!    published;
//! 4. when a subtask of the region fails, the region's tasks are stopped and
//!    restarted from its latest intact checkpoint; other regions keep running.
//!
//! A cluster runs a checkpointed job across processes ([`RunOptions`]): each
//! runs some of its regions (`regions`) against one shared checkpoint
//! directory, with its own working copy of operator state (`scratch_dir`),
//! ids above a floor it was given (`checkpoint_id_floor`), and a
//! [`CommitFence`] asked before every manifest and every commit, so that a
//! process that lost its lease writes and commits nothing more.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::meta::ParticipantMeta;
use arrow_schema::SchemaRef;
use flumen_blob::BlobStore;
use flumen_dataflow::{AlignmentMode, CoordAction, Coordinator, CoordinatorConfig, Event, LogicalGraph, PhysicalPlan};
use flumen_state::{CheckpointStore, Manifest, Participant, RemoteStore, StateFile, StateStore};
use flumen_types::{NodeId, SubtaskId};
use flumen_wasm::{OpenContext, OperatorInstance};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::gate::{InputGate, Rx};
use crate::metrics::{NodeMetrics, RegionMetrics};
use crate::plan::{PreparedJob, Role};
use crate::router::{RouteEdge, Router, Tx};
use crate::split::{Incoming, PartEnd, PartMsg, Split, channel_key};
use crate::task::{Finished, OperatorTask, Restore, SinkBlobMode, SinkTask, SourceTask, TaskCkpt, TaskMsg};
use crate::{EngineError, JobSummary, ResumeError};
use flumen_connectors::{PlannedSource, SinkSpec, SinkWriter};
use flumen_spec::{CheckpointMode, JobSpec};

/// Asked by a run right before each step that makes something durable or
/// visible: writing a checkpoint manifest, publishing the sinks' transactions
/// of a completed checkpoint (also when recovery publishes them again), the
/// final commit of the sinks of a job without checkpoints, the stop
/// checkpoint, and before a region removes what an earlier attempt left
/// (staged or newer published parts, checkpoints it starts over from).
///
/// `Err(reason)` fails the whole run at once with [`EngineError::Fenced`]: no
/// region restarts, and nothing more is written or committed. A cluster
/// worker returns it once its lease is lost, so that a worker that was
/// replaced cannot commit beside its replacement. Called from the engine's
/// I/O threads, where it may block briefly (it runs in a blocking section),
/// from several regions at once.
pub trait CommitFence: Send + Sync + std::fmt::Debug {
    /// `Ok(())` while this process may still commit.
    fn check(&self) -> Result<(), String>;
}

/// How to start a run. `RunOptions::default()` runs the whole job, as
/// `flumen run` does.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the latest intact checkpoint of each region instead of
    /// starting over (refused without `[checkpoint]`).
    pub resume: bool,
    /// Starting a region over may delete what an earlier run left: its
    /// checkpoints and the committed part files of its exactly-once sinks.
    /// Without `resume`, every region starts over; with it, only a region
    /// with no intact checkpoint does. Without this flag, a start from
    /// nothing that would delete committed output or damaged checkpoints is
    /// refused ([`EngineError::Resume`]), naming what is in the way.
    pub from_scratch: bool,
    /// Run only the pipelined regions of these names
    /// ([`flumen_dataflow::LogicalGraph::region_name`], as `flumen plan`
    /// prints them); the others are not started at all: their sources,
    /// operators and sinks neither run nor commit, and their checkpoint
    /// directories are not touched (whether earlier checkpoints exist is asked
    /// of the chosen regions only). Other processes may run them at the same
    /// time against the same checkpoint directory (give each its own
    /// `scratch_dir`). Needs `[checkpoint]` (a job without checkpoints commits
    /// all or nothing across its regions); an empty set or a name that is not
    /// one of the job's regions is refused before anything runs
    /// ([`ResumeError`]). The job's blob key lineage is joined rather than
    /// replaced ([`flumen_blob::BlobStore::bind_shared_lineage`]). The
    /// summary covers the regions run. `None`: every region.
    pub regions: Option<BTreeSet<String>>,
    /// Where the working copy of operator state lives (created; anything in
    /// it is deleted at the start, as it is scratch a run rebuilds from its
    /// checkpoints). `None`: `<checkpoint dir>/.working`, or a temporary
    /// directory for a job without checkpoints. Processes sharing a checkpoint
    /// directory need one each.
    pub scratch_dir: Option<PathBuf>,
    /// Asked before each manifest and each commit ([`CommitFence`]); `None`:
    /// never fenced.
    pub fence: Option<Arc<dyn CommitFence>>,
    /// Checkpoint ids this run hands out, in every region, on start and on
    /// every regional restart, are above it (as well as above every id the
    /// region ever used). A cluster raises it with each new lease, so ids of
    /// different owners of a region never meet. At most
    /// [`CHECKPOINT_ID_FLOOR_MAX`]. Default 0: ids continue from the region's own.
    pub checkpoint_id_floor: u64,
    /// Run only this process's part of the one region named in `regions`
    /// (subtask `i` of every node runs in part `i % parts`), linked to the
    /// processes that run the other parts ([`Split`], `split.rs`). Part 0
    /// leads: it decides what each attempt restores, coordinates the
    /// region's checkpoints and commits; the others follow it, ignoring
    /// `resume`, `from_scratch` and `stop` (the leader's decide). `None`: the
    /// regions run whole here.
    pub split: Option<Split>,
    /// Takes live upgrades of the job's operators while it runs
    /// ([`crate::JobControl::upgrade`], `upgrade.rs`). `None`: none are taken.
    pub control: Option<crate::JobControl>,
}

/// The highest [`RunOptions::checkpoint_id_floor`]: sinks name part files by
/// checkpoint id and take ids below [`flumen_connectors::FINAL_CHECKPOINT`];
/// this leaves room for 2^32 checkpoints above the floor.
pub const CHECKPOINT_ID_FLOOR_MAX: u64 = flumen_connectors::FINAL_CHECKPOINT - (1 << 32);

/// Asks `fence` whether this process may still commit.
fn check_fence(fence: Option<&Arc<dyn CommitFence>>) -> Result<(), EngineError> {
    match fence {
        None => Ok(()),
        Some(f) => tokio::task::block_in_place(|| f.check()).map_err(|reason| EngineError::Fenced { reason }),
    }
}

/// What a payload of an acknowledgement holds.
type Ack = (Vec<StateFile>, ParticipantMeta);

/// Everything the regions share, read-only.
struct Shared {
    spec: JobSpec,
    graph: LogicalGraph,
    plan: PhysicalPlan,
    base_dir: PathBuf,
    checkpoints: Option<CheckpointStore>,
    /// `[checkpoint] store`: the durable copy of `checkpoints`, when configured.
    remote: Option<Arc<RemoteStore>>,
    /// Held so the working state store lives as long as the run.
    _state: Option<StateStore>,
    mode: AlignmentMode,
    blobs: BlobStore,
    /// The job's models, whose memos are synced with every checkpoint.
    models: Option<Arc<flumen_inference::ModelHub>>,
    /// Where operator subtasks (guest CPU work) run; everything else runs on the I/O executor.
    guest: tokio::runtime::Handle,
    /// [`RunOptions::fence`].
    fence: Option<Arc<dyn CommitFence>>,
    /// [`RunOptions::checkpoint_id_floor`].
    id_floor: u64,
    /// Compiles versions that live upgrades brought, when a restore needs them.
    runtime: flumen_wasm::WasmRuntime,
}

impl Shared {
    /// [`check_fence`] with this run's fence.
    fn fence(&self) -> Result<(), EngineError> {
        check_fence(self.fence.as_ref())
    }
}

/// Closes the job's blob store when the run ends (see [`BlobStore::close`]).
struct CloseBlobs(BlobStore);

impl Drop for CloseBlobs {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What a router needs to know of its node.
struct NodeView {
    id: NodeId,
    schema: SchemaRef,
    metrics: Arc<NodeMetrics>,
}

struct RunNode {
    index: usize,
    id: NodeId,
    parallelism: u32,
    schema: SchemaRef,
    metrics: Arc<NodeMetrics>,
    role: RunRole,
}

// One per node, made once per run: the size of the operator variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum RunRole {
    Source(Box<dyn PlannedSource>),
    Operator {
        /// The version the spec names.
        version: crate::upgrade::Version,
        capabilities: flumen_wasm::Capabilities,
        /// Each subtask's context, and its state (granted `state`) as the engine snapshots and restores it.
        ctxs: Vec<(OpenContext, Option<crate::state::SharedState>)>,
        /// Instances opened at prepare time, used by the first attempt.
        opened: Vec<Option<OperatorInstance>>,
        policy: flumen_types::FailurePolicy,
    },
    Sink(SinkSpec),
}

impl PreparedJob {
    /// Runs the job to completion, or until `cancel` resolves.
    pub async fn run(self, cancel: impl Future<Output = ()>) -> Result<JobSummary, EngineError> {
        self.run_with(RunOptions::default(), cancel).await
    }

    /// Runs the job. When `stop` resolves, a job without checkpoints is
    /// cancelled (nothing committed); a job with checkpoints takes one more
    /// checkpoint, commits it and ends with [`EngineError::Stopped`], so that
    /// `resume` continues it later.
    pub async fn run_with(
        self,
        options: RunOptions,
        stop: impl Future<Output = ()>,
    ) -> Result<JobSummary, EngineError> {
        let PreparedJob { spec, graph, nodes, metrics, blobs, models, executors, runtime } = self;
        let job = Job { spec, graph, nodes, metrics, blobs, models, guest: executors.guest(), runtime };
        // The caller's `stop` stays here, on the caller's side: the job learns of it by a message.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            // A dropped sender is no stop: only a message is.
            if stop_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        // Every log line of the run carries the job's name; a region's, its region; a
        // subtask's, its node and index (as span fields, whatever the subscriber prints).
        let span = tracing::info_span!("job", job = %job.spec.job.name);
        let mut running = executors.spawn_io(job.run(options, stopped).instrument(span));
        tokio::pin!(stop);
        let mut stop_tx = Some(stop_tx);
        loop {
            tokio::select! {
                outcome = &mut running => return outcome?,
                _ = &mut stop, if stop_tx.is_some() => {
                    if let Some(tx) = stop_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }
}

/// A prepared job as it runs on the engine's I/O executor: [`PreparedJob`]
/// without the executors themselves, which stay with the caller (a runtime
/// must not be shut down from one of its own tasks).
struct Job {
    spec: JobSpec,
    graph: LogicalGraph,
    nodes: Vec<crate::plan::PreparedNode>,
    metrics: Arc<crate::JobMetrics>,
    blobs: BlobStore,
    models: Option<Arc<flumen_inference::ModelHub>>,
    guest: tokio::runtime::Handle,
    runtime: flumen_wasm::WasmRuntime,
}

impl Job {
    async fn run(self, options: RunOptions, stop: impl Future<Output = ()>) -> Result<JobSummary, EngineError> {
        let started = Instant::now();
        let Job { spec, graph, nodes, metrics, blobs, models, guest, runtime } = self;
        // Whatever way the run ends, the store keeps only what retained checkpoints pin.
        let _close_blobs = CloseBlobs(blobs.clone());
        let plan = graph.physical();
        let base_dir = spec.base_dir();
        // The regions this process runs (by index in `graph.regions()`), checked before anything runs.
        let chosen = chosen_regions(&spec, &graph, &options)?;
        let chosen_names: Vec<String> = chosen.iter().map(|(_, name)| name.clone()).collect();
        // A part that follows leaves every decision about earlier runs to the leading part.
        let follows = options.split.as_ref().is_some_and(|s| !s.leads());

        let checkpoints = match spec.checkpoint_dir() {
            None if options.resume || options.from_scratch => {
                return Err(ResumeError::NotCheckpointed {
                    spec: spec.path.clone(),
                    flag: if options.resume { "resume" } else { "from-scratch" },
                }
                .into());
            }
            None => None,
            Some(dir) => {
                let store = CheckpointStore::open(&dir).map_err(EngineError::checkpoint)?;
                let earlier = match &options.regions {
                    None => store.has_checkpoints().map_err(EngineError::checkpoint)?,
                    // Other processes may be writing the other regions' checkpoints right now.
                    Some(_) => {
                        let mut any = false;
                        for name in &chosen_names {
                            any |= store.has_region_checkpoints(name).map_err(EngineError::checkpoint)?;
                        }
                        any
                    }
                };
                if earlier && !options.resume && !options.from_scratch && !follows {
                    return Err(ResumeError::EarlierRun { store: dir.display().to_string() }.into());
                }
                Some(store)
            }
        };
        let remote = match spec.checkpoint_store().map_err(EngineError::Spec)? {
            None => None,
            Some(url) => {
                let remote = RemoteStore::open(&url).map_err(EngineError::checkpoint)?;
                if !options.resume && !options.from_scratch && !follows {
                    let earlier = match &options.regions {
                        None => remote.has_checkpoints().await.map_err(EngineError::checkpoint)?,
                        Some(_) => {
                            let mut any = false;
                            for name in &chosen_names {
                                any |= remote.has_region_checkpoints(name).await.map_err(EngineError::checkpoint)?;
                            }
                            any
                        }
                    };
                    if earlier {
                        return Err(ResumeError::EarlierRun { store: url.to_string() }.into());
                    }
                }
                Some(Arc::new(remote))
            }
        };
        // A resumed job keeps its lineage's key; a fresh run (past the checks
        // above, which refuse one over earlier checkpoints) gets a new one. A
        // run of some regions joins the lineage the other regions' processes use.
        let bound = match options.regions {
            None => blobs.bind_lineage(&spec.job.name, options.resume),
            Some(_) => blobs.bind_shared_lineage(&spec.job.name),
        };
        bound.map_err(|e| EngineError::checkpoint(format!("[blobs]: {e}")))?;
        // The nodes of the regions run; the others are dropped unopened.
        let running: HashSet<usize> = {
            let regions = graph.regions();
            chosen.iter().flat_map(|(i, _)| regions[*i].nodes.iter().copied()).collect()
        };
        let stateful = nodes
            .iter()
            .enumerate()
            .any(|(i, n)| running.contains(&i) && matches!(&n.role, Role::Operator { stateful: true, .. }));
        // The working copy of operator state is scratch: a restart rebuilds
        // it from checkpoint files. Kept beside the checkpoints when there
        // are any (or where the caller says), so a killed run leaves nothing
        // in the system temp dir.
        let scratch_dir = options.scratch_dir.clone().or_else(|| spec.checkpoint_dir().map(|d| d.join(".working")));
        let scratch = match (stateful, scratch_dir) {
            (false, _) => None,
            (true, Some(work)) => {
                let _ = std::fs::remove_dir_all(&work);
                std::fs::create_dir_all(&work).map_err(|e| {
                    EngineError::Checkpoint(crate::CheckpointError::Write(format!("{}: {e}", work.display())))
                })?;
                Some(Scratch::Dir(work))
            }
            (true, None) => Some(Scratch::Temp(
                tempfile::Builder::new()
                    .prefix("flumen-state-")
                    .tempdir()
                    .map_err(|e| EngineError::Internal(format!("state scratch dir: {e}")))?,
            )),
        };
        let state = match &scratch {
            None => None,
            Some(s) => Some(StateStore::open(s.path()).map_err(EngineError::checkpoint)?),
        };
        let mode = match spec.checkpoint.as_ref().map(|c| (c.mode, c.alignment_timeout_ms)) {
            None | Some((CheckpointMode::Aligned, _)) => AlignmentMode::Aligned,
            Some((CheckpointMode::Unaligned, _)) => AlignmentMode::Unaligned,
            Some((CheckpointMode::AlignedWithTimeout, t)) => AlignmentMode::AlignedWithTimeout { timeout_ms: t },
        };

        // Operators: give every subtask its state handle.
        let mut run_nodes: Vec<Option<RunNode>> = Vec::with_capacity(nodes.len());
        for (index, node) in nodes.into_iter().enumerate() {
            if !running.contains(&index) {
                run_nodes.push(None);
                continue;
            }
            let g = &graph.nodes()[index];
            let role = match node.role {
                Role::Source(p) => RunRole::Source(p),
                Role::Sink(s) => RunRole::Sink(s),
                Role::Operator { factory, version, manifest, capabilities, instances, policy, stateful } => {
                    let mut ctxs = Vec::new();
                    let mut opened = Vec::new();
                    for (mut ctx, mut instance) in instances {
                        if options.split.as_ref().is_some_and(|s| !s.owns(ctx.subtask)) {
                            // Another part runs this subtask: its instance goes unused.
                            continue;
                        }
                        let mut shared_state = None;
                        if stateful && let Some(store) = &state {
                            let mut op =
                                store.operator(&ctx.operator_id, ctx.subtask).map_err(EngineError::checkpoint)?;
                            let cache_bytes = factory.limits().state_cache_mb.saturating_mul(1 << 20);
                            op.set_cache_budget(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
                                .map_err(EngineError::checkpoint)?;
                            let shared = Arc::new(std::sync::Mutex::new(op));
                            ctx.state = Some(crate::state::handle(&shared));
                            shared_state = Some(shared);
                        }
                        instance.set_state(ctx.state.clone());
                        ctxs.push((ctx, shared_state));
                        opened.push(Some(instance));
                    }
                    RunRole::Operator {
                        version: crate::upgrade::Version { record: version, factory, manifest },
                        capabilities,
                        ctxs,
                        opened,
                        policy,
                    }
                }
            };
            run_nodes.push(Some(RunNode {
                index,
                id: node.id,
                parallelism: g.parallelism,
                schema: node.schema,
                metrics: node.metrics,
                role,
            }));
        }

        let shared = Arc::new(Shared {
            spec,
            graph,
            plan,
            base_dir,
            checkpoints,
            remote,
            _state: state,
            mode,
            blobs,
            models: models.clone(),
            guest,
            fence: options.fence.clone(),
            id_floor: options.checkpoint_id_floor,
            runtime: runtime.clone(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut regions: JoinSet<Result<RegionOutcome, EngineError>> = JoinSet::new();
        let mut region_metrics = Vec::new();
        let all_regions = shared.graph.regions();
        let mut targets: HashMap<String, Result<crate::upgrade::Target, &'static str>> = HashMap::new();
        let mut boards = Vec::new();
        for (index, name) in chosen {
            let region = &all_regions[index];
            let nodes: Vec<RunNode> = region.nodes.iter().filter_map(|&i| run_nodes[i].take()).collect();
            let board = Arc::new(crate::upgrade::SwapBoard::default());
            boards.push(board.clone());
            for node in &nodes {
                let kind = match &node.role {
                    RunRole::Source(_) => Err("source"),
                    RunRole::Sink(_) => Err("sink"),
                    RunRole::Operator { version, capabilities, ctxs, .. } => Ok(crate::upgrade::Target {
                        board: board.clone(),
                        region: name.clone(),
                        version: version.clone(),
                        capabilities: *capabilities,
                        ctx: ctxs.first().map(|(c, _)| c.clone()),
                        schema: node.schema.clone(),
                        checkpoints: shared.spec.checkpoint.as_ref().map(|c| c.interval_ms),
                        split: options.split.is_some(),
                    }),
                };
                targets.insert(node.id.to_string(), kind);
            }
            let m = Arc::new(RegionMetrics::new(&name));
            region_metrics.push(m.clone());
            metrics.regions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(m.clone());
            let supervisor = RegionSupervisor {
                shared: shared.clone(),
                name,
                nodes,
                metrics: m,
                resume: options.resume,
                from_scratch: options.from_scratch,
                parts: options.split.clone().map(|split| {
                    let (control, pump) = crate::split::pump(split.link.clone());
                    Parts { split, control, _pump: AbortOnDrop(pump) }
                }),
                attempts: 0,
                board,
            };
            let span = tracing::info_span!("region", region = %supervisor.name);
            regions.spawn(supervisor.run(stop_rx.clone()).instrument(span));
        }

        // Live upgrades are checked here, off the regions' own loops (compiling takes a while).
        let _control = options.control.clone().map(|control| {
            let runtime = runtime.clone();
            AbortOnDrop(tokio::spawn(crate::upgrade::serve(control, targets, runtime)))
        });
        let _end_control = options.control.clone().map(EndControl);

        tokio::pin!(stop);
        let mut stop_fired = false;
        let mut writers = Vec::new();
        let mut stopped: Option<u64> = None;
        let outcome: Result<(), EngineError> = loop {
            tokio::select! {
                joined = regions.join_next() => match joined {
                    None => break Ok(()),
                    Some(Ok(Ok(RegionOutcome::Finished(w)))) => writers.extend(w),
                    Some(Ok(Ok(RegionOutcome::Stopped(n)))) => stopped = Some(stopped.map_or(n, |s| s.max(n))),
                    Some(Ok(Err(e))) => break Err(e),
                    Some(Err(e)) if e.is_panic() => break Err(EngineError::Internal(format!("a region panicked: {e}"))),
                    Some(Err(e)) => break Err(EngineError::Internal(format!("a region was lost: {e}"))),
                },
                _ = &mut stop, if !stop_fired => {
                    stop_fired = true;
                    if shared.checkpoints.is_none() {
                        break Err(EngineError::Cancelled);
                    }
                    if let Err(e) = shared.fence() {
                        break Err(e);
                    }
                    tracing::info!("stopping: taking a final checkpoint");
                    let _ = stop_tx.send(true);
                }
            }
        };
        if let Err(e) = outcome {
            regions.abort_all();
            while regions.join_next().await.is_some() {}
            return Err(e);
        }
        if let Some(n) = stopped {
            return Err(EngineError::Stopped { checkpoint: n });
        }
        let mut files = Vec::new();
        if !writers.is_empty() {
            shared.fence()?;
        }
        for w in writers {
            let report = tokio::task::block_in_place(|| w.commit()).map_err(EngineError::Connector)?;
            files.extend(report.files);
        }
        drop(scratch);
        Ok(JobSummary {
            job: shared.spec.job.name.clone(),
            elapsed: started.elapsed(),
            nodes: {
                let ran: HashSet<&NodeId> =
                    running.iter().filter_map(|&i| shared.graph.nodes().get(i)).map(|n| &n.id).collect();
                metrics.snapshot().into_iter().filter(|n| ran.contains(&n.id)).collect()
            },
            files,
            regions: region_metrics.iter().map(|m| m.snapshot()).collect(),
            blobs: shared.blobs.stats(),
            models: models.map(|h| model_lines(&h)).unwrap_or_default(),
        })
    }
}

/// The regions `options` asks to run, as (index in [`LogicalGraph::regions`], name): all of them
/// without [`RunOptions::regions`]. Refuses, before anything runs, a choice on a job without
/// checkpoints, an empty choice, a name that is no region of the job, and an id floor too high.
fn chosen_regions(
    spec: &JobSpec,
    graph: &LogicalGraph,
    options: &RunOptions,
) -> Result<Vec<(usize, String)>, EngineError> {
    if options.checkpoint_id_floor > CHECKPOINT_ID_FLOOR_MAX {
        return Err(ResumeError::IdFloorTooHigh { floor: options.checkpoint_id_floor }.into());
    }
    let all: Vec<(usize, String)> =
        graph.regions().iter().enumerate().map(|(i, r)| (i, graph.region_name(r))).collect();
    let Some(wanted) = &options.regions else {
        if options.split.is_some() {
            return Err(ResumeError::SplitNeedsOneRegion { spec: spec.path.clone(), regions: 0 }.into());
        }
        return Ok(all);
    };
    if spec.checkpoint_dir().is_none() {
        return Err(ResumeError::RegionsNeedCheckpoints { spec: spec.path.clone() }.into());
    }
    if let Some(split) = &options.split {
        if wanted.len() != 1 {
            return Err(ResumeError::SplitNeedsOneRegion { spec: spec.path.clone(), regions: wanted.len() }.into());
        }
        split.check().map_err(|reason| ResumeError::BadSplit { spec: spec.path.clone(), reason })?;
    }
    let unknown: Vec<String> = wanted.iter().filter(|w| !all.iter().any(|(_, n)| n == *w)).cloned().collect();
    if wanted.is_empty() || !unknown.is_empty() {
        return Err(ResumeError::UnknownRegions {
            spec: spec.path.clone(),
            unknown,
            regions: all.into_iter().map(|(_, n)| n).collect(),
        }
        .into());
    }
    Ok(all.into_iter().filter(|(_, n)| wanted.contains(n)).collect())
}

/// The run summary's line for each model the job used; syncs their memos first.
fn model_lines(hub: &flumen_inference::ModelHub) -> Vec<String> {
    if let Err(e) = hub.sync_memos() {
        tracing::warn!("cannot sync the inference memo: {e}");
    }
    hub.used().iter().map(|m| flumen_inference::summary_line(m, hub.memo_of(&m.info.name).as_deref())).collect()
}

enum Scratch {
    Dir(PathBuf),
    Temp(tempfile::TempDir),
}

impl Scratch {
    fn path(&self) -> &std::path::Path {
        match self {
            Scratch::Dir(p) => p,
            Scratch::Temp(t) => t.path(),
        }
    }
}

enum RegionOutcome {
    /// All input processed. Without checkpoints: the sinks' writers, to be
    /// committed once every region finished.
    Finished(Vec<Box<dyn SinkWriter>>),
    /// Stopped on request after checkpoint `n` was committed.
    Stopped(u64),
}

struct RegionSupervisor {
    shared: Arc<Shared>,
    name: String,
    nodes: Vec<RunNode>,
    metrics: Arc<RegionMetrics>,
    resume: bool,
    from_scratch: bool,
    /// When the region is split across processes: this part and its link.
    parts: Option<Parts>,
    /// The current attempt's number (from 1); a split region's parts agree on it.
    attempts: u64,
    /// Its live upgrades (`upgrade.rs`).
    board: Arc<crate::upgrade::SwapBoard>,
}

/// This process's part of a split region: the split, and the control messages from the other parts.
struct Parts {
    split: Split,
    control: mpsc::UnboundedReceiver<Incoming>,
    _pump: AbortOnDrop,
}

impl Parts {
    /// The next control message from another part; a broken link (or a part that sent what
    /// does not parse) is [`EngineError::PartLost`].
    async fn next(&mut self) -> Result<(u32, PartMsg), EngineError> {
        match self.control.recv().await {
            Some(Incoming::Msg(from, msg)) => Ok((from, msg)),
            Some(Incoming::Lost(part, reason)) => Err(EngineError::PartLost { part, reason }),
            None => Err(EngineError::PartLost { part: u32::MAX, reason: "the link closed".into() }),
        }
    }
}

/// What a part that follows makes of how the leader ended the run.
fn followed(outcome: PartEnd) -> Result<RegionOutcome, EngineError> {
    match outcome {
        PartEnd::Finished => Ok(RegionOutcome::Finished(Vec::new())),
        PartEnd::Stopped(n) => Ok(RegionOutcome::Stopped(n)),
        PartEnd::Failed(reason) => Err(EngineError::Part { part: 0, reason }),
        PartEnd::Lost(reason) => {
            Err(EngineError::PartLost { part: 0, reason: format!("the leading part stopped: {reason}") })
        }
    }
}

/// How long a leading part waits, after telling the others how the region
/// ended, for them to hang up (having read it) before it closes the link.
const END_READ_WAIT: Duration = Duration::from_secs(2);

/// Tells a job's control that the run ended, when dropped.
struct EndControl(crate::JobControl);

impl Drop for EndControl {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The version an operator's participants in a restored checkpoint say runs
/// after its barrier: at a barrier where a swap happened (`rollback`), the
/// version the snapshot was taken with. `None`: the spec's. Participants
/// that disagree are a damaged checkpoint.
fn recorded_version(
    node: &NodeId,
    parallelism: u32,
    metas: &HashMap<String, ParticipantMeta>,
) -> Result<Option<crate::upgrade::VersionRecord>, EngineError> {
    let mut found: Option<Option<crate::upgrade::VersionRecord>> = None;
    for i in 0..parallelism {
        let Some(meta) = metas.get(&format!("{node}[{i}]")) else { continue };
        let v = meta.version.clone().map(|v| match v.rollback {
            Some(old) => *old,
            None => v,
        });
        match &found {
            None => found = Some(v),
            Some(f) if *f == v => {}
            Some(_) => {
                return Err(EngineError::checkpoint(format!(
                    "the participants of `{node}` in the restored checkpoint record different versions"
                )));
            }
        }
    }
    Ok(found.flatten())
}

/// Loads a version a checkpoint recorded from where it was loaded then,
/// checking that the file is still that component.
fn load_recorded(
    shared: &Shared,
    r: &crate::upgrade::VersionRecord,
    operator: &str,
    capabilities: flumen_wasm::Capabilities,
    running: &crate::upgrade::Version,
) -> Result<crate::upgrade::Version, EngineError> {
    let failed = |why: String| {
        EngineError::checkpoint(format!(
            "the restored checkpoint runs operator `{operator}` as `{}` (a live upgrade), which {why}",
            r.plugin
        ))
    };
    if r.path.is_empty() {
        return Err(failed("names no file".into()));
    }
    let v = crate::upgrade::load_version(
        &shared.runtime,
        std::path::Path::new(&r.path),
        &r.plugin,
        r.config.clone(),
        operator,
        capabilities,
        running,
    )
    .map_err(|e| failed(format!("cannot be loaded: {e}")))?;
    if v.record.component != r.component {
        return Err(failed(format!(
            "is no longer at {}: that file is component sha256:{}, the checkpoint ran sha256:{}",
            r.path, v.record.component, r.component
        )));
    }
    Ok(crate::upgrade::Version { record: crate::upgrade::VersionRecord { rollback: None, ..r.clone() }, ..v })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one attempt of a region ended.
enum AttemptEnd {
    Finished(Vec<Box<dyn SinkWriter>>),
    Stopped(u64),
}

impl RegionSupervisor {
    async fn run(mut self, stop: watch::Receiver<bool>) -> Result<RegionOutcome, EngineError> {
        let mut parts = self.parts.take();
        if let Some(p) = parts.as_mut().filter(|p| !p.split.leads()) {
            return self.follow(p).await;
        }
        let outcome = self.lead(stop, parts.as_mut()).await;
        if let Some(p) = &mut parts {
            // Every other part ends as this one did (a part already gone needs no telling).
            let end = match &outcome {
                Ok(RegionOutcome::Finished(_)) => PartEnd::Finished,
                Ok(RegionOutcome::Stopped(n)) => PartEnd::Stopped(*n),
                Err(e @ (EngineError::PartLost { .. } | EngineError::Fenced { .. })) => PartEnd::Lost(e.to_string()),
                Err(e) => PartEnd::Failed(e.to_string()),
            };
            let mut told = false;
            for other in p.split.others() {
                told |= p.split.send(other, &PartMsg::End { outcome: end.clone() }).await.is_ok();
            }
            // Closing the link at once could discard the `End` unread (a closed connection
            // drops what its peer has not read): a part that read it ends and hangs up, so
            // wait for that, briefly — a part that is gone hung up already.
            if told {
                let _ = tokio::time::timeout(END_READ_WAIT, async { while p.next().await.is_ok() {} }).await;
            }
        }
        outcome
    }

    /// Runs the region here, restarting it per `[restart]`; with parts, leads them.
    async fn lead(
        &mut self,
        stop: watch::Receiver<bool>,
        mut parts: Option<&mut Parts>,
    ) -> Result<RegionOutcome, EngineError> {
        let attempts = self.shared.spec.restart.attempts;
        let mut first = true;
        loop {
            let end = self.start(first, stop.clone(), parts.as_deref_mut()).await;
            first = false;
            match end {
                Ok(AttemptEnd::Finished(w)) => {
                    self.board.region_ended(None);
                    return Ok(RegionOutcome::Finished(w));
                }
                Ok(AttemptEnd::Stopped(n)) => {
                    self.board.region_ended(None);
                    return Ok(RegionOutcome::Stopped(n));
                }
                Err(e @ EngineError::Upgrade { .. }) if self.shared.checkpoints.is_some() => {
                    // A rollback is a recovery, and not the region's failure: it is not counted.
                    self.board.region_failed(&e.to_string());
                    tracing::warn!(region = %self.name, "{e}");
                }
                Err(e) => {
                    self.board.region_failed(&format!("the region failed: {e}"));
                    let restarts = self.metrics.restarts();
                    // A refusal to resume or start over says the same on every attempt.
                    // Nor does a fenced process restart: it must commit nothing more;
                    // nor one that lost another part of the region.
                    let restartable = self.shared.checkpoints.is_some()
                        && !matches!(
                            e,
                            EngineError::Cancelled
                                | EngineError::Stopped { .. }
                                | EngineError::Resume(_)
                                | EngineError::Fenced { .. }
                                | EngineError::PartLost { .. }
                        );
                    if !restartable || restarts >= u64::from(attempts) {
                        self.board.region_ended(Some(&e.to_string()));
                        if restartable && attempts > 0 {
                            return Err(EngineError::Restarts {
                                region: self.name.clone(),
                                attempts,
                                last: Box::new(e),
                            });
                        }
                        return Err(e);
                    }
                    if let Some(p) = parts.as_deref_mut() {
                        let wait = self.shared.spec.checkpoint.as_ref().map_or(60_000, |c| c.timeout_ms.max(10_000));
                        Self::abort_parts(p, self.attempts, Duration::from_millis(wait)).await?;
                    }
                    self.metrics.add_restart();
                    tracing::warn!(region = %self.name, restart = restarts + 1, "region failed, restarting from its last checkpoint: {e}");
                    tokio::time::sleep(Duration::from_millis(self.shared.spec.restart.delay_ms)).await;
                }
            }
        }
    }

    /// Stops attempt `attempt` on every other part and waits (at most `wait`) until nothing
    /// of it runs there. (A free function of its inputs: a borrow of the supervisor, which is
    /// not `Sync`, cannot be held across an await.)
    async fn abort_parts(parts: &mut Parts, attempt: u64, wait: Duration) -> Result<(), EngineError> {
        let mut idle: BTreeSet<u32> = BTreeSet::new();
        for other in parts.split.others() {
            parts.split.send(other, &PartMsg::Abort { attempt }).await?;
        }
        let deadline = tokio::time::Instant::now() + wait;
        while idle.len() + 1 < parts.split.parts as usize {
            match tokio::time::timeout_at(deadline, parts.next()).await {
                Err(_) => {
                    return Err(EngineError::PartLost {
                        part: u32::MAX,
                        reason: format!(
                            "parts {:?} did not stop attempt {attempt} within {} ms",
                            parts.split.others().filter(|p| !idle.contains(p)).collect::<Vec<_>>(),
                            wait.as_millis()
                        ),
                    });
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok((from, PartMsg::Idle { attempt: a }))) if a == attempt => {
                    idle.insert(from);
                }
                // What the aborted attempt still sent.
                Ok(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// A part that follows: runs the attempts the leading part starts, until it ends the run.
    async fn follow(&mut self, parts: &mut Parts) -> Result<RegionOutcome, EngineError> {
        loop {
            match parts.next().await? {
                (0, PartMsg::Start { attempt, restore }) => {
                    if let Some(end) = self.follow_attempt(parts, attempt, restore).await? {
                        return end;
                    }
                }
                (0, PartMsg::Abort { attempt }) => {
                    parts.split.send(0, &PartMsg::Idle { attempt }).await?;
                }
                (0, PartMsg::End { outcome }) => return followed(outcome),
                // Stale messages of an attempt that ended, or from a part that does not lead.
                _ => {}
            }
        }
    }

    /// One attempt of a part that follows. `Some(outcome)` when the leader ended the run.
    async fn follow_attempt(
        &mut self,
        parts: &mut Parts,
        attempt: u64,
        restore: Option<u64>,
    ) -> Result<Option<Result<RegionOutcome, EngineError>>, EngineError> {
        self.attempts = attempt;
        if attempt > 1 {
            self.metrics.add_restart();
        }
        let split = parts.split.clone();
        let restored = match (restore, &self.shared.checkpoints) {
            (Some(n), Some(store)) => {
                tokio::task::block_in_place(|| store.manifest(&self.name, n)).map(Some).map_err(EngineError::checkpoint)
            }
            _ => Ok(None),
        };
        let wired = match restored {
            Ok(m) => self.wire(m.as_ref(), attempt, Some(&split)).await,
            Err(e) => Err(e),
        };
        let mut w = match wired {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(region = %self.name, attempt, "this part cannot start its attempt: {e}");
                split.send(0, &PartMsg::Failed { attempt, reason: e.to_string() }).await?;
                return Ok(None);
            }
        };
        enum End {
            Failed(EngineError),
            Aborted,
            Ended(PartEnd),
            Lost(EngineError),
        }
        let mut tasks_running = true;
        let mut local_ended = false;
        let end = loop {
            tokio::select! {
                joined = w.tasks.join_next(), if tasks_running => match joined {
                    None => tasks_running = false,
                    Some(j) => if let Err(e) = flatten(j) { break End::Failed(e) },
                },
                msg = w.from_tasks.recv(), if !local_ended => {
                    let out = match msg {
                        Some(TaskMsg::Ack { checkpoint, participant, files, meta }) =>
                            PartMsg::Ack { attempt, checkpoint, participant, files, meta },
                        Some(TaskMsg::Done { participant, files, meta }) =>
                            PartMsg::Done { attempt, participant, files, meta },
                        None => {
                            local_ended = true;
                            PartMsg::TasksEnded { attempt }
                        }
                    };
                    if let Err(e) = split.send(0, &out).await { break End::Lost(e) }
                },
                incoming = parts.next() => match incoming {
                    Err(e) => break End::Lost(e),
                    Ok((0, PartMsg::Inject { attempt: a, checkpoint })) if a == attempt => {
                        for inject in &w.injectors {
                            // A source that already ended acknowledges through `Done`.
                            let _ = inject.send(checkpoint);
                        }
                    }
                    Ok((0, PartMsg::Committed { attempt: a, checkpoint })) if a == attempt => {
                        w.committed.fetch_max(checkpoint, std::sync::atomic::Ordering::AcqRel);
                    }
                    Ok((0, PartMsg::Abort { attempt: a })) if a == attempt => break End::Aborted,
                    Ok((0, PartMsg::End { outcome })) => break End::Ended(outcome),
                    Ok(_) => {}
                },
            }
        };
        w.tasks.abort_all();
        while w.tasks.join_next().await.is_some() {}
        match end {
            End::Failed(e) => {
                tracing::warn!(region = %self.name, attempt, "this part's attempt failed: {e}");
                split.send(0, &PartMsg::Failed { attempt, reason: e.to_string() }).await?;
                Ok(None)
            }
            End::Aborted => {
                split.send(0, &PartMsg::Idle { attempt }).await?;
                Ok(None)
            }
            End::Ended(outcome) => Ok(Some(followed(outcome))),
            End::Lost(e) => Err(e),
        }
    }

    /// One attempt: from the latest checkpoint when resuming or restarting, else from scratch.
    /// A failure to read the checkpoints (an unreachable store, say) fails the attempt, so the
    /// region retries per `[restart]`. Checkpoint ids continue above every id the region ever
    /// used (and above [`RunOptions::checkpoint_id_floor`]), whatever the attempt restores.
    async fn start(
        &mut self,
        first: bool,
        stop: watch::Receiver<bool>,
        parts: Option<&mut Parts>,
    ) -> Result<AttemptEnd, EngineError> {
        let Some(store) = self.shared.checkpoints.clone() else { return self.attempt(None, 0, stop, parts).await };
        let ck = EngineError::checkpoint::<flumen_state::StateError>;
        let mut discarded = Vec::new();
        let mut seen = 0;
        let (restored, rejected) = if first && self.from_scratch && !self.resume {
            // Every region starts over, as asked: its checkpoints go (their ids stay used).
            self.shared.fence()?;
            if let Some(remote) = &self.shared.remote {
                let gone = remote.discard_all(&self.name).await.map_err(ck)?;
                seen = gone.iter().copied().max().unwrap_or(0);
                discarded.extend(
                    gone.iter().map(|c| PathBuf::from(format!("{}/{}/chk-{c:012}.json", remote.url(), self.name))),
                );
            }
            discarded.extend(tokio::task::block_in_place(|| store.discard_all(&self.name)).map_err(ck)?);
            (None, Vec::new())
        } else if self.resume || !first {
            let (restored, rejected, remote_seen) = latest(&self.shared, &self.name, &self.metrics).await?;
            seen = remote_seen;
            (restored, rejected)
        } else {
            (None, Vec::new())
        };
        let at_least = seen.max(self.shared.id_floor);
        let used = tokio::task::block_in_place(|| store.reserve_ids(&self.name, at_least)).map_err(ck)?;
        if first && let Some(m) = &restored {
            tracing::info!(region = %self.name, checkpoint = m.checkpoint, next = used + 1, "resuming from checkpoint");
        }
        if restored.is_none() {
            self.may_start_over(first, &store, &rejected, discarded)?;
        }
        if let Some(m) = &restored
            && m.finished
        {
            // Finished in an earlier run: publish its last commit again (idempotent) and stop.
            self.recover_sinks(Some(m))?;
            return Ok(AttemptEnd::Finished(Vec::new()));
        }
        self.attempt(restored.as_ref(), used, stop, parts).await
    }

    /// Before a region with checkpoints starts from nothing: refuses when that would lose
    /// something an earlier run left — a checkpoint refused just now or quarantined before, or
    /// committed part files of its sinks (a start from nothing removes them) — unless this is
    /// the first attempt of a run with `--from-scratch`; then removes them and says what went.
    fn may_start_over(
        &self,
        first: bool,
        store: &CheckpointStore,
        rejected: &[flumen_state::Rejected],
        discarded: Vec<PathBuf>,
    ) -> Result<(), EngineError> {
        let ck = EngineError::checkpoint::<flumen_state::StateError>;
        let refused: Vec<PathBuf> =
            rejected.iter().map(|r| r.quarantined.clone().unwrap_or_else(|| r.path.clone())).collect();
        let quarantined: Vec<PathBuf> =
            store.quarantined(&self.name).map_err(ck)?.into_iter().filter(|q| !refused.contains(q)).collect();
        let mut parts = Vec::new();
        for node in &self.nodes {
            if let RunRole::Sink(spec) = &node.role {
                parts.extend(
                    flumen_connectors::published_parts(spec, &self.shared.base_dir).map_err(EngineError::Connector)?,
                );
            }
        }
        if rejected.is_empty() && quarantined.is_empty() && parts.is_empty() && discarded.is_empty() {
            return Ok(());
        }
        if !(first && self.from_scratch) {
            let mut in_the_way: Vec<String> = rejected.iter().map(|r| r.to_string()).collect();
            in_the_way.extend(quarantined.iter().map(|q| format!("{} (quarantined earlier as damaged)", q.display())));
            if !parts.is_empty() {
                in_the_way.push(format!("committed output that starting over would delete: {}", list_paths(&parts)));
            }
            return Err(ResumeError::NoIntactCheckpoint {
                region: self.name.clone(),
                first,
                dir: store.root().to_path_buf(),
                in_the_way,
                spec: self.shared.spec.path.clone(),
            }
            .into());
        }
        self.shared.fence()?;
        let mut gone = discarded;
        gone.extend(tokio::task::block_in_place(|| store.discard_all(&self.name)).map_err(ck)?);
        let removed = self.recover_sinks(None)?;
        tracing::warn!(
            region = %self.name,
            "starting over from scratch (--from-scratch): removed {} committed part file(s){}{} and {} checkpoint \
             manifest(s){}{}",
            removed.len(),
            if removed.is_empty() { "" } else { ": " },
            list_paths(&removed),
            gone.len(),
            if gone.is_empty() { "" } else { ": " },
            list_paths(&gone),
        );
        Ok(())
    }

    fn participants(&self) -> Vec<String> {
        self.nodes.iter().flat_map(|n| (0..n.parallelism).map(move |i| format!("{}[{i}]", n.id))).collect()
    }

    /// Before tasks open: removes what sinks staged for checkpoints that did
    /// not complete, and publishes again what the restored checkpoint committed.
    /// Returns the published parts removed (of checkpoints after the restored
    /// one; all of them when starting from nothing).
    fn recover_sinks(&self, restored: Option<&Manifest>) -> Result<Vec<PathBuf>, EngineError> {
        let mut removed = Vec::new();
        if self.shared.checkpoints.is_none() {
            return Ok(removed);
        }
        // It deletes staged and newer published parts, and publishes the restored checkpoint's.
        self.shared.fence()?;
        for node in &self.nodes {
            let RunRole::Sink(spec) = &node.role else { continue };
            let mut keep = Vec::new();
            if let Some(m) = restored {
                for i in 0..node.parallelism {
                    if let Some(meta) = meta_in(m, &format!("{}[{i}]", node.id))? {
                        keep.extend(meta.pending);
                    }
                }
            }
            let base = &self.shared.base_dir;
            let gone = tokio::task::block_in_place(|| {
                let gone = flumen_connectors::recover_sink(spec, base, restored.map(|m| m.checkpoint), &keep)?;
                for p in &keep {
                    flumen_connectors::commit_pending(spec, base, p)?;
                }
                Ok::<_, flumen_connectors::ConnectorError>(gone)
            })
            .map_err(EngineError::Connector)?;
            if let (Some(m), false) = (restored, gone.is_empty()) {
                tracing::warn!(
                    region = %self.name,
                    sink = %node.id,
                    "removed {} part file(s) of checkpoints after the restored checkpoint {} (their rows are produced \
                     again): {}",
                    gone.len(),
                    m.checkpoint,
                    list_paths(&gone)
                );
            }
            removed.extend(gone);
        }
        Ok(removed)
    }

    /// One attempt of a region run here (or led from here): checks the
    /// restored checkpoint against the region, puts the sinks back where it
    /// left them, starts the other parts, wires and drives the tasks, with the
    /// region's coordinator when the job checkpoints.
    async fn attempt(
        &mut self,
        restored: Option<&Manifest>,
        used: u64,
        mut stop: watch::Receiver<bool>,
        mut parts: Option<&mut Parts>,
    ) -> Result<AttemptEnd, EngineError> {
        let shared = self.shared.clone();
        let checkpointing = shared.checkpoints.as_ref().zip(shared.spec.checkpoint.as_ref());
        self.attempts += 1;
        let attempt = self.attempts;
        if let Some(m) = restored {
            let known = self.participants();
            if let Some(extra) = m.participants.keys().find(|p| !known.contains(p)) {
                return Err(ResumeError::UnknownParticipant {
                    region: self.name.clone(),
                    checkpoint: m.checkpoint,
                    participant: extra.clone(),
                }
                .into());
            }
        }
        self.recover_sinks(restored)?;
        let split = parts.as_ref().map(|p| p.split.clone());
        if let Some(split) = &split {
            for other in split.others() {
                split.send(other, &PartMsg::Start { attempt, restore: restored.map(|m| m.checkpoint) }).await?;
            }
        }
        let Wired { mut tasks, mut injectors, sinks, mut from_tasks, committed } =
            self.wire(restored, attempt, split.as_ref()).await?;

        let Some((store, config)) = checkpointing else {
            // No checkpoints: wait for every task; any failure fails the region.
            let mut writers = Vec::new();
            let mut downstream_gone = None;
            while let Some(joined) = tasks.join_next().await {
                match flatten(joined) {
                    Ok(Finished::Sink(w)) => writers.push(w),
                    Ok(Finished::Done) => {}
                    Err(EngineError::DownstreamGone) => downstream_gone = Some(EngineError::DownstreamGone),
                    Err(e) => {
                        tasks.abort_all();
                        while tasks.join_next().await.is_some() {}
                        return Err(e);
                    }
                }
            }
            return downstream_gone.map_or(Ok(AttemptEnd::Finished(writers)), Err);
        };

        // The other parts' sources get their barriers through the link.
        let mut wires: JoinSet<()> = JoinSet::new();
        if let Some(split) = &split {
            for other in split.others() {
                let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
                injectors.push(tx);
                let split = split.clone();
                wires.spawn(async move {
                    while let Some(checkpoint) = rx.recv().await {
                        // A broken link shows as `Lost` on the control queue.
                        if split.send(other, &PartMsg::Inject { attempt, checkpoint }).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
        let mut coord = CheckpointDriver {
            coordinator: Coordinator::new(
                self.participants(),
                CoordinatorConfig { timeout_ms: config.timeout_ms, max_concurrent: 1 },
                // Ids continue above every id used, not only above the restored one.
                used.max(restored.map_or(0, |m| m.checkpoint)),
            ),
            store: store.clone(),
            remote: shared.remote.clone(),
            region: self.name.clone(),
            job: shared.spec.job.name.clone(),
            retain: config.retain,
            base_dir: shared.base_dir.clone(),
            sinks,
            done: BTreeMap::new(),
            started: Instant::now(),
            triggered: HashMap::new(),
            metrics: self.metrics.clone(),
            last_committed: None,
            finished: false,
            committed: committed.clone(),
            blobs: shared.blobs.clone(),
            models: shared.models.clone(),
            kept: restored.map(|m| m.checkpoint).into_iter().collect(),
            fence: shared.fence.clone(),
            board: self.board.clone(),
        };
        let mut interval = tokio::time::interval(Duration::from_millis(config.interval_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        let mut stopping = false;
        let mut tasks_running = true;
        let mut local_ended = false;
        // The other parts whose subtasks all ended, and the last commit they were told of.
        let mut parts_ended: BTreeSet<u32> = BTreeSet::new();
        let other_parts = split.as_ref().map_or(0, |s| s.parts as usize - 1);
        let mut told = restored.map_or(0, |m| m.checkpoint);
        let mut downstream_gone = None;
        let result: Result<AttemptEnd, EngineError> = loop {
            if stopping && let Some(n) = coord.last_committed {
                break Ok(AttemptEnd::Stopped(n));
            }
            if let Some(split) = &split {
                let now = committed.load(std::sync::atomic::Ordering::Acquire);
                if now > told {
                    told = now;
                    let mut sent = Ok(());
                    for other in split.others() {
                        sent = sent.and(split.send(other, &PartMsg::Committed { attempt, checkpoint: now }).await);
                    }
                    if let Err(e) = sent {
                        break Err(e);
                    }
                }
            }
            if local_ended && parts_ended.len() == other_parts {
                // Every task here and on every other part ended, and every message was read.
                while let Some(j) = tasks.join_next().await {
                    match flatten(j) {
                        Ok(_) => {}
                        Err(EngineError::DownstreamGone) => downstream_gone = Some(EngineError::DownstreamGone),
                        Err(e) => return Err(e),
                    }
                }
                if let Some(e) = downstream_gone.take() {
                    break Err(e);
                }
                break coord.finish().await.map(|()| AttemptEnd::Finished(Vec::new()));
            }
            tokio::select! {
                joined = tasks.join_next(), if tasks_running => match joined {
                    None => tasks_running = false,
                    Some(j) => match flatten(j) {
                        Ok(_) => {}
                        Err(EngineError::DownstreamGone) => downstream_gone = Some(EngineError::DownstreamGone),
                        Err(e) => break Err(e),
                    },
                },
                msg = from_tasks.recv(), if !local_ended => match msg {
                    Some(m) => if let Err(e) = coord.on_message(m).await { break Err(e) },
                    None => local_ended = true,
                },
                incoming = next_incoming(&mut parts) => {
                    let Some(split) = &split else { continue };
                    match incoming {
                        Err(e) => break Err(e),
                        Ok((from, msg)) => match msg {
                            PartMsg::Ack { attempt: a, checkpoint, participant, files, meta } if a == attempt => {
                                if let Err(e) = runs_on(split, from, &participant) { break Err(e) }
                                let m = TaskMsg::Ack { checkpoint, participant, files, meta };
                                if let Err(e) = coord.on_message(m).await { break Err(e) }
                            }
                            PartMsg::Done { attempt: a, participant, files, meta } if a == attempt => {
                                if let Err(e) = runs_on(split, from, &participant) { break Err(e) }
                                if let Err(e) = coord.on_message(TaskMsg::Done { participant, files, meta }).await { break Err(e) }
                            }
                            PartMsg::TasksEnded { attempt: a } if a == attempt && from != split.part && from < split.parts => {
                                parts_ended.insert(from);
                            }
                            PartMsg::Failed { attempt: a, reason } if a == attempt => {
                                break Err(EngineError::Part { part: from, reason });
                            }
                            // Stale messages of an earlier attempt.
                            _ => {}
                        },
                    }
                },
                _ = interval.tick() => {
                    if let Err(e) = coord.on_tick(&injectors).await { break Err(e) }
                }
                changed = stop.changed(), if !stopping => {
                    if changed.is_ok() && *stop.borrow() {
                        stopping = true;
                        coord.last_committed = None;
                        if let Err(e) = coord.on_tick(&injectors).await { break Err(e) }
                    }
                }
            }
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        wires.abort_all();
        result
    }

    /// Builds this attempt's channels and starts this process's subtasks of
    /// the region. With a split, a channel between two parts is a link
    /// channel: a task here forwards what its producer sends, or delivers
    /// what the other part sends to its consumer.
    async fn wire(
        &mut self,
        restored: Option<&Manifest>,
        attempt: u64,
        split: Option<&Split>,
    ) -> Result<Wired, EngineError> {
        let shared = self.shared.clone();
        let checkpointing = shared.checkpoints.as_ref().zip(shared.spec.checkpoint.as_ref());
        let owns = |subtask: u32| split.is_none_or(|s| s.owns(subtask));
        let leads = split.is_none_or(Split::leads);
        let files_dir = match &shared.checkpoints {
            Some(store) => Some(store.files_dir(&self.name).map_err(EngineError::checkpoint)?),
            None => None,
        };
        // Every participant's record, read (and checked) before any task starts.
        let mut metas = HashMap::new();
        if let Some(m) = restored {
            for participant in m.participants.keys() {
                metas.insert(participant.clone(), meta_in(m, participant)?.unwrap_or_default());
            }
        }
        let restore_of = |participant: &str| -> Option<Restore> {
            let m = restored?;
            let p = m.participants.get(participant)?;
            Some(Restore {
                dir: files_dir.clone()?,
                files: p.files.clone(),
                meta: metas.get(participant)?.clone(),
                checkpoint: m.checkpoint,
                region: self.name.clone(),
            })
        };
        let (to_coord, from_tasks) = mpsc::unbounded_channel::<TaskMsg>();
        let committed = Arc::new(std::sync::atomic::AtomicU64::new(restored.map_or(0, |m| m.checkpoint)));
        let link = |participant: String| -> Option<TaskCkpt> {
            Some(TaskCkpt {
                participant,
                to_coordinator: to_coord.clone(),
                files_dir: files_dir.clone()?,
                committed: committed.clone(),
                region: self.name.clone(),
                blobs: shared.blobs.clone(),
            })
        };

        // Channels of this region.
        let in_region: Vec<usize> = self.nodes.iter().map(|n| n.index).collect();
        let capacity = shared.spec.job.channel_capacity;
        let mut outputs: HashMap<SubtaskId, Vec<(usize, Vec<Tx>)>> = HashMap::new();
        let mut inputs: HashMap<SubtaskId, Vec<(u32, Rx)>> = HashMap::new();
        let mut tasks: JoinSet<Result<Finished, EngineError>> = JoinSet::new();
        for (index, ch) in shared.plan.channels.iter().enumerate() {
            let edge = &shared.graph.edges()[ch.edge];
            if !in_region.contains(&edge.from) {
                continue;
            }
            let (from_here, to_here) = (owns(ch.from.index), owns(ch.to.index));
            if !from_here && !to_here {
                continue;
            }
            if from_here != to_here
                && let Some(node) = self.nodes.iter().find(|n| n.index == edge.from)
                && !flumen_batch::pins::blob_columns(&node.schema).is_empty()
            {
                // Each process's blob store is its own: a reference would not resolve there.
                return Err(ResumeError::BadSplit {
                    spec: shared.spec.path.clone(),
                    reason: format!(
                        "`{}` sends blob references to subtasks in another process; a region whose blob \
                         columns cross between workers cannot be spread yet (run it with `spread = 1`)",
                        node.id
                    ),
                }
                .into());
            }
            let (tx, rx) = mpsc::channel(capacity);
            let key = channel_key(attempt, index);
            if from_here {
                let outs = outputs.entry(ch.from.clone()).or_default();
                match outs.iter_mut().find(|(e, _)| *e == ch.edge) {
                    Some((_, v)) => v.push(tx),
                    None => outs.push((ch.edge, vec![tx])),
                }
                if let (false, Some(split)) = (to_here, split) {
                    tasks.spawn(forward(split.clone(), split.part_of(ch.to.index), key, rx));
                    continue;
                }
            } else if let Some(split) = split {
                tasks.spawn(deliver(split.clone(), split.part_of(ch.from.index), key, tx));
                inputs.entry(ch.to.clone()).or_default().push((edge.port, rx));
                continue;
            }
            inputs.entry(ch.to.clone()).or_default().push((edge.port, rx));
        }
        let router_for = |node: &NodeView, subtask: u32, outputs: &mut HashMap<SubtaskId, Vec<(usize, Vec<Tx>)>>| {
            let id = SubtaskId { node: node.id.clone(), index: subtask };
            let edges = outputs.remove(&id).unwrap_or_default();
            Router::new(
                edges
                    .into_iter()
                    .map(|(e, senders)| {
                        let edge = &shared.graph.edges()[e];
                        RouteEdge {
                            partitioning: edge.partitioning.clone(),
                            dead_letter: edge.dead_letter,
                            senders,
                            next: subtask as usize,
                        }
                    })
                    .collect(),
                &node.schema,
                node.metrics.clone(),
            )
        };

        let mut injectors: Vec<mpsc::UnboundedSender<u64>> = Vec::new();
        let mut sinks: HashMap<String, SinkSpec> = HashMap::new();
        let board = self.board.clone();
        for node in &mut self.nodes {
            let view = NodeView { id: node.id.clone(), schema: node.schema.clone(), metrics: node.metrics.clone() };
            let node_parallelism = node.parallelism;
            let node_metrics = node.metrics.clone();
            let node_schema = node.schema.clone();
            let node_id = node.id.clone();
            match &mut node.role {
                RunRole::Source(planned) => {
                    for subtask in (0..node_parallelism).filter(|i| owns(*i)) {
                        let participant = format!("{}[{subtask}]", node_id);
                        let reader = planned.open(subtask, node_parallelism).map_err(EngineError::Connector)?;
                        let router = router_for(&view, subtask, &mut outputs)?;
                        let ckpt = link(participant.clone()).map(|l| {
                            let (tx, rx) = mpsc::unbounded_channel();
                            injectors.push(tx);
                            (l, rx)
                        });
                        let task = SourceTask {
                            reader,
                            router,
                            metrics: node_metrics.clone(),
                            ckpt,
                            name: participant.clone(),
                        };
                        let span = tracing::info_span!("subtask", node = %node_id, subtask);
                        tasks.spawn(task.run(restore_of(&participant)).instrument(span));
                    }
                }
                RunRole::Operator { version: spec_version, capabilities, ctxs, opened, policy } => {
                    // The version the restored checkpoint says runs after its barrier.
                    let recorded = recorded_version(&node_id, node_parallelism, &metas)?;
                    let version = match recorded {
                        Some(r)
                            if r.component != spec_version.record.component
                                || r.config != spec_version.record.config =>
                        {
                            let known = board.known(node_id.as_str(), &r);
                            let v = match known {
                                Some(v) => v,
                                None => load_recorded(&shared, &r, node_id.as_str(), *capabilities, spec_version)?,
                            };
                            board.remember(node_id.as_str(), v.clone());
                            tracing::info!(operator = %node_id, version = %v.record.plugin, "runs the version its checkpoint recorded (a live upgrade), not the spec's");
                            v
                        }
                        _ => spec_version.clone(),
                    };
                    let is_spec = version.record == spec_version.record;
                    for (i, (ctx, store)) in ctxs.iter().enumerate() {
                        let subtask = ctx.subtask;
                        let participant = format!("{}[{subtask}]", node_id);
                        let id = SubtaskId { node: node_id.clone(), index: subtask };
                        let gate = InputGate::new(inputs.remove(&id).unwrap_or_default(), shared.mode);
                        let router = router_for(&view, subtask, &mut outputs)?;
                        let mut ctx = ctx.clone();
                        ctx.config_json = version.record.config.clone();
                        let opened = opened.get_mut(i).and_then(Option::take);
                        let instance = match opened.filter(|_| is_spec) {
                            Some(inst) => inst,
                            None => version.factory.instantiate(&ctx).await.map_err(EngineError::Operator)?,
                        };
                        let task = OperatorTask {
                            factory: version.factory.clone(),
                            ctx,
                            instance,
                            policy: policy.clone(),
                            metrics: node_metrics.clone(),
                            ckpt: link(participant.clone()),
                            chain: Vec::new(),
                            state: store.clone(),
                            version: version.record.clone(),
                            spec_version: spec_version.record.clone(),
                            board: Some(board.clone()),
                        };
                        let span = tracing::info_span!("subtask", node = %node_id, subtask);
                        tasks
                            .spawn_on(task.run(gate, router, restore_of(&participant)).instrument(span), &shared.guest);
                    }
                }
                RunRole::Sink(spec) => {
                    for subtask in 0..node_parallelism {
                        let participant = format!("{}[{subtask}]", node_id);
                        if leads {
                            // The leading part publishes every sink subtask's transactions.
                            sinks.insert(participant.clone(), spec.clone());
                        }
                        if !owns(subtask) {
                            continue;
                        }
                        let id = SubtaskId { node: node_id.clone(), index: subtask };
                        let gate = InputGate::new(inputs.remove(&id).unwrap_or_default(), shared.mode);
                        let base = &shared.base_dir;
                        let dead_letter = shared.graph.inputs_of(node.index).iter().any(|(_, e)| e.dead_letter);
                        let blob_mode = SinkBlobMode::of(spec, dead_letter);
                        let schema = blob_mode.schema(&node_schema);
                        let writer = if checkpointing.is_some() {
                            flumen_connectors::open_transactional_sink(spec, base, schema, subtask, node_parallelism)
                        } else {
                            flumen_connectors::open_sink(spec, base, schema, subtask, node_parallelism)
                        }
                        .map_err(EngineError::Connector)?;
                        let task = SinkTask {
                            writer,
                            metrics: node_metrics.clone(),
                            ckpt: link(participant.clone()),
                            blobs: shared.blobs.clone(),
                            blob_mode,
                            node: node_id.to_string(),
                            rows_seen: 0,
                        };
                        let span = tracing::info_span!("subtask", node = %node_id, subtask);
                        tasks.spawn(task.run(gate, restore_of(&participant)).instrument(span));
                    }
                }
            }
        }
        drop(to_coord);
        Ok(Wired { tasks, injectors, sinks, from_tasks, committed })
    }
}

/// One attempt's subtasks of this process, and what the driver needs of them.
struct Wired {
    tasks: JoinSet<Result<Finished, EngineError>>,
    /// One per source subtask here: barrier ids to inject.
    injectors: Vec<mpsc::UnboundedSender<u64>>,
    /// Every sink subtask of the region (on the leading part) and its spec.
    sinks: HashMap<String, SinkSpec>,
    from_tasks: mpsc::UnboundedReceiver<TaskMsg>,
    committed: Arc<std::sync::atomic::AtomicU64>,
}

/// Sends what a producer here puts on channel `key` to part `to`, until its end.
async fn forward(split: Split, to: u32, key: u64, mut rx: Rx) -> Result<Finished, EngineError> {
    // A channel that fails fails the attempt (a part whose whole link broke shows as lost
    // on the control messages too).
    let lost = |reason: String| EngineError::Part { part: to, reason: format!("channel {key}: {reason}") };
    let mut out = split.link.open(to, key).await.map_err(lost)?;
    while let Some(event) = rx.recv().await {
        let end = matches!(event, Event::End);
        out.send(event).await.map_err(lost)?;
        if end {
            break;
        }
    }
    Ok(Finished::Done)
}

/// Hands what part `from` sends on channel `key` to the consumer here, until its end.
async fn deliver(split: Split, from: u32, key: u64, tx: Tx) -> Result<Finished, EngineError> {
    let lost = |reason: String| EngineError::Part { part: from, reason: format!("channel {key}: {reason}") };
    let mut input = split.link.accept(from, key).await.map_err(lost)?;
    loop {
        let event = input.recv().await.map_err(lost)?;
        let end = matches!(event, Event::End);
        if tx.send(event).await.is_err() || end {
            // A consumer that stopped has failed (its error ends the attempt).
            return Ok(Finished::Done);
        }
    }
}

/// The next control message of a split region; never, without one.
async fn next_incoming(parts: &mut Option<&mut Parts>) -> Result<(u32, PartMsg), EngineError> {
    match parts {
        Some(p) => p.next().await,
        None => std::future::pending().await,
    }
}

/// Refuses a message about `participant` from a part that does not run it.
fn runs_on(split: &Split, from: u32, participant: &str) -> Result<(), EngineError> {
    let subtask =
        participant.rsplit_once('[').and_then(|(_, rest)| rest.strip_suffix(']')).and_then(|i| i.parse::<u32>().ok());
    match subtask {
        Some(i) if split.part_of(i) == from && from != split.part => Ok(()),
        _ => Err(EngineError::PartLost {
            part: from,
            reason: format!("part {from} reported for subtask {participant:?}, which it does not run"),
        }),
    }
}

/// The newest intact checkpoint of region `name`, the damaged newer ones
/// (quarantined) and the highest id an object store listed. With a remote
/// store, its newest intact checkpoint is first brought into the local
/// directory. (A free function: the supervisor itself is not `Sync`, so a
/// borrow of it cannot be held across an await.)
async fn latest(
    shared: &Shared,
    name: &str,
    metrics: &RegionMetrics,
) -> Result<(Option<Manifest>, Vec<flumen_state::Rejected>, u64), EngineError> {
    let Some(store) = &shared.checkpoints else { return Ok((None, Vec::new(), 0)) };
    let mut rejected = Vec::new();
    let mut seen = 0;
    if let Some(remote) = &shared.remote {
        let started = Instant::now();
        let got = remote.download_latest(store, name).await.map_err(EngineError::checkpoint)?;
        for r in &got.rejected {
            tracing::warn!(region = %name, path = %r.path.display(), "skipping a damaged checkpoint: {}", r.reason);
            metrics.add_rejected();
        }
        tracing::info!(
            region = %name,
            store = %remote.url(),
            checkpoint = ?got.checkpoint,
            files = got.transfer.files,
            bytes = got.transfer.bytes,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint store read"
        );
        seen = got.newest_seen;
        rejected.extend(got.rejected);
    }
    let (m, local) = tokio::task::block_in_place(|| store.latest_valid(name)).map_err(EngineError::checkpoint)?;
    for r in &local {
        tracing::warn!(region = %name, path = %r.path.display(), "skipping a damaged checkpoint: {}", r.reason);
        metrics.add_rejected();
    }
    rejected.extend(local);
    Ok((m, rejected, seen))
}

/// Up to ten paths, then how many more.
fn list_paths(paths: &[PathBuf]) -> String {
    const SHOWN: usize = 10;
    let mut text: Vec<String> = paths.iter().take(SHOWN).map(|p| p.display().to_string()).collect();
    if paths.len() > SHOWN {
        text.push(format!("and {} more", paths.len() - SHOWN));
    }
    text.join(", ")
}

/// The typed record of `participant` in manifest `m` (`None`: it has no entry).
fn meta_in(m: &Manifest, participant: &str) -> Result<Option<ParticipantMeta>, EngineError> {
    let Some(p) = m.participants.get(participant) else { return Ok(None) };
    ParticipantMeta::parse(participant, &p.meta)
        .map(Some)
        .map_err(|e| EngineError::checkpoint(format!("checkpoint {} of region `{}`: {e}", m.checkpoint, m.region)))
}

fn flatten(joined: Result<Result<Finished, EngineError>, tokio::task::JoinError>) -> Result<Finished, EngineError> {
    match joined {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(EngineError::Internal(format!("a subtask panicked: {e}"))),
        Err(e) => Err(EngineError::Internal(format!("a subtask was lost: {e}"))),
    }
}

/// A region's coordinator with the effects it asks for: manifests (local, then
/// remote), commits, retention.
struct CheckpointDriver {
    coordinator: Coordinator<Ack>,
    store: CheckpointStore,
    remote: Option<Arc<RemoteStore>>,
    region: String,
    job: String,
    retain: usize,
    base_dir: PathBuf,
    /// Sink participants and their specs, to publish their transactions.
    sinks: HashMap<String, SinkSpec>,
    /// Participants that ended, with what they reported; they acknowledge every later checkpoint with it.
    done: BTreeMap<String, Ack>,
    started: Instant,
    /// When each checkpoint in flight was triggered, and its span (trigger to commit or abort).
    triggered: HashMap<u64, (Instant, tracing::Span)>,
    metrics: Arc<RegionMetrics>,
    /// The last checkpoint whose transactions were published (in this attempt).
    last_committed: Option<u64>,
    finished: bool,
    /// Shared with the sinks, so they stop carrying published transactions.
    committed: Arc<std::sync::atomic::AtomicU64>,
    blobs: BlobStore,
    models: Option<Arc<flumen_inference::ModelHub>>,
    /// The checkpoints retention keeps, oldest first: their blobs stay pinned.
    kept: std::collections::VecDeque<u64>,
    /// Asked right before the manifest is written and before the sinks' transactions are published.
    fence: Option<Arc<dyn CommitFence>>,
    /// The region's live upgrades: armed at a trigger, confirmed by a completion.
    board: Arc<crate::upgrade::SwapBoard>,
}

impl CheckpointDriver {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn on_message(&mut self, msg: TaskMsg) -> Result<(), EngineError> {
        match msg {
            TaskMsg::Ack { checkpoint, participant, files, meta } => {
                let action = self.coordinator.ack(checkpoint, &participant, (files, meta));
                self.act(action).await
            }
            TaskMsg::Done { participant, files, meta } => {
                self.done.insert(participant.clone(), (files.clone(), meta.clone()));
                for n in self.coordinator.pending() {
                    let action = self.coordinator.ack(n, &participant, (files.clone(), meta.clone()));
                    self.act(action).await?;
                }
                Ok(())
            }
        }
    }

    /// Triggers a checkpoint (if none is running) and times out stale ones.
    async fn on_tick(&mut self, injectors: &[mpsc::UnboundedSender<u64>]) -> Result<(), EngineError> {
        let now = self.now_ms();
        for action in self.coordinator.tick(now) {
            self.act(action).await?;
        }
        // A version on probation holds the next checkpoint (except the final one).
        if !self.finished && self.board.holds_checkpoints(Instant::now()) {
            return Ok(());
        }
        if let Some(n) = self.coordinator.trigger(now) {
            // Before any barrier of `n` is injected.
            self.board.arm(n);
            let span = tracing::info_span!(
                "checkpoint",
                checkpoint = n,
                bytes = tracing::field::Empty,
                outcome = tracing::field::Empty
            );
            self.triggered.insert(n, (Instant::now(), span));
            for inject in injectors {
                // A source that already ended acknowledges through `Done`.
                let _ = inject.send(n);
            }
            let done: Vec<(String, Ack)> = self.done.iter().map(|(p, a)| (p.clone(), a.clone())).collect();
            for (p, ack) in done {
                let action = self.coordinator.ack(n, &p, ack);
                self.act(action).await?;
            }
        }
        Ok(())
    }

    /// Every task ended: the final checkpoint holds what each reported at its end.
    async fn finish(&mut self) -> Result<(), EngineError> {
        self.finished = true;
        self.board.input_ended();
        for _ in 0..3 {
            let pending = self.coordinator.pending();
            if !pending.is_empty() {
                return Err(EngineError::Internal(format!(
                    "region `{}` ended with checkpoint {pending:?} unacknowledged",
                    self.region
                )));
            }
            let before = self.coordinator.last_completed();
            self.on_tick(&[]).await?;
            if self.coordinator.last_completed() > before {
                return Ok(());
            }
        }
        Err(EngineError::Internal(format!("region `{}` could not take its final checkpoint", self.region)))
    }

    async fn act(&mut self, action: CoordAction<Ack>) -> Result<(), EngineError> {
        match action {
            CoordAction::Complete { checkpoint, acks } => self.complete(checkpoint, acks).await,
            other => self.note(other),
        }
    }

    /// The actions that need no I/O.
    fn note(&mut self, action: CoordAction<Ack>) -> Result<(), EngineError> {
        match action {
            CoordAction::Complete { checkpoint, .. } => Err(EngineError::Internal(format!(
                "region `{}`: checkpoint {checkpoint} completed while it was being persisted",
                self.region
            ))),
            CoordAction::Aborted { checkpoint, reason } => {
                tracing::warn!(region = %self.region, checkpoint, "checkpoint aborted: {reason}");
                if let Some((_, span)) = self.triggered.remove(&checkpoint) {
                    span.record("outcome", "aborted");
                }
                self.metrics.add_aborted();
                if let Some((at, operator)) = self.board.armed_at()
                    && at == checkpoint
                {
                    // The barrier an upgrade took over at will never be a checkpoint to confirm it by.
                    return Err(EngineError::Upgrade {
                        operator,
                        reason: format!(
                            "checkpoint {checkpoint}, at whose barrier it took over, was aborted: {reason}"
                        ),
                    });
                }
                Ok(())
            }
            CoordAction::Commit { checkpoint } => {
                tracing::debug!(region = %self.region, checkpoint, "commit");
                Ok(())
            }
            CoordAction::None | CoordAction::Ignored => Ok(()),
        }
    }

    /// Steps 6–8 of the protocol: manifest (local, then in the store when there is
    /// one), then publish, then retention.
    async fn complete(&mut self, checkpoint: u64, acks: Vec<(String, Ack)>) -> Result<(), EngineError> {
        let finished = self.finished && acks.iter().all(|(p, _)| self.done.contains_key(p));
        let mut participants = BTreeMap::new();
        let mut bytes = 0;
        for (p, (files, meta)) in acks {
            bytes += files.iter().filter(|f| f.checkpoint == checkpoint).map(|f| f.bytes).sum::<u64>();
            participants.insert(p, Participant { files, meta: meta.to_value() });
        }
        let manifest = Manifest {
            format: 1,
            job: self.job.clone(),
            region: self.region.clone(),
            checkpoint,
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            finished,
            participants,
        };
        // Inference memo entries made so far survive a machine crash from here on.
        if let Some(models) = &self.models {
            tokio::task::block_in_place(|| models.sync_memos())
                .map_err(|e| EngineError::Models(format!("syncing the inference memo: {e}")))?;
        }
        fail::fail_point!("checkpoint::before-manifest", |_| std::process::abort());
        check_fence(self.fence.as_ref())?;
        tokio::task::block_in_place(|| self.store.write_manifest(&manifest)).map_err(EngineError::checkpoint)?;
        fail::fail_point!("checkpoint::after-manifest", |_| std::process::abort());
        if let Some(remote) = &self.remote {
            // With a store, the checkpoint is complete only once its manifest is there.
            check_fence(self.fence.as_ref())?;
            let started = Instant::now();
            let sent = remote
                .upload_checkpoint(&self.store, &manifest)
                .await
                .map_err(|e| EngineError::checkpoint(format!("checkpoint {checkpoint} not stored: {e}")))?;
            tracing::info!(
                region = %self.region,
                checkpoint,
                store = %remote.url(),
                files = sent.files,
                bytes = sent.bytes,
                ms = started.elapsed().as_millis() as u64,
                "checkpoint uploaded"
            );
        }
        let commit = self.coordinator.persisted(checkpoint);
        self.note(commit)?;
        check_fence(self.fence.as_ref())?;
        self.publish(&manifest)?;
        self.board.completed(checkpoint);
        self.committed.store(checkpoint, std::sync::atomic::Ordering::Release);
        fail::fail_point!("checkpoint::after-commit", |_| std::process::abort());
        let took = self.triggered.remove(&checkpoint).map(|(t, span)| {
            span.record("bytes", bytes);
            span.record("outcome", "committed");
            t.elapsed()
        });
        self.metrics.add_completed(checkpoint, took, bytes);
        let freed = tokio::task::block_in_place(|| self.store.retain(&self.region, self.retain))
            .map_err(EngineError::checkpoint)?
            .freed;
        if let Some(remote) = &self.remote {
            // Only garbage is left to collect: a failure here loses nothing, and the
            // next checkpoint's retention tries again.
            match remote.retain(&self.region, self.retain).await {
                Ok(gone) => {
                    tracing::debug!(region = %self.region, objects = gone.files, bytes = gone.bytes, "store retention")
                }
                Err(e) => tracing::warn!(region = %self.region, "checkpoint store retention failed: {e}"),
            }
        }
        self.kept.push_back(checkpoint);
        while self.kept.len() > self.retain {
            self.kept.pop_front();
        }
        let kept: Vec<u64> = self.kept.iter().copied().collect();
        self.blobs.release_checkpoints_except(&self.region, &kept, checkpoint);
        // One line per checkpoint: how long it took from its trigger (barriers
        // through every subtask, state and in-flight files written and synced,
        // the manifest, the upload, publishing the sinks) and what it wrote.
        tracing::info!(
            region = %self.region,
            checkpoint,
            ms = took.map_or(0, |d| d.as_millis() as u64),
            bytes,
            freed,
            "checkpoint complete"
        );
        self.last_committed = Some(checkpoint);
        Ok(())
    }

    /// Publishes the sinks' transactions of a durable checkpoint. Idempotent,
    /// so a restart after a crash in the middle simply does it again.
    fn publish(&self, manifest: &Manifest) -> Result<(), EngineError> {
        let mut first = true;
        for p in manifest.participants.keys() {
            let Some(spec) = self.sinks.get(p) else { continue };
            for pending in meta_in(manifest, p)?.map(|m| m.pending).unwrap_or_default() {
                if !first {
                    fail::fail_point!("checkpoint::during-commit", |_| std::process::abort());
                }
                first = false;
                tokio::task::block_in_place(|| flumen_connectors::commit_pending(spec, &self.base_dir, &pending))
                    .map_err(EngineError::Connector)?;
            }
        }
        Ok(())
    }
}
