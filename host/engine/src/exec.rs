//! Running a prepared job: one task per subtask, bounded channels between
//! them, batches shared by reference, control events in band.
//!
//! Protocol of a bounded run:
//! 1. Every channel is a bounded queue of `Event`s; a producer that finds it
//!    full waits, so a slow operator backpressures everything upstream.
//! 2. A source subtask reads its part of the input, routes each batch by the
//!    edge's partitioning (a batch is an `Arc`: forwarding it copies nothing),
//!    then sends `End` on every outgoing channel.
//! 3. An operator subtask hands each batch to its guest instance; on failure
//!    it applies the operator's policy (retry on a fresh instance, dead-letter,
//!    or fail the job). When all inputs ended it calls `finish`, routes what
//!    that emits, and sends `End`.
//! 4. A sink subtask writes each batch; when all inputs ended it hands its
//!    uncommitted writer back to the driver.
//! 5. The driver commits every sink only after every subtask succeeded. If any
//!    subtask fails or the run is cancelled, all tasks are aborted and every
//!    uncommitted writer is dropped, removing its partial output: a failed job
//!    never leaves a file that looks complete.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::SchemaRef;
use flumen_dataflow::{Event, InputProgress, InputTracker, NodeKind};
use flumen_types::{FailureAction, Partitioning, SubtaskId};
use flumen_wasm::{CallError, OpenContext, OperatorFactory, OperatorInstance};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::connector::{SinkWriter, SourceReader};
use crate::metrics::NodeMetrics;
use crate::plan::{PreparedJob, Role};
use crate::{EngineError, JobSummary};

type Tx = mpsc::Sender<Event<RecordBatch>>;
type Rx = mpsc::Receiver<Event<RecordBatch>>;

/// What a finished subtask hands back to the driver.
enum Finished {
    Done,
    Sink(Box<dyn SinkWriter>),
}

impl PreparedJob {
    /// Runs the job to completion, or until `cancel` resolves.
    pub async fn run(self, cancel: impl Future<Output = ()>) -> Result<JobSummary, EngineError> {
        let started = Instant::now();
        let PreparedJob { spec, graph, nodes, metrics } = self;
        let plan = graph.physical();
        let capacity = spec.job.channel_capacity;

        // Wire channels: per producer subtask, its senders per edge (ordered by
        // consumer subtask); per consumer subtask, its receivers with their port.
        let mut outputs: std::collections::HashMap<SubtaskId, Vec<(usize, Vec<Tx>)>> = Default::default();
        let mut inputs: std::collections::HashMap<SubtaskId, Vec<(u32, Rx)>> = Default::default();
        for ch in &plan.channels {
            let (tx, rx) = mpsc::channel(capacity);
            let edge = &graph.edges()[ch.edge];
            let outs = outputs.entry(ch.from.clone()).or_default();
            match outs.iter_mut().find(|(e, _)| *e == ch.edge) {
                Some((_, v)) => v.push(tx),
                None => outs.push((ch.edge, vec![tx])),
            }
            inputs.entry(ch.to.clone()).or_default().push((edge.port, rx));
        }

        let mut tasks: JoinSet<Result<Finished, EngineError>> = JoinSet::new();
        for (index, node) in nodes.into_iter().enumerate() {
            let parallelism = graph.nodes()[index].parallelism;
            let kind = graph.nodes()[index].kind;
            let base_dir = spec.base_dir();
            let router = |subtask: u32, outputs: &mut std::collections::HashMap<SubtaskId, Vec<(usize, Vec<Tx>)>>| {
                let id = SubtaskId { node: node.id.clone(), index: subtask };
                let edges = outputs.remove(&id).unwrap_or_default();
                Router::new(
                    edges
                        .into_iter()
                        .map(|(e, senders)| {
                            let edge = &graph.edges()[e];
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
            match node.role {
                Role::Source(planned) => {
                    for subtask in 0..parallelism {
                        let reader = planned.open(subtask, parallelism).map_err(EngineError::Connector)?;
                        let router = router(subtask, &mut outputs)?;
                        tasks.spawn(run_source(reader, router, node.metrics.clone()));
                    }
                }
                Role::Operator { factory, instances, policy } => {
                    for (ctx, instance) in instances {
                        let subtask = ctx.subtask;
                        let id = SubtaskId { node: node.id.clone(), index: subtask };
                        let gate = InputGate::new(inputs.remove(&id).unwrap_or_default());
                        let router = router(subtask, &mut outputs)?;
                        let op = OperatorTask {
                            factory: factory.clone(),
                            ctx,
                            instance,
                            policy: policy.clone(),
                            metrics: node.metrics.clone(),
                        };
                        tasks.spawn(op.run(gate, router));
                    }
                }
                Role::Sink(sink) => {
                    debug_assert_eq!(kind, NodeKind::Sink);
                    for subtask in 0..parallelism {
                        let id = SubtaskId { node: node.id.clone(), index: subtask };
                        let gate = InputGate::new(inputs.remove(&id).unwrap_or_default());
                        let writer =
                            crate::connector::open_sink(&sink, &base_dir, node.schema.clone(), subtask, parallelism)
                                .map_err(EngineError::Connector)?;
                        tasks.spawn(run_sink(writer, gate, node.metrics.clone()));
                    }
                }
            }
        }

        let mut writers = Vec::new();
        let drive = async {
            // A subtask whose consumer failed reports `DownstreamGone`; keep
            // waiting for the consumer's own error, which says what happened.
            let mut downstream_gone = None;
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(Finished::Sink(w))) => writers.push(w),
                    Ok(Ok(Finished::Done)) => {}
                    Ok(Err(EngineError::DownstreamGone)) => downstream_gone = Some(EngineError::DownstreamGone),
                    Ok(Err(e)) => return Err(e),
                    Err(e) if e.is_panic() => return Err(EngineError::Internal(format!("a subtask panicked: {e}"))),
                    Err(e) => return Err(EngineError::Internal(format!("a subtask was lost: {e}"))),
                }
            }
            downstream_gone.map_or(Ok(()), Err)
        };
        let outcome = tokio::select! {
            r = drive => r,
            _ = cancel => Err(EngineError::Cancelled),
        };
        if let Err(e) = outcome {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            drop(writers);
            return Err(e);
        }
        let mut files = Vec::new();
        for w in writers {
            let report = tokio::task::block_in_place(|| w.commit()).map_err(EngineError::Connector)?;
            files.extend(report.files);
        }
        Ok(JobSummary { job: spec.job.name.clone(), elapsed: started.elapsed(), nodes: metrics.snapshot(), files })
    }
}

async fn run_source(
    mut reader: Box<dyn SourceReader>,
    mut router: Router,
    metrics: Arc<NodeMetrics>,
) -> Result<Finished, EngineError> {
    loop {
        let t = Instant::now();
        let next = tokio::task::block_in_place(|| reader.next_batch()).map_err(EngineError::Connector)?;
        NodeMetrics::add(&metrics.busy_ns, t.elapsed().as_nanos() as u64);
        match next {
            Some(batch) => router.send(batch).await?,
            None => break,
        }
    }
    router.end().await;
    Ok(Finished::Done)
}

async fn run_sink(
    mut writer: Box<dyn SinkWriter>,
    mut gate: InputGate,
    metrics: Arc<NodeMetrics>,
) -> Result<Finished, EngineError> {
    while let Some(event) = gate.next().await {
        let GateEvent::Batch(_, batch) = event else { continue };
        NodeMetrics::add(&metrics.rows_in, batch.num_rows() as u64);
        NodeMetrics::add(&metrics.batches_in, 1);
        let t = Instant::now();
        tokio::task::block_in_place(|| writer.write(&batch)).map_err(EngineError::Connector)?;
        NodeMetrics::add(&metrics.busy_ns, t.elapsed().as_nanos() as u64);
    }
    Ok(Finished::Sink(writer))
}

struct OperatorTask {
    factory: OperatorFactory,
    ctx: OpenContext,
    instance: OperatorInstance,
    policy: flumen_types::FailurePolicy,
    metrics: Arc<NodeMetrics>,
}

impl OperatorTask {
    async fn run(mut self, mut gate: InputGate, mut router: Router) -> Result<Finished, EngineError> {
        while let Some(event) = gate.next().await {
            match event {
                GateEvent::Batch(port, batch) => {
                    NodeMetrics::add(&self.metrics.rows_in, batch.num_rows() as u64);
                    NodeMetrics::add(&self.metrics.batches_in, 1);
                    if let Some(out) = self.process(port, &batch, &mut router).await? {
                        for b in out {
                            router.send(b).await?;
                        }
                    }
                }
                GateEvent::Watermark(w) => router.watermark(w).await?,
            }
        }
        let t = Instant::now();
        let before = self.instance.boundary_bytes();
        let result = self.instance.finish().await;
        self.account(t, before);
        let out = result.map_err(|e| {
            NodeMetrics::add(&self.metrics.failures, 1);
            EngineError::Operator(e)
        })?;
        for b in out {
            router.send(b).await?;
        }
        router.end().await;
        Ok(Finished::Done)
    }

    /// One batch under the failure policy: `Some(outputs)` on success, `None`
    /// if it was dead-lettered.
    async fn process(
        &mut self,
        port: u32,
        batch: &RecordBatch,
        router: &mut Router,
    ) -> Result<Option<Vec<RecordBatch>>, EngineError> {
        let mut attempt = 0;
        loop {
            let t = Instant::now();
            let before = self.instance.boundary_bytes();
            let result = self.instance.process(port, batch).await;
            self.account(t, before);
            let error = match result {
                Ok(out) => return Ok(Some(out)),
                Err(e) => e,
            };
            NodeMetrics::add(&self.metrics.failures, 1);
            tracing::warn!(operator = %error.operator, attempt, "{}", error.message);
            // The instance is poisoned: replace it before anything else.
            self.instance = self.factory.instantiate(&self.ctx).await.map_err(EngineError::Operator)?;
            if attempt < self.policy.retries {
                attempt += 1;
                NodeMetrics::add(&self.metrics.retries, 1);
                continue;
            }
            return match self.policy.then {
                FailureAction::Fail => Err(EngineError::Operator(with_attempts(error, attempt))),
                FailureAction::DeadLetter => {
                    NodeMetrics::add(&self.metrics.dead_lettered_rows, batch.num_rows() as u64);
                    router.dead_letter(batch, &error).await?;
                    Ok(None)
                }
            };
        }
    }

    fn account(&self, started: Instant, before: flumen_wasm::BoundaryBytes) {
        let after = self.instance.boundary_bytes();
        NodeMetrics::add(&self.metrics.busy_ns, started.elapsed().as_nanos() as u64);
        NodeMetrics::add(&self.metrics.guest_bytes_in, after.bytes_in.saturating_sub(before.bytes_in));
        NodeMetrics::add(&self.metrics.guest_bytes_out, after.bytes_out.saturating_sub(before.bytes_out));
    }
}

fn with_attempts(mut e: CallError, retries: u32) -> CallError {
    if retries > 0 {
        e.message = format!("{} (after {retries} retries on fresh instances)", e.message);
    }
    e
}

// ---- input side ----

enum GateEvent {
    Batch(u32, RecordBatch),
    Watermark(i64),
}

/// A subtask's input channels, polled fairly, with end and watermark bookkeeping.
struct InputGate {
    channels: Vec<(u32, Rx)>,
    /// Channels that delivered `End` or closed: never polled again.
    done: Vec<bool>,
    tracker: InputTracker,
    next: usize,
}

impl InputGate {
    fn new(channels: Vec<(u32, Rx)>) -> Self {
        let tracker = InputTracker::new(channels.len());
        Self { done: vec![false; channels.len()], channels, tracker, next: 0 }
    }

    /// The next batch or watermark; `None` once every channel has ended.
    async fn next(&mut self) -> Option<GateEvent> {
        loop {
            if self.tracker.is_ended() {
                return None;
            }
            let (channel, event) = std::future::poll_fn(|cx| {
                let n = self.channels.len();
                for k in 0..n {
                    let i = (self.next + k) % n;
                    if self.done[i] {
                        continue;
                    }
                    if let Poll::Ready(ev) = self.channels[i].1.poll_recv(cx) {
                        // Start after this channel next time, so none starves.
                        self.next = (i + 1) % n;
                        return Poll::Ready((i, ev));
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                Some(Event::Data(batch)) => return Some(GateEvent::Batch(self.channels[channel].0, batch)),
                Some(Event::Watermark(w)) => {
                    if let InputProgress::Watermark(w) = self.tracker.on_watermark(channel, w) {
                        return Some(GateEvent::Watermark(w));
                    }
                }
                Some(Event::Barrier(_)) => {}
                // `None`: a producer vanished without `End` (it failed; the
                // driver reports its error). Either way this channel is done.
                Some(Event::End) | None => {
                    self.done[channel] = true;
                    self.channels[channel].1.close();
                    if let InputProgress::Watermark(w) = self.tracker.on_end(channel) {
                        return Some(GateEvent::Watermark(w));
                    }
                }
            }
        }
    }
}

// ---- output side ----

struct RouteEdge {
    partitioning: Partitioning,
    dead_letter: bool,
    senders: Vec<Tx>,
    next: usize,
}

/// Routes a subtask's output batches to its consumers by each edge's partitioning.
struct Router {
    edges: Vec<RouteEdge>,
    /// Column indices of each edge's hash keys in the output schema.
    hash_columns: Vec<Vec<usize>>,
    metrics: Arc<NodeMetrics>,
}

impl Router {
    fn new(edges: Vec<RouteEdge>, schema: &SchemaRef, metrics: Arc<NodeMetrics>) -> Result<Self, EngineError> {
        let hash_columns = edges
            .iter()
            .map(|e| match &e.partitioning {
                Partitioning::Hash(keys) => keys
                    .iter()
                    .map(|k| schema.index_of(k).map_err(|_| EngineError::Internal(format!("hash key `{k}` missing"))))
                    .collect(),
                _ => Ok(Vec::new()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { edges, hash_columns, metrics })
    }

    async fn send(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        NodeMetrics::add(&self.metrics.rows_out, batch.num_rows() as u64);
        NodeMetrics::add(&self.metrics.batches_out, 1);
        for (i, edge) in self.edges.iter_mut().enumerate() {
            if edge.dead_letter {
                continue;
            }
            let n = edge.senders.len();
            match &edge.partitioning {
                Partitioning::Forward => deliver(&edge.senders[0], Event::Data(batch.clone())).await?,
                Partitioning::RoundRobin => {
                    let target = edge.next % n;
                    edge.next = edge.next.wrapping_add(1);
                    deliver(&edge.senders[target], Event::Data(batch.clone())).await?;
                }
                Partitioning::Broadcast => {
                    for s in &edge.senders {
                        deliver(s, Event::Data(batch.clone())).await?;
                    }
                }
                Partitioning::Hash(_) => {
                    for (target, part) in crate::route::hash_split(&batch, &self.hash_columns[i], n)? {
                        deliver(&edge.senders[target], Event::Data(part)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn watermark(&mut self, w: i64) -> Result<(), EngineError> {
        for edge in &self.edges {
            for s in &edge.senders {
                deliver(s, Event::Watermark(w)).await?;
            }
        }
        Ok(())
    }

    /// Sends `batch` with the operator and error appended to the dead-letter sink.
    async fn dead_letter(&mut self, batch: &RecordBatch, error: &CallError) -> Result<(), EngineError> {
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![error.operator.as_str(); n])));
        columns.push(Arc::new(StringArray::from(vec![error.message.as_str(); n])));
        for edge in self.edges.iter_mut().filter(|e| e.dead_letter) {
            let target = edge.next % edge.senders.len();
            edge.next = edge.next.wrapping_add(1);
            let sender = &edge.senders[target];
            let schema = crate::plan::dead_letter_schema_for(batch.schema_ref());
            let rb = RecordBatch::try_new(schema, columns.clone())
                .map_err(|e| EngineError::Internal(format!("dead-letter batch: {e}")))?;
            deliver(sender, Event::Data(rb)).await?;
        }
        Ok(())
    }

    async fn end(&mut self) {
        for edge in &self.edges {
            for s in &edge.senders {
                // A consumer that is gone has failed; the driver reports that.
                let _ = s.send(Event::End).await;
            }
        }
    }
}

async fn deliver(tx: &Tx, event: Event<RecordBatch>) -> Result<(), EngineError> {
    tx.send(event).await.map_err(|_| EngineError::DownstreamGone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;

    fn batch(v: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(vec![v])) as ArrayRef)]).unwrap()
    }

    /// A channel that ended (and whose sender is gone) must not starve the
    /// others: this once spun forever on the closed channel.
    #[tokio::test]
    async fn an_ended_channel_does_not_starve_the_others() {
        let (tx0, rx0) = mpsc::channel(4);
        let (tx1, rx1) = mpsc::channel(4);
        let mut gate = InputGate::new(vec![(0, rx0), (0, rx1)]);
        tx0.send(Event::End).await.unwrap();
        drop(tx0);
        let late = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx1.send(Event::Data(batch(7))).await.unwrap();
            tx1.send(Event::End).await.unwrap();
        });
        let got =
            tokio::time::timeout(std::time::Duration::from_secs(5), gate.next()).await.expect("gate must not hang");
        assert!(matches!(got, Some(GateEvent::Batch(0, b)) if b == batch(7)));
        assert!(gate.next().await.is_none(), "both channels ended");
        late.await.unwrap();
    }

    #[tokio::test]
    async fn watermark_is_the_minimum_over_open_channels() {
        let (tx0, rx0) = mpsc::channel(4);
        let (tx1, rx1) = mpsc::channel(4);
        let mut gate = InputGate::new(vec![(0, rx0), (1, rx1)]);
        tx0.send(Event::Watermark(10)).await.unwrap();
        tx1.send(Event::Watermark(5)).await.unwrap();
        assert!(matches!(gate.next().await, Some(GateEvent::Watermark(5))));
        tx1.send(Event::End).await.unwrap();
        assert!(matches!(gate.next().await, Some(GateEvent::Watermark(10))));
    }
}
