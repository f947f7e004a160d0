//! The coordinator: admits workers and clients over QUIC with mutual TLS, places jobs'
//! pipelined regions on workers with room, watches leases and moves the regions of a lost
//! worker elsewhere (they resume from their last checkpoint), and keeps its state with
//! conditional writes ([`crate::ha`]) so that a restarted coordinator carries on.
//!
//! One task (the core) owns all state; connection tasks talk to it by message. Time is the
//! core's monotonic clock: a worker is lost once `lease + grace` passed since its last
//! heartbeat arrived, which is later than the worker's own view of its lease (it counts from
//! when it *sent* the heartbeat) — so a worker has stopped committing before its regions
//! are given to another.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flumen_state::{CheckpointStore, ConditionalStore, StoreUrl};
use flumen_transport::{Connection, Endpoint, NodeIdentity};
use tokio::sync::{mpsc, oneshot};

use crate::ha::{HaError, HaState, JobRecord, RegionEnd, RegionRecord};
use crate::placement::{self, Slot};
use crate::protocol::{
    CLUSTER_PROTOCOL, Capacity, CoordinatorMessage, Hello, JobState, JobView, PackageId, PartAssignment, PartPeer,
    Request, Response, TaskId, TaskOutcome, UpgradeReport, WorkerMessage, WorkerView,
};

/// Timings of the cluster's liveness protocol.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub lease: Duration,
    /// Waited past a lease before a worker counts as lost.
    pub grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { heartbeat: Duration::from_millis(500), lease: Duration::from_secs(3), grace: Duration::from_secs(1) }
    }
}

/// How to run a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    pub state: StoreUrl,
    pub timing: Timing,
    /// Serve Prometheus metrics here (`GET /metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// What the coordinator's metrics endpoint reads, refreshed after every event.
#[derive(Debug, Default)]
struct Stats {
    epoch: u64,
    workers_up: u64,
    workers_lost: u64,
    jobs: BTreeMap<&'static str, u64>,
    failovers: u64,
    placements: u64,
}

#[derive(Debug, Default)]
struct StatsSource(std::sync::Mutex<Stats>);

impl crate::metrics::Source for StatsSource {
    fn collect(&self, out: &mut crate::metrics::Samples) {
        let s = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        out.gauge("coordinator_epoch", "The leadership epoch this coordinator holds.", &[], s.epoch as f64);
        out.gauge("cluster_workers", "Workers by state.", &[("state", "up")], s.workers_up as f64);
        out.gauge("cluster_workers", "Workers by state.", &[("state", "lost")], s.workers_lost as f64);
        for state in ["running", "stopping", "finished", "stopped", "cancelled", "failed"] {
            let n = s.jobs.get(state).copied().unwrap_or(0);
            out.gauge("cluster_jobs", "Jobs by state.", &[("state", state)], n as f64);
        }
        out.counter(
            "cluster_failovers",
            "Regions moved off a lost or fenced worker (all jobs).",
            &[],
            s.failovers as f64,
        );
        out.counter(
            "cluster_placements",
            "Tasks placed on workers since this coordinator started.",
            &[],
            s.placements as f64,
        );
    }
}

enum Event {
    Joined {
        worker: String,
        capacity: Capacity,
        running: Vec<TaskId>,
        metrics: Option<String>,
        mesh: Option<String>,
        tx: mpsc::UnboundedSender<CoordinatorMessage>,
    },
    Message {
        worker: String,
        message: WorkerMessage,
        tx: mpsc::UnboundedSender<CoordinatorMessage>,
    },
    Disconnected {
        worker: String,
        tx: mpsc::UnboundedSender<CoordinatorMessage>,
    },
    Client {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
}

struct WorkerEntry {
    capacity: Capacity,
    free: Capacity,
    last_seen: Instant,
    tx: Option<mpsc::UnboundedSender<CoordinatorMessage>>,
    /// Declared lost: its tasks were moved; it must be fenced when it speaks again.
    lost: bool,
    /// The connection last told it was fenced.
    fenced: Option<mpsc::UnboundedSender<CoordinatorMessage>>,
    /// Its Prometheus endpoint.
    metrics: Option<String>,
    /// Where other workers reach it for split regions.
    mesh: Option<String>,
}

impl WorkerEntry {
    fn new(capacity: Capacity, last_seen: Instant) -> Self {
        Self { capacity, free: capacity, last_seen, tx: None, lost: false, fenced: None, metrics: None, mesh: None }
    }
}

struct Core {
    /// A span per live job, from submission (or adoption) to its end: with
    /// OpenTelemetry, the job's life as a trace on the coordinator.
    spans: HashMap<String, tracing::Span>,
    stats: Arc<StatsSource>,
    placements: u64,
    ha: HaState,
    timing: Timing,
    workers: BTreeMap<String, WorkerEntry>,
    jobs: BTreeMap<String, JobRecord>,
    started: Instant,
    /// Client requests waiting for workers' answers (loads, upgrades), by request number.
    waiting: HashMap<u64, Waiting>,
    next_request: u64,
    /// Packages `flumen plugin load` made ready, with where they came from: a
    /// worker that joins (or rejoins) is asked to load them too. Kept in
    /// memory only: a restarted coordinator starts with none.
    loaded: Vec<(PackageId, String)>,
}

/// A client request the coordinator passed on to workers, and what they answered so far.
struct Waiting {
    reply: oneshot::Sender<Response>,
    /// Workers yet to answer.
    pending: BTreeSet<String>,
    /// A load's answers, by worker.
    loaded: Vec<(String, Result<String, String>)>,
}

/// Runs a coordinator on `endpoint` until its state store says another one leads
/// (an error) or the endpoint closes.
pub async fn run(endpoint: Arc<Endpoint>, options: CoordinatorOptions) -> Result<(), HaError> {
    let address = endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let store = ConditionalStore::open(&options.state)?;
    let mut ha = HaState::lead(store, endpoint.node().as_str(), &address).await?;
    let jobs = ha.load_jobs().await?;
    tracing::info!(epoch = ha.epoch(), jobs = jobs.len(), %address, "coordinator leads");
    let stats = Arc::new(StatsSource::default());
    if let Some(addr) = options.metrics {
        match crate::metrics::Metrics::new(vec![stats.clone()]).serve(addr).await {
            Ok(bound) => tracing::info!("metrics on http://{bound}/metrics"),
            Err(e) => tracing::error!("cannot serve metrics on {addr}: {e}"),
        }
    }
    let mut core = Core {
        spans: HashMap::new(),
        stats,
        placements: 0,
        ha,
        timing: options.timing,
        workers: BTreeMap::new(),
        jobs: jobs.into_iter().map(|j| (j.job.clone(), j)).collect(),
        started: Instant::now(),
        waiting: HashMap::new(),
        next_request: 1,
        loaded: Vec::new(),
    };
    core.adopt().await?;

    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let acceptor = {
        let endpoint = endpoint.clone();
        let events_tx = events_tx.clone();
        let timing = options.timing;
        tokio::spawn(async move {
            loop {
                match endpoint.accept().await {
                    Ok((peer, conn)) => {
                        tokio::spawn(serve(peer, conn, events_tx.clone(), timing));
                    }
                    Err(_) => return,
                }
            }
        })
    };
    let mut tick = tokio::time::interval(options.timing.heartbeat);
    let mut ticks: u64 = 0;
    let outcome = loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break Ok(()) };
                if let Err(e) = core.on_event(event).await {
                    break Err(e);
                }
                core.refresh_stats();
            }
            _ = tick.tick() => {
                ticks += 1;
                if let Err(e) = core.on_tick(ticks).await {
                    break Err(e);
                }
                core.refresh_stats();
            }
        }
    };
    acceptor.abort();
    outcome
}

/// One connection: a worker's for as long as it lasts, or a client's one request.
async fn serve(peer: NodeIdentity, conn: Connection, events: mpsc::UnboundedSender<Event>, timing: Timing) {
    let hello = match tokio::time::timeout(timing.lease, conn.recv_message::<Hello>()).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => return tracing::warn!(%peer, "no cluster hello: {e}"),
        Err(_) => return conn.close("no cluster hello in time"),
    };
    match hello {
        Hello::Client { protocol, request } => {
            let response = if protocol != CLUSTER_PROTOCOL {
                Response::Refused { message: version_mismatch(protocol) }
            } else {
                let (reply, answer) = oneshot::channel();
                if events.send(Event::Client { request, reply }).is_err() {
                    return;
                }
                answer.await.unwrap_or(Response::Refused { message: "the coordinator is stopping".into() })
            };
            let _ = conn.send_message(&response).await;
            // Let the answer reach the client before the connection goes.
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        }
        Hello::Worker { protocol, capacity, running, metrics, mesh } => {
            if protocol != CLUSTER_PROTOCOL {
                let _ = conn.send_message(&CoordinatorMessage::Fenced { reason: version_mismatch(protocol) }).await;
                return conn.close(&version_mismatch(protocol));
            }
            if peer.as_str().starts_with(CLIENT_PREFIX) || peer == *conn.local() {
                let reason = format!(
                    "{peer} may not join as a worker: certificates named `{CLIENT_PREFIX}…` (and the coordinator's own) only ask"
                );
                tracing::warn!("{reason}");
                let _ = conn.send_message(&CoordinatorMessage::Fenced { reason: reason.clone() }).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
                return conn.close(&reason);
            }
            let worker = peer.as_str().to_owned();
            let (tx, mut rx) = mpsc::unbounded_channel::<CoordinatorMessage>();
            if events
                .send(Event::Joined { worker: worker.clone(), capacity, running, metrics, mesh, tx: tx.clone() })
                .is_err()
            {
                return;
            }
            let writer = {
                let conn = conn.clone();
                tokio::spawn(async move {
                    while let Some(message) = rx.recv().await {
                        if conn.send_message(&message).await.is_err() {
                            return;
                        }
                    }
                })
            };
            loop {
                match conn.recv_message::<WorkerMessage>().await {
                    Ok(message) => {
                        if events.send(Event::Message { worker: worker.clone(), message, tx: tx.clone() }).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::info!(%worker, "worker connection ended: {e}");
                        break;
                    }
                }
            }
            writer.abort();
            let _ = events.send(Event::Disconnected { worker, tx });
        }
    }
}

/// Node ids starting with this are clients: they may ask the coordinator anything, but
/// never join as a worker (so a client's certificate cannot be given work to run).
pub const CLIENT_PREFIX: &str = "client";

fn version_mismatch(got: u32) -> String {
    format!("cluster protocol {got} is not spoken here (this coordinator speaks {CLUSTER_PROTOCOL})")
}

impl Core {
    /// Opens a span for each live job that has none and closes those of ended jobs.
    fn refresh_spans(&mut self) {
        for (name, job) in &self.jobs {
            if job.state.is_terminal() {
                if let Some(span) = self.spans.remove(name) {
                    span.record("outcome", job.state.as_str());
                    span.record("failovers", job.failovers);
                }
            } else if !self.spans.contains_key(name) {
                let span = tracing::info_span!(
                    parent: None,
                    "cluster_job",
                    job = %name,
                    spec = %job.spec,
                    outcome = tracing::field::Empty,
                    failovers = tracing::field::Empty
                );
                self.spans.insert(name.clone(), span);
            }
        }
    }

    fn refresh_stats(&mut self) {
        self.refresh_spans();
        let mut s = self.stats.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.epoch = self.ha.epoch();
        s.workers_up = self.workers.values().filter(|w| !w.lost && w.tx.is_some()).count() as u64;
        s.workers_lost = self.workers.values().filter(|w| w.lost).count() as u64;
        s.jobs.clear();
        for j in self.jobs.values() {
            *s.jobs.entry(j.state.as_str()).or_default() += 1;
        }
        s.failovers = self.jobs.values().map(|j| j.failovers).sum();
        s.placements = self.placements;
    }

    /// After taking leadership: every live job is written again under this epoch (so a
    /// replaced coordinator can no longer write it), and its workers get a lease's time to
    /// rejoin before their regions move.
    async fn adopt(&mut self) -> Result<(), HaError> {
        let live: Vec<JobRecord> = self.jobs.values().filter(|j| !j.state.is_terminal()).cloned().collect();
        for job in live {
            self.ha.save(&job).await?;
            for r in job.regions.iter().filter(|r| r.done.is_none()) {
                for w in r.part_workers().chain(r.draining.iter().map(|(w, _)| w)) {
                    let started = self.started;
                    self.workers.entry(w.clone()).or_insert_with(|| WorkerEntry::new(Capacity::default(), started));
                }
            }
        }
        Ok(())
    }

    async fn on_event(&mut self, event: Event) -> Result<(), HaError> {
        match event {
            Event::Joined { worker, capacity, running, metrics, mesh, tx } => {
                self.joined(worker.clone(), capacity, running, mesh, tx).await?;
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.metrics = metrics;
                }
                Ok(())
            }
            Event::Message { worker, message, tx } => self.message(worker, message, tx).await,
            Event::Disconnected { worker, tx } => {
                if let Some(w) = self.workers.get_mut(&worker)
                    && w.tx.as_ref().is_some_and(|t| t.same_channel(&tx))
                {
                    w.tx = None;
                    // Whatever it was asked and did not answer, it will not.
                    self.answered(&worker, None);
                }
                Ok(())
            }
            Event::Client { request: Request::Load { package, source }, reply } => {
                self.load(package, source, reply);
                Ok(())
            }
            Event::Client { request: Request::Upgrade { job, operator, reference, config, health_batches }, reply } => {
                self.upgrade(job, operator, reference, config, health_batches, reply);
                Ok(())
            }
            Event::Client { request, reply } => {
                let response = self.client(request).await?;
                let _ = reply.send(response);
                Ok(())
            }
        }
    }

    async fn joined(
        &mut self,
        worker: String,
        capacity: Capacity,
        running: Vec<TaskId>,
        mesh: Option<String>,
        tx: mpsc::UnboundedSender<CoordinatorMessage>,
    ) -> Result<(), HaError> {
        let welcome = CoordinatorMessage::Welcome {
            coordinator_epoch: self.ha.epoch(),
            heartbeat_ms: self.timing.heartbeat.as_millis() as u64,
            lease_ms: self.timing.lease.as_millis() as u64,
        };
        let _ = tx.send(welcome);
        // What was hot-loaded before it joined (request 0: nobody waits for the answer).
        for (package, source) in &self.loaded {
            let _ = tx.send(CoordinatorMessage::Load { request: 0, package: package.clone(), source: source.clone() });
        }
        // Tasks it still runs that are current stay; any other is stale: cancel it.
        for task in &running {
            if !self.is_current(task, &worker) {
                tracing::warn!(%worker, job = %task.job, epoch = task.epoch, "refusing a stale task of a rejoining worker");
                let _ = tx.send(CoordinatorMessage::Cancel { task: task.clone() });
            } else if self.jobs.get(&task.job).is_some_and(|j| j.state == JobState::Stopping) {
                // It may have been away when the job was stopped.
                let _ = tx.send(CoordinatorMessage::Stop { task: task.clone() });
            }
        }
        let entry = self.workers.entry(worker.clone()).or_insert_with(|| WorkerEntry::new(capacity, Instant::now()));
        entry.capacity = capacity;
        entry.mesh = mesh;
        entry.last_seen = Instant::now();
        if let Some(old) = entry.tx.take()
            && !old.is_closed()
        {
            // Another process presents the same certificate, or the old connection has not
            // noticed it is gone: only the newest speaks for the worker.
            let _ = old.send(CoordinatorMessage::Fenced { reason: format!("another process joined as {worker}") });
        }
        entry.tx = Some(tx);
        entry.lost = false;
        self.recompute_free();
        tracing::info!(%worker, cores = capacity.cores, memory_mb = capacity.memory_mb, gpu = capacity.gpu, "worker joined");
        // Regions placed on it that it does not run (it restarted): place them again.
        let mut orphaned: Vec<String> = self
            .regions_on(&worker)
            .filter(|(j, r)| !running.contains(&TaskId { job: j.job.clone(), epoch: r.epoch }))
            .map(|(j, _)| j.job.clone())
            .collect();
        orphaned.dedup();
        for job in orphaned {
            self.unplace(&job, |r| r.runs_on(&worker), "its worker restarted").await?;
        }
        self.drained(&worker, |job, epoch| running.iter().any(|t| t.job == job && t.epoch == epoch)).await?;
        self.schedule().await
    }

    /// `worker` no longer runs the draining parts `keep` says no to (it ended them, rejoined
    /// without them, or was lost): their regions may be placed again. Whether any was.
    async fn drained(&mut self, worker: &str, keep: impl Fn(&str, u64) -> bool) -> Result<bool, HaError> {
        let mut any = false;
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        for name in names {
            let Some(job) = self.jobs.get(&name) else { continue };
            if !job.regions.iter().any(|r| r.draining.iter().any(|(w, e)| w == worker && !keep(&name, *e))) {
                continue;
            }
            let mut job = job.clone();
            for r in job.regions.iter_mut() {
                r.draining.retain(|(w, e)| w != worker || keep(&name, *e));
            }
            self.ha.save(&job).await?;
            self.jobs.insert(name, job);
            any = true;
        }
        Ok(any)
    }

    /// Every region that runs on `worker` now: placed there, not ended, of a job not ended.
    fn regions_on<'a>(&'a self, worker: &'a str) -> impl Iterator<Item = (&'a JobRecord, &'a RegionRecord)> + 'a {
        self.jobs.values().filter(|j| !j.state.is_terminal()).flat_map(move |j| {
            j.regions.iter().filter(move |r| r.done.is_none() && r.runs_on(worker)).map(move |r| (j, r))
        })
    }

    fn is_current(&self, task: &TaskId, worker: &str) -> bool {
        self.jobs.get(&task.job).is_some_and(|j| {
            !j.state.is_terminal()
                && j.regions.iter().any(|r| r.epoch == task.epoch && r.runs_on(worker) && r.done.is_none())
        })
    }

    async fn message(
        &mut self,
        worker: String,
        message: WorkerMessage,
        tx: mpsc::UnboundedSender<CoordinatorMessage>,
    ) -> Result<(), HaError> {
        let lost = self.workers.get(&worker).is_none_or(|w| w.lost);
        if lost {
            // Once per connection: the rest of what it sent before it heard is refused quietly.
            let told = self.workers.get(&worker).and_then(|w| w.fenced.as_ref()).is_some_and(|t| t.same_channel(&tx));
            if !told {
                tracing::warn!(%worker, "refusing a message from a worker whose lease expired: fencing it");
                let _ = tx.send(CoordinatorMessage::Fenced {
                    reason: "your lease expired and your regions were given to other workers".into(),
                });
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.fenced = Some(tx);
                }
            }
            return Ok(());
        }
        match message {
            WorkerMessage::Heartbeat { seq, running } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.last_seen = Instant::now();
                }
                let _ = tx.send(CoordinatorMessage::Ack { seq });
                for task in &running {
                    if !self.is_current(task, &worker) {
                        let _ = tx.send(CoordinatorMessage::Cancel { task: task.clone() });
                    }
                }
                if self.drained(&worker, |job, epoch| running.iter().any(|t| t.job == job && t.epoch == epoch)).await? {
                    self.recompute_free();
                    self.schedule().await?;
                }
                Ok(())
            }
            WorkerMessage::Ended { task, outcome } => self.ended(&worker, task, outcome).await,
            WorkerMessage::Loaded { request, result } => {
                self.answered(&worker, Some((request, Answer::Loaded(result))));
                Ok(())
            }
            WorkerMessage::Upgraded { request, result } => {
                self.answered(&worker, Some((request, Answer::Upgraded(result))));
                Ok(())
            }
        }
    }

    /// `flumen plugin load`: every live worker makes the package ready; the
    /// client hears each one's answer once all answered (or went away).
    fn load(&mut self, package: PackageId, source: String, reply: oneshot::Sender<Response>) {
        let request = self.next_request;
        self.next_request += 1;
        let mut pending = BTreeSet::new();
        for (id, w) in &self.workers {
            if let (false, Some(tx)) = (w.lost, &w.tx)
                && tx
                    .send(CoordinatorMessage::Load { request, package: package.clone(), source: source.clone() })
                    .is_ok()
            {
                pending.insert(id.clone());
            }
        }
        if pending.is_empty() {
            let _ = reply.send(Response::Refused { message: "no worker is connected".into() });
            return;
        }
        self.loaded.retain(|(p, _)| p.name != package.name || p.version != package.version);
        self.loaded.push((package.clone(), source.clone()));
        tracing::info!(request, package = %package.name, version = %package.version, workers = pending.len(), "loading a package on every worker");
        self.waiting.insert(request, Waiting { reply, pending, loaded: Vec::new() });
    }

    /// `flumen job upgrade`: the worker running the operator's region swaps it
    /// at its next checkpoint; the client hears the outcome.
    fn upgrade(
        &mut self,
        job: String,
        operator: String,
        reference: String,
        config: Option<String>,
        health_batches: u32,
        reply: oneshot::Sender<Response>,
    ) {
        let refuse = |message: String| Response::Refused { message };
        let Some(record) = self.jobs.get(&job) else {
            let _ = reply.send(refuse(format!("no job `{job}` (see `flumen jobs`)")));
            return;
        };
        if record.state != JobState::Running {
            let _ = reply.send(refuse(format!("job `{job}` is {}", record.state.as_str())));
            return;
        }
        let region_name = match region_of(&record.spec, &operator) {
            Ok(name) => name,
            Err(message) => {
                let _ = reply.send(refuse(format!("job `{job}`: {message}")));
                return;
            }
        };
        let Some(region) = record.regions.iter().find(|r| r.name == region_name) else {
            let _ = reply.send(refuse(format!("job `{job}` has no region `{region_name}`")));
            return;
        };
        let (Some(worker), None) = (&region.worker, &region.done) else {
            let _ = reply.send(refuse(format!(
                "region `{region_name}` of job `{job}` is not running now (it has ended, or waits for a worker)"
            )));
            return;
        };
        if !region.parts.is_empty() {
            let _ = reply.send(refuse(format!(
                "region `{region_name}` of job `{job}` is spread across workers; a live upgrade swaps within one \
                 process only (yet)"
            )));
            return;
        }
        let task = TaskId { job: job.clone(), epoch: region.epoch };
        let worker = worker.clone();
        let Some(tx) = self.workers.get(&worker).filter(|w| !w.lost).and_then(|w| w.tx.clone()) else {
            let _ = reply.send(refuse(format!("worker {worker}, which runs `{operator}`, is not connected")));
            return;
        };
        let request = self.next_request;
        self.next_request += 1;
        let message = CoordinatorMessage::Upgrade {
            request,
            task,
            operator: operator.clone(),
            reference,
            config,
            health_batches,
        };
        if tx.send(message).is_err() {
            let _ = reply.send(refuse(format!("worker {worker} went away")));
            return;
        }
        tracing::info!(request, %job, %operator, %worker, "asking for a live upgrade");
        self.waiting.insert(request, Waiting { reply, pending: BTreeSet::from([worker]), loaded: Vec::new() });
    }

    /// A worker answered request `answer` (`None`: it went away, answering
    /// nothing it was asked). A request is done when no worker is left to answer.
    fn answered(&mut self, worker: &str, answer: Option<(u64, Answer)>) {
        let mut done = Vec::new();
        match answer {
            Some((request, answer)) => {
                let Some(w) = self.waiting.get_mut(&request) else { return };
                if !w.pending.remove(worker) {
                    return;
                }
                match answer {
                    Answer::Loaded(result) => w.loaded.push((worker.to_string(), result)),
                    Answer::Upgraded(result) => {
                        if let Some(w) = self.waiting.remove(&request) {
                            let _ = w.reply.send(match result {
                                Ok(report) => Response::Upgraded { worker: worker.to_string(), report },
                                Err(message) => Response::Refused { message: format!("{worker}: {message}") },
                            });
                        }
                        return;
                    }
                }
                if w.pending.is_empty() {
                    done.push(request);
                }
            }
            None => {
                for (request, w) in &mut self.waiting {
                    if w.pending.remove(worker) {
                        w.loaded.push((worker.to_string(), Err("the worker went away before it answered".into())));
                        if w.pending.is_empty() {
                            done.push(*request);
                        }
                    }
                }
            }
        }
        for request in done {
            if let Some(w) = self.waiting.remove(&request) {
                let _ = w.reply.send(Response::Loaded { workers: w.loaded });
            }
        }
    }

    async fn ended(&mut self, worker: &str, task: TaskId, outcome: TaskOutcome) -> Result<(), HaError> {
        self.drained(worker, |job, epoch| job != task.job || epoch != task.epoch).await?;
        if !self.is_current(&task, worker) {
            self.recompute_free();
            self.schedule().await?;
            tracing::info!(%worker, job = %task.job, epoch = task.epoch, ?outcome, "ignoring the end of a stale task");
            return Ok(());
        }
        let Some(mut job) = self.jobs.get(&task.job).cloned() else { return Ok(()) };
        tracing::info!(%worker, job = %task.job, epoch = task.epoch, ?outcome, "task ended");
        // A part of a split region: a part that follows only ends the run by failing; a lost
        // link (or a fenced part) places every part again, together.
        if let Some(r) = job.regions.iter().find(|r| r.epoch == task.epoch && !r.parts.is_empty()) {
            let leads = r.worker.as_deref() == Some(worker);
            match &outcome {
                TaskOutcome::Lost { reason } | TaskOutcome::Fenced { reason } => {
                    let why = format!("a part of region `{}` on {worker} ended: {reason}", r.name);
                    self.unplace(&task.job, |r| r.epoch == task.epoch, &why).await?;
                    self.recompute_free();
                    return self.schedule().await;
                }
                TaskOutcome::Finished { rows_out } => {
                    // The leader finishes only after every part's subtasks ended; the region is
                    // done once every part reported (with what its sinks wrote).
                    job.rows_out += rows_out;
                    let name = r.name.clone();
                    if let Some(r) = job.regions.iter_mut().find(|r| r.name == name) {
                        if !r.finished_parts.iter().any(|w| w == worker) {
                            r.finished_parts.push(worker.to_owned());
                        }
                        if r.part_workers().all(|w| r.finished_parts.contains(w)) {
                            r.done = Some(RegionEnd::Finished);
                        }
                    }
                    return self.ended_store(job).await;
                }
                TaskOutcome::Stopped | TaskOutcome::Cancelled if !leads => return Ok(()),
                _ => {}
            }
        }
        match outcome {
            TaskOutcome::Finished { rows_out } => {
                job.rows_out += rows_out;
                for r in job.regions.iter_mut().filter(|r| r.epoch == task.epoch) {
                    r.done = Some(RegionEnd::Finished);
                }
            }
            TaskOutcome::Stopped => {
                for r in job.regions.iter_mut().filter(|r| r.epoch == task.epoch) {
                    r.done = Some(RegionEnd::Stopped);
                }
            }
            TaskOutcome::Cancelled => {}
            TaskOutcome::Fenced { reason } if job.state == JobState::Stopping => {
                // Nothing newer than its last checkpoint was committed: that is where it stops.
                for r in job.regions.iter_mut().filter(|r| r.epoch == task.epoch) {
                    r.done = Some(RegionEnd::Stopped);
                }
                job.note =
                    Some(format!("{worker} was fenced ({reason}); its regions stopped at their last checkpoints"));
            }
            TaskOutcome::Fenced { reason } | TaskOutcome::Lost { reason } => {
                // The worker lived but lost its lease: its regions go elsewhere (or back to it).
                for r in job.regions.iter_mut().filter(|r| r.epoch == task.epoch) {
                    r.worker = None;
                }
                job.note = Some(format!("{worker} was fenced ({reason}); its regions resume from their checkpoints"));
                job.failovers += 1;
            }
            TaskOutcome::Failed { error } => {
                job.state = JobState::Failed;
                job.note = Some(format!("on {worker}: {error}"));
            }
        }
        self.ended_store(job).await
    }

    /// After a task's end changed `job`: its state, its durable record, and what runs next.
    async fn ended_store(&mut self, mut job: JobRecord) -> Result<(), HaError> {
        self.finish_if_done(&mut job);
        if job.state.is_terminal() {
            self.cancel_tasks(&job);
        }
        self.ha.save(&job).await?;
        self.jobs.insert(job.job.clone(), job);
        self.recompute_free();
        self.schedule().await
    }

    fn finish_if_done(&self, job: &mut JobRecord) {
        if job.state.is_terminal() || job.regions.iter().any(|r| r.done.is_none()) {
            return;
        }
        job.state = if job.regions.iter().any(|r| r.done == Some(RegionEnd::Stopped)) {
            JobState::Stopped
        } else {
            JobState::Finished
        };
    }

    fn cancel_tasks(&self, job: &JobRecord) {
        for r in job.regions.iter().filter(|r| r.done.is_none()) {
            for w in r.part_workers() {
                if let Some(tx) = self.workers.get(w).and_then(|w| w.tx.as_ref()) {
                    let _ =
                        tx.send(CoordinatorMessage::Cancel { task: TaskId { job: job.job.clone(), epoch: r.epoch } });
                }
            }
        }
    }

    /// Cancels every part of split region `r` that runs on a live worker, and records them as
    /// draining: the region is placed again only once each ended (or its worker was lost).
    fn drain_parts(&self, job: &str, r: &mut crate::ha::RegionRecord) {
        if r.parts.is_empty() {
            return;
        }
        let task = TaskId { job: job.to_owned(), epoch: r.epoch };
        let workers: Vec<String> = r.part_workers().cloned().collect();
        for w in workers {
            if let Some(entry) = self.workers.get(&w)
                && !entry.lost
                && let Some(tx) = &entry.tx
            {
                let _ = tx.send(CoordinatorMessage::Cancel { task: task.clone() });
                r.draining.push((w, r.epoch));
            }
        }
        r.parts.clear();
    }

    /// Frees the regions of `job` that `which` selects, so that `schedule` places them again.
    /// Their worker commits nothing more (its lease ran out, or it no longer runs them): a
    /// stopping job's regions stop there instead, at their last checkpoints.
    async fn unplace(&mut self, job: &str, which: impl Fn(&RegionRecord) -> bool, why: &str) -> Result<(), HaError> {
        let Some(mut record) = self.jobs.get(job).cloned() else { return Ok(()) };
        if record.state.is_terminal() {
            return Ok(());
        }
        if record.state == JobState::Stopping {
            let mut stopped = false;
            for r in record.regions.iter_mut().filter(|r| r.done.is_none() && which(r)) {
                self.drain_parts(job, r);
                r.done = Some(RegionEnd::Stopped);
                stopped = true;
            }
            if stopped {
                record.note = Some(format!("regions stopped at their last checkpoints: {why}"));
                self.finish_if_done(&mut record);
                self.ha.save(&record).await?;
                self.jobs.insert(job.to_owned(), record);
            }
            return Ok(());
        }
        let mut moved = false;
        for r in record.regions.iter_mut().filter(|r| r.done.is_none() && which(r)) {
            self.drain_parts(job, r);
            r.worker = None;
            moved = true;
        }
        if !record.checkpointed && moved {
            // All or nothing: the whole job runs again.
            for r in record.regions.iter_mut() {
                r.worker = None;
                r.done = None;
            }
        }
        if moved {
            record.failovers += 1;
            record.note = Some(format!("regions moved: {why}"));
            self.ha.save(&record).await?;
            self.jobs.insert(job.to_owned(), record);
        }
        Ok(())
    }

    async fn on_tick(&mut self, ticks: u64) -> Result<(), HaError> {
        let now = Instant::now();
        let deadline = self.timing.lease + self.timing.grace;
        let newly_lost: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.lost && now.duration_since(w.last_seen) > deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for worker in newly_lost {
            tracing::warn!(%worker, "worker lost: no heartbeat for {} ms", deadline.as_millis());
            if let Some(w) = self.workers.get_mut(&worker) {
                w.lost = true;
                if let Some(tx) = w.tx.take() {
                    let _ = tx.send(CoordinatorMessage::Fenced { reason: "your lease expired".into() });
                }
            }
            let jobs: Vec<String> = self.jobs.keys().cloned().collect();
            let why = format!("{worker} was lost");
            for job in jobs {
                self.unplace(&job, |r| r.runs_on(&worker), &why).await?;
            }
            // Its lease ran out: whatever old part it ran commits nothing any more.
            self.drained(&worker, |_, _| false).await?;
        }
        self.recompute_free();
        self.schedule().await?;
        // Every few seconds: has another coordinator taken over?
        if ticks.is_multiple_of(4) {
            self.ha.check_leadership().await?;
        }
        Ok(())
    }

    fn recompute_free(&mut self) {
        for w in self.workers.values_mut() {
            w.free = w.capacity;
        }
        for job in self.jobs.values().filter(|j| !j.state.is_terminal()) {
            for r in job.regions.iter().filter(|r| r.done.is_none()) {
                let parts = 1 + r.parts.len() as u32;
                for (part, worker) in r.part_workers().enumerate() {
                    let need = if parts == 1 { r.needs } else { r.part_needs(parts, part as u32) };
                    if let Some(w) = self.workers.get_mut(worker) {
                        placement::take(&mut w.free, &need);
                    }
                }
            }
        }
    }

    /// Places every unplaced region of every running job on a live worker with room, and
    /// tells the workers.
    async fn schedule(&mut self) -> Result<(), HaError> {
        self.refresh_spans();
        let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
        for (id, w) in &self.workers {
            if w.lost || w.tx.is_none() {
                continue;
            }
            slots.insert(id.clone(), Slot { free: w.free, regions: self.regions_on(id).count() });
        }
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        for name in names {
            let Some(job) = self.jobs.get(&name) else { continue };
            if job.state != JobState::Running || job.regions.iter().all(|r| r.done.is_some() || r.worker.is_some()) {
                continue;
            }
            let mut job = job.clone();
            let mut runs = Vec::new();
            // Regions that run across workers first, each part on its own worker.
            if job.checkpointed {
                for i in 0..job.regions.len() {
                    let r = &job.regions[i];
                    if r.done.is_some() || r.worker.is_some() || !r.draining.is_empty() || r.spread < 2 {
                        continue;
                    }
                    let Some((parts, workers)) = self.place_parts(r, &mut slots) else { continue };
                    job.epoch += 1;
                    let epoch = job.epoch;
                    let resume = job.resume || r.started;
                    let peers: Vec<PartPeer> = workers
                        .iter()
                        .map(|w| PartPeer {
                            worker: w.clone(),
                            addr: self.workers.get(w).and_then(|e| e.mesh.clone()).unwrap_or_default(),
                        })
                        .collect();
                    let r = &mut job.regions[i];
                    r.worker = workers.first().cloned();
                    r.parts = workers[1..].to_vec();
                    r.finished_parts.clear();
                    r.epoch = epoch;
                    r.started = true;
                    for (part, worker) in workers.iter().enumerate() {
                        let run = CoordinatorMessage::Run {
                            task: TaskId { job: name.clone(), epoch },
                            spec: job.spec.clone(),
                            regions: vec![r.name.clone()],
                            resume,
                            split: Some(PartAssignment { part: part as u32, peers: peers.clone() }),
                        };
                        runs.push((worker.clone(), run));
                    }
                    tracing::info!(job = %name, region = %r.name, parts, ?workers, "region placed across workers");
                }
            }
            // A job without checkpoints is one unit: all its regions on one worker.
            let units: Vec<(String, Capacity)> = if job.checkpointed {
                job.regions
                    .iter()
                    .filter(|r| r.done.is_none() && r.worker.is_none() && r.draining.is_empty())
                    .map(|r| (r.name.clone(), r.needs))
                    .collect()
            } else {
                vec![("*".to_owned(), job.regions.iter().map(|r| r.needs).sum())]
            };
            let placement::Placement { placed, unplaced } = placement::place(&units, &mut slots);
            if !unplaced.is_empty() {
                let why = unplaced.iter().map(|(_, w)| w.clone()).collect::<Vec<_>>().join("; ");
                if job.note.as_deref() != Some(&format!("waiting for room: {why}")) {
                    job.note = Some(format!("waiting for room: {why}"));
                    self.ha.save(&job).await?;
                    self.jobs.insert(name.clone(), job.clone());
                }
            }
            if placed.is_empty() && runs.is_empty() {
                continue;
            }
            // One task per worker this round, each with a new epoch.
            let mut by_worker: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (unit, worker) in placed {
                by_worker.entry(worker).or_default().push(unit);
            }
            for (worker, units) in by_worker {
                job.epoch += 1;
                let epoch = job.epoch;
                let mut regions = Vec::new();
                for r in job.regions.iter_mut() {
                    if r.done.is_none()
                        && r.worker.is_none()
                        && r.draining.is_empty()
                        && (units.contains(&r.name) || units.iter().any(|u| u == "*"))
                    {
                        r.worker = Some(worker.clone());
                        r.epoch = epoch;
                        regions.push(r.name.clone());
                    }
                }
                let resume = job.resume || job.regions.iter().any(|r| regions.contains(&r.name) && r.started);
                for r in job.regions.iter_mut().filter(|r| regions.contains(&r.name)) {
                    r.started = true;
                }
                let regions = if job.checkpointed { regions } else { Vec::new() };
                let task = TaskId { job: name.clone(), epoch };
                runs.push((
                    worker,
                    CoordinatorMessage::Run {
                        task,
                        spec: job.spec.clone(),
                        regions,
                        resume: resume && job.checkpointed,
                        split: None,
                    },
                ));
            }
            job.note = None;
            // Durable before any worker hears of it: a restarted coordinator knows every task.
            self.ha.save(&job).await?;
            self.jobs.insert(name.clone(), job);
            for (worker, run) in runs {
                self.placements += 1;
                let span = self.spans.get(&name).cloned().unwrap_or_else(tracing::Span::none);
                tracing::info!(parent: &span, %worker, job = %name, ?run, "placing");
                if let Some(tx) = self.workers.get(&worker).and_then(|w| w.tx.as_ref()) {
                    let _ = tx.send(run);
                }
            }
        }
        self.recompute_free();
        Ok(())
    }

    /// Where the parts of split region `r` go: as many parts as `[job] spread` asks, its
    /// subtasks allow and live workers that serve the mesh have room for, each on its own
    /// worker (part 0 first). `None`: fewer than two parts fit; the region then runs whole.
    fn place_parts(
        &self,
        r: &crate::ha::RegionRecord,
        slots: &mut BTreeMap<String, Slot>,
    ) -> Option<(u32, Vec<String>)> {
        let meshed: BTreeMap<String, Slot> = slots
            .iter()
            .filter(|(id, _)| self.workers.get(*id).is_some_and(|w| w.mesh.is_some()))
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        let most = r.spread.min(r.max_parallelism()).min(meshed.len() as u32);
        for parts in (2..=most).rev() {
            let units: Vec<(String, Capacity)> = (0..parts).map(|p| (p.to_string(), r.part_needs(parts, p))).collect();
            let mut trial = meshed.clone();
            let placement::Placement { placed, unplaced } = placement::place(&units, &mut trial);
            let mut workers = vec![String::new(); parts as usize];
            for (unit, worker) in &placed {
                if let Ok(p) = unit.parse::<usize>() {
                    workers[p] = worker.clone();
                }
            }
            let distinct: std::collections::BTreeSet<&String> = workers.iter().collect();
            if unplaced.is_empty() && distinct.len() == parts as usize && !distinct.contains(&String::new()) {
                for (id, slot) in trial {
                    slots.insert(id, slot);
                }
                return Some((parts, workers));
            }
        }
        None
    }

    async fn client(&mut self, request: Request) -> Result<Response, HaError> {
        Ok(match request {
            Request::Submit { spec, resume } => match self.submit(&spec, resume).await? {
                Ok(job) => Response::Submitted { job },
                Err(message) => Response::Refused { message },
            },
            Request::Jobs => Response::Jobs { jobs: self.jobs.values().map(view).collect() },
            Request::Status { job } => match self.jobs.get(&job) {
                Some(j) => Response::Job { job: view(j) },
                None => Response::Refused { message: format!("no job `{job}` (see `flumen jobs`)") },
            },
            Request::Workers => Response::Workers {
                workers: self
                    .workers
                    .iter()
                    .map(|(id, w)| WorkerView {
                        worker: id.clone(),
                        capacity: w.capacity,
                        free: w.free,
                        tasks: self
                            .regions_on(id)
                            .map(|(j, r)| TaskId { job: j.job.clone(), epoch: r.epoch })
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                        alive: !w.lost && w.tx.is_some(),
                        metrics: w.metrics.clone(),
                    })
                    .collect(),
            },
            Request::Cancel { job } => self.end_job(&job, false).await?,
            Request::Stop { job } => self.end_job(&job, true).await?,
            // Answered by workers (see `on_event`).
            Request::Load { .. } | Request::Upgrade { .. } => {
                Response::Refused { message: "internal: a request for workers reached the wrong handler".into() }
            }
        })
    }

    async fn end_job(&mut self, name: &str, stop: bool) -> Result<Response, HaError> {
        let Some(mut job) = self.jobs.get(name).cloned() else {
            return Ok(Response::Refused { message: format!("no job `{name}` (see `flumen jobs`)") });
        };
        if job.state.is_terminal() {
            return Ok(Response::Refused { message: format!("job `{name}` already {}", job.state.as_str()) });
        }
        if stop && !job.checkpointed {
            return Ok(Response::Refused {
                message: format!(
                    "job `{name}` has no [checkpoint]: it cannot be stopped to resume later; cancel it instead"
                ),
            });
        }
        let mut tasks: std::collections::BTreeSet<(TaskId, String)> = std::collections::BTreeSet::new();
        for r in job.regions.iter().filter(|r| r.done.is_none()) {
            for w in r.part_workers() {
                tasks.insert((TaskId { job: name.to_owned(), epoch: r.epoch }, w.clone()));
            }
        }
        for (task, worker) in tasks {
            if let Some(tx) = self.workers.get(&worker).and_then(|w| w.tx.as_ref()) {
                let message =
                    if stop { CoordinatorMessage::Stop { task } } else { CoordinatorMessage::Cancel { task } };
                let _ = tx.send(message);
            }
        }
        if stop {
            job.state = JobState::Stopping;
            // Regions not running now have nothing newer than their checkpoints.
            for r in job.regions.iter_mut().filter(|r| r.done.is_none() && r.worker.is_none()) {
                r.done = Some(RegionEnd::Stopped);
            }
            self.finish_if_done(&mut job);
        } else {
            job.state = JobState::Cancelled;
        }
        self.ha.save(&job).await?;
        self.jobs.insert(name.to_owned(), job);
        self.recompute_free();
        Ok(Response::Done {
            message: if stop {
                format!("stopping `{name}`: a last checkpoint, then it stops (`flumen submit --resume` continues it)")
            } else {
                format!("cancelled `{name}`: nothing after its last checkpoint is committed")
            },
        })
    }

    /// Checks and records a new job. `Ok(Err(why))`: refused.
    async fn submit(&mut self, spec_path: &str, resume: bool) -> Result<Result<String, String>, HaError> {
        let path = Path::new(spec_path);
        if !path.is_absolute() {
            return Ok(Err(format!("{spec_path}: give the job's absolute path (every worker reads it there)")));
        }
        let spec = match flumen_spec::JobSpec::load(path) {
            Ok(spec) => spec,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let name = spec.job.name.clone();
        if flumen_transport::NodeIdentity::new(&name).is_err() || name.len() > 64 {
            return Ok(Err(format!(
                "{spec_path}: a cluster names jobs by [job] name, which must be lowercase letters, digits and '-' (got {name:?})"
            )));
        }
        if let Some(existing) = self.jobs.get(&name)
            && !existing.state.is_terminal()
        {
            return Ok(Err(format!("job `{name}` is {} already (from {})", existing.state.as_str(), existing.spec)));
        }
        let graph = match flumen_engine::job_graph(&spec) {
            Ok(g) => g,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let checkpointed = spec.checkpoint.is_some();
        if let Some(dir) = spec.checkpoint_dir() {
            let earlier = CheckpointStore::open(&dir).and_then(|s| s.has_checkpoints());
            match earlier {
                Ok(true) if !resume => {
                    return Ok(Err(format!(
                        "{spec_path}: {} holds checkpoints of an earlier run; submit with --resume to continue it",
                        dir.display()
                    )));
                }
                Ok(_) => {}
                Err(e) => return Ok(Err(format!("{spec_path}: {e}"))),
            }
        } else if resume {
            return Ok(Err(format!("{spec_path}: --resume needs a job with [checkpoint]")));
        }
        let needs_of = |id: &str| spec.operators.iter().find(|o| o.id == id).map(|o| o.resources).unwrap_or_default();
        let mut regions = Vec::new();
        for region in graph.regions() {
            let needs = placement::region_needs(region.nodes.iter().map(|&n| {
                let node = &graph.nodes()[n];
                (needs_of(node.id.as_str()), node.parallelism)
            }));
            regions.push(RegionRecord {
                name: graph.region_name(&region),
                needs,
                worker: None,
                epoch: 0,
                started: false,
                done: None,
                spread: spec.job.spread,
                nodes: region
                    .nodes
                    .iter()
                    .map(|&n| {
                        let node = &graph.nodes()[n];
                        (needs_of(node.id.as_str()), node.parallelism)
                    })
                    .collect(),
                parts: Vec::new(),
                draining: Vec::new(),
                finished_parts: Vec::new(),
            });
        }
        // A unit larger than any worker could ever hold is refused now, not left waiting.
        let live: Vec<(&String, &WorkerEntry)> = self.workers.iter().filter(|(_, w)| !w.lost).collect();
        // A region spread across workers needs room for its largest part (part 0) only.
        let units: Vec<Capacity> = if checkpointed {
            regions
                .iter()
                .map(|r| {
                    let parts = r.spread.min(r.max_parallelism()).min(live.len() as u32).max(1);
                    if parts > 1 { r.part_needs(parts, 0) } else { r.needs }
                })
                .collect()
        } else {
            vec![regions.iter().map(|r| r.needs).sum()]
        };
        if !live.is_empty() {
            for (unit, need) in units.iter().enumerate() {
                if !live.iter().any(|(_, w)| placement::fits(need, &w.capacity)) {
                    let what = if checkpointed { format!("region `{}`", regions[unit].name) } else { "the job".into() };
                    let have = live
                        .iter()
                        .map(|(id, w)| format!("{id} has {}", placement::describe(&w.capacity)))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Ok(Err(format!(
                        "job `{name}` cannot be placed: {what} needs {} and no worker has that much ({have})",
                        placement::describe(need)
                    )));
                }
            }
        }
        let record = JobRecord {
            job: name.clone(),
            spec: spec_path.to_owned(),
            state: JobState::Running,
            epoch: self.jobs.get(&name).map_or(0, |j| j.epoch),
            checkpointed,
            resume,
            regions,
            failovers: 0,
            note: None,
            rows_out: 0,
        };
        self.ha.save(&record).await?;
        self.jobs.insert(name.clone(), record);
        self.schedule().await?;
        Ok(Ok(name))
    }
}

fn view(j: &JobRecord) -> JobView {
    JobView {
        job: j.job.clone(),
        spec: j.spec.clone(),
        state: j.state,
        epoch: j.epoch,
        placement: j
            .regions
            .iter()
            .map(|r| {
                let on: Vec<&str> = r.part_workers().map(String::as_str).collect();
                (r.name.clone(), (!on.is_empty()).then(|| on.join("+")))
            })
            .collect(),
        failovers: j.failovers,
        note: j.note.clone(),
        rows_out: j.rows_out,
    }
}

/// What a worker answered to a request the coordinator passed on.
enum Answer {
    Loaded(Result<String, String>),
    Upgraded(Result<UpgradeReport, String>),
}

/// The pipelined region of the job at `spec` that holds operator `operator`.
fn region_of(spec: &str, operator: &str) -> Result<String, String> {
    let spec = flumen_spec::JobSpec::load(std::path::Path::new(spec)).map_err(|e| e.to_string())?;
    if !spec.operators.iter().any(|o| o.id == operator) {
        let ids: Vec<&str> = spec.operators.iter().map(|o| o.id.as_str()).collect();
        return Err(format!("no operator `{operator}` (its operators: {})", ids.join(", ")));
    }
    let graph = flumen_engine::job_graph(&spec).map_err(|e| e.to_string())?;
    graph
        .regions()
        .into_iter()
        .find(|r| r.nodes.iter().any(|&n| graph.nodes()[n].id.as_str() == operator))
        .map(|r| graph.region_name(&r))
        .ok_or_else(|| format!("operator `{operator}` is in no region"))
}
