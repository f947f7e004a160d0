//! A region shared by several processes ("parts"): which subtasks each part
//! runs, the links between parts (implemented elsewhere: the cluster's QUIC
//! mesh), and the messages by which the leading part drives every part's
//! attempts in lockstep.
//!
//! Protocol (part 0 leads and hosts the region's checkpoint coordinator):
//! 1. The leader chooses what an attempt restores (its own decision, as a
//!    region run alone would make it) and sends `Start { attempt, restore }`;
//!    every part then wires its channels for that attempt (a channel whose
//!    ends are in different parts is a link channel keyed by attempt and plan
//!    channel) and starts its subtasks.
//! 2. The leader injects barriers into its sources and sends `Inject` to the
//!    others; every part forwards its subtasks' acknowledgements (`Ack`,
//!    `Done`) to the leader, then `TasksEnded` once all its subtasks ended.
//!    Only the leader writes manifests and publishes sinks' transactions; it
//!    tells the others what it published (`Committed`).
//! 3. A failure anywhere fails the attempt everywhere: a part reports
//!    `Failed`; the leader sends `Abort`, waits for every part's `Idle`
//!    (nothing of the old attempt runs any more), then restarts per
//!    `[restart]` from step 1, or ends every part with `End`.
//! 4. A lost link (a part's process died, the network broke) ends the run of
//!    the part that sees it with [`EngineError::PartLost`]: no part restarts
//!    on its own; whoever placed the parts starts them again together.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow_array::RecordBatch;
use flumen_dataflow::Event;
use flumen_state::StateFile;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::EngineError;
use crate::meta::ParticipantMeta;

/// What a link's operations return: the error is a reason to report.
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The sending end of one channel to another part. `Event::End` ends it.
pub trait RemoteSender: Send {
    fn send(&mut self, event: Event<RecordBatch>) -> LinkFuture<'_, ()>;
}

/// The receiving end of one channel from another part: events in the order
/// sent, `Event::End` last. A channel that breaks before its end is an error.
pub trait RemoteReceiver: Send {
    fn recv(&mut self) -> LinkFuture<'_, Event<RecordBatch>>;
}

/// How this part reaches the other parts of its region.
pub trait PartLink: Send + Sync + fmt::Debug {
    /// Opens channel `channel` to part `to`.
    fn open(&self, to: u32, channel: u64) -> LinkFuture<'_, Box<dyn RemoteSender>>;
    /// The channel `channel` part `from` opens to this part (waits for it).
    fn accept(&self, from: u32, channel: u64) -> LinkFuture<'_, Box<dyn RemoteReceiver>>;
    /// Sends a control message to part `to`, in order with the earlier ones.
    fn send(&self, to: u32, message: String) -> LinkFuture<'_, ()>;
    /// The next control message from any part, with its sender.
    fn recv(&self) -> LinkFuture<'_, (u32, String)>;
}

/// A region run by `parts` processes: subtask `i` of every node runs in part
/// `i % parts`; this process is part `part`. Part 0 leads.
#[derive(Clone, Debug)]
pub struct Split {
    pub parts: u32,
    pub part: u32,
    pub link: Arc<dyn PartLink>,
}

impl Split {
    /// The part that runs subtask `subtask` of any node.
    pub fn part_of(&self, subtask: u32) -> u32 {
        subtask % self.parts.max(1)
    }

    /// Whether this part runs subtask `subtask`.
    pub fn owns(&self, subtask: u32) -> bool {
        self.part_of(subtask) == self.part
    }

    /// Whether this part leads (hosts the checkpoint coordinator and commits).
    pub fn leads(&self) -> bool {
        self.part == 0
    }

    /// The parts other than this one.
    pub(crate) fn others(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.parts).filter(move |p| *p != self.part)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.parts < 2 || self.part >= self.parts {
            return Err(format!(
                "part {} of {} parts: a split needs at least 2 parts and a part below that",
                self.part, self.parts
            ));
        }
        Ok(())
    }

    /// Sends `msg` to part `to`; a failure to send is the link's loss.
    pub(crate) async fn send(&self, to: u32, msg: &PartMsg) -> Result<(), EngineError> {
        let text = serde_json::to_string(msg).map_err(|e| EngineError::Internal(format!("a part message: {e}")))?;
        self.link.send(to, text).await.map_err(|reason| EngineError::PartLost { part: to, reason })
    }
}

/// The key of channel `channel` (its index in the physical plan) in attempt `attempt`.
pub(crate) fn channel_key(attempt: u64, channel: usize) -> u64 {
    (attempt << 32) | (channel as u64 & 0xffff_ffff)
}

/// How a region's run ended, as the leader tells the other parts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum PartEnd {
    Finished,
    Stopped(u64),
    Failed(String),
    /// The leader lost another part or was fenced: every part stops as lost, to be placed
    /// again together (not a failure of the job).
    Lost(String),
}

/// The messages between the parts of a region.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum PartMsg {
    // Leader to the others.
    /// Start attempt `attempt`, restoring checkpoint `restore` (none: from nothing).
    Start {
        attempt: u64,
        restore: Option<u64>,
    },
    /// Inject barrier `checkpoint` into your sources.
    Inject {
        attempt: u64,
        checkpoint: u64,
    },
    /// Checkpoint `checkpoint`'s transactions are published.
    Committed {
        attempt: u64,
        checkpoint: u64,
    },
    /// Stop attempt `attempt` (a part failed); answer `Idle` once nothing of it runs.
    Abort {
        attempt: u64,
    },
    /// The run is over.
    End {
        outcome: PartEnd,
    },
    // The others to the leader.
    Ack {
        attempt: u64,
        checkpoint: u64,
        participant: String,
        files: Vec<StateFile>,
        meta: ParticipantMeta,
    },
    Done {
        attempt: u64,
        participant: String,
        files: Vec<StateFile>,
        meta: ParticipantMeta,
    },
    /// Every subtask of this part ended (after its last `Ack`/`Done`).
    TasksEnded {
        attempt: u64,
    },
    /// This part's attempt failed.
    Failed {
        attempt: u64,
        reason: String,
    },
    /// Nothing of attempt `attempt` runs here any more.
    Idle {
        attempt: u64,
    },
}

/// A control message as the region's supervisor receives it.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "a queue of messages: nearly every item is a `Msg`")]
pub(crate) enum Incoming {
    Msg(u32, PartMsg),
    /// The link broke, or a part sent something that is not a message.
    Lost(u32, String),
}

/// Reads the link's control messages into a queue; the queue ends with
/// `Lost` when the link fails or a part sends what does not parse.
pub(crate) fn pump(link: Arc<dyn PartLink>) -> (mpsc::UnboundedReceiver<Incoming>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(async move {
        loop {
            match link.recv().await {
                Ok((from, text)) => match serde_json::from_str::<PartMsg>(&text) {
                    Ok(msg) => {
                        if tx.send(Incoming::Msg(from, msg)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Incoming::Lost(from, format!("part {from} sent a message that does not parse: {e}")));
                        return;
                    }
                },
                Err(reason) => {
                    let _ = tx.send(Incoming::Lost(u32::MAX, reason));
                    return;
                }
            }
        }
    });
    (rx, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtasks_are_dealt_round_robin_and_keys_keep_attempts_apart() {
        #[derive(Debug)]
        struct NoLink;
        impl PartLink for NoLink {
            fn open(&self, _: u32, _: u64) -> LinkFuture<'_, Box<dyn RemoteSender>> {
                Box::pin(async { Err("none".into()) })
            }
            fn accept(&self, _: u32, _: u64) -> LinkFuture<'_, Box<dyn RemoteReceiver>> {
                Box::pin(async { Err("none".into()) })
            }
            fn send(&self, _: u32, _: String) -> LinkFuture<'_, ()> {
                Box::pin(async { Err("none".into()) })
            }
            fn recv(&self) -> LinkFuture<'_, (u32, String)> {
                Box::pin(async { Err("none".into()) })
            }
        }
        let split = Split { parts: 3, part: 1, link: Arc::new(NoLink) };
        assert!(split.check().is_ok());
        assert_eq!((0..7).filter(|i| split.owns(*i)).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(split.others().collect::<Vec<_>>(), vec![0, 2]);
        assert!(!split.leads());
        assert!(Split { parts: 1, part: 0, link: Arc::new(NoLink) }.check().is_err());
        assert!(Split { parts: 2, part: 2, link: Arc::new(NoLink) }.check().is_err());
        assert_ne!(channel_key(1, 5), channel_key(2, 5));
        assert_ne!(channel_key(1, 5), channel_key(1, 6));
        let msg = PartMsg::End { outcome: PartEnd::Stopped(7) };
        let back: PartMsg = serde_json::from_slice(&serde_json::to_vec(&msg).expect("encodes")).expect("decodes");
        assert!(matches!(back, PartMsg::End { outcome: PartEnd::Stopped(7) }));
        assert!(serde_json::from_slice::<PartMsg>(br#"{"start":{"attempt":1,"restore":null,"x":1}}"#).is_err());
    }
}
