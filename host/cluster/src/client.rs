//! Asking the coordinator: one connection, one request, one answer.

use std::net::SocketAddr;
use std::time::Duration;

use flumen_transport::{Endpoint, NodeIdentity, TransportError};

use crate::protocol::{CLUSTER_PROTOCOL, Hello, Request, Response};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator at {addr}: {source}")]
    Connect { addr: SocketAddr, source: TransportError },
    #[error("the coordinator at {addr} did not answer: {source}")]
    Answer { addr: SocketAddr, source: TransportError },
    #[error("the coordinator at {addr} did not answer within {secs} s")]
    Timeout { addr: SocketAddr, secs: u64 },
}

/// Sends `request` to the coordinator `coordinator` at `addr` and returns its answer.
pub async fn ask(
    endpoint: &Endpoint,
    addr: SocketAddr,
    coordinator: &NodeIdentity,
    request: Request,
) -> Result<Response, ClientError> {
    // Loads and upgrades wait for workers: compiling, and a checkpoint barrier plus probation.
    let secs = match request {
        Request::Load { .. } | Request::Upgrade { .. } => 600,
        _ => 30,
    };
    let conn = endpoint.connect(addr, coordinator).await.map_err(|source| ClientError::Connect { addr, source })?;
    let ask = async {
        conn.send_message(&Hello::Client { protocol: CLUSTER_PROTOCOL, request }).await?;
        conn.recv_message::<Response>().await
    };
    let answer = tokio::time::timeout(Duration::from_secs(secs), ask)
        .await
        .map_err(|_| ClientError::Timeout { addr, secs })?
        .map_err(|source| ClientError::Answer { addr, source });
    conn.close("done");
    answer
}
