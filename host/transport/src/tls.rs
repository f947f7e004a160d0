//! rustls configurations for cluster links: TLS 1.3 only, mutual TLS always,
//! the cluster CA as the only root (no web PKI, no platform store), 0-RTT off,
//! ALPN `flumen/1`.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;

use crate::certs::NodeCredentials;

/// The one application protocol a Flumen node speaks over QUIC.
pub const ALPN: &[u8] = b"flumen/1";

/// A TLS configuration could not be built from a node's credentials.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("the cluster CA certificate is unusable as a trust anchor: {0}")]
    Anchor(rustls::Error),
    #[error("the client-certificate verifier could not be built: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the node certificate or key is unusable: {0}")]
    Certificate(rustls::Error),
    #[error("TLS 1.3 is unavailable: {0}")]
    Protocol(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(creds: &NodeCredentials) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    roots.add(creds.ca.clone()).map_err(TlsConfigError::Anchor)?;
    Ok(Arc::new(roots))
}

/// The server side: every client must present a certificate chaining to the cluster CA.
pub fn server_config(creds: &NodeCredentials) -> Result<rustls::ServerConfig, TlsConfigError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(creds)?, provider()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsConfigError::Protocol)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.cert_chain.clone(), creds.key.clone_key())
        .map_err(TlsConfigError::Certificate)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.max_early_data_size = 0; // No 0-RTT: replayable data has no place here.
    config.send_half_rtt_data = false;
    Ok(config)
}

/// The client side: the server must chain to the cluster CA and be valid for
/// the dialled node's name; this node presents its own certificate.
pub fn client_config(creds: &NodeCredentials) -> Result<rustls::ClientConfig, TlsConfigError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsConfigError::Protocol)?
        .with_root_certificates(roots(creds)?)
        .with_client_auth_cert(creds.cert_chain.clone(), creds.key.clone_key())
        .map_err(TlsConfigError::Certificate)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}
