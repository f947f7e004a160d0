//! The `blobs` capability as a trait: what a guest's blob calls and the
//! host's handling of blob columns need from the store behind them, with the
//! vocabulary both sides share (references, digests, pins, errors).
//! `flumen-wasm` and `flumen-batch` call it; `flumen-blob` implements it on its
//! `BlobStore`. Neither knows the other.

use std::sync::Weak;

use bytes::Bytes;

/// Bytes of a blob digest (SHA-256).
pub const DIGEST_BYTES: usize = 32;
/// Bytes of a reference's token (a truncated keyed MAC).
pub const TOKEN_BYTES: usize = 16;
/// Media type of bytes whose kind is unknown.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The SHA-256 of a blob's bytes: its name.
pub type Digest = [u8; DIGEST_BYTES];

/// A reference to a blob: one row of a `flumen.blob` column.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef {
    /// SHA-256 of the bytes.
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// Proof that the host made this reference for this job.
    pub token: [u8; TOKEN_BYTES],
}

impl BlobRef {
    /// The digest in lowercase hex (how logs and files name a blob).
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

/// The first 8 bytes of a digest in hex: how errors and logs name a blob.
pub fn short(d: &Digest) -> String {
    hex::encode(&d[..8])
}

/// Why a blob operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The token does not match: forged, altered, or made for another job.
    #[error(
        "blob reference {digest}… is forged or belongs to another job (its token does not match); \
         an operator can only use references it was handed"
    )]
    Forged { digest: String },
    /// The reference is genuine but the store no longer holds the bytes.
    #[error(
        "blob {digest}… was released: nothing kept it alive (a reference kept past the call that handed it over must \
         be retained)"
    )]
    Released { digest: String },
    #[error("blob {digest}…: {message}")]
    Read { digest: String, message: String },
    #[error("{source_name}: {message}")]
    Source { source_name: String, message: String },
    #[error("blob store: {0}")]
    Io(String),
}

/// What [`BlobBackend::stat`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    pub media_type: String,
    pub source: Option<String>,
}

/// Whoever counts a backend's pins: told when a pin of `digests` drops.
pub trait PinHolder: Send + Sync {
    fn unpin(&self, digests: &[Digest]);
}

/// Keeps blobs alive while it lives. Holding the same digest twice counts
/// twice. Made by a [`BlobBackend`]; outliving the backend is harmless.
pub struct BlobPin {
    holder: Option<Weak<dyn PinHolder>>,
    digests: Vec<Digest>,
}

impl BlobPin {
    /// A pin of nothing.
    pub fn empty() -> Self {
        Self { holder: None, digests: Vec::new() }
    }

    /// A pin of `digests` that `holder` has already counted; dropping it
    /// calls [`PinHolder::unpin`] once, if the holder is still alive.
    pub fn held(holder: Weak<dyn PinHolder>, digests: Vec<Digest>) -> Self {
        Self { holder: Some(holder), digests }
    }

    /// The digests this pin holds.
    pub fn digests(&self) -> &[Digest] {
        &self.digests
    }
}

impl std::fmt::Debug for BlobPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobPin").field("digests", &self.digests.len()).finish()
    }
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take().and_then(|w| w.upgrade()) {
            holder.unpin(&self.digests);
        }
    }
}

/// One job's blob store, as operators and the host's batch handling use it.
/// Every reference handed in is checked ([`BlobBackend::check`]) before its
/// bytes are served: a forged one, or one from another job, is refused.
pub trait BlobBackend: Send + Sync + std::fmt::Debug {
    /// Stores `data` (deduplicated by digest) and returns its reference,
    /// pinned until the caller lets go of the pin.
    fn put(&self, data: Bytes, media_type: &str, source: Option<String>) -> Result<(BlobRef, BlobPin), BlobError>;
    /// That `r` was made by this store (its token) and that it still holds it.
    fn check(&self, r: &BlobRef) -> Result<(), BlobError>;
    /// Checks `r` and pins it.
    fn pin(&self, r: &BlobRef) -> Result<BlobPin, BlobError>;
    /// Pins blobs by digest, without checking tokens: for references that
    /// came from this store already (the caller vouches for them).
    fn pin_digests(&self, digests: &[Digest]) -> Result<BlobPin, BlobError>;
    /// Size, media type and source of a checked reference.
    fn stat(&self, r: &BlobRef) -> Result<BlobInfo, BlobError>;
    /// Bytes `[offset, offset + len)` of a checked reference, cut at its end.
    fn read(&self, r: &BlobRef, offset: u64, len: u64) -> Result<Bytes, BlobError>;
    /// The reference this store would hand out for `digest`, if it holds it.
    fn reference_of(&self, digest: &Digest) -> Option<BlobRef>;
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Default)]
    struct Counter(Mutex<Vec<Digest>>);

    impl PinHolder for Counter {
        fn unpin(&self, digests: &[Digest]) {
            self.0.lock().unwrap().extend_from_slice(digests);
        }
    }

    #[test]
    fn a_pin_unpins_its_digests_once_on_drop_and_not_after_its_holder_is_gone() {
        let holder = Arc::new(Counter::default());
        let weak: Weak<dyn PinHolder> = Arc::downgrade(&(holder.clone() as Arc<dyn PinHolder>));
        let pin = BlobPin::held(weak.clone(), vec![[1; 32], [1; 32]]);
        assert_eq!(pin.digests().len(), 2);
        drop(pin);
        assert_eq!(*holder.0.lock().unwrap(), vec![[1; 32], [1; 32]]);

        let orphan = BlobPin::held(weak, vec![[2; 32]]);
        drop(holder);
        drop(orphan); // the holder is gone: nothing to tell, no panic
        drop(BlobPin::empty());
    }

    #[test]
    fn digests_print_as_lowercase_hex() {
        let mut d = [0u8; 32];
        d[0] = 0xab;
        d[7] = 0x01;
        assert_eq!(short(&d), "ab00000000000001");
        let r = BlobRef { digest: d, size: 0, media_type: String::new(), token: [0; 16] };
        assert_eq!(r.digest_hex().len(), 64);
        assert!(r.digest_hex().starts_with("ab00000000000001"));
    }
}
