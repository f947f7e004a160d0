//! Cluster links over QUIC (quinn) with mutual TLS: endpoints, connections,
//! the per-connection control stream and one bidirectional stream per data
//! channel, with credit-based flow control (`credit.rs`) and Arrow IPC framing.
//!
//! Connection setup, in order; nothing of the application crosses before 4:
//!
//! 1. TLS 1.3 handshake: both certificates must chain to the cluster CA, and
//!    the server's must be valid for the dialled node's name.
//! 2. Each side reads the peer's node identity from its verified certificate
//!    and refuses (closes with [`CLOSE_IDENTITY`] and a reason naming both
//!    identities) one it did not expect: the client the node it dialled, the
//!    server anyone outside its allowed peers, when it has a list.
//! 3. The client opens the control stream and sends `Hello`; the server checks
//!    that it names the certificate's node and a protocol version it speaks,
//!    and answers with its own `Hello`.
//! 4. Only then do `connect` and `accept` hand out the [`Connection`].
//!
//! A peer that breaks the protocol on any stream (an unknown frame kind, an
//! oversized length, a truncated or invalid IPC message, a batch without
//! credit) gets its whole connection closed with [`CLOSE_PROTOCOL`] and the
//! error as the reason; the endpoint keeps serving everyone else.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, SchemaRef};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{RecvStream, SendStream, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::Mutex;

use crate::certs::NodeCredentials;
use crate::control::{ControlMessage, PROTOCOL_VERSION};
use crate::credit::{RecvCredit, SendCredit};
use crate::error::{ProtocolError, TransportError};
use crate::frame::{FRAME_BYTES_MAX, FrameHeader, FrameKind, Grant, HEADER_BYTES, Marker, decode_channel_id};
use crate::identity::NodeIdentity;
use crate::{ChannelId, tls};

/// Close code: the peer broke the wire protocol.
pub const CLOSE_PROTOCOL: u32 = 1;
/// Close code: the peer's identity is not the one expected.
pub const CLOSE_IDENTITY: u32 = 2;
/// Close code: an orderly close by the application.
pub const CLOSE_NORMAL: u32 = 0;
/// Reset code of a data stream whose sender went away before finishing it.
pub const CLOSE_ABANDONED: u32 = 3;

/// Bounds of a node's links; every one stops a peer from making it hold more.
#[derive(Clone, Debug)]
pub struct TransportLimits {
    /// Largest schema or batch frame, at most [`FRAME_BYTES_MAX`]; larger
    /// batches are refused on both sides with an error naming the limit.
    pub frame_bytes_max: u32,
    /// Batches a receiver lets one channel have in flight (its credit window).
    pub credit_batches: u32,
    /// Bytes a receiver lets one channel have in flight (one frame may overdraw it).
    pub credit_bytes: u64,
    /// Data channels a peer may have open at once on one connection.
    pub channels_per_connection_max: u32,
    /// How long a peer may take to send `Hello` or a channel's first frame.
    pub handshake_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            frame_bytes_max: FRAME_BYTES_MAX,
            credit_batches: 16,
            credit_bytes: 32 << 20,
            channels_per_connection_max: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// QUIC's per-stream receive window: a channel's credit in bytes plus one
/// frame, so a granted batch never waits on QUIC flow control.
fn stream_window(limits: &TransportLimits) -> u64 {
    limits.credit_bytes.saturating_add(u64::from(limits.frame_bytes_max)).saturating_add(64 << 10)
}

/// How an endpoint is set up.
#[derive(Clone, Debug, Default)]
pub struct EndpointOptions {
    pub limits: TransportLimits,
    /// When set, only these nodes may connect to this one (e.g. a worker
    /// admitting only the coordinator and its peers); any cluster node otherwise.
    pub allowed_peers: Option<BTreeSet<NodeIdentity>>,
}

/// Connections set up and waiting for `accept`; past it, handshakes wait
/// (holding their peers) until the application takes one.
const ACCEPTED_QUEUE: usize = 64;

/// Incoming connection attempts set up at once; more wait for a slot.
const HANDSHAKES_AT_ONCE: usize = 64;

type Accepted = Result<(NodeIdentity, Connection), TransportError>;

/// A node's QUIC endpoint: it accepts connections and makes them.
///
/// Incoming attempts are set up by a task of the endpoint, each in its own
/// task (at most [`HANDSHAKES_AT_ONCE`]): a peer that stalls its handshake or
/// its `Hello` holds up no other peer, only its own slot until the handshake
/// timeout.
#[derive(Debug)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    node: NodeIdentity,
    options: EndpointOptions,
    accepted: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Accepted>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// What the endpoint's task does: take each incoming attempt and set it up
/// in a task of its own, handing the outcome to `accept`.
async fn run_acceptor(
    inner: quinn::Endpoint,
    node: NodeIdentity,
    options: EndpointOptions,
    out: tokio::sync::mpsc::Sender<Accepted>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
    while let Some(incoming) = inner.accept().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (node, options, out) = (node.clone(), options.clone(), out.clone());
        tokio::spawn(async move {
            let outcome = establish(&node, &options, incoming).await;
            drop(slot);
            // Nobody accepts any more: the connection is dropped, which closes it.
            let _ = out.send(outcome).await;
        });
    }
}

impl Endpoint {
    /// Binds a UDP socket at `addr` as `creds.node`, serving and dialling with mutual TLS.
    pub fn bind(addr: SocketAddr, creds: &NodeCredentials, options: EndpointOptions) -> Result<Self, TransportError> {
        let limits = &options.limits;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(limits.channels_per_connection_max))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(limits.idle_timeout)
                    .map_err(|e| TransportError::Bind(std::io::Error::other(e.to_string())))?,
            ))
            .keep_alive_interval(Some(limits.idle_timeout / 3))
            // QUIC's own flow control sized to the credit window: credits
            // bound what a channel has in flight, and a smaller stream window
            // (quinn's default is 1.25 MB) would throttle a channel before its
            // credits do, the more so as the round trip grows. The connection
            // window bounds what all channels of a peer buffer together.
            .stream_receive_window(VarInt::from_u64(stream_window(limits)).unwrap_or(VarInt::MAX))
            .receive_window(VarInt::from_u64(stream_window(limits).saturating_mul(2)).unwrap_or(VarInt::MAX))
            .send_window(stream_window(limits).saturating_mul(2));
        let transport = Arc::new(transport);

        let server_tls = QuicServerConfig::try_from(tls::server_config(creds)?)
            .map_err(|e| TransportError::Bind(std::io::Error::other(e.to_string())))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport_config(transport.clone());
        let client_tls = QuicClientConfig::try_from(tls::client_config(creds)?)
            .map_err(|e| TransportError::Bind(std::io::Error::other(e.to_string())))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(transport);

        let mut inner = quinn::Endpoint::server(server, addr).map_err(TransportError::Bind)?;
        inner.set_default_client_config(client);
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
        let acceptor = tokio::spawn(run_acceptor(inner.clone(), creds.node.clone(), options.clone(), tx));
        Ok(Self { inner, node: creds.node.clone(), options, accepted: tokio::sync::Mutex::new(rx), acceptor })
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner.local_addr().map_err(TransportError::Bind)
    }

    /// This node.
    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    /// Connects to the node `expected` at `addr`; refuses any other node.
    pub async fn connect(&self, addr: SocketAddr, expected: &NodeIdentity) -> Result<Connection, TransportError> {
        let connect_err = |reason: String| TransportError::Connect { expected: expected.clone(), reason };
        let connecting = self.inner.connect(addr, &expected.dns_name()).map_err(|e| connect_err(e.to_string()))?;
        let conn = connecting.await.map_err(|e| connect_err(describe_close(&e)))?;
        let presented = match peer_identity(&conn) {
            Ok(p) => p,
            Err(e) => {
                conn.close(VarInt::from_u32(CLOSE_IDENTITY), e.to_string().as_bytes());
                return Err(e);
            }
        };
        if &presented != expected {
            let err = TransportError::WrongPeer {
                local: self.node.clone(),
                expected: expected.to_string(),
                presented: presented.clone(),
            };
            conn.close(VarInt::from_u32(CLOSE_IDENTITY), err.to_string().as_bytes());
            return Err(err);
        }
        let limits = self.options.limits.clone();
        let on_close = |e: quinn::ConnectionError| connect_err(describe_close(&e));
        let (mut send, mut recv) = conn.open_bi().await.map_err(on_close)?;
        let hello = ControlMessage::Hello { version: PROTOCOL_VERSION, node: self.node.clone() };
        write_frame(&mut send, FrameKind::Control, &hello.encode().map_err(|e| connect_err(e.to_string()))?, &limits)
            .await
            .map_err(|e| stream_failure(&conn, e, &presented, "control"))?;
        let answer = tokio::time::timeout(limits.handshake_timeout, read_control(&mut recv, &limits))
            .await
            .unwrap_or(Err(StreamFailure::Protocol(ProtocolError::Timeout { what: "Hello" })));
        let answer = answer.map_err(|e| stream_failure(&conn, e, &presented, "control"))?;
        check_hello(&conn, &self.node, &presented, &answer)?;
        Ok(Connection::new(conn, self.node.clone(), presented, limits, send, recv))
    }

    /// Accepts the next connection that completes every step of setup;
    /// refused attempts are logged and skipped. Fails only when the endpoint is closed.
    pub async fn accept(&self) -> Result<(NodeIdentity, Connection), TransportError> {
        loop {
            match self.accept_one().await {
                None => return Err(TransportError::EndpointClosed),
                Some(Ok(accepted)) => return Ok(accepted),
                Some(Err(e)) => tracing::warn!(node = %self.node, "refused a connection: {e}"),
            }
        }
    }

    /// The outcome of the next incoming connection attempt to finish its
    /// setup (`None`: the endpoint is closed). Attempts are set up
    /// concurrently, so a slow peer delays none of the others.
    pub async fn accept_one(&self) -> Option<Accepted> {
        self.accepted.lock().await.recv().await
    }
}

/// Sets up one incoming attempt: TLS handshake, the identity the certificate
/// binds (admitted?), then `Hello` both ways within the handshake timeout.
async fn establish(node: &NodeIdentity, options: &EndpointOptions, incoming: quinn::Incoming) -> Accepted {
    let remote = incoming.remote_address().to_string();
    let conn =
        incoming.await.map_err(|e| TransportError::Handshake { peer: remote.clone(), reason: describe_close(&e) })?;
    let presented = match peer_identity(&conn) {
        Ok(p) => p,
        Err(e) => {
            conn.close(VarInt::from_u32(CLOSE_IDENTITY), e.to_string().as_bytes());
            return Err(e);
        }
    };
    if let Some(allowed) = &options.allowed_peers
        && !allowed.contains(&presented)
    {
        let list = allowed.iter().map(NodeIdentity::as_str).collect::<Vec<_>>().join(", ");
        let err = TransportError::WrongPeer {
            local: node.clone(),
            expected: format!("one of [{list}]"),
            presented: presented.clone(),
        };
        conn.close(VarInt::from_u32(CLOSE_IDENTITY), err.to_string().as_bytes());
        return Err(err);
    }
    let limits = options.limits.clone();
    let control = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(StreamFailure::Connection)?;
        let hello = read_control(&mut recv, &limits).await?;
        Ok::<_, StreamFailure>((send, recv, hello))
    };
    let (mut send, recv, hello) = tokio::time::timeout(limits.handshake_timeout, control)
        .await
        .unwrap_or(Err(StreamFailure::Protocol(ProtocolError::Timeout { what: "Hello" })))
        .map_err(|e| stream_failure(&conn, e, &presented, "control"))?;
    check_hello(&conn, node, &presented, &hello)?;
    let answer = ControlMessage::Hello { version: PROTOCOL_VERSION, node: node.clone() };
    let payload = answer.encode().map_err(|e| protocol(&conn, &presented, "control", e))?;
    write_frame(&mut send, FrameKind::Control, &payload, &limits)
        .await
        .map_err(|e| stream_failure(&conn, e, &presented, "control"))?;
    Ok((presented.clone(), Connection::new(conn, node.clone(), presented, limits, send, recv)))
}

impl Endpoint {
    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.inner.close(VarInt::from_u32(CLOSE_NORMAL), b"endpoint closed");
    }
}

/// What QUIC sees of a connection's path ([`Connection::path_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathStats {
    pub rtt: Duration,
    /// The congestion window, in bytes.
    pub cwnd: u64,
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
}

/// An established, mutually authenticated link to one peer node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connection {
    inner: Arc<ConnectionInner>,
}

#[derive(Debug)]
struct ConnectionInner {
    conn: quinn::Connection,
    local: NodeIdentity,
    peer: NodeIdentity,
    limits: TransportLimits,
    control_send: Mutex<SendStream>,
    control_recv: Mutex<RecvStream>,
}

impl Connection {
    fn new(
        conn: quinn::Connection,
        local: NodeIdentity,
        peer: NodeIdentity,
        limits: TransportLimits,
        send: SendStream,
        recv: RecvStream,
    ) -> Self {
        let inner = ConnectionInner {
            conn,
            local,
            peer,
            limits,
            control_send: Mutex::new(send),
            control_recv: Mutex::new(recv),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The peer node, as its certificate names it.
    pub fn peer(&self) -> &NodeIdentity {
        &self.inner.peer
    }

    /// This node.
    pub fn local(&self) -> &NodeIdentity {
        &self.inner.local
    }

    /// Opens data channel `channel` to the peer, which receives it from [`Connection::accept_channel`].
    pub async fn open_channel(&self, channel: ChannelId) -> Result<BatchSender, TransportError> {
        let (mut send, recv) = self.inner.conn.open_bi().await.map_err(|e| self.lost(&e))?;
        write_frame(&mut send, FrameKind::OpenChannel, &channel.to_be_bytes(), &self.inner.limits)
            .await
            .map_err(|e| self.fail(e, channel))?;
        Ok(BatchSender {
            conn: self.clone(),
            channel,
            send,
            recv,
            credit: SendCredit::default(),
            writer: None,
            finished: false,
            sent_bytes: 0,
        })
    }

    /// Waits for the peer to open a data channel.
    pub async fn accept_channel(&self) -> Result<BatchReceiver, TransportError> {
        let limits = &self.inner.limits;
        let (mut send, mut recv) = self.inner.conn.accept_bi().await.map_err(|e| self.lost(&e))?;
        let first = tokio::time::timeout(limits.handshake_timeout, read_frame(&mut recv, limits))
            .await
            .unwrap_or(Err(StreamFailure::Protocol(ProtocolError::Timeout { what: "a channel's first frame" })));
        let channel = match first {
            Ok(Some((FrameKind::OpenChannel, payload))) => {
                decode_channel_id(&payload).map_err(|e| protocol(&self.inner.conn, self.peer(), "a new stream", e))?
            }
            Ok(Some((kind, _))) => {
                let e = ProtocolError::UnexpectedFrame { expected: "OpenChannel", got: kind };
                return Err(protocol(&self.inner.conn, self.peer(), "a new stream", e));
            }
            Ok(None) => return Err(protocol(&self.inner.conn, self.peer(), "a new stream", ProtocolError::MissingEnd)),
            Err(e) => return Err(stream_failure(&self.inner.conn, e, self.peer(), "a new stream")),
        };
        let window = Grant { batches: limits.credit_batches, bytes: limits.credit_bytes };
        let (credit, initial) = RecvCredit::new(window);
        write_frame(&mut send, FrameKind::Credit, &initial.encode(), limits)
            .await
            .map_err(|e| self.fail(e, channel))?;
        Ok(BatchReceiver {
            conn: self.clone(),
            channel,
            send,
            recv,
            credit,
            schema: None,
            ended: false,
            received_bytes: 0,
        })
    }

    /// Sends a control message on the connection's control stream.
    pub async fn send_control(&self, message: &ControlMessage) -> Result<(), TransportError> {
        let payload = message.encode().map_err(|e| protocol(&self.inner.conn, self.peer(), "control", e))?;
        let mut send = self.inner.control_send.lock().await;
        write_frame(&mut send, FrameKind::Control, &payload, &self.inner.limits)
            .await
            .map_err(|e| stream_failure(&self.inner.conn, e, self.peer(), "control"))
    }

    /// Receives the next control message.
    pub async fn recv_control(&self) -> Result<ControlMessage, TransportError> {
        let mut recv = self.inner.control_recv.lock().await;
        read_control(&mut recv, &self.inner.limits)
            .await
            .map_err(|e| stream_failure(&self.inner.conn, e, self.peer(), "control"))
    }

    /// Sends a message of the protocol above the transport (see
    /// [`crate::control::encode_message`]) on the control stream.
    pub async fn send_message<M: serde::Serialize>(&self, message: &M) -> Result<(), TransportError> {
        let payload = crate::control::encode_message(message)
            .map_err(|e| protocol(&self.inner.conn, self.peer(), "control", e))?;
        let mut send = self.inner.control_send.lock().await;
        write_frame(&mut send, FrameKind::Control, &payload, &self.inner.limits)
            .await
            .map_err(|e| stream_failure(&self.inner.conn, e, self.peer(), "control"))
    }

    /// Receives the next message of the protocol above the transport. One
    /// that does not parse as an `M` closes the connection with the reason
    /// (the peer sees it) and is returned as a protocol error.
    pub async fn recv_message<M: serde::de::DeserializeOwned>(&self) -> Result<M, TransportError> {
        let mut recv = self.inner.control_recv.lock().await;
        let payload = match read_frame(&mut recv, &self.inner.limits).await {
            Ok(Some((FrameKind::Control, payload))) => payload,
            Ok(Some((kind, _))) => {
                let e = ProtocolError::UnexpectedFrame { expected: "Control", got: kind };
                return Err(protocol(&self.inner.conn, self.peer(), "control", e));
            }
            Ok(None) => return Err(protocol(&self.inner.conn, self.peer(), "control", ProtocolError::MissingEnd)),
            Err(e) => return Err(stream_failure(&self.inner.conn, e, self.peer(), "control")),
        };
        crate::control::decode_message(&payload).map_err(|e| protocol(&self.inner.conn, self.peer(), "control", e))
    }

    /// What QUIC sees of the path now: round trip, congestion window, packets
    /// sent and lost, congestion events (metrics, benchmarks).
    pub fn path_stats(&self) -> PathStats {
        let s = self.inner.conn.stats();
        PathStats {
            rtt: s.path.rtt,
            cwnd: s.path.cwnd,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            congestion_events: s.path.congestion_events,
        }
    }

    /// Closes the connection, telling the peer why.
    pub fn close(&self, reason: &str) {
        self.inner.conn.close(VarInt::from_u32(CLOSE_NORMAL), reason.as_bytes());
    }

    /// Waits until the connection is closed and says why.
    pub async fn closed(&self) -> TransportError {
        let e = self.inner.conn.closed().await;
        self.lost(&e)
    }

    /// A raw stream past setup, for tests that play a misbehaving peer. Not for production use.
    #[doc(hidden)]
    pub async fn raw_stream_for_tests(&self) -> Result<(SendStream, RecvStream), TransportError> {
        self.inner.conn.open_bi().await.map_err(|e| self.lost(&e))
    }

    fn lost(&self, e: &quinn::ConnectionError) -> TransportError {
        TransportError::Closed { peer: self.peer().to_string(), reason: describe_close(e) }
    }

    fn fail(&self, e: StreamFailure, channel: ChannelId) -> TransportError {
        stream_failure(&self.inner.conn, e, self.peer(), &format!("channel {channel}"))
    }
}

/// The sending end of one data channel.
pub struct BatchSender {
    conn: Connection,
    channel: ChannelId,
    send: SendStream,
    recv: RecvStream,
    credit: SendCredit,
    writer: Option<(SchemaRef, StreamWriter<Vec<u8>>)>,
    /// `finish` was called: the stream ends cleanly. Otherwise dropping the sender resets it.
    finished: bool,
    /// Bytes of batch frames sent (the IPC messages, headers excluded).
    sent_bytes: u64,
}

/// A sender dropped before `finish` (its task was stopped) resets its stream: the receiver
/// sees that channel fail, while the connection and its other channels carry on.
impl Drop for BatchSender {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.send.reset(VarInt::from_u32(CLOSE_ABANDONED));
        }
    }
}

impl std::fmt::Debug for BatchSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSender").field("channel", &self.channel).field("peer", self.conn.peer()).finish()
    }
}

impl BatchSender {
    /// The channel's id.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Bytes of the batches sent so far, as Arrow IPC messages on the wire.
    pub fn bytes_sent(&self) -> u64 {
        self.sent_bytes
    }

    /// Batch credits in hand (how many batches may go before `send` waits).
    pub fn credit_batches(&self) -> u32 {
        self.credit.batches()
    }

    /// Sends a batch; waits while the receiver has granted no credit. The
    /// first batch fixes the channel's schema; later ones must match it.
    pub async fn send(&mut self, batch: &RecordBatch) -> Result<(), TransportError> {
        let limits = self.conn.inner.limits.clone();
        let channel_err = |reason: String| TransportError::Channel { channel: self.channel, reason };
        let writer = match &mut self.writer {
            Some((schema, w)) => {
                if schema != &batch.schema() {
                    return Err(channel_err("a batch's schema differs from the channel's first batch".into()));
                }
                w
            }
            None => {
                let schema = batch.schema();
                check_sendable(&schema).map_err(channel_err)?;
                let mut w = StreamWriter::try_new(Vec::new(), &schema).map_err(|e| channel_err(e.to_string()))?;
                let schema_bytes = std::mem::take(w.get_mut());
                write_frame(&mut self.send, FrameKind::Schema, &schema_bytes, &limits)
                    .await
                    .map_err(|e| self.conn.fail(e, self.channel))?;
                &mut self.writer.insert((schema, w)).1
            }
        };
        writer.write(batch).map_err(|e| channel_err(e.to_string()))?;
        let bytes = std::mem::take(writer.get_mut());
        let header = FrameHeader::encode(FrameKind::Batch, bytes.len(), limits.frame_bytes_max)
            .map_err(|e| channel_err(e.to_string()))?;
        while !self.credit.can_send() {
            match read_frame(&mut self.recv, &limits).await {
                Ok(Some((FrameKind::Credit, payload))) => {
                    let grant = Grant::decode(&payload).and_then(|g| self.credit.grant(g));
                    grant.map_err(|e| protocol(&self.conn.inner.conn, self.conn.peer(), &self.stream_name(), e))?;
                }
                Ok(Some((kind, _))) => {
                    let e = ProtocolError::UnexpectedFrame { expected: "Credit", got: kind };
                    return Err(protocol(&self.conn.inner.conn, self.conn.peer(), &self.stream_name(), e));
                }
                Ok(None) => return Err(channel_err("the receiver closed the channel".into())),
                Err(e) => return Err(self.conn.fail(e, self.channel)),
            }
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        self.credit.spend(len);
        self.sent_bytes += u64::from(len);
        self.send.write_all(&header).await.map_err(|e| self.conn.fail(StreamFailure::Write(e), self.channel))?;
        self.send.write_all(&bytes).await.map_err(|e| self.conn.fail(StreamFailure::Write(e), self.channel))
    }

    /// Sends a watermark or a barrier, in order with the batches around it.
    /// Spends no credit: markers are small and read in turn with the batches.
    pub async fn send_marker(&mut self, marker: Marker) -> Result<(), TransportError> {
        let limits = self.conn.inner.limits.clone();
        write_frame(&mut self.send, FrameKind::Marker, &marker.encode(), &limits)
            .await
            .map_err(|e| self.conn.fail(e, self.channel))
    }

    /// Ends the channel: the receiver's `recv` returns `None` after the last batch.
    pub async fn finish(mut self) -> Result<(), TransportError> {
        let limits = self.conn.inner.limits.clone();
        write_frame(&mut self.send, FrameKind::End, &[], &limits).await.map_err(|e| self.conn.fail(e, self.channel))?;
        self.finished = true;
        self.send.finish().map_err(|e| TransportError::Channel { channel: self.channel, reason: e.to_string() })
    }

    fn stream_name(&self) -> String {
        format!("channel {}", self.channel)
    }
}

/// What a data channel delivers: a batch or a marker between batches.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Batch(RecordBatch),
    Marker(Marker),
}

/// The receiving end of one data channel.
#[derive(Debug)]
pub struct BatchReceiver {
    conn: Connection,
    channel: ChannelId,
    send: SendStream,
    recv: RecvStream,
    credit: RecvCredit,
    schema: Option<Vec<u8>>,
    ended: bool,
    /// Bytes of batch frames received (the IPC messages, headers excluded).
    received_bytes: u64,
}

impl BatchReceiver {
    /// The channel's id, as the sender opened it.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The peer that sends on this channel.
    pub fn peer(&self) -> &NodeIdentity {
        self.conn.peer()
    }

    /// Bytes of the batches received so far, as Arrow IPC messages on the wire.
    pub fn bytes_received(&self) -> u64 {
        self.received_bytes
    }

    /// The next batch; `None` once the sender finished the channel. Taking a
    /// batch is what returns credit to the sender. A marker on a channel read
    /// this way breaks the protocol: a channel that carries markers is read
    /// with [`BatchReceiver::recv_item`].
    pub async fn recv(&mut self) -> Result<Option<RecordBatch>, TransportError> {
        match self.recv_item().await? {
            None => Ok(None),
            Some(Item::Batch(batch)) => Ok(Some(batch)),
            Some(Item::Marker(_)) => {
                Err(self.protocol(ProtocolError::UnexpectedFrame { expected: "Batch or End", got: FrameKind::Marker }))
            }
        }
    }

    /// The next batch or marker, in the order sent; `None` once the sender finished the channel.
    pub async fn recv_item(&mut self) -> Result<Option<Item>, TransportError> {
        if self.ended {
            return Ok(None);
        }
        let limits = self.conn.inner.limits.clone();
        loop {
            let frame = read_frame(&mut self.recv, &limits).await.map_err(|e| self.conn.fail(e, self.channel))?;
            let (kind, payload) = match frame {
                Some(frame) => frame,
                None => return Err(self.protocol(ProtocolError::MissingEnd)),
            };
            match kind {
                FrameKind::Schema if self.schema.is_none() => {
                    // Parsed now, so a bad schema fails here rather than at the first batch.
                    decode_ipc(&payload, &[], FrameKind::Schema).map_err(|e| self.protocol(e))?;
                    self.schema = Some(payload);
                }
                FrameKind::Batch => {
                    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
                    self.credit.on_batch(len).map_err(|e| self.protocol(e))?;
                    self.received_bytes += u64::from(len);
                    let Some(schema) = &self.schema else {
                        return Err(self.protocol(ProtocolError::UnexpectedFrame { expected: "Schema", got: kind }));
                    };
                    let batch = decode_ipc(schema, &payload, FrameKind::Batch).map_err(|e| self.protocol(e))?;
                    if let Some(grant) = self.credit.on_consumed(len) {
                        match write_frame(&mut self.send, FrameKind::Credit, &grant.encode(), &limits).await {
                            // A sender that finished (or went away) stops reading credit;
                            // what it sent is still delivered, or its absence reported.
                            Ok(()) | Err(StreamFailure::Write(quinn::WriteError::Stopped(_))) => {}
                            Err(e) => return Err(self.conn.fail(e, self.channel)),
                        }
                    }
                    return Ok(batch.map(Item::Batch));
                }
                FrameKind::Marker => {
                    return Marker::decode(&payload).map(|m| Some(Item::Marker(m))).map_err(|e| self.protocol(e));
                }
                FrameKind::End => {
                    self.ended = true;
                    let _ = self.send.finish();
                    return Ok(None);
                }
                other => {
                    return Err(self.protocol(ProtocolError::UnexpectedFrame { expected: "Batch or End", got: other }));
                }
            }
        }
    }

    fn protocol(&self, e: ProtocolError) -> TransportError {
        protocol(&self.conn.inner.conn, self.conn.peer(), &format!("channel {}", self.channel), e)
    }
}

/// Why reading or writing a stream failed.
#[derive(Debug)]
enum StreamFailure {
    Protocol(ProtocolError),
    Connection(quinn::ConnectionError),
    Read(quinn::ReadError),
    Write(quinn::WriteError),
}

/// Reads one frame; `None` when the stream ended cleanly at a frame boundary.
async fn read_frame(
    recv: &mut RecvStream,
    limits: &TransportLimits,
) -> Result<Option<(FrameKind, Vec<u8>)>, StreamFailure> {
    let mut header = [0u8; HEADER_BYTES];
    // The first byte alone tells a clean end from a cut frame.
    match recv.read(&mut header[..1]).await {
        Ok(None) => return Ok(None),
        Ok(Some(_)) => {}
        Err(e) => return Err(StreamFailure::Read(e)),
    }
    read_exact(recv, &mut header[1..]).await?;
    let header = FrameHeader::parse(header, limits.frame_bytes_max).map_err(StreamFailure::Protocol)?;
    let mut payload = vec![0u8; header.len as usize];
    read_exact(recv, &mut payload).await?;
    Ok(Some((header.kind, payload)))
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), StreamFailure> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Err(StreamFailure::Protocol(ProtocolError::Truncated)),
        Err(quinn::ReadExactError::ReadError(e)) => Err(StreamFailure::Read(e)),
    }
}

async fn write_frame(
    send: &mut SendStream,
    kind: FrameKind,
    payload: &[u8],
    limits: &TransportLimits,
) -> Result<(), StreamFailure> {
    let header = FrameHeader::encode(kind, payload.len(), limits.frame_bytes_max).map_err(StreamFailure::Protocol)?;
    send.write_all(&header).await.map_err(StreamFailure::Write)?;
    send.write_all(payload).await.map_err(StreamFailure::Write)
}

async fn read_control(recv: &mut RecvStream, limits: &TransportLimits) -> Result<ControlMessage, StreamFailure> {
    match read_frame(recv, limits).await? {
        Some((FrameKind::Control, payload)) => ControlMessage::decode(&payload).map_err(StreamFailure::Protocol),
        Some((kind, _)) => {
            Err(StreamFailure::Protocol(ProtocolError::UnexpectedFrame { expected: "Control", got: kind }))
        }
        None => Err(StreamFailure::Protocol(ProtocolError::MissingEnd)),
    }
}

fn check_hello(
    conn: &quinn::Connection,
    local: &NodeIdentity,
    presented: &NodeIdentity,
    hello: &ControlMessage,
) -> Result<(), TransportError> {
    let ControlMessage::Hello { version, node } = hello;
    if node != presented {
        let err = TransportError::WrongPeer {
            local: local.clone(),
            expected: format!("{node} (as its Hello claims)"),
            presented: presented.clone(),
        };
        conn.close(VarInt::from_u32(CLOSE_IDENTITY), err.to_string().as_bytes());
        return Err(err);
    }
    if *version != PROTOCOL_VERSION {
        let e = ProtocolError::BadControl {
            reason: format!("protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})"),
        };
        return Err(protocol(conn, presented, "control", e));
    }
    Ok(())
}

/// Closes the connection for a protocol violation and returns the error.
fn protocol(conn: &quinn::Connection, peer: &NodeIdentity, stream: &str, error: ProtocolError) -> TransportError {
    let err = TransportError::Protocol { peer: peer.clone(), stream: stream.to_owned(), error };
    tracing::warn!("closing the connection: {err}");
    conn.close(VarInt::from_u32(CLOSE_PROTOCOL), err.to_string().as_bytes());
    err
}

fn stream_failure(conn: &quinn::Connection, e: StreamFailure, peer: &NodeIdentity, stream: &str) -> TransportError {
    match e {
        StreamFailure::Protocol(p) => protocol(conn, peer, stream, p),
        StreamFailure::Connection(e) => TransportError::Closed { peer: peer.to_string(), reason: describe_close(&e) },
        StreamFailure::Read(quinn::ReadError::ConnectionLost(e))
        | StreamFailure::Write(quinn::WriteError::ConnectionLost(e)) => {
            TransportError::Closed { peer: peer.to_string(), reason: describe_close(&e) }
        }
        StreamFailure::Read(e) => TransportError::Closed { peer: peer.to_string(), reason: format!("{stream}: {e}") },
        StreamFailure::Write(e) => TransportError::Closed { peer: peer.to_string(), reason: format!("{stream}: {e}") },
    }
}

/// A close as a person reads it: the peer's reason text when it gave one.
fn describe_close(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            format!("closed by the peer (code {}): {}", close.error_code, String::from_utf8_lossy(&close.reason))
        }
        other => other.to_string(),
    }
}

fn peer_identity(conn: &quinn::Connection) -> Result<NodeIdentity, TransportError> {
    let certs =
        conn.peer_identity().and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok()).ok_or_else(|| {
            TransportError::Handshake {
                peer: conn.remote_address().to_string(),
                reason: "the peer presented no certificate".into(),
            }
        })?;
    let leaf = certs.first().ok_or_else(|| TransportError::Handshake {
        peer: conn.remote_address().to_string(),
        reason: "the peer presented no certificate".into(),
    })?;
    Ok(NodeIdentity::from_certificate(leaf)?)
}

/// Arrow types the receiver's IPC check refuses are refused before anything is sent.
fn check_sendable(schema: &SchemaRef) -> Result<(), String> {
    for field in schema.fields() {
        if matches!(field.data_type(), DataType::Dictionary(..)) {
            return Err(format!("column {:?}: dictionary columns cannot cross a channel yet", field.name()));
        }
    }
    Ok(())
}

/// Decodes one IPC batch message against the channel's schema message, through
/// `flumen_batch::ipc`, which checks every length before Arrow's reader sees it.
/// With an empty `batch`, checks the schema alone.
fn decode_ipc(schema: &[u8], batch: &[u8], kind: FrameKind) -> Result<Option<RecordBatch>, ProtocolError> {
    let ipc = |reason: String| ProtocolError::Ipc { kind, reason };
    let mut stream = Vec::with_capacity(schema.len() + batch.len());
    stream.extend_from_slice(schema);
    stream.extend_from_slice(batch);
    let mut batches = flumen_batch::ipc::decode(&stream).map_err(|e| ipc(e.to_string()))?;
    match (batch.is_empty(), batches.len()) {
        (true, 0) if !schema.is_empty() => Ok(None),
        (false, 1) => Ok(batches.pop()),
        (_, n) => Err(ipc(format!("expected one record batch message, found {n}"))),
    }
}
