//! In-flight batches of an unaligned checkpoint, stored as Arrow IPC streams
//! (one per input port, so one schema per file).
//!
//! The codec lives in `flumen-batch` (feature `ipc`), where the fuzz targets reach it without
//! the engine.

pub(crate) use flumen_batch::ipc::{decode, encode};

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let b = RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("s", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        ])
        .unwrap();
        let bytes = encode(&[b.clone(), b.clone()]).unwrap();
        assert_eq!(decode(&bytes).unwrap(), vec![b.clone(), b]);
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        assert!(decode(b"not arrow at all").is_err());
    }
}
