//! The output side of a subtask: routes its batches to consumers by each
//! edge's partitioning, and sends control events (watermarks, barriers, end)
//! to every consumer.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::SchemaRef;
use flumen_dataflow::Event;
use flumen_types::Partitioning;
use flumen_wasm::CallError;
use tokio::sync::mpsc;

use crate::EngineError;
use crate::metrics::NodeMetrics;

pub(crate) type Tx = mpsc::Sender<Event<RecordBatch>>;

pub(crate) struct RouteEdge {
    pub(crate) partitioning: Partitioning,
    pub(crate) dead_letter: bool,
    pub(crate) senders: Vec<Tx>,
    pub(crate) next: usize,
}

/// Routes a subtask's output batches to its consumers by each edge's partitioning.
pub(crate) struct Router {
    edges: Vec<RouteEdge>,
    /// Column indices of each edge's hash keys in the output schema.
    hash_columns: Vec<Vec<usize>>,
    metrics: Arc<NodeMetrics>,
}

impl Router {
    pub(crate) fn new(
        edges: Vec<RouteEdge>,
        schema: &SchemaRef,
        metrics: Arc<NodeMetrics>,
    ) -> Result<Self, EngineError> {
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

    pub(crate) async fn send(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
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
                Partitioning::Forward => deliver(&edge.senders[0], Event::Data(batch.clone()), &self.metrics).await?,
                Partitioning::RoundRobin => {
                    let target = edge.next % n;
                    edge.next = edge.next.wrapping_add(1);
                    deliver(&edge.senders[target], Event::Data(batch.clone()), &self.metrics).await?;
                }
                Partitioning::Broadcast => {
                    for s in &edge.senders {
                        deliver(s, Event::Data(batch.clone()), &self.metrics).await?;
                    }
                }
                Partitioning::Hash(_) => {
                    for (target, part) in crate::route::hash_split(&batch, &self.hash_columns[i], n)? {
                        deliver(&edge.senders[target], Event::Data(part), &self.metrics).await?;
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn watermark(&mut self, w: i64) -> Result<(), EngineError> {
        for edge in &self.edges {
            for s in &edge.senders {
                deliver(s, Event::Watermark(w), &self.metrics).await?;
            }
        }
        Ok(())
    }

    /// Sends checkpoint barrier `n` to every consumer, dead-letter sinks included.
    pub(crate) async fn barrier(&mut self, n: u64) -> Result<(), EngineError> {
        for edge in &self.edges {
            for s in &edge.senders {
                deliver(s, Event::Barrier(n), &self.metrics).await?;
            }
        }
        Ok(())
    }

    /// Sends `batch` with the operator and error appended to the dead-letter sink.
    pub(crate) async fn dead_letter(&mut self, batch: &RecordBatch, error: &CallError) -> Result<(), EngineError> {
        self.dead_letter_rows(batch, &error.operator, &error.message).await
    }

    /// Sends `batch` with `node` (the failed subtask) and `message` appended to the dead-letter sink.
    pub(crate) async fn dead_letter_rows(
        &mut self,
        batch: &RecordBatch,
        node: &str,
        message: &str,
    ) -> Result<(), EngineError> {
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![node; n])));
        columns.push(Arc::new(StringArray::from(vec![message; n])));
        for edge in self.edges.iter_mut().filter(|e| e.dead_letter) {
            let target = edge.next % edge.senders.len();
            edge.next = edge.next.wrapping_add(1);
            let sender = &edge.senders[target];
            let schema = crate::plan::dead_letter_schema_for(batch.schema_ref());
            let rb = RecordBatch::try_new(schema, columns.clone())
                .map_err(|e| EngineError::Internal(format!("dead-letter batch: {e}")))?;
            deliver(sender, Event::Data(rb), &self.metrics).await?;
        }
        Ok(())
    }

    pub(crate) async fn end(&mut self) {
        for edge in &self.edges {
            for s in &edge.senders {
                // A consumer that is gone has failed; the driver reports that.
                let _ = s.send(Event::End).await;
            }
        }
    }
}

/// Sends `event`; the time spent waiting for room in a full channel counts as the
/// producer's backpressure.
async fn deliver(tx: &Tx, event: Event<RecordBatch>, metrics: &NodeMetrics) -> Result<(), EngineError> {
    match tx.try_send(event) {
        Ok(()) => Ok(()),
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(EngineError::DownstreamGone),
        Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => {
            let waiting = std::time::Instant::now();
            let sent = tx.send(event).await.map_err(|_| EngineError::DownstreamGone);
            NodeMetrics::add(&metrics.backpressure_ns, waiting.elapsed().as_nanos() as u64);
            sent
        }
    }
}
