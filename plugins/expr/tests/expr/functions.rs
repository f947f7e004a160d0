//! gcd and the string functions, through SQL and through the public kernels.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, Int64Array, LargeStringArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use flumen_expr::{Expr, ExprErrorKind, kernels};

use super::*;

#[test]
fn gcd_over_int64() {
    assert_eq!(parse("gcd(a, b)").data_type(), &DataType::Int64);
    assert_eq!(
        ints("gcd(a, b)"),
        vec![Some(6), Some(5), Some(0), Some(2), None],
        "gcd(0, 0) = 0, signs dropped, null in null out"
    );
    assert_eq!(ints("gcd(b, a)"), ints("gcd(a, b)"));
    assert_eq!(ints("gcd(big, 2)"), vec![Some(1), Some(2), Some(1), Some(1), Some(2)]);
    assert_eq!(ints("gcd(12, 18)"), vec![Some(6); 5]);
    assert_eq!(ints("gcd(NULL, a)"), vec![None; 5]);
    assert_eq!(ints("gcd(a, NULL)"), vec![None; 5]);
    assert!(parse("gcd(a, b)").nullable());
    assert!(!parse("gcd(a32, 6)").nullable());
}

#[test]
fn gcd_over_other_integer_types() {
    assert_eq!(parse("gcd(a32, b32)").data_type(), &DataType::Int32);
    assert_eq!(parse("gcd(a32, 6)").data_type(), &DataType::Int32, "literal adopts int32");
    assert_eq!(ints("gcd(a32, 6)"), vec![Some(6), Some(1), Some(6), Some(2), Some(2)]);
    assert_eq!(parse("gcd(qty, price)").data_type(), &DataType::Int64, "int32 with int64 is int64");
    assert_eq!(ints("gcd(qty, price)"), vec![Some(1), Some(2), None, None, Some(7)]);
    assert_eq!(parse("gcd(u, 6)").data_type(), &DataType::UInt32);
    assert_eq!(ints("gcd(u, 6)"), vec![Some(1), Some(2), Some(3), Some(2), Some(3)]);
    assert_eq!(parse("gcd(CAST(qty AS SMALLINT), 4)").data_type(), &DataType::Int32);
}

#[test]
fn gcd_overflow_is_an_error() {
    let e = eval_err("gcd(a32, b32)");
    assert_eq!(e.kind(), ExprErrorKind::Overflow);
    assert_eq!(e.to_string(), "integer overflow: gcd(-2147483648, 0) does not fit in int32 in `gcd(a32, b32)`");
    let e = eval_err("gcd(big, 0)");
    assert_eq!(e.message(), "integer overflow: gcd(-9223372036854775808, 0) does not fit in int64");
    // A null row hiding an overflowing value is not an error.
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let values = Int64Array::new(vec![i64::MIN, 4].into(), Some(vec![false, true].into()));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
    let out = Expr::parse("gcd(x, 0)", &schema).unwrap().evaluate(&batch).unwrap();
    assert_eq!(out.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), vec![None, Some(4)]);
}

#[test]
fn gcd_matches_euclid_on_many_rows() {
    fn euclid(a: i64, b: i64) -> i64 {
        let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a as i64
    }
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2_000_001) as i64 - 1_000_000
    };
    let (xs, ys): (Vec<i64>, Vec<i64>) = (0..10_000).map(|_| (next() * 6, next() * 4)).unzip();
    let schema =
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false), Field::new("y", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(xs.clone())), Arc::new(Int64Array::from(ys.clone()))],
    )
    .unwrap();
    let out = Expr::parse("gcd(x, y)", &schema).unwrap().evaluate(&batch).unwrap();
    let out = out.as_primitive::<Int64Type>();
    for i in 0..xs.len() {
        assert_eq!(out.value(i), euclid(xs[i], ys[i]), "gcd({}, {})", xs[i], ys[i]);
    }
}

#[test]
fn gcd_argument_errors() {
    let e = parse_err("gcd(ratio, 2)");
    assert_eq!(e.kind(), ExprErrorKind::Type);
    assert_eq!(e.to_string(), "gcd needs integers, got `ratio` (float64) in `gcd(ratio, 2)`");
    assert_eq!(parse_err("gcd(a)").message(), "gcd(a, b) takes 2 arguments, got 1");
    assert_eq!(parse_err("gcd(a, b, 1)").message(), "gcd(a, b) takes 2 arguments, got 3");
}

#[test]
fn case_mapping() {
    assert_eq!(strs("lower(name)"), vec![s("apple"), s("banana"), None, s("ünïcødé"), s("")]);
    assert_eq!(strs("upper(name)"), vec![s("APPLE"), s("BANANA"), None, s("ÜNÏCØDÉ"), s("")]);
    // ASCII-only data takes the whole-buffer path.
    assert_eq!(
        strs("lower(url)"),
        vec![s("https://example.com/a/b?x=1"), s("http://foo.org:8080"), s("not a url"), None, s("https://user@h/p#f")]
    );
    assert_eq!(strs("UPPER('mIxEd')"), vec![s("MIXED"); 5]);
    assert_eq!(parse("lower(name)").data_type(), &DataType::Utf8);
    assert_eq!(strs("lower(NULL)"), vec![None; 5]);
}

#[test]
fn lengths() {
    assert_eq!(ints("length(name)"), vec![Some(5), Some(6), None, Some(7), Some(0)], "characters, not bytes");
    assert_eq!(ints("char_length(name)"), ints("length(name)"));
    assert_eq!(ints("character_length(name)"), ints("length(name)"));
    assert_eq!(ints("octet_length(name)"), vec![Some(5), Some(6), None, Some(11), Some(0)]);
    assert_eq!(parse("length(name)").data_type(), &DataType::Int32);
    assert_eq!(ints("length(url)"), vec![Some(27), Some(19), Some(9), None, Some(18)]);
}

#[test]
fn substrings() {
    assert_eq!(strs("substr(name, 2, 3)"), vec![s("ppl"), s("ana"), None, s("nïc"), s("")]);
    assert_eq!(
        strs("substr(name, 0, 3)"),
        vec![s("Ap"), s("ba"), None, s("Ün"), s("")],
        "positions before 1 count but yield nothing"
    );
    assert_eq!(strs("substr(name, -1, 3)"), vec![s("A"), s("b"), None, s("Ü"), s("")]);
    assert_eq!(strs("substr(name, 3)"), vec![s("ple"), s("nana"), None, s("ïcødé"), s("")]);
    assert_eq!(strs("substr(name, 10, 2)"), vec![s(""), s(""), None, s(""), s("")]);
    assert_eq!(strs("substr(name, 2, 0)"), vec![s(""), s(""), None, s(""), s("")]);
    assert_eq!(strs("substring(name FROM 2 FOR 2)"), vec![s("pp"), s("an"), None, s("nï"), s("")]);
    assert_eq!(strs("substring(name FOR 2)"), vec![s("Ap"), s("ba"), None, s("Ün"), s("")]);
    assert_eq!(strs("substring(name, 2)"), strs("substr(name, 2)"));
    let e = parse_err("substr(name, 1, -1)");
    assert_eq!(e.to_string(), "substr: negative substring length -1 is not allowed in `substr(name, 1, -1)`");
    assert_eq!(parse_err("substr(name, qty)").message(), "substr: start must be an integer constant, got `qty`");
    assert_eq!(parse_err("substr(name, 1, '2')").message(), "substr: length must be an integer constant, got `'2'`");
    assert_eq!(parse_err("substr(name)").message(), "substr(s, start[, len]) takes 2 or 3 arguments, got 1");
    assert_eq!(parse_err("substr(price, 1)").message(), "substr needs a string, got `price` (int64)");
}

#[test]
fn split_parts() {
    assert_eq!(strs("split_part(url, '/', 3)"), vec![s("example.com"), s("Foo.org:8080"), s(""), None, s("user@h")]);
    assert_eq!(strs("split_part(url, '/', 1)"), vec![s("https:"), s("http:"), s("not a url"), None, s("https:")]);
    assert_eq!(strs("split_part(url, '/', -1)"), vec![s("b?x=1"), s("Foo.org:8080"), s("not a url"), None, s("p#f")]);
    assert_eq!(strs("split_part(url, '/', -5)"), vec![s("https:"), s(""), s(""), None, s("")]);
    assert_eq!(strs("split_part(url, '/', 10)"), vec![s(""), s(""), s(""), None, s("")]);
    assert_eq!(
        strs("split_part(url, '://', 2)"),
        vec![s("example.com/a/b?x=1"), s("Foo.org:8080"), s(""), None, s("user@h/p#f")]
    );
    assert_eq!(strs("split_part(name, '', 1)"), strs("name"));
    assert_eq!(strs("split_part(name, '', -1)"), strs("name"));
    assert_eq!(strs("split_part(name, '', 2)"), vec![s(""), s(""), None, s(""), s("")]);
    assert_eq!(strs("split_part(name, 'ï', 2)"), vec![s(""), s(""), None, s("cødé"), s("")]);
    assert!(!parse("split_part('a/b', '/', 2)").nullable());
    let e = parse_err("split_part(url, '/', 0)");
    assert_eq!(e.to_string(), "split_part: field position must not be zero in `split_part(url, '/', 0)`");
    assert_eq!(
        parse_err("split_part(url, 1, 2)").message(),
        "split_part: delimiter must be a string constant, got `1`"
    );
    assert_eq!(
        parse_err("split_part(url, name, 2)").message(),
        "split_part: delimiter must be a string constant, got `name`"
    );
    assert_eq!(
        parse_err("split_part(url, '/', qty)").message(),
        "split_part: field number must be an integer constant, got `qty`"
    );
}

#[test]
fn regexp_extracts() {
    assert_eq!(
        strs("regexp_extract(url, '^(https?)://([^/:]+)', 2)"),
        vec![s("example.com"), s("Foo.org"), None, None, s("user@h")]
    );
    assert_eq!(
        strs("regexp_extract(url, '^(https?)://([^/:]+)', 1)"),
        vec![s("https"), s("http"), None, None, s("https")]
    );
    assert_eq!(strs("regexp_extract(url, '[a-z]+', 0)"), vec![s("https"), s("http"), s("not"), None, s("https")]);
    // Backslashes reach the regex as written.
    assert_eq!(strs("regexp_extract(url, '(\\d+)', 1)"), vec![s("1"), s("8080"), None, None, None]);
    // A group that does not take part in the match is null.
    assert_eq!(strs("regexp_extract(url, '(x)|(y)', 2)"), vec![None, None, None, None, None]);
    assert_eq!(strs("regexp_extract(name, '(?i)^a(p+)', 1)"), vec![s("pp"), None, None, None, None]);
    assert!(parse("regexp_extract(name, 'b', 0)").nullable());
    assert!(!parse("regexp_extract('abc', 'b', 0)").nullable(), "constants are folded");
    let e = parse_err("regexp_extract(url, '(', 1)");
    assert_eq!(e.kind(), ExprErrorKind::Type);
    assert!(e.message().starts_with("regexp_extract: invalid pattern `(`: "), "{e}");
    assert!(!e.message().contains('\n'), "{e}");
    let e = parse_err("regexp_extract(url, '(a)', 2)");
    assert_eq!(e.message(), "regexp_extract: group 2 is out of range: pattern `(a)` has 1 capture group");
    assert_eq!(
        parse_err("regexp_extract(url, 'a', -1)").message(),
        "regexp_extract: group -1 is out of range: pattern `a` has 0 capture groups"
    );
    assert_eq!(
        parse_err("regexp_extract(url, 'a')").message(),
        "regexp_extract(s, pattern, group) takes 3 arguments, got 2"
    );
    assert_eq!(
        parse_err("regexp_extract(url, name, 1)").message(),
        "regexp_extract: pattern must be a string constant, got `name`"
    );
}

#[test]
fn url_parts() {
    assert_eq!(strs("url_host(url)"), vec![s("example.com"), s("Foo.org"), None, None, s("h")]);
    assert_eq!(strs("url_path(url)"), vec![s("/a/b"), s(""), None, None, s("/p")]);
    assert_eq!(strs("url_host('HTTP://[::1]:80/x')"), vec![s("[::1]"); 5]);
    assert!(parse("url_host(name)").nullable());
    assert_eq!(parse_err("url_host(price)").message(), "url_host needs a string, got `price` (int64)");
    assert_eq!(parse_err("url_path()").message(), "url_path(s) takes 1 argument, got 0");
}

#[test]
fn coalesce_picks_the_first_non_null() {
    assert_eq!(ints("coalesce(price, qty, 0)"), vec![Some(100), Some(250), Some(3), Some(0), Some(-7)]);
    assert!(!parse("coalesce(price, 0)").nullable());
    assert!(parse("coalesce(price, qty)").nullable());
    assert_eq!(strs("coalesce(NULL, name, 'x')"), vec![s("Apple"), s("banana"), s("x"), s("Ünïcødé"), s("")]);
    assert_eq!(floats("coalesce(ratio, 1)"), vec![Some(0.5), Some(1.5), Some(1.0), Some(2.0), Some(-0.0)]);
    assert_eq!(
        parse_err("coalesce(price, name)").message(),
        "coalesce: arguments have incompatible types int64 and utf8"
    );
}

#[test]
fn function_names_are_case_insensitive() {
    assert_eq!(strs("LOWER(name)"), strs("lower(name)"));
    assert_eq!(ints("GCD(a, b)"), ints("gcd(a, b)"));
}

#[test]
fn kernels_are_public() {
    let urls = StringArray::from(vec![Some("https://a.org/x/y"), None, Some("a,b,c")]);
    let host = kernels::url_host(&urls).unwrap();
    assert_eq!(host.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some("a.org"), None, None]);
    let path = kernels::url_path(&urls).unwrap();
    assert_eq!(path.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some("/x/y"), None, None]);
    let part = kernels::split_part(&urls, ",", 2).unwrap();
    assert_eq!(part.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some(""), None, Some("b")]);
    let extract = kernels::RegexExtract::new("([a-z])\\.org", 1).unwrap();
    assert_eq!((extract.pattern(), extract.group()), ("([a-z])\\.org", 1));
    let got = extract.apply(&urls).unwrap();
    assert_eq!(got.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some("a"), None, None]);
    assert_eq!(
        kernels::split_part(&urls, ",", 0).unwrap_err().message(),
        "split_part: field position must not be zero"
    );
    assert_eq!(
        kernels::substr(&urls, 1, Some(-2)).unwrap_err().message(),
        "substr: negative substring length -2 is not allowed"
    );
    let e = kernels::lower(&Int64Array::from(vec![1])).unwrap_err();
    assert_eq!(e.message(), "lower needs a string argument, got int64");
    // Large strings stay large.
    let large = LargeStringArray::from(vec![Some("Ab"), None]);
    let upper = kernels::upper(&large).unwrap();
    assert_eq!(upper.data_type(), &DataType::LargeUtf8);
    assert_eq!(upper.as_string::<i64>().iter().collect::<Vec<_>>(), vec![Some("AB"), None]);
    assert_eq!(kernels::char_length(&large).unwrap().data_type(), &DataType::Int64);
    assert_eq!(kernels::string_output_type(&DataType::Utf8View), DataType::Utf8);
    let g = kernels::gcd(&Int64Array::from(vec![4, 9]), &Int64Array::new_scalar(6)).unwrap();
    assert_eq!(g.as_primitive::<Int64Type>().values().to_vec(), vec![2, 3]);
    let e = kernels::gcd(&Int64Array::from(vec![4]), &arrow_array::Int32Array::from(vec![6])).unwrap_err();
    assert_eq!(e.message(), "gcd needs two integers of the same type, got int64 and int32");
}

#[test]
fn large_utf8_columns() {
    let schema = Arc::new(Schema::new(vec![Field::new("l", DataType::LargeUtf8, true)]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(LargeStringArray::from(vec![Some("http://h.io/p"), None]))])
            .unwrap();
    for (sql, want) in [
        ("url_host(l)", Some("h.io")),
        ("split_part(l, '/', 3)", Some("h.io")),
        ("lower(l)", Some("http://h.io/p")),
        ("substr(l, 8, 4)", Some("h.io")),
    ] {
        let expr = Expr::parse(sql, &schema).unwrap();
        assert_eq!(expr.data_type(), &DataType::LargeUtf8, "{sql}");
        let out = expr.evaluate(&batch).unwrap();
        assert_eq!(out.as_string::<i64>().iter().collect::<Vec<_>>(), vec![want, None], "{sql}");
    }
    assert_eq!(Expr::parse("length(l)", &schema).unwrap().data_type(), &DataType::Int64);
    let eq = Expr::parse("l = 'x'", &schema).unwrap();
    assert_eq!(eq.evaluate(&batch).unwrap().len(), 2);
    assert!(eq.evaluate(&batch).unwrap().is_valid(0));
}
