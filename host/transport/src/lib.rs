//! `flumen-transport`: how nodes talk. QUIC with mutual TLS between nodes,
//! bounded in-process channels within one; Arrow batches on data channels
//! with credit-based flow control, typed versioned messages on control streams.
//!
//! The only crate naming quinn (and, with `flumen-state`/`flumen-blob` for
//! object_store's TLS provider, rustls). Modules:
//! - [`identity`]: `NodeIdentity` and how a certificate binds it (`<id>.node.flumen`);
//! - [`certs`]: the cluster CA and node certificates (`flumen certs`);
//! - [`tls`]: rustls configurations (TLS 1.3, mTLS, cluster CA only, no 0-RTT);
//! - [`frame`], [`credit`], [`control`]: the wire protocol, sans IO;
//! - [`quic`]: endpoints, connections and channels over quinn;
//! - [`local`]: the in-process transport;
//! - the [`Transport`] trait both implement.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use arrow_array::RecordBatch;

pub mod certs;
pub mod control;
pub mod credit;
mod error;
pub mod frame;
pub mod identity;
pub mod local;
pub mod quic;
pub mod tls;

pub use certs::{ClusterCa, NodeCredentials};
pub use control::ControlMessage;
pub use error::{ProtocolError, TransportError};
pub use frame::Marker;
pub use identity::NodeIdentity;
pub use local::{LocalNetwork, LocalTransport};
pub use quic::{BatchReceiver, BatchSender, Connection, Endpoint, EndpointOptions, Item, PathStats, TransportLimits};

/// A data channel's id, chosen by the engine (unique per connection and direction).
pub type ChannelId = u64;

/// Sending and receiving batches on channel X to and from node Y, whatever
/// carries them: in-process queues or QUIC streams. Connection management
/// (addresses, certificates, reconnects) stays with each implementation.
pub trait Transport: Send + Sync {
    type Sender: ChannelSender;
    type Receiver: ChannelReceiver;

    /// This node.
    fn node(&self) -> &NodeIdentity;

    /// Opens channel `channel` to node `to`.
    fn open_channel(
        &self,
        to: &NodeIdentity,
        channel: ChannelId,
    ) -> impl Future<Output = Result<Self::Sender, TransportError>> + Send;

    /// The next channel node `from` opened to this node.
    fn accept_channel(
        &self,
        from: &NodeIdentity,
    ) -> impl Future<Output = Result<Self::Receiver, TransportError>> + Send;
}

/// The sending end of a channel. `send` waits while the receiver has no room.
pub trait ChannelSender: Send {
    fn channel(&self) -> ChannelId;
    fn send(&mut self, batch: &RecordBatch) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Ends the channel; the receiver sees `None` after the last batch.
    fn finish(self) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// The receiving end of a channel. A channel whose sender vanished without
/// `finish` is an error, never a silent end.
pub trait ChannelReceiver: Send {
    fn channel(&self) -> ChannelId;
    fn recv(&mut self) -> impl Future<Output = Result<Option<RecordBatch>, TransportError>> + Send;
}

/// The QUIC transport: an endpoint and one established connection per peer
/// (the caller connects and accepts; this routes channels by peer).
#[derive(Debug)]
pub struct QuicTransport {
    endpoint: Endpoint,
    peers: Mutex<HashMap<NodeIdentity, Connection>>,
}

impl QuicTransport {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, peers: Mutex::default() }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Adds (or replaces) the connection to its peer.
    pub fn add_connection(&self, conn: Connection) {
        self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(conn.peer().clone(), conn);
    }

    fn connection(&self, peer: &NodeIdentity) -> Result<Connection, TransportError> {
        let peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.get(peer).cloned().ok_or_else(|| TransportError::UnknownPeer { peer: peer.clone() })
    }
}

impl Transport for QuicTransport {
    type Sender = BatchSender;
    type Receiver = BatchReceiver;

    fn node(&self) -> &NodeIdentity {
        self.endpoint.node()
    }

    async fn open_channel(&self, to: &NodeIdentity, channel: ChannelId) -> Result<BatchSender, TransportError> {
        self.connection(to)?.open_channel(channel).await
    }

    async fn accept_channel(&self, from: &NodeIdentity) -> Result<BatchReceiver, TransportError> {
        self.connection(from)?.accept_channel().await
    }
}

impl ChannelSender for BatchSender {
    fn channel(&self) -> ChannelId {
        BatchSender::channel(self)
    }
    async fn send(&mut self, batch: &RecordBatch) -> Result<(), TransportError> {
        BatchSender::send(self, batch).await
    }
    async fn finish(self) -> Result<(), TransportError> {
        BatchSender::finish(self).await
    }
}

impl ChannelReceiver for BatchReceiver {
    fn channel(&self) -> ChannelId {
        BatchReceiver::channel(self)
    }
    async fn recv(&mut self) -> Result<Option<RecordBatch>, TransportError> {
        BatchReceiver::recv(self).await
    }
}
