//! The engine-level dynamic batcher (after Triton's): calls from every
//! operator instance using a model wait in one queue; worker threads, one per
//! model instance, take whole calls in arrival order into batches — at once
//! when a preferred size is reached, otherwise when the oldest call has waited
//! its queue-delay budget — run them, and split the outputs back to each
//! caller. Queued rows are bounded: a caller past the bound waits (its guest
//! fiber suspends), which is how a slow model slows its sources.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flumen_types::inference::{InferError, ModelInstance, Tensor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// How the batcher forms batches.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    pub max_batch: usize,
    /// Ascending; the largest is the size dispatched at once.
    pub targets: Vec<usize>,
    pub max_queue_delay: Duration,
    pub max_queue_rows: usize,
    pub max_call_rows: usize,
    pub max_call_bytes: usize,
    pub default_deadline: Option<Duration>,
    /// Calls whose inputs differ in their second dimension (token
    /// sequences) join one batch, zero-padded to the longest.
    pub pad_sequences: bool,
}

type Reply = oneshot::Sender<Result<Vec<Tensor>, InferError>>;

struct Pending {
    inputs: Vec<Tensor>,
    rows: usize,
    enqueued: Instant,
    deadline: Option<Instant>,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    rows: usize,
    closed: bool,
}

/// Counters for the run summary; all monotonic.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub calls: AtomicU64,
    pub rows: AtomicU64,
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    pub deadline_misses: AtomicU64,
    pub refused: AtomicU64,
    /// Summed over calls, from enqueue to the start of their batch's run.
    pub queue_ns: AtomicU64,
    pub queue_max_ns: AtomicU64,
    /// Time inside the backend.
    pub busy_ns: AtomicU64,
    /// Batches by size: bucket i counts sizes in (2^(i-1), 2^i].
    pub size_hist: [AtomicU64; 16],
    /// Rows now queued (backpressure gauge).
    pub queued_rows: AtomicU64,
}

impl BatchStats {
    fn record_batch(&self, size: usize) {
        let bucket = (usize::BITS - size.saturating_sub(1).leading_zeros()) as usize;
        self.size_hist[bucket.min(15)].fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// `size≤N: count` pairs for the buckets that saw a batch.
    pub fn histogram(&self) -> Vec<(usize, u64)> {
        self.size_hist
            .iter()
            .enumerate()
            .map(|(i, c)| (1usize << i, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}

/// One model's queue and workers.
pub struct Batcher {
    name: String,
    policy: BatchPolicy,
    queue: Arc<(Mutex<Queue>, Condvar)>,
    room: Arc<Semaphore>,
    stats: Arc<BatchStats>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("name", &self.name).field("policy", &self.policy).finish()
    }
}

impl Batcher {
    /// Starts one worker thread per instance.
    pub fn start(name: &str, policy: BatchPolicy, instances: Vec<Box<dyn ModelInstance>>) -> Batcher {
        let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let stats = Arc::new(BatchStats::default());
        let workers = instances
            .into_iter()
            .enumerate()
            .map(|(i, instance)| {
                let (queue, stats, policy, model) = (queue.clone(), stats.clone(), policy.clone(), name.to_owned());
                std::thread::Builder::new()
                    .name(format!("flumen-infer-{name}-{i}"))
                    .spawn(move || worker(&model, &policy, &queue, &stats, instance))
                    .map_err(|e| tracing::error!(model = %name, "cannot start an inference worker: {e}"))
                    .ok()
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        let room = Arc::new(Semaphore::new(policy.max_queue_rows));
        Batcher { name: name.to_owned(), policy, queue, room, stats, workers }
    }

    pub fn stats(&self) -> &Arc<BatchStats> {
        &self.stats
    }

    pub fn policy(&self) -> &BatchPolicy {
        &self.policy
    }

    /// Queues a call and waits for its outputs. `inputs` are checked by the
    /// caller against the signature; here only sizes are admitted.
    pub async fn infer(&self, inputs: Vec<Tensor>, deadline: Option<Duration>) -> Result<Vec<Tensor>, InferError> {
        let rows = inputs.first().map(|t| t.rows()).unwrap_or(0);
        let bytes: usize = inputs.iter().map(|t| t.data.len()).sum();
        let refuse = |reason: String| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            Err(InferError::Refused { model: self.name.clone(), reason })
        };
        if rows > self.policy.max_call_rows {
            return refuse(format!("{rows} rows in one call (max_call_rows = {})", self.policy.max_call_rows));
        }
        if bytes > self.policy.max_call_bytes {
            return refuse(format!(
                "{bytes} input bytes in one call (max_call_mb allows {})",
                self.policy.max_call_bytes
            ));
        }
        if self.workers.is_empty() {
            return Err(InferError::Backend { model: self.name.clone(), message: "no worker is running".into() });
        }
        if rows == 0 {
            return Err(InferError::Mismatch {
                model: self.name.clone(),
                detail: "a call needs at least one row".into(),
            });
        }
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
        let deadline = deadline.or(self.policy.default_deadline);
        let started = Instant::now();
        let work = async {
            // A call larger than a batch goes in pieces of at most `max_batch` rows.
            let mut waits = Vec::new();
            let mut at = 0;
            while at < rows {
                let n = (rows - at).min(self.policy.max_batch);
                let permit = Arc::clone(&self.room)
                    .acquire_many_owned(n as u32)
                    .await
                    .map_err(|_| InferError::Backend { model: self.name.clone(), message: "model unloaded".into() })?;
                let (tx, rx) = oneshot::channel();
                let piece: Vec<Tensor> = inputs.iter().map(|t| t.slice_rows(at, n)).collect();
                let pending = Pending {
                    inputs: piece,
                    rows: n,
                    enqueued: Instant::now(),
                    deadline: deadline.map(|d| started + d),
                    reply: tx,
                    _permit: permit,
                };
                self.push(pending)?;
                waits.push(rx);
                at += n;
            }
            let mut parts: Vec<Vec<Tensor>> = Vec::with_capacity(waits.len());
            for rx in waits {
                let got = rx.await.map_err(|_| InferError::Backend {
                    model: self.name.clone(),
                    message: "the model's worker stopped".into(),
                })??;
                parts.push(got);
            }
            join_outputs(&self.name, parts)
        };
        match deadline {
            None => work.await,
            Some(d) => match tokio::time::timeout(d, work).await {
                Ok(r) => r,
                Err(_) => {
                    self.stats.deadline_misses.fetch_add(1, Ordering::Relaxed);
                    Err(InferError::DeadlineExceeded { model: self.name.clone(), deadline_ms: d.as_millis() as u64 })
                }
            },
        }
    }

    fn push(&self, p: Pending) -> Result<(), InferError> {
        let (lock, cv) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        if q.closed {
            return Err(InferError::Backend { model: self.name.clone(), message: "model unloaded".into() });
        }
        q.rows += p.rows;
        self.stats.queued_rows.store(q.rows as u64, Ordering::Relaxed);
        q.items.push_back(p);
        cv.notify_one();
        Ok(())
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.queue;
            lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            cv.notify_all();
        }
        self.room.close();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Each output's pieces joined back in row order.
fn join_outputs(model: &str, parts: Vec<Vec<Tensor>>) -> Result<Vec<Tensor>, InferError> {
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else { return Ok(Vec::new()) };
    let rest: Vec<Vec<Tensor>> = parts.collect();
    if rest.is_empty() {
        return Ok(first);
    }
    (0..first.len())
        .map(|i| {
            let pieces: Vec<Tensor> =
                std::iter::once(first[i].clone()).chain(rest.iter().filter_map(|p| p.get(i).cloned())).collect();
            Tensor::concat_rows(&pieces).map_err(|message| InferError::Backend { model: model.to_owned(), message })
        })
        .collect()
}

/// Takes the next batch: waits for work, then for a preferred size or the
/// oldest call's delay budget. `None` once closed and drained.
fn next_batch(policy: &BatchPolicy, queue: &(Mutex<Queue>, Condvar), stats: &BatchStats) -> Option<Vec<Pending>> {
    let (lock, cv) = queue;
    let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
    let target = policy.targets.last().copied().unwrap_or(policy.max_batch);
    loop {
        // Calls whose caller gave up (deadline, dropped) leave the queue unrun.
        let now = Instant::now();
        let before = q.items.len();
        q.items.retain(|p| !p.reply.is_closed() && p.deadline.is_none_or(|d| d > now));
        if q.items.len() != before {
            q.rows = q.items.iter().map(|p| p.rows).sum();
        }
        if q.items.is_empty() {
            if q.closed {
                return None;
            }
            q = cv.wait(q).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let oldest = q.items.front().map(|p| p.enqueued).unwrap_or(now);
        let due = oldest + policy.max_queue_delay;
        if q.rows >= target || now >= due || q.closed {
            let limit = if q.rows >= target { target } else { policy.max_batch };
            let mut batch = Vec::new();
            let mut rows = 0;
            while let Some(p) = q.items.front() {
                if !batch.is_empty() && rows + p.rows > limit {
                    break;
                }
                rows += p.rows;
                if let Some(p) = q.items.pop_front() {
                    batch.push(p);
                }
            }
            q.rows -= rows;
            stats.queued_rows.store(q.rows as u64, Ordering::Relaxed);
            if !q.items.is_empty() {
                cv.notify_one();
            }
            return Some(batch);
        }
        q = cv.wait_timeout(q, due - now).unwrap_or_else(|e| e.into_inner()).0;
    }
}

fn worker(
    name: &str,
    policy: &BatchPolicy,
    queue: &(Mutex<Queue>, Condvar),
    stats: &BatchStats,
    mut instance: Box<dyn ModelInstance>,
) {
    while let Some(batch) = next_batch(policy, queue, stats) {
        let started = Instant::now();
        for p in &batch {
            let waited = started.duration_since(p.enqueued).as_nanos() as u64;
            stats.queue_ns.fetch_add(waited, Ordering::Relaxed);
            stats.queue_max_ns.fetch_max(waited, Ordering::Relaxed);
        }
        let rows: usize = batch.iter().map(|p| p.rows).sum();
        let n_inputs = batch.first().map(|p| p.inputs.len()).unwrap_or(0);
        let joined: Result<Vec<Tensor>, String> = (0..n_inputs)
            .map(|i| {
                let col: Vec<Tensor> = batch.iter().filter_map(|p| p.inputs.get(i).cloned()).collect();
                if policy.pad_sequences { Tensor::concat_rows_padded(&col) } else { Tensor::concat_rows(&col) }
            })
            .collect();
        let result = joined.and_then(|inputs| instance.run(&inputs));
        stats.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        stats.record_batch(rows);
        let outputs = match result {
            Ok(outputs) if outputs.iter().all(|t| t.rows() == rows) => outputs,
            Ok(outputs) => {
                let got: Vec<usize> = outputs.iter().map(|t| t.rows()).collect();
                fail_all(name, batch, stats, format!("the backend returned {got:?} rows for a batch of {rows}"));
                continue;
            }
            Err(message) if batch.len() > 1 => {
                // One caller's rows may be what the backend rejects: run each
                // call alone, so only the calls that fail alone fail.
                tracing::debug!(model = %name, "batch of {} calls failed ({message}); running them one by one", batch.len());
                for p in batch {
                    let started = Instant::now();
                    let alone = instance.run(&p.inputs);
                    stats.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    stats.record_batch(p.rows);
                    match alone {
                        Ok(outputs) if outputs.iter().all(|t| t.rows() == p.rows) => {
                            let _ = p.reply.send(Ok(outputs));
                        }
                        Ok(_) => fail_all(name, vec![p], stats, "the backend returned the wrong row count".into()),
                        Err(message) => fail_all(name, vec![p], stats, message),
                    }
                }
                continue;
            }
            Err(message) => {
                fail_all(name, batch, stats, message);
                continue;
            }
        };
        let mut at = 0;
        for p in batch {
            let mine: Vec<Tensor> = outputs.iter().map(|t| t.slice_rows(at, p.rows)).collect();
            at += p.rows;
            let _ = p.reply.send(Ok(mine));
        }
    }
}

fn fail_all(name: &str, batch: Vec<Pending>, stats: &BatchStats, message: String) {
    stats.failed_batches.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(model = %name, "inference batch failed: {message}");
    for p in batch {
        let _ = p.reply.send(Err(InferError::Backend { model: name.to_owned(), message: message.clone() }));
    }
}
