//! Large objects by reference: read the blobs a batch refers to, make new
//! ones, and build columns of references, through the host's `blobs`
//! capability.
//!
//! A column of blob references (`flumen.blob`, or the typed `flumen.image` /
//! `flumen.video`, see [`media`](crate::media)) holds only a digest, a size, a
//! media type and a token per row; the bytes stay in the host. An operator
//! that only passes references along (a filter, a projection, a router) needs
//! no grant and never sees the bytes. One that reads or makes blobs is granted
//! `capabilities = ["blobs"]` in the job spec:
//!
//! ```text
//! use flumen_sdk::blob::{self, BlobColumn};
//!
//! let refs = BlobColumn::new(batch.column(self.image))?;
//! for row in 0..refs.len() {
//!     let Some(r) = refs.get(row) else { continue };
//!     let bytes = blob::read_all(&r)?;          // one host call per 64 MiB
//!     let small = blob::create(&thumbnail(&bytes)?, "image/png")?;
//! }
//! ```
//!
//! A reference is valid while a batch carrying it is alive and during the
//! call that handed it over. To keep one past the call (in memory or in
//! [`state`](crate::state)), [`retain`] it; retained blobs are saved with
//! every checkpoint and survive restarts. Forged references, or references
//! from another job, are refused by the host with an error.

use std::io;

pub use flumen_batch::media::{BlobColumn, BlobColumnBuilder, BlobRef, DIGEST_BYTES, OCTET_STREAM, TOKEN_BYTES};

use crate::Error;
use crate::bindings::flumen::dataflow::blobs as wit;

/// Most bytes moved by one host call; larger reads and writes are split.
pub const CALL_BYTES_MAX: u64 = 64 << 20;

fn to_wit(r: &BlobRef) -> wit::BlobRefParam<'_> {
    wit::BlobRefParam { digest: &r.digest, size: r.size, media_type: &r.media_type, token: &r.token }
}

fn from_wit(r: wit::BlobRefResult) -> Result<BlobRef, Error> {
    let bad = || Error::internal("the host returned a malformed blob reference");
    Ok(BlobRef {
        digest: r.digest.as_slice().try_into().map_err(|_| bad())?,
        size: r.size,
        media_type: r.media_type,
        token: r.token.as_slice().try_into().map_err(|_| bad())?,
    })
}

/// What the host knows about a blob beyond its reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    pub media_type: String,
    /// Where the bytes came from (a path or URI), if they were read from one.
    pub source: Option<String>,
}

/// Makes a blob of `data` with `media_type`; equal bytes give equal references.
pub fn create(data: &[u8], media_type: &str) -> Result<BlobRef, Error> {
    if data.len() as u64 <= CALL_BYTES_MAX {
        return from_wit(wit::create(data, media_type)?);
    }
    let mut w = Writer::new();
    for chunk in data.chunks(CALL_BYTES_MAX as usize) {
        w.write_chunk(chunk)?;
    }
    w.finish(media_type)
}

/// Bytes `[offset, offset + len)` of `blob`, cut at its end.
pub fn read(blob: &BlobRef, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
    let end = offset.saturating_add(len).min(blob.size);
    let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
    let mut at = offset;
    // At least one call, even for no bytes: the host checks the reference,
    // so a forged or foreign one is refused as such, whatever its size.
    loop {
        let n = end.saturating_sub(at).min(CALL_BYTES_MAX);
        let piece = wit::read(to_wit(blob), at, n)?;
        if piece.is_empty() {
            break;
        }
        at += piece.len() as u64;
        out.extend_from_slice(&piece);
        if at >= end {
            break;
        }
    }
    Ok(out)
}

/// All bytes of `blob`.
pub fn read_all(blob: &BlobRef) -> Result<Vec<u8>, Error> {
    read(blob, 0, blob.size)
}

/// Checks `blob` with the host and describes it, without reading its bytes.
pub fn stat(blob: &BlobRef) -> Result<BlobInfo, Error> {
    let info = wit::stat(to_wit(blob))?;
    Ok(BlobInfo { size: info.size, media_type: info.media_type, source: info.source })
}

/// Keeps `blob` alive past the current call (until [`release`]); saved with checkpoints.
pub fn retain(blob: &BlobRef) -> Result<(), Error> {
    Ok(wit::retain(to_wit(blob))?)
}

/// Undoes one [`retain`].
pub fn release(blob: &BlobRef) -> Result<(), Error> {
    Ok(wit::release(to_wit(blob))?)
}

/// Reads a blob in pieces; implements [`std::io::Read`] and [`std::io::Seek`],
/// so decoders that take a reader can stream from the host.
#[derive(Debug)]
pub struct Reader {
    inner: wit::Reader,
    size: u64,
    pos: u64,
}

/// Opens `blob` for streaming reads.
pub fn open(blob: &BlobRef) -> Result<Reader, Error> {
    Ok(Reader { inner: wit::open(to_wit(blob))?, size: blob.size, pos: 0 })
}

impl Reader {
    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(CALL_BYTES_MAX);
        if want == 0 || self.pos >= self.size {
            return Ok(0);
        }
        let piece = self.inner.read(want).map_err(|e| io::Error::other(e.message))?;
        let n = piece.len().min(buf.len());
        buf[..n].copy_from_slice(&piece[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for Reader {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let target = match pos {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .filter(|t| *t <= self.size)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek outside the blob"))?;
        self.inner.seek(target).map_err(|e| io::Error::other(e.message))?;
        self.pos = target;
        Ok(target)
    }
}

/// Makes a large blob from pieces; implements [`std::io::Write`].
#[derive(Debug)]
pub struct Writer {
    inner: wit::Writer,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Self { inner: wit::Writer::new() }
    }

    fn write_chunk(&mut self, data: &[u8]) -> Result<(), Error> {
        Ok(self.inner.write(data)?)
    }

    /// Ends the blob and returns its reference.
    pub fn finish(self, media_type: &str) -> Result<BlobRef, Error> {
        from_wit(self.inner.finish(media_type)?)
    }
}

impl io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CALL_BYTES_MAX as usize);
        self.write_chunk(&buf[..n]).map_err(|e| io::Error::other(e.message))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
