//! The schema records of the WIT `types` interface as plain Rust types, and
//! the one mapping between them and Arrow schemas.
//!
//! The host and the Rust guest SDK both use these types *as* their bindings
//! of `time-unit`, `timestamp-type`, `decimal-type`, `data-type`, `field` and
//! `schema` (the records are the same in every contract version the host
//! runs):
//!
//! - the host through the `wasmtime` feature, which derives wasmtime's
//!   canonical-ABI traits with the WIT names (only `flumen-wasm` enables it,
//!   so wasmtime never enters a guest's build);
//! - the SDK through `wit_bindgen::generate!`'s `with` option, whose
//!   generated lifting and lowering code builds and matches these types by
//!   their field and case names (WIT names in Rust case) and calls
//!   [`TimeUnit::_lift`].
//!
//! So adding an Arrow type to the boundary is a change in two places: the
//! WIT `data-type` variant (a new contract version) and this module (a case
//! of [`DataType`] and its two arms in [`DataType::from_arrow`] and
//! [`DataType::to_arrow_shell`]; a nested type also needs its children in
//! the crate's flattening). What can cross is decided here alone: flattening
//! refuses exactly the Arrow types [`DataType::from_arrow`] does not map.

use std::sync::Arc;

use arrow_schema::{DataType as ArrowType, Field as ArrowField, Schema as ArrowSchema, SchemaRef};

use crate::{BatchError, FlatField};
#[cfg(feature = "wasmtime")]
use wasmtime::component::{ComponentType, Lift, Lower};

/// Unit of a temporal type (WIT `time-unit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "wasmtime", derive(ComponentType, Lift, Lower))]
#[cfg_attr(feature = "wasmtime", component(enum))]
#[repr(u8)]
pub enum TimeUnit {
    #[cfg_attr(feature = "wasmtime", component(name = "second"))]
    Second,
    #[cfg_attr(feature = "wasmtime", component(name = "millisecond"))]
    Millisecond,
    #[cfg_attr(feature = "wasmtime", component(name = "microsecond"))]
    Microsecond,
    #[cfg_attr(feature = "wasmtime", component(name = "nanosecond"))]
    Nanosecond,
}

impl TimeUnit {
    /// Every unit, in WIT order (the discriminants).
    pub const ALL: [TimeUnit; 4] =
        [TimeUnit::Second, TimeUnit::Millisecond, TimeUnit::Microsecond, TimeUnit::Nanosecond];

    /// The unit with this WIT discriminant. wit-bindgen's generated code
    /// lifts an enum through this name; the canonical ABI hands it only the
    /// discriminants of the WIT enum, so the last arm is never reached.
    #[doc(hidden)]
    pub fn _lift(discriminant: u8) -> TimeUnit {
        match Self::ALL.get(usize::from(discriminant)) {
            Some(unit) => *unit,
            None => panic!("time-unit discriminant {discriminant} out of range"),
        }
    }

    pub fn from_arrow(unit: &arrow_schema::TimeUnit) -> TimeUnit {
        match unit {
            arrow_schema::TimeUnit::Second => TimeUnit::Second,
            arrow_schema::TimeUnit::Millisecond => TimeUnit::Millisecond,
            arrow_schema::TimeUnit::Microsecond => TimeUnit::Microsecond,
            arrow_schema::TimeUnit::Nanosecond => TimeUnit::Nanosecond,
        }
    }

    pub fn to_arrow(self) -> arrow_schema::TimeUnit {
        match self {
            TimeUnit::Second => arrow_schema::TimeUnit::Second,
            TimeUnit::Millisecond => arrow_schema::TimeUnit::Millisecond,
            TimeUnit::Microsecond => arrow_schema::TimeUnit::Microsecond,
            TimeUnit::Nanosecond => arrow_schema::TimeUnit::Nanosecond,
        }
    }
}

/// WIT `timestamp-type`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "wasmtime", derive(ComponentType, Lift, Lower))]
#[cfg_attr(feature = "wasmtime", component(record))]
pub struct TimestampType {
    pub unit: TimeUnit,
    pub timezone: Option<String>,
}

/// WIT `decimal-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "wasmtime", derive(ComponentType, Lift, Lower))]
#[cfg_attr(feature = "wasmtime", component(record))]
pub struct DecimalType {
    pub precision: u8,
    pub scale: i8,
}

/// The Arrow logical type of one field without its children (WIT `data-type`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "wasmtime", derive(ComponentType, Lift, Lower))]
#[cfg_attr(feature = "wasmtime", component(variant))]
pub enum DataType {
    #[cfg_attr(feature = "wasmtime", component(name = "null"))]
    Null,
    #[cfg_attr(feature = "wasmtime", component(name = "boolean"))]
    Boolean,
    #[cfg_attr(feature = "wasmtime", component(name = "int8"))]
    Int8,
    #[cfg_attr(feature = "wasmtime", component(name = "int16"))]
    Int16,
    #[cfg_attr(feature = "wasmtime", component(name = "int32"))]
    Int32,
    #[cfg_attr(feature = "wasmtime", component(name = "int64"))]
    Int64,
    #[cfg_attr(feature = "wasmtime", component(name = "uint8"))]
    Uint8,
    #[cfg_attr(feature = "wasmtime", component(name = "uint16"))]
    Uint16,
    #[cfg_attr(feature = "wasmtime", component(name = "uint32"))]
    Uint32,
    #[cfg_attr(feature = "wasmtime", component(name = "uint64"))]
    Uint64,
    #[cfg_attr(feature = "wasmtime", component(name = "float16"))]
    Float16,
    #[cfg_attr(feature = "wasmtime", component(name = "float32"))]
    Float32,
    #[cfg_attr(feature = "wasmtime", component(name = "float64"))]
    Float64,
    #[cfg_attr(feature = "wasmtime", component(name = "utf8"))]
    Utf8,
    #[cfg_attr(feature = "wasmtime", component(name = "large-utf8"))]
    LargeUtf8,
    #[cfg_attr(feature = "wasmtime", component(name = "utf8-view"))]
    Utf8View,
    #[cfg_attr(feature = "wasmtime", component(name = "binary"))]
    Binary,
    #[cfg_attr(feature = "wasmtime", component(name = "large-binary"))]
    LargeBinary,
    #[cfg_attr(feature = "wasmtime", component(name = "binary-view"))]
    BinaryView,
    /// Byte width of each value.
    #[cfg_attr(feature = "wasmtime", component(name = "fixed-size-binary"))]
    FixedSizeBinary(i32),
    #[cfg_attr(feature = "wasmtime", component(name = "date32"))]
    Date32,
    #[cfg_attr(feature = "wasmtime", component(name = "date64"))]
    Date64,
    #[cfg_attr(feature = "wasmtime", component(name = "time32"))]
    Time32(TimeUnit),
    #[cfg_attr(feature = "wasmtime", component(name = "time64"))]
    Time64(TimeUnit),
    #[cfg_attr(feature = "wasmtime", component(name = "timestamp"))]
    Timestamp(TimestampType),
    #[cfg_attr(feature = "wasmtime", component(name = "duration"))]
    Duration(TimeUnit),
    #[cfg_attr(feature = "wasmtime", component(name = "decimal128"))]
    Decimal128(DecimalType),
    #[cfg_attr(feature = "wasmtime", component(name = "decimal256"))]
    Decimal256(DecimalType),
    /// One child: the item field.
    #[cfg_attr(feature = "wasmtime", component(name = "list"))]
    List,
    #[cfg_attr(feature = "wasmtime", component(name = "large-list"))]
    LargeList,
    /// One child; the number of items per value.
    #[cfg_attr(feature = "wasmtime", component(name = "fixed-size-list"))]
    FixedSizeList(i32),
    /// One child per struct field.
    #[cfg_attr(feature = "wasmtime", component(name = "record"))]
    Record,
    /// One child, the entries struct (key, value); whether keys are sorted.
    #[cfg_attr(feature = "wasmtime", component(name = "map"))]
    Map(bool),
}

impl DataType {
    /// The WIT type of an Arrow type, its children left out; `None` for a
    /// type that cannot cross the boundary.
    pub fn from_arrow(data_type: &ArrowType) -> Option<DataType> {
        use DataType as W;
        Some(match data_type {
            ArrowType::Null => W::Null,
            ArrowType::Boolean => W::Boolean,
            ArrowType::Int8 => W::Int8,
            ArrowType::Int16 => W::Int16,
            ArrowType::Int32 => W::Int32,
            ArrowType::Int64 => W::Int64,
            ArrowType::UInt8 => W::Uint8,
            ArrowType::UInt16 => W::Uint16,
            ArrowType::UInt32 => W::Uint32,
            ArrowType::UInt64 => W::Uint64,
            ArrowType::Float16 => W::Float16,
            ArrowType::Float32 => W::Float32,
            ArrowType::Float64 => W::Float64,
            ArrowType::Utf8 => W::Utf8,
            ArrowType::LargeUtf8 => W::LargeUtf8,
            ArrowType::Utf8View => W::Utf8View,
            ArrowType::Binary => W::Binary,
            ArrowType::LargeBinary => W::LargeBinary,
            ArrowType::BinaryView => W::BinaryView,
            ArrowType::FixedSizeBinary(n) => W::FixedSizeBinary(*n),
            ArrowType::Date32 => W::Date32,
            ArrowType::Date64 => W::Date64,
            ArrowType::Time32(u) => W::Time32(TimeUnit::from_arrow(u)),
            ArrowType::Time64(u) => W::Time64(TimeUnit::from_arrow(u)),
            ArrowType::Timestamp(u, tz) => {
                W::Timestamp(TimestampType { unit: TimeUnit::from_arrow(u), timezone: tz.as_deref().map(String::from) })
            }
            ArrowType::Duration(u) => W::Duration(TimeUnit::from_arrow(u)),
            ArrowType::Decimal128(p, s) => W::Decimal128(DecimalType { precision: *p, scale: *s }),
            ArrowType::Decimal256(p, s) => W::Decimal256(DecimalType { precision: *p, scale: *s }),
            ArrowType::List(_) => W::List,
            ArrowType::LargeList(_) => W::LargeList,
            ArrowType::FixedSizeList(_, n) => W::FixedSizeList(*n),
            ArrowType::Struct(_) => W::Record,
            ArrowType::Map(_, sorted) => W::Map(*sorted),
            _ => return None,
        })
    }

    /// The Arrow type, with placeholder children for a nested one
    /// ([`crate::unflatten_schema`] puts the real ones in).
    pub fn to_arrow_shell(&self) -> ArrowType {
        use DataType as W;
        let item = || Arc::new(ArrowField::new("item", ArrowType::Null, true));
        match self {
            W::Null => ArrowType::Null,
            W::Boolean => ArrowType::Boolean,
            W::Int8 => ArrowType::Int8,
            W::Int16 => ArrowType::Int16,
            W::Int32 => ArrowType::Int32,
            W::Int64 => ArrowType::Int64,
            W::Uint8 => ArrowType::UInt8,
            W::Uint16 => ArrowType::UInt16,
            W::Uint32 => ArrowType::UInt32,
            W::Uint64 => ArrowType::UInt64,
            W::Float16 => ArrowType::Float16,
            W::Float32 => ArrowType::Float32,
            W::Float64 => ArrowType::Float64,
            W::Utf8 => ArrowType::Utf8,
            W::LargeUtf8 => ArrowType::LargeUtf8,
            W::Utf8View => ArrowType::Utf8View,
            W::Binary => ArrowType::Binary,
            W::LargeBinary => ArrowType::LargeBinary,
            W::BinaryView => ArrowType::BinaryView,
            W::FixedSizeBinary(n) => ArrowType::FixedSizeBinary(*n),
            W::Date32 => ArrowType::Date32,
            W::Date64 => ArrowType::Date64,
            W::Time32(u) => ArrowType::Time32(u.to_arrow()),
            W::Time64(u) => ArrowType::Time64(u.to_arrow()),
            W::Timestamp(t) => ArrowType::Timestamp(t.unit.to_arrow(), t.timezone.as_deref().map(Arc::from)),
            W::Duration(u) => ArrowType::Duration(u.to_arrow()),
            W::Decimal128(d) => ArrowType::Decimal128(d.precision, d.scale),
            W::Decimal256(d) => ArrowType::Decimal256(d.precision, d.scale),
            W::List => ArrowType::List(item()),
            W::LargeList => ArrowType::LargeList(item()),
            W::FixedSizeList(n) => ArrowType::FixedSizeList(item(), *n),
            W::Record => ArrowType::Struct(Default::default()),
            W::Map(sorted) => ArrowType::Map(item(), *sorted),
        }
    }
}

/// One field of a schema in depth-first pre-order (WIT `field`): `children`
/// says how many of the following fields (with their own descendants) are
/// its direct children.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "wasmtime", derive(ComponentType, Lift, Lower))]
#[cfg_attr(feature = "wasmtime", component(record))]
pub struct Field {
    pub name: String,
    #[cfg_attr(feature = "wasmtime", component(name = "data-type"))]
    pub data_type: DataType,
    pub nullable: bool,
    pub children: u32,
    pub metadata: Vec<(String, String)>,
}

/// A flattened schema (WIT `schema`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "wasmtime", derive(ComponentType, Lift, Lower))]
#[cfg_attr(feature = "wasmtime", component(record))]
pub struct Schema {
    pub fields: Vec<Field>,
    pub metadata: Vec<(String, String)>,
}

impl Schema {
    /// Flattens an Arrow schema. An error names the first field whose type
    /// cannot cross the boundary.
    pub fn from_arrow(schema: &ArrowSchema) -> Result<Schema, BatchError> {
        let fields = crate::flatten_schema(schema)?
            .into_iter()
            .map(|f| {
                let data_type = DataType::from_arrow(&f.data_type).ok_or_else(|| BatchError::UnsupportedType {
                    field: f.name.clone(),
                    data_type: f.data_type.to_string(),
                })?;
                Ok(Field {
                    name: f.name,
                    data_type,
                    nullable: f.nullable,
                    children: f.children,
                    metadata: f.metadata.into_iter().collect(),
                })
            })
            .collect::<Result<_, BatchError>>()?;
        let metadata = schema.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Schema { fields, metadata })
    }

    /// Rebuilds the Arrow schema, checking it the way
    /// [`crate::unflatten_schema`] does (child counts, nesting depth, what
    /// Arrow and the sinks handle); an error names the field.
    pub fn into_arrow(self) -> Result<SchemaRef, BatchError> {
        let fields = self
            .fields
            .into_iter()
            .map(|f| FlatField {
                data_type: f.data_type.to_arrow_shell(),
                name: f.name,
                nullable: f.nullable,
                children: f.children,
                metadata: f.metadata.into_iter().collect(),
            })
            .collect();
        Ok(Arc::new(crate::unflatten_schema(fields, self.metadata.into_iter().collect())?))
    }
}

#[cfg(test)]
mod tests;
