//! The store's own spill directory: made by the store inside the configured
//! `spill_dir`, marked as Flumen's, removed at the end of the run; and the
//! reclaiming of spill directories that killed runs left behind.
//!
//! The configured directory is never removed nor emptied: it may be the job's
//! own directory. The store spills into `flumen-spill-<pid>-<random>/` in it,
//! whose marker file records the owning process (pid, start time, boot). A
//! later store reclaims such a directory only when its marker says the owner
//! is gone; a directory without a readable marker, or whose owner cannot be
//! checked (no `/proc`), is left alone.

use std::path::{Path, PathBuf};

use crate::BlobError;

/// How spill directories of the store are named (`<prefix><pid>-<random>`).
pub const SPILL_DIR_PREFIX: &str = "flumen-spill-";
/// The marker file in a spill directory made by the store.
pub const SPILL_MARKER: &str = ".flumen-spill";

/// Who made a spill directory: enough to tell whether that process still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    pid: u32,
    /// The process's start time (clock ticks after boot), `/proc/<pid>/stat` field 22.
    start: Option<u64>,
    boot: Option<String>,
}

impl Owner {
    fn me() -> Self {
        let pid = std::process::id();
        Self { pid, start: start_time(pid), boot: boot_id() }
    }

    fn render(&self) -> String {
        format!(
            "flumen spill directory\npid {}\nstart {}\nboot {}\n",
            self.pid,
            self.start.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            self.boot.as_deref().unwrap_or("-"),
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != "flumen spill directory" {
            return None;
        }
        let mut pid = None;
        let mut start = None;
        let mut boot = None;
        for line in lines {
            let (k, v) = line.split_once(' ')?;
            match k {
                "pid" => pid = v.parse().ok(),
                "start" => start = v.parse().ok(),
                "boot" if v != "-" => boot = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Self { pid: pid?, start, boot })
    }

    /// Whether the process that wrote this marker is certainly gone. When in
    /// doubt (no `/proc`, no start time recorded), it is taken to be alive.
    fn is_gone(&self) -> bool {
        let (Some(start), Some(boot)) = (self.start, &self.boot) else { return false };
        let Some(now_boot) = boot_id() else { return false };
        if &now_boot != boot {
            return true; // The machine restarted since: every process of that boot is gone.
        }
        if !Path::new("/proc/self/stat").exists() {
            return false;
        }
        match start_time(self.pid) {
            None => true,          // No such process.
            Some(s) => s != start, // The pid now belongs to another process.
        }
    }
}

/// The start time of process `pid` (`/proc/<pid>/stat` field 22), if it runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

/// A fresh name for this process's spill directory inside `parent`.
pub(crate) fn own_dir_in(parent: &Path) -> PathBuf {
    let mut nonce = [0u8; 8];
    if getrandom::fill(&mut nonce).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        nonce = (t.as_nanos() as u64).to_le_bytes();
    }
    parent.join(format!("{SPILL_DIR_PREFIX}{}-{}", std::process::id(), hex::encode(nonce)))
}

/// Makes `dir` (which must not exist yet) and its marker.
pub(crate) fn make_own_dir(dir: &Path) -> Result<(), BlobError> {
    let io = |e: std::io::Error| BlobError::Io(format!("making the spill directory {}: {e}", dir.display()));
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // `create_dir`, not `create_dir_all`: the directory must be new, hence ours.
    std::fs::create_dir(dir).map_err(io)?;
    std::fs::write(dir.join(SPILL_MARKER), Owner::me().render()).map_err(io)?;
    Ok(())
}

/// Removes the spill directories in `parent` left by processes that are
/// gone (killed runs); returns how many. Anything without the store's
/// marker, or whose owner may still run, is left alone.
pub fn reclaim_dead_spill_dirs(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else { return 0 };
    let mut reclaimed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(SPILL_DIR_PREFIX) {
            continue;
        }
        // Not a symbolic link: only a real directory of ours is removed.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let Some(owner) = std::fs::read_to_string(dir.join(SPILL_MARKER)).ok().as_deref().and_then(Owner::parse) else {
            continue;
        };
        if !owner.is_gone() {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                reclaimed += 1;
                tracing::info!(path = %dir.display(), pid = owner.pid, "removed the spill directory of a run that is gone");
            }
            Err(e) => {
                tracing::warn!(path = %dir.display(), "cannot remove the spill directory of a run that is gone: {e}")
            }
        }
    }
    reclaimed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_only_dead_owners_are_reclaimed() {
        let me = Owner::me();
        assert_eq!(Owner::parse(&me.render()), Some(me.clone()));
        assert_eq!(Owner::parse("something else\npid 1\n"), None);
        if me.start.is_none() || me.boot.is_none() {
            return; // No /proc here: nothing is ever reclaimed.
        }
        assert!(!me.is_gone(), "this process runs");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Owner { pid, start: Some(1), boot: me.boot.clone() };
        assert!(dead.is_gone(), "a process that exited");
        let rebooted = Owner { boot: Some("another boot".into()), ..me.clone() };
        assert!(rebooted.is_gone());

        let dir = tempfile::tempdir().unwrap();
        let dead_dir = dir.path().join(format!("{SPILL_DIR_PREFIX}{pid}-dead"));
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join(SPILL_MARKER), dead.render()).unwrap();
        std::fs::write(dead_dir.join("0011"), b"spilled").unwrap();
        let live_dir = own_dir_in(dir.path());
        make_own_dir(&live_dir).unwrap();
        let unmarked = dir.path().join(format!("{SPILL_DIR_PREFIX}unmarked"));
        std::fs::create_dir(&unmarked).unwrap();
        let file = dir.path().join(format!("{SPILL_DIR_PREFIX}file"));
        std::fs::write(&file, b"a user's file").unwrap();
        assert_eq!(reclaim_dead_spill_dirs(dir.path()), 1);
        assert!(!dead_dir.exists() && live_dir.exists() && unmarked.exists() && file.exists());
    }
}
