//! Batches as Arrow IPC streams: the engine's in-flight batch files of an unaligned checkpoint
//! (one stream per input port, so one schema per file). Decoding trusts nothing it reads.

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;

/// Encodes `batches` (all of one schema) as an IPC stream; no batches, no bytes.
pub fn encode(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
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
pub fn decode(bytes: &[u8]) -> Result<Vec<RecordBatch>, ArrowError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    StreamReader::try_new(std::io::Cursor::new(bytes), None)?.collect()
}
