//! The sans-IO dataflow core: logical graph → validated plan → physical
//! subtasks and channels, pipelined regions, and the per-subtask input
//! bookkeeping that decides when an input has ended and what the watermark is.
//!
//! Nothing here performs I/O, reads a clock, spawns a task or names tokio,
//! wasmtime, quinn or fjall: callers feed events in and act on what comes out,
//! so the same logic runs under a deterministic simulation in tests.

mod graph;
mod input;

pub use graph::{ChannelSpec, Edge, LogicalGraph, NodeKind, NodeSpec, PhysicalPlan, PlanError, Region};
pub use input::{Event, InputProgress, InputTracker};
