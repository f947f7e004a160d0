//! Blob columns held by a batch: the blobs a batch refers to are pinned (in
//! the job's store, through the `blobs` capability) for as long as any copy
//! of its digest buffer lives, so they follow the batch through channels,
//! clones and slices and are released when the last copy drops.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StructArray};
use arrow_buffer::Buffer;
use arrow_schema::Schema;
use bytes::Bytes;
use flumen_types::blob::{BlobBackend, BlobError, BlobPin, Digest};

use crate::media::{self, BlobColumn};

/// Indices of the top-level columns of `schema` that hold blob references.
pub fn blob_columns(schema: &Schema) -> Vec<usize> {
    schema.fields().iter().enumerate().filter(|(_, f)| media::is_blob_ref(f)).map(|(i, _)| i).collect()
}

/// The digest bytes of a column, owned together with the pin that keeps
/// their blobs alive: when the last array sharing this buffer drops, so does the pin.
struct PinnedDigests {
    data: Vec<u8>,
    _pin: BlobPin,
}

impl AsRef<[u8]> for PinnedDigests {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// A failure in one row of one blob column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}`, row {row}: {error}")]
pub struct RowError {
    pub column: String,
    pub row: usize,
    pub error: BlobError,
}

/// Ties the blobs of `blobs` referenced by `batch`'s blob columns to the batch's
/// lifetime. With `check`, every reference's token and presence are
/// verified first (for batches from guests and files); without, the
/// caller vouches that the references came from this store (a batch the
/// host rebuilt from a checked one).
pub fn pin_batch(blobs: &dyn BlobBackend, batch: RecordBatch, check: bool) -> Result<RecordBatch, RowError> {
    let cols = blob_columns(batch.schema_ref());
    if cols.is_empty() {
        return Ok(batch);
    }
    let schema = batch.schema();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for i in cols {
        let name = schema.field(i).name().clone();
        let row_err = |row: usize, error: BlobError| RowError { column: name.clone(), row, error };
        let view = BlobColumn::new(columns[i].as_ref())
            .map_err(|e| row_err(0, BlobError::Read { digest: String::new(), message: e.to_string() }))?;
        let mut digests: Vec<Digest> = Vec::new();
        for row in 0..view.len() {
            let Some(r) = view.get(row) else { continue };
            if check {
                blobs.check(&r).map_err(|e| row_err(row, e))?;
            }
            digests.push(r.digest);
        }
        let pin = blobs.pin_digests(&digests).map_err(|e| row_err(0, e))?;
        columns[i] = repin_column(columns[i].as_ref(), &view, pin);
    }
    // Same schema, same lengths: only the digest buffers were replaced.
    Ok(RecordBatch::try_new(schema, columns).unwrap_or(batch))
}

/// Every blob digest `batch` refers to (rows in order, repeats included).
pub fn digests_in(batch: &RecordBatch) -> Vec<Digest> {
    let mut out = Vec::new();
    for i in blob_columns(batch.schema_ref()) {
        if let Ok(view) = BlobColumn::new(batch.column(i).as_ref()) {
            out.extend((0..view.len()).filter_map(|r| view.digest(r)).filter_map(|d| <Digest>::try_from(d).ok()));
        }
    }
    out
}

/// The same blob column over a digest buffer owned by `pin`.
fn repin_column(array: &dyn Array, view: &BlobColumn, pin: BlobPin) -> ArrayRef {
    let Some(s) = array.as_any().downcast_ref::<StructArray>() else { return arrow_array::make_array(array.to_data()) };
    let digests = view.digests();
    let width = media::DIGEST_BYTES;
    let mut data = Vec::with_capacity(digests.len() * width);
    for r in 0..digests.len() {
        data.extend_from_slice(digests.value(r));
    }
    let buffer = Buffer::from(Bytes::from_owner(PinnedDigests { data, _pin: pin }));
    let Ok(pinned) = FixedSizeBinaryArray::try_new(width as i32, buffer, digests.nulls().cloned()) else {
        return Arc::new(s.clone());
    };
    let mut children: Vec<ArrayRef> = s.columns().to_vec();
    children[0] = Arc::new(pinned);
    match StructArray::try_new(s.fields().clone(), children, s.nulls().cloned()) {
        Ok(a) => Arc::new(a),
        Err(_) => Arc::new(s.clone()),
    }
}
