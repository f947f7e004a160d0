//! Columns, literals, arithmetic, comparisons, logic, LIKE, BETWEEN, IN, CAST, CASE.

use std::sync::Arc;

use arrow_array::Array;
use arrow_schema::{DataType, TimeUnit};
use flumen_expr::{Expr, ExprErrorKind};

use super::*;

#[test]
fn column_references() {
    assert_eq!(ints("price"), vec![Some(100), Some(250), None, Some(0), Some(-7)]);
    assert_eq!(ints("\"Mixed Case\""), vec![Some(1), Some(2), Some(3), Some(4), Some(5)]);
    assert_eq!(ints("PRICE"), ints("price"), "unquoted names fall back to a case-insensitive match");
    assert!(parse("price").nullable());
    assert!(!parse("\"Mixed Case\"").nullable());
    // A bare column is returned without copying.
    let expr = parse("price");
    assert_eq!(expr.column_index(), Some(0));
    let b = batch();
    assert!(Arc::ptr_eq(&expr.evaluate(&b).unwrap(), b.column(0)));
    assert_eq!(parse("price + 1").column_index(), None);
}

#[test]
fn literals_broadcast() {
    assert_eq!(ints("42"), vec![Some(42); 5]);
    assert_eq!(parse("42").data_type(), &DataType::Int64);
    assert!(!parse("42").nullable());
    assert_eq!(floats("1.5"), vec![Some(1.5); 5]);
    assert_eq!(floats("1e3"), vec![Some(1000.0); 5]);
    assert_eq!(strs("'it''s'"), vec![s("it's"); 5]);
    assert_eq!(bools("TRUE"), vec![Some(true); 5]);
    assert_eq!(bools("false"), vec![Some(false); 5]);
    assert_eq!(parse("NULL").data_type(), &DataType::Null);
    assert_eq!(eval("NULL").logical_null_count(), 5);
    assert_eq!(ints("-9223372036854775808"), vec![Some(i64::MIN); 5]);
    assert_eq!(parse("18446744073709551615").data_type(), &DataType::UInt64);
    assert_eq!(parse("DATE '2024-01-31'").data_type(), &DataType::Date32);
    assert_eq!(ints("CAST(DATE '1970-01-03' AS INT)"), vec![Some(2); 5]);
    assert_eq!(parse("TIMESTAMP '2024-01-01 10:00:00'").data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
}

#[test]
fn arithmetic_and_coercion() {
    assert_eq!(ints("price + 1"), vec![Some(101), Some(251), None, Some(1), Some(-6)]);
    assert_eq!(ints("price - qty"), vec![Some(99), Some(248), None, None, Some(-7)]);
    assert_eq!(parse("price - qty").data_type(), &DataType::Int64, "int64 - int32 widens to int64");
    assert_eq!(parse("qty + 1").data_type(), &DataType::Int32, "an integer literal adopts the column's type");
    assert_eq!(parse("qty + 3000000000").data_type(), &DataType::Int64, "unless it does not fit");
    assert_eq!(ints("price * 2"), vec![Some(200), Some(500), None, Some(0), Some(-14)]);
    assert_eq!(ints("price / 3"), vec![Some(33), Some(83), None, Some(0), Some(-2)], "integer division truncates");
    assert_eq!(ints("price % 3"), vec![Some(1), Some(1), None, Some(0), Some(-1)]);
    assert_eq!(ints("-price"), vec![Some(-100), Some(-250), None, Some(0), Some(7)]);
    assert_eq!(ints("+price"), ints("price"));
    assert_eq!(ints("(price + 1) * 2"), vec![Some(202), Some(502), None, Some(2), Some(-12)]);
    assert_eq!(ints("price + 1 * 2"), vec![Some(102), Some(252), None, Some(2), Some(-5)], "precedence");
    assert_eq!(ints("-u"), vec![Some(-1), Some(-2), Some(-3), Some(-4), Some(-(u32::MAX as i64))]);
}

#[test]
fn float_literals_make_float_results() {
    // Nexmark q1: int64 * float literal is float64.
    let expr = parse("price * 0.908");
    assert_eq!(expr.data_type(), &DataType::Float64);
    let got = floats("price * 0.908");
    let want = [Some(90.8), Some(227.0), None, Some(0.0), Some(-6.356)];
    for (g, w) in got.iter().zip(want) {
        match (g, w) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{g} vs {w}"),
            (g, w) => assert_eq!(*g, w),
        }
    }
    assert_eq!(parse("price * 2.0").data_type(), &DataType::Float64, "2.0 is a float even if integral");
    assert_eq!(parse("ratio + qty").data_type(), &DataType::Float64);
    assert_eq!(floats("ratio * 2"), vec![Some(1.0), Some(3.0), None, Some(4.0), Some(-0.0)]);
    assert_eq!(floats("price / 8.0"), vec![Some(12.5), Some(31.25), None, Some(0.0), Some(-0.875)]);
}

#[test]
fn decimal_arithmetic_is_exact() {
    assert_eq!(parse("dec + 1").data_type(), &DataType::Decimal128(11, 2), "decimal(10,2) + decimal(1,0)");
    assert_eq!(strs("dec + 1"), vec![s("11.50"), s("3.99"), s("1.00"), s("0.99"), s("1001.00")]);
    assert_eq!(strs("dec * 2"), vec![s("21.00"), s("5.98"), s("0.00"), s("-0.02"), s("2000.00")]);
    assert_eq!(parse("dec * 0.5").data_type(), &DataType::Float64, "decimal with float goes to float64");
    assert_eq!(bools("dec > 2.99"), vec![Some(true), Some(false), Some(false), Some(false), Some(true)]);
}

#[test]
fn division_by_zero_is_null() {
    // Array divisor with zeros: those rows become null, the others divide.
    assert_eq!(ints("price / qty"), vec![Some(100), Some(125), None, None, None]);
    assert_eq!(ints("price % qty"), vec![Some(0), Some(0), None, None, None]);
    // Constant zero divisor: every row is null.
    assert_eq!(ints("price / 0"), vec![None; 5]);
    assert_eq!(ints("price % 0"), vec![None; 5]);
    assert!(parse("price / 0").nullable());
    // Floats and decimals too (including -0.0), not IEEE infinities.
    assert_eq!(floats("1.0 / ratio"), vec![Some(2.0), Some(1.0 / 1.5), None, Some(0.5), None]);
    assert_eq!(ints("CAST(dec / (dec - dec) AS BIGINT)"), vec![None; 5]);
    // A non-zero constant divisor keeps the column's nullability.
    assert!(!parse("\"Mixed Case\" / 2").nullable());
    assert!(parse("\"Mixed Case\" / a32").nullable());
    // Folded constants follow the same rule.
    assert_eq!(ints("1 / 0"), vec![None; 5]);
}

#[test]
fn integer_overflow_is_an_error() {
    for sql in ["big + 1", "big - -1", "big * 2", "-big", "big * big"] {
        let e = eval_err(sql);
        assert_eq!(e.kind(), ExprErrorKind::Overflow, "{sql}: {e}");
        assert!(e.to_string().starts_with("integer overflow"), "{sql}: {e}");
        assert!(e.to_string().contains(&format!("in `{sql}`")), "{sql}: {e}");
    }
    // Int32 arithmetic stays int32 and overflows as int32.
    assert_eq!(eval_err("a32 - 1").kind(), ExprErrorKind::Overflow);
    assert_eq!(eval_err("a32 * 65536").kind(), ExprErrorKind::Overflow);
    // Constant expressions overflow while parsing.
    let e = parse_err("9223372036854775807 + 1");
    assert_eq!(e.kind(), ExprErrorKind::Overflow);
    assert!(e.to_string().contains("in `9223372036854775807 + 1`"), "{e}");
    // Rows that do not overflow are fine.
    assert_eq!(ints("big - big"), vec![Some(0); 5]);
}

#[test]
fn comparisons() {
    assert_eq!(bools("price > 100"), vec![Some(false), Some(true), None, Some(false), Some(false)]);
    assert_eq!(bools("price >= 100"), vec![Some(true), Some(true), None, Some(false), Some(false)]);
    assert_eq!(bools("price < 0"), vec![Some(false), Some(false), None, Some(false), Some(true)]);
    assert_eq!(bools("price <= 0"), vec![Some(false), Some(false), None, Some(true), Some(true)]);
    assert_eq!(bools("price = 250"), vec![Some(false), Some(true), None, Some(false), Some(false)]);
    assert_eq!(bools("price != 250"), bools("price <> 250"));
    assert_eq!(bools("price <> 250"), vec![Some(true), Some(false), None, Some(true), Some(true)]);
    assert_eq!(
        bools("price > 99.5"),
        vec![Some(true), Some(true), None, Some(false), Some(false)],
        "int vs float compares as float"
    );
    assert_eq!(bools("qty = price"), vec![Some(false), Some(false), None, None, Some(false)], "int32 vs int64");
    assert_eq!(bools("name = 'Apple'"), vec![Some(true), Some(false), None, Some(false), Some(false)]);
    assert_eq!(bools("name < 'b'"), vec![Some(true), Some(false), None, Some(false), Some(true)]);
    assert_eq!(bools("price = NULL"), vec![None; 5], "comparing with NULL is unknown");
    assert_eq!(bools("price IS DISTINCT FROM NULL"), vec![Some(true), Some(true), Some(false), Some(true), Some(true)]);
    assert_eq!(
        bools("price IS NOT DISTINCT FROM 250"),
        vec![Some(false), Some(true), Some(false), Some(false), Some(false)]
    );
    assert!(!parse("price IS DISTINCT FROM NULL").nullable());
    // String literals are parsed as the column's type.
    assert_eq!(bools("ts >= '2024-01-02'"), vec![Some(false), Some(true), Some(true), Some(false), Some(true)]);
    assert_eq!(
        bools("ts < TIMESTAMP '2024-01-01 00:00:01'"),
        vec![Some(true), Some(false), Some(false), Some(true), Some(false)]
    );
    assert_eq!(bools("price > '100'"), bools("price > 100"));
    assert_eq!(bools("flag = true"), vec![Some(true), Some(false), None, Some(true), Some(false)]);
}

#[test]
fn boolean_logic_is_three_valued() {
    assert_eq!(bools("flag AND price > 0"), vec![Some(true), Some(false), None, Some(false), Some(false)]);
    assert_eq!(bools("flag OR price > 200"), vec![Some(true), Some(true), None, Some(true), Some(false)]);
    assert_eq!(bools("flag AND NULL"), vec![None, Some(false), None, None, Some(false)]);
    assert_eq!(bools("flag OR NULL"), vec![Some(true), None, None, Some(true), None]);
    assert_eq!(bools("NOT flag"), vec![Some(false), Some(true), None, Some(false), Some(true)]);
    assert_eq!(bools("NOT (price > 100)"), vec![Some(true), Some(false), None, Some(true), Some(true)]);
    assert_eq!(bools("TRUE AND flag"), bools("flag"));
    assert_eq!(bools("price IS NULL"), vec![Some(false), Some(false), Some(true), Some(false), Some(false)]);
    assert_eq!(bools("price IS NOT NULL"), vec![Some(true), Some(true), Some(false), Some(true), Some(true)]);
    assert!(!parse("price IS NULL").nullable());
    assert_eq!(bools("flag IS TRUE"), vec![Some(true), Some(false), Some(false), Some(true), Some(false)]);
    assert_eq!(bools("flag IS NOT TRUE"), vec![Some(false), Some(true), Some(true), Some(false), Some(true)]);
    assert_eq!(bools("flag IS FALSE"), vec![Some(false), Some(true), Some(false), Some(false), Some(true)]);
    assert_eq!(bools("flag IS NOT FALSE"), vec![Some(true), Some(false), Some(true), Some(true), Some(false)]);
    assert_eq!(bools("flag IS UNKNOWN"), vec![Some(false), Some(false), Some(true), Some(false), Some(false)]);
    assert_eq!(bools("NULL IS NULL"), vec![Some(true); 5]);
}

#[test]
fn like_and_ilike() {
    assert_eq!(bools("name LIKE 'A%'"), vec![Some(true), Some(false), None, Some(false), Some(false)]);
    assert_eq!(bools("name NOT LIKE 'A%'"), vec![Some(false), Some(true), None, Some(true), Some(true)]);
    assert_eq!(bools("name LIKE '_anana'"), vec![Some(false), Some(true), None, Some(false), Some(false)]);
    assert_eq!(bools("name ILIKE 'a%'"), vec![Some(true), Some(false), None, Some(false), Some(false)]);
    assert_eq!(bools("name NOT ILIKE 'B%'"), vec![Some(true), Some(false), None, Some(true), Some(true)]);
    assert_eq!(bools("url LIKE '%example%'"), vec![Some(true), Some(false), Some(false), None, Some(false)]);
    assert_eq!(bools("'a_b' LIKE 'a\\_b'"), vec![Some(true); 5]);
    assert_eq!(bools("'axb' LIKE 'a\\_b' ESCAPE '\\'"), vec![Some(false); 5]);
    assert_eq!(bools("name LIKE NULL"), vec![None; 5]);
}

#[test]
fn between_and_in() {
    assert_eq!(bools("price BETWEEN 0 AND 100"), vec![Some(true), Some(false), None, Some(true), Some(false)]);
    assert_eq!(bools("price NOT BETWEEN 0 AND 100"), vec![Some(false), Some(true), None, Some(false), Some(true)]);
    // Floats compare in Arrow's total order, where -0.0 < 0.0.
    assert_eq!(bools("ratio BETWEEN qty AND 2"), vec![Some(false), Some(false), None, None, Some(false)]);
    assert_eq!(
        bools("ts BETWEEN '2024-01-01' AND '2024-01-02'"),
        vec![Some(true), Some(true), Some(false), Some(false), Some(false)]
    );
    assert_eq!(bools("price IN (100, 0)"), vec![Some(true), Some(false), None, Some(true), Some(false)]);
    assert_eq!(bools("price NOT IN (100, 0)"), vec![Some(false), Some(true), None, Some(false), Some(true)]);
    // SQL: x IN (..., NULL) is null unless x matches; NOT IN likewise.
    assert_eq!(bools("price IN (100, NULL)"), vec![Some(true), None, None, None, None]);
    assert_eq!(bools("price NOT IN (100, NULL)"), vec![Some(false), None, None, None, None]);
    assert_eq!(bools("name IN ('Apple', 'banana')"), vec![Some(true), Some(true), None, Some(false), Some(false)]);
    assert_eq!(bools("qty IN (price, 3)"), vec![Some(false), Some(false), Some(true), None, Some(false)]);
    assert_eq!(bools("price IN (100.0, 7.5)"), vec![Some(true), Some(false), None, Some(false), Some(false)]);
}

#[test]
fn casts() {
    assert_eq!(strs("CAST(price AS VARCHAR)"), vec![s("100"), s("250"), None, s("0"), s("-7")]);
    assert_eq!(parse("CAST(price AS VARCHAR)").data_type(), &DataType::Utf8);
    assert_eq!(ints("CAST('12' AS INT) + 1"), vec![Some(13); 5]);
    assert_eq!(parse("CAST('12' AS INT)").data_type(), &DataType::Int32);
    assert_eq!(parse("CAST(qty AS BIGINT)").data_type(), &DataType::Int64);
    assert_eq!(parse("CAST(price AS DOUBLE)").data_type(), &DataType::Float64);
    assert_eq!(parse("CAST(price AS REAL)").data_type(), &DataType::Float32);
    assert_eq!(parse("CAST(price AS DECIMAL(12, 3))").data_type(), &DataType::Decimal128(12, 3));
    assert_eq!(parse("CAST(price AS SMALLINT)").data_type(), &DataType::Int16);
    assert_eq!(parse("CAST(name AS TEXT)").data_type(), &DataType::Utf8);
    assert_eq!(parse("CAST(ts AS DATE)").data_type(), &DataType::Date32);
    assert_eq!(parse("CAST(ts AS TIMESTAMP(3))").data_type(), &DataType::Timestamp(TimeUnit::Millisecond, None));
    assert_eq!(parse("price::TEXT").data_type(), &DataType::Utf8);
    assert_eq!(ints("CAST(ratio AS INT)"), vec![Some(0), Some(1), None, Some(2), Some(0)]);
    assert_eq!(bools("CAST(price AS BOOLEAN)"), vec![Some(true), Some(true), None, Some(false), Some(true)]);
    // A failing CAST is an error; TRY_CAST gives null.
    let e = eval_err("CAST(name AS INT)");
    assert_eq!(e.kind(), ExprErrorKind::Evaluation);
    assert!(e.to_string().starts_with("cast failed: "), "{e}");
    assert_eq!(ints("TRY_CAST(name AS INT)"), vec![None; 5]);
    assert!(parse("TRY_CAST(price AS INT)").nullable());
    assert_eq!(eval_err("CAST(big AS INT)").kind(), ExprErrorKind::Evaluation);
}

#[test]
fn case_expressions() {
    let sql = "CASE WHEN price > 200 THEN 'high' WHEN price > 0 THEN 'low' ELSE 'none' END";
    assert_eq!(strs(sql), vec![s("low"), s("high"), s("none"), s("none"), s("none")]);
    assert!(!parse(sql).nullable());
    let simple = "CASE qty WHEN 1 THEN 'one' WHEN 2 THEN 'two' END";
    assert_eq!(strs(simple), vec![s("one"), s("two"), None, None, None]);
    assert!(parse(simple).nullable());
    // Branch types unify: int32 and float64 go to float64.
    assert_eq!(parse("CASE WHEN flag THEN qty ELSE 0.5 END").data_type(), &DataType::Float64);
    assert_eq!(floats("CASE WHEN flag THEN qty ELSE 0.5 END"), vec![Some(1.0), Some(0.5), Some(0.5), None, Some(0.5)]);
    // First matching branch wins.
    assert_eq!(
        ints("CASE WHEN price > 0 THEN 1 WHEN price > 100 THEN 2 END"),
        vec![Some(1), Some(1), None, None, None]
    );
    // Constant conditions.
    assert_eq!(ints("CASE WHEN TRUE THEN price ELSE 0 END"), ints("price"));
    assert_eq!(ints("CASE WHEN NULL THEN 1 ELSE price END"), ints("price"));
}

#[test]
fn string_concatenation() {
    assert_eq!(strs("name || '!'"), vec![s("Apple!"), s("banana!"), None, s("Ünïcødé!"), s("!")]);
    assert_eq!(strs("name || price"), vec![s("Apple100"), s("banana250"), None, s("Ünïcødé0"), s("-7")]);
}

#[test]
fn evaluation_checks_the_batch() {
    let expr = parse("price + 1");
    // Same column count, wrong type for `price`.
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new("price", DataType::Utf8, true)]));
    let other =
        arrow_array::RecordBatch::try_new(schema, vec![Arc::new(arrow_array::StringArray::from(vec!["x"]))]).unwrap();
    let e = expr.evaluate(&other).unwrap_err();
    assert_eq!(
        e.to_string(),
        "column `price` is utf8 in this batch, the expression was parsed for int64 in `price + 1`"
    );
    let e = parse("u").evaluate(&other).unwrap_err();
    assert_eq!(e.to_string(), "the batch has 1 column(s); column `u` is expected at index 14 in `u`");
}

#[test]
fn empty_batches() {
    let empty = batch().slice(0, 0);
    for sql in ["price + 1", "42", "gcd(a, b)", "lower(name)", "price / 0", "CASE WHEN flag THEN 1 END"] {
        let out = parse(sql).evaluate(&empty).unwrap();
        assert_eq!(out.len(), 0, "{sql}");
    }
}

#[test]
fn sliced_batches() {
    let sliced = batch().slice(1, 3);
    let out = parse("price / qty").evaluate(&sliced).unwrap();
    let out = arrow_cast::cast(&out, &DataType::Int64).unwrap();
    let out: Vec<Option<i64>> =
        arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(&out).iter().collect();
    assert_eq!(out, vec![Some(125), None, None]);
    let out = parse("upper(name)").evaluate(&sliced).unwrap();
    let out: Vec<Option<&str>> = arrow_array::cast::AsArray::as_string::<i32>(&out).iter().collect();
    assert_eq!(out, vec![Some("BANANA"), None, Some("ÜNÏCØDÉ")]);
}

#[test]
fn utf8_view_columns() {
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new("v", DataType::Utf8View, true)]));
    let array = arrow_array::StringViewArray::from(vec![Some("http://x.org/p"), None, Some("abc")]);
    let batch = arrow_array::RecordBatch::try_new(schema.clone(), vec![Arc::new(array)]).unwrap();
    let eq = Expr::parse("v = 'abc'", &schema).unwrap().evaluate(&batch).unwrap();
    assert_eq!(
        arrow_array::cast::AsArray::as_boolean(&eq).iter().collect::<Vec<_>>(),
        vec![Some(false), None, Some(true)]
    );
    let host = Expr::parse("url_host(v)", &schema).unwrap();
    assert_eq!(host.data_type(), &DataType::Utf8);
    let out = host.evaluate(&batch).unwrap();
    assert_eq!(
        arrow_array::cast::AsArray::as_string::<i32>(&out).iter().collect::<Vec<_>>(),
        vec![Some("x.org"), None, None]
    );
    let like = Expr::parse("v LIKE 'a%'", &schema).unwrap().evaluate(&batch).unwrap();
    assert_eq!(
        arrow_array::cast::AsArray::as_boolean(&like).iter().collect::<Vec<_>>(),
        vec![Some(false), None, Some(true)]
    );
}
