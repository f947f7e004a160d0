//! Control-plane messages: typed, versioned, on their own stream.
//!
//! A control frame's payload is one version byte ([`CONTROL_VERSION`]) and a
//! JSON-encoded [`ControlMessage`]. A version this node does not speak is an
//! error naming both versions, never a silent default; unknown fields and
//! unknown message types are errors too. New messages are new enum variants;
//! a change of an existing message's meaning is a new version.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::identity::NodeIdentity;

/// The control-message encoding this node speaks.
pub const CONTROL_VERSION: u8 = 1;
/// The transport protocol version a node announces in its `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message of the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// First message on every connection, both ways: who speaks, in which protocol version.
    Hello { version: u32, node: NodeIdentity },
}

impl ControlMessage {
    /// The payload of a control frame.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        encode_message(self)
    }

    /// Parses a control frame's payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        decode_message(payload)
    }
}

/// The payload of a control frame carrying `message`, a message of the
/// protocol spoken above the transport (the cluster's): the same version
/// byte and JSON as [`ControlMessage`]. The layer above versions its own
/// messages (its first message names its protocol version).
pub fn encode_message<M: Serialize>(message: &M) -> Result<Vec<u8>, ProtocolError> {
    let mut out = vec![CONTROL_VERSION];
    serde_json::to_writer(&mut out, message).map_err(|e| ProtocolError::BadControl { reason: e.to_string() })?;
    Ok(out)
}

/// Parses a control frame's payload as an `M`; anything else is a protocol error naming why.
pub fn decode_message<M: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<M, ProtocolError> {
    let (&version, body) =
        payload.split_first().ok_or(ProtocolError::BadControl { reason: "an empty control message".into() })?;
    if version != CONTROL_VERSION {
        return Err(ProtocolError::UnknownControlVersion { got: version, supported: CONTROL_VERSION });
    }
    serde_json::from_slice(body).map_err(|e| ProtocolError::BadControl { reason: e.to_string() })
}

impl Serialize for NodeIdentity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeIdentity::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_never_defaulted() {
        let hello = ControlMessage::Hello { version: PROTOCOL_VERSION, node: NodeIdentity::new("w-1").expect("id") };
        let bytes = hello.encode().expect("encodes");
        assert_eq!(ControlMessage::decode(&bytes).expect("decodes"), hello);
        let mut future = bytes.clone();
        future[0] = 2;
        assert_eq!(ControlMessage::decode(&future), Err(ProtocolError::UnknownControlVersion { got: 2, supported: 1 }));
        assert!(ControlMessage::decode(b"\x01{\"type\":\"hello\",\"version\":1,\"node\":\"W!\"}").is_err());
        assert!(ControlMessage::decode(b"\x01{\"type\":\"bye\"}").is_err());
        assert!(ControlMessage::decode(b"").is_err());
    }
}
