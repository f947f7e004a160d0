//! Checkpoint barrier alignment for one consumer subtask (Chandy–Lamport, in
//! the asynchronous-barrier-snapshotting form): when the subtask snapshots,
//! which input channels it must leave unread meanwhile, and which input
//! batches are in-flight data of a checkpoint.
//!
//! Protocol, per consumer subtask with channels c₁…cₙ and checkpoint k:
//! 1. The coordinator starts k. Every source subtask of the region records its
//!    read offset and sends `Barrier(k)` on each output channel, between the
//!    data before and after that offset. Every other subtask sends `Barrier(k)`
//!    on each output channel exactly once, when it snapshots k (steps 3–5).
//!    So on every channel barriers arrive in increasing order, and `Barrier(k)`
//!    splits the channel into data the producer's snapshot k covers (before)
//!    and data it does not (after).
//! 2. *Aligned.* When cᵢ delivers `Barrier(k)` the subtask stops reading cᵢ
//!    ([`BarrierAligner::is_blocked`]): what follows on cᵢ is post-barrier
//!    data. Channels still owing `Barrier(k)` are read and processed normally:
//!    all they deliver is pre-barrier data.
//! 3. When every channel delivered `Barrier(k)` — an ended channel counts as
//!    having delivered every future barrier — the state covers exactly the
//!    pre-barrier data of every channel: [`AlignAction::Snapshot`] (`unaligned:
//!    false`; snapshot, then forward the barrier) and at once
//!    [`AlignAction::Complete`] (acknowledge to the coordinator). Every
//!    channel is read again.
//! 4. *Unaligned.* At the first `Barrier(k)` the subtask snapshots at once
//!    (`Snapshot { unaligned: true }`) and blocks nothing. The state then
//!    lacks the pre-barrier data that channels still owing `Barrier(k)` have
//!    yet to deliver; [`BarrierAligner::on_data`] marks exactly those batches
//!    [`DataAction::ProcessAndRecord`]: they are processed *and* stored with
//!    snapshot k as its in-flight data. When the last channel delivers
//!    `Barrier(k)` (or ends), `Complete` closes the in-flight set. If every
//!    channel owes nothing at the first barrier (one channel, or the others
//!    ended) the snapshot is aligned: `Snapshot { unaligned: false }`, `Complete`.
//! 5. *Aligned with timeout.* As steps 2–3, but once the alignment of k has
//!    lasted `timeout_ms` since its first barrier ([`BarrierAligner::deadline`],
//!    checked by [`BarrierAligner::on_time`] and by every later barrier), the
//!    subtask switches: `Snapshot { unaligned: true }`, every channel is
//!    unblocked, and k continues as in step 4.
//! 6. *One checkpoint at a time.* A channel delivering `Barrier(k′)`, k′ > k,
//!    while k is pending is blocked in every mode until k completes. Then the
//!    smallest such k′ becomes pending — its alignment counted from when its
//!    first barrier arrived — and steps 2–5 apply to it, possibly at once.
//! 7. A barrier not newer than the last one its channel delivered (a duplicate
//!    or a replay) is ignored, as is everything a channel delivers after its
//!    `End` and every channel index out of range. Checkpoint ids start at 1.
//!
//! Correctness. Restoring checkpoint k means: every subtask's snapshot k, the
//! in-flight data of step 4 replayed into its subtask before any new input,
//! and sources rewound to their step-1 offsets. Take a record r sent on cᵢ. If
//! it came before `Barrier(k)` it was processed before the snapshot (steps
//! 2–3, or step 4 on a channel that had delivered k), or after it on a channel
//! still owing k — and then step 4 recorded it: either way restore accounts
//! for it exactly once. If it came after `Barrier(k)` the producer's snapshot k
//! does not cover it, so after restore the producer sends it again, and the
//! consumer never processed it before its snapshot: aligned because cᵢ was
//! blocked, unaligned because the snapshot came at the first barrier, before
//! cᵢ's. Step 6 keeps one set of in-flight data open at a time, so a batch
//! belongs to at most one checkpoint's in-flight data.

/// How a subtask aligns barriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignmentMode {
    /// Block each channel from its barrier until every channel delivered it:
    /// snapshots hold no in-flight data, at the price of stalling fast
    /// channels behind slow ones (backpressure reaches their producers).
    Aligned,
    /// Snapshot at the first barrier and record the pre-barrier data of the
    /// channels still owing it: nothing stalls, snapshots grow by that data.
    Unaligned,
    /// Aligned, switching to unaligned for a checkpoint once alignment has taken this many ms.
    AlignedWithTimeout { timeout_ms: u64 },
}

/// What to do with a data batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataAction {
    /// Process it.
    Process,
    /// Process it and store it as in-flight data of `checkpoint`: it is
    /// pre-barrier data of a channel still owing that barrier, arriving after
    /// the (unaligned) snapshot was taken.
    ProcessAndRecord { checkpoint: u64 },
}

/// What the subtask must do about a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignAction {
    /// Take the snapshot of checkpoint `checkpoint` now (state, guest, sink
    /// pre-commit) and forward the barrier downstream. `unaligned`: channels
    /// still owing this barrier will have their batches recorded as in-flight
    /// until they deliver it.
    Snapshot { checkpoint: u64, unaligned: bool },
    /// Every channel delivered the barrier (or ended): the checkpoint's
    /// in-flight recording is closed; the subtask acknowledges it to the coordinator.
    Complete { checkpoint: u64 },
}

/// Aligns the checkpoint barriers of one subtask's input channels. Sans-IO:
/// the caller passes the time in and acts on what comes back.
#[derive(Debug, Clone)]
pub struct BarrierAligner {
    mode: AlignmentMode,
    /// Per channel: the newest barrier it delivered (0: none yet).
    delivered: Vec<u64>,
    /// Per channel: when it delivered that barrier, in ms.
    delivered_at_ms: Vec<u64>,
    ended: Vec<bool>,
    pending: Option<Pending>,
    /// The newest checkpoint this subtask completed (0: none).
    completed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    checkpoint: u64,
    /// When its first barrier arrived: alignment time counts from here.
    started_ms: u64,
    /// The snapshot was taken unaligned; channels owing the barrier are recorded.
    snapshotted: bool,
}

impl BarrierAligner {
    pub fn new(channels: usize, mode: AlignmentMode) -> Self {
        Self {
            mode,
            delivered: vec![0; channels],
            delivered_at_ms: vec![0; channels],
            ended: vec![false; channels],
            pending: None,
            completed: 0,
        }
    }

    pub fn channels(&self) -> usize {
        self.delivered.len()
    }

    /// Whether the caller must not read `channel` now (aligned: it delivered
    /// the pending barrier; unaligned: it delivered a barrier newer than the
    /// one pending). An ended channel is never blocked.
    pub fn is_blocked(&self, channel: usize) -> bool {
        let Some(p) = self.pending else { return false };
        match (self.delivered.get(channel), self.ended.get(channel)) {
            (Some(&d), Some(false)) => d > p.checkpoint || (d == p.checkpoint && !p.snapshotted),
            _ => false,
        }
    }

    /// What to do with a data batch that arrived on `channel`.
    pub fn on_data(&mut self, channel: usize) -> DataAction {
        match self.pending {
            Some(p) if p.snapshotted && self.owes(channel, p.checkpoint) => {
                DataAction::ProcessAndRecord { checkpoint: p.checkpoint }
            }
            _ => DataAction::Process,
        }
    }

    /// `Barrier(checkpoint)` arrived on `channel` at `now_ms`.
    pub fn on_barrier(&mut self, channel: usize, checkpoint: u64, now_ms: u64) -> Vec<AlignAction> {
        let mut actions = Vec::new();
        match (self.delivered.get(channel), self.ended.get(channel)) {
            (Some(&last), Some(false)) if checkpoint > last && checkpoint > self.completed => {}
            _ => return actions,
        }
        self.delivered[channel] = checkpoint;
        self.delivered_at_ms[channel] = now_ms;
        if self.pending.is_none() {
            self.pending = Some(Pending { checkpoint, started_ms: now_ms, snapshotted: false });
        }
        self.progress(Some(now_ms), &mut actions);
        actions
    }

    /// `End` arrived on `channel`: it counts as having delivered every future barrier.
    pub fn on_end(&mut self, channel: usize) -> Vec<AlignAction> {
        let mut actions = Vec::new();
        match self.ended.get_mut(channel) {
            Some(e) if !*e => *e = true,
            _ => return actions,
        }
        self.progress(None, &mut actions);
        actions
    }

    /// Aligned-with-timeout: call when [`deadline`](Self::deadline) passes.
    pub fn on_time(&mut self, now_ms: u64) -> Vec<AlignAction> {
        let mut actions = Vec::new();
        self.progress(Some(now_ms), &mut actions);
        actions
    }

    /// When the pending alignment switches to unaligned (aligned-with-timeout only).
    pub fn deadline(&self) -> Option<u64> {
        let AlignmentMode::AlignedWithTimeout { timeout_ms } = self.mode else { return None };
        self.pending.filter(|p| !p.snapshotted).map(|p| p.started_ms.saturating_add(timeout_ms))
    }

    /// The checkpoint being aligned or recorded, if any.
    pub fn pending(&self) -> Option<u64> {
        self.pending.map(|p| p.checkpoint)
    }

    /// Whether `channel` is open and has yet to deliver `checkpoint`.
    fn owes(&self, channel: usize, checkpoint: u64) -> bool {
        match (self.delivered.get(channel), self.ended.get(channel)) {
            (Some(&d), Some(false)) => d < checkpoint,
            _ => false,
        }
    }

    /// Steps 3–6: completes, snapshots unaligned, and promotes early barriers
    /// for as long as something changes. `now_ms` is `None` when the caller
    /// gave no time (an `End`); timeouts are then checked at the next call.
    fn progress(&mut self, now_ms: Option<u64>, actions: &mut Vec<AlignAction>) {
        while let Some(mut p) = self.pending {
            let owing = (0..self.channels()).filter(|&c| self.owes(c, p.checkpoint)).count();
            if owing == 0 {
                if !p.snapshotted {
                    actions.push(AlignAction::Snapshot { checkpoint: p.checkpoint, unaligned: false });
                }
                actions.push(AlignAction::Complete { checkpoint: p.checkpoint });
                self.completed = p.checkpoint;
                self.pending = self.next_pending();
                continue;
            }
            let switch = match self.mode {
                AlignmentMode::Aligned => false,
                AlignmentMode::Unaligned => true,
                AlignmentMode::AlignedWithTimeout { timeout_ms } => {
                    now_ms.is_some_and(|now| now >= p.started_ms.saturating_add(timeout_ms))
                }
            };
            if switch && !p.snapshotted {
                p.snapshotted = true;
                self.pending = Some(p);
                actions.push(AlignAction::Snapshot { checkpoint: p.checkpoint, unaligned: true });
            }
            return;
        }
    }

    /// Step 6: the oldest barrier an open channel delivered beyond the
    /// completed checkpoint, timed from the earliest of those arrivals.
    fn next_pending(&self) -> Option<Pending> {
        let early = || (0..self.channels()).filter(|&c| !self.ended[c] && self.delivered[c] > self.completed);
        let checkpoint = early().map(|c| self.delivered[c]).min()?;
        let started_ms = early().map(|c| self.delivered_at_ms[c]).min()?;
        Some(Pending { checkpoint, started_ms, snapshotted: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlignAction::{Complete, Snapshot};

    const MODES: [AlignmentMode; 3] =
        [AlignmentMode::Aligned, AlignmentMode::Unaligned, AlignmentMode::AlignedWithTimeout { timeout_ms: 10 }];

    #[test]
    fn one_channel_snapshots_and_completes_at_once_in_every_mode() {
        for mode in MODES {
            let mut a = BarrierAligner::new(1, mode);
            assert_eq!(a.on_data(0), DataAction::Process);
            assert_eq!(
                a.on_barrier(0, 1, 0),
                [Snapshot { checkpoint: 1, unaligned: false }, Complete { checkpoint: 1 }],
                "{mode:?}"
            );
            assert!(!a.is_blocked(0));
            assert_eq!(a.pending(), None);
            assert_eq!(a.deadline(), None);
        }
    }

    #[test]
    fn aligned_blocks_each_channel_from_its_barrier_until_all_delivered() {
        let mut a = BarrierAligner::new(3, AlignmentMode::Aligned);
        assert_eq!(a.on_barrier(1, 1, 0), []);
        assert!(a.is_blocked(1) && !a.is_blocked(0) && !a.is_blocked(2));
        assert_eq!(a.on_data(0), DataAction::Process, "pre-barrier data of an owing channel is in the snapshot");
        assert_eq!(a.on_barrier(0, 1, 5), []);
        assert!(a.is_blocked(0) && a.is_blocked(1));
        assert_eq!(a.pending(), Some(1));
        assert_eq!(a.deadline(), None, "plain aligned mode never times out");
        assert_eq!(a.on_time(1_000_000), []);
        assert_eq!(a.on_barrier(2, 1, 9), [Snapshot { checkpoint: 1, unaligned: false }, Complete { checkpoint: 1 }]);
        assert!((0..3).all(|c| !a.is_blocked(c)));
        assert_eq!(a.pending(), None);
    }

    #[test]
    fn unaligned_snapshots_at_the_first_barrier_and_records_owing_channels() {
        let mut a = BarrierAligner::new(2, AlignmentMode::Unaligned);
        assert_eq!(a.on_barrier(0, 1, 0), [Snapshot { checkpoint: 1, unaligned: true }]);
        assert!(!a.is_blocked(0) && !a.is_blocked(1));
        assert_eq!(a.on_data(0), DataAction::Process, "post-barrier data belongs to the next checkpoint");
        assert_eq!(a.on_data(1), DataAction::ProcessAndRecord { checkpoint: 1 });
        assert_eq!(a.on_barrier(1, 1, 3), [Complete { checkpoint: 1 }]);
        assert_eq!(a.on_data(1), DataAction::Process);
        assert_eq!(a.pending(), None);
    }

    #[test]
    fn ended_channels_count_as_delivered() {
        for mode in MODES {
            let mut a = BarrierAligner::new(3, mode);
            a.on_barrier(0, 1, 0);
            assert_eq!(a.on_end(1), [], "{mode:?}: channel 2 still owes the barrier");
            let last = a.on_end(2);
            assert_eq!(last.last(), Some(&Complete { checkpoint: 1 }), "{mode:?}");
            let aligned = mode != AlignmentMode::Unaligned;
            assert_eq!(last.len(), if aligned { 2 } else { 1 }, "{mode:?}: {last:?}");
            assert!(!a.is_blocked(0));
            assert!(!a.is_blocked(1), "an ended channel is never blocked");
            // A channel that ended before the barrier came owes nothing.
            assert_eq!(
                a.on_barrier(0, 2, 1),
                [Snapshot { checkpoint: 2, unaligned: false }, Complete { checkpoint: 2 }],
                "{mode:?}"
            );
        }
    }

    #[test]
    fn ending_every_channel_completes_the_pending_checkpoint() {
        let mut a = BarrierAligner::new(2, AlignmentMode::Unaligned);
        a.on_barrier(0, 4, 0);
        assert_eq!(a.on_end(1), [Complete { checkpoint: 4 }]);
        let mut a = BarrierAligner::new(2, AlignmentMode::Aligned);
        a.on_barrier(0, 4, 0);
        assert_eq!(a.on_end(0), [], "channel 1 still owes 4");
        assert_eq!(a.on_end(1), [Snapshot { checkpoint: 4, unaligned: false }, Complete { checkpoint: 4 }]);
        assert_eq!(a.on_barrier(0, 5, 0), [], "nothing after End counts");
        assert_eq!(a.pending(), None);
    }

    #[test]
    fn a_newer_barrier_waits_until_the_pending_one_completes() {
        let mut a = BarrierAligner::new(2, AlignmentMode::Unaligned);
        a.on_barrier(0, 1, 0);
        assert_eq!(a.on_barrier(0, 2, 1), [], "2 waits for 1");
        assert!(a.is_blocked(0), "channel 0 is past the pending checkpoint");
        assert_eq!(a.pending(), Some(1));
        assert_eq!(a.on_data(1), DataAction::ProcessAndRecord { checkpoint: 1 });
        assert_eq!(
            a.on_barrier(1, 1, 2),
            [Complete { checkpoint: 1 }, Snapshot { checkpoint: 2, unaligned: true }],
            "2 becomes pending with channel 0 delivered"
        );
        assert!(!a.is_blocked(0));
        assert_eq!(a.on_data(1), DataAction::ProcessAndRecord { checkpoint: 2 });
        assert_eq!(a.on_data(0), DataAction::Process);
        assert_eq!(a.on_barrier(1, 2, 3), [Complete { checkpoint: 2 }]);
    }

    #[test]
    fn barriers_that_arrived_early_on_every_channel_complete_in_order() {
        let mut a = BarrierAligner::new(2, AlignmentMode::AlignedWithTimeout { timeout_ms: 100 });
        a.on_barrier(0, 1, 0);
        a.on_time(100);
        assert_eq!(a.on_barrier(0, 2, 101), []);
        assert_eq!(a.on_barrier(1, 1, 102), [Complete { checkpoint: 1 }]);
        assert_eq!(a.pending(), Some(2));
        assert!(a.is_blocked(0), "aligned again for checkpoint 2");
        assert_eq!(a.deadline(), Some(201), "alignment of 2 counts from its first barrier");
        assert_eq!(a.on_barrier(1, 2, 103), [Snapshot { checkpoint: 2, unaligned: false }, Complete { checkpoint: 2 }]);
    }

    #[test]
    fn timeout_switches_the_pending_checkpoint_to_unaligned() {
        let mut a = BarrierAligner::new(2, AlignmentMode::AlignedWithTimeout { timeout_ms: 10 });
        assert_eq!(a.on_barrier(0, 1, 100), []);
        assert!(a.is_blocked(0));
        assert_eq!(a.deadline(), Some(110));
        assert_eq!(a.on_data(1), DataAction::Process, "still aligning: the snapshot will include it");
        assert_eq!(a.on_time(109), []);
        assert_eq!(a.on_time(110), [Snapshot { checkpoint: 1, unaligned: true }]);
        assert!(!a.is_blocked(0), "switching unblocks every channel");
        assert_eq!(a.deadline(), None);
        assert_eq!(a.on_time(500), [], "the switch happens once");
        assert_eq!(a.on_data(1), DataAction::ProcessAndRecord { checkpoint: 1 });
        assert_eq!(a.on_data(0), DataAction::Process);
        assert_eq!(a.on_barrier(1, 1, 120), [Complete { checkpoint: 1 }]);
    }

    #[test]
    fn a_late_barrier_past_the_deadline_switches_too() {
        let mut a = BarrierAligner::new(3, AlignmentMode::AlignedWithTimeout { timeout_ms: 10 });
        a.on_barrier(0, 1, 0);
        assert_eq!(a.on_barrier(1, 1, 50), [Snapshot { checkpoint: 1, unaligned: true }]);
        assert_eq!(a.on_data(2), DataAction::ProcessAndRecord { checkpoint: 1 });
    }

    #[test]
    fn alignment_within_the_timeout_stays_aligned() {
        let mut a = BarrierAligner::new(2, AlignmentMode::AlignedWithTimeout { timeout_ms: 10 });
        a.on_barrier(1, 1, 0);
        assert_eq!(a.on_barrier(0, 1, 9), [Snapshot { checkpoint: 1, unaligned: false }, Complete { checkpoint: 1 }]);
        assert_eq!(a.deadline(), None);
        assert_eq!(a.on_time(10), []);
    }

    #[test]
    fn a_promoted_checkpoint_whose_timeout_already_passed_switches_at_once() {
        let mut a = BarrierAligner::new(2, AlignmentMode::AlignedWithTimeout { timeout_ms: 5 });
        a.on_barrier(0, 1, 0);
        assert_eq!(a.on_time(10), [Snapshot { checkpoint: 1, unaligned: true }]);
        a.on_barrier(0, 2, 12);
        assert_eq!(
            a.on_barrier(1, 1, 20),
            [Complete { checkpoint: 1 }, Snapshot { checkpoint: 2, unaligned: true }],
            "2 has been aligning since 12, past its 5 ms"
        );
    }

    #[test]
    fn zero_timeout_behaves_as_unaligned() {
        let mut a = BarrierAligner::new(2, AlignmentMode::AlignedWithTimeout { timeout_ms: 0 });
        assert_eq!(a.on_barrier(0, 1, 7), [Snapshot { checkpoint: 1, unaligned: true }]);
        assert!(!a.is_blocked(0));
    }

    #[test]
    fn duplicate_older_and_out_of_range_barriers_are_ignored() {
        let mut a = BarrierAligner::new(2, AlignmentMode::Aligned);
        assert_eq!(a.on_barrier(0, 0, 0), [], "ids start at 1");
        assert_eq!(a.pending(), None);
        a.on_barrier(0, 3, 0);
        assert_eq!(a.on_barrier(0, 3, 1), [], "duplicate");
        assert_eq!(a.on_barrier(0, 2, 1), [], "older");
        assert_eq!(a.on_barrier(9, 3, 1), [], "no such channel");
        assert_eq!(a.on_end(9), []);
        assert!(!a.is_blocked(9));
        assert_eq!(a.on_data(9), DataAction::Process);
        assert_eq!(a.pending(), Some(3));
        assert_eq!(a.on_barrier(1, 3, 2).len(), 2);
        assert_eq!(a.on_barrier(1, 3, 3), [], "a replayed barrier after completion");
        assert_eq!(a.on_barrier(1, 2, 3), []);
        assert_eq!(a.on_end(1).len(), 0);
        assert_eq!(a.on_end(1), [], "ending twice");
        assert_eq!(a.pending(), None);
    }
}
