//! A worker: joins the coordinator, heartbeats, runs the tasks it is given (some regions of
//! a job, on this process's engine) and reports how they end.
//!
//! **Its lease.** Every heartbeat the coordinator acknowledges extends the worker's lease to
//! `sent + lease`, counted from when the worker *sent* it. Every task runs with a
//! [`CommitFence`] that fails once the lease ran out or the coordinator fenced the worker:
//! the engine then writes no checkpoint and publishes no output. The coordinator gives a
//! lost worker's regions to another only `lease + grace` after the last heartbeat it
//! *received* — after the worker stopped committing. A paused worker (a long GC, SIGSTOP, a
//! partition) that wakes up finds its lease gone and commits nothing; its late messages are
//! refused and answered with `Fenced`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flumen_engine::{CommitFence, Engine, EngineError, RunOptions, Split};
use flumen_transport::{Connection, Endpoint, NodeIdentity};
use tokio::sync::{mpsc, oneshot};

use crate::mesh::Mesh;
use crate::protocol::{
    CLUSTER_PROTOCOL, Capacity, CoordinatorMessage, Hello, PackageId, PartAssignment, TaskId, TaskOutcome,
    UpgradeReport, WorkerMessage,
};

/// A task's checkpoint ids start above `epoch << EPOCH_ID_SHIFT`: above every id an older
/// attempt at the same regions can reach in 2^24 checkpoints (19 days at 10 a second), with
/// room for 2^15 attempts below the engine's largest floor.
const EPOCH_ID_SHIFT: u32 = 24;

/// How to run a worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub coordinator: SocketAddr,
    pub coordinator_id: NodeIdentity,
    pub capacity: Capacity,
    /// Where tasks keep their working state (never shared with another worker).
    pub data_dir: PathBuf,
    /// Serve Prometheus metrics here (`GET /metrics`).
    pub metrics: Option<SocketAddr>,
    /// Where other workers reach this one's endpoint for split regions (default: the
    /// address it is bound to).
    pub advertise: Option<SocketAddr>,
    /// Brings hot-loaded packages its store lacks from their registry (`None`:
    /// only packages already in the store can be loaded).
    pub loader: Option<Arc<dyn PackageLoader>>,
}

/// Pulls a package into the worker's store from a registry (directory or OCI),
/// checking it against the trust policy; the CLI implements it.
pub trait PackageLoader: Send + Sync + std::fmt::Debug {
    /// Brings `package` from `source`; `Ok` says what was done.
    fn fetch<'a>(
        &'a self,
        package: &'a PackageId,
        source: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>;
}

/// How long the parts of a split region wait for each other to connect.
const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// A task's counters and the nodes it runs.
type TaskMetrics = (Arc<flumen_engine::JobMetrics>, Option<Arc<std::collections::HashSet<String>>>);

/// What the worker's metrics endpoint reads: its tasks' counters and its lease.
#[derive(Debug, Default)]
struct WorkerStats {
    worker: String,
    lease: Arc<Lease>,
    tasks: Mutex<HashMap<TaskId, TaskMetrics>>,
    acked: std::sync::atomic::AtomicU64,
    fenced: std::sync::atomic::AtomicU64,
    /// What crossed to and from each peer worker for split regions.
    mesh: Option<Arc<Mesh>>,
}

impl crate::metrics::Source for WorkerStats {
    fn collect(&self, out: &mut crate::metrics::Samples) {
        let w = [("worker", self.worker.as_str())];
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner).clone();
        out.gauge("worker_tasks", "Tasks this worker runs.", &w, tasks.len() as f64);
        let left = match *self.lease.until.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(until) => until.saturating_duration_since(Instant::now()).as_secs_f64(),
            None => 0.0,
        };
        out.gauge("worker_lease_seconds_left", "Time this worker may still commit without a heartbeat.", &w, left);
        out.counter(
            "worker_heartbeats_acked",
            "Heartbeats the coordinator acknowledged.",
            &w,
            self.acked.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "worker_fenced",
            "Times the coordinator fenced this worker.",
            &w,
            self.fenced.load(Ordering::Relaxed) as f64,
        );
        for (peer, edge) in self.mesh.iter().flat_map(|m| m.edges()) {
            let l = [("worker", self.worker.as_str()), ("peer", peer.as_str())];
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
            out.counter("worker_mesh_bytes_sent", "Arrow IPC bytes sent to a peer worker.", &l, load(&edge.bytes_sent));
            out.counter(
                "worker_mesh_bytes_received",
                "Arrow IPC bytes received from a peer worker.",
                &l,
                load(&edge.bytes_received),
            );
            out.counter("worker_mesh_batches_sent", "Batches sent to a peer worker.", &l, load(&edge.batches_sent));
            out.counter(
                "worker_mesh_batches_received",
                "Batches received from a peer worker.",
                &l,
                load(&edge.batches_received),
            );
        }
        for (task, (metrics, nodes)) in tasks {
            crate::metrics::JobSource { job: task.job.clone(), metrics, nodes }.collect_into(out);
        }
    }
}

/// The lease as this worker sees it; shared by every task's fence.
#[derive(Debug, Default)]
struct Lease {
    until: Mutex<Option<Instant>>,
    revoked: AtomicBool,
}

impl Lease {
    fn extend(&self, until: Instant) {
        let mut u = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if u.is_none_or(|old| until > old) {
            *u = Some(until);
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.revoked.load(Ordering::SeqCst) {
            return Err("the coordinator fenced this worker".into());
        }
        match *self.until.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(until) if Instant::now() < until => Ok(()),
            Some(until) => Err(format!(
                "this worker's lease ran out {} ms ago: the coordinator may have given its regions to another worker",
                Instant::now().duration_since(until).as_millis()
            )),
            None => Err("this worker holds no lease".into()),
        }
    }
}

/// One task's fence: the worker's lease, and the task's own revocation.
#[derive(Debug)]
struct TaskFence {
    lease: Arc<Lease>,
    cancelled: AtomicBool,
}

impl CommitFence for TaskFence {
    fn check(&self) -> Result<(), String> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err("the coordinator cancelled this task".into());
        }
        self.lease.check()
    }
}

struct Running {
    /// Takes live upgrades of the task's operators.
    control: flumen_engine::JobControl,
    fence: Arc<TaskFence>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

/// Runs a worker until the process ends: connects (and reconnects) to the coordinator.
pub async fn run(endpoint: Arc<Endpoint>, engine: Engine, options: WorkerOptions) -> ! {
    let lease = Arc::new(Lease::default());
    // Other workers connect here for the parts of split regions.
    let mesh = Mesh::new(endpoint.clone());
    let mesh_addr = options.advertise.or_else(|| mesh.local_addr()).map(|a| a.to_string());
    tokio::spawn(mesh.clone().serve());
    let stats = Arc::new(WorkerStats {
        worker: endpoint.node().as_str().to_owned(),
        lease: lease.clone(),
        mesh: Some(mesh.clone()),
        ..Default::default()
    });
    let mut metrics = None;
    if let Some(addr) = options.metrics {
        match crate::metrics::Metrics::new(vec![stats.clone()]).serve(addr).await {
            Ok(bound) => {
                tracing::info!("metrics on http://{bound}/metrics");
                metrics = Some(format!("http://{bound}/metrics"));
            }
            Err(e) => tracing::error!("cannot serve metrics on {addr}: {e}"),
        }
    }
    let tasks: Arc<Mutex<HashMap<TaskId, Running>>> = Arc::default();
    // Ends of tasks not yet delivered (re-sent after a reconnect; the coordinator ignores repeats).
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(TaskId, TaskOutcome)>();
    let mut undelivered: Vec<(TaskId, TaskOutcome)> = Vec::new();
    // Answers to loads and upgrades (one lost with a connection is answered by the coordinator).
    let (answers_tx, mut answers_rx) = mpsc::unbounded_channel::<WorkerMessage>();
    let mut backoff = Duration::from_millis(100);
    loop {
        let conn = match endpoint.connect(options.coordinator, &options.coordinator_id).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("cannot reach the coordinator at {}: {e}", options.coordinator);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let running: Vec<TaskId> = tasks.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        let hello = Hello::Worker {
            protocol: CLUSTER_PROTOCOL,
            capacity: options.capacity,
            running,
            metrics: metrics.clone(),
            mesh: mesh_addr.clone(),
        };
        if let Err(e) = conn.send_message(&hello).await {
            tracing::warn!("joining the coordinator: {e}");
            continue;
        }
        let session = Session {
            conn: conn.clone(),
            engine: &engine,
            options: &options,
            lease: &lease,
            tasks: &tasks,
            ended_tx: &ended_tx,
            stats: &stats,
            mesh: &mesh,
            answers: &answers_tx,
        };
        session.serve(&mut ended_rx, &mut undelivered, &mut answers_rx).await;
        conn.close("worker reconnecting");
    }
}

struct Session<'a> {
    conn: Connection,
    engine: &'a Engine,
    options: &'a WorkerOptions,
    lease: &'a Arc<Lease>,
    tasks: &'a Arc<Mutex<HashMap<TaskId, Running>>>,
    ended_tx: &'a mpsc::UnboundedSender<(TaskId, TaskOutcome)>,
    stats: &'a Arc<WorkerStats>,
    mesh: &'a Arc<Mesh>,
    answers: &'a mpsc::UnboundedSender<WorkerMessage>,
}

impl Session<'_> {
    async fn serve(
        &self,
        ended_rx: &mut mpsc::UnboundedReceiver<(TaskId, TaskOutcome)>,
        undelivered: &mut Vec<(TaskId, TaskOutcome)>,
        answers_rx: &mut mpsc::UnboundedReceiver<WorkerMessage>,
    ) {
        // Answers left from an earlier connection concern requests the coordinator already closed.
        while answers_rx.try_recv().is_ok() {}
        let welcome = match tokio::time::timeout(Duration::from_secs(10), self.conn.recv_message()).await {
            Ok(Ok(CoordinatorMessage::Welcome { coordinator_epoch, heartbeat_ms, lease_ms })) => {
                tracing::info!(coordinator_epoch, heartbeat_ms, lease_ms, "joined the cluster");
                (Duration::from_millis(heartbeat_ms.max(10)), Duration::from_millis(lease_ms.max(100)))
            }
            Ok(Ok(CoordinatorMessage::Fenced { reason })) => {
                tracing::warn!("the coordinator refused this worker: {reason}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            Ok(Ok(other)) => return tracing::warn!("expected a welcome, got {other:?}"),
            Ok(Err(e)) => return tracing::warn!("joining: {e}"),
            Err(_) => return tracing::warn!("no welcome from the coordinator in time"),
        };
        let (heartbeat, lease_for) = welcome;
        self.lease.revoked.store(false, Ordering::SeqCst);
        for (task, outcome) in undelivered.drain(..) {
            let _ = self.conn.send_message(&WorkerMessage::Ended { task, outcome }).await;
        }
        let mut sent: HashMap<u64, Instant> = HashMap::new();
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    sent.insert(seq, Instant::now());
                    sent.retain(|&s, _| s + 64 > seq);
                    let running = self.running();
                    if self.conn.send_message(&WorkerMessage::Heartbeat { seq, running }).await.is_err() {
                        return;
                    }
                }
                Some(answer) = answers_rx.recv() => {
                    if self.conn.send_message(&answer).await.is_err() {
                        return;
                    }
                }
                ended = ended_rx.recv() => {
                    let Some((task, outcome)) = ended else { return };
                    self.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(&task);
                    let message = WorkerMessage::Ended { task: task.clone(), outcome: outcome.clone() };
                    if self.conn.send_message(&message).await.is_err() {
                        undelivered.push((task, outcome));
                        return;
                    }
                }
                message = self.conn.recv_message::<CoordinatorMessage>() => {
                    let message = match message {
                        Ok(m) => m,
                        Err(e) => return tracing::warn!("lost the coordinator: {e}"),
                    };
                    match message {
                        CoordinatorMessage::Ack { seq } => {
                            if let Some(at) = sent.remove(&seq) {
                                self.lease.extend(at + lease_for);
                                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        CoordinatorMessage::Run { task, spec, regions, resume, split } => {
                            self.start(task, spec, regions, resume, split)
                        }
                        CoordinatorMessage::Stop { task } => {
                            if let Some(r) = self.tasks.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&task)
                                && let Some(stop) = r.stop.take()
                            {
                                let _ = stop.send(());
                            }
                        }
                        CoordinatorMessage::Cancel { task } => self.cancel(&task),
                        CoordinatorMessage::Fenced { reason } => {
                            tracing::warn!("fenced by the coordinator: {reason}; stopping every task");
                            self.lease.revoked.store(true, Ordering::SeqCst);
                            self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                            let all: Vec<TaskId> = self.running();
                            for task in all {
                                self.cancel(&task);
                            }
                            return;
                        }
                        CoordinatorMessage::Load { request, package, source } => self.load(request, package, source),
                        CoordinatorMessage::Upgrade { request, task, operator, reference, config, health_batches } => {
                            self.upgrade(request, &task, operator, reference, config, health_batches)
                        }
                        CoordinatorMessage::Welcome { .. } => {}
                    }
                }
            }
        }
    }

    /// Makes a package ready here: in the store (fetched when missing), trusted, compiled.
    fn load(&self, request: u64, package: PackageId, source: String) {
        let engine = self.engine.clone();
        let loader = self.options.loader.clone();
        let answers = self.answers.clone();
        tokio::spawn(async move {
            let reference = format!("{}@{}", package.name, package.digest);
            let mut fetched = String::new();
            let ready = |engine: Engine, reference: String| async move {
                tokio::task::spawn_blocking(move || engine.load_package(&reference))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            };
            let mut result = ready(engine.clone(), reference.clone()).await;
            if result.is_err()
                && let Some(loader) = &loader
            {
                match loader.fetch(&package, &source).await {
                    Ok(what) => {
                        fetched = format!("{what}; ");
                        result = ready(engine, reference).await;
                    }
                    Err(e) => result = Err(e),
                }
            }
            let result = result.map(|l| {
                format!(
                    "{fetched}{} ready ({} in {} ms)",
                    l.reference,
                    if l.cached { "compiled before" } else { "compiled" },
                    l.compile.as_millis()
                )
            });
            tracing::info!(request, package = %package.name, ?result, "package load");
            let _ = answers.send(WorkerMessage::Loaded { request, result });
        });
    }

    /// Hands a live upgrade to the task that runs the operator.
    fn upgrade(
        &self,
        request: u64,
        task: &TaskId,
        operator: String,
        reference: String,
        config: Option<String>,
        health_batches: u32,
    ) {
        let control = self.tasks.lock().unwrap_or_else(PoisonError::into_inner).get(task).map(|r| r.control.clone());
        let answers = self.answers.clone();
        let Some(control) = control else {
            let result = Err(format!("this worker runs no task {}/{}", task.job, task.epoch));
            let _ = answers.send(WorkerMessage::Upgraded { request, result });
            return;
        };
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || engine.load_package(&reference))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let result = match loaded {
                Err(e) => Err(format!("{e} (load it first: `flumen plugin load`)")),
                Ok(l) => {
                    let mut r = flumen_engine::UpgradeRequest::new(operator, l.path, l.reference);
                    r.config_json = config;
                    r.health_batches = health_batches.max(1);
                    r.package = Some(l.manifest);
                    match control.upgrade(r).await {
                        Ok(flumen_engine::UpgradeOutcome::Applied { checkpoint, swap_ms, confirmed_ms }) => {
                            Ok(UpgradeReport::Applied {
                                checkpoint,
                                swap_us: (swap_ms * 1e3) as u64,
                                confirmed_us: (confirmed_ms * 1e3) as u64,
                            })
                        }
                        Ok(flumen_engine::UpgradeOutcome::RolledBack { checkpoint, reason }) => {
                            Ok(UpgradeReport::RolledBack { checkpoint, reason })
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            let _ = answers.send(WorkerMessage::Upgraded { request, result });
        });
    }

    fn running(&self) -> Vec<TaskId> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    fn cancel(&self, task: &TaskId) {
        if let Some(r) = self.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(task) {
            self.stats.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(task);
            r.fence.cancelled.store(true, Ordering::SeqCst);
            r.handle.abort();
            let _ = self.ended_tx.send((task.clone(), TaskOutcome::Cancelled));
        }
    }

    fn start(&self, task: TaskId, spec: String, regions: Vec<String>, resume: bool, split: Option<PartAssignment>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if tasks.contains_key(&task) {
            return;
        }
        let part = split.as_ref().map(|s| s.part);
        tracing::info!(job = %task.job, epoch = task.epoch, ?regions, resume, ?part, "starting task");
        let fence = Arc::new(TaskFence { lease: self.lease.clone(), cancelled: AtomicBool::new(false) });
        let control = flumen_engine::JobControl::new();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let scratch = self.options.data_dir.join("work").join(format!("{}-{}", task.job, task.epoch));
        let mut options = RunOptions {
            resume,
            // A region with no intact checkpoint starts over; one that has one continues.
            from_scratch: resume,
            regions: (!regions.is_empty()).then(|| regions.iter().cloned().collect::<BTreeSet<_>>()),
            scratch_dir: Some(scratch.clone()),
            fence: Some(fence.clone() as Arc<dyn CommitFence>),
            checkpoint_id_floor: task.epoch << EPOCH_ID_SHIFT,
            split: None,
            control: Some(control.clone()),
        };
        let mesh = self.mesh.clone();
        let engine = self.engine.clone();
        let ended = self.ended_tx.clone();
        let stats = self.stats.clone();
        let id = task.clone();
        let span = tracing::info_span!("task", job = %task.job, epoch = task.epoch);
        let handle = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let stop = async {
                    if stop_rx.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                // Every part of a split region shares the task's id (job and epoch).
                let linked = match &split {
                    None => Ok(()),
                    Some(a) => {
                        let key = format!("{}/{}", id.job, id.epoch);
                        match mesh.link(&key, a.part, &a.peers, LINK_TIMEOUT).await {
                            Ok(link) => {
                                options.split = Some(Split { parts: a.peers.len() as u32, part: a.part, link });
                                Ok(())
                            }
                            Err(reason) => Err(TaskOutcome::Lost { reason }),
                        }
                    }
                };
                let prepared = match linked {
                    Err(lost) => Err(lost),
                    Ok(()) => engine
                        .prepare(std::path::Path::new(&spec))
                        .await
                        .map_err(|e| TaskOutcome::Failed { error: e.to_string() }),
                };
                let outcome = match prepared {
                    Err(outcome) => outcome,
                    Ok(prepared) => {
                        // The nodes of the regions run (`None`: the whole job).
                        let nodes = options.regions.as_ref().map(|r| Arc::new(prepared.region_node_ids(r)));
                        stats
                            .tasks
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(id.clone(), (prepared.metrics(), nodes));
                        match prepared.run_with(options, stop).await {
                            Ok(summary) => TaskOutcome::Finished {
                                rows_out: summary
                                    .nodes
                                    .iter()
                                    .filter(|n| n.kind == flumen_engine::NodeKind::Sink)
                                    .map(|n| n.rows_in)
                                    .sum(),
                            },
                            Err(EngineError::Stopped { .. }) => TaskOutcome::Stopped,
                            Err(EngineError::Cancelled) => TaskOutcome::Cancelled,
                            Err(EngineError::Fenced { reason }) => TaskOutcome::Fenced { reason },
                            Err(EngineError::PartLost { reason, .. }) => TaskOutcome::Lost { reason },
                            Err(e) => TaskOutcome::Failed { error: e.to_string() },
                        }
                    }
                };
                stats.tasks.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                let _ = std::fs::remove_dir_all(&scratch);
                tracing::info!(job = %id.job, epoch = id.epoch, ?outcome, "task ended");
                let _ = ended.send((id, outcome));
            },
            span,
        ));
        tasks.insert(task, Running { control, fence, stop: Some(stop_tx), handle });
    }
}
