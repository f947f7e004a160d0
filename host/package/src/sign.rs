//! Ed25519 keys in PEM files (PKCS#8 private, SPKI public) and the signature records a package
//! carries in `signatures/<key-id>.json`.
//!
//! # The signed message
//!
//! A signature is an Ed25519 signature (RFC 8032, pure, no context) over exactly these bytes,
//! UTF-8, lines separated by a single `\n` and no newline at the end:
//!
//! ```text
//! flumen-package-signature-v1
//! <name>
//! <version>
//! <package digest>
//! ```
//!
//! `<version>` is the semver version as written in the manifest (`1.2.0`), `<package digest>`
//! the `sha256:<64 hex>` of `manifest.json`. Naming the package and the version beside the
//! digest keeps a signature from being read as an endorsement of another name.
//!
//! # The key id
//!
//! A public key's id is the first 16 lowercase hex digits of the SHA-256 of its 32 raw Ed25519
//! bytes (not of the PEM or DER). It names the signature file and the key in messages.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsio::{self, ReadError};

/// The most bytes of a key file. A key PEM is under 200 bytes; this stops a path pointed at a
/// large file (by a trust file an attacker wrote) from being read into memory.
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// The only signature algorithm this format has.
pub const ALGORITHM: &str = "ed25519";

/// The first line of every signed message: the format's name and version.
pub const SIGNATURE_CONTEXT: &str = "flumen-package-signature-v1";

/// A private Ed25519 key. Its bytes are wiped when it is dropped; `Debug` shows only the key id.
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
}

/// A public Ed25519 key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: ed25519_dalek::VerifyingKey,
}

/// One signature over a package, as stored in `signatures/<key-id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The [`PublicKey::key_id`] of the key that signed.
    pub key_id: String,
    /// The package digest signed (`sha256:<64 hex>`).
    pub package: String,
    pub name: String,
    pub version: Version,
    /// Standard base64 (with padding) of the 64-byte signature.
    pub signature: String,
}

/// A key file that cannot be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write key file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("key file {} already exists; refusing to overwrite a key (move it away or pick another name)", path.display())]
    Exists { path: PathBuf },
    #[error("key file {} is {size} bytes; a key file holds at most {KEY_FILE_BYTES_MAX}", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{origin} is not an Ed25519 {kind} key in PEM ({message}); {}", kind.expected())]
    Pem { origin: String, kind: KeyKind, message: String },
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Which half of a key pair a key file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Private,
    Public,
}

impl KeyKind {
    fn expected(self) -> &'static str {
        match self {
            KeyKind::Private => {
                "expected PKCS#8 `-----BEGIN PRIVATE KEY-----`, as `openssl genpkey -algorithm ed25519` writes"
            }
            KeyKind::Public => "expected SPKI `-----BEGIN PUBLIC KEY-----`, as `openssl pkey -pubout` writes",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Private => "private",
            KeyKind::Public => "public",
        })
    }
}

/// Why a signature does not vouch for a package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature algorithm `{0}` is not supported (only `ed25519`)")]
    Algorithm(String),
    #[error("the signature names key {signed}, not the key {key} it was checked with")]
    KeyId { signed: String, key: String },
    #[error(
        "the signature is for package digest {signed}, but the package's digest is {actual} (the manifest changed after signing)"
    )]
    Digest { signed: String, actual: String },
    #[error("the signature is for `{signed}`, not `{actual}`")]
    Identity { signed: String, actual: String },
    #[error("the signature is not base64 of 64 bytes: {0}")]
    Encoding(String),
    #[error("the signature does not verify under key {key_id} (the package or the signature was altered)")]
    Invalid { key_id: String },
}

impl SigningKey {
    /// A new key from 32 bytes of operating-system randomness.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SigningKey { inner: ed25519_dalek::SigningKey::from_bytes(&seed) })
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem_file(path: &Path) -> Result<SigningKey, KeyError> {
        let text = Zeroizing::new(read_key_file(path)?);
        Self::from_pem_str(&text).map_err(|e| e.with_origin(path))
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem_str(pem: &str) -> Result<SigningKey, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim()).map(|inner| SigningKey { inner }).map_err(|e| {
            KeyError::Pem { origin: "the PEM text".to_owned(), kind: KeyKind::Private, message: e.to_string() }
        })
    }

    /// The key as PKCS#8 v1 PEM (the seed alone, as openssl writes it; OpenSSL 3.0 does not
    /// read the v2 form with the public key inside). The text is wiped when dropped.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let bytes = ed25519_dalek::pkcs8::KeypairBytes { secret_key: self.inner.to_bytes(), public_key: None };
        // Encoding 32 known-good bytes as a fixed ASN.1 structure cannot fail.
        bytes.to_pkcs8_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Writes the private key (PKCS#8 PEM, mode 0600 on unix) and the public key (SPKI PEM).
    /// Refuses to overwrite either file.
    pub fn write_pem_files(&self, private_path: &Path, public_path: &Path) -> Result<(), KeyError> {
        for path in [private_path, public_path] {
            if path.exists() {
                return Err(KeyError::Exists { path: path.to_path_buf() });
            }
        }
        write_new(private_path, self.to_pem().as_bytes(), true)?;
        write_new(public_path, self.public_key().to_pem().as_bytes(), false)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { inner: self.inner.verifying_key() }
    }

    /// The id of this key's public half.
    pub fn key_id(&self) -> String {
        self.public_key().key_id()
    }

    pub(crate) fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Reads an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem_file(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read_key_file(path)?;
        Self::from_pem_str(&text).map_err(|e| e.with_origin(path))
    }

    /// Parses an SPKI PEM public key.
    pub fn from_pem_str(pem: &str) -> Result<PublicKey, KeyError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim()).map(|inner| PublicKey { inner }).map_err(|e| {
            KeyError::Pem { origin: "the PEM text".to_owned(), kind: KeyKind::Public, message: e.to_string() }
        })
    }

    /// The key as SPKI PEM, ending in a newline.
    pub fn to_pem(&self) -> String {
        // Encoding 32 known-good bytes as a fixed ASN.1 structure cannot fail.
        self.inner.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// The first 16 hex digits of the SHA-256 of the 32 raw key bytes.
    pub fn key_id(&self) -> String {
        let hash = Sha256::digest(self.inner.as_bytes());
        hex::encode(&hash[..8])
    }

    /// The 32 raw Ed25519 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.inner.as_bytes()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("key_id", &self.key_id()).finish()
    }
}

impl KeyError {
    /// The error naming the file the PEM text came from.
    fn with_origin(self, path: &Path) -> KeyError {
        match self {
            KeyError::Pem { kind, message, .. } => KeyError::Pem { origin: path.display().to_string(), kind, message },
            other => other,
        }
    }
}

impl Signature {
    /// Signs package `name@version` whose digest is `package_digest`.
    pub fn new(key: &SigningKey, package_digest: &str, name: &str, version: &Version) -> Signature {
        let signature = key.sign_message(&signed_message(name, version, package_digest));
        Signature {
            algorithm: ALGORITHM.to_owned(),
            key_id: key.key_id(),
            package: package_digest.to_owned(),
            name: name.to_owned(),
            version: version.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(signature),
        }
    }

    /// Checks that this signature, made by `key`, vouches for package `name@version` whose digest
    /// is `pkg_digest`. The message checked is built from the arguments, not from the record.
    pub fn verify(
        &self,
        pkg_digest: &str,
        name: &str,
        version: &Version,
        key: &PublicKey,
    ) -> Result<(), SignatureError> {
        self.matches(pkg_digest, name, version)?;
        let key_id = key.key_id();
        if self.key_id != key_id {
            return Err(SignatureError::KeyId { signed: self.key_id.clone(), key: key_id });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.signature.as_bytes())
            .map_err(|e| SignatureError::Encoding(e.to_string()))?;
        let bytes: [u8; 64] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::Encoding(format!("it decodes to {} bytes", bytes.len())))?;
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        key.inner
            .verify_strict(&signed_message(name, version, pkg_digest), &signature)
            .map_err(|_| SignatureError::Invalid { key_id })
    }

    /// The checks that need no key: the algorithm, and that the record names this package.
    pub fn matches(&self, pkg_digest: &str, name: &str, version: &Version) -> Result<(), SignatureError> {
        if self.algorithm != ALGORITHM {
            return Err(SignatureError::Algorithm(self.algorithm.clone()));
        }
        if self.package != pkg_digest {
            return Err(SignatureError::Digest { signed: self.package.clone(), actual: pkg_digest.to_owned() });
        }
        if self.name != name || &self.version != version {
            return Err(SignatureError::Identity {
                signed: format!("{}@{}", self.name, self.version),
                actual: format!("{name}@{version}"),
            });
        }
        Ok(())
    }
}

/// The exact bytes a signature covers (see the module docs).
pub fn signed_message(name: &str, version: &Version, package_digest: &str) -> Vec<u8> {
    format!("{SIGNATURE_CONTEXT}\n{name}\n{version}\n{package_digest}").into_bytes()
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    fsio::read_text_limited(path, KEY_FILE_BYTES_MAX).map_err(|e| match e {
        ReadError::Io(source) => KeyError::Read { path: path.to_path_buf(), source },
        ReadError::TooLarge { size } => KeyError::TooLarge { path: path.to_path_buf(), size },
    })
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), KeyError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let write = |source| KeyError::Write { path: path.to_path_buf(), source };
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists { path: path.to_path_buf() }
        } else {
            write(source)
        }
    })?;
    file.write_all(bytes).map_err(write)?;
    file.sync_all().map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> String {
        crate::digest::content_digest(b"manifest")
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let key = SigningKey::generate().unwrap();
        let v = Version::new(1, 2, 0);
        let sig = Signature::new(&key, &digest(), "upper", &v);
        assert_eq!(sig.key_id, key.key_id());
        assert_eq!(sig.key_id.len(), 16);
        sig.verify(&digest(), "upper", &v, &key.public_key()).unwrap();

        // Through JSON, as the file holds it.
        let text = serde_json::to_string(&sig).unwrap();
        assert!(text.contains("\"algorithm\":\"ed25519\""), "{text}");
        let back: Signature = serde_json::from_str(&text).unwrap();
        back.verify(&digest(), "upper", &v, &key.public_key()).unwrap();
    }

    #[test]
    fn verify_refuses_another_package_key_or_altered_bytes() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let v = Version::new(1, 2, 0);
        let sig = Signature::new(&key, &digest(), "upper", &v);

        let other_digest = crate::digest::content_digest(b"other");
        assert!(matches!(
            sig.verify(&other_digest, "upper", &v, &key.public_key()),
            Err(SignatureError::Digest { .. })
        ));
        assert!(matches!(sig.verify(&digest(), "lower", &v, &key.public_key()), Err(SignatureError::Identity { .. })));
        let v2 = Version::new(1, 2, 1);
        assert!(matches!(sig.verify(&digest(), "upper", &v2, &key.public_key()), Err(SignatureError::Identity { .. })));
        assert!(matches!(sig.verify(&digest(), "upper", &v, &other.public_key()), Err(SignatureError::KeyId { .. })));

        // A record whose fields were edited to claim another package fails the cryptography.
        let mut forged = sig.clone();
        forged.package = other_digest.clone();
        assert_eq!(
            forged.verify(&other_digest, "upper", &v, &key.public_key()),
            Err(SignatureError::Invalid { key_id: key.key_id() })
        );

        let mut short = sig.clone();
        short.signature = "AAAA".to_owned();
        assert!(matches!(short.verify(&digest(), "upper", &v, &key.public_key()), Err(SignatureError::Encoding(_))));
        let mut algo = sig;
        algo.algorithm = "rsa".to_owned();
        assert!(matches!(algo.verify(&digest(), "upper", &v, &key.public_key()), Err(SignatureError::Algorithm(_))));
    }

    #[test]
    fn signed_message_is_the_documented_bytes() {
        let d = digest();
        let message = signed_message("upper", &Version::new(1, 2, 0), &d);
        assert_eq!(message, format!("flumen-package-signature-v1\nupper\n1.2.0\n{d}").into_bytes());
    }

    #[test]
    fn keys_written_read_back_and_private_file_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub.pem"));
        let key = SigningKey::generate().unwrap();
        key.write_pem_files(&private, &public).unwrap();

        let text = std::fs::read_to_string(&private).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        assert!(std::fs::read_to_string(&public).unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
        let read = SigningKey::from_pem_file(&private).unwrap();
        assert_eq!(read.public_key(), key.public_key());
        assert_eq!(PublicKey::from_pem_file(&public).unwrap(), key.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }

        let err = key.write_pem_files(&private, &dir.path().join("new.pub.pem")).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert!(!dir.path().join("new.pub.pem").exists());
    }

    #[test]
    fn debug_does_not_show_the_private_key() {
        let key = SigningKey::generate().unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.key_id()), "{debug}");
        assert!(!debug.contains(&hex::encode(key.inner.to_bytes())), "{debug}");
    }

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pem");
        std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
        let err = PublicKey::from_pem_file(&path).unwrap_err();
        assert!(err.to_string().contains("bad.pem") && err.to_string().contains("BEGIN PUBLIC KEY"), "{err}");
        // A public key where a private one belongs.
        let err = SigningKey::from_pem_file(&path).unwrap_err();
        assert!(matches!(err, KeyError::Pem { kind: KeyKind::Private, .. }), "{err}");

        std::fs::write(&path, vec![b'x'; KEY_FILE_BYTES_MAX as usize + 1]).unwrap();
        assert!(matches!(PublicKey::from_pem_file(&path), Err(KeyError::TooLarge { .. })));
    }

    #[test]
    fn key_id_is_sha256_of_raw_bytes() {
        let key = SigningKey::generate().unwrap().public_key();
        let full = hex::encode(Sha256::digest(key.as_bytes()));
        assert_eq!(key.key_id(), full[..16]);
    }

    /// Keys made by openssl read here, and a signature made here verifies under openssl's
    /// public key derivation (the two agree on the key bytes).
    #[test]
    fn openssl_keys_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("ossl.pem");
        let public = dir.path().join("ossl.pub.pem");
        let generated = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&private)
            .status();
        match generated {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("skipped: `openssl genpkey -algorithm ed25519` is not available here ({other:?})");
                return;
            }
        }
        let status = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap();
        assert!(status.success());
        let key = SigningKey::from_pem_file(&private).unwrap();
        let pubkey = PublicKey::from_pem_file(&public).unwrap();
        assert_eq!(key.public_key(), pubkey);
        let v = Version::new(0, 1, 0);
        Signature::new(&key, &digest(), "upper", &v).verify(&digest(), "upper", &v, &pubkey).unwrap();
        // openssl reads what this crate writes.
        let mine = dir.path().join("mine.pem");
        let mine_pub = dir.path().join("mine.pub.pem");
        key.write_pem_files(&mine, &mine_pub).unwrap();
        let out = std::process::Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&mine).output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), std::fs::read_to_string(&mine_pub).unwrap());
    }
}
