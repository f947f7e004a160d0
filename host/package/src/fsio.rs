//! File reads bounded by a size limit, writes that replace a file atomically, and the line a
//! TOML error in a file points at.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a bounded read failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// The file holds more than the limit; `size` is what it holds (at least `max + 1`).
    TooLarge {
        size: u64,
    },
}

/// Reads a whole file, refusing one larger than `max` bytes before allocating for it.
///
/// The length is checked twice: from the metadata (cheap, and refuses without reading) and
/// while reading (the file may grow between the two).
pub(crate) fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = fs::File::open(path).map_err(ReadError::Io)?;
    let size = file.metadata().map_err(ReadError::Io)?.len();
    if size > max {
        return Err(ReadError::TooLarge { size });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    let read = bytes.len() as u64;
    if read > max {
        return Err(ReadError::TooLarge { size: read });
    }
    Ok(bytes)
}

/// Reads a whole UTF-8 text file bounded by `max` bytes; invalid UTF-8 is an `InvalidData` error.
pub(crate) fn read_text_limited(path: &Path, max: u64) -> Result<String, ReadError> {
    let bytes = read_limited(path, max)?;
    String::from_utf8(bytes).map_err(|e| ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees either the old file or the whole new one, never a prefix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = parent.join(format!(".{file_name}.{}", unique_suffix()));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(&parent);
    Ok(())
}

/// A suffix no other temporary name made by this machine shares: the process id, a counter
/// and the clock's nanoseconds (uniqueness only; nothing secret rides on it).
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("tmp-{}-{count}-{nanos}", std::process::id())
}

/// Makes a rename inside `dir` durable where the platform allows it (best effort: a failure
/// here leaves the rename done, only not yet on disk).
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The 1-based line of the place a TOML error points at, when it points at one.
pub(crate) fn toml_error_line(text: &str, error: &toml::de::Error) -> Option<usize> {
    let span = error.span()?;
    let end = span.start.min(text.len());
    Some(text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1)
}
