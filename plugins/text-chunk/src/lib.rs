//! The `text-chunk` operator: splits documents (a text column, or text files
//! by reference) into overlapping chunks at the best semantic boundary, one
//! output row per chunk, ready for embedding.

mod split;

use std::sync::Arc;

use flumen_sdk::arrow_array::builder::{StringBuilder, UInt32Builder, UInt64Builder};
use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::{Array, ArrayRef, RecordBatchOptions, UInt32Array};
use flumen_sdk::blob::{self, BlobColumn, BlobRef};
use flumen_sdk::media;
use flumen_sdk::{Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, export_operator};
use serde::Deserialize;

use crate::split::{Chunker, Unit};

/// Chunks one document may give unless the config says otherwise. Stops a
/// tiny `max_chars` over a huge document from flooding the job with rows.
pub const MAX_CHUNKS_PER_DOCUMENT_DEFAULT: u64 = 10_000;

/// Largest document read by reference unless the config says otherwise. A
/// document is read whole into the instance's memory (256 MiB by default),
/// so a larger one is refused with its name rather than trapping the instance.
pub const MAX_DOCUMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Output rows gathered before a batch is emitted.
const EMIT_ROWS: usize = 8192;
/// Chunk text gathered before a batch is emitted: keeps output batches a
/// sensible size when documents are large.
const EMIT_CHUNK_BYTES: usize = 8 << 20;

/// Names of the columns this operator appends.
const OUTPUT_COLUMNS: [&str; 4] = ["chunk_index", "chunk", "start", "end"];

/// `config = { column = "text", max_chars = 1000, overlap = 100 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The documents: a utf8, large-utf8 or utf8-view column, or a column of
    /// blob references (`flumen.blob`) to UTF-8 files.
    column: String,
    /// Most characters (Unicode scalar values) per chunk.
    max_chars: Option<u64>,
    /// Most bytes (UTF-8) per chunk; instead of `max_chars`.
    max_bytes: Option<u64>,
    /// The most of the end of a chunk the next one repeats, in the unit of
    /// the size (characters or bytes), as whole units of the level the chunk
    /// was cut at (words, sentences…); below the size.
    #[serde(default)]
    overlap: u64,
    /// Keep the document column in the output (dropped by default).
    #[serde(default)]
    keep_input: bool,
    max_chunks_per_document: Option<u64>,
    max_document_bytes: Option<u64>,
}

/// Where the documents are.
#[derive(Debug, Clone, Copy)]
enum Documents {
    Utf8,
    LargeUtf8,
    Utf8View,
    Blobs,
}

struct TextChunk {
    schema: SchemaRef,
    input: usize,
    documents: Documents,
    /// Input columns repeated on every chunk row, in output order.
    kept: Vec<usize>,
    chunker: Chunker,
    max_chunks: usize,
    max_document_bytes: u64,
}

impl Operator for TextChunk {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input_schema = ctx.input(0)?;
        let (input, field) = input_schema.column_with_name(&config.column).ok_or_else(|| {
            let names: Vec<&str> = input_schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::config(format!("text-chunk: no column `{}`; columns are: {}", config.column, names.join(", ")))
        })?;
        let documents = match field.data_type() {
            _ if media::is_blob_ref(field) => Documents::Blobs,
            DataType::Utf8 => Documents::Utf8,
            DataType::LargeUtf8 => Documents::LargeUtf8,
            DataType::Utf8View => Documents::Utf8View,
            other => {
                return Err(Error::config(format!(
                    "text-chunk: column `{}` has type {other}; it must hold text (utf8) or blob references (flumen.blob)",
                    config.column
                )));
            }
        };
        let (size, unit) = match (config.max_chars, config.max_bytes) {
            (Some(n), None) => (n, Unit::Chars),
            (None, Some(n)) => (n, Unit::Bytes),
            _ => return Err(Error::config("text-chunk: give exactly one of `max_chars` and `max_bytes`")),
        };
        let chunker =
            Chunker::new(size, config.overlap, unit).map_err(|m| Error::config(format!("text-chunk: {m}")))?;
        let max_chunks = config.max_chunks_per_document.unwrap_or(MAX_CHUNKS_PER_DOCUMENT_DEFAULT);
        if max_chunks == 0 {
            return Err(Error::config("text-chunk: `max_chunks_per_document` must be at least 1"));
        }
        let max_document_bytes = config.max_document_bytes.unwrap_or(MAX_DOCUMENT_BYTES_DEFAULT);

        let kept: Vec<usize> = (0..input_schema.fields().len()).filter(|&i| i != input || config.keep_input).collect();
        let mut fields: Vec<Field> = Vec::with_capacity(kept.len() + OUTPUT_COLUMNS.len());
        for &i in &kept {
            let f = input_schema.field(i);
            if OUTPUT_COLUMNS.contains(&f.name().as_str()) {
                return Err(Error::config(format!(
                    "text-chunk: the input already has a column `{}`, which the output adds; rename it first",
                    f.name()
                )));
            }
            fields.push(f.clone());
        }
        fields.push(Field::new("chunk_index", DataType::UInt32, false));
        fields.push(Field::new("chunk", DataType::Utf8, false));
        fields.push(Field::new("start", DataType::UInt64, false));
        fields.push(Field::new("end", DataType::UInt64, false));
        let schema = Arc::new(Schema::new_with_metadata(fields, input_schema.metadata().clone()));
        Ok(Self {
            schema,
            input,
            documents,
            kept,
            chunker,
            max_chunks: usize::try_from(max_chunks).unwrap_or(usize::MAX),
            max_document_bytes,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let column = batch.column(self.input);
        let mut pending = Pending::default();
        match self.documents {
            Documents::Blobs => {
                let refs = BlobColumn::new(column.as_ref())?;
                for row in 0..refs.len() {
                    let Some(r) = refs.get(row) else { continue };
                    let text = self.read_document(&r)?;
                    self.chunk(&text, row, || blob_name(&r), &mut pending)?;
                    pending.flush_if_full(self, &batch, out)?;
                }
            }
            Documents::Utf8 => {
                let texts = column.as_string_opt::<i32>().ok_or_else(|| self.mismatch(&batch))?;
                self.chunk_column(texts.iter(), &batch, &mut pending, out)?;
            }
            Documents::LargeUtf8 => {
                let texts = column.as_string_opt::<i64>().ok_or_else(|| self.mismatch(&batch))?;
                self.chunk_column(texts.iter(), &batch, &mut pending, out)?;
            }
            Documents::Utf8View => {
                let texts = column.as_string_view_opt().ok_or_else(|| self.mismatch(&batch))?;
                self.chunk_column(texts.iter(), &batch, &mut pending, out)?;
            }
        }
        pending.flush(self, &batch, out)
    }
}

impl TextChunk {
    fn chunk_column<'a>(
        &self,
        values: impl Iterator<Item = Option<&'a str>>,
        batch: &RecordBatch,
        pending: &mut Pending,
        out: &mut Emitter,
    ) -> Result<(), Error> {
        for (row, text) in values.enumerate() {
            let Some(text) = text else { continue };
            self.chunk(text, row, || format!("row {row} of column `{}`", self.schema_input_name(batch)), pending)?;
            pending.flush_if_full(self, batch, out)?;
        }
        Ok(())
    }

    /// A batch whose document column is not of the type seen at `open`.
    fn mismatch(&self, batch: &RecordBatch) -> Error {
        Error::internal(format!(
            "text-chunk: column `{}` arrived as {}, not the type it had when the operator opened",
            self.schema_input_name(batch),
            batch.column(self.input).data_type()
        ))
    }

    fn schema_input_name<'b>(&self, batch: &'b RecordBatch) -> &'b str {
        batch.schema_ref().field(self.input).name()
    }

    /// Splits `text` (the document of input row `row`) into `pending`; `name`
    /// describes the document for an error.
    fn chunk(&self, text: &str, row: usize, name: impl FnOnce() -> String, pending: &mut Pending) -> Result<(), Error> {
        let ranges = self.chunker.split(text, self.max_chunks).map_err(|too_many| {
            Error::input(format!(
                "text-chunk: {} gives more than {too_many} chunks (`max_chunks_per_document`); \
                 raise it, or raise the chunk size",
                name()
            ))
        })?;
        let row = u32::try_from(row).map_err(|_| Error::input("text-chunk: batch has more than 2^32 rows"))?;
        for (index, range) in ranges.into_iter().enumerate() {
            pending.rows.push(row);
            // `max_chunks` is checked by `split`; an index past u32 would need 4 G chunks.
            pending.chunk_index.append_value(u32::try_from(index).unwrap_or(u32::MAX));
            pending.text_bytes += range.len();
            pending.chunk.append_value(&text[range.clone()]);
            pending.start.append_value(range.start as u64);
            pending.end.append_value(range.end as u64);
        }
        Ok(())
    }

    /// Reads a referenced document as UTF-8, naming the file on failure.
    fn read_document(&self, r: &BlobRef) -> Result<String, Error> {
        if r.size > self.max_document_bytes {
            return Err(Error::input(format!(
                "text-chunk: {} has {} bytes, more than `max_document_bytes` = {}",
                blob_name(r),
                r.size,
                self.max_document_bytes
            )));
        }
        let bytes = blob::read_all(r).map_err(|mut e| {
            e.message = format!("text-chunk: reading {}: {}", blob_name(r), e.message);
            e
        })?;
        String::from_utf8(bytes).map_err(|e| {
            Error::input(format!(
                "text-chunk: {} is not valid UTF-8 (first bad byte at offset {})",
                blob_name(r),
                e.utf8_error().valid_up_to()
            ))
        })
    }
}

/// How an error names a referenced document: its path or URI when the host
/// knows it, else its digest.
fn blob_name(r: &BlobRef) -> String {
    match blob::stat(r) {
        Ok(info) => match info.source {
            Some(source) => format!("`{source}`"),
            None => format!("blob {}", r.digest_hex()),
        },
        Err(_) => format!("blob {}", r.digest_hex()),
    }
}

/// Output rows gathered but not yet emitted.
#[derive(Default)]
struct Pending {
    /// Input row of each chunk.
    rows: Vec<u32>,
    chunk_index: UInt32Builder,
    chunk: StringBuilder,
    start: UInt64Builder,
    end: UInt64Builder,
    text_bytes: usize,
}

impl Pending {
    fn flush_if_full(&mut self, op: &TextChunk, batch: &RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        if self.rows.len() >= EMIT_ROWS || self.text_bytes >= EMIT_CHUNK_BYTES {
            self.flush(op, batch, out)?;
        }
        Ok(())
    }

    fn flush(&mut self, op: &TextChunk, batch: &RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let take = UInt32Array::from(std::mem::take(&mut self.rows));
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(op.schema.fields().len());
        for &i in &op.kept {
            let c = flumen_sdk::arrow_select::take::take(batch.column(i).as_ref(), &take, None)
                .map_err(|e| Error::internal(format!("text-chunk: repeating input columns: {e}")))?;
            columns.push(c);
        }
        columns.push(Arc::new(self.chunk_index.finish()));
        columns.push(Arc::new(self.chunk.finish()));
        columns.push(Arc::new(self.start.finish()));
        columns.push(Arc::new(self.end.finish()));
        self.text_bytes = 0;
        let options = RecordBatchOptions::new().with_row_count(Some(take.len()));
        let batch = RecordBatch::try_new_with_options(op.schema.clone(), columns, &options)
            .map_err(|e| Error::internal(format!("text-chunk: building output: {e}")))?;
        out.emit(&batch)
    }
}

export_operator!(TextChunk);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_column_names_are_the_documented_ones() {
        assert_eq!(OUTPUT_COLUMNS, ["chunk_index", "chunk", "start", "end"]);
    }

    #[test]
    fn size_must_be_given_once() {
        let ctx = Context {
            operator_id: "c".into(),
            subtask: 0,
            parallelism: 1,
            inputs: vec![Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, true)]))],
        };
        let open = |json: &str| TextChunk::open(&ctx, serde_json::from_str(json).unwrap()).err().map(|e| e.message);
        assert!(open(r#"{"column":"text"}"#).unwrap().contains("exactly one of `max_chars` and `max_bytes`"));
        assert!(open(r#"{"column":"text","max_chars":5,"max_bytes":5}"#).unwrap().contains("exactly one"));
        assert!(open(r#"{"column":"nope","max_chars":5}"#).unwrap().contains("no column `nope`; columns are: text"));
        assert!(open(r#"{"column":"text","max_chars":5,"overlap":5}"#).unwrap().contains("overlap"));
        assert!(open(r#"{"column":"text","max_chars":5,"max_chunks_per_document":0}"#).unwrap().contains("at least 1"));
        assert!(open(r#"{"column":"text","max_chars":5}"#).is_none());
    }

    #[test]
    fn output_schema_drops_the_document_unless_kept() {
        let input = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::LargeUtf8, true),
        ]));
        let ctx = Context { operator_id: "c".into(), subtask: 0, parallelism: 1, inputs: vec![input] };
        let names = |json: &str| -> Vec<String> {
            let op = TextChunk::open(&ctx, serde_json::from_str(json).unwrap()).unwrap();
            op.schema().fields().iter().map(|f| f.name().clone()).collect()
        };
        assert_eq!(names(r#"{"column":"text","max_chars":5}"#), ["id", "chunk_index", "chunk", "start", "end"]);
        assert_eq!(
            names(r#"{"column":"text","max_chars":5,"keep_input":true}"#),
            ["id", "text", "chunk_index", "chunk", "start", "end"]
        );
    }

    #[test]
    fn non_text_columns_and_name_clashes_are_refused() {
        let input = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("chunk", DataType::Utf8, false),
        ]));
        let ctx = Context { operator_id: "c".into(), subtask: 0, parallelism: 1, inputs: vec![input] };
        let err = |json: &str| TextChunk::open(&ctx, serde_json::from_str(json).unwrap()).err().unwrap().message;
        assert!(err(r#"{"column":"n","max_chars":5}"#).contains("has type Int64"));
        assert!(err(r#"{"column":"n","max_chars":5,"keep_input":true}"#).contains("has type Int64"));
        let input = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Utf8, false),
            Field::new("chunk", DataType::Utf8, false),
        ]));
        let ctx = Context { operator_id: "c".into(), subtask: 0, parallelism: 1, inputs: vec![input] };
        let e = TextChunk::open(&ctx, serde_json::from_str(r#"{"column":"t","max_chars":5}"#).unwrap()).err().unwrap();
        assert!(e.message.contains("already has a column `chunk`"), "{}", e.message);
    }

    #[test]
    fn a_blob_column_is_recognised() {
        let input = Arc::new(Schema::new(vec![media::blob_field("blob", true)]));
        let ctx = Context { operator_id: "c".into(), subtask: 0, parallelism: 1, inputs: vec![input] };
        let op = TextChunk::open(&ctx, serde_json::from_str(r#"{"column":"blob","max_bytes":64}"#).unwrap()).unwrap();
        assert!(matches!(op.documents, Documents::Blobs));
        assert_eq!(op.schema().fields().len(), 4);
    }
}
