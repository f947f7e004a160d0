//! Fuzz target: a schema a guest declares at `open`, flattened as the WIT
//! `schema` carries it. The host rebuilds it (`unflatten_schema`), checks it
//! can cross the boundary (`flatten_schema`), and later makes arrays of it; a
//! schema it accepts must survive all of that without a panic.
#![no_main]

use std::sync::Arc;

use arrow_array::RecordBatch;
use flumen_batch::{FlatBatch, assemble_batch, flatten_schema, unflatten_schema};
use flumen_fuzz::WitField;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<WitField>, Vec<(String, String)>)| {
    let (fields, metadata) = input;
    let flat: Vec<_> = fields.iter().map(WitField::to_flat).collect();
    let Ok(schema) = unflatten_schema(flat, metadata.into_iter().collect()) else { return };
    // What `open` checks: the schema must flatten again, to the same number of fields.
    let Ok(again) = flatten_schema(&schema) else { return };
    assert_eq!(again.len(), fields.len(), "flattening a rebuilt schema changed its field count");
    let schema = Arc::new(schema);
    // An accepted schema's empty batch must build, cross the boundary and be assembled back.
    let empty = RecordBatch::new_empty(schema.clone());
    let flat = FlatBatch::new(&empty);
    let parts = flat
        .views()
        .iter()
        .map(|v| flumen_batch::ColumnParts {
            len: v.len,
            offset: v.offset,
            validity: v.validity.map(|(b, o)| (arrow_buffer::Buffer::from(b), o)),
            buffers: v.buffers.iter().map(|b| arrow_buffer::Buffer::from(*b)).collect(),
        })
        .collect();
    let back = assemble_batch(&schema, 0, parts).expect("an empty batch of an accepted schema assembles");
    assert_eq!(back, empty);
});
