//! In-flight batches of an unaligned checkpoint, stored as Arrow IPC streams
//! (one per input port, so one schema per file).

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;

/// Encodes `batches` (all of one schema; at least one) as an IPC stream.
pub(crate) fn encode(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, first.schema_ref())?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    Ok(out)
}

/// Decodes what [`encode`] wrote. The caller verified the file's digest, but
/// a bad stream is still an error, never a panic.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<RecordBatch>, ArrowError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    StreamReader::try_new(std::io::Cursor::new(bytes), None)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
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
