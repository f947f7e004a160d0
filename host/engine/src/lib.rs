//! The Flumen engine: the one public host API. Loads a job spec, plans it,
//! opens its operators and runs it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flumen_engine::EngineError> {
//! let engine = flumen_engine::Engine::new(flumen_engine::EngineOptions::default())?;
//! let job = engine.prepare(std::path::Path::new("job.toml")).await?;
//! let summary = job.run(std::future::pending()).await?;
//! println!("{}", summary.render());
//! # Ok(()) }
//! ```

pub mod connector;
mod exec;
mod metrics;
mod plan;
mod route;
pub mod spec;

use std::path::PathBuf;

pub use arrow_array::RecordBatch;
pub use arrow_schema::{Schema, SchemaRef};
pub use flumen_wasm::{CallError, CallErrorKind, GuestErrorKind};
pub use metrics::{JobMetrics, JobSummary, NodeMetrics, NodeSummary};
pub use plan::{DEAD_LETTER_ERROR_COLUMN, DEAD_LETTER_OPERATOR_COLUMN, PreparedJob};
pub use spec::{JobSpec, SpecError};

/// Describes a component file: digest, kind, capabilities, imports and exports.
pub fn inspect_component(path: &std::path::Path) -> Result<String, EngineError> {
    Ok(flumen_wasm::inspect(path)?)
}

/// Settings of an [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Directories searched for plugins named by bare name (`plugin = "filter"`).
    pub plugin_dirs: Vec<PathBuf>,
    /// Where compiled components are cached across runs (`None`: memory only).
    pub cache_dir: Option<PathBuf>,
}

/// Runs jobs; holds the compiled-component cache shared by all of them.
#[derive(Debug)]
pub struct Engine {
    runtime: flumen_wasm::WasmRuntime,
    options: EngineOptions,
}

impl Engine {
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let runtime = flumen_wasm::WasmRuntime::new(flumen_wasm::RuntimeConfig {
            cache_dir: options.cache_dir.clone(),
            ..Default::default()
        })
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(Self { runtime, options })
    }
}

/// Why a job could not be prepared or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The job spec (or what it names) is unusable; located in the file.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A source or sink failed while running.
    #[error(transparent)]
    Connector(#[from] connector::ConnectorError),
    /// An operator failed and its policy says to fail the job.
    #[error(transparent)]
    Operator(CallError),
    /// A component could not be loaded or linked.
    #[error(transparent)]
    Wasm(#[from] flumen_wasm::WasmError),
    /// A consumer stopped before its input ended (it failed; see its error).
    #[error("a downstream subtask stopped early")]
    DownstreamGone,
    #[error("cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}
