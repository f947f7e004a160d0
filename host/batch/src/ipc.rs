//! Batches as Arrow IPC streams: the engine's in-flight batch files of an unaligned checkpoint
//! (one stream per input port, so one schema per file). Decoding trusts nothing it reads.

use arrow_array::RecordBatch;
use arrow_data::BufferSpec;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, DataType, Field, Schema};

/// Encodes `batches` (all of one schema) as an IPC stream; no batches, no bytes.
pub fn encode(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    for field in first.schema_ref().fields() {
        check_storable(field)?;
    }
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
    check_stream(bytes)?;
    StreamReader::try_new(std::io::Cursor::new(bytes), None)?.collect()
}

/// Walks the messages of an IPC stream and checks what Arrow's reader takes on
/// trust: that each message's body is there, and that every buffer a batch
/// names lies inside its message's body (the reader slices it out unchecked,
/// and panics past the end).
fn check_stream(bytes: &[u8]) -> Result<(), ArrowError> {
    let bad = |what: String| ArrowError::ParseError(format!("malformed IPC stream: {what}"));
    let mut rest = bytes;
    let mut schema: Option<Schema> = None;
    loop {
        let Some((word, after)) = rest.split_first_chunk::<4>() else {
            return Ok(()); // No end-of-stream marker: the reader stops here too.
        };
        // A continuation marker, then the metadata length (older streams have the length only).
        let (length, after) = if *word == [0xFF; 4] {
            let (length, after) =
                after.split_first_chunk::<4>().ok_or_else(|| bad("truncated message length".into()))?;
            (i32::from_le_bytes(*length), after)
        } else {
            (i32::from_le_bytes(*word), after)
        };
        if length == 0 {
            return Ok(());
        }
        let length = usize::try_from(length).map_err(|_| bad(format!("negative metadata length {length}")))?;
        let (metadata, after) =
            after.split_at_checked(length).ok_or_else(|| bad(format!("metadata of {length} bytes is truncated")))?;
        let message = arrow_ipc::root_as_message(metadata).map_err(|e| bad(format!("invalid message: {e}")))?;
        let body = usize::try_from(message.bodyLength())
            .ok()
            .filter(|b| *b <= after.len())
            .ok_or_else(|| bad(format!("a body of {} bytes, {} left", message.bodyLength(), after.len())))?;
        if let Some(fb) = message.header_as_schema() {
            let decoded = arrow_ipc::convert::try_fb_to_schema(fb).map_err(|e| bad(format!("invalid schema: {e}")))?;
            for field in decoded.fields() {
                check_storable(field)?;
            }
            schema = Some(decoded);
        }
        if message.header_as_dictionary_batch().is_some() {
            return Err(bad("a dictionary batch: in-flight streams hold no dictionaries".into()));
        }
        let batch = message.header_as_record_batch();
        if let Some(batch) = batch {
            let schema = schema.as_ref().ok_or_else(|| bad("a record batch before the schema".into()))?;
            check_widths(schema, batch).map_err(bad)?;
        }
        for buffer in batch.and_then(|b| b.buffers()).iter().flatten() {
            let end = u64::try_from(buffer.offset())
                .ok()
                .zip(u64::try_from(buffer.length()).ok())
                .and_then(|(offset, length)| offset.checked_add(length));
            if end.is_none_or(|end| end > body as u64) {
                return Err(bad(format!(
                    "a buffer at offset {} of {} bytes lies outside its message body of {body} bytes",
                    buffer.offset(),
                    buffer.length()
                )));
            }
        }
        rest = &after[body..];
    }
}

/// Refuses types an in-flight stream may not hold: the ones Flumen's batches never have
/// (dictionaries, unions, run-end encoding, list views), whose IPC decoding Arrow does not
/// check as thoroughly.
fn check_storable(field: &Field) -> Result<(), ArrowError> {
    use DataType::*;
    match field.data_type() {
        Dictionary(..) | Union(..) | RunEndEncoded(..) | ListView(_) | LargeListView(_) => {
            Err(ArrowError::NotYetImplemented(format!(
                "column `{}` of type {}: in-flight batches cannot hold it",
                field.name(),
                field.data_type()
            )))
        }
        List(child) | LargeList(child) | FixedSizeList(child, _) | Map(child, _) => check_storable(child),
        Struct(children) => children.iter().try_for_each(|c| check_storable(c)),
        _ => Ok(()),
    }
}

/// Checks that every fixed-width buffer of `batch` (offsets, values, views) holds whole
/// elements: Arrow's validation reads such a buffer as a slice of elements and panics on a
/// partial one. Buffers are in the order Arrow's IPC writer puts them: per field, in
/// pre-order, a validity bitmap (not for `Null`) and then the type's own buffers, plus the
/// variadic data buffers of view types.
fn check_widths(schema: &Schema, batch: arrow_ipc::RecordBatch<'_>) -> Result<(), String> {
    fn walk(
        field: &Field,
        buffers: &mut impl Iterator<Item = i64>,
        variadic: &mut impl Iterator<Item = i64>,
    ) -> Result<(), String> {
        let data_type = field.data_type();
        if !matches!(data_type, DataType::Null) {
            buffers.next(); // Validity.
        }
        let layout = arrow_data::layout(data_type);
        for spec in &layout.buffers {
            let Some(length) = buffers.next() else { return Ok(()) }; // Arrow reports the count.
            if let BufferSpec::FixedWidth { byte_width, .. } = *spec
                && byte_width > 1
                && length % byte_width as i64 != 0
            {
                return Err(format!(
                    "column `{}`: a buffer of {length} bytes is not a whole number of {byte_width}-byte elements",
                    field.name()
                ));
            }
        }
        if layout.variadic {
            let count = variadic.next().unwrap_or(0);
            for _ in 0..count.max(0) {
                buffers.next();
            }
        }
        use DataType::*;
        match data_type {
            List(child) | LargeList(child) | FixedSizeList(child, _) | Map(child, _) => walk(child, buffers, variadic),
            Struct(children) => children.iter().try_for_each(|c| walk(c, buffers, variadic)),
            _ => Ok(()),
        }
    }
    let mut buffers = batch.buffers().into_iter().flatten().map(|b| b.length());
    let mut variadic = batch.variadicBufferCounts().into_iter().flatten();
    schema.fields().iter().try_for_each(|f| walk(f, &mut buffers, &mut variadic))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};

    use super::*;

    fn stream() -> Vec<u8> {
        let batch = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            ("s", Arc::new(StringArray::from(vec![Some("a"), None, Some("ccc")])) as _),
        ])
        .expect("batch");
        encode(&[batch.clone(), batch]).expect("encode")
    }

    #[test]
    fn streams_round_trip() {
        let bytes = stream();
        let batches = decode(&bytes).expect("decode");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].num_rows(), 3);
    }

    /// Found by the `inflight` fuzz target: a buffer offset past the message
    /// body made arrow-ipc's reader panic. Every buffer offset and length of
    /// every message, set far past the body, is an error.
    #[test]
    fn buffers_outside_their_body_are_errors_not_panics() {
        let good = stream();
        // Buffer descriptors are (offset: i64, length: i64) pairs in the
        // metadata; corrupt each 8-byte word in turn where it decodes as a
        // plausible offset or length.
        let mut refused = 0;
        for at in (8..good.len().saturating_sub(8)).step_by(8) {
            let mut bytes = good.clone();
            bytes[at..at + 8].copy_from_slice(&(1u64 << 32).to_le_bytes());
            if decode(&bytes).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0);
        // And any single byte set to any of a few values: an error or batches, never a panic.
        for at in 0..good.len() {
            for value in [0x00, 0x01, 0x05, 0x7F, 0x80, 0xFF] {
                let mut bytes = good.clone();
                bytes[at] = value;
                let _ = decode(&bytes);
            }
        }
    }

    /// The fuzz target's input itself (kept in its seed corpus).
    #[test]
    fn the_fuzzed_stream_is_an_error() {
        let bytes = include_bytes!("../../../fuzz/corpus/inflight/buffer-past-body");
        let err = decode(bytes).expect_err("a buffer past its body");
        assert!(err.to_string().contains("outside its message body"), "{err}");
    }

    #[test]
    fn types_flumen_batches_never_hold_are_refused_by_name() {
        let keys = arrow_array::DictionaryArray::<arrow_array::types::Int32Type>::from_iter(["a", "b", "a"]);
        let batch = RecordBatch::try_from_iter(vec![("category", Arc::new(keys) as _)]).expect("batch");
        let err = encode(&[batch]).expect_err("a dictionary column");
        assert!(err.to_string().contains("column `category`"), "{err}");
        assert!(err.to_string().contains("in-flight batches cannot hold it"), "{err}");
    }

    #[test]
    fn truncated_streams_are_errors() {
        let good = stream();
        for cut in [5, 9, 40, good.len() / 2, good.len() - 9] {
            let _ = decode(&good[..cut]);
        }
        assert!(decode(&good[..good.len() / 2]).is_err());
    }
}
