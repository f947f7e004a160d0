//! Host-side mirrors of the WIT `types` interface, with the canonical-ABI
//! derives: owned types for schemas, borrowed types for lowering batches into
//! a guest (one copy, made by wasmtime), and lazily read types for lifting
//! batches out of a guest (bounds checked before a byte is copied).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use flumen_batch::{BatchError, ColumnView, FlatField};
use wasmtime::component::{ComponentType, Lift, Lower, WasmList};

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub enum WitTimeUnit {
    #[component(name = "second")]
    Second,
    #[component(name = "millisecond")]
    Millisecond,
    #[component(name = "microsecond")]
    Microsecond,
    #[component(name = "nanosecond")]
    Nanosecond,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct WitTimestampType {
    pub unit: WitTimeUnit,
    pub timezone: Option<String>,
}

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(record)]
pub struct WitDecimalType {
    pub precision: u8,
    pub scale: i8,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(variant)]
pub enum WitDataType {
    #[component(name = "null")]
    Null,
    #[component(name = "boolean")]
    Boolean,
    #[component(name = "int8")]
    Int8,
    #[component(name = "int16")]
    Int16,
    #[component(name = "int32")]
    Int32,
    #[component(name = "int64")]
    Int64,
    #[component(name = "uint8")]
    Uint8,
    #[component(name = "uint16")]
    Uint16,
    #[component(name = "uint32")]
    Uint32,
    #[component(name = "uint64")]
    Uint64,
    #[component(name = "float16")]
    Float16,
    #[component(name = "float32")]
    Float32,
    #[component(name = "float64")]
    Float64,
    #[component(name = "utf8")]
    Utf8,
    #[component(name = "large-utf8")]
    LargeUtf8,
    #[component(name = "utf8-view")]
    Utf8View,
    #[component(name = "binary")]
    Binary,
    #[component(name = "large-binary")]
    LargeBinary,
    #[component(name = "binary-view")]
    BinaryView,
    #[component(name = "fixed-size-binary")]
    FixedSizeBinary(i32),
    #[component(name = "date32")]
    Date32,
    #[component(name = "date64")]
    Date64,
    #[component(name = "time32")]
    Time32(WitTimeUnit),
    #[component(name = "time64")]
    Time64(WitTimeUnit),
    #[component(name = "timestamp")]
    Timestamp(WitTimestampType),
    #[component(name = "duration")]
    Duration(WitTimeUnit),
    #[component(name = "decimal128")]
    Decimal128(WitDecimalType),
    #[component(name = "decimal256")]
    Decimal256(WitDecimalType),
    #[component(name = "list")]
    List,
    #[component(name = "large-list")]
    LargeList,
    #[component(name = "fixed-size-list")]
    FixedSizeList(i32),
    #[component(name = "record")]
    Record,
    #[component(name = "map")]
    Map(bool),
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct WitField {
    pub name: String,
    #[component(name = "data-type")]
    pub data_type: WitDataType,
    pub nullable: bool,
    pub children: u32,
    pub metadata: Vec<(String, String)>,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct WitSchema {
    pub fields: Vec<WitField>,
    pub metadata: Vec<(String, String)>,
}

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
#[allow(dead_code, reason = "some variants only arrive by lifting from a guest")]
pub enum WitErrorKind {
    #[component(name = "invalid-config")]
    InvalidConfig,
    #[component(name = "invalid-input")]
    InvalidInput,
    #[component(name = "limit")]
    Limit,
    #[component(name = "internal")]
    Internal,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct WitError {
    pub kind: WitErrorKind,
    pub message: String,
}

/// The `transform.operator-plan` record (0.2) that `open` returns.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct WitPlan {
    pub schema: WitSchema,
    pub carried: Vec<Option<u32>>,
    pub reads: Vec<Option<Vec<u32>>>,
}

/// The `types.selection` variant (0.2), lifted lazily with an emitted batch.
#[derive(ComponentType, Lift)]
#[component(variant)]
#[allow(missing_debug_implementations, reason = "WasmList has no Debug")]
pub enum SelectionOut {
    #[component(name = "all")]
    All,
    #[component(name = "mask")]
    Mask(WasmList<u8>),
    #[component(name = "indices")]
    Indices(WasmList<u32>),
}

/// The `transform.context` record, lowered into the guest at `open`.
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct WitContext {
    #[component(name = "operator-id")]
    pub operator_id: String,
    pub subtask: u32,
    pub parallelism: u32,
    pub config: String,
    pub inputs: Vec<WitSchema>,
}

// ---- batches into a guest: borrowed, copied once by the canonical ABI ----

#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
pub struct ValidityIn<'a> {
    pub bits: &'a [u8],
    pub offset: u64,
}

#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
pub struct ColumnIn<'a> {
    pub len: u64,
    pub offset: u64,
    pub validity: Option<ValidityIn<'a>>,
    pub buffers: &'a [&'a [u8]],
}

#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
pub struct BatchIn<'a> {
    #[component(name = "num-rows")]
    pub num_rows: u64,
    pub columns: &'a [ColumnIn<'a>],
}

/// Builds the borrowed column records for `views`; `buffers` must hold each view's buffer list.
pub fn columns_in<'a>(views: &'a [ColumnView<'a>]) -> Vec<ColumnIn<'a>> {
    views
        .iter()
        .map(|v| ColumnIn {
            len: v.len,
            offset: v.offset,
            validity: v.validity.map(|(bits, offset)| ValidityIn { bits, offset }),
            buffers: &v.buffers,
        })
        .collect()
}

// ---- batches out of a guest: lifted lazily, read where they lie ----
// (no Debug: `WasmList` has none)

#[derive(ComponentType, Lift)]
#[component(record)]
#[allow(missing_debug_implementations, reason = "WasmList has no Debug")]
pub struct ValidityOut {
    pub bits: WasmList<u8>,
    pub offset: u64,
}

#[derive(ComponentType, Lift)]
#[component(record)]
#[allow(missing_debug_implementations, reason = "WasmList has no Debug")]
pub struct ColumnOut {
    pub len: u64,
    pub offset: u64,
    pub validity: Option<ValidityOut>,
    pub buffers: WasmList<WasmList<u8>>,
}

#[derive(ComponentType, Lift)]
#[component(record)]
#[allow(missing_debug_implementations, reason = "WasmList has no Debug")]
pub struct BatchOut {
    #[component(name = "num-rows")]
    pub num_rows: u64,
    pub columns: WasmList<ColumnOut>,
}

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[component(enum)]
#[repr(u8)]
#[allow(dead_code, reason = "variants only arrive by lifting from a guest")]
pub enum WitLevel {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}

// ---- schema conversions ----

pub fn schema_to_wit(schema: &Schema) -> Result<WitSchema, BatchError> {
    let fields = flumen_batch::flatten_schema(schema)?
        .into_iter()
        .map(|f| {
            Ok(WitField {
                data_type: type_to_wit(&f.data_type, &f.name)?,
                name: f.name,
                nullable: f.nullable,
                children: f.children,
                metadata: f.metadata.into_iter().collect(),
            })
        })
        .collect::<Result<_, BatchError>>()?;
    Ok(WitSchema { fields, metadata: schema.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect() })
}

pub fn schema_from_wit(schema: WitSchema) -> Result<SchemaRef, BatchError> {
    let fields = schema
        .fields
        .into_iter()
        .map(|f| FlatField {
            data_type: type_from_wit(&f.data_type),
            name: f.name,
            nullable: f.nullable,
            children: f.children,
            metadata: f.metadata.into_iter().collect(),
        })
        .collect();
    let metadata: HashMap<String, String> = schema.metadata.into_iter().collect();
    Ok(Arc::new(flumen_batch::unflatten_schema(fields, metadata)?))
}

fn unit_from(u: WitTimeUnit) -> TimeUnit {
    match u {
        WitTimeUnit::Second => TimeUnit::Second,
        WitTimeUnit::Millisecond => TimeUnit::Millisecond,
        WitTimeUnit::Microsecond => TimeUnit::Microsecond,
        WitTimeUnit::Nanosecond => TimeUnit::Nanosecond,
    }
}

fn unit_to(u: &TimeUnit) -> WitTimeUnit {
    match u {
        TimeUnit::Second => WitTimeUnit::Second,
        TimeUnit::Millisecond => WitTimeUnit::Millisecond,
        TimeUnit::Microsecond => WitTimeUnit::Microsecond,
        TimeUnit::Nanosecond => WitTimeUnit::Nanosecond,
    }
}

fn shell() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Null, true))
}

fn type_from_wit(t: &WitDataType) -> DataType {
    use WitDataType as W;
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
        W::Time32(u) => DataType::Time32(unit_from(*u)),
        W::Time64(u) => DataType::Time64(unit_from(*u)),
        W::Timestamp(t) => DataType::Timestamp(unit_from(t.unit), t.timezone.as_deref().map(Arc::from)),
        W::Duration(u) => DataType::Duration(unit_from(*u)),
        W::Decimal128(d) => DataType::Decimal128(d.precision, d.scale),
        W::Decimal256(d) => DataType::Decimal256(d.precision, d.scale),
        W::List => DataType::List(shell()),
        W::LargeList => DataType::LargeList(shell()),
        W::FixedSizeList(n) => DataType::FixedSizeList(shell(), *n),
        W::Record => DataType::Struct(Default::default()),
        W::Map(sorted) => DataType::Map(shell(), *sorted),
    }
}

fn type_to_wit(t: &DataType, field: &str) -> Result<WitDataType, BatchError> {
    use WitDataType as W;
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
        DataType::Time32(u) => W::Time32(unit_to(u)),
        DataType::Time64(u) => W::Time64(unit_to(u)),
        DataType::Timestamp(u, tz) => {
            W::Timestamp(WitTimestampType { unit: unit_to(u), timezone: tz.as_deref().map(String::from) })
        }
        DataType::Duration(u) => W::Duration(unit_to(u)),
        DataType::Decimal128(p, s) => W::Decimal128(WitDecimalType { precision: *p, scale: *s }),
        DataType::Decimal256(p, s) => W::Decimal256(WitDecimalType { precision: *p, scale: *s }),
        DataType::List(_) => W::List,
        DataType::LargeList(_) => W::LargeList,
        DataType::FixedSizeList(_, n) => W::FixedSizeList(*n),
        DataType::Struct(_) => W::Record,
        DataType::Map(_, sorted) => W::Map(*sorted),
        other => return Err(BatchError::UnsupportedType { field: field.to_string(), data_type: other.to_string() }),
    })
}
