//! Durable files: written to a temp name, then made durable by `flumen_types::durable::publish`;
//! and verified (size, SHA-256) before they are trusted.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{StateError, StateFile};

/// Suffix of a file being written; never referenced by a manifest.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` durably as `dir/name` and describes it (`full` = true: it stands alone).
///
/// The bytes go to `name.tmp`, which is fsynced and renamed to `name`; then `dir` is fsynced, so
/// after a crash `name` either does not exist or holds exactly `bytes`.
pub fn write_file_durably(dir: &Path, name: &str, bytes: &[u8], checkpoint: u64) -> Result<StateFile, StateError> {
    let mut file = DurableFile::create(dir, name)?;
    file.write_all(bytes).map_err(|e| io_error(file.temp_path(), &e))?;
    let (len, sha256) = file.commit()?;
    Ok(StateFile { name: name.to_owned(), bytes: len, sha256, full: true, checkpoint })
}

/// Writes `bytes` durably as the new file `dir/name` unless a file of that name exists: the
/// create-if-absent sibling of [`write_file_durably`], for names that writers in several processes
/// may race to take. Returns `None`, having written nothing, when `dir/name` exists already
/// (another writer took it first).
///
/// The bytes go to a temporary file unique to this call (`name.<pid>-<n>.tmp`), which is fsynced
/// and hard-linked as `name` (`flumen_types::durable::create`), so exactly one of several racing
/// writers succeeds and the file is never replaced; then the temporary name is removed and `dir` is
/// fsynced.
pub fn create_file_durably(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    checkpoint: u64,
) -> Result<Option<StateFile>, StateError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    check_file_name(name).map_err(StateError::Limit)?;
    let path = dir.join(name);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = format!("{name}.{}-{n}{TEMP_SUFFIX}", std::process::id());
    match flumen_types::durable::create(&path, &temp, bytes) {
        Ok(()) => Ok(Some(StateFile {
            name: name.to_owned(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            full: true,
            checkpoint,
        })),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(io_error(&path, &e)),
    }
}

/// Checks that `dir/f.name` exists with the recorded size and SHA-256.
///
/// A missing, resized or altered file is [`StateError::Corrupt`] naming it; a file that cannot be
/// read is [`StateError::Io`].
pub fn verify_file(dir: &Path, f: &StateFile) -> Result<(), StateError> {
    let path = dir.join(&f.name);
    if let Err(message) = check_file_name(&f.name) {
        return Err(StateError::Corrupt { path, message });
    }
    let corrupt = |message: String| StateError::Corrupt { path: path.clone(), message };
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(corrupt("file is missing".to_owned())),
        Err(e) => return Err(io_error(&path, &e)),
    };
    let len = file.metadata().map_err(|e| io_error(&path, &e))?.len();
    if len != f.bytes {
        return Err(corrupt(format!("{len} bytes, expected {}", f.bytes)));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(&path, &e)),
        };
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    if read != f.bytes {
        return Err(corrupt(format!("read {read} bytes, expected {}", f.bytes)));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != f.sha256 {
        return Err(corrupt(format!("sha256 {actual}, expected {}", f.sha256)));
    }
    Ok(())
}

/// A file being written durably: bytes go through a SHA-256 to `name.tmp` until [`Self::commit`].
///
/// Dropped without `commit`, it removes its temp file (best effort).
pub(crate) struct DurableFile {
    out: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
    temp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl DurableFile {
    pub(crate) fn create(dir: &Path, name: &str) -> Result<Self, StateError> {
        check_file_name(name).map_err(StateError::Limit)?;
        let path = dir.join(name);
        let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
        let file = File::create(&temp).map_err(|e| io_error(&temp, &e))?;
        Ok(Self {
            out: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            bytes: 0,
            temp,
            path,
            committed: false,
        })
    }

    pub(crate) fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The bytes written so far and their SHA-256 (hex), before [`Self::commit`] gives them the
    /// final name: lets a caller refuse bytes that are not what it expected.
    pub(crate) fn digest(&self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.clone().finalize()))
    }

    /// Flushes and fsyncs the temp file, renames it into place and fsyncs the directory.
    /// Returns the size and the SHA-256 (hex) of what was written.
    pub(crate) fn commit(mut self) -> Result<(u64, String), StateError> {
        self.out.flush().map_err(|e| io_error(&self.temp, &e))?;
        flumen_types::durable::publish(self.out.get_ref(), &self.temp, &self.path)
            .map_err(|e| io_error(&self.path, &e))?;
        self.committed = true;
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok((self.bytes, sha256))
    }
}

impl Write for DurableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for DurableFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Fsyncs a directory so that the entries created or renamed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StateError> {
    flumen_types::durable::sync_dir(dir).map_err(|e| io_error(dir, &e))
}

/// Creates `dir` (and its parents) and fsyncs its parent so that the new entry survives a crash.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<(), StateError> {
    flumen_types::durable::create_dir(dir).map_err(|e| io_error(dir, &e))
}

/// A file name must be one plain path component, so that a name read from a manifest can never
/// reach outside its directory.
pub(crate) fn check_file_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.ends_with(TEMP_SUFFIX);
    if plain { Ok(()) } else { Err(format!("{name:?} is not a plain file name")) }
}

pub(crate) fn io_error(path: &Path, e: &io::Error) -> StateError {
    StateError::Io { path: path.to_owned(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_write_then_verify() {
        let dir = tempfile::tempdir().unwrap();
        let f = write_file_durably(dir.path(), "c000000000007-guest", b"hello", 7).unwrap();
        assert_eq!(f.bytes, 5);
        assert_eq!(f.checkpoint, 7);
        assert!(f.full);
        assert_eq!(f.sha256, hex::encode(Sha256::digest(b"hello")));
        verify_file(dir.path(), &f).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c000000000007-guest"], "no temp file is left behind");

        fs::write(dir.path().join(&f.name), b"hellO").unwrap();
        let err = verify_file(dir.path(), &f).unwrap_err();
        assert!(matches!(&err, StateError::Corrupt { message, .. } if message.contains("sha256")), "{err}");
        assert!(err.to_string().contains("c000000000007-guest"), "{err}");

        fs::write(dir.path().join(&f.name), b"hell").unwrap();
        let err = verify_file(dir.path(), &f).unwrap_err();
        assert!(matches!(&err, StateError::Corrupt { message, .. } if message.contains("4 bytes")), "{err}");

        fs::remove_file(dir.path().join(&f.name)).unwrap();
        let err = verify_file(dir.path(), &f).unwrap_err();
        assert!(matches!(&err, StateError::Corrupt { message, .. } if message.contains("missing")), "{err}");
    }

    #[test]
    fn create_durably_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = create_file_durably(dir.path(), "chk-000000000007.json", b"one", 7).unwrap().expect("free name");
        assert_eq!((f.bytes, f.checkpoint), (3, 7));
        verify_file(dir.path(), &f).unwrap();
        assert!(create_file_durably(dir.path(), "chk-000000000007.json", b"two", 7).unwrap().is_none());
        assert_eq!(fs::read(dir.path().join("chk-000000000007.json")).unwrap(), b"one");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["chk-000000000007.json"], "no temp file is left behind");
        assert!(matches!(create_file_durably(dir.path(), "../x", b"", 1), Err(StateError::Limit(_))));
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", ".", "..", "../x", "a/b", "x.tmp"] {
            assert!(matches!(write_file_durably(dir.path(), name, b"", 1), Err(StateError::Limit(_))), "{name:?}");
            let f = StateFile { name: name.to_owned(), bytes: 0, sha256: String::new(), full: true, checkpoint: 1 };
            assert!(matches!(verify_file(dir.path(), &f), Err(StateError::Corrupt { .. })), "{name:?}");
        }
    }
}
