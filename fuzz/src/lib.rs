//! Shared pieces of the fuzz targets: guest-declared schemas and guest buffers
//! derived from fuzzer bytes, in the shapes the WIT contract allows.

use std::collections::HashMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, TimeUnit};
use flumen_batch::{ColumnParts, FlatField};

/// A time unit as the WIT `time-unit` has it.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Unit {
    Second,
    Millisecond,
    Microsecond,
    Nanosecond,
}

impl From<Unit> for TimeUnit {
    fn from(u: Unit) -> Self {
        match u {
            Unit::Second => TimeUnit::Second,
            Unit::Millisecond => TimeUnit::Millisecond,
            Unit::Microsecond => TimeUnit::Microsecond,
            Unit::Nanosecond => TimeUnit::Nanosecond,
        }
    }
}

/// Every WIT `data-type` case, with the payloads a guest chooses.
#[derive(Arbitrary, Debug, Clone)]
pub enum WitType {
    Null,
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Float16,
    Float32,
    Float64,
    Utf8,
    LargeUtf8,
    Utf8View,
    Binary,
    LargeBinary,
    BinaryView,
    FixedSizeBinary(i32),
    Date32,
    Date64,
    Time32(Unit),
    Time64(Unit),
    Timestamp(Unit, Option<String>),
    Duration(Unit),
    Decimal128(u8, i8),
    Decimal256(u8, i8),
    List,
    LargeList,
    FixedSizeList(i32),
    Record,
    Map(bool),
}

fn shell() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Null, true))
}

impl WitType {
    /// The (shell) Arrow type the host makes of it, as `schema_from_wit` does.
    pub fn to_arrow(&self) -> DataType {
        match self {
            WitType::Null => DataType::Null,
            WitType::Boolean => DataType::Boolean,
            WitType::Int8 => DataType::Int8,
            WitType::Int16 => DataType::Int16,
            WitType::Int32 => DataType::Int32,
            WitType::Int64 => DataType::Int64,
            WitType::Uint8 => DataType::UInt8,
            WitType::Uint16 => DataType::UInt16,
            WitType::Uint32 => DataType::UInt32,
            WitType::Uint64 => DataType::UInt64,
            WitType::Float16 => DataType::Float16,
            WitType::Float32 => DataType::Float32,
            WitType::Float64 => DataType::Float64,
            WitType::Utf8 => DataType::Utf8,
            WitType::LargeUtf8 => DataType::LargeUtf8,
            WitType::Utf8View => DataType::Utf8View,
            WitType::Binary => DataType::Binary,
            WitType::LargeBinary => DataType::LargeBinary,
            WitType::BinaryView => DataType::BinaryView,
            WitType::FixedSizeBinary(n) => DataType::FixedSizeBinary(*n),
            WitType::Date32 => DataType::Date32,
            WitType::Date64 => DataType::Date64,
            WitType::Time32(u) => DataType::Time32((*u).into()),
            WitType::Time64(u) => DataType::Time64((*u).into()),
            WitType::Timestamp(u, tz) => DataType::Timestamp((*u).into(), tz.as_deref().map(Arc::from)),
            WitType::Duration(u) => DataType::Duration((*u).into()),
            WitType::Decimal128(p, s) => DataType::Decimal128(*p, *s),
            WitType::Decimal256(p, s) => DataType::Decimal256(*p, *s),
            WitType::List => DataType::List(shell()),
            WitType::LargeList => DataType::LargeList(shell()),
            WitType::FixedSizeList(n) => DataType::FixedSizeList(shell(), *n),
            WitType::Record => DataType::Struct(Default::default()),
            WitType::Map(sorted) => DataType::Map(shell(), *sorted),
        }
    }
}

/// One field of a guest-declared schema, flattened in pre-order as the WIT `schema` carries it.
#[derive(Arbitrary, Debug, Clone)]
pub struct WitField {
    pub name: String,
    pub data_type: WitType,
    pub nullable: bool,
    pub children: u8,
    pub metadata: Vec<(String, String)>,
}

impl WitField {
    pub fn to_flat(&self) -> FlatField {
        FlatField {
            name: self.name.clone(),
            data_type: self.data_type.to_arrow(),
            nullable: self.nullable,
            children: u32::from(self.children),
            metadata: self.metadata.iter().cloned().collect::<HashMap<_, _>>(),
        }
    }
}

/// A length or offset a guest claims: mostly small (so that buffers can match it), sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Count {
    Small(u8),
    Medium(u16),
    Any(u64),
}

impl Count {
    pub fn get(self) -> u64 {
        match self {
            Count::Small(n) => u64::from(n),
            Count::Medium(n) => u64::from(n),
            Count::Any(n) => n,
        }
    }
}

/// One emitted column, as a guest hands it to `output.emit`.
#[derive(Arbitrary, Debug, Clone)]
pub struct WitColumn {
    pub len: Count,
    pub offset: Count,
    pub validity: Option<(Vec<u8>, Count)>,
    pub buffers: Vec<Vec<u8>>,
}

impl WitColumn {
    /// The owned parts the host assembles from (each guest list copied once into a buffer).
    pub fn to_parts(&self) -> ColumnParts {
        ColumnParts {
            len: self.len.get(),
            offset: self.offset.get(),
            validity: self.validity.as_ref().map(|(bits, off)| (Buffer::from(bits.as_slice()), off.get())),
            buffers: self.buffers.iter().map(|b| Buffer::from(b.as_slice())).collect(),
        }
    }
}
