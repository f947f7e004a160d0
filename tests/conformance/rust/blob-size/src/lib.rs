//! Conformance operator `blob-size` (tests/conformance/README.md), the Rust
//! reference the other guest languages are compared against byte for byte:
//! reads every blob a reference column points to, in 64 KiB pieces through
//! the host's `blobs` capability, and appends `bytes` (how many bytes were
//! read) and `sum` (the sum of their values), both null for a null reference.

use std::sync::Arc;

use flumen_sdk::arrow_array::{ArrayRef, Int64Array};
use flumen_sdk::blob::{self, BlobColumn, BlobRef};
use flumen_sdk::media;
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

/// Bytes asked for by each `blobs.read`; every language reads in the same
/// pieces, so the host sees the same calls.
const PIECE_BYTES: u64 = 65536;

/// The computed columns, appended in this order.
const BYTES: &str = "bytes";
const SUM: &str = "sum";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_column")]
    column: String,
}

fn default_column() -> String {
    "blob".into()
}

struct BlobSize {
    schema: SchemaRef,
    column: usize,
}

impl Operator for BlobSize {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let column = input
            .index_of(&config.column)
            .map_err(|_| Error::config(format!("blob-size: the input has no column `{}`", config.column)))?;
        let field = input.field(column);
        let is_blob =
            media::extension_name(field) == Some(media::BLOB) && field.data_type() == &media::blob_storage_type();
        if !is_blob {
            return Err(Error::config(format!(
                "blob-size: column `{}` must be a flumen.blob reference column, it is {}",
                config.column,
                field.data_type().to_string().to_lowercase()
            )));
        }
        for name in [BYTES, SUM] {
            if input.index_of(name).is_ok() {
                return Err(Error::config(format!("blob-size: the input already has a column `{name}`")));
            }
        }
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new(BYTES, DataType::Int64, true)));
        fields.push(Arc::new(Field::new(SUM, DataType::Int64, true)));
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Self { schema, column })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Every input column carried, then `bytes` and `sum`.
    fn shape(&self) -> Shape {
        let carried = self.schema.fields().len() - 2;
        Shape::new().reads(0, [self.column]).carries((0..carried).map(Some).chain([None, None]))
    }

    /// `batch` holds only the reference column.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let refs = BlobColumn::new(batch.column(0).as_ref())?;
        let mut bytes = Vec::with_capacity(refs.len());
        let mut sums = Vec::with_capacity(refs.len());
        for r in refs.iter() {
            let (n, sum) = match r {
                Some(r) => measure(&r).map(|(n, sum)| (Some(n), Some(sum)))?,
                None => (None, None),
            };
            bytes.push(n);
            sums.push(sum);
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(bytes)), Arc::new(Int64Array::from(sums))];
        out.emit(&RecordBatch::try_new(out.schema().clone(), columns)?)
    }
}

/// The number of bytes of `blob` and the sum of their values, read from
/// offset 0 in pieces of [`PIECE_BYTES`] until a read returns nothing.
fn measure(blob: &BlobRef) -> Result<(i64, i64), Error> {
    let (mut read, mut sum) = (0u64, 0i64);
    loop {
        let piece = blob::read(blob, read, PIECE_BYTES)?;
        if piece.is_empty() {
            break;
        }
        read += piece.len() as u64;
        sum += piece.iter().map(|&b| i64::from(b)).sum::<i64>();
    }
    let read = i64::try_from(read).map_err(|_| Error::input("blob-size: a blob over i64::MAX bytes"))?;
    Ok((read, sum))
}

export_operator!(BlobSize);
