//! The `blobs` capability: host functions that let a guest read the blobs it
//! was handed, make new ones and keep references past a call, with every
//! byte counted.
//!
//! Each reference a guest passes in is checked by the store (its token: a
//! forged reference, or one from another job, is refused with an error the
//! guest sees). Failures are WIT `error`s, never traps of the host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flumen_types::blob::{BlobBackend, BlobError, BlobPin, BlobRef, Digest, OCTET_STREAM, short};
use flumen_types::{HostMemoryCharge, HostMemoryExceeded};
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, LinkerInstance, Lower, Resource, ResourceType};

use crate::abi::{WitError, WitErrorKind};
use crate::instance::HostState;

/// Most bytes one `read`, `create` or `write` call moves.
pub const BLOB_CALL_BYTES_MAX: u64 = 64 << 20;
/// Most bytes a `writer` may gather (it holds them in host memory until
/// `finish`, charged to the instance's `host_memory_mb`, so the smaller of
/// the two bounds it).
pub const BLOB_WRITER_BYTES_MAX: u64 = 1 << 30;

/// A reference as it crosses the boundary.
#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct WitBlobRef {
    digest: Vec<u8>,
    pub(crate) size: u64,
    #[component(name = "media-type")]
    media_type: String,
    token: Vec<u8>,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct WitBlobInfo {
    size: u64,
    #[component(name = "media-type")]
    media_type: String,
    source: Option<String>,
}

/// An open `reader` resource; what it holds (its reference, with the
/// guest-sized media type) is charged to the instance's host memory budget
/// until the guest drops it.
pub(crate) struct ReaderRes {
    blob: BlobRef,
    pos: u64,
    _mem: HostMemoryCharge,
}

/// An open `writer` resource. Its buffer's capacity is charged to the
/// instance's host memory budget while it is open; the charge goes with the
/// buffer (at `finish`, to the blob store, which accounts for its own memory)
/// or when the guest drops the writer.
pub(crate) struct WriterRes {
    data: Option<Vec<u8>>,
    mem: HostMemoryCharge,
    /// The budget could not take even the writer itself.
    refused: bool,
}

impl WriterRes {
    /// Appends `data`, growing the buffer (and its charge) first: by half
    /// again, for amortised appends, or, if the budget cannot take that, by
    /// exactly what is needed.
    fn append(&mut self, data: &[u8]) -> Result<(), WitError> {
        let Some(buf) = self.data.as_mut() else {
            return Err(err(WitErrorKind::InvalidInput, "write after finish"));
        };
        if self.refused {
            // Charge what it should have held, to get the budget's own refusal.
            self.mem.grow(std::mem::size_of::<WriterRes>() as u64).map_err(over_budget)?;
            self.refused = false;
        }
        let needed = buf.len() as u64 + data.len() as u64;
        if needed > BLOB_WRITER_BYTES_MAX {
            return Err(err(WitErrorKind::Limit, format!("a blob of more than {BLOB_WRITER_BYTES_MAX} bytes")));
        }
        let cap = buf.capacity() as u64;
        if needed > cap {
            let roomy = needed.max(cap + cap / 2).min(BLOB_WRITER_BYTES_MAX);
            let new_cap = if self.mem.grow(roomy - cap).is_ok() {
                roomy
            } else {
                self.mem.grow(needed - cap).map_err(over_budget)?;
                needed
            };
            buf.reserve_exact((new_cap - buf.len() as u64) as usize);
            // The allocator may round up; what the budget holds is what was asked.
        }
        buf.extend_from_slice(data);
        Ok(())
    }
}

/// One subtask's view of the job's blob store: the store, and the blobs the
/// subtask's guest retained. Shared by every instance of the subtask (a
/// replacement after a retry keeps what was retained) and by the engine,
/// which saves the retained set with each checkpoint.
#[derive(Clone)]
pub struct BlobScope {
    store: Arc<dyn BlobBackend>,
    retained: Arc<Mutex<HashMap<Digest, Vec<BlobPin>>>>,
}

impl std::fmt::Debug for BlobScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobScope").field("retained", &self.retained_digests().len()).finish()
    }
}

impl BlobScope {
    pub fn new(store: Arc<dyn BlobBackend>) -> Self {
        Self { store, retained: Arc::default() }
    }

    pub fn store(&self) -> &dyn BlobBackend {
        self.store.as_ref()
    }

    /// Every retained digest, once per `retain` not yet released.
    pub fn retained_digests(&self) -> Vec<Digest> {
        let map = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Digest> = map.iter().flat_map(|(d, pins)| std::iter::repeat_n(*d, pins.len())).collect();
        out.sort();
        out
    }

    /// Retains `digests` again (a restored checkpoint's retained set); the
    /// store must hold them (the checkpoint pinned them).
    pub fn restore_retained(&self, digests: &[Digest]) -> Result<(), BlobError> {
        let mut map = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        map.clear();
        for d in digests {
            let r = self.store.reference_of(d).ok_or_else(|| BlobError::Released { digest: short(d) })?;
            let pin = self.store.pin(&r)?;
            map.entry(*d).or_default().push(pin);
        }
        Ok(())
    }

    fn retain(&self, r: &BlobRef) -> Result<(), BlobError> {
        let pin = self.store.pin(r)?;
        self.retained.lock().unwrap_or_else(|p| p.into_inner()).entry(r.digest).or_default().push(pin);
        Ok(())
    }

    fn release(&self, r: &BlobRef) -> Result<(), BlobError> {
        self.store.check(r).or_else(|e| if matches!(e, BlobError::Released { .. }) { Ok(()) } else { Err(e) })?;
        let mut map = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pins) = map.get_mut(&r.digest) else {
            return Err(BlobError::Read { digest: short(&r.digest), message: "released but never retained".into() });
        };
        pins.pop();
        if pins.is_empty() {
            map.remove(&r.digest);
        }
        Ok(())
    }
}

type Ret<T> = wasmtime::Result<(Result<T, WitError>,)>;

fn err(kind: WitErrorKind, message: impl Into<String>) -> WitError {
    WitError { kind, message: message.into() }
}

fn blob_err(e: BlobError) -> WitError {
    let kind = match e {
        BlobError::Forged { .. } | BlobError::Released { .. } => WitErrorKind::InvalidInput,
        _ => WitErrorKind::Internal,
    };
    err(kind, e.to_string())
}

/// A refused host memory charge, as the guest sees it: a `limit` error.
fn over_budget(e: HostMemoryExceeded) -> WitError {
    err(WitErrorKind::Limit, e.to_string())
}

pub(crate) fn from_wit(r: WitBlobRef) -> Result<BlobRef, WitError> {
    let bad = || err(WitErrorKind::InvalidInput, "malformed blob reference (digest must be 32 bytes, token 16)");
    Ok(BlobRef {
        digest: r.digest.try_into().map_err(|_| bad())?,
        size: r.size,
        media_type: r.media_type,
        token: r.token.try_into().map_err(|_| bad())?,
    })
}

fn to_wit(r: &BlobRef) -> WitBlobRef {
    WitBlobRef { digest: r.digest.to_vec(), size: r.size, media_type: r.media_type.clone(), token: r.token.to_vec() }
}

fn scope(store: &StoreContextMut<'_, HostState>) -> Result<BlobScope, WitError> {
    store.data().blobs().cloned().ok_or_else(|| err(WitErrorKind::Internal, "this job has no blob store"))
}

fn check_len(what: &str, n: u64) -> Result<(), WitError> {
    if n > BLOB_CALL_BYTES_MAX {
        return Err(err(
            WitErrorKind::Limit,
            format!("{what} of {n} bytes in one call (at most {BLOB_CALL_BYTES_MAX}; use a reader or writer)"),
        ));
    }
    Ok(())
}

fn create(mut store: StoreContextMut<'_, HostState>, data: Vec<u8>, media_type: &str) -> Result<WitBlobRef, WitError> {
    let s = scope(&store)?;
    let n = data.len() as u64;
    let media_type = if media_type.is_empty() { OCTET_STREAM } else { media_type };
    let (r, pin) = s.store().put(Bytes::from(data), media_type, None).map_err(blob_err)?;
    let host = store.data_mut();
    host.hold_for_call(pin);
    host.blob_bytes_created += n;
    Ok(to_wit(&r))
}

fn read(mut store: StoreContextMut<'_, HostState>, r: WitBlobRef, offset: u64, len: u64) -> Result<Vec<u8>, WitError> {
    let r = from_wit(r)?;
    let len = len.min(r.size.saturating_sub(offset));
    check_len("read", len)?;
    let s = scope(&store)?;
    // The store's buffer and the copy handed to the guest, charged before
    // either is made and held until the guest has the bytes.
    let data = store.data_mut();
    data.release_returned();
    let mem = data.host_memory().charge("a blob read", len.saturating_mul(2)).map_err(over_budget)?;
    data.hold_returned(mem);
    let bytes = s.store().read(&r, offset, len).map_err(blob_err)?;
    store.data_mut().blob_bytes_read += bytes.len() as u64;
    Ok(bytes.to_vec())
}

/// Links the `blobs` interface into `linker`.
pub(crate) fn link(linker: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("create", |store, (data, media): (Vec<u8>, String)| -> Ret<WitBlobRef> {
        Ok((check_len("create", data.len() as u64).and_then(|()| create(store, data, &media)),))
    })?;
    linker.func_wrap("read", |store, (r, offset, len): (WitBlobRef, u64, u64)| -> Ret<Vec<u8>> {
        Ok((read(store, r, offset, len),))
    })?;
    linker.func_wrap("stat", |store, (r,): (WitBlobRef,)| -> Ret<WitBlobInfo> {
        let run = || {
            let r = from_wit(r)?;
            let info = scope(&store)?.store().stat(&r).map_err(blob_err)?;
            Ok(WitBlobInfo { size: info.size, media_type: info.media_type, source: info.source })
        };
        Ok((run(),))
    })?;
    linker.func_wrap("retain", |store, (r,): (WitBlobRef,)| -> Ret<()> {
        Ok((from_wit(r).and_then(|r| scope(&store)?.retain(&r).map_err(blob_err)),))
    })?;
    linker.func_wrap("release", |store, (r,): (WitBlobRef,)| -> Ret<()> {
        Ok((from_wit(r).and_then(|r| scope(&store)?.release(&r).map_err(blob_err)),))
    })?;

    linker.resource("reader", ResourceType::host::<ReaderRes>(), |mut store, rep| {
        store.data_mut().table_mut().delete(Resource::<ReaderRes>::new_own(rep))?;
        Ok(())
    })?;
    linker.func_wrap("open", |mut store, (r,): (WitBlobRef,)| -> Ret<Resource<ReaderRes>> {
        let opened = from_wit(r).and_then(|r| {
            scope(&store)?.store().check(&r).map_err(blob_err)?;
            let held = std::mem::size_of::<ReaderRes>() + r.media_type.len();
            let mem = store.data().host_memory().charge("an open blob reader", held as u64).map_err(over_budget)?;
            Ok((r, mem))
        });
        Ok((match opened {
            Ok((blob, mem)) => Ok(store.data_mut().table_mut().push(ReaderRes { blob, pos: 0, _mem: mem })?),
            Err(e) => Err(e),
        },))
    })?;
    linker.func_wrap("[method]reader.read", |mut store, (this, max): (Resource<ReaderRes>, u64)| -> Ret<Vec<u8>> {
        let (blob, pos) = {
            let r = store.data_mut().table_mut().get(&this)?;
            (r.blob.clone(), r.pos)
        };
        let want = max.min(BLOB_CALL_BYTES_MAX);
        let got = read(store.as_context_mut(), to_wit(&blob), pos, want);
        if let Ok(bytes) = &got {
            store.data_mut().table_mut().get_mut(&this)?.pos = pos + bytes.len() as u64;
        }
        Ok((got,))
    })?;
    linker.func_wrap("[method]reader.seek", |mut store, (this, to): (Resource<ReaderRes>, u64)| -> Ret<()> {
        let r = store.data_mut().table_mut().get_mut(&this)?;
        if to > r.blob.size {
            return Ok((Err(err(WitErrorKind::InvalidInput, format!("seek to {to} past the end ({})", r.blob.size))),));
        }
        r.pos = to;
        Ok((Ok(()),))
    })?;

    linker.resource("writer", ResourceType::host::<WriterRes>(), |mut store, rep| {
        store.data_mut().table_mut().delete(Resource::<WriterRes>::new_own(rep))?;
        Ok(())
    })?;
    // The constructor cannot return an error: a writer the budget cannot
    // take is opened holding nothing, and its first `write` is refused.
    linker.func_wrap("[constructor]writer", |mut store, (): ()| -> wasmtime::Result<(Resource<WriterRes>,)> {
        let mut mem = store.data().host_memory().empty("an open blob writer");
        let refused = mem.grow(std::mem::size_of::<WriterRes>() as u64).is_err();
        Ok((store.data_mut().table_mut().push(WriterRes { data: Some(Vec::new()), mem, refused })?,))
    })?;
    linker.func_wrap("[method]writer.write", |mut store, (this, data): (Resource<WriterRes>, Vec<u8>)| -> Ret<()> {
        if let Err(e) = check_len("write", data.len() as u64) {
            return Ok((Err(e),));
        }
        let w = store.data_mut().table_mut().get_mut(&this)?;
        Ok((w.append(&data),))
    })?;
    linker.func_wrap(
        "[method]writer.finish",
        |mut store, (this, media): (Resource<WriterRes>, String)| -> Ret<WitBlobRef> {
            let w = store.data_mut().table_mut().get_mut(&this)?;
            let Some(data) = w.data.take() else {
                return Ok((Err(err(WitErrorKind::InvalidInput, "finish called twice")),));
            };
            // The buffer goes to the blob store, which accounts for it from here.
            w.mem.release();
            Ok((create(store.as_context_mut(), data, &media),))
        },
    )?;
    Ok(())
}

use wasmtime::AsContextMut as _;
