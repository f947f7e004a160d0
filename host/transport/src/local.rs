//! The in-process transport for single-node runs: bounded tokio channels
//! between nodes of one process, behind the same [`Transport`] trait as QUIC.
//! A channel holds at most `credit_batches` batches (the same window a QUIC
//! receiver grants), so a slow consumer backpressures its producer here too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use tokio::sync::mpsc;

use crate::error::TransportError;
use crate::identity::NodeIdentity;
use crate::{ChannelId, ChannelReceiver, ChannelSender, Transport};

/// Channels opened from one node to another and not yet accepted: the opener
/// waits past this many (the bound on an accept queue).
pub const LOCAL_PENDING_CHANNELS_MAX: usize = 1024;

enum Event {
    Batch(RecordBatch),
    End,
}

/// The nodes of one process and the links between them.
#[derive(Clone, Debug)]
pub struct LocalNetwork {
    links: Arc<Mutex<HashMap<(NodeIdentity, NodeIdentity), Link>>>,
    credit_batches: usize,
}

#[derive(Clone)]
struct Link {
    tx: mpsc::Sender<LocalReceiver>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<LocalReceiver>>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}

impl LocalNetwork {
    /// A network whose channels each hold at most `credit_batches` batches (at least 1).
    pub fn new(credit_batches: usize) -> Self {
        Self { links: Arc::default(), credit_batches: credit_batches.max(1) }
    }

    /// The transport of node `node` on this network.
    pub fn node(&self, node: NodeIdentity) -> LocalTransport {
        LocalTransport { network: self.clone(), node }
    }

    fn link(&self, from: &NodeIdentity, to: &NodeIdentity) -> Link {
        let mut links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        links
            .entry((from.clone(), to.clone()))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(LOCAL_PENDING_CHANNELS_MAX);
                Link { tx, rx: Arc::new(tokio::sync::Mutex::new(rx)) }
            })
            .clone()
    }
}

/// One node's view of a [`LocalNetwork`].
#[derive(Clone, Debug)]
pub struct LocalTransport {
    network: LocalNetwork,
    node: NodeIdentity,
}

/// Sends batches on an in-process channel.
#[derive(Debug)]
pub struct LocalSender {
    channel: ChannelId,
    tx: mpsc::Sender<Event>,
}

/// Receives batches from an in-process channel.
#[derive(Debug)]
pub struct LocalReceiver {
    channel: ChannelId,
    rx: mpsc::Receiver<Event>,
    ended: bool,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Batch(b) => write!(f, "Batch({} rows)", b.num_rows()),
            Self::End => f.write_str("End"),
        }
    }
}

impl Transport for LocalTransport {
    type Sender = LocalSender;
    type Receiver = LocalReceiver;

    fn node(&self) -> &NodeIdentity {
        &self.node
    }

    async fn open_channel(&self, to: &NodeIdentity, channel: ChannelId) -> Result<LocalSender, TransportError> {
        let (tx, rx) = mpsc::channel(self.network.credit_batches);
        let link = self.network.link(&self.node, to);
        link.tx
            .send(LocalReceiver { channel, rx, ended: false })
            .await
            .map_err(|_| TransportError::UnknownPeer { peer: to.clone() })?;
        Ok(LocalSender { channel, tx })
    }

    async fn accept_channel(&self, from: &NodeIdentity) -> Result<LocalReceiver, TransportError> {
        let link = self.network.link(from, &self.node);
        let mut rx = link.rx.lock().await;
        rx.recv().await.ok_or(TransportError::EndpointClosed)
    }
}

impl ChannelSender for LocalSender {
    fn channel(&self) -> ChannelId {
        self.channel
    }

    async fn send(&mut self, batch: &RecordBatch) -> Result<(), TransportError> {
        self.tx.send(Event::Batch(batch.clone())).await.map_err(|_| TransportError::Channel {
            channel: self.channel,
            reason: "the receiver closed the channel".into(),
        })
    }

    async fn finish(self) -> Result<(), TransportError> {
        self.tx.send(Event::End).await.map_err(|_| TransportError::Channel {
            channel: self.channel,
            reason: "the receiver closed the channel".into(),
        })
    }
}

impl ChannelReceiver for LocalReceiver {
    fn channel(&self) -> ChannelId {
        self.channel
    }

    async fn recv(&mut self) -> Result<Option<RecordBatch>, TransportError> {
        if self.ended {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Event::Batch(b)) => Ok(Some(b)),
            Some(Event::End) => {
                self.ended = true;
                Ok(None)
            }
            None => Err(TransportError::Channel {
                channel: self.channel,
                reason: "the sender went away without finishing the channel".into(),
            }),
        }
    }
}
