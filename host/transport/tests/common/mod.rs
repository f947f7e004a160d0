//! Helpers shared by the transport tests: a certificate directory, endpoints on 127.0.0.1, batches.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use flumen_transport::{Connection, Endpoint, EndpointOptions, NodeCredentials, NodeIdentity};

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

/// `coordinator` connected to `worker-1` (both with `options`), on a certificate directory
/// `cluster` wrote: the two endpoints (kept alive) and the worker's and the coordinator's
/// ends of the connection.
pub async fn connected_pair(dir: &Path, options: EndpointOptions) -> (Endpoint, Endpoint, Connection, Connection) {
    let (server, addr) = endpoint(&creds(dir, "worker-1"), options.clone());
    let (client, _) = endpoint(&creds(dir, "coordinator"), options);
    let w1 = id("worker-1");
    let (accepted, connected) = tokio::join!(server.accept(), client.connect(addr, &w1));
    let (peer, server_conn) = accepted.expect("accepted");
    assert_eq!(peer, id("coordinator"));
    (server, client, server_conn, connected.expect("connected"))
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
