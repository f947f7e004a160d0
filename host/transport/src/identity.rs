//! `NodeIdentity`: a node's name in the cluster, and how a certificate binds it.
//!
//! A node's certificate carries exactly one DNS subject alternative name of
//! the form `<node-id>.node.flumen` ([`NODE_NAME_SUFFIX`]). A DNS name (rather
//! than a URI) lets rustls itself check, during the handshake, that a server
//! is the node the client dialled; the transport then reads the identity back
//! from the verified certificate on both sides and compares it with the one
//! the caller expected, so the binding is checked by Flumen, not only by the
//! chain.

use std::fmt;

use rustls::pki_types::CertificateDer;

/// The DNS suffix under which node identities are written into certificates.
pub const NODE_NAME_SUFFIX: &str = ".node.flumen";

/// Longest node id: one DNS label (63 bytes), so `<id>.node.flumen` is a valid name.
pub const NODE_ID_BYTES_MAX: usize = 63;

/// A validated node id: 1 to [`NODE_ID_BYTES_MAX`] lowercase ASCII letters,
/// digits and `-`, neither starting nor ending with `-` (a DNS label).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIdentity(String);

/// Why a string or a certificate names no valid node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "invalid node id {id:?}: use 1 to {NODE_ID_BYTES_MAX} lowercase letters, digits and '-', not starting or ending with '-'"
    )]
    InvalidId { id: String },
    #[error("the peer's certificate could not be read: {reason}")]
    UnreadableCertificate { reason: String },
    #[error("the peer's certificate names no Flumen node (no DNS name ending in {NODE_NAME_SUFFIX})")]
    NoNodeName,
    #[error("the peer's certificate names several Flumen nodes ({names}); a node certificate names exactly one")]
    SeveralNodeNames { names: String },
}

impl NodeIdentity {
    /// Parses and validates a node id.
    pub fn new(id: &str) -> Result<Self, IdentityError> {
        let valid = !id.is_empty()
            && id.len() <= NODE_ID_BYTES_MAX
            && !id.starts_with('-')
            && !id.ends_with('-')
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid { Ok(Self(id.to_owned())) } else { Err(IdentityError::InvalidId { id: id.to_owned() }) }
    }

    /// The id as written (`worker-1`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The certificate name of this node (`worker-1.node.flumen`).
    pub fn dns_name(&self) -> String {
        format!("{}{NODE_NAME_SUFFIX}", self.0)
    }

    /// Reads the node identity from an end-entity certificate that rustls has
    /// already verified against the cluster CA.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| IdentityError::UnreadableCertificate { reason: e.to_string() })?;
        let mut found: Vec<Self> = Vec::new();
        for name in parsed.valid_dns_names() {
            if let Some(id) = name.strip_suffix(NODE_NAME_SUFFIX) {
                found.push(Self::new(id)?);
            }
        }
        match found.len() {
            0 => Err(IdentityError::NoNodeName),
            1 => Ok(found.remove(0)),
            _ => Err(IdentityError::SeveralNodeNames {
                names: found.iter().map(Self::as_str).collect::<Vec<_>>().join(", "),
            }),
        }
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NodeIdentity {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dns_labels() {
        for good in ["coordinator", "worker-1", "a", "0", &"x".repeat(63)] {
            assert_eq!(NodeIdentity::new(good).expect(good).as_str(), good);
        }
        for bad in ["", "Worker", "-a", "a-", "a.b", "a_b", "ü", &"x".repeat(64)] {
            assert!(NodeIdentity::new(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(NodeIdentity::new("w-2").expect("valid").dns_name(), "w-2.node.flumen");
    }
}
