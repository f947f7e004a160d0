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
    drop(pins);
    s.close();
    assert!(!dir.path().join("spill").exists(), "spill directory removed at the end");
}

#[test]
fn checkpoint_pins_survive_a_new_store_with_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20, true);
    let (kept, pk) = s.put(Bytes::from_static(b"kept by checkpoint 3"), "text/plain", Some("made".into())).unwrap();
    let (gone, pg) = s.put(Bytes::from_static(b"not pinned"), "text/plain", None).unwrap();
    let pinned = s.pin_checkpoint("r", 3, &[kept.digest]).unwrap();
    drop((pk, pg));
    assert!(s.contains(&kept.digest) && !s.contains(&gone.digest));
    s.close();
    // A restarted job: same durable directory, so the same key.
    let t = store(dir.path(), 1 << 20, true);
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
    assert_eq!(left, vec![std::ffi::OsString::from("key")], "only the key is left");
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
