//! The wasmtime embedding: the only crate that names wasmtime.
//!
//! [`WasmRuntime`] owns the engine (pooling allocator, epoch interruption,
//! async support) and the compile-once component cache; an
//! [`OperatorFactory`] links a component against the capabilities its job
//! grants; an [`OperatorInstance`] runs calls under the operator's limits.

mod abi;
mod blobs;
mod inference;
mod inspect;
mod instance;
mod runtime;
mod shape;
mod state;

use std::path::PathBuf;

pub use blobs::{BLOB_CALL_BYTES_MAX, BLOB_WRITER_BYTES_MAX, BlobScope};
pub use inspect::inspect;
pub use instance::{
    BoundaryBytes, CAPABILITIES, Capabilities, GUEST_STDIO_BYTES_MAX, HOSTCALL_FUEL_MIN, OpenContext, OperatorFactory,
    OperatorInstance, WIT_VERSION, WIT_VERSIONS, WitVersion,
};
pub use runtime::{COMPILE_TIMEOUT, EPOCH_TICK, LoadedComponent, RuntimeConfig, WASM_STACK_BYTES_MAX, WasmRuntime};
pub use state::{
    STATE_BATCH_MAX, STATE_KEY_BYTES_MAX, STATE_NAME_BYTES_MAX, STATE_VALUE_BYTES_MAX, StateBackend, StateFault,
    StateHandle,
};

/// Failures before any call: loading, compiling, linking.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("wasm engine: {0}")]
    Engine(String),
    #[error("{}: {message}", path.display())]
    Component { path: PathBuf, message: String },
    #[error("operator `{operator}`: component {message}")]
    World { operator: String, message: String },
    /// A limit in the job spec that this host cannot honour.
    #[error("operator `{operator}`: {message}")]
    Limit { operator: String, message: String },
}

/// A failed call into an operator instance. The instance is poisoned: it is
/// never called again.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("operator {operator}: {message}")]
pub struct CallError {
    /// `id[subtask]` of the instance.
    pub operator: String,
    pub kind: CallErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallErrorKind {
    /// The guest returned an error.
    Guest(GuestErrorKind),
    /// The guest trapped (a panic, an unreachable, stack overflow, …).
    Trap,
    /// The call ran past its wall-clock deadline.
    Timeout,
    /// The guest tried to grow its memory past its cap.
    MemoryLimit,
    /// The guest emitted more than its per-call caps allow.
    OutputLimit,
    /// The guest emitted a malformed batch or schema.
    BadOutput,
}

/// The `error-kind` a guest reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestErrorKind {
    InvalidConfig,
    InvalidInput,
    Limit,
    Internal,
}
