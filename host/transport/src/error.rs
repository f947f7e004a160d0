//! Transport errors: what a caller can act on (which peer, which channel, which limit).

use crate::frame::FrameKind;
use crate::identity::{IdentityError, NodeIdentity};

/// A peer broke the wire protocol. The connection is closed with this as its reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("unknown frame kind {kind}")]
    UnknownFrameKind { kind: u8 },
    #[error("a {kind:?} frame of {len} bytes exceeds the limit of {max} bytes (frame_bytes_max)")]
    FrameTooLarge { kind: FrameKind, len: u64, max: u32 },
    #[error("a malformed {kind:?} frame payload")]
    BadPayload { kind: FrameKind },
    #[error("expected {expected}, got a {got:?} frame")]
    UnexpectedFrame { expected: &'static str, got: FrameKind },
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error("the stream ended without an End frame")]
    MissingEnd,
    #[error("a batch frame arrived without credit for it")]
    CreditExceeded,
    #[error("a credit grant overflows the credit limits")]
    CreditOverflow,
    #[error("invalid Arrow IPC in a {kind:?} frame: {reason}")]
    Ipc { kind: FrameKind, reason: String },
    #[error("control message version {got} is not supported (this node speaks version {supported})")]
    UnknownControlVersion { got: u8, supported: u8 },
    #[error("invalid control message: {reason}")]
    BadControl { reason: String },
    #[error("the peer did not speak in time ({what})")]
    Timeout { what: &'static str },
}

/// Everything the transport can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Certs(#[from] crate::certs::CertError),
    #[error(transparent)]
    TlsConfig(#[from] crate::tls::TlsConfigError),
    #[error("binding the endpoint failed: {0}")]
    Bind(std::io::Error),
    #[error("connecting to {expected} failed: {reason}")]
    Connect { expected: NodeIdentity, reason: String },
    #[error("the TLS handshake with {peer} failed: {reason}")]
    Handshake { peer: String, reason: String },
    #[error("the peer's certificate names no valid node: {0}")]
    PeerIdentity(#[from] IdentityError),
    #[error("node {local} expected peer {expected}, but the peer's certificate is for {presented}")]
    WrongPeer { local: NodeIdentity, expected: String, presented: NodeIdentity },
    #[error("the connection to {peer} is closed: {reason}")]
    Closed { peer: String, reason: String },
    #[error("protocol error from {peer} on {stream}: {error}")]
    Protocol { peer: NodeIdentity, stream: String, error: ProtocolError },
    #[error("channel {channel}: {reason}")]
    Channel { channel: u64, reason: String },
    #[error("no connection to node {peer}")]
    UnknownPeer { peer: NodeIdentity },
    #[error("the endpoint is closed")]
    EndpointClosed,
}
