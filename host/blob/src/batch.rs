//! Blob columns in Arrow batches: pinning the blobs a batch carries for as
//! long as any copy of its column lives, checking references made elsewhere,
//! and resolving references to their bytes for sinks.

use std::sync::Arc;

use arrow_array::builder::LargeBinaryBuilder;
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StructArray};
use arrow_buffer::Buffer;
use arrow_schema::{ArrowError, DataType, Field, Schema};
use bytes::Bytes;
use flumen_batch::media::{self, BlobColumn};

use crate::{BlobError, BlobStore, RowError, blob_columns};

/// `to`, a batch the host derived from `from` (rows taken, filtered or
/// reordered by an Arrow kernel, which copies buffers and so drops their
/// pins), with each blob column's new digest buffer keeping `from`'s pinned
/// one alive: the blobs of `from` live at least as long as `to`.
pub fn carry_pins(from: &RecordBatch, to: RecordBatch) -> RecordBatch {
    let cols = blob_columns(to.schema_ref());
    if cols.is_empty() || from.schema_ref().fields() != to.schema_ref().fields() {
        return to;
    }
    let mut columns: Vec<ArrayRef> = to.columns().to_vec();
    for i in cols {
        let (Some(old), Some(new)) = (
            from.column(i).as_any().downcast_ref::<StructArray>(),
            to.column(i).as_any().downcast_ref::<StructArray>(),
        ) else {
            continue;
        };
        let Some(keep) = old.column(0).to_data().buffers().first().cloned() else { continue };
        let Some(digests) = new.column(0).as_any().downcast_ref::<FixedSizeBinaryArray>() else { continue };
        let mut data = Vec::with_capacity(digests.len() * media::DIGEST_BYTES);
        for r in 0..digests.len() {
            data.extend_from_slice(digests.value(r));
        }
        let buffer = Buffer::from(Bytes::from_owner(CarriedDigests { data, _keep: keep }));
        let Ok(carried) = FixedSizeBinaryArray::try_new(media::DIGEST_BYTES as i32, buffer, digests.nulls().cloned())
        else {
            continue;
        };
        let mut children: Vec<ArrayRef> = new.columns().to_vec();
        children[0] = Arc::new(carried);
        if let Ok(a) = StructArray::try_new(new.fields().clone(), children, new.nulls().cloned()) {
            columns[i] = Arc::new(a);
        }
    }
    RecordBatch::try_new(to.schema(), columns.clone()).unwrap_or(to)
}

/// New digest bytes that keep an older, pinned digest buffer alive.
struct CarriedDigests {
    data: Vec<u8>,
    _keep: Buffer,
}

impl AsRef<[u8]> for CarriedDigests {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// The schema [`materialize_batch`] gives batches of `schema`.
pub fn materialized_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> =
        schema
            .fields()
            .iter()
            .map(|f| {
                if media::is_blob_ref(f) {
                    Field::new(f.name(), DataType::LargeBinary, true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Replaces every blob column of `batch` by its bytes (`large_binary`, same
/// name, nullable), reading them from `store`. The whole batch's bytes are in
/// memory at once: sinks use [`materialize_in_chunks`].
pub fn materialize_batch(store: &BlobStore, batch: &RecordBatch) -> Result<RecordBatch, RowError> {
    let mut out = Vec::new();
    materialize_in_chunks(store, batch, u64::MAX, |b| {
        out.push(b);
        Ok(())
    })
    .map_err(|e| match e {
        ChunkError::Row(e) => e,
        ChunkError::Write(message) => RowError { column: String::new(), row: 0, error: BlobError::Io(message) },
    })?;
    // No byte limit: one chunk, or none for an empty batch.
    Ok(out.pop().unwrap_or_else(|| RecordBatch::new_empty(Arc::new(materialized_schema(batch.schema_ref())))))
}

/// Why [`materialize_in_chunks`] stopped.
#[derive(Debug)]
pub enum ChunkError<E> {
    /// A blob could not be read (row numbers are within the batch).
    Row(RowError),
    /// `write` failed.
    Write(E),
}

/// Hands `write` the rows of `batch` with every blob column replaced by its
/// bytes, a few rows at a time: a chunk holds at most `max_bytes` of blob
/// bytes unless one row alone has more, so a sink holds one large blob in
/// memory at a time, not a batch of them. A chunk of one blob shares the
/// bytes the store returned (no copy into an Arrow builder).
pub fn materialize_in_chunks<E>(
    store: &BlobStore,
    batch: &RecordBatch,
    max_bytes: u64,
    mut write: impl FnMut(RecordBatch) -> Result<(), E>,
) -> Result<(), ChunkError<E>> {
    let cols = blob_columns(batch.schema_ref());
    if cols.is_empty() {
        return write(batch.clone()).map_err(ChunkError::Write);
    }
    let schema = batch.schema();
    let out_schema = Arc::new(materialized_schema(&schema));
    let mut views = Vec::with_capacity(cols.len());
    for &i in &cols {
        let name = schema.field(i).name().clone();
        let view = BlobColumn::new(batch.column(i).as_ref()).map_err(|e| {
            ChunkError::Row(RowError {
                column: name.clone(),
                row: 0,
                error: BlobError::Read { digest: String::new(), message: e.to_string() },
            })
        })?;
        views.push((i, name, view));
    }
    let row_bytes = |row: usize| -> u64 { views.iter().filter_map(|(_, _, v)| v.get(row)).map(|r| r.size).sum() };
    let mut start = 0;
    while start < batch.num_rows() {
        // Rows [start, end): as many as fit `max_bytes`, at least one.
        let mut end = start + 1;
        let mut bytes = row_bytes(start);
        while end < batch.num_rows() {
            let more = row_bytes(end);
            if bytes.saturating_add(more) > max_bytes {
                break;
            }
            bytes += more;
            end += 1;
        }
        let mut columns: Vec<ArrayRef> = batch.slice(start, end - start).columns().to_vec();
        for (i, name, view) in &views {
            let mut values: Vec<Option<Bytes>> = Vec::with_capacity(end - start);
            for row in start..end {
                match view.get(row) {
                    None => values.push(None),
                    Some(r) => values.push(Some(
                        store
                            .read_all(&r)
                            .map_err(|error| ChunkError::Row(RowError { column: name.clone(), row, error }))?,
                    )),
                }
            }
            columns[*i] = binary_column(values);
        }
        let chunk = RecordBatch::try_new(out_schema.clone(), columns).map_err(|e| {
            ChunkError::Row(RowError { column: String::new(), row: start, error: BlobError::Io(e.to_string()) })
        })?;
        write(chunk).map_err(ChunkError::Write)?;
        start = end;
    }
    Ok(())
}

/// A `large_binary` column of `values`; a single value is not copied.
fn binary_column(values: Vec<Option<Bytes>>) -> ArrayRef {
    if let [Some(one)] = &values[..] {
        let len = one.len() as i64;
        let offsets = arrow_buffer::OffsetBuffer::new(arrow_buffer::ScalarBuffer::from(vec![0i64, len]));
        return Arc::new(arrow_array::LargeBinaryArray::new(offsets, Buffer::from(one.clone()), None));
    }
    let mut b = LargeBinaryBuilder::new();
    for v in &values {
        match v {
            Some(bytes) => b.append_value(bytes),
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// The schema [`digest_batch`] gives batches of `schema`: each blob column
/// becomes its digest in hex (`utf8`, nullable).
pub fn digest_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| if media::is_blob_ref(f) { Field::new(f.name(), DataType::Utf8, true) } else { f.as_ref().clone() })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// `batch` with each blob column replaced by its digests in hex. Reads no
/// blob: what dead-letter sinks write, so a row that failed because its blob
/// is bad or gone can always be recorded.
pub fn digest_batch(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let cols = blob_columns(batch.schema_ref());
    if cols.is_empty() {
        return Ok(batch.clone());
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for i in cols {
        let view = BlobColumn::new(batch.column(i).as_ref()).map_err(|e| {
            ArrowError::InvalidArgumentError(format!("column `{}`: {e}", batch.schema().field(i).name()))
        })?;
        let hex: arrow_array::StringArray = (0..view.len()).map(|r| view.digest(r).map(hex::encode)).collect();
        columns[i] = Arc::new(hex);
    }
    RecordBatch::try_new(Arc::new(digest_schema(batch.schema_ref())), columns)
}
