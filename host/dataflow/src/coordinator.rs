//! The checkpoint coordinator of one pipelined region: hands out checkpoint
//! ids, collects the participants' acknowledgements, times checkpoints out,
//! and says when a checkpoint is complete and when its sinks may commit.
//!
//! Protocol, for checkpoint k of a region (see `barrier.rs` for what happens
//! between subtasks):
//! 1. [`Coordinator::trigger`] returns k, greater than every id handed out
//!    before and than the checkpoint the region was restored from. The caller
//!    injects `Barrier(k)` at every source subtask of the region.
//! 2. Each participant (every subtask of the region) snapshots k when its
//!    barrier aligner says so and acknowledges with a payload (what it wrote:
//!    state files, in-flight data, sink transactions) — [`Coordinator::ack`] —
//!    or declines ([`Coordinator::decline`]), which aborts k.
//! 3. When every participant acknowledged, `ack` returns
//!    [`CoordAction::Complete`] with every payload. The caller durably writes
//!    k's manifest (the payloads), then calls [`Coordinator::persisted`].
//! 4. `persisted` makes k the last completed checkpoint, drops the older ones
//!    still pending (k subsumes them) and returns [`CoordAction::Commit`]: the
//!    caller commits every sink transaction pre-committed up to k. Commits are
//!    idempotent, so a crash during them is repaired by recovery re-committing
//!    the transactions k's manifest lists.
//! 5. [`Coordinator::tick`] aborts checkpoints still collecting
//!    acknowledgements `timeout_ms` after they were triggered. A checkpoint
//!    waiting for its manifest is not timed out: the write is the caller's.
//!
//! Correctness: a sink commits only transactions listed in a manifest that is
//! durable (step 4 follows step 3's write), so after a crash the region
//! restores from a manifest that covers everything committed, and nothing a
//! restore replays was committed before. Aborting never undoes anything: the
//! transactions a sink pre-committed for an aborted checkpoint are listed
//! again by its next snapshot and commit with the next completed checkpoint.

use std::collections::BTreeMap;

/// How a region checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// A checkpoint still collecting acknowledgements this long after its
    /// trigger is aborted, so a stuck participant cannot hold checkpoints up forever.
    pub timeout_ms: u64,
    /// Checkpoints pending at once (collecting or awaiting their manifest);
    /// 0 counts as 1. Each one holds snapshots in storage until it completes.
    pub max_concurrent: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self { timeout_ms: 10 * 60 * 1000, max_concurrent: 1 }
    }
}

/// What the caller must do after a coordinator call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordAction<P> {
    /// Nothing yet.
    None,
    /// The call referred to an unknown participant, or to a checkpoint that
    /// is unknown, finished, or no longer accepting it: nothing changed.
    Ignored,
    /// Every participant acknowledged `checkpoint` (payloads in participant
    /// name order): durably write its manifest, then call [`Coordinator::persisted`].
    Complete { checkpoint: u64, acks: Vec<(String, P)> },
    /// `checkpoint` will not complete; its payloads were dropped.
    Aborted { checkpoint: u64, reason: String },
    /// Commit the sinks' transactions pre-committed up to `checkpoint`.
    Commit { checkpoint: u64 },
}

/// The coordinator of one pipelined region. Sans-IO: the caller passes the
/// time in, writes manifests and talks to subtasks.
#[derive(Debug)]
pub struct Coordinator<P> {
    /// Sorted, without duplicates.
    participants: Vec<String>,
    config: CoordinatorConfig,
    last_completed: u64,
    last_triggered: u64,
    pending: BTreeMap<u64, Checkpoint<P>>,
}

#[derive(Debug)]
struct Checkpoint<P> {
    triggered_ms: u64,
    phase: Phase<P>,
}

#[derive(Debug)]
enum Phase<P> {
    /// Per participant (same order as `participants`) its payload, once it acked.
    Collecting { acks: Vec<Option<P>>, acked: usize },
    /// Complete: waiting for the caller's `persisted`.
    Persisting,
}

impl<P> Coordinator<P> {
    /// `last_completed`: the checkpoint restored from (ids continue after it), or 0 for a fresh start.
    pub fn new(mut participants: Vec<String>, config: CoordinatorConfig, last_completed: u64) -> Self {
        participants.sort();
        participants.dedup();
        Self { participants, config, last_completed, last_triggered: last_completed, pending: BTreeMap::new() }
    }

    /// The participants, sorted by name.
    pub fn participants(&self) -> &[String] {
        &self.participants
    }

    /// Starts a new checkpoint if fewer than `max_concurrent` are pending:
    /// returns its id (strictly increasing, greater than `last_completed` and
    /// than every id handed out before). The caller then injects barrier `id`
    /// at every source subtask of the region.
    pub fn trigger(&mut self, now_ms: u64) -> Option<u64> {
        if self.pending.len() >= self.config.max_concurrent.max(1) {
            return None;
        }
        self.last_triggered += 1;
        let acks = self.participants.iter().map(|_| None).collect();
        self.pending.insert(
            self.last_triggered,
            Checkpoint { triggered_ms: now_ms, phase: Phase::Collecting { acks, acked: 0 } },
        );
        Some(self.last_triggered)
    }

    /// `participant` acknowledged `checkpoint` with `payload`. An unknown
    /// participant, an unknown, aborted or already complete checkpoint, or a
    /// second ack of the same participant (the first one stays) is `Ignored`.
    /// Returns `Complete` once every participant acked.
    pub fn ack(&mut self, checkpoint: u64, participant: &str, payload: P) -> CoordAction<P> {
        let Some(i) = self.index_of(participant) else { return CoordAction::Ignored };
        let Some(cp) = self.pending.get_mut(&checkpoint) else { return CoordAction::Ignored };
        let Phase::Collecting { acks, acked } = &mut cp.phase else { return CoordAction::Ignored };
        if acks[i].is_some() {
            return CoordAction::Ignored;
        }
        acks[i] = Some(payload);
        *acked += 1;
        if *acked < self.participants.len() {
            return CoordAction::None;
        }
        let Phase::Collecting { acks, .. } = std::mem::replace(&mut cp.phase, Phase::Persisting) else {
            return CoordAction::Ignored;
        };
        let acks = self.participants.iter().cloned().zip(acks).filter_map(|(name, p)| Some((name, p?))).collect();
        CoordAction::Complete { checkpoint, acks }
    }

    /// `participant` could not snapshot `checkpoint`: abort it (its acks are
    /// dropped). Ignored like [`ack`](Self::ack), and for a checkpoint that is
    /// already complete.
    pub fn decline(&mut self, checkpoint: u64, participant: &str, reason: String) -> CoordAction<P> {
        if self.index_of(participant).is_none() {
            return CoordAction::Ignored;
        }
        match self.pending.get(&checkpoint) {
            Some(Checkpoint { phase: Phase::Collecting { .. }, .. }) => {
                self.pending.remove(&checkpoint);
                CoordAction::Aborted { checkpoint, reason: format!("{participant} declined: {reason}") }
            }
            _ => CoordAction::Ignored,
        }
    }

    /// Aborts the checkpoints still collecting acknowledgements `timeout_ms`
    /// after their trigger. (With no participants at all, a checkpoint
    /// completes here, there being no ack to complete it.)
    pub fn tick(&mut self, now_ms: u64) -> Vec<CoordAction<P>> {
        let mut actions = Vec::new();
        let collecting: Vec<(u64, u64)> = self
            .pending
            .iter()
            .filter(|(_, cp)| matches!(cp.phase, Phase::Collecting { .. }))
            .map(|(&id, cp)| (id, cp.triggered_ms))
            .collect();
        for (id, triggered_ms) in collecting {
            if self.participants.is_empty() {
                if let Some(cp) = self.pending.get_mut(&id) {
                    cp.phase = Phase::Persisting;
                }
                actions.push(CoordAction::Complete { checkpoint: id, acks: Vec::new() });
            } else if now_ms.saturating_sub(triggered_ms) >= self.config.timeout_ms {
                self.pending.remove(&id);
                let reason = format!("timed out after {} ms", self.config.timeout_ms);
                actions.push(CoordAction::Aborted { checkpoint: id, reason });
            }
        }
        actions
    }

    /// The manifest of `checkpoint` is durable: it becomes `last_completed`,
    /// older pending checkpoints are dropped (subsumed), and `Commit` tells
    /// the caller to commit the sinks' transactions up to it. `Ignored` unless
    /// `checkpoint` is complete and newer than `last_completed`.
    pub fn persisted(&mut self, checkpoint: u64) -> CoordAction<P> {
        match self.pending.get(&checkpoint) {
            Some(Checkpoint { phase: Phase::Persisting, .. }) if checkpoint > self.last_completed => {}
            _ => return CoordAction::Ignored,
        }
        self.last_completed = checkpoint;
        self.pending.retain(|&id, _| id > checkpoint);
        CoordAction::Commit { checkpoint }
    }

    pub fn last_completed(&self) -> u64 {
        self.last_completed
    }

    /// Checkpoints triggered and neither aborted nor persisted, oldest first.
    pub fn pending(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    fn index_of(&self, participant: &str) -> Option<usize> {
        self.participants.binary_search_by(|p| p.as_str().cmp(participant)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator(timeout_ms: u64, max_concurrent: usize, last_completed: u64) -> Coordinator<u32> {
        let names = ["sink[0]", "count[1]", "count[0]", "src[0]"].map(String::from).to_vec();
        Coordinator::new(names, CoordinatorConfig { timeout_ms, max_concurrent }, last_completed)
    }

    fn ack_all(c: &mut Coordinator<u32>, checkpoint: u64) -> CoordAction<u32> {
        let mut last = CoordAction::None;
        for p in c.participants().to_vec() {
            last = c.ack(checkpoint, &p, checkpoint as u32);
        }
        last
    }

    #[test]
    fn completes_once_everyone_acked_and_commits_once_persisted() {
        let mut c = coordinator(100, 1, 0);
        assert_eq!(c.trigger(0), Some(1));
        assert_eq!(c.ack(1, "src[0]", 10), CoordAction::None);
        assert_eq!(c.ack(1, "src[0]", 11), CoordAction::Ignored, "a duplicate ack is ignored");
        assert_eq!(c.ack(1, "count[0]", 20), CoordAction::None);
        assert_eq!(c.ack(1, "count[1]", 21), CoordAction::None);
        let acks = ["count[0]", "count[1]", "sink[0]", "src[0]"].iter().map(|s| s.to_string()).zip([20, 21, 30, 10]);
        assert_eq!(c.ack(1, "sink[0]", 30), CoordAction::Complete { checkpoint: 1, acks: acks.collect() });
        assert_eq!(c.pending(), [1], "pending until its manifest is durable");
        assert_eq!(c.trigger(1), None, "max_concurrent 1");
        assert_eq!(c.ack(1, "sink[0]", 31), CoordAction::Ignored, "already complete");
        assert_eq!(c.decline(1, "sink[0]", "late".into()), CoordAction::Ignored, "too late to decline");
        assert_eq!(c.tick(1_000), [], "awaiting the manifest is not timed out");
        assert_eq!(c.persisted(1), CoordAction::Commit { checkpoint: 1 });
        assert_eq!(c.last_completed(), 1);
        assert_eq!(c.pending(), Vec::<u64>::new());
        assert_eq!(c.persisted(1), CoordAction::Ignored, "persisting twice");
        assert_eq!(c.trigger(2), Some(2));
    }

    #[test]
    fn unknown_participants_and_checkpoints_are_ignored() {
        let mut c = coordinator(100, 1, 0);
        assert_eq!(c.ack(1, "src[0]", 1), CoordAction::Ignored, "not triggered yet");
        c.trigger(0);
        assert_eq!(c.ack(1, "nobody", 1), CoordAction::Ignored);
        assert_eq!(c.decline(1, "nobody", "x".into()), CoordAction::Ignored);
        assert_eq!(c.ack(7, "src[0]", 1), CoordAction::Ignored);
        assert_eq!(c.decline(7, "src[0]", "x".into()), CoordAction::Ignored);
        assert_eq!(c.persisted(1), CoordAction::Ignored, "not complete");
        assert_eq!(c.persisted(9), CoordAction::Ignored);
        assert_eq!(c.pending(), [1]);
    }

    #[test]
    fn decline_aborts_and_drops_the_acks() {
        let mut c = coordinator(100, 1, 0);
        c.trigger(0);
        c.ack(1, "src[0]", 1);
        let aborted = c.decline(1, "count[1]", "disk full".into());
        assert_eq!(aborted, CoordAction::Aborted { checkpoint: 1, reason: "count[1] declined: disk full".into() });
        assert_eq!(c.ack(1, "count[0]", 1), CoordAction::Ignored);
        assert_eq!(c.pending(), Vec::<u64>::new());
        assert_eq!(c.last_completed(), 0);
        assert_eq!(c.trigger(5), Some(2), "ids never repeat");
        assert!(matches!(ack_all(&mut c, 2), CoordAction::Complete { checkpoint: 2, .. }));
    }

    #[test]
    fn collecting_checkpoints_time_out() {
        let mut c = coordinator(100, 2, 0);
        c.trigger(0);
        c.trigger(50);
        assert_eq!(c.tick(99), []);
        let reason = "timed out after 100 ms".to_string();
        assert_eq!(c.tick(100), [CoordAction::Aborted { checkpoint: 1, reason: reason.clone() }]);
        assert_eq!(c.ack(1, "src[0]", 1), CoordAction::Ignored);
        assert_eq!(c.tick(150), [CoordAction::Aborted { checkpoint: 2, reason }]);
        assert_eq!(c.trigger(150), Some(3));
    }

    #[test]
    fn persisting_a_checkpoint_subsumes_older_pending_ones() {
        let mut c = coordinator(1_000, 3, 0);
        assert_eq!((c.trigger(0), c.trigger(1), c.trigger(2), c.trigger(3)), (Some(1), Some(2), Some(3), None));
        assert!(matches!(ack_all(&mut c, 2), CoordAction::Complete { checkpoint: 2, .. }));
        assert_eq!(c.persisted(2), CoordAction::Commit { checkpoint: 2 });
        assert_eq!(c.pending(), [3], "1 is subsumed by 2");
        assert_eq!(c.ack(1, "src[0]", 1), CoordAction::Ignored);
        assert!(matches!(ack_all(&mut c, 3), CoordAction::Complete { checkpoint: 3, .. }));
        assert_eq!(c.persisted(3), CoordAction::Commit { checkpoint: 3 });
    }

    #[test]
    fn an_older_complete_checkpoint_cannot_be_persisted_after_a_newer_one() {
        let mut c = coordinator(1_000, 2, 0);
        c.trigger(0);
        c.trigger(0);
        ack_all(&mut c, 1);
        ack_all(&mut c, 2);
        assert_eq!(c.persisted(2), CoordAction::Commit { checkpoint: 2 });
        assert_eq!(c.persisted(1), CoordAction::Ignored);
        assert_eq!(c.last_completed(), 2);
    }

    #[test]
    fn ids_continue_after_the_restored_checkpoint() {
        let mut c = coordinator(100, 1, 7);
        assert_eq!(c.last_completed(), 7);
        assert_eq!(c.ack(7, "src[0]", 1), CoordAction::Ignored);
        assert_eq!(c.trigger(0), Some(8));
        assert_eq!(c.persisted(7), CoordAction::Ignored);
    }

    #[test]
    fn zero_max_concurrent_counts_as_one_and_duplicate_names_as_one() {
        let names = ["a", "a", "b"].map(String::from).to_vec();
        let mut c: Coordinator<()> =
            Coordinator::new(names, CoordinatorConfig { timeout_ms: 10, max_concurrent: 0 }, 0);
        assert_eq!(c.participants(), ["a", "b"]);
        assert_eq!(c.trigger(0), Some(1));
        assert_eq!(c.trigger(0), None);
        assert_eq!(c.ack(1, "a", ()), CoordAction::None);
        assert!(matches!(c.ack(1, "b", ()), CoordAction::Complete { .. }));
    }

    #[test]
    fn without_participants_a_checkpoint_completes_at_the_next_tick() {
        let mut c: Coordinator<()> = Coordinator::new(Vec::new(), CoordinatorConfig::default(), 0);
        assert_eq!(c.trigger(0), Some(1));
        assert_eq!(c.tick(0), [CoordAction::Complete { checkpoint: 1, acks: Vec::new() }]);
        assert_eq!(c.tick(1), []);
        assert_eq!(c.persisted(1), CoordAction::Commit { checkpoint: 1 });
    }
}
