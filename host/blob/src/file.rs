//! Local files served in place: how the store knows a file is still the one
//! it hashed, so that a reference never resolves to other bytes.
//!
//! Size and modification time are not enough: `cp -p`, `rsync -t` and `tar x`
//! restore the modification time after rewriting a file. A [`FileStamp`] also
//! holds the device, the inode and the status-change time (ctime), which the
//! kernel sets to the current time on every write, truncation, rename onto the
//! path or time change and which no unprivileged call can set back. So once a
//! file's ctime lies well in the past ([`SETTLE`], more than the coarsest
//! timestamp tick of a Linux file system), any later change to it gives a
//! different stamp, and checking the stamp before and after a read proves the
//! bytes read are the bytes hashed.
//!
//! Until then (a file changed just before the job hashed it, whose next change
//! could fall in the same tick) and after a restart (the file may have changed
//! between runs), a read streams the whole file through SHA-256 and serves only
//! bytes from that pass whose digest matched. A whole-blob read always does.

use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::Digest;

/// How far in the past a file's change time must be before its stamp alone
/// vouches for its bytes.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Chunk size of streamed reads.
const CHUNK: usize = 1 << 16;

/// What identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub len: u64,
    pub modified: Option<SystemTime>,
    /// Device and inode: a file replaced by another under the same path differs.
    pub dev: u64,
    pub ino: u64,
    /// Status-change time (seconds, nanoseconds); set by the kernel on every change.
    pub ctime: (i64, i64),
}

impl FileStamp {
    pub fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino, ctime) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), (meta.ctime(), meta.ctime_nsec()))
        };
        #[cfg(not(unix))]
        let (dev, ino, ctime) = (0, 0, (i64::MAX, 0));
        Self { len: meta.len(), modified: meta.modified().ok(), dev, ino, ctime }
    }

    /// Whether the change time is at least [`SETTLE`] old now (never, without one).
    pub fn settled_now(&self) -> bool {
        let (secs, nanos) = self.ctime;
        let Ok(secs) = u64::try_from(secs) else { return false };
        let changed = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos.clamp(0, 999_999_999) as u32);
        SystemTime::now().duration_since(changed).is_ok_and(|age| age >= SETTLE)
    }
}

fn stamp_of(f: &File, path: &Path) -> Result<FileStamp, String> {
    f.metadata().map(|m| FileStamp::of(&m)).map_err(|e| format!("{}: cannot stat: {e}", path.display()))
}

fn changed(path: &Path) -> String {
    format!(
        "{} changed after the job read it (its size, inode or change time differs); its blob is gone",
        path.display()
    )
}

/// Hashes `path`: its digest, size and the stamp it had throughout the read.
pub(crate) fn hash_file(path: &Path) -> Result<(Digest, u64, FileStamp), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let before = stamp_of(&f, path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let after = stamp_of(&f, path)?;
    let at_path = std::fs::metadata(path).map(|m| FileStamp::of(&m)).map_err(|e| format!("cannot stat: {e}"))?;
    if before != after || after != at_path || size != after.len {
        return Err("changed while it was being read".into());
    }
    Ok((hasher.finalize().into(), size, after))
}

/// Bytes `[start, start + n)` of the file `path` hashed as `digest` with
/// `stamp`. Refused if the stamp differs. Whole reads, and any read while
/// not `settled`, stream the whole file through SHA-256 and serve bytes from
/// that pass only if it matches. Returns the bytes and whether the stamp is
/// settled now (checked against the digest and old enough).
pub(crate) fn read_checked(
    path: &Path,
    stamp: &FileStamp,
    settled: bool,
    digest: &Digest,
    start: u64,
    n: usize,
    whole: bool,
) -> Result<(Bytes, bool), String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if stamp_of(&f, path)? != *stamp {
        return Err(changed(path));
    }
    let out = if whole || !settled {
        // One pass: what is served is part of what was hashed.
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|e| format!("{}: {e}", path.display()))?;
        let end = start + n as u64;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        loop {
            let got = f.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
            if got == 0 {
                break;
            }
            hasher.update(&buf[..got]);
            let (lo, hi) = (at.max(start), (at + got as u64).min(end));
            if lo < hi {
                out.extend_from_slice(&buf[(lo - at) as usize..(hi - at) as usize]);
            }
            at += got as u64;
        }
        let got: Digest = hasher.finalize().into();
        if at != stamp.len || got != *digest {
            return Err(format!(
                "{} changed after the job read it (its bytes no longer match the blob's digest); its blob is gone",
                path.display()
            ));
        }
        out
    } else {
        f.seek(SeekFrom::Start(start)).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = vec![0u8; n];
        f.read_exact(&mut out).map_err(|e| format!("{}: {e}", path.display()))?;
        out
    };
    if stamp_of(&f, path)? != *stamp {
        return Err(changed(path));
    }
    Ok((Bytes::from(out), settled || stamp.settled_now()))
}
