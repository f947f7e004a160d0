//! A subtask's input side: its channels polled fairly, with ends and
//! watermarks tracked by [`InputTracker`] and checkpoint barriers aligned by
//! [`BarrierAligner`] (both sans-IO, in `flumen-dataflow`).
//!
//! The gate turns what arrives into [`GateEvent`]s: batches (tagged when they
//! are in-flight data of an unaligned checkpoint), watermarks, and the two
//! moments of a checkpoint: `Snapshot` (take the snapshot and forward the
//! barrier) and `Complete` (every channel delivered the barrier: acknowledge).
//! A channel the aligner blocks is simply not polled, so its producer
//! backpressures while the others catch up.

use std::collections::VecDeque;
use std::task::Poll;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use flumen_dataflow::{AlignAction, AlignmentMode, BarrierAligner, DataAction, Event, InputProgress, InputTracker};
use tokio::sync::mpsc;

pub(crate) type Rx = mpsc::Receiver<Event<RecordBatch>>;

#[derive(Debug)]
pub(crate) enum GateEvent {
    /// A batch from input `port`; `record`: it is in-flight data of that
    /// unaligned checkpoint and must be stored with it as well as processed.
    Batch {
        port: u32,
        batch: RecordBatch,
        record: Option<u64>,
    },
    Watermark(i64),
    /// Snapshot state for `checkpoint` now, then forward its barrier.
    Snapshot {
        checkpoint: u64,
    },
    /// Every input delivered the barrier of `checkpoint` (or ended).
    Complete {
        checkpoint: u64,
    },
}

pub(crate) struct InputGate {
    channels: Vec<(u32, Rx)>,
    /// Channels that delivered `End` or closed: never polled again.
    done: Vec<bool>,
    tracker: InputTracker,
    aligner: BarrierAligner,
    queued: VecDeque<GateEvent>,
    next: usize,
    started: Instant,
}

impl InputGate {
    pub(crate) fn new(channels: Vec<(u32, Rx)>, mode: AlignmentMode) -> Self {
        let tracker = InputTracker::new(channels.len());
        let aligner = BarrierAligner::new(channels.len(), mode);
        Self {
            done: vec![false; channels.len()],
            channels,
            tracker,
            aligner,
            queued: VecDeque::new(),
            next: 0,
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn push_actions(&mut self, actions: Vec<AlignAction>) {
        for a in actions {
            self.queued.push_back(match a {
                AlignAction::Snapshot { checkpoint, .. } => GateEvent::Snapshot { checkpoint },
                AlignAction::Complete { checkpoint } => GateEvent::Complete { checkpoint },
            });
        }
    }

    /// The next event; `None` once every channel has ended and every
    /// checkpoint event was handed out.
    pub(crate) async fn next(&mut self) -> Option<GateEvent> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            if self.tracker.is_ended() {
                return None;
            }
            let deadline = self.aligner.deadline();
            // A deadline that passed while the subtask was busy counts before
            // any further input: a channel that always has data ready must not
            // keep alignment from timing out.
            if let Some(at) = deadline
                && self.now_ms() >= at
            {
                let now = self.now_ms();
                let actions = self.aligner.on_time(now);
                if !actions.is_empty() || self.aligner.deadline() != Some(at) {
                    self.push_actions(actions);
                    continue;
                }
            }
            let polled = {
                let recv = std::future::poll_fn(|cx| {
                    let n = self.channels.len();
                    for k in 0..n {
                        let i = (self.next + k) % n;
                        if self.done[i] || self.aligner.is_blocked(i) {
                            continue;
                        }
                        if let Poll::Ready(ev) = self.channels[i].1.poll_recv(cx) {
                            // Start after this channel next time, so none starves.
                            self.next = (i + 1) % n;
                            return Poll::Ready((i, ev));
                        }
                    }
                    Poll::Pending
                });
                match deadline {
                    None => Some(recv.await),
                    Some(at) => {
                        let wait = Duration::from_millis(at.saturating_sub(self.started.elapsed().as_millis() as u64));
                        tokio::time::timeout(wait, recv).await.ok()
                    }
                }
            };
            let Some((channel, event)) = polled else {
                let now = self.now_ms();
                let actions = self.aligner.on_time(now);
                self.push_actions(actions);
                continue;
            };
            match event {
                Some(Event::Data(batch)) => {
                    let record = match self.aligner.on_data(channel) {
                        DataAction::Process => None,
                        DataAction::ProcessAndRecord { checkpoint } => Some(checkpoint),
                    };
                    return Some(GateEvent::Batch { port: self.channels[channel].0, batch, record });
                }
                Some(Event::Watermark(w)) => {
                    if let InputProgress::Watermark(w) = self.tracker.on_watermark(channel, w) {
                        return Some(GateEvent::Watermark(w));
                    }
                }
                Some(Event::Barrier(n)) => {
                    let now = self.now_ms();
                    let actions = self.aligner.on_barrier(channel, n, now);
                    self.push_actions(actions);
                }
                // `None`: a producer vanished without `End` (it failed; the
                // driver reports its error). Either way this channel is done.
                Some(Event::End) | None => {
                    self.done[channel] = true;
                    self.channels[channel].1.close();
                    let actions = self.aligner.on_end(channel);
                    self.push_actions(actions);
                    if let InputProgress::Watermark(w) = self.tracker.on_end(channel) {
                        self.queued.push_back(GateEvent::Watermark(w));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    fn batch(v: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(vec![v])) as ArrayRef)]).unwrap()
    }

    /// A channel that ended (and whose sender is gone) must not starve the
    /// others: this once spun forever on the closed channel.
    #[tokio::test]
    async fn an_ended_channel_does_not_starve_the_others() {
        let (tx0, rx0) = mpsc::channel(4);
        let (tx1, rx1) = mpsc::channel(4);
        let mut gate = InputGate::new(vec![(0, rx0), (0, rx1)], AlignmentMode::Aligned);
        tx0.send(Event::End).await.unwrap();
        drop(tx0);
        let late = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx1.send(Event::Data(batch(7))).await.unwrap();
            tx1.send(Event::End).await.unwrap();
        });
        let got =
            tokio::time::timeout(std::time::Duration::from_secs(5), gate.next()).await.expect("gate must not hang");
        assert!(matches!(got, Some(GateEvent::Batch { port: 0, batch: b, record: None }) if b == batch(7)));
        assert!(gate.next().await.is_none(), "both channels ended");
        late.await.unwrap();
    }

    #[tokio::test]
    async fn watermark_is_the_minimum_over_open_channels() {
        let (tx0, rx0) = mpsc::channel(4);
        let (tx1, rx1) = mpsc::channel(4);
        let mut gate = InputGate::new(vec![(0, rx0), (1, rx1)], AlignmentMode::Aligned);
        tx0.send(Event::Watermark(10)).await.unwrap();
        tx1.send(Event::Watermark(5)).await.unwrap();
        assert!(matches!(gate.next().await, Some(GateEvent::Watermark(5))));
        tx1.send(Event::End).await.unwrap();
        assert!(matches!(gate.next().await, Some(GateEvent::Watermark(10))));
    }

    /// Aligned: after channel 0's barrier, its later batch waits until
    /// channel 1 delivers the barrier too; the snapshot comes in between.
    #[tokio::test]
    async fn aligned_barrier_holds_back_the_early_channel() {
        let (tx0, rx0) = mpsc::channel(8);
        let (tx1, rx1) = mpsc::channel(8);
        let mut gate = InputGate::new(vec![(0, rx0), (1, rx1)], AlignmentMode::Aligned);
        tx0.send(Event::Barrier(1)).await.unwrap();
        tx0.send(Event::Data(batch(2))).await.unwrap();
        tx1.send(Event::Data(batch(1))).await.unwrap();
        tx1.send(Event::Barrier(1)).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(match gate.next().await.unwrap() {
                GateEvent::Batch { batch, .. } => {
                    format!("b{}", batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0))
                }
                GateEvent::Snapshot { checkpoint } => format!("s{checkpoint}"),
                GateEvent::Complete { checkpoint } => format!("c{checkpoint}"),
                GateEvent::Watermark(w) => format!("w{w}"),
            });
        }
        assert_eq!(seen, ["b1", "s1", "c1", "b2"]);
    }

    /// Unaligned: the snapshot is taken at the first barrier; the other
    /// channel's pre-barrier batch is processed and marked for recording.
    #[tokio::test]
    async fn unaligned_barrier_records_the_other_channels_batches() {
        let (tx0, rx0) = mpsc::channel(8);
        let (tx1, rx1) = mpsc::channel(8);
        let mut gate = InputGate::new(vec![(0, rx0), (1, rx1)], AlignmentMode::Unaligned);
        tx0.send(Event::Barrier(1)).await.unwrap();
        assert!(matches!(gate.next().await, Some(GateEvent::Snapshot { checkpoint: 1 })));
        tx1.send(Event::Data(batch(1))).await.unwrap();
        assert!(matches!(gate.next().await, Some(GateEvent::Batch { port: 1, record: Some(1), .. })));
        tx1.send(Event::Barrier(1)).await.unwrap();
        assert!(matches!(gate.next().await, Some(GateEvent::Complete { checkpoint: 1 })));
    }
}
