//! Tests of the public API: parse against a schema, evaluate over a batch.

mod errors;
mod functions;
mod operators;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use flumen_expr::{Expr, ExprError};

/// Five rows covering nulls, zeros, negatives, non-ASCII text and URLs.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("price", DataType::Int64, true),
        Field::new("qty", DataType::Int32, true),
        Field::new("ratio", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("Mixed Case", DataType::Int64, false),
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Int64, true),
        Field::new("a32", DataType::Int32, false),
        Field::new("b32", DataType::Int32, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("dec", DataType::Decimal128(10, 2), false),
        Field::new("big", DataType::Int64, false),
        Field::new("u", DataType::UInt32, false),
    ]))
}

pub fn batch() -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![Some(100), Some(250), None, Some(0), Some(-7)])),
        Arc::new(Int32Array::from(vec![Some(1), Some(2), Some(3), None, Some(0)])),
        Arc::new(Float64Array::from(vec![Some(0.5), Some(1.5), None, Some(2.0), Some(-0.0)])),
        Arc::new(StringArray::from(vec![Some("Apple"), Some("banana"), None, Some("Ünïcødé"), Some("")])),
        Arc::new(StringArray::from(vec![
            Some("https://example.com/a/b?x=1"),
            Some("http://Foo.org:8080"),
            Some("not a url"),
            None,
            Some("https://user@h/p#f"),
        ])),
        Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true), Some(false)])),
        Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
        Arc::new(Int64Array::from(vec![Some(12), Some(0), Some(0), Some(-4), None])),
        Arc::new(Int64Array::from(vec![Some(18), Some(5), Some(0), Some(6), Some(3)])),
        Arc::new(Int32Array::from(vec![12, 7, 0, -4, i32::MIN])),
        Arc::new(Int32Array::from(vec![18, 21, 0, 6, 0])),
        Arc::new(TimestampMillisecondArray::from(vec![
            1_704_067_200_000, // 2024-01-01T00:00:00
            1_704_153_600_000, // 2024-01-02
            1_704_240_000_000, // 2024-01-03
            1_672_531_200_000, // 2023-01-01
            1_735_689_600_000, // 2025-01-01
        ])),
        Arc::new(Decimal128Array::from(vec![1050, 299, 0, -1, 100000]).with_precision_and_scale(10, 2).unwrap()),
        Arc::new(Int64Array::from(vec![i64::MAX, i64::MIN, 1, -1, 0])),
        Arc::new(UInt32Array::from(vec![1, 2, 3, 4, u32::MAX])),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

pub fn parse(sql: &str) -> Expr {
    Expr::parse(sql, &schema()).unwrap_or_else(|e| panic!("`{sql}` failed to parse: {e}"))
}

pub fn eval(sql: &str) -> ArrayRef {
    let expr = parse(sql);
    let out = expr.evaluate(&batch()).unwrap_or_else(|e| panic!("`{sql}` failed: {e}"));
    assert_eq!(out.len(), 5, "`{sql}`: wrong length");
    assert_eq!(out.data_type(), expr.data_type(), "`{sql}`: type differs from the declared one");
    if !expr.nullable() {
        assert_eq!(out.logical_null_count(), 0, "`{sql}` is declared non-nullable but returned nulls");
    }
    out
}

/// The parse error for `sql`.
pub fn parse_err(sql: &str) -> ExprError {
    match Expr::parse(sql, &schema()) {
        Ok(e) => panic!("`{sql}` parsed, as {:?}", e.data_type()),
        Err(e) => e,
    }
}

/// The evaluation error for `sql` (which must parse).
pub fn eval_err(sql: &str) -> ExprError {
    match parse(sql).evaluate(&batch()) {
        Ok(a) => panic!("`{sql}` evaluated to {a:?}"),
        Err(e) => e,
    }
}

pub fn ints(sql: &str) -> Vec<Option<i64>> {
    let a = arrow_cast::cast(&eval(sql), &DataType::Int64).unwrap();
    a.as_primitive::<Int64Type>().iter().collect()
}

pub fn floats(sql: &str) -> Vec<Option<f64>> {
    let a = arrow_cast::cast(&eval(sql), &DataType::Float64).unwrap();
    a.as_primitive::<Float64Type>().iter().collect()
}

pub fn strs(sql: &str) -> Vec<Option<String>> {
    let a = arrow_cast::cast(&eval(sql), &DataType::Utf8).unwrap();
    a.as_string::<i32>().iter().map(|s| s.map(str::to_owned)).collect()
}

pub fn bools(sql: &str) -> Vec<Option<bool>> {
    eval(sql).as_boolean().iter().collect()
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}
