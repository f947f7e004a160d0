//! Unit tests of the blob store: tokens, reference counting through batches,
//! spilling under a memory budget, checkpoint pins and files read in place.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{Field, Schema};
use flumen_batch::media::{BlobColumnBuilder, blob_field};

use super::*;

fn store(dir: &Path, budget: u64, durable: bool) -> BlobStore {
    BlobStore::new(BlobConfig {
        memory_budget: budget,
        spill_dir: dir.join("spill"),
        durable_dir: durable.then(|| dir.join("durable")),
    })
    .unwrap()
}

fn batch_of(refs: &[&BlobRef]) -> RecordBatch {
    let mut b = BlobColumnBuilder::new();
    for r in refs {
        b.append(Some(r));
    }
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", arrow_schema::DataType::Int64, false), blob_field("blob", true)]));
    let ids = Int64Array::from_iter_values(0..refs.len() as i64);
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(b.finish())]).unwrap()
}

#[test]
fn equal_bytes_are_one_blob_and_reads_return_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, false);
    let (a, pa) = s.put(Bytes::from_static(b"hello world"), "text/plain", None).unwrap();
    let (b, pb) = s.put(Bytes::from_static(b"hello world"), "text/plain", None).unwrap();
    assert_eq!(a, b);
    assert_eq!(s.stats().blobs, 1);
    assert_eq!(&s.read(&a, 6, 100).unwrap()[..], b"world");
    assert_eq!(&s.read(&a, 20, 5).unwrap()[..], b"");
    drop(pa);
    assert!(s.contains(&a.digest), "still pinned once");
    drop(pb);
    assert!(!s.contains(&a.digest), "released when the last pin drops");
    assert!(matches!(s.read_all(&a), Err(BlobError::Released { .. })));
}

#[test]
fn forged_altered_and_foreign_references_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, false);
    let other = store(&dir.path().join("other"), 1 << 20, false);
    let (r, _p) = s.put(Bytes::from_static(b"secret"), "text/plain", None).unwrap();
    let (foreign, _q) = other.put(Bytes::from_static(b"secret"), "text/plain", None).unwrap();
    assert_eq!(foreign.digest, r.digest, "same content, same digest");
    assert!(matches!(s.read_all(&foreign), Err(BlobError::Forged { .. })), "another job's token");
    let mut bigger = r.clone();
    bigger.size = 1 << 30;
    assert!(matches!(s.read_all(&bigger), Err(BlobError::Forged { .. })), "altered size");
    let mut forged = r.clone();
    forged.token = [7; TOKEN_BYTES];
    let err = s.read_all(&forged).unwrap_err().to_string();
    assert!(err.contains("forged"), "{err}");
    assert!(s.pin_batch(batch_of(&[&forged]), true).unwrap_err().to_string().contains("row 0"));
}

#[test]
fn a_batch_keeps_its_blobs_alive_through_clones_and_slices() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, false);
    let (a, pa) = s.put(Bytes::from(vec![1u8; 1000]), OCTET_STREAM, None).unwrap();
    let (b, pb) = s.put(Bytes::from(vec![2u8; 1000]), OCTET_STREAM, None).unwrap();
    let batch = s.pin_batch(batch_of(&[&a, &b]), true).unwrap();
    drop((pa, pb));
    assert_eq!(s.stats().blobs, 2, "the batch pins both");
    let slice = batch.slice(1, 1);
    drop(batch);
    assert_eq!(s.stats().blobs, 2, "a slice shares the pinned buffer");
    drop(slice);
    assert_eq!(s.stats().blobs, 0, "nothing keeps them now");
    assert_eq!(s.stats().released, 2);
}

#[test]
fn over_budget_blobs_spill_and_memory_stays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 10_000;
    let s = store(dir.path(), budget, false);
    let mut pins = Vec::new();
    let mut refs = Vec::new();
    for i in 0..30u8 {
        let (r, p) = s.put(Bytes::from(vec![i; 1000]), OCTET_STREAM, None).unwrap();
        refs.push(r);
        pins.push(p);
    }
    let st = s.stats();
    assert!(st.peak_memory_bytes <= budget, "{st:?}");
    assert!(st.spilled >= 20, "{st:?}");
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(&s.read_all(r).unwrap()[..], &vec![i as u8; 1000][..]);
    }
    let (huge, _h) = s.put(Bytes::from(vec![9u8; 50_000]), OCTET_STREAM, None).unwrap();
    assert_eq!(s.read_all(&huge).unwrap().len(), 50_000);
    assert!(s.stats().peak_memory_bytes <= budget);
    let own = s.spill_dir().to_path_buf();
    assert!(own.starts_with(dir.path().join("spill")) && own.join(SPILL_MARKER).is_file(), "{}", own.display());
    drop(pins);
    s.close();
    assert!(!own.exists(), "the store's spill directory is removed at the end");
    assert!(dir.path().join("spill").is_dir(), "the configured directory is not removed");
}

/// The configured spill directory may hold anything (it may be the job's own
/// directory): the store spills into a directory of its own and removes only that.
#[test]
fn only_the_stores_own_spill_directory_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), b"precious").unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/a.bin"), b"input").unwrap();
    let s = BlobStore::new(BlobConfig { memory_budget: 10, spill_dir: dir.path().to_path_buf(), durable_dir: None })
        .unwrap();
    let (r, p) = s.put(Bytes::from(vec![3u8; 100]), OCTET_STREAM, None).unwrap();
    assert_eq!(s.read_all(&r).unwrap().len(), 100);
    assert!(s.spill_dir().join(hex::encode(r.digest)).is_file(), "spilled into its own directory");
    drop(p);
    s.close();
    let mut left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, vec!["data".to_string(), "job.toml".to_string()]);
    assert_eq!(std::fs::read(dir.path().join("data/a.bin")).unwrap(), b"input");
}

/// A fresh run gets a fresh key; a resumed one the key of its own lineage;
/// another job sharing the durable directory never gets it.
#[test]
fn keys_are_bound_to_one_jobs_checkpoint_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, true);
    s.bind_lineage("a", false).unwrap();
    let (r, _p) = s.put(Bytes::from_static(b"secret"), "text/plain", None).unwrap();
    let other = |job: &str, resume: bool| {
        let t = store(dir.path(), 1 << 20, true);
        t.bind_lineage(job, resume).unwrap();
        let held = t.put(Bytes::from_static(b"secret"), "text/plain", None).unwrap();
        (t.check(&r).map_err(|e| e.to_string()), held)
    };
    assert!(other("a", true).0.is_ok(), "the same job, resumed");
    let (refused, _) = other("b", true);
    assert!(refused.unwrap_err().contains("forged or belongs to another job"), "another job, resumed");
    let (refused, _) = other("b", false);
    assert!(refused.unwrap_err().contains("forged or belongs to another job"), "another job, fresh");
    assert!(other("a", true).0.is_ok(), "the other job did not replace this one's key");
    let (refused, _) = other("a", false);
    assert!(refused.unwrap_err().contains("forged or belongs to another job"), "a fresh run of the same job");
    let (refused, _) = other("a", true);
    assert!(refused.unwrap_err().contains("forged"), "the fresh run started a new lineage");
    assert!(key_path(&dir.path().join("durable"), "a") != key_path(&dir.path().join("durable"), "b"));
}

/// Processes that each run some of a job's regions share its lineage: the
/// first to bind makes the key, the others (started at once, or later,
/// fresh) read it back, and none replaces it.
#[test]
fn a_shared_lineage_is_joined_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let barrier = std::sync::Barrier::new(4);
    let bound: Vec<_> = std::thread::scope(|scope| {
        let binders: Vec<_> = (0..4)
            .map(|_| {
                let barrier = &barrier;
                let path = dir.path();
                scope.spawn(move || {
                    let s = store(path, 1 << 20, true);
                    barrier.wait();
                    s.bind_shared_lineage("job").unwrap().unwrap()
                })
            })
            .collect();
        binders.into_iter().map(|b| b.join().unwrap()).collect()
    });
    assert_eq!(bound.iter().filter(|k| !k.reused).count(), 1, "exactly one process made the key");
    assert!(bound.iter().all(|k| k.key == bound[0].key && k.lineage == bound[0].lineage));
    let s = store(dir.path(), 1 << 20, true);
    s.bind_lineage("job", true).unwrap();
    let (r, _p) = s.put(Bytes::from_static(b"shared"), "text/plain", None).unwrap();
    let later = store(dir.path(), 1 << 20, true);
    assert!(later.bind_shared_lineage("job").unwrap().unwrap().reused, "a later process joins it");
    let _held = later.put(Bytes::from_static(b"shared"), "text/plain", None).unwrap();
    assert!(later.check(&r).is_ok(), "and checks the references the others made");
    let names: Vec<String> = std::fs::read_dir(dir.path().join("durable"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "no temporary file is left: {names:?}");
}

#[test]
fn checkpoint_pins_survive_a_new_store_with_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, true);
    s.bind_lineage("job", false).unwrap();
    let (kept, pk) = s.put(Bytes::from_static(b"kept by checkpoint 3"), "text/plain", Some("made".into())).unwrap();
    let (gone, pg) = s.put(Bytes::from_static(b"not pinned"), "text/plain", None).unwrap();
    let pinned = s.pin_checkpoint("r", 3, &[kept.digest]).unwrap();
    drop((pk, pg));
    assert!(s.contains(&kept.digest) && !s.contains(&gone.digest));
    s.close();
    // A resumed job: same durable directory and job, so the same key.
    let t = store(dir.path(), 1 << 20, true);
    t.bind_lineage("job", true).unwrap();
    t.restore_pins("r", 3, &pinned).unwrap();
    assert_eq!(&t.read_all(&kept).unwrap()[..], b"kept by checkpoint 3", "the old reference still checks");
    assert_eq!(t.stat(&kept).unwrap().source.as_deref(), Some("made"));
    t.release_checkpoints_except("other", &[], 9);
    assert!(t.contains(&kept.digest), "another region's retention does not touch it");
    t.release_checkpoints_except("r", &[4], 4);
    assert!(!t.contains(&kept.digest));
    t.close();
    let left: Vec<_> =
        std::fs::read_dir(dir.path().join("durable")).unwrap().flatten().map(|f| f.file_name()).collect();
    let key = key_path(&dir.path().join("durable"), "job");
    assert_eq!(left, vec![key.file_name().unwrap().to_owned()], "only the key is left");
}

#[test]
fn damaged_durable_blob_is_detected_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, true);
    let (r, _p) = s.put(Bytes::from_static(b"precious"), OCTET_STREAM, None).unwrap();
    let pinned = s.pin_checkpoint("r", 1, &[r.digest]).unwrap();
    std::fs::write(dir.path().join("durable").join(hex::encode(r.digest)), b"precioux").unwrap();
    let t = store(dir.path(), 1 << 20, true);
    let err = t.restore_pins("r", 1, &pinned).unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn files_are_read_in_place_and_a_changed_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.png");
    std::fs::write(&path, b"not really a png").unwrap();
    let s = store(dir.path(), 1 << 20, false);
    let (r, _p) = s.put_file(&path, "image/png", "a.png").unwrap();
    assert_eq!(s.stats().memory_bytes, 0, "not copied");
    assert_eq!(&s.read(&r, 4, 6).unwrap()[..], b"really");
    assert_eq!(s.stat(&r).unwrap().source.as_deref(), Some("a.png"));
    std::fs::write(&path, b"changed, and longer than before").unwrap();
    let err = s.read_all(&r).unwrap_err().to_string();
    assert!(err.contains("changed after the job read it"), "{err}");
    assert_eq!(media_type_of("x/y.JPG"), "image/jpeg");
    assert_eq!(media_type_of("noext"), OCTET_STREAM);
}

/// `cp -p`, `rsync -t`, `tar x`: the file is rewritten with the same size and
/// its modification time restored. Neither a range nor a whole read serves
/// the new bytes under the old digest.
#[test]
fn a_file_rewritten_with_its_size_and_mtime_restored_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.bin");
    std::fs::write(&path, b"original bytes!").unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let s = store(dir.path(), 1 << 20, false);
    let (r, _p) = s.put_file(&path, OCTET_STREAM, "a.bin").unwrap();
    assert_eq!(&s.read(&r, 0, 8).unwrap()[..], b"original");
    // In place, same length, then the old modification time put back.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut &f, b"tampered bytes!").unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.len(), meta.modified().unwrap()), (15, mtime), "size and mtime look unchanged");
    for err in [s.read(&r, 0, 8).unwrap_err(), s.read_all(&r).unwrap_err()] {
        assert!(err.to_string().contains("changed after the job read it"), "{err}");
    }
    // The stamp tells the versions apart even when the ctime ticks alike: a copy has another inode.
    std::fs::copy(&path, dir.path().join("b.bin")).unwrap();
    let b = std::fs::File::open(dir.path().join("b.bin")).unwrap();
    b.set_modified(mtime).unwrap();
    let (sa, sb) = (FileStamp::of(&meta), FileStamp::of(&b.metadata().unwrap()));
    assert_ne!(sa, sb);
}

/// A file whose bytes differ from its digest while its stamp looks the same
/// (as after a restart, when the stamp is taken afresh) is refused on read.
#[test]
fn an_unsettled_file_is_checked_against_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.bin");
    std::fs::write(&path, b"0123456789").unwrap();
    let s = store(dir.path(), 1 << 20, true);
    let (r, p) = s.put_file(&path, OCTET_STREAM, "a.bin").unwrap();
    let pinned = s.pin_checkpoint("r", 1, &[r.digest]).unwrap();
    drop(p);
    std::fs::write(&path, b"9876543210").unwrap();
    let t = BlobStore::with_key(
        BlobConfig {
            memory_budget: 1 << 20,
            spill_dir: dir.path().join("spill"),
            durable_dir: Some(dir.path().join("d")),
        },
        [0; KEY_BYTES],
    );
    t.restore_pins("r", 1, &pinned).unwrap();
    let r = t.reference_of(&r.digest).unwrap();
    for err in [t.read(&r, 2, 3).unwrap_err(), t.read_all(&r).unwrap_err()] {
        assert!(err.to_string().contains("no longer match the blob's digest"), "{err}");
    }
}

#[test]
fn materialized_batches_hold_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, false);
    let (a, _pa) = s.put(Bytes::from_static(b"alpha"), OCTET_STREAM, None).unwrap();
    let out = materialize_batch(&s, &batch_of(&[&a, &a])).unwrap();
    let col = out.column(1).as_any().downcast_ref::<arrow_array::LargeBinaryArray>().unwrap();
    assert_eq!(col.value(1), b"alpha");
    assert_eq!(out.schema().as_ref(), &materialized_schema(&batch_of(&[]).schema()));
}

#[test]
fn a_batch_derived_by_a_kernel_carries_the_pins_of_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, false);
    let (a, pa) = s.put(Bytes::from_static(b"a"), OCTET_STREAM, None).unwrap();
    let (b, pb) = s.put(Bytes::from_static(b"b"), OCTET_STREAM, None).unwrap();
    let batch = s.pin_batch(batch_of(&[&a, &b]), true).unwrap();
    drop((pa, pb));
    let idx = arrow_array::UInt32Array::from(vec![1u32]);
    let cols = batch.columns().iter().map(|c| arrow_select_take(c, &idx)).collect();
    let taken = carry_pins(&batch, RecordBatch::try_new(batch.schema(), cols).unwrap());
    drop(batch);
    assert_eq!(s.stats().blobs, 2, "the taken part keeps its origin's blobs");
    assert_eq!(&s.read_all(&b).unwrap()[..], b"b");
    drop(taken);
    assert_eq!(s.stats().blobs, 0);
}

/// A copy of the rows at `idx`, as the engine's hash partitioning makes it (new buffers).
fn arrow_select_take(c: &arrow_array::ArrayRef, idx: &arrow_array::UInt32Array) -> arrow_array::ArrayRef {
    arrow_select::take::take(c, idx, None).unwrap()
}
