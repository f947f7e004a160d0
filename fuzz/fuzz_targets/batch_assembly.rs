//! Fuzz target: a batch a guest emits — its declared schema (flattened, as at
//! `open`), a row count and one column of buffers per field in pre-order — as
//! `output.emit` assembles and validates it. Whatever the buffers, the result
//! is a batch or an error, never a panic; an accepted batch round-trips
//! through the flattened layout unchanged.
#![no_main]

use std::sync::Arc;

use flumen_batch::{ColumnParts, FlatBatch, assemble_batch, flatten_schema, unflatten_schema};
use flumen_fuzz::{Count, WitColumn, WitField};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<WitField>, Count, Vec<WitColumn>)| {
    let (fields, num_rows, columns) = input;
    let flat: Vec<_> = fields.iter().map(WitField::to_flat).collect();
    let Ok(schema) = unflatten_schema(flat, Default::default()) else { return };
    // The host refuses at `open` a schema that cannot flatten; it never reaches emit.
    if flatten_schema(&schema).is_err() {
        return;
    }
    let schema = Arc::new(schema);
    let parts: Vec<ColumnParts> = columns.iter().map(WitColumn::to_parts).collect();
    let Ok(batch) = assemble_batch(&schema, num_rows.get(), parts) else { return };
    assert_eq!(batch.num_rows() as u64, num_rows.get());
    // What the next operator receives: the same batch, flattened and assembled again.
    let flat = FlatBatch::new(&batch);
    let again: Vec<ColumnParts> = flat
        .views()
        .iter()
        .map(|v| ColumnParts {
            len: v.len,
            offset: v.offset,
            validity: v.validity.map(|(b, o)| (arrow_buffer::Buffer::from(b), o)),
            buffers: v.buffers.iter().map(|b| arrow_buffer::Buffer::from(*b)).collect(),
        })
        .collect();
    let back = assemble_batch(&schema, num_rows.get(), again).expect("an accepted batch assembles again");
    assert_eq!(back, batch);
});
