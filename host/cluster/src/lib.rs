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
//! - [`metrics`]: every node's Prometheus endpoint;
//! - [`mesh`]: the data plane between the parts of a region split across workers;
//! - [`coordinator`], [`worker`], [`client`]: the three roles.
//!
//! Without the default `node` feature only [`protocol`] and [`placement`] are built (the
//! fuzz targets' view of the crate).

#[cfg(feature = "node")]
pub mod client;
#[cfg(feature = "node")]
pub mod coordinator;
#[cfg(feature = "node")]
pub mod ha;
#[cfg(feature = "node")]
pub mod mesh;
#[cfg(feature = "node")]
pub mod metrics;
pub mod placement;
pub mod protocol;
#[cfg(feature = "node")]
pub mod worker;

#[cfg(feature = "node")]
pub use client::{ClientError, ask};
#[cfg(feature = "node")]
pub use coordinator::{CoordinatorOptions, Timing};
pub use protocol::{Capacity, JobState, JobView, PackageId, Request, Response, TaskId, UpgradeReport, WorkerView};
#[cfg(feature = "node")]
pub use worker::{PackageLoader, WorkerOptions};
