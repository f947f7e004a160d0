//! Hash partitioning: splits a batch by a hash of its key columns so that rows
//! with equal keys always reach the same consumer subtask. A blob reference
//! key is hashed by its digest alone: equal bytes go to the same subtask
//! whatever their media type.

use arrow_array::{RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};

use crate::EngineError;

/// Splits `batch` into one part per target that receives rows, by a stable
/// hash of the columns at `keys` modulo `targets`.
pub(crate) fn hash_split(
    batch: &RecordBatch,
    keys: &[usize],
    targets: usize,
) -> Result<Vec<(usize, RecordBatch)>, EngineError> {
    if targets <= 1 {
        return Ok(vec![(0, batch.clone())]);
    }
    // Row indices are u32 below; operators' batches are far smaller (`output_rows_per_call`).
    if u32::try_from(batch.num_rows()).is_err() {
        return Err(EngineError::Internal(format!(
            "hash partitioning: a batch of {} rows is over {} rows",
            batch.num_rows(),
            u32::MAX
        )));
    }
    let schema = batch.schema();
    let columns: Vec<_> = keys
        .iter()
        .map(|&k| {
            let column = batch.column(k);
            match column.as_any().downcast_ref::<arrow_array::StructArray>() {
                Some(refs) if flumen_batch::media::is_blob_ref(schema.field(k)) => refs.column(0).clone(),
                _ => column.clone(),
            }
        })
        .collect();
    let converter = RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())
        .map_err(|e| EngineError::Internal(format!("hash keys: {e}")))?;
    let rows = converter.convert_columns(&columns).map_err(|e| EngineError::Internal(format!("hash keys: {e}")))?;
    let mut per_target: Vec<Vec<u32>> = vec![Vec::new(); targets];
    for (i, row) in rows.iter().enumerate() {
        per_target[(stable_hash(row.as_ref()) % targets as u64) as usize].push(i as u32);
    }
    let mut out = Vec::new();
    for (target, idx) in per_target.into_iter().enumerate() {
        if idx.is_empty() {
            continue;
        }
        let idx = UInt32Array::from(idx);
        let columns = batch
            .columns()
            .iter()
            .map(|c| arrow_select::take::take(c, &idx, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Internal(format!("hash split: {e}")))?;
        let part = RecordBatch::try_new(batch.schema(), columns)
            .map_err(|e| EngineError::Internal(format!("hash split: {e}")))?;
        // `take` copied the blob columns: keep the blobs they refer to alive.
        out.push((target, flumen_blob::carry_pins(batch, part)));
    }
    Ok(out)
}

/// FNV-1a: stable across processes and versions, so partitioning is too.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn equal_keys_go_to_the_same_target_and_no_row_is_lost() {
        let keys = Int64Array::from_iter_values((0..1000).map(|i| i % 37));
        let vals = StringArray::from_iter_values((0..1000).map(|i| format!("v{i}")));
        let batch = RecordBatch::try_from_iter([("k", Arc::new(keys) as _), ("v", Arc::new(vals) as _)]).unwrap();
        let parts = hash_split(&batch, &[0], 4).unwrap();
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(|(_, p)| p.num_rows()).sum::<usize>(), 1000);
        let mut owner = std::collections::HashMap::new();
        for (t, p) in &parts {
            let k = p.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..k.len() {
                assert_eq!(*owner.entry(k.value(i)).or_insert(*t), *t, "key {} split across targets", k.value(i));
            }
        }
    }
}
