//! Checkpoint storage through the public API: manifests, validation of what they reference, retention.

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
    let freed = store.retain(REGION, 2).unwrap();
    assert_eq!(freed, expected_freed);

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

    // A broken newest manifest does not count as kept: keep=1 keeps checkpoint 4 and its files.
    assert_eq!(store.retain(REGION, 1).unwrap(), 0);
    assert!(manifest_path(&dir, 5).exists(), "a broken newer manifest is left for latest_valid to report");
    assert!(files.join(&guest_files[3].name).exists());
    let (latest, _) = store.latest_valid(REGION).unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(4));
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
