//! Conversions between the WIT batch layout and arrow-rs, built on
//! `flumen-batch` (schemas cross as `flumen_batch::wire` types, which the
//! bindings use directly).

use arrow_array::{Array, BooleanArray, RecordBatch, UInt32Array};
use arrow_buffer::Buffer;
use arrow_schema::SchemaRef;
use flumen_batch::{ColumnParts, FlatBatch};

use crate::Error;
use crate::bindings::flumen::dataflow::{output, types as wit};

/// Builds a batch over the buffers the host placed in this instance's memory
/// (no copy). The host built them from validated Arrow arrays, so their
/// values are not validated again (see `flumen_batch::assemble_batch_trusted`).
pub(crate) fn batch_from_wit(schema: &SchemaRef, batch: wit::BatchResult) -> Result<RecordBatch, Error> {
    let parts = batch
        .columns
        .into_iter()
        .map(|c| ColumnParts {
            len: c.len,
            offset: c.offset,
            validity: c.validity.map(|v| (Buffer::from_vec(v.bits), v.offset)),
            buffers: c.buffers.into_iter().map(Buffer::from_vec).collect(),
        })
        .collect();
    Ok(flumen_batch::assemble_batch_trusted(schema, batch.num_rows, parts)?)
}

/// Which input rows an emitted batch's carried columns take.
pub(crate) enum Rows<'a> {
    All,
    Mask(&'a BooleanArray),
    Indices(&'a UInt32Array),
}

/// The mask as the host wants it: ceil(len / 8) bytes, LSB first, null slots
/// and the bits past the end clear.
fn mask_bits(mask: &BooleanArray) -> Vec<u8> {
    let kept = match mask.nulls() {
        Some(nulls) => mask.values() & nulls.inner(),
        None => mask.values().clone(),
    };
    let len = kept.len();
    let mut bits = vec![0u8; len.div_ceil(8)];
    for i in kept.set_indices() {
        bits[i / 8] |= 1 << (i % 8);
    }
    bits
}

/// Hands `batch` to the host, which reads the buffers where they are.
pub(crate) fn emit(batch: &RecordBatch, rows: Rows<'_>) -> Result<(), Error> {
    let flat = FlatBatch::new(batch);
    let views = flat.views();
    let buffer_lists: Vec<Vec<&[u8]>> = views.iter().map(|v| v.buffers.clone()).collect();
    let columns: Vec<wit::ColumnParam<'_>> = views
        .iter()
        .zip(&buffer_lists)
        .map(|(v, buffers)| wit::ColumnParam {
            len: v.len,
            offset: v.offset,
            validity: v.validity.map(|(bits, offset)| wit::ValidityParam { bits, offset }),
            buffers,
        })
        .collect();
    let param = wit::BatchParam { num_rows: flat.num_rows() as u64, columns: &columns };
    let bits;
    let selection = match rows {
        Rows::All => wit::Selection::All,
        Rows::Mask(mask) => {
            bits = mask_bits(mask);
            wit::Selection::Mask(&bits)
        }
        Rows::Indices(indices) => wit::Selection::Indices(indices.values()),
    };
    output::emit(param, selection).map_err(Error::from)
}
