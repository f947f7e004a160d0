//! Every Arrow type the boundary carries round-trips Arrow → wire → Arrow;
//! every other type is refused by name.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow_schema::{DataType as A, Field as ArrowField, Fields, Schema as ArrowSchema, TimeUnit as ArrowUnit};

use super::*;

/// The case of a wire type, by an exhaustive match: a new case of
/// [`DataType`] does not compile here until it is listed, and then fails
/// [`every_wire_type_round_trips`] until `samples` holds an Arrow type that
/// maps to it.
fn case(t: &DataType) -> &'static str {
    match t {
        DataType::Null => "null",
        DataType::Boolean => "boolean",
        DataType::Int8 => "int8",
        DataType::Int16 => "int16",
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::Uint8 => "uint8",
        DataType::Uint16 => "uint16",
        DataType::Uint32 => "uint32",
        DataType::Uint64 => "uint64",
        DataType::Float16 => "float16",
        DataType::Float32 => "float32",
        DataType::Float64 => "float64",
        DataType::Utf8 => "utf8",
        DataType::LargeUtf8 => "large-utf8",
        DataType::Utf8View => "utf8-view",
        DataType::Binary => "binary",
        DataType::LargeBinary => "large-binary",
        DataType::BinaryView => "binary-view",
        DataType::FixedSizeBinary(_) => "fixed-size-binary",
        DataType::Date32 => "date32",
        DataType::Date64 => "date64",
        DataType::Time32(_) => "time32",
        DataType::Time64(_) => "time64",
        DataType::Timestamp(_) => "timestamp",
        DataType::Duration(_) => "duration",
        DataType::Decimal128(_) => "decimal128",
        DataType::Decimal256(_) => "decimal256",
        DataType::List => "list",
        DataType::LargeList => "large-list",
        DataType::FixedSizeList(_) => "fixed-size-list",
        DataType::Record => "record",
        DataType::Map(_) => "map",
    }
}

/// How many cases [`case`] lists (a new case must raise it).
const CASES: usize = 33;

fn field(name: &str, data_type: A) -> ArrowField {
    ArrowField::new(name, data_type, true)
}

fn entries(key: A, value: A) -> Arc<ArrowField> {
    Arc::new(ArrowField::new(
        "entries",
        A::Struct(Fields::from(vec![ArrowField::new("key", key, false), field("value", value)])),
        false,
    ))
}

/// One Arrow type per wire case at least, with every parameter the case
/// carries varied: every time unit each temporal type holds, time zones
/// and none, decimal bounds, sorted and unsorted maps, nesting in nesting.
fn samples() -> Vec<A> {
    let mut out = vec![
        A::Null,
        A::Boolean,
        A::Int8,
        A::Int16,
        A::Int32,
        A::Int64,
        A::UInt8,
        A::UInt16,
        A::UInt32,
        A::UInt64,
        A::Float16,
        A::Float32,
        A::Float64,
        A::Utf8,
        A::LargeUtf8,
        A::Utf8View,
        A::Binary,
        A::LargeBinary,
        A::BinaryView,
        A::FixedSizeBinary(0),
        A::FixedSizeBinary(16),
        A::Date32,
        A::Date64,
        A::Time32(ArrowUnit::Second),
        A::Time32(ArrowUnit::Millisecond),
        A::Time64(ArrowUnit::Microsecond),
        A::Time64(ArrowUnit::Nanosecond),
        A::Decimal128(1, 0),
        A::Decimal128(38, 10),
        A::Decimal128(10, -2),
        A::Decimal256(76, 20),
        A::Decimal256(1, 0),
        A::List(Arc::new(field("item", A::Int32))),
        A::List(Arc::new(ArrowField::new("element", A::Utf8, false))),
        A::LargeList(Arc::new(field("item", A::Float64))),
        A::FixedSizeList(Arc::new(field("item", A::Float32)), 3),
        A::FixedSizeList(Arc::new(field("item", A::Int8)), 0),
        A::Struct(Fields::empty()),
        A::Struct(Fields::from(vec![field("a", A::Int64), ArrowField::new("b", A::Utf8, false)])),
        A::Map(entries(A::Utf8, A::Int64), false),
        A::Map(entries(A::Int32, A::List(Arc::new(field("item", A::Boolean)))), true),
        // Nesting in nesting: a list of structs holding a map and a list of lists.
        A::List(Arc::new(field(
            "item",
            A::Struct(Fields::from(vec![
                field(
                    "m",
                    A::Map(entries(A::Utf8, A::Timestamp(ArrowUnit::Millisecond, Some("+01:00".into()))), false),
                ),
                field(
                    "ll",
                    A::LargeList(Arc::new(field("item", A::List(Arc::new(field("item", A::Decimal128(5, 2))))))),
                ),
            ])),
        ))),
    ];
    for unit in [ArrowUnit::Second, ArrowUnit::Millisecond, ArrowUnit::Microsecond, ArrowUnit::Nanosecond] {
        out.push(A::Duration(unit));
        out.push(A::Timestamp(unit, None));
        out.push(A::Timestamp(unit, Some("UTC".into())));
        out.push(A::Timestamp(unit, Some("-05:30".into())));
    }
    #[cfg(feature = "tz-names")]
    out.push(A::Timestamp(ArrowUnit::Nanosecond, Some("Europe/Paris".into())));
    out
}

#[test]
fn every_wire_type_round_trips() {
    let mut seen = BTreeSet::new();
    for (i, data_type) in samples().into_iter().enumerate() {
        let metadata = HashMap::from([("origin".to_string(), format!("sample {i}"))]);
        let schema = ArrowSchema::new_with_metadata(
            vec![
                field("nullable", data_type.clone()).with_metadata(metadata),
                ArrowField::new("required", data_type.clone(), false),
            ],
            HashMap::from([("schema-key".to_string(), "v".to_string())]),
        );
        let wire = Schema::from_arrow(&schema).unwrap_or_else(|e| panic!("{data_type} does not flatten: {e}"));
        for f in &wire.fields {
            seen.insert(case(&f.data_type));
        }
        let back = wire.into_arrow().unwrap_or_else(|e| panic!("{data_type} does not rebuild: {e}"));
        assert_eq!(*back, schema, "{data_type} changed on the way");
    }
    assert_eq!(seen.len(), CASES, "a wire case has no sample (or `CASES` is stale); seen: {seen:?}");
}

#[test]
fn every_time_unit_maps_both_ways() {
    for (i, unit) in TimeUnit::ALL.into_iter().enumerate() {
        assert_eq!(TimeUnit::from_arrow(&unit.to_arrow()), unit);
        assert_eq!(TimeUnit::_lift(i as u8), unit, "ALL is in WIT order");
        assert_eq!(unit as u8 as usize, i, "the discriminant is the WIT index");
    }
}

#[test]
fn a_schema_flattens_in_pre_order_with_child_counts() {
    let schema = ArrowSchema::new(vec![
        field(
            "s",
            A::Struct(Fields::from(vec![field("x", A::Int32), field("l", A::List(Arc::new(field("item", A::Utf8))))])),
        ),
        field("t", A::Timestamp(ArrowUnit::Microsecond, Some("UTC".into()))),
    ]);
    let wire = Schema::from_arrow(&schema).unwrap();
    let shape: Vec<_> = wire.fields.iter().map(|f| (f.name.as_str(), case(&f.data_type), f.children)).collect();
    assert_eq!(
        shape,
        [("s", "record", 2), ("x", "int32", 0), ("l", "list", 1), ("item", "utf8", 0), ("t", "timestamp", 0)]
    );
    assert_eq!(
        wire.fields[4].data_type,
        DataType::Timestamp(TimestampType { unit: TimeUnit::Microsecond, timezone: Some("UTC".into()) })
    );
}

#[test]
fn types_that_cannot_cross_are_refused_naming_the_field() {
    let unsupported = [
        A::Dictionary(Box::new(A::Int32), Box::new(A::Utf8)),
        A::Interval(arrow_schema::IntervalUnit::MonthDayNano),
        A::ListView(Arc::new(field("item", A::Int32))),
        A::LargeListView(Arc::new(field("item", A::Int32))),
        A::RunEndEncoded(Arc::new(ArrowField::new("run_ends", A::Int32, false)), Arc::new(field("values", A::Utf8))),
        A::Union(arrow_schema::UnionFields::empty(), arrow_schema::UnionMode::Dense),
        A::Decimal32(9, 2),
        A::Decimal64(18, 2),
    ];
    for data_type in unsupported {
        assert_eq!(DataType::from_arrow(&data_type), None, "{data_type}");
        // At the top level and deep inside a nested field: the error names the field itself.
        let top = ArrowSchema::new(vec![field("ok", A::Int8), field("bad", data_type.clone())]);
        let nested = ArrowSchema::new(vec![field(
            "outer",
            A::List(Arc::new(field("item", A::Struct(Fields::from(vec![field("inner", data_type.clone())]))))),
        )]);
        for (schema, name) in [(top, "bad"), (nested, "inner")] {
            let err = Schema::from_arrow(&schema).expect_err("refused");
            assert_eq!(
                err,
                BatchError::UnsupportedType { field: name.into(), data_type: data_type.to_string() },
                "{data_type}"
            );
            assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
        }
    }
}

#[test]
fn wire_schemas_arrow_cannot_hold_are_refused_naming_the_field() {
    let one = |data_type: DataType| Schema {
        fields: vec![Field { name: "f".into(), data_type, nullable: true, children: 0, metadata: vec![] }],
        metadata: vec![],
    };
    let bad = [
        DataType::Time32(TimeUnit::Nanosecond),
        DataType::Time64(TimeUnit::Second),
        DataType::FixedSizeBinary(-1),
        DataType::Decimal128(DecimalType { precision: 0, scale: 0 }),
        DataType::Decimal256(DecimalType { precision: 77, scale: 0 }),
        DataType::Timestamp(TimestampType { unit: TimeUnit::Second, timezone: Some("+99:99".into()) }),
        // A list without its item field.
        DataType::List,
    ];
    for data_type in bad {
        let err = one(data_type.clone()).into_arrow().expect_err("refused");
        assert!(err.to_string().contains("`f`"), "{data_type:?}: {err}");
    }
}
