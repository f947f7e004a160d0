//! Live upgrade: an operator of a running job changes version at a
//! checkpoint barrier, in place, with nothing lost or repeated.
//!
//! The protocol, for one upgrade of operator `X` in region `R`:
//!
//! 1. A caller hands [`JobControl::upgrade`] a request: the operator, the new
//!    component (a file the caller resolved and verified: a package pinned by
//!    digest, or a plain component), the reference to record, and optionally a
//!    new config. It waits for the outcome.
//! 2. The job's control task checks it before anything runs differently: the
//!    operator exists and is an operator (not a source or sink), its region
//!    checkpoints and is not spread across processes, the component compiles
//!    and links with the capabilities the job grants `X`, one trial instance
//!    opens with the config, and its output schema equals the running
//!    version's (downstream operators were planned against it). A refusal is
//!    answered at once; the job never noticed.
//! 3. The checked version waits on `R`'s [`SwapBoard`]. When `R` next triggers
//!    a checkpoint `n`, the board *arms* the swap at `n` before any barrier is
//!    injected. Only one swap is armed per region at a time.
//! 4. Every subtask of `X`, on taking its snapshot for `n` (after the aligned
//!    barrier, or the first barrier when unaligned), writes its state with the
//!    old version (keyed state lives in the host; the guest's own memory goes
//!    through `snapshot.save`), then opens the new version on the same state
//!    and hands it the saved bytes (`snapshot.restore`, where a guest that
//!    changed its layout migrates it). Everything the subtask processes after
//!    the barrier — in unaligned mode also the in-flight batches stored with
//!    `n`, which a restore replays after `n` — goes through the new version.
//!    So every epoch between two barriers is wholly old or wholly new.
//! 5. Checkpoint `n` records, per participant of `X`, the new version *and*
//!    the old one as `rollback` (meta `version`): `n` is provisional. A
//!    restore from a provisional checkpoint runs the old version (what the
//!    snapshot was taken with), so a region that fails or a process that dies
//!    before the upgrade is confirmed rolls back by plain recovery.
//! 6. Probation: the new version must process `health_batches` batches (over
//!    all subtasks) without an error. Until it does (or `probation` passes
//!    without an error), `R` triggers no further checkpoint. An error of the
//!    new version during probation — a failed open or restore at the
//!    barrier, or any failed call, whatever the failure policy — fails the
//!    region with [`EngineError::Upgrade`]: it restarts from its latest
//!    checkpoint, `n` or earlier, both of which run the old version (step 5),
//!    and the caller hears `RolledBack`. That restart does not count against
//!    `[restart] attempts`.
//! 7. After probation the next checkpoint `m > n` records the new version
//!    without `rollback`. When `m` completes the upgrade is confirmed:
//!    the caller hears `Applied { checkpoint: n, .. }`.
//!
//! Exactly-once holds because nothing here bypasses checkpoints: the swap
//! happens inside a snapshot, and a rollback is a regional recovery.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_schema::SchemaRef;
use flumen_wasm::{Capabilities, OpenContext, OperatorFactory, WasmRuntime};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// The default of [`UpgradeRequest::health_batches`].
pub const HEALTH_BATCHES_DEFAULT: u32 = 8;

/// A request to change the version of one operator of a running job.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The operator's id in the job spec.
    pub operator: String,
    /// The new version's component, already resolved and verified by the caller.
    pub component: PathBuf,
    /// What checkpoints record as the version (a reference a later run can
    /// resolve again: `name@sha256:…` for a package, else a path).
    pub reference: String,
    /// The new version's config as JSON text; `None` keeps the running one's.
    pub config_json: Option<String>,
    /// Batches the new version must process without an error before the
    /// upgrade is confirmed (at least 1).
    pub health_batches: u32,
    /// How long probation lasts at most when fewer batches arrive; `None`:
    /// ten checkpoint intervals, between 1 s and 60 s.
    pub probation: Option<Duration>,
    /// The new version's package manifest, when it is a package (verified by
    /// the caller): its state layout must be one the running version's
    /// state can be restored into, the job must grant what it declares, and
    /// the config must satisfy its schema.
    pub package: Option<flumen_package::Manifest>,
}

impl UpgradeRequest {
    pub fn new(operator: impl Into<String>, component: PathBuf, reference: impl Into<String>) -> Self {
        Self {
            operator: operator.into(),
            component,
            reference: reference.into(),
            config_json: None,
            health_batches: HEALTH_BATCHES_DEFAULT,
            probation: None,
            package: None,
        }
    }
}

/// How an upgrade that was tried ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum UpgradeOutcome {
    /// The new version runs: it took over at checkpoint `checkpoint`'s barrier
    /// and passed probation, and a later checkpoint recorded it.
    Applied {
        checkpoint: u64,
        /// From the request to the first batch the new version processed.
        swap_ms: f64,
        /// From the request to the checkpoint that confirmed it.
        confirmed_ms: f64,
    },
    /// The old version runs again, from the region's latest checkpoint (the
    /// barrier `checkpoint` the swap was armed at, when known).
    RolledBack { checkpoint: Option<u64>, reason: String },
}

/// Why an upgrade was refused before anything changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpgradeError {
    #[error("the job has no operator `{operator}` (its operators: {known})")]
    UnknownOperator { operator: String, known: String },
    #[error("`{operator}` is a {kind}, not an operator: only operators can be upgraded")]
    NotAnOperator { operator: String, kind: &'static str },
    #[error("operator `{operator}`: {reason}")]
    Refused { operator: String, reason: String },
    #[error("the job ended before the upgrade of `{operator}` took effect")]
    Ended { operator: String },
}

/// What a checkpoint participant records about the version it runs after
/// the barrier (meta `version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionRecord {
    /// The reference it was loaded from.
    pub(crate) plugin: String,
    /// SHA-256 of the component (hex).
    pub(crate) component: String,
    /// Its config as JSON text.
    pub(crate) config: String,
    /// Where the component was loaded from (a later run loads it from there,
    /// checking its digest).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) path: String,
    /// Set at the barrier a swap happened: the version the snapshot was taken
    /// with, which a restore from this checkpoint runs (step 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rollback: Option<Box<VersionRecord>>,
}

/// One loaded version of an operator.
#[derive(Clone)]
pub(crate) struct Version {
    pub(crate) record: VersionRecord,
    pub(crate) factory: OperatorFactory,
    /// Its package's manifest, when it came from one.
    pub(crate) manifest: Option<Arc<flumen_package::Manifest>>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version").field("record", &self.record).finish_non_exhaustive()
    }
}

/// Hands upgrade requests to a running job ([`crate::RunOptions::control`]).
/// Cloning gives another handle to the same job.
#[derive(Debug, Clone, Default)]
pub struct JobControl {
    inner: Arc<Mutex<ControlState>>,
    notify: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
struct ControlState {
    queue: Vec<Pending>,
    ended: bool,
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) request: UpgradeRequest,
    pub(crate) requested: Instant,
    pub(crate) reply: oneshot::Sender<Result<UpgradeOutcome, UpgradeError>>,
}

impl Pending {
    pub(crate) fn answer(self, outcome: Result<UpgradeOutcome, UpgradeError>) {
        // A caller that stopped waiting needs no answer.
        let _ = self.reply.send(outcome);
    }
}

impl JobControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to upgrade one operator; resolves when the upgrade was
    /// applied, rolled back or refused (or the job ended first).
    pub async fn upgrade(&self, request: UpgradeRequest) -> Result<UpgradeOutcome, UpgradeError> {
        let operator = request.operator.clone();
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if s.ended {
                return Err(UpgradeError::Ended { operator });
            }
            s.queue.push(Pending { request, requested: Instant::now(), reply: tx });
        }
        self.notify.notify_one();
        rx.await.unwrap_or(Err(UpgradeError::Ended { operator }))
    }

    /// The next request, waiting for one.
    pub(crate) async fn next(&self) -> Pending {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                if !s.queue.is_empty() {
                    return s.queue.remove(0);
                }
            }
            notified.await;
        }
    }

    /// The job ended: every request waiting, and every later one, hears so.
    pub(crate) fn end(&self) {
        let queue = {
            let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            s.ended = true;
            std::mem::take(&mut s.queue)
        };
        for p in queue {
            let operator = p.request.operator.clone();
            p.answer(Err(UpgradeError::Ended { operator }));
        }
    }
}

/// A region's upgrades in progress, shared by its checkpoint driver, its
/// operator subtasks and the job's control task (steps 3–7).
#[derive(Debug, Default)]
pub(crate) struct SwapBoard {
    inner: Mutex<BoardState>,
}

#[derive(Debug, Default)]
struct BoardState {
    /// Checked versions waiting for the next checkpoint, oldest first.
    waiting: Vec<Prepared>,
    armed: Option<Armed>,
    /// Versions this run has loaded, per operator, by component digest and config.
    known: HashMap<String, Vec<Version>>,
}

/// A checked version and its request.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) operator: String,
    pub(crate) version: Version,
    pub(crate) pending: Pending,
    pub(crate) probation: Duration,
}

#[derive(Debug)]
struct Armed {
    prepared: Prepared,
    checkpoint: u64,
    batches_ok: u64,
    first_batch: Option<Instant>,
    /// When checkpoint `checkpoint` completed: every subtask had swapped (or
    /// ended before its barrier), and probation's clock runs from here.
    swapped: Option<Instant>,
    /// Probation passed: checkpoints may be triggered again.
    healthy: bool,
}

impl Armed {
    /// Whether a subtask of `operator` running `running` runs the swapped-in version, unconfirmed.
    fn on_probation(&self, operator: &str, running: &VersionRecord) -> bool {
        let new = &self.prepared.version.record;
        self.prepared.operator == operator
            && !self.healthy
            && running.component == new.component
            && running.config == new.config
    }

    fn check_health(&mut self, now: Instant) {
        let Some(since) = self.swapped else { return };
        let batches = u64::from(self.prepared.pending.request.health_batches.max(1));
        if self.batches_ok >= batches || now.duration_since(since) >= self.prepared.probation {
            self.healthy = true;
        }
    }

    fn applied(self) {
        let requested = self.prepared.pending.requested;
        let swap_ms = self.first_batch.map_or(0.0, |t| t.duration_since(requested).as_secs_f64() * 1e3);
        tracing::info!(operator = %self.prepared.operator, checkpoint = self.checkpoint, swap_ms, "upgrade applied");
        self.prepared.pending.answer(Ok(UpgradeOutcome::Applied {
            checkpoint: self.checkpoint,
            swap_ms,
            confirmed_ms: requested.elapsed().as_secs_f64() * 1e3,
        }));
    }
}

impl SwapBoard {
    /// A checked version waits for the next checkpoint.
    pub(crate) fn queue(&self, prepared: Prepared) {
        let mut s = self.lock();
        s.known.entry(prepared.operator.clone()).or_default().push(prepared.version.clone());
        s.waiting.push(prepared);
    }

    /// Whether an upgrade of `operator` is waiting or in progress.
    pub(crate) fn busy(&self, operator: &str) -> bool {
        let s = self.lock();
        s.waiting.iter().any(|p| p.operator == operator)
            || s.armed.as_ref().is_some_and(|a| a.prepared.operator == operator)
    }

    /// A version of `operator` this run loaded, if any matches `record`.
    pub(crate) fn known(&self, operator: &str, record: &VersionRecord) -> Option<Version> {
        let s = self.lock();
        s.known
            .get(operator)?
            .iter()
            .find(|v| v.record.component == record.component && v.record.config == record.config)
            .cloned()
    }

    pub(crate) fn remember(&self, operator: &str, version: Version) {
        self.lock().known.entry(operator.to_string()).or_default().push(version);
    }

    /// Whether the checkpoint driver must not trigger a checkpoint now: a
    /// swapped version is on probation (step 6).
    pub(crate) fn holds_checkpoints(&self, now: Instant) -> bool {
        let mut s = self.lock();
        let Some(a) = s.armed.as_mut() else { return false };
        a.check_health(now);
        !a.healthy
    }

    /// Checkpoint `n` was triggered: the oldest waiting swap is armed at it.
    pub(crate) fn arm(&self, checkpoint: u64) {
        let mut s = self.lock();
        if s.armed.is_some() || s.waiting.is_empty() {
            return;
        }
        let prepared = s.waiting.remove(0);
        tracing::info!(
            operator = %prepared.operator,
            checkpoint,
            version = %prepared.version.record.plugin,
            "upgrade armed at this checkpoint's barrier"
        );
        s.armed = Some(Armed { prepared, checkpoint, batches_ok: 0, first_batch: None, swapped: None, healthy: false });
    }

    /// The checkpoint a swap is armed at, if any.
    pub(crate) fn armed_at(&self) -> Option<(u64, String)> {
        self.lock().armed.as_ref().map(|a| (a.checkpoint, a.prepared.operator.clone()))
    }

    /// The version a subtask of `operator` takes over with at its snapshot for `checkpoint`.
    pub(crate) fn swap_at(&self, operator: &str, checkpoint: u64) -> Option<Version> {
        let s = self.lock();
        let a = s.armed.as_ref()?;
        (a.prepared.operator == operator && a.checkpoint == checkpoint).then(|| a.prepared.version.clone())
    }

    /// Whether a subtask of `operator` that runs `running` runs the version on
    /// probation: its errors roll the upgrade back. A subtask whose barrier has
    /// not arrived yet still runs the old version, whose errors are its own.
    pub(crate) fn on_probation(&self, operator: &str, running: &VersionRecord) -> bool {
        let s = self.lock();
        s.armed.as_ref().is_some_and(|a| a.on_probation(operator, running))
    }

    /// A subtask of `operator` running `running` processed a batch without an
    /// error; it counts only when that is the version on probation.
    pub(crate) fn batch_ok(&self, operator: &str, running: &VersionRecord) {
        let mut s = self.lock();
        if let Some(a) = s.armed.as_mut().filter(|a| a.on_probation(operator, running)) {
            let now = Instant::now();
            a.first_batch.get_or_insert(now);
            a.batches_ok += 1;
            a.check_health(now);
        }
    }

    /// Checkpoint `checkpoint` completed. At the armed barrier: every subtask
    /// swapped, probation runs. Later, after probation: the upgrade is
    /// confirmed (step 7).
    pub(crate) fn completed(&self, checkpoint: u64) {
        let mut s = self.lock();
        let Some(a) = s.armed.as_mut() else { return };
        if checkpoint == a.checkpoint {
            let now = Instant::now();
            a.swapped = Some(now);
            a.check_health(now);
        } else if checkpoint > a.checkpoint
            && a.healthy
            && let Some(a) = s.armed.take()
        {
            a.applied();
        }
    }

    /// The region's input ended with no error while a swap was armed: once its
    /// barrier completed, nothing more can fail probation.
    pub(crate) fn input_ended(&self) {
        let mut s = self.lock();
        if let Some(a) = s.armed.as_mut().filter(|a| a.swapped.is_some()) {
            a.healthy = true;
        }
    }

    /// The region failed while a swap was armed: the upgrade rolls back (the
    /// restart restores a checkpoint that runs the old version). Waiting
    /// upgrades stay queued for the next attempt.
    pub(crate) fn region_failed(&self, reason: &str) {
        let armed = self.lock().armed.take();
        if let Some(a) = armed {
            tracing::warn!(operator = %a.prepared.operator, checkpoint = a.checkpoint, "upgrade rolled back: {reason}");
            a.prepared
                .pending
                .answer(Ok(UpgradeOutcome::RolledBack { checkpoint: Some(a.checkpoint), reason: reason.to_string() }));
        }
    }

    /// The region ended for good: every upgrade armed or waiting hears how.
    pub(crate) fn region_ended(&self, failed: Option<&str>) {
        let (armed, waiting) = {
            let mut s = self.lock();
            (s.armed.take(), std::mem::take(&mut s.waiting))
        };
        if let Some(a) = armed {
            match failed {
                None if a.healthy => a.applied(),
                Some(reason) => a.prepared.pending.answer(Ok(UpgradeOutcome::RolledBack {
                    checkpoint: Some(a.checkpoint),
                    reason: reason.to_string(),
                })),
                None => {
                    let operator = a.prepared.operator.clone();
                    a.prepared.pending.answer(Err(UpgradeError::Ended { operator }));
                }
            }
        }
        for p in waiting {
            let operator = p.operator.clone();
            p.pending.answer(Err(UpgradeError::Ended { operator }));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the control task knows of one operator of the run.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) board: Arc<SwapBoard>,
    pub(crate) region: String,
    /// The version the spec names.
    pub(crate) version: Version,
    pub(crate) capabilities: Capabilities,
    /// Subtask 0's context here (`None`: this process runs none of its subtasks).
    pub(crate) ctx: Option<OpenContext>,
    /// What it emits; a new version must emit the same.
    pub(crate) schema: SchemaRef,
    /// The checkpoint interval (ms) of the job, if it checkpoints.
    pub(crate) checkpoints: Option<u64>,
    /// Its region is spread across processes.
    pub(crate) split: bool,
}

/// The job's control task: checks each request (step 2) and queues it on
/// its region's board, or answers the refusal.
pub(crate) async fn serve(
    control: JobControl,
    targets: HashMap<String, Result<Target, &'static str>>,
    runtime: WasmRuntime,
) {
    loop {
        let pending = control.next().await;
        match check(&pending.request, &targets, &runtime).await {
            Ok((target, version, probation)) => {
                let operator = pending.request.operator.clone();
                tracing::info!(operator = %operator, region = %target.region, version = %version.record.plugin, "upgrade checked; it takes over at the next checkpoint");
                target.board.queue(Prepared { operator, version, pending, probation });
            }
            Err(e) => {
                tracing::warn!("upgrade refused: {e}");
                pending.answer(Err(e));
            }
        }
    }
}

async fn check<'a>(
    request: &UpgradeRequest,
    targets: &'a HashMap<String, Result<Target, &'static str>>,
    runtime: &WasmRuntime,
) -> Result<(&'a Target, Version, Duration), UpgradeError> {
    let operator = request.operator.clone();
    let refused = |reason: String| UpgradeError::Refused { operator: operator.clone(), reason };
    let target = match targets.get(&request.operator) {
        None => {
            let mut known: Vec<&str> = targets.iter().filter(|(_, t)| t.is_ok()).map(|(id, _)| id.as_str()).collect();
            known.sort_unstable();
            return Err(UpgradeError::UnknownOperator {
                operator: operator.clone(),
                known: if known.is_empty() { "none".into() } else { known.join(", ") },
            });
        }
        Some(Err(kind)) => return Err(UpgradeError::NotAnOperator { operator: operator.clone(), kind }),
        Some(Ok(t)) => t,
    };
    let Some(interval_ms) = target.checkpoints else {
        return Err(refused(
            "the job does not checkpoint, and an upgrade takes over at a checkpoint barrier: give the job a \
             [checkpoint] table"
                .into(),
        ));
    };
    if target.split {
        return Err(refused(format!(
            "its region `{}` is spread across processes; a live upgrade swaps within one process only (yet)",
            target.region
        )));
    }
    if target.board.busy(&request.operator) {
        return Err(refused("an upgrade of it is already waiting or on probation".into()));
    }
    let config = request.config_json.clone().unwrap_or_else(|| target.version.record.config.clone());
    if serde_json::from_str::<serde_json::Value>(&config).is_err() {
        return Err(refused("its new config is not JSON".into()));
    }
    if let Some(new) = &request.package {
        if let Some(old) = &target.version.manifest {
            new.state_compatible(old).map_err(|e| refused(format!("its state cannot carry over: {e}")))?;
        }
        let missing = crate::plan::ungranted(new, target.capabilities);
        if !missing.is_empty() {
            return Err(refused(format!(
                "the new version needs {}, which the job does not grant it",
                missing.join(", ")
            )));
        }
        let value: serde_json::Value = serde_json::from_str(&config).map_err(|e| refused(format!("config: {e}")))?;
        new.check_config(&value).map_err(|e| refused(e.to_string()))?;
    }
    let mut version = load_version(
        runtime,
        &request.component,
        &request.reference,
        config,
        &request.operator,
        target.capabilities,
        &target.version,
    )
    .map_err(refused)?;
    if let Some(new) = &request.package {
        if flumen_package::digest::digest_hex(&new.component.digest) != Some(version.record.component.as_str()) {
            return Err(refused(format!(
                "{} is not the component its package names ({})",
                request.component.display(),
                new.component.digest
            )));
        }
        version.manifest = Some(Arc::new(new.clone()));
    }
    // One trial instance, without state: the version opens with this config
    // and emits what the running one emits.
    if let Some(ctx) = &target.ctx {
        let mut ctx = ctx.clone();
        ctx.state = None;
        ctx.config_json = version.record.config.clone();
        let trial = version
            .factory
            .instantiate(&ctx)
            .await
            .map_err(|e| refused(format!("the new version does not open: {e}")))?;
        if trial.output_schema() != &target.schema {
            return Err(refused(format!(
                "the new version emits another schema ({}) than the running one ({}); downstream operators were \
                 planned against it",
                describe(trial.output_schema()),
                describe(&target.schema)
            )));
        }
    }
    if target.board.busy(&request.operator) {
        return Err(refused("an upgrade of it is already waiting or on probation".into()));
    }
    let probation = request.probation.unwrap_or_else(|| {
        Duration::from_millis(interval_ms.saturating_mul(10)).clamp(Duration::from_secs(1), Duration::from_secs(60))
    });
    Ok((target, version, probation))
}

/// Compiles (or takes from the cache) a version of an operator, linked with
/// the capabilities and limits the running one has.
pub(crate) fn load_version(
    runtime: &WasmRuntime,
    path: &std::path::Path,
    reference: &str,
    config: String,
    operator: &str,
    capabilities: Capabilities,
    running: &Version,
) -> Result<Version, String> {
    let component = tokio::task::block_in_place(|| runtime.load_component(path)).map_err(|e| e.to_string())?;
    let factory = OperatorFactory::new(runtime, &component, operator, capabilities, running.factory.limits().clone())
        .map_err(|e| format!("{e} ({})", path.display()))?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(Version {
        record: VersionRecord {
            plugin: reference.to_string(),
            component: hex::encode(component.digest),
            config,
            path: path.display().to_string(),
            rollback: None,
        },
        factory,
        manifest: None,
    })
}

fn describe(schema: &SchemaRef) -> String {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}
