//! The cluster's messages, carried on the transport's control streams: typed,
//! versioned (the first message of every connection names [`CLUSTER_PROTOCOL`]),
//! unknown fields and kinds refused.
//!
//! Who says what:
//! - a worker opens with [`Hello::Worker`], then sends [`WorkerMessage`]s and
//!   receives [`CoordinatorMessage`]s;
//! - a client (the `flumen` command) opens with [`Hello::Client`] carrying one
//!   [`Request`] and receives one [`Response`].

use serde::{Deserialize, Serialize};

pub use flumen_spec::ResourceNeeds;

/// The protocol version of this build's cluster messages.
pub const CLUSTER_PROTOCOL: u32 = 3;

/// What a worker has to offer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    pub cores: u32,
    pub memory_mb: u64,
    pub gpu: u32,
}

/// Capacities add up field by field, saturating (a need can never wrap to a small one).
impl std::iter::Sum for Capacity {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |t, c| Self {
            cores: t.cores.saturating_add(c.cores),
            memory_mb: t.memory_mb.saturating_add(c.memory_mb),
            gpu: t.gpu.saturating_add(c.gpu),
        })
    }
}

/// The first message on a connection to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hello", rename_all = "snake_case", deny_unknown_fields)]
pub enum Hello {
    /// A worker joins (or rejoins) with what it offers and the tasks it still runs.
    Worker {
        protocol: u32,
        capacity: Capacity,
        running: Vec<TaskId>,
        /// Where its Prometheus endpoint listens, if it serves one.
        #[serde(default)]
        metrics: Option<String>,
        /// Where other workers reach it for the data plane of split regions
        /// (its QUIC endpoint); without one it runs no part of a split region.
        #[serde(default)]
        mesh: Option<String>,
    },
    /// A client asks one thing.
    Client { protocol: u32, request: Request },
}

/// One attempt at running some regions of a job on one worker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskId {
    pub job: String,
    /// The job's attempt generation when this task was placed; a task of an
    /// older generation of the same regions is stale and refused.
    pub epoch: u64,
}

/// What the coordinator tells a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CoordinatorMessage {
    /// The worker is in; it heartbeats every `heartbeat_ms` and holds a lease of `lease_ms`
    /// from each heartbeat it sent that was acknowledged.
    Welcome { coordinator_epoch: u64, heartbeat_ms: u64, lease_ms: u64 },
    /// Heartbeat `seq` arrived in time: the worker's lease runs from when it sent it.
    Ack { seq: u64 },
    /// Run `regions` of the job at `spec` (a path every worker reads, like its checkpoints).
    /// `regions` empty: the whole job (a job without checkpoints). With `split`: the one
    /// region named, only this worker's part of it.
    Run {
        task: TaskId,
        spec: String,
        regions: Vec<String>,
        resume: bool,
        #[serde(default)]
        split: Option<PartAssignment>,
    },
    /// Take a checkpoint, commit it and stop the task (it can be resumed).
    Stop { task: TaskId },
    /// Abort the task: nothing more is committed.
    Cancel { task: TaskId },
    /// The worker lost its lease (or another worker holds its tasks now): it must
    /// stop every task without committing anything more, and rejoin.
    Fenced { reason: String },
    /// Make a package ready: pull it from `source` into the worker's store
    /// (unless there), verify its digest and signature against the worker's
    /// trust policy, and compile it. Answered by [`WorkerMessage::Loaded`].
    Load { request: u64, package: PackageId, source: String },
    /// Upgrade `operator` of the task's job live to the package `reference`
    /// (`name@sha256:…`, in the worker's store). Answered by [`WorkerMessage::Upgraded`].
    Upgrade {
        request: u64,
        task: TaskId,
        operator: String,
        reference: String,
        /// The new config as JSON text (`None`: the spec's).
        config: Option<String>,
        health_batches: u32,
    },
}

/// A package by name, version and package digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageId {
    pub name: String,
    pub version: String,
    pub digest: String,
}

/// How a live upgrade ended, as the cluster reports it (times in microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpgradeReport {
    Applied { checkpoint: u64, swap_us: u64, confirmed_us: u64 },
    RolledBack { checkpoint: Option<u64>, reason: String },
}

/// Which part of a split region a worker runs, and where every part runs
/// (`peers[i]` runs part `i`; part 0 leads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartAssignment {
    pub part: u32,
    pub peers: Vec<PartPeer>,
}

/// Where a part of a split region runs: its worker and that worker's mesh address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartPeer {
    pub worker: String,
    pub addr: String,
}

/// What a worker tells the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkerMessage {
    Heartbeat {
        seq: u64,
        running: Vec<TaskId>,
    },
    /// A task ended.
    Ended {
        task: TaskId,
        outcome: TaskOutcome,
    },
    /// The answer to [`CoordinatorMessage::Load`]: what was done, or why not.
    Loaded {
        request: u64,
        result: Result<String, String>,
    },
    /// The answer to [`CoordinatorMessage::Upgrade`]: the outcome, or why it was refused.
    Upgraded {
        request: u64,
        result: Result<UpgradeReport, String>,
    },
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskOutcome {
    Finished {
        rows_out: u64,
    },
    /// Stopped after a last checkpoint.
    Stopped,
    Cancelled,
    /// The worker lost its lease while running it; nothing more was committed.
    Fenced {
        reason: String,
    },
    Failed {
        error: String,
    },
    /// A part of a split region lost another part (its worker died, the
    /// network broke): the region must be placed again, every part together.
    Lost {
        reason: String,
    },
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Run the job at `spec` (absolute; every worker reads it). `resume`:
    /// continue from its checkpoints (refused without, when it has some).
    Submit {
        spec: String,
        resume: bool,
    },
    Jobs,
    Status {
        job: String,
    },
    Cancel {
        job: String,
    },
    Stop {
        job: String,
    },
    Workers,
    /// Make a package ready on every live worker (`flumen plugin load`).
    Load {
        package: PackageId,
        /// Where workers pull it from when their store lacks it.
        source: String,
    },
    /// Upgrade one operator of a running job live (`flumen job upgrade`).
    Upgrade {
        job: String,
        operator: String,
        /// The package, pinned: `name@sha256:…`.
        reference: String,
        config: Option<String>,
        health_batches: u32,
    },
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Submitted {
        job: String,
    },
    Jobs {
        jobs: Vec<JobView>,
    },
    Job {
        job: JobView,
    },
    Workers {
        workers: Vec<WorkerView>,
    },
    Done {
        message: String,
    },
    Refused {
        message: String,
    },
    /// Each live worker's answer to a [`Request::Load`].
    Loaded {
        workers: Vec<(String, Result<String, String>)>,
    },
    Upgraded {
        worker: String,
        report: UpgradeReport,
    },
}

/// A job as `flumen jobs` and `flumen status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobView {
    pub job: String,
    pub spec: String,
    pub state: JobState,
    pub epoch: u64,
    /// Each region and the worker running it (`None`: waiting for one).
    pub placement: Vec<(String, Option<String>)>,
    /// Placements after a worker was lost.
    pub failovers: u64,
    /// Why the job failed, or why it waits.
    pub note: Option<String>,
    /// Rows the sinks of its finished tasks wrote (every part of a split region counted).
    #[serde(default)]
    pub rows_out: u64,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Stopping,
    Finished,
    Stopped,
    Cancelled,
    Failed,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Stopped | Self::Cancelled | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Finished => "finished",
            Self::Stopped => "stopped",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// A worker as `flumen cluster workers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerView {
    pub worker: String,
    pub capacity: Capacity,
    pub free: Capacity,
    pub tasks: Vec<TaskId>,
    pub alive: bool,
    pub metrics: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_refuse_unknown_fields_and_kinds() {
        let ok: CoordinatorMessage = serde_json::from_str(r#"{"type":"ack","seq":3}"#).expect("parses");
        assert_eq!(ok, CoordinatorMessage::Ack { seq: 3 });
        assert!(serde_json::from_str::<CoordinatorMessage>(r#"{"type":"ack","seq":3,"x":1}"#).is_err());
        assert!(serde_json::from_str::<CoordinatorMessage>(r#"{"type":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<WorkerMessage>(r#"{"type":"heartbeat","seq":-1,"running":[]}"#).is_err());
    }
}
