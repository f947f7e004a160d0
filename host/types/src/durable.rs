//! The one durable-write step every writer of a file that must survive a crash
//! goes through: the bytes are written under a temporary name in the target's
//! directory, the file is fsynced, renamed over the target, and the directory
//! is fsynced. After a crash the target either does not exist (or holds its
//! old content) or holds exactly the new bytes, never a prefix of them.
//!
//! [`publish_new`] and [`create`] are the create-if-absent variant, for a
//! name that several processes may race to take (a checkpoint manifest in a
//! directory shared by a cluster's workers): the durable temporary file is
//! hard-linked to the target, which fails with
//! [`io::ErrorKind::AlreadyExists`] when another writer took the name first,
//! so exactly one of them wins and nothing is ever replaced.
//!
//! Callers choose the temporary name, because each one's recovery recognizes
//! its own leftovers (checkpoint files end in `.tmp`, sink parts are
//! `.<name>.inprogress-<hex>`, cached artifacts `.tmp-<pid>-<hex>`). Writers
//! that may race for one target must choose distinct temporary names.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Makes `file`, written at `temp`, durable as `path` (in the same directory):
/// fsyncs it, renames it over `path` and fsyncs the directory. `file` must
/// have no unflushed buffer in front of it.
pub fn publish(file: &File, temp: &Path, path: &Path) -> io::Result<()> {
    file.sync_all()?;
    fs::rename(temp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Writes `bytes` durably as `path` through the temporary `path`'s directory/`temp_name`.
/// On failure the temporary file is removed.
pub fn write(path: &Path, temp_name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = path.with_file_name(temp_name);
    let result = File::create(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        publish(&file, &temp, path)
    });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Makes `file`, written at `temp`, durable as `path` (in the same directory)
/// only if `path` does not exist yet: fsyncs it, hard-links it as `path`,
/// removes `temp` and fsyncs the directory. When `path` exists already (another
/// writer took the name first) the error is [`io::ErrorKind::AlreadyExists`] and
/// `path` is untouched. `temp` is removed whatever the outcome. `file` must have
/// no unflushed buffer in front of it.
pub fn publish_new(file: &File, temp: &Path, path: &Path) -> io::Result<()> {
    let linked = file.sync_all().and_then(|()| fs::hard_link(temp, path));
    let removed = fs::remove_file(temp);
    linked?;
    removed?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Writes `bytes` durably as a new file `path` through the temporary `path`'s
/// directory/`temp_name` (see [`publish_new`]): fails with
/// [`io::ErrorKind::AlreadyExists`], writing nothing, when `path` exists. The
/// temporary file never outlives the call; writers racing for one `path` must
/// pass distinct `temp_name`s.
pub fn create(path: &Path, temp_name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = path.with_file_name(temp_name);
    let result = fs::OpenOptions::new().write(true).create_new(true).open(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        publish_new(&file, &temp, path)
    });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Fsyncs a directory so that the entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for fsync there; renames are durable on their own.
        let _ = dir;
        Ok(())
    }
}

/// Creates `dir` (and its parents) and fsyncs its parent so that the new entry survives a crash.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// A temporary file that is removed when dropped unless [`kept`](Self::keep).
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    pub fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// It was renamed into place (or must stay): dropping it no longer removes it.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: the file may never have been created, or be gone already.
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "flumen-durable-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn write_replaces_the_target_and_leaves_no_temporary_file() {
        let dir = tempdir();
        let target = dir.join("manifest");
        write(&target, "manifest.tmp", b"one").expect("first write");
        write(&target, "manifest.tmp", b"two").expect("second write");
        assert_eq!(fs::read(&target).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["manifest"]);
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_failed_write_keeps_the_old_target() {
        let dir = tempdir();
        let target = dir.join("f");
        write(&target, "f.tmp", b"old").expect("write");
        // The temporary name is a directory: creating it fails.
        fs::create_dir(dir.join("f.tmp")).expect("mkdir");
        assert!(write(&target, "f.tmp", b"new").is_err());
        assert_eq!(fs::read(&target).expect("read"), b"old");
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn create_takes_a_free_name_once_and_never_replaces() {
        let dir = tempdir();
        let target = dir.join("chk");
        create(&target, "chk.a.tmp", b"first").expect("the name is free");
        let err = create(&target, "chk.b.tmp", b"second").expect_err("the name is taken");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).expect("read"), b"first");
        let names: Vec<_> = fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["chk"], "no temporary file is left behind");
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_temp_path_is_removed_unless_kept() {
        let dir = tempdir();
        let (gone, kept) = (dir.join("a"), dir.join("b"));
        fs::write(&gone, b"x").expect("write");
        fs::write(&kept, b"x").expect("write");
        drop(TempPath::new(gone.clone()));
        let mut t = TempPath::new(kept.clone());
        t.keep();
        drop(t);
        assert!(!gone.exists() && kept.exists());
        create_dir(&dir.join("x/y")).expect("create_dir");
        assert!(dir.join("x/y").is_dir());
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
