//! The sans-IO dataflow core: logical graph → validated plan → physical
//! subtasks and channels, pipelined regions, the per-subtask input
//! bookkeeping that decides when an input has ended and what the watermark is,
//! checkpoint barrier alignment, and the per-region checkpoint coordinator.
//!
//! Nothing here performs I/O, reads a clock, spawns a task or names tokio,
//! wasmtime, quinn or fjall: callers feed events in and act on what comes out,
//! so the same logic runs under a deterministic simulation in tests.

mod barrier;
mod coordinator;
mod graph;
mod input;

pub use barrier::{AlignAction, AlignmentMode, BarrierAligner, DataAction};
pub use coordinator::{CoordAction, Coordinator, CoordinatorConfig};
pub use graph::{
    ChannelSpec, Edge, LogicalGraph, NodeKind, NodeSpec, PhysicalPlan, PlanError, REGION_NAME_BYTES_MAX, Region,
};
pub use input::{Event, InputProgress, InputTracker};
