//! Conversions between the WIT batch layout and arrow-rs, built on `flumen-batch`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch, UInt32Array};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use flumen_batch::{ColumnParts, FlatBatch, FlatField};

use crate::Error;
use crate::bindings::flumen::dataflow::{output, types as wit};

pub(crate) fn schema_from_wit(schema: wit::Schema) -> Result<SchemaRef, Error> {
    let fields = schema
        .fields
        .into_iter()
        .map(|f| {
            Ok(FlatField {
                data_type: type_from_wit(&f.data_type),
                name: f.name,
                nullable: f.nullable,
                children: f.children,
                metadata: f.metadata.into_iter().collect(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let metadata: HashMap<String, String> = schema.metadata.into_iter().collect();
    Ok(Arc::new(flumen_batch::unflatten_schema(fields, metadata)?))
}

pub(crate) fn schema_to_wit(schema: &Schema) -> Result<wit::Schema, Error> {
    let fields = flumen_batch::flatten_schema(schema)?
        .into_iter()
        .map(|f| {
            Ok(wit::Field {
                data_type: type_to_wit(&f.data_type, &f.name)?,
                name: f.name,
                nullable: f.nullable,
                children: f.children,
                metadata: f.metadata.into_iter().collect(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(wit::Schema { fields, metadata: schema.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect() })
}

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

fn unit_from_wit(u: wit::TimeUnit) -> TimeUnit {
    match u {
        wit::TimeUnit::Second => TimeUnit::Second,
        wit::TimeUnit::Millisecond => TimeUnit::Millisecond,
        wit::TimeUnit::Microsecond => TimeUnit::Microsecond,
        wit::TimeUnit::Nanosecond => TimeUnit::Nanosecond,
    }
}

fn unit_to_wit(u: &TimeUnit) -> wit::TimeUnit {
    match u {
        TimeUnit::Second => wit::TimeUnit::Second,
        TimeUnit::Millisecond => wit::TimeUnit::Millisecond,
        TimeUnit::Microsecond => wit::TimeUnit::Microsecond,
        TimeUnit::Nanosecond => wit::TimeUnit::Nanosecond,
    }
}

fn shell_child() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Null, true))
}

fn type_from_wit(t: &wit::DataType) -> DataType {
    use wit::DataType as W;
    match t {
        W::Null => DataType::Null,
        W::Boolean => DataType::Boolean,
        W::Int8 => DataType::Int8,
        W::Int16 => DataType::Int16,
        W::Int32 => DataType::Int32,
        W::Int64 => DataType::Int64,
        W::Uint8 => DataType::UInt8,
        W::Uint16 => DataType::UInt16,
        W::Uint32 => DataType::UInt32,
        W::Uint64 => DataType::UInt64,
        W::Float16 => DataType::Float16,
        W::Float32 => DataType::Float32,
        W::Float64 => DataType::Float64,
        W::Utf8 => DataType::Utf8,
        W::LargeUtf8 => DataType::LargeUtf8,
        W::Utf8View => DataType::Utf8View,
        W::Binary => DataType::Binary,
        W::LargeBinary => DataType::LargeBinary,
        W::BinaryView => DataType::BinaryView,
        W::FixedSizeBinary(n) => DataType::FixedSizeBinary(*n),
        W::Date32 => DataType::Date32,
        W::Date64 => DataType::Date64,
        W::Time32(u) => DataType::Time32(unit_from_wit(*u)),
        W::Time64(u) => DataType::Time64(unit_from_wit(*u)),
        W::Timestamp(t) => DataType::Timestamp(unit_from_wit(t.unit), t.timezone.as_deref().map(Arc::from)),
        W::Duration(u) => DataType::Duration(unit_from_wit(*u)),
        W::Decimal128(d) => DataType::Decimal128(d.precision, d.scale),
        W::Decimal256(d) => DataType::Decimal256(d.precision, d.scale),
        W::List => DataType::List(shell_child()),
        W::LargeList => DataType::LargeList(shell_child()),
        W::FixedSizeList(n) => DataType::FixedSizeList(shell_child(), *n),
        W::Record => DataType::Struct(Default::default()),
        W::Map(sorted) => DataType::Map(shell_child(), *sorted),
    }
}

fn type_to_wit(t: &DataType, field: &str) -> Result<wit::DataType, Error> {
    use wit::DataType as W;
    Ok(match t {
        DataType::Null => W::Null,
        DataType::Boolean => W::Boolean,
        DataType::Int8 => W::Int8,
        DataType::Int16 => W::Int16,
        DataType::Int32 => W::Int32,
        DataType::Int64 => W::Int64,
        DataType::UInt8 => W::Uint8,
        DataType::UInt16 => W::Uint16,
        DataType::UInt32 => W::Uint32,
        DataType::UInt64 => W::Uint64,
        DataType::Float16 => W::Float16,
        DataType::Float32 => W::Float32,
        DataType::Float64 => W::Float64,
        DataType::Utf8 => W::Utf8,
        DataType::LargeUtf8 => W::LargeUtf8,
        DataType::Utf8View => W::Utf8View,
        DataType::Binary => W::Binary,
        DataType::LargeBinary => W::LargeBinary,
        DataType::BinaryView => W::BinaryView,
        DataType::FixedSizeBinary(n) => W::FixedSizeBinary(*n),
        DataType::Date32 => W::Date32,
        DataType::Date64 => W::Date64,
        DataType::Time32(u) => W::Time32(unit_to_wit(u)),
        DataType::Time64(u) => W::Time64(unit_to_wit(u)),
        DataType::Timestamp(u, tz) => {
            W::Timestamp(wit::TimestampType { unit: unit_to_wit(u), timezone: tz.as_deref().map(String::from) })
        }
        DataType::Duration(u) => W::Duration(unit_to_wit(u)),
        DataType::Decimal128(p, s) => W::Decimal128(wit::DecimalType { precision: *p, scale: *s }),
        DataType::Decimal256(p, s) => W::Decimal256(wit::DecimalType { precision: *p, scale: *s }),
        DataType::List(_) => W::List,
        DataType::LargeList(_) => W::LargeList,
        DataType::FixedSizeList(_, n) => W::FixedSizeList(*n),
        DataType::Struct(_) => W::Record,
        DataType::Map(_, sorted) => W::Map(*sorted),
        other => return Err(Error::internal(format!("field `{field}`: type {other} cannot cross the boundary"))),
    })
}
