//! Checkpoint storage through the public API: manifests, validation of what they reference,
//! retention, checkpoint ids that are never reused, and quarantine of damaged manifests.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use flumen_state::checkpoint::MANIFEST_FORMAT;
use flumen_state::{
    CheckpointStore, Manifest, Participant, StateError, StateFile, StateStore, checkpoint_file_name, write_file_durably,
};
use tempfile::TempDir;

const REGION: &str = "region-0";

fn manifest(checkpoint: u64, participants: &[(&str, Vec<StateFile>)]) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        job: "job \"quoted\" ✓".to_owned(),
        region: REGION.to_owned(),
        checkpoint,
        created_unix_ms: 1_700_000_000_000 + checkpoint,
        finished: false,
        participants: participants
            .iter()
            .map(|(id, files)| {
                let meta = serde_json::json!({ "offset": checkpoint * 10, "ratio": 0.1 + checkpoint as f64 });
                ((*id).to_owned(), Participant { files: files.clone(), meta })
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A checkpoint store with checkpoints 1..=`count`: each has a small guest file and refers to it.
fn store_with_checkpoints(count: u64) -> (TempDir, CheckpointStore, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = CheckpointStore::open(&dir.path().join("checkpoints")).expect("open");
    let files = store.files_dir(REGION).expect("files dir");
    for c in 1..=count {
        let f = write_file_durably(&files, &checkpoint_file_name(c, "guest[0]"), format!("snapshot {c}").as_bytes(), c)
            .expect("write file");
        store.write_manifest(&manifest(c, &[("guest[0]", vec![f])])).expect("write manifest");
    }
    (dir, store, files)
}

fn manifest_path(store_dir: &TempDir, checkpoint: u64) -> PathBuf {
    store_dir.path().join("checkpoints").join(REGION).join(format!("chk-{checkpoint:012}.json"))
}

fn quarantine_path(store_dir: &TempDir, checkpoint: u64) -> PathBuf {
    store_dir.path().join("checkpoints").join(REGION).join(".quarantine").join(format!("chk-{checkpoint:012}.json"))
}

#[test]
fn manifest_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&dir.path().join("checkpoints")).unwrap();
    assert!(!store.has_checkpoints().unwrap());
    assert_eq!(store.latest_valid(REGION).unwrap(), (None, Vec::new()));
    let files = store.files_dir(REGION).unwrap();
    assert_eq!(files, dir.path().join("checkpoints").join(REGION).join("files"));
    let f = write_file_durably(&files, &checkpoint_file_name(3, "a"), b"bytes", 3).unwrap();
    let mut m = manifest(3, &[("count[0]", vec![f.clone()]), ("count[1]", vec![])]);
    m.finished = true;
    store.write_manifest(&m).unwrap();
    assert!(manifest_path(&dir, 3).is_file());
    assert!(store.has_checkpoints().unwrap());
    assert_eq!(store.regions().unwrap(), vec![REGION.to_owned()]);
    let (latest, rejected) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest, Some(m));
    assert!(rejected.is_empty());
    assert_eq!(store.latest_valid("other").unwrap(), (None, Vec::new()));
    assert!(matches!(store.latest_valid("../escape"), Err(StateError::Limit(_))));
}

#[test]
fn latest_valid_skips_a_broken_newest_checkpoint() {
    type Damage = fn(&Path, &Path);
    let damages: [(&str, Damage, &str); 6] = [
        ("state file bit flip", |files, _| flip(&files.join(checkpoint_file_name(3, "guest[0]"))), "sha256"),
        ("state file truncated", |files, _| truncate(&files.join(checkpoint_file_name(3, "guest[0]"))), "bytes"),
        ("state file missing", |files, _| remove(&files.join(checkpoint_file_name(3, "guest[0]"))), "missing"),
        ("manifest bit flip", |_, manifest| flip(manifest), ""),
        ("manifest truncated", |_, manifest| truncate(manifest), "not a manifest"),
        (
            "manifest content edited",
            |_, manifest| edit(manifest, "\"finished\": false", "\"finished\": true "),
            "checksum",
        ),
    ];
    for (what, damage, reason) in damages {
        let (dir, store, files) = store_with_checkpoints(3);
        let newest = manifest_path(&dir, 3);
        damage(&files, &newest);
        let (latest, rejected) = store.latest_valid(REGION).unwrap();
        assert_eq!(latest.map(|m| m.checkpoint), Some(2), "{what}");
        assert_eq!(rejected.len(), 1, "{what}: {rejected:?}");
        assert_eq!(rejected[0].path, newest, "{what}");
        assert!(rejected[0].reason.contains(reason), "{what}: {}", rejected[0].reason);
        assert!(store.has_checkpoints().unwrap());
    }

    // With every manifest broken there is nothing to restore, and all are reported.
    let (dir, store, _files) = store_with_checkpoints(2);
    truncate(&manifest_path(&dir, 1));
    truncate(&manifest_path(&dir, 2));
    let (latest, rejected) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest, None);
    assert_eq!(rejected.len(), 2);
}

#[test]
fn a_manifest_stored_under_another_number_is_rejected() {
    let (dir, store, _files) = store_with_checkpoints(2);
    fs::copy(manifest_path(&dir, 1), manifest_path(&dir, 5)).unwrap();
    let (latest, rejected) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(2));
    assert!(rejected[0].reason.contains("stored as"), "{}", rejected[0].reason);
}

#[test]
fn retain_deletes_old_manifests_and_unreferenced_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&dir.path().join("checkpoints")).unwrap();
    let files = store.files_dir(REGION).unwrap();
    let work = StateStore::open(&dir.path().join("work")).unwrap();
    let mut keyed = work.operator("count", 0).unwrap();

    // "count[0]": a full snapshot at checkpoint 1, then one delta per checkpoint (its chain grows).
    // "guest[0]": a self-contained file per checkpoint.
    let mut chain: Vec<StateFile> = Vec::new();
    let mut guest_files = Vec::new();
    for c in 1..=5u64 {
        keyed.value_set("n", b"k", &c.to_le_bytes()).unwrap();
        chain.extend(keyed.snapshot(&files, c, c == 1).unwrap());
        let guest = write_file_durably(&files, &checkpoint_file_name(c, "guest[0]"), &[c as u8; 100], c).unwrap();
        guest_files.push(guest.clone());
        store.write_manifest(&manifest(c, &[("count[0]", chain.clone()), ("guest[0]", vec![guest])])).unwrap();
    }
    // An orphan of an aborted checkpoint 3, a file of checkpoint 6 in progress, a leftover temp
    // file, and a file whose name carries no checkpoint.
    write_file_durably(&files, &checkpoint_file_name(3, "aborted"), b"orphan", 3).unwrap();
    write_file_durably(&files, &checkpoint_file_name(6, "in-progress"), b"in progress", 6).unwrap();
    fs::write(files.join(format!("{}.tmp", checkpoint_file_name(2, "torn"))), b"torn").unwrap();
    fs::write(files.join("unnamed.bin"), b"unknown").unwrap();

    let size = |p: PathBuf| fs::metadata(p).unwrap().len();
    let expected_freed: u64 = (1..=3).map(|c| size(manifest_path(&dir, c))).sum::<u64>()
        + guest_files[..3].iter().map(|f| f.bytes).sum::<u64>()
        + 6 // orphan
        + 4; // temp file

    assert!(matches!(store.retain(REGION, 0), Err(StateError::Limit(_))));
    let retained = store.retain(REGION, 2).unwrap();
    assert_eq!(retained.freed, expected_freed);
    assert_eq!(retained.kept, [5, 4]);

    for c in 1..=3 {
        assert!(!manifest_path(&dir, c).exists(), "manifest {c} deleted");
    }
    let mut left: Vec<String> =
        fs::read_dir(&files).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    let mut expected: Vec<String> = chain.iter().map(|f| f.name.clone()).collect();
    expected.extend(guest_files[3..].iter().map(|f| f.name.clone()));
    expected.push(checkpoint_file_name(6, "in-progress"));
    expected.push("unnamed.bin".to_owned());
    expected.sort();
    assert_eq!(left, expected, "the whole chain of count[0], back to its full snapshot of checkpoint 1, is kept");

    // Both kept checkpoints are still intact.
    let (latest, _) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(5));
    truncate(&manifest_path(&dir, 5));
    let (latest, rejected) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(4));
    assert_eq!(rejected.len(), 1);

    // The broken newest manifest was quarantined and does not count as kept: keep=1 keeps
    // checkpoint 4 and its files.
    assert_eq!(rejected[0].quarantined, Some(quarantine_path(&dir, 5)));
    assert_eq!(store.retain(REGION, 1).unwrap().freed, 0);
    assert!(!manifest_path(&dir, 5).exists(), "a broken manifest is moved aside");
    assert!(files.join(&guest_files[3].name).exists());
    let (latest, _) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(4));
}

/// Ids are reserved above every id the region ever used: manifests, quarantined manifests,
/// files, and the durable mark — even once the newest manifests are damaged or deleted.
#[test]
fn checkpoint_ids_are_never_reused() {
    let (dir, store, files) = store_with_checkpoints(3);
    assert_eq!(store.reserve_ids(REGION, 0).unwrap(), 3);
    assert_eq!(store.reserve_ids("fresh", 0).unwrap(), 0, "a region without history starts at 1");
    // A file of checkpoint 4 that never got its manifest (a crash in between).
    write_file_durably(&files, &checkpoint_file_name(4, "guest[0]"), b"orphan", 4).unwrap();
    assert_eq!(store.reserve_ids(REGION, 0).unwrap(), 4);
    // An object store listed higher ids.
    assert_eq!(store.reserve_ids(REGION, 9).unwrap(), 9);

    // The newest manifest damaged (quarantined), then everything deleted by hand: the durable
    // mark still knows 9, and a fresh handle on the directory reads it back.
    flip(&manifest_path(&dir, 3));
    let (latest, _) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(2));
    for c in 1..=2 {
        remove(&manifest_path(&dir, c));
    }
    fs::remove_dir_all(&files).unwrap();
    let reopened = CheckpointStore::open(&dir.path().join("checkpoints")).unwrap();
    assert_eq!(reopened.reserve_ids(REGION, 0).unwrap(), 9);

    // Without the mark, a quarantined manifest alone still holds its id.
    let (dir, store, _files) = store_with_checkpoints(2);
    truncate(&manifest_path(&dir, 2));
    store.latest_valid(REGION).unwrap();
    for entry in fs::read_dir(dir.path().join("checkpoints").join(REGION)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with(".last-checkpoint-") {
            fs::remove_file(entry.path()).unwrap();
        }
    }
    remove(&manifest_path(&dir, 1));
    fs::remove_dir_all(store.files_dir(REGION).unwrap()).unwrap();
    assert_eq!(store.reserve_ids(REGION, 0).unwrap(), 2);

    // A manifest under a used id is refused, even when the earlier one is quarantined.
    let f = write_file_durably(&store.files_dir(REGION).unwrap(), &checkpoint_file_name(2, "again"), b"x", 2).unwrap();
    let err = store.write_manifest(&manifest(2, &[("guest[0]", vec![f])])).unwrap_err();
    assert!(err.to_string().contains("never reused"), "{err}");
}

/// A damaged manifest is moved into `.quarantine/` with its reason, and is never a candidate
/// again — not even when the damaged file is later rewritten with its original bytes.
/// Two stores on one root (two processes sharing a checkpoint directory) racing to write the same
/// checkpoint id: exactly one succeeds, its manifest is the one on disk, the other is refused as a
/// reused id, and no temporary file is left behind.
#[test]
fn two_stores_racing_for_one_checkpoint_id_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    for checkpoint in 1..=40u64 {
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<(Manifest, Result<(), StateError>)> = std::thread::scope(|s| {
            let writers: Vec<_> = ["first", "second"]
                .into_iter()
                .map(|who| {
                    let (barrier, root) = (&barrier, &root);
                    s.spawn(move || {
                        let store = CheckpointStore::open(root).unwrap();
                        let mut m = manifest(checkpoint, &[]);
                        m.job = format!("written by {who}");
                        barrier.wait();
                        let written = store.write_manifest(&m);
                        (m, written)
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let won: Vec<&Manifest> = results.iter().filter(|(_, r)| r.is_ok()).map(|(m, _)| m).collect();
        assert_eq!(won.len(), 1, "checkpoint {checkpoint}: exactly one writer wins: {results:?}");
        let lost = results.iter().find_map(|(_, r)| r.as_ref().err()).unwrap();
        assert!(lost.to_string().contains("never reused"), "{lost}");
        let store = CheckpointStore::open(&root).unwrap();
        let (on_disk, rejected) = store.latest_valid(REGION).unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(on_disk.as_ref(), Some(won[0]), "the winner's manifest is the one stored");
    }
    let left: Vec<String> = fs::read_dir(root.join(REGION))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn damaged_manifests_are_quarantined_for_good() {
    let (dir, store, files) = store_with_checkpoints(3);
    let victim = files.join(checkpoint_file_name(3, "guest[0]"));
    let original = fs::read(&victim).unwrap();
    flip(&victim);
    let (latest, rejected) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(2));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].path, manifest_path(&dir, 3));
    assert_eq!(rejected[0].quarantined, Some(quarantine_path(&dir, 3)));
    assert!(rejected[0].reason.contains("sha256"), "{}", rejected[0].reason);
    assert!(!manifest_path(&dir, 3).exists());
    assert!(quarantine_path(&dir, 3).is_file());
    let reason = fs::read_to_string(quarantine_path(&dir, 3).with_extension("json.reason")).unwrap();
    assert!(reason.contains("sha256") && reason.contains("chk-000000000003.json"), "{reason}");
    assert_eq!(store.quarantined(REGION).unwrap(), [quarantine_path(&dir, 3)]);
    assert!(store.has_checkpoints().unwrap());

    // The file comes back byte for byte: checkpoint 3 stays out.
    fs::write(&victim, original).unwrap();
    let (latest, rejected) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(2));
    assert!(rejected.is_empty(), "{rejected:?}");
    assert!(store.reserve_ids(REGION, 0).unwrap() >= 3);

    // A file shared by two manifests (a chain's base) makes both damaged.
    let (dir, store, files) = store_with_checkpoints(1);
    let base = write_file_durably(&files, &checkpoint_file_name(2, "base"), b"base", 2).unwrap();
    for c in 2..=3 {
        let own = write_file_durably(&files, &checkpoint_file_name(c, "delta"), b"delta", c).unwrap();
        store.write_manifest(&manifest(c, &[("count[0]", vec![base.clone(), own])])).unwrap();
    }
    truncate(&files.join(&base.name));
    let (latest, rejected) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(1));
    let refused: Vec<PathBuf> = rejected.iter().map(|r| r.path.clone()).collect();
    assert_eq!(refused, [manifest_path(&dir, 3), manifest_path(&dir, 2)]);
    assert!(rejected.iter().all(|r| r.reason.contains(&base.name)), "{rejected:?}");

    // A manifest that cannot be read (not damaged) is an error, not a reason to fall back.
    #[cfg(unix)]
    if !running_as_root() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store, _files) = store_with_checkpoints(2);
        fs::set_permissions(manifest_path(&dir, 2), fs::Permissions::from_mode(0o000)).unwrap();
        assert!(matches!(store.latest_valid(REGION), Err(StateError::Io { .. })));
        assert!(manifest_path(&dir, 2).exists(), "an unreadable manifest is not quarantined");
    }
}

#[cfg(unix)]
fn running_as_root() -> bool {
    // Root reads files whatever their mode.
    fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// Retention counts intact checkpoints only: damaged manifests with the highest ids never make
/// it delete a checkpoint just written.
#[test]
fn retention_counts_only_intact_checkpoints() {
    let (dir, store, files) = store_with_checkpoints(2);
    // Damaged manifests that still parse hold ids 50 and 51: they reference a missing file.
    let missing = StateFile {
        name: checkpoint_file_name(50, "gone"),
        bytes: 4,
        sha256: "0".repeat(64),
        full: true,
        checkpoint: 50,
    };
    let handle = CheckpointStore::open(&dir.path().join("checkpoints")).unwrap();
    for c in [50, 51] {
        handle.write_manifest(&manifest(c, &[("guest[0]", vec![missing.clone()])])).unwrap();
    }
    // This process writes checkpoint 52 (ids continue above them) and keeps 2.
    assert_eq!(store.reserve_ids(REGION, 0).unwrap(), 51);
    let f = write_file_durably(&files, &checkpoint_file_name(52, "guest[0]"), b"snapshot 52", 52).unwrap();
    store.write_manifest(&manifest(52, &[("guest[0]", vec![f])])).unwrap();
    let retained = store.retain(REGION, 2).unwrap();
    assert_eq!(retained.kept, [52, 2], "the new checkpoint and the newest intact one before it");
    assert_eq!(retained.quarantined.len(), 2, "{retained:?}");
    assert!(manifest_path(&dir, 52).is_file(), "a checkpoint just written is never deleted");
    assert!(manifest_path(&dir, 2).is_file());
    assert!(!manifest_path(&dir, 1).exists(), "older than the kept ones");
    assert!(quarantine_path(&dir, 50).is_file() && quarantine_path(&dir, 51).is_file());
    let (latest, rejected) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(52));
    assert!(rejected.is_empty());

    // Retention never deletes the last intact checkpoint to make room for damaged ones.
    let (dir, _store, files) = store_with_checkpoints(1);
    flip(&files.join(checkpoint_file_name(1, "guest[0]")));
    // Another process: it has not seen checkpoint 1 intact, so it verifies it.
    let other = CheckpointStore::open(&dir.path().join("checkpoints")).unwrap();
    let retained = other.retain(REGION, 1).unwrap();
    assert!(retained.kept.is_empty() && retained.freed == 0, "{retained:?}");
    assert!(quarantine_path(&dir, 1).is_file());
}

/// `discard_all` (a start from scratch) removes manifests and quarantine but keeps ids used.
#[test]
fn discarding_keeps_the_ids_used() {
    let (dir, store, _files) = store_with_checkpoints(3);
    flip(&manifest_path(&dir, 3));
    store.latest_valid(REGION).unwrap();
    let removed = store.discard_all(REGION).unwrap();
    assert_eq!(removed.len(), 3, "{removed:?}");
    assert!(!store.has_checkpoints().unwrap());
    assert!(store.quarantined(REGION).unwrap().is_empty());
    assert_eq!(store.reserve_ids(REGION, 0).unwrap(), 3);
}

fn flip(path: &Path) {
    let mut bytes = fs::read(path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(path, bytes).expect("write");
}

fn truncate(path: &Path) {
    let bytes = fs::read(path).expect("read");
    fs::write(path, &bytes[..bytes.len() - 2]).expect("write");
}

fn remove(path: &Path) {
    fs::remove_file(path).expect("remove");
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{text}");
    fs::write(path, text.replace(from, to)).expect("write");
}
