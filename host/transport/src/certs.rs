//! The cluster CA and node certificates (`flumen certs`): generation with rcgen,
//! PEM files in one directory, and loading a node's credentials back.
//!
//! Layout of a certificate directory: `ca.pem` (the cluster CA certificate,
//! the only root a node trusts), `ca.key` (its key: keep it off the workers),
//! and per node `<node>.pem` (its certificate, signed by the CA, naming the
//! node as `<node>.node.flumen`) and `<node>.key`. Keys are written with mode
//! 0600 through the durable-write path (temp file, fsync, rename). Running
//! `flumen certs` again on a directory that has `ca.pem` and `ca.key` reuses
//! the CA, so nodes can be added to a running cluster.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::identity::NodeIdentity;

/// How long a cluster CA is valid when generated: ten years.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Default validity of a node certificate.
pub const NODE_VALIDITY_DAYS_DEFAULT: u32 = 365;
/// Longest validity `flumen certs` writes for a node (the CA's own lifetime).
pub const NODE_VALIDITY_DAYS_MAX: u32 = CA_VALIDITY_DAYS;
/// Largest PEM file read back: a certificate or key file bigger than this is
/// not one `flumen certs` wrote.
pub const PEM_FILE_BYTES_MAX: u64 = 64 * 1024;

const CA_COMMON_NAME: &str = "Flumen cluster CA";

/// What went wrong creating or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a PEM {what}: {reason}")]
    Pem { path: PathBuf, what: &'static str, reason: String },
    #[error("{path}: larger than {PEM_FILE_BYTES_MAX} bytes, not a Flumen certificate or key")]
    TooLarge { path: PathBuf },
    #[error("validity of {days} days is out of range (1 to {NODE_VALIDITY_DAYS_MAX})")]
    Validity { days: u32 },
    #[error("{dir}: has only one of ca.pem and ca.key; restore the other or use an empty directory")]
    HalfCa { dir: PathBuf },
}

/// The cluster CA: its certificate and the key that signs node certificates.
#[derive(Debug)]
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
}

/// A node certificate and its key, PEM-encoded.
#[derive(Debug)]
pub struct NodeCertificate {
    pub node: NodeIdentity,
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a node loads to join the cluster: the CA to trust and its own certificate and key.
#[derive(Debug)]
pub struct NodeCredentials {
    pub node: NodeIdentity,
    pub ca: CertificateDer<'static>,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeCredentials {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            ca: self.ca.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClusterCa {
    /// A fresh self-signed CA valid from now for [`CA_VALIDITY_DAYS`].
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = ca_params();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(i64::from(CA_VALIDITY_DAYS));
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), key })
    }

    /// The CA written in `dir`, or `None` when `dir` has neither `ca.pem` nor `ca.key`.
    pub fn load(dir: &Path) -> Result<Option<Self>, CertError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        match (cert_path.exists(), key_path.exists()) {
            (false, false) => return Ok(None),
            (true, true) => {}
            _ => return Err(CertError::HalfCa { dir: dir.to_owned() }),
        }
        let cert_pem = read_pem_text(&cert_path)?;
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| pem_error(&cert_path, "certificate", e))?;
        let key_pem = read_pem_text(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::Pem {
            path: key_path,
            what: "private key",
            reason: e.to_string(),
        })?;
        Ok(Some(Self { cert_pem, key }))
    }

    /// The CA certificate, PEM-encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `node`, valid from `not_before` to `not_after`
    /// (tests issue expired ones; [`ClusterCa::issue_for_days`] is the usual path).
    pub fn issue(
        &self,
        node: &NodeIdentity,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<NodeCertificate, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![node.dns_name()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node is both a server and a client of its peers.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        // The issuer is rebuilt from the CA's fixed parameters and its key, so a CA
        // loaded from disk signs exactly like a fresh one.
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(NodeCertificate { node: node.clone(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a certificate for `node` valid from now for `days` days.
    pub fn issue_for_days(&self, node: &NodeIdentity, days: u32) -> Result<NodeCertificate, CertError> {
        if days == 0 || days > NODE_VALIDITY_DAYS_MAX {
            return Err(CertError::Validity { days });
        }
        let now = OffsetDateTime::now_utc();
        self.issue(node, now - Duration::minutes(5), now + Duration::days(i64::from(days)))
    }
}

/// Writes a certificate directory: the CA (reused if `dir` has one, else created)
/// and one certificate per node. Returns whether the CA was created.
pub fn write_cluster_dir(dir: &Path, nodes: &[NodeIdentity], days: u32) -> Result<bool, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.to_owned(), source })?;
    let (ca, created) = match ClusterCa::load(dir)? {
        Some(ca) => (ca, false),
        None => (ClusterCa::generate()?, true),
    };
    if created {
        write_file(&dir.join("ca.key"), ca.key.serialize_pem().as_bytes(), true)?;
        write_file(&dir.join("ca.pem"), ca.cert_pem.as_bytes(), false)?;
    }
    for node in nodes {
        let issued = ca.issue_for_days(node, days)?;
        write_node_certificate(dir, &issued)?;
    }
    Ok(created)
}

/// Writes `<node>.key` (0600) and `<node>.pem` into `dir`.
pub fn write_node_certificate(dir: &Path, issued: &NodeCertificate) -> Result<(), CertError> {
    write_file(&dir.join(format!("{}.key", issued.node)), issued.key_pem.as_bytes(), true)?;
    write_file(&dir.join(format!("{}.pem", issued.node)), issued.cert_pem.as_bytes(), false)
}

impl NodeCredentials {
    /// Loads `node`'s credentials from a certificate directory.
    pub fn load(dir: &Path, node: &NodeIdentity) -> Result<Self, CertError> {
        let ca_path = dir.join("ca.pem");
        let ca = CertificateDer::from_pem_slice(read_pem_text(&ca_path)?.as_bytes())
            .map_err(|e| pem_error(&ca_path, "certificate", e))?;
        let cert_path = dir.join(format!("{node}.pem"));
        let cert = CertificateDer::from_pem_slice(read_pem_text(&cert_path)?.as_bytes())
            .map_err(|e| pem_error(&cert_path, "certificate", e))?;
        let key_path = dir.join(format!("{node}.key"));
        let key = PrivateKeyDer::from_pem_slice(read_pem_text(&key_path)?.as_bytes())
            .map_err(|e| pem_error(&key_path, "private key", e))?;
        Ok(Self { node: node.clone(), ca, cert_chain: vec![cert], key })
    }

    /// Credentials from PEM text (tests, and callers holding certificates elsewhere).
    pub fn from_pem(node: &NodeIdentity, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let here = PathBuf::from("<memory>");
        Ok(Self {
            node: node.clone(),
            ca: CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| pem_error(&here, "certificate", e))?,
            cert_chain: vec![
                CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| pem_error(&here, "certificate", e))?,
            ],
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| pem_error(&here, "private key", e))?,
        })
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn pem_error(path: &Path, what: &'static str, e: rustls::pki_types::pem::Error) -> CertError {
    CertError::Pem { path: path.to_owned(), what, reason: e.to_string() }
}

fn read_pem_text(path: &Path) -> Result<String, CertError> {
    let io = |source| CertError::Io { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(CertError::TooLarge { path: path.to_owned() });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Writes `bytes` to `path` by temp file, fsync and rename; `secret` files get mode 0600
/// before any byte is written.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    let io = |source| CertError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    // The directory is fsynced by `publish`.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(io)?;
    let result = file.write_all(bytes).and_then(|()| flumen_types::durable::publish(&file, &tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
