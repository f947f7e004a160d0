//! Every parse-time error message, and how errors render.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use flumen_expr::{Expr, ExprErrorKind};

use super::*;

const COLUMNS: &str = "columns are: price, qty, ratio, name, url, flag, Mixed Case, a, b, a32, b32, ts, dec, big, u";

#[test]
fn syntax_errors() {
    let e = parse_err("price >");
    assert_eq!(e.kind(), ExprErrorKind::Syntax);
    assert!(e.message().starts_with("syntax error: Expected: an expression"), "{e}");
    assert!(e.to_string().ends_with(" in `price >`"), "{e}");
    let e = parse_err("price > 1 garbage");
    assert_eq!(e.to_string(), "syntax error: unexpected `garbage` after the expression in `price > 1 garbage`");
    assert_eq!(parse_err("").kind(), ExprErrorKind::Syntax);
    assert_eq!(parse_err("price > 1; drop").kind(), ExprErrorKind::Syntax);
    assert_eq!(parse_err("'unterminated").kind(), ExprErrorKind::Syntax);
    let deep = format!("{}price{}", "(".repeat(300), ")".repeat(300));
    let e = parse_err(&deep);
    assert_eq!(e.kind(), ExprErrorKind::Syntax);
    assert!(e.message().contains("nests too deeply"), "{e}");
}

#[test]
fn deep_operator_chains_are_rejected() {
    // The depth limit is sized for optimised guests; unoptimised test builds
    // need a bigger stack to reach it.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let long = vec!["price"; 300].join(" + ");
            let e = parse_err(&long);
            assert_eq!(e.kind(), ExprErrorKind::Unsupported);
            assert_eq!(e.message(), "expression nests more than 128 levels deep");
            let fine = vec!["price"; 120].join(" + ");
            assert_eq!(parse(&fine).evaluate(&batch()).unwrap().len(), 5);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn long_and_or_chains_do_not_nest() {
    let ors = (0..2000).map(|i| format!("price = {i}")).collect::<Vec<_>>().join(" OR ");
    assert_eq!(bools(&ors), vec![Some(true), Some(true), None, Some(true), Some(false)]);
    let ands = vec!["flag"; 2000].join(" AND ");
    assert_eq!(bools(&ands), bools("flag"));
    let mixed = "flag AND price > 0 OR qty = 3 AND NOT flag";
    assert_eq!(bools(mixed), vec![Some(true), Some(false), None, Some(false), Some(false)]);
}

#[test]
fn unknown_columns_list_the_columns() {
    let e = parse_err("prce > 3");
    assert_eq!(e.kind(), ExprErrorKind::UnknownColumn);
    assert_eq!(e.message(), "unknown column `prce`");
    assert_eq!(e.sql(), Some("prce > 3"));
    assert_eq!(e.hint(), Some(COLUMNS));
    assert_eq!(e.to_string(), format!("unknown column `prce` in `prce > 3`; {COLUMNS}"));
    assert_eq!(e.display_in("predicate"), format!("unknown column `prce` in predicate `prce > 3`; {COLUMNS}"));
    // Quoted names match exactly.
    assert_eq!(parse_err("\"PRICE\" > 3").message(), "unknown column `PRICE`");
    assert_eq!(parse_err("\"mixed case\"").message(), "unknown column `mixed case`");
    // Unknown columns inside function calls and CASE are found too.
    assert_eq!(parse_err("lower(nme)").message(), "unknown column `nme`");
    assert_eq!(parse_err("CASE WHEN x THEN 1 END").message(), "unknown column `x`");
}

#[test]
fn ambiguous_and_missing_columns() {
    let schema =
        Schema::new(vec![Field::new("Foo", DataType::Int64, false), Field::new("FOO", DataType::Int64, false)]);
    let e = Expr::parse("foo + 1", &schema).unwrap_err();
    assert_eq!(
        e.to_string(),
        "column `foo` is ambiguous: it matches `Foo`, `FOO` in `foo + 1`; quote the name to pick one"
    );
    assert!(Expr::parse("\"FOO\" + 1", &schema).is_ok());
    let e = Expr::parse("x", &Schema::empty()).unwrap_err();
    assert_eq!(e.to_string(), "unknown column `x` in `x`; the input has no columns");
    let dotted = Schema::new(vec![Field::new("a.b", DataType::Int64, false)]);
    assert!(Expr::parse("\"a.b\" + 1", &dotted).is_ok());
    assert!(Expr::parse("a.b + 1", &dotted).is_ok(), "a dotted name matching a column resolves to it");
    let e = Expr::parse("t.price", &schema_ref()).unwrap_err();
    assert_eq!(e.kind(), ExprErrorKind::Unsupported);
    assert_eq!(
        e.message(),
        "qualified name `t.price` is not supported; quote a column whose name contains a dot, as in \"t.price\""
    );
}

fn schema_ref() -> Arc<Schema> {
    schema()
}

#[test]
fn unknown_functions_list_the_functions() {
    let e = parse_err("foo(price)");
    assert_eq!(e.kind(), ExprErrorKind::UnknownFunction);
    assert_eq!(
        e.to_string(),
        "unknown function `foo` in `foo(price)`; functions are: char_length, character_length, coalesce, gcd, length, lower, \
         octet_length, regexp_extract, split_part, substr, substring, upper, url_host, url_path"
    );
    assert_eq!(parse_err("pg_catalog.lower(name)").message(), "unknown function `pg_catalog.lower`");
    assert_eq!(parse_err("sum(price) OVER ()").kind(), ExprErrorKind::Unsupported);
    assert_eq!(parse_err("sum(price) OVER ()").message(), "window function `sum(price) OVER ()` is not supported");
    assert_eq!(
        parse_err("lower(DISTINCT name)").message(),
        "`lower(DISTINCT name)`: DISTINCT and clauses in arguments are not supported"
    );
    assert_eq!(
        parse_err("lower(x => name)").message(),
        "lower: argument `x => name` is not supported; pass plain expressions"
    );
}

#[test]
fn type_mismatches() {
    let cases = [
        ("price = name", "cannot compare `price` (int64) with `name` (utf8)"),
        ("price < 'abc'", "cannot compare `price` (int64) with `'abc'` (utf8)"),
        ("flag = 1", "cannot compare `flag` (boolean) with `1` (int64)"),
        ("name = 1", "cannot compare `name` (utf8) with `1` (int64)"),
        ("price + name", "cannot apply `+` to `price` (int64) and `name` (utf8)"),
        ("flag * 2", "cannot apply `*` to `flag` (boolean) and `2` (int64)"),
        ("ts + 1", "cannot apply `+` to `ts` (timestamp(ms)) and `1` (int64)"),
        ("NOT price", "NOT needs a boolean, got `price` (int64)"),
        ("price AND flag", "AND needs a boolean, got `price` (int64)"),
        ("flag OR name", "OR needs a boolean, got `name` (utf8)"),
        ("-name", "unary `-` needs a number, got `name` (utf8)"),
        ("price LIKE 'a%'", "LIKE needs strings, got int64 and utf8"),
        ("name LIKE 1", "LIKE needs strings, got utf8 and int64"),
        ("price IN ('a', 'b')", "IN list: cannot compare int64 with utf8"),
        ("price BETWEEN 'a' AND 2", "BETWEEN: cannot compare int64 with utf8"),
        ("CASE WHEN flag THEN 1 ELSE 'x' END", "CASE branches have incompatible types int64 and utf8"),
        ("CASE WHEN price THEN 1 END", "CASE WHEN needs a boolean, got `price` (int64)"),
        ("CASE price WHEN 'x' THEN 1 END", "cannot compare `price` (int64) with `'x'` (utf8)"),
        ("flag IS TRUE AND price IS TRUE", "IS TRUE / IS FALSE needs a boolean, got `price` (int64)"),
        ("CAST(flag AS DATE)", "cannot cast `flag` (boolean) to date32"),
        ("99999999999999999999999", "integer literal 99999999999999999999999 is out of range"),
        (
            "DATE '2024-13-01'",
            "invalid DATE literal '2024-13-01': cast failed: Cannot cast string '2024-13-01' to value of Date32 type",
        ),
        (
            "CAST(price AS DECIMAL(80, 2))",
            "type `DECIMAL(80,2)`: precision must be 1 to 76 and scale at most the precision",
        ),
        ("CAST(ts AS TIMESTAMP(4))", "type `TIMESTAMP(4)`: precision must be 0, 3, 6 or 9"),
        ("lower(price)", "lower needs a string, got `price` (int64)"),
    ];
    for (sql, want) in cases {
        let e = parse_err(sql);
        assert_eq!(e.kind(), ExprErrorKind::Type, "{sql}: {e}");
        assert_eq!(e.message(), want, "{sql}");
        assert_eq!(e.to_string(), format!("{want} in `{sql}`"));
    }
}

#[test]
fn unsupported_constructs() {
    let cases = [
        ("price IN (SELECT 1)", "subqueries are not supported"),
        ("EXISTS (SELECT 1)", "subqueries are not supported"),
        ("price & 1", "operator `&` is not supported"),
        ("name LIKE 'a' ESCAPE '!'", "ESCAPE '!' is not supported; LIKE escapes with a backslash"),
        (
            "CAST(price AS VARCHAR(10))",
            "type `VARCHAR(10)`: length limits are not supported; use VARCHAR, TEXT or STRING",
        ),
        ("EXTRACT(YEAR FROM ts)", "`EXTRACT(YEAR FROM ts)` is not supported"),
        ("price = ?", "placeholder `?` is not supported"),
        ("TIME WITH TIME ZONE '10:00'", "TIME WITH TIME ZONE is not supported"),
    ];
    for (sql, want) in cases {
        let e = parse_err(sql);
        assert_eq!(e.kind(), ExprErrorKind::Unsupported, "{sql}: {e}");
        assert_eq!(e.message(), want, "{sql}");
    }
    let e = parse_err("CAST(price AS INTERVAL)");
    assert!(e.message().starts_with("type `INTERVAL` is not supported; types are: BOOLEAN"), "{e}");
}

#[test]
fn runtime_errors_name_the_expression() {
    let e = eval_err("price * big");
    assert_eq!(e.kind(), ExprErrorKind::Overflow);
    assert_eq!(e.sql(), Some("price * big"));
    assert!(e.display_in("column `x`").contains(" in column `x` `price * big`"), "{e}");
    let expr = parse("price * 2");
    assert_eq!(expr.sql(), "price * 2");
    assert_eq!(expr.to_string(), "price * 2");
}
