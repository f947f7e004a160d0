//! Vocabulary shared by every Flumen host crate: ids, limits and failure policies.
//!
//! Nothing here performs I/O or names a heavy dependency, so every other crate
//! (including the sans-IO `dataflow` core) can depend on it.

use std::fmt;

pub mod blob;
pub mod durable;
mod host_memory;
pub mod inference;
mod state;

pub use blob::{BlobBackend, BlobError, BlobInfo, BlobPin, BlobRef, Digest, PinHolder};
pub use host_memory::{HostMemoryBudget, HostMemoryCharge, HostMemoryExceeded};
use serde::{Deserialize, Serialize};
pub use state::{Entries, STATE_BATCH_MAX, StateBackend, StateFault};

/// The id of a node (source, operator or sink) in a job spec.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One parallel instance of a node: `(node, subtask index)`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct SubtaskId {
    pub node: NodeId,
    pub index: u32,
}

impl fmt::Display for SubtaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.node, self.index)
    }
}

/// Per-instance limits of an operator. Every quantity a guest controls is bounded here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorLimits {
    /// Linear memory an instance may grow to, in MiB, at most
    /// [`MEMORY_MB_MAX`] (a 32-bit linear memory's 4 GiB). Stops a guest's
    /// memory bomb from taking the host's memory with it.
    pub memory_mb: u64,
    /// Wall-clock budget of one `open`/`process`/`finish` call, in milliseconds,
    /// enforced by epoch interruption. Stops a guest's endless loop from
    /// holding a worker thread forever.
    pub call_timeout_ms: u64,
    /// Bytes a guest may emit during one call, in MiB. Stops a guest from
    /// flooding the host with output.
    pub output_mb_per_call: u64,
    /// Batches a guest may emit during one call. Stops a guest from turning
    /// one batch into millions of tiny ones.
    pub output_batches_per_call: u32,
    /// Rows a guest may emit during one call, all batches together; also the
    /// most slots any one array of an emitted batch (a nested child included)
    /// may hold. Bytes alone do not bound a batch: a Null-typed column, a
    /// batch without columns or a fixed-size list of width 0 has rows that
    /// cost no bytes, yet every row costs work downstream (hashing, sinks).
    pub output_rows_per_call: u64,
    /// Host memory an instance may hold on its guest's behalf at a time, in
    /// MiB: state values being read for it (`value-get-many`, `list-get`,
    /// `map-entries`, …), open blob `writer`s' buffers, blob reads. Charged
    /// before the host allocates; past it the call fails with a `limit`
    /// error. Stops a guest from claiming host memory outside `memory_mb`.
    pub host_memory_mb: u64,
    /// The write-back cache of each instance's keyed state, in MiB: state read
    /// or written once is served from memory, and writes reach the store in
    /// batches (at checkpoints, or when the cache is full). 0 writes every
    /// change through at once and keeps nothing read.
    pub state_cache_mb: u64,
    /// Replace an instance by a fresh one, between two batches, once its
    /// linear memory has grown past this percentage of the room it had after
    /// `open` (up to `memory_mb`); 0 never. Its `snapshot` export (if any)
    /// carries its memory across: `save` on the old instance, `restore` on
    /// the new. Language runtimes that keep what crosses the boundary
    /// (componentize-py leaks returned lists) then run for ever instead of
    /// reaching `memory_mb`. Not a guard: a budget.
    pub recycle_memory_pct: u32,
    /// Replace an instance by a fresh one after this many `process` calls; 0 never.
    pub recycle_after_calls: u64,
}

impl Default for OperatorLimits {
    fn default() -> Self {
        Self {
            memory_mb: 256,
            call_timeout_ms: 10_000,
            output_mb_per_call: 256,
            output_batches_per_call: 1024,
            output_rows_per_call: 16 << 20,
            host_memory_mb: 512,
            state_cache_mb: 32,
            recycle_memory_pct: 50,
            recycle_after_calls: 0,
        }
    }
}

/// Largest `memory_mb` an operator may have: the 4 GiB a 32-bit linear memory
/// can address. A larger figure is refused when the job is planned.
pub const MEMORY_MB_MAX: u64 = 4096;

/// Operator instances one process may hold at once (the sum of every
/// operator's parallelism); a job asking for more is refused when it is
/// planned. The wasm engine keeps [`INSTANCE_SLOTS_SPARE`] slots beyond it for
/// fresh instances that replace failed ones.
pub const OPERATOR_INSTANCES_MAX: u32 = 256;

/// Instance slots beyond [`OPERATOR_INSTANCES_MAX`] for replacing failed instances.
pub const INSTANCE_SLOTS_SPARE: u32 = 32;

/// Largest log message a guest may hand to the host, in bytes; longer ones are cut.
/// Stops a guest from filling the host's log with one call.
pub const LOG_MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// Longest state name (the `name` argument of every state call), in bytes.
/// Stops a guest from inflating every stored key with a huge name.
pub const STATE_NAME_BYTES_MAX: usize = 256;

/// Longest state key, and longest map field, in bytes. Stops a guest from
/// storing unbounded keys; also keeps every encoded fjall key (subtask, kind,
/// name, key and map field together) under fjall's hard limit of 65,535
/// bytes, which fjall enforces with a panic — hence 16 KiB rather than 64 KiB.
pub const STATE_KEY_BYTES_MAX: usize = 16 * 1024;

/// Largest state value or list item, in bytes. Stops a guest from exhausting
/// memory and disk with one entry; also bounds every allocation made while
/// decoding a snapshot file.
pub const STATE_VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Longest region name, in bytes. Region names are directory names in the
/// checkpoint directory and the object store: well under the 255-byte file
/// name limit of common filesystems, with room for suffixes.
pub const REGION_NAME_BYTES_MAX: usize = 120;

/// Largest component file the host agrees to compile, in bytes. Compiling is
/// super-linear in the worst case and wasmtime treats compile-time DoS as out
/// of its scope, so the host bounds the input.
pub const COMPONENT_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// What happens when an operator instance fails on a batch (a trap, a crossed
/// limit, or an error the guest returned).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailurePolicy {
    /// How many times to retry the batch, each time on a fresh instance.
    #[serde(default)]
    pub retries: u32,
    /// What to do once retries are used up.
    #[serde(default)]
    pub then: FailureAction,
    /// The sink that receives dead-lettered batches (with `then = "dead-letter"`).
    #[serde(default)]
    pub dead_letter: Option<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    /// Fail the whole job (the default): nothing is lost silently.
    #[default]
    Fail,
    /// Send the failed batch, with the error, to the dead-letter sink and go on.
    DeadLetter,
}

/// How a batch on an edge is routed to the consumer's subtasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partitioning {
    /// Subtask i feeds subtask i; needs equal parallelism on both ends.
    Forward,
    /// Rows are routed by a hash of the named columns.
    Hash(Vec<String>),
    /// Whole batches are dealt to consumer subtasks in turn.
    RoundRobin,
    /// Every consumer subtask receives every batch.
    Broadcast,
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::Forward => f.write_str("forward"),
            Partitioning::Hash(cols) => write!(f, "hash({})", cols.join(", ")),
            Partitioning::RoundRobin => f.write_str("round-robin"),
            Partitioning::Broadcast => f.write_str("broadcast"),
        }
    }
}
