//! The data plane between workers: when a region is split across workers
//! (`flumen_engine::Split`), its parts talk over QUIC connections with mutual
//! TLS, one per pair of parts. Each carries the region's channels between the
//! two parts (one stream per channel: Arrow IPC batches with watermark and
//! barrier markers in order, credit-based flow control) and, on the
//! connection's control stream, the parts' control messages in order.
//!
//! Setup: every worker's endpoint accepts its peers ([`Mesh::serve`]). For
//! each pair of parts, the higher part dials the lower and opens with
//! [`MeshMessage::Hello`] naming the task and its part; the lower part takes
//! the connection only if the peer's certificate is the worker the
//! coordinator placed that part on. Channels are found by id (attempt and
//! plan channel, chosen by the engine), whatever order they arrive in.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flumen_engine::{Event, LinkFuture, PartLink, RecordBatch, RemoteReceiver, RemoteSender};
use flumen_transport::{BatchReceiver, BatchSender, Connection, Endpoint, Item, Marker, NodeIdentity};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use crate::protocol::PartPeer;

/// The version of the messages between the parts of a split region.
pub const MESH_PROTOCOL: u32 = 1;

/// Connections that arrived for a part not (yet) waiting for them; past this the oldest go.
const PENDING_MAX: usize = 256;

/// Channels that arrived before the engine asked for them, per connection; more is a broken peer.
const EARLY_CHANNELS_MAX: usize = 4096;

/// The messages on a mesh connection's control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MeshMessage {
    /// First, from the dialling part: which task, and which part of it, is calling.
    Hello { protocol: u32, task: String, part: u32 },
    /// A control message of the engine's parts protocol.
    Part { text: String },
}

type Waiter = oneshot::Sender<Connection>;

/// What crossed the network between this worker and one peer on data channels, over
/// every task (Arrow IPC bytes as sent, frame headers excluded).
#[derive(Debug, Default)]
pub struct EdgeCounters {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batches_received: AtomicU64,
}

/// A worker's side of the mesh: its endpoint, the connections that arrived
/// for parts of its tasks, and what crossed to and from each peer.
#[derive(Debug)]
pub struct Mesh {
    endpoint: Arc<Endpoint>,
    state: Mutex<MeshState>,
    edges: Mutex<BTreeMap<String, Arc<EdgeCounters>>>,
}

#[derive(Debug, Default)]
struct MeshState {
    /// Connections that arrived before their part asked, oldest first.
    pending: Vec<((String, u32), Connection)>,
    waiters: HashMap<(String, u32), Waiter>,
}

impl Mesh {
    pub fn new(endpoint: Arc<Endpoint>) -> Arc<Self> {
        Arc::new(Self { endpoint, state: Mutex::default(), edges: Mutex::default() })
    }

    /// The counters of the edge to `peer` (a worker id).
    fn edge(&self, peer: &str) -> Arc<EdgeCounters> {
        self.edges.lock().unwrap_or_else(PoisonError::into_inner).entry(peer.to_owned()).or_default().clone()
    }

    /// Every peer this worker exchanged data with, and what crossed.
    pub fn edges(&self) -> Vec<(String, Arc<EdgeCounters>)> {
        self.edges.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(p, c)| (p.clone(), c.clone())).collect()
    }

    /// This worker's mesh address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Accepts peers' connections until the endpoint closes: each must open
    /// with a `Hello` in time; it then waits for its part (or is handed to it).
    pub async fn serve(self: Arc<Self>) {
        loop {
            let (peer, conn) = match self.endpoint.accept().await {
                Ok(accepted) => accepted,
                Err(_) => return,
            };
            let mesh = self.clone();
            tokio::spawn(async move {
                let hello = tokio::time::timeout(Duration::from_secs(10), conn.recv_message::<MeshMessage>()).await;
                match hello {
                    Ok(Ok(MeshMessage::Hello { protocol: MESH_PROTOCOL, task, part })) => {
                        mesh.arrived(task, part, conn)
                    }
                    Ok(Ok(MeshMessage::Hello { protocol, .. })) => {
                        conn.close(&format!(
                            "mesh protocol {protocol} is not {MESH_PROTOCOL}, which this worker speaks"
                        ));
                    }
                    Ok(Ok(other)) => conn.close(&format!("expected a mesh hello, got {other:?}")),
                    Ok(Err(e)) => tracing::warn!(%peer, "a mesh peer's hello: {e}"),
                    Err(_) => conn.close("no mesh hello in time"),
                }
            });
        }
    }

    fn arrived(&self, task: String, part: u32, conn: Connection) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (task, part);
        if let Some(waiter) = state.waiters.remove(&key) {
            if let Err(conn) = waiter.send(conn) {
                conn.close("the part it called has stopped waiting");
            }
            return;
        }
        if state.pending.len() >= PENDING_MAX {
            let (_, old) = state.pending.remove(0);
            old.close("no part of this worker took the connection");
        }
        state.pending.push((key, conn));
    }

    /// The connection part `part` of `task` made to this worker (waits for it).
    async fn incoming(&self, task: &str, part: u32, within: Duration) -> Result<Connection, String> {
        let rx = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (task.to_owned(), part);
            if let Some(i) = state.pending.iter().position(|(k, _)| *k == key) {
                return Ok(state.pending.remove(i).1);
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.insert(key, tx);
            rx
        };
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(conn)) => Ok(conn),
            _ => {
                self.state.lock().unwrap_or_else(PoisonError::into_inner).waiters.remove(&(task.to_owned(), part));
                Err(format!("part {part} of {task} did not connect within {} ms", within.as_millis()))
            }
        }
    }

    /// Links part `part` of `task` to the other parts (`peers[i]` runs part `i`): dials the
    /// lower parts, waits for the higher ones, and checks each is the worker placed there.
    pub async fn link(
        self: &Arc<Self>,
        task: &str,
        part: u32,
        peers: &[PartPeer],
        within: Duration,
    ) -> Result<Arc<QuicPartLink>, String> {
        let mut conns: Vec<Option<Connection>> = vec![None; peers.len()];
        let edges: Vec<Arc<EdgeCounters>> = peers.iter().map(|p| self.edge(&p.worker)).collect();
        for (i, peer) in peers.iter().enumerate() {
            let i = i as u32;
            if i == part {
                continue;
            }
            let expected = NodeIdentity::new(&peer.worker).map_err(|e| format!("part {i}'s worker: {e}"))?;
            let conn = if i < part {
                let addr: SocketAddr =
                    peer.addr.parse().map_err(|e| format!("part {i}'s address {:?}: {e}", peer.addr))?;
                let conn = tokio::time::timeout(within, self.endpoint.connect(addr, &expected))
                    .await
                    .map_err(|_| format!("part {i} at {addr} did not answer within {} ms", within.as_millis()))?
                    .map_err(|e| format!("part {i} at {addr}: {e}"))?;
                let hello = MeshMessage::Hello { protocol: MESH_PROTOCOL, task: task.to_owned(), part };
                conn.send_message(&hello).await.map_err(|e| format!("part {i}: {e}"))?;
                conn
            } else {
                let conn = self.incoming(task, i, within).await?;
                if conn.peer() != &expected {
                    let reason = format!("part {i} of {task} runs on {expected}, not on {}", conn.peer());
                    conn.close(&reason);
                    return Err(reason);
                }
                conn
            };
            conns[i as usize] = Some(conn);
        }
        Ok(QuicPartLink::new(conns, edges))
    }
}

/// Channels of one connection, found by id.
#[derive(Debug, Default)]
struct Channels {
    arrived: HashMap<u64, BatchReceiver>,
    waiting: HashMap<u64, oneshot::Sender<BatchReceiver>>,
    /// Set when the connection can deliver no more channels.
    broken: Option<String>,
}

/// One part's links to the other parts of its region.
#[derive(Debug)]
pub struct QuicPartLink {
    conns: Vec<Option<Connection>>,
    /// What crossed to and from each part's worker.
    edges: Vec<Arc<EdgeCounters>>,
    channels: Vec<Arc<Mutex<Channels>>>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<(u32, String), String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for QuicPartLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for conn in self.conns.iter().flatten() {
            conn.close("the part's task ended");
        }
    }
}

impl QuicPartLink {
    fn new(conns: Vec<Option<Connection>>, edges: Vec<Arc<EdgeCounters>>) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        let mut channels = Vec::new();
        for (i, conn) in conns.iter().enumerate() {
            let slot = Arc::new(Mutex::new(Channels::default()));
            channels.push(slot.clone());
            let Some(conn) = conn.clone() else { continue };
            let from = i as u32;
            let control = conn.clone();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let got = match control.recv_message::<MeshMessage>().await {
                        Ok(MeshMessage::Part { text }) => Ok((from, text)),
                        Ok(other) => {
                            let reason = format!("part {from} sent {other:?} on an established link");
                            control.close(&reason);
                            Err(reason)
                        }
                        Err(e) => Err(format!("part {from}: {e}")),
                    };
                    let end = got.is_err();
                    if tx.send(got).is_err() || end {
                        return;
                    }
                }
            }));
            tasks.push(tokio::spawn(async move {
                loop {
                    let accepted = conn.accept_channel().await;
                    let mut c = slot.lock().unwrap_or_else(PoisonError::into_inner);
                    match accepted {
                        Ok(rx) => {
                            let id = rx.channel();
                            // A channel of an earlier attempt nobody will ask for goes.
                            c.arrived.retain(|k, _| k >> 32 >= id >> 32);
                            if let Some(w) = c.waiting.remove(&id) {
                                let _ = w.send(rx);
                            } else if c.arrived.len() < EARLY_CHANNELS_MAX {
                                c.arrived.insert(id, rx);
                            } else {
                                let reason =
                                    format!("part {from} opened more than {EARLY_CHANNELS_MAX} channels early");
                                conn.close(&reason);
                                c.broken = Some(reason);
                                c.waiting.clear();
                                return;
                            }
                        }
                        Err(e) => {
                            c.broken = Some(format!("part {from}: {e}"));
                            c.waiting.clear();
                            return;
                        }
                    }
                }
            }));
        }
        Arc::new(Self { conns, edges, channels, incoming: tokio::sync::Mutex::new(rx), tasks })
    }

    fn conn(&self, part: u32) -> Result<&Connection, String> {
        self.conns.get(part as usize).and_then(Option::as_ref).ok_or_else(|| format!("no link to part {part}"))
    }
}

impl PartLink for QuicPartLink {
    fn open(&self, to: u32, channel: u64) -> LinkFuture<'_, Box<dyn RemoteSender>> {
        Box::pin(async move {
            let conn = self.conn(to)?;
            let sender = conn.open_channel(channel).await.map_err(|e| e.to_string())?;
            let edge = self.edges.get(to as usize).cloned().unwrap_or_default();
            Ok(Box::new(QuicSender(Some(sender), edge)) as Box<dyn RemoteSender>)
        })
    }

    fn accept(&self, from: u32, channel: u64) -> LinkFuture<'_, Box<dyn RemoteReceiver>> {
        Box::pin(async move {
            let slot = self.channels.get(from as usize).ok_or_else(|| format!("no link to part {from}"))?;
            let edge = self.edges.get(from as usize).cloned().unwrap_or_default();
            let rx = {
                let mut c = slot.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(rx) = c.arrived.remove(&channel) {
                    return Ok(Box::new(QuicReceiver(rx, edge)) as Box<dyn RemoteReceiver>);
                }
                if let Some(reason) = &c.broken {
                    return Err(reason.clone());
                }
                let (tx, rx) = oneshot::channel();
                c.waiting.insert(channel, tx);
                rx
            };
            let got = rx.await.map_err(|_| {
                let c = slot.lock().unwrap_or_else(PoisonError::into_inner);
                c.broken.clone().unwrap_or_else(|| format!("part {from} closed the link"))
            })?;
            Ok(Box::new(QuicReceiver(got, edge)) as Box<dyn RemoteReceiver>)
        })
    }

    fn send(&self, to: u32, message: String) -> LinkFuture<'_, ()> {
        Box::pin(async move {
            let conn = self.conn(to)?;
            conn.send_message(&MeshMessage::Part { text: message }).await.map_err(|e| e.to_string())
        })
    }

    fn recv(&self) -> LinkFuture<'_, (u32, String)> {
        Box::pin(async move {
            let mut rx = self.incoming.lock().await;
            rx.recv().await.unwrap_or_else(|| Err("the links closed".into()))
        })
    }
}

struct QuicSender(Option<BatchSender>, Arc<EdgeCounters>);

impl RemoteSender for QuicSender {
    fn send(&mut self, event: Event<RecordBatch>) -> LinkFuture<'_, ()> {
        Box::pin(async move {
            let err = |e: flumen_transport::TransportError| e.to_string();
            match event {
                Event::End => match self.0.take() {
                    Some(s) => s.finish().await.map_err(err),
                    None => Ok(()),
                },
                other => {
                    let s = self.0.as_mut().ok_or_else(|| "the channel already ended".to_owned())?;
                    match other {
                        Event::Data(batch) => {
                            let before = s.bytes_sent();
                            s.send(&batch).await.map_err(err)?;
                            self.1.bytes_sent.fetch_add(s.bytes_sent() - before, Ordering::Relaxed);
                            self.1.batches_sent.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        Event::Watermark(t) => s.send_marker(Marker::Watermark(t)).await.map_err(err),
                        Event::Barrier(n) => s.send_marker(Marker::Barrier(n)).await.map_err(err),
                        Event::End => Ok(()),
                    }
                }
            }
        })
    }
}

struct QuicReceiver(BatchReceiver, Arc<EdgeCounters>);

impl RemoteReceiver for QuicReceiver {
    fn recv(&mut self) -> LinkFuture<'_, Event<RecordBatch>> {
        Box::pin(async move {
            let before = self.0.bytes_received();
            match self.0.recv_item().await.map_err(|e| e.to_string())? {
                None => Ok(Event::End),
                Some(Item::Batch(batch)) => {
                    self.1.bytes_received.fetch_add(self.0.bytes_received() - before, Ordering::Relaxed);
                    self.1.batches_received.fetch_add(1, Ordering::Relaxed);
                    Ok(Event::Data(batch))
                }
                Some(Item::Marker(Marker::Watermark(t))) => Ok(Event::Watermark(t)),
                Some(Item::Marker(Marker::Barrier(n))) => Ok(Event::Barrier(n)),
            }
        })
    }
}
