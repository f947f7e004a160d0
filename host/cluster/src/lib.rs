//! `flumen-cluster`: Flumen across processes and machines. A coordinator places each job's
//! pipelined regions on workers that have the resources they declare, over QUIC with mutual
//! TLS (`flumen-transport`); workers run their regions on the same engine `flumen run` uses,
//! checkpointing into storage every node reaches; leases and fencing keep a lost or paused
//! worker from committing once its regions run elsewhere; the coordinator's own state lives in
//! that storage, written only with conditional writes, so a restarted coordinator resumes and
//! two never both lead.
//!
//! Modules:
//! - [`protocol`]: the typed, versioned messages;
//! - [`placement`]: what a region needs and where it fits (sans IO);
//! - [`ha`]: the coordinator's durable state and leadership;
//! - [`coordinator`], [`worker`], [`client`]: the three roles.

pub mod client;
pub mod coordinator;
pub mod ha;
pub mod placement;
pub mod protocol;
pub mod worker;

pub use client::{ClientError, ask};
pub use coordinator::{CoordinatorOptions, Timing};
pub use protocol::{Capacity, JobState, JobView, Request, Response, TaskId, WorkerView};
pub use worker::WorkerOptions;
