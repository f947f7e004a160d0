//! Arrow data plane: record batches flattened to the buffer layout of the WIT
//! contract and assembled back, with every untrusted buffer validated.
//!
//! A schema becomes its fields in depth-first pre-order, each with the number
//! of direct children that follow it; a batch becomes one [`ColumnView`] per
//! field in the same order, holding borrowed slices of the Arrow buffers (no
//! copy here: the canonical ABI copies each slice once when it lowers it).
//! Going the other way, [`assemble_batch`] builds arrays over owned
//! [`Buffer`]s, realigning only buffers that are misaligned for their type,
//! and runs Arrow's full validation (lengths, offsets, UTF-8) so that malformed
//! data from a guest or a peer is an error, never a panic or silent corruption.
//!
//! [`wire`] holds the schema records of the WIT contract and the one mapping
//! between them and Arrow types.
//!
//! Both the host and the Rust guest SDK use this crate, so the two ends of the
//! boundary agree by construction.

#[cfg(feature = "ipc")]
pub mod ipc;
pub mod media;
pub mod pins;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions, make_array};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow_data::{ArrayData, ArrayDataBuilder, BufferSpec};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};

/// Why a schema or batch could not be flattened or assembled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("field `{field}`: type {data_type} cannot cross the component boundary yet (cast it first)")]
    UnsupportedType { field: String, data_type: String },
    #[error("malformed schema: {0}")]
    MalformedSchema(String),
    #[error("malformed batch: {0}")]
    MalformedBatch(String),
    #[error("column `{field}`: {message}")]
    InvalidColumn { field: String, message: String },
    /// More rows (or, for an array whose slots cost no bytes, more slots) than
    /// the caller allows. `field` is `None` for the batch's row count.
    #[error("{} holds {slots} rows, over the limit of {max}", field.as_ref().map_or_else(|| "the batch".to_string(), |f| format!("column `{f}`")))]
    TooManyRows { field: Option<String>, slots: u64, max: u64 },
}

/// One field of a flattened schema. For nested types `data_type` is a shell:
/// its children are rebuilt from the fields that follow.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatField {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
    pub children: u32,
    pub metadata: HashMap<String, String>,
}

/// The direct children of a field of this type in the flattened form, or
/// `None` if the type cannot cross the boundary (see [`wire::DataType::from_arrow`]).
fn child_fields(data_type: &DataType) -> Option<Vec<Arc<Field>>> {
    match data_type {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
            Some(vec![f.clone()])
        }
        DataType::Struct(fields) => Some(fields.iter().cloned().collect()),
        other => wire::DataType::from_arrow(other).map(|_| Vec::new()),
    }
}

/// Whether Arrow's array code can lay out this type without panicking.
fn arrow_builds(data_type: &DataType) -> bool {
    use DataType::*;
    use arrow_schema::TimeUnit;
    !matches!(data_type, FixedSizeBinary(n) | FixedSizeList(_, n) if *n < 0)
        && !matches!(
            data_type,
            Time32(TimeUnit::Microsecond | TimeUnit::Nanosecond) | Time64(TimeUnit::Second | TimeUnit::Millisecond)
        )
}

/// Flattens `schema` into its fields in depth-first pre-order.
pub fn flatten_schema(schema: &Schema) -> Result<Vec<FlatField>, BatchError> {
    let mut out = Vec::new();
    for field in schema.fields() {
        flatten_field(field, &mut out)?;
    }
    Ok(out)
}

fn flatten_field(field: &Field, out: &mut Vec<FlatField>) -> Result<(), BatchError> {
    let children = child_fields(field.data_type()).ok_or_else(|| BatchError::UnsupportedType {
        field: field.name().clone(),
        data_type: field.data_type().to_string(),
    })?;
    out.push(FlatField {
        name: field.name().clone(),
        data_type: field.data_type().clone(),
        nullable: field.is_nullable(),
        children: children.len() as u32,
        metadata: field.metadata().clone().into(),
    });
    for child in &children {
        flatten_field(child, out)?;
    }
    Ok(())
}

/// Rebuilds a schema from its flattened fields. Rejects child counts that do
/// not fit the type, trailing or missing fields, and excessive nesting.
pub fn unflatten_schema(fields: Vec<FlatField>, metadata: HashMap<String, String>) -> Result<Schema, BatchError> {
    let mut iter = fields.into_iter();
    let mut top = Vec::new();
    while let Some(field) = iter.next() {
        top.push(Arc::new(unflatten_field(field, &mut iter, 0)?));
    }
    Ok(Schema::new_with_metadata(top, metadata))
}

/// Deepest nesting a schema may have. Stops a hostile schema from recursing the
/// host's stack away.
pub const NESTING_DEPTH_MAX: usize = 64;

fn unflatten_field(
    flat: FlatField,
    rest: &mut impl Iterator<Item = FlatField>,
    depth: usize,
) -> Result<Field, BatchError> {
    if depth > NESTING_DEPTH_MAX {
        return Err(BatchError::MalformedSchema(format!("nesting deeper than {NESTING_DEPTH_MAX} levels")));
    }
    let expected = expected_children(&flat.data_type);
    if let Some(n) = expected
        && n != flat.children as usize
    {
        return Err(BatchError::MalformedSchema(format!(
            "field `{}` of type {} must have {n} child field(s), not {}",
            flat.name, flat.data_type, flat.children
        )));
    }
    let mut children = Vec::with_capacity(flat.children.min(1024) as usize);
    for _ in 0..flat.children {
        let child = rest.next().ok_or_else(|| {
            BatchError::MalformedSchema(format!(
                "field `{}` announces {} children, the schema ends first",
                flat.name, flat.children
            ))
        })?;
        children.push(Arc::new(unflatten_field(child, rest, depth + 1)?));
    }
    use DataType::*;
    let data_type = match flat.data_type {
        List(_) => List(children.remove(0)),
        LargeList(_) => LargeList(children.remove(0)),
        FixedSizeList(_, n) => FixedSizeList(children.remove(0), n),
        Map(_, sorted) => {
            let entries = children.remove(0);
            match entries.data_type() {
                Struct(f) if f.len() == 2 => {}
                _ => {
                    return Err(BatchError::MalformedSchema(format!(
                        "map field `{}` needs a struct child with two fields (key, value)",
                        flat.name
                    )));
                }
            }
            Map(entries, sorted)
        }
        Struct(_) => Struct(Fields::from(children)),
        other => {
            if flat.children != 0 {
                return Err(BatchError::MalformedSchema(format!(
                    "field `{}` of type {other} cannot have children",
                    flat.name
                )));
            }
            other
        }
    };
    check_type(&flat.name, &data_type)?;
    Ok(Field::new(flat.name, data_type, flat.nullable).with_metadata(flat.metadata))
}

/// Checks every field of `schema`, nested ones included, for what Arrow and
/// the sinks can handle: time units that fit the type, non-negative widths,
/// decimal precision and scale in range, time zones Arrow can parse (with the
/// `tz-names` feature, on by default: offsets and tz database names).
/// [`unflatten_schema`] runs it on every field it rebuilds.
pub fn validate_schema(schema: &Schema) -> Result<(), BatchError> {
    fn walk(field: &Field, depth: usize) -> Result<(), BatchError> {
        if depth > NESTING_DEPTH_MAX {
            return Err(BatchError::MalformedSchema(format!("nesting deeper than {NESTING_DEPTH_MAX} levels")));
        }
        check_type(field.name(), field.data_type())?;
        for child in child_fields(field.data_type()).unwrap_or_default() {
            walk(&child, depth + 1)?;
        }
        Ok(())
    }
    for field in schema.fields() {
        walk(field, 0)?;
    }
    Ok(())
}

/// Refuses a type (its own parameters, not its children's) that Arrow cannot
/// build arrays of (`make_array` has no Time32 of micro- or nanoseconds),
/// that would make Arrow's layout code panic (negative widths), or that only
/// a sink would reject later (decimals out of range, unknown time zones).
fn check_type(name: &str, data_type: &DataType) -> Result<(), BatchError> {
    use arrow_array::types::{Decimal128Type, Decimal256Type};
    use arrow_schema::TimeUnit;
    let bad = |why: String| BatchError::MalformedSchema(format!("field `{name}` of type {data_type}: {why}"));
    match data_type {
        DataType::Time32(TimeUnit::Microsecond | TimeUnit::Nanosecond) => {
            Err(bad("time32 holds only seconds or milliseconds (use time64)".into()))
        }
        DataType::Time64(TimeUnit::Second | TimeUnit::Millisecond) => {
            Err(bad("time64 holds only microseconds or nanoseconds (use time32)".into()))
        }
        DataType::FixedSizeBinary(n) if *n < 0 => Err(bad(format!("byte width {n} is negative"))),
        DataType::FixedSizeList(_, n) if *n < 0 => Err(bad(format!("list size {n} is negative"))),
        DataType::Decimal128(p, s) => {
            arrow_array::types::validate_decimal_precision_and_scale::<Decimal128Type>(*p, *s)
                .map_err(|e| bad(e.to_string()))
        }
        DataType::Decimal256(p, s) => {
            arrow_array::types::validate_decimal_precision_and_scale::<Decimal256Type>(*p, *s)
                .map_err(|e| bad(e.to_string()))
        }
        // Without the tz database (in a guest) only fixed offsets would parse:
        // names are left to the host, which has it.
        #[cfg(feature = "tz-names")]
        DataType::Timestamp(_, Some(tz)) => {
            tz.parse::<arrow_array::timezone::Tz>().map(|_| ()).map_err(|e| bad(format!("time zone `{tz}`: {e}")))
        }
        _ => Ok(()),
    }
}

/// Children a field of this (shell) type must have; `None` for a struct (any number).
fn expected_children(data_type: &DataType) -> Option<usize> {
    match data_type {
        DataType::Struct(_) => None,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) | DataType::Map(_, _) => Some(1),
        _ => Some(0),
    }
}

/// Borrowed view of one array of a flattened batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnView<'a> {
    pub len: u64,
    pub offset: u64,
    /// Validity bitmap bytes and the bit offset of slot 0 in them.
    pub validity: Option<(&'a [u8], u64)>,
    pub buffers: Vec<&'a [u8]>,
}

/// A batch ready to be flattened: holds each column's `ArrayData` (cloning
/// `Arc`s, never bytes) so that [`FlatBatch::views`] can borrow from them.
#[derive(Debug, Clone)]
pub struct FlatBatch {
    num_rows: usize,
    columns: Vec<ArrayData>,
}

impl FlatBatch {
    pub fn new(batch: &RecordBatch) -> Self {
        Self { num_rows: batch.num_rows(), columns: batch.columns().iter().map(|c| c.to_data()).collect() }
    }

    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// One view per field in the pre-order of [`flatten_schema`].
    pub fn views(&self) -> Vec<ColumnView<'_>> {
        let mut out = Vec::with_capacity(self.columns.len());
        for data in &self.columns {
            push_views(data, &mut out);
        }
        out
    }

    /// Total bytes of all buffers the views cover.
    pub fn byte_len(&self) -> usize {
        self.views().iter().map(ColumnView::byte_len).sum()
    }
}

impl ColumnView<'_> {
    pub fn byte_len(&self) -> usize {
        self.validity.map_or(0, |(b, _)| b.len()) + self.buffers.iter().map(|b| b.len()).sum::<usize>()
    }
}

fn push_views<'a>(data: &'a ArrayData, out: &mut Vec<ColumnView<'a>>) {
    out.push(ColumnView {
        len: data.len() as u64,
        offset: data.offset() as u64,
        validity: data.nulls().map(|n| (n.buffer().as_slice(), n.offset() as u64)),
        buffers: data.buffers().iter().map(|b| b.as_slice()).collect(),
    });
    for child in data.child_data() {
        push_views(child, out);
    }
}

/// Owned parts of one array, as received from the other side of the boundary.
#[derive(Debug, Clone, Default)]
pub struct ColumnParts {
    pub len: u64,
    pub offset: u64,
    pub validity: Option<(Buffer, u64)>,
    pub buffers: Vec<Buffer>,
}

/// Largest slot index (offset + length) an untrusted column may claim.
/// Arrow's own arithmetic on lengths is unchecked; this keeps it far from overflow.
pub const SLOT_INDEX_MAX: u64 = 1 << 40;

/// Builds a batch of `schema` from columns in pre-order, validating everything:
/// buffer sizes, offsets, UTF-8, child lengths, nullability and the row count.
/// Buffers misaligned for their type are copied into aligned ones; others are used as they are.
pub fn assemble_batch(schema: &SchemaRef, num_rows: u64, columns: Vec<ColumnParts>) -> Result<RecordBatch, BatchError> {
    assemble_batch_bounded(schema, num_rows, columns, SLOT_INDEX_MAX)
}

/// Like [`assemble_batch`], with at most `rows_max` rows, and at most
/// `rows_max` slots in every array whose slots cost no bytes: Null, struct,
/// fixed-size list and zero-width fixed-size binary arrays. (The slots of
/// every other array are bounded by its buffers, and those by the caller's
/// byte limits.) Without this, a batch of 2^40 rows of a Null column, or of
/// no column at all, is valid Arrow, and all the work downstream is per row.
pub fn assemble_batch_bounded(
    schema: &SchemaRef,
    num_rows: u64,
    columns: Vec<ColumnParts>,
    rows_max: u64,
) -> Result<RecordBatch, BatchError> {
    assemble(schema, num_rows, columns, rows_max, Trust::Validate)
}

/// Builds a batch from buffers that the other side built from *validated*
/// Arrow arrays (the host, for a guest): the layout is still checked (column
/// count, slot ranges, bitmap lengths, types), but Arrow's per-value
/// validation (offsets, UTF-8) is skipped. The trusted direction is the one
/// into a sandbox: were the host ever wrong, the damage would stay inside the
/// guest's own linear memory, and whatever it emits is validated in full on
/// the way out. Never use it on bytes from a guest, a peer or the disk.
pub fn assemble_batch_trusted(
    schema: &SchemaRef,
    num_rows: u64,
    columns: Vec<ColumnParts>,
) -> Result<RecordBatch, BatchError> {
    assemble(schema, num_rows, columns, SLOT_INDEX_MAX, Trust::BuiltFromValidArrays)
}

/// Whether assembled arrays get Arrow's full validation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    Validate,
    /// See [`assemble_batch_trusted`].
    BuiltFromValidArrays,
}

fn assemble(
    schema: &SchemaRef,
    num_rows: u64,
    columns: Vec<ColumnParts>,
    rows_max: u64,
    trust: Trust,
) -> Result<RecordBatch, BatchError> {
    let rows_max = rows_max.min(SLOT_INDEX_MAX);
    if num_rows > rows_max {
        return Err(BatchError::TooManyRows { field: None, slots: num_rows, max: rows_max });
    }
    let num_rows = usize::try_from(num_rows)
        .map_err(|_| BatchError::MalformedBatch(format!("row count {num_rows} is out of range")))?;
    let mut parts = columns.into_iter();
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let data = build_array(field, &mut parts, 0, rows_max, trust)?;
        arrays.push(make_array(data));
    }
    let extra = parts.count();
    if extra > 0 {
        return Err(BatchError::MalformedBatch(format!("{extra} more column(s) than the schema has fields")));
    }
    let options = RecordBatchOptions::new().with_row_count(Some(num_rows));
    RecordBatch::try_new_with_options(schema.clone(), arrays, &options)
        .map_err(|e| BatchError::MalformedBatch(e.to_string()))
}

fn build_array(
    field: &Field,
    parts: &mut impl Iterator<Item = ColumnParts>,
    depth: usize,
    rows_max: u64,
    trust: Trust,
) -> Result<ArrayData, BatchError> {
    let invalid = |message: String| BatchError::InvalidColumn { field: field.name().clone(), message };
    if depth > NESTING_DEPTH_MAX {
        return Err(invalid(format!("nesting deeper than {NESTING_DEPTH_MAX} levels")));
    }
    let part = parts.next().ok_or_else(|| {
        BatchError::MalformedBatch(format!("no column for field `{}`: too few columns", field.name()))
    })?;
    let end = part.offset.checked_add(part.len).filter(|e| *e <= SLOT_INDEX_MAX);
    if end.is_none() {
        return Err(invalid(format!("offset {} + length {} is out of range", part.offset, part.len)));
    }
    // Slots that cost no bytes are bounded by count; and the multiplications
    // Arrow makes for fixed-size types must stay far from overflow (it panics).
    let free_slots = match field.data_type() {
        DataType::Null | DataType::Struct(_) | DataType::FixedSizeList(_, _) => true,
        DataType::FixedSizeBinary(width) => *width == 0,
        _ => false,
    };
    if free_slots && part.len > rows_max {
        return Err(BatchError::TooManyRows { field: Some(field.name().clone()), slots: part.len, max: rows_max });
    }
    if let DataType::FixedSizeList(_, width) | DataType::FixedSizeBinary(width) = field.data_type() {
        let width = u64::try_from(*width).map_err(|_| invalid(format!("width {width} is negative")))?;
        let slots = (part.offset + part.len).checked_mul(width).filter(|s| *s <= SLOT_INDEX_MAX);
        if slots.is_none() {
            return Err(invalid(format!(
                "offset {} + length {} times width {width} is out of range",
                part.offset, part.len
            )));
        }
    }
    let (len, offset) = (part.len as usize, part.offset as usize);
    // Arrow panics on these (negative widths; time units its arrays do not
    // implement). A schema `open` declared never has them (`check_type`), but
    // assembly does not rely on its caller for that.
    if !arrow_builds(field.data_type()) {
        return Err(BatchError::UnsupportedType {
            field: field.name().clone(),
            data_type: field.data_type().to_string(),
        });
    }
    let child_fields = child_fields(field.data_type()).ok_or_else(|| BatchError::UnsupportedType {
        field: field.name().clone(),
        data_type: field.data_type().to_string(),
    })?;
    // Arrow reads a views buffer as whole 16-byte views and panics on a partial one.
    if matches!(field.data_type(), DataType::Utf8View | DataType::BinaryView)
        && let Some(views) = part.buffers.first()
        && views.len() % 16 != 0
    {
        return Err(invalid(format!("views buffer of {} bytes is not a whole number of 16-byte views", views.len())));
    }
    let mut children = Vec::with_capacity(child_fields.len());
    for child in &child_fields {
        children.push(build_array(child, parts, depth + 1, rows_max, trust)?);
    }
    let nulls = match part.validity {
        None => None,
        Some((bits, bit_offset)) => {
            let needed = bit_offset.checked_add(part.len).filter(|e| *e <= SLOT_INDEX_MAX);
            match needed {
                Some(needed) if needed <= (bits.len() as u64) * 8 => {
                    Some(NullBuffer::new(BooleanBuffer::new(bits, bit_offset as usize, len)))
                }
                _ => {
                    return Err(invalid(format!(
                        "validity bitmap of {} bytes is too short for offset {bit_offset} and length {len}",
                        bits.len()
                    )));
                }
            }
        }
    };
    // Arrow reads a fixed-width buffer (offsets, values, type ids) as a slice
    // of whole elements and panics on a partial one at the end. No slot can
    // address a partial element, so it is dropped; every check after this sees
    // the same slots the guest could.
    let mut buffers = part.buffers;
    for (buffer, spec) in buffers.iter_mut().zip(&arrow_data::layout(field.data_type()).buffers) {
        if let BufferSpec::FixedWidth { byte_width, .. } = *spec
            && byte_width > 1
            && buffer.len() % byte_width != 0
        {
            *buffer = buffer.slice_with_length(0, buffer.len() - buffer.len() % byte_width);
        }
    }
    let builder = ArrayDataBuilder::new(field.data_type().clone())
        .len(len)
        .offset(offset)
        .nulls(nulls)
        .buffers(buffers)
        .child_data(children)
        .align_buffers(true);
    let builder = match trust {
        Trust::Validate => builder,
        #[allow(unsafe_code)]
        // SAFETY: only `assemble_batch_trusted` asks for this, for buffers
        // the host built from arrays Arrow had validated; see its docs for
        // why the guest side may rely on that.
        Trust::BuiltFromValidArrays => unsafe { builder.skip_validation(true) },
    };
    builder.build().map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests;
