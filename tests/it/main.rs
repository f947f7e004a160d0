//! Cross-crate scenarios, in one test binary: real jobs over real files with
//! real guest components built from source (see `host/cli/build.rs`).

#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

mod bad_input;
mod blobs;
mod boundary;
mod checkpoint;
mod cli;
mod cluster;
mod common;
mod conformance;
mod dedupe;
mod event_time;
mod example_live_upgrade;
mod host_memory;
mod inference;
mod limits;
mod media_audio;
mod media_image;
mod media_text;
mod media_video;
mod object_store;
mod package_jobs;
mod packages;
mod pipeline;
mod policy;
mod public_api;
mod regions;
mod shape;
mod split;
mod traces;
mod upgrade;
