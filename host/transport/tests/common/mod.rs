//! Helpers shared by the transport tests: a certificate directory, endpoints on 127.0.0.1, batches.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use flumen_transport::{Endpoint, EndpointOptions, NodeCredentials, NodeIdentity};

pub fn id(s: &str) -> NodeIdentity {
    NodeIdentity::new(s).expect("valid node id")
}

pub fn cluster(dir: &Path) {
    let nodes = [id("coordinator"), id("worker-1"), id("worker-2")];
    flumen_transport::certs::write_cluster_dir(dir, &nodes, 30).expect("certificates");
}

pub fn creds(dir: &Path, node: &str) -> NodeCredentials {
    NodeCredentials::load(dir, &id(node)).expect("credentials")
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

pub fn endpoint(creds: &NodeCredentials, options: EndpointOptions) -> (Endpoint, SocketAddr) {
    let ep = Endpoint::bind(loopback(), creds, options).expect("bind");
    let addr = ep.local_addr().expect("address");
    (ep, addr)
}

/// A batch of `rows` rows whose content depends on `seed`.
pub fn batch(seed: i64, rows: usize) -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false), Field::new("s", DataType::Utf8, true)]));
    let n: Int64Array = (0..rows as i64).map(|i| i * 31 + seed).collect();
    let s: StringArray =
        (0..rows as i64).map(|i| if i % 7 == 0 { None } else { Some(format!("row-{seed}-{i}")) }).collect();
    RecordBatch::try_new(schema, vec![Arc::new(n), Arc::new(s)]).expect("batch")
}

/// The IPC bytes of `batches`: equal bytes, equal batches.
pub fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
    flumen_batch::ipc::encode(batches).expect("encode")
}
