//! The SQL function table: argument checking and typing at parse time, dispatch
//! to the kernels at evaluation.

use arrow_arith::boolean::is_not_null;
use arrow_array::Array;
use arrow_cast::cast;
use arrow_schema::DataType;
use arrow_select::zip::zip;

use crate::error::ExprError;
use crate::eval::{Value, is_null_scalar, wrap};
use crate::kernels::{self, RegexExtract, string_output_type};
use crate::tree::{Node, Typed, cast_to, unify};
use crate::types::{is_integer, is_string, type_name};

/// A resolved function call; constant arguments are kept here, not evaluated.
#[derive(Debug, Clone)]
pub(crate) enum Function {
    Gcd,
    Lower,
    Upper,
    CharLength,
    OctetLength,
    Substr { start: i64, len: Option<i64> },
    SplitPart { delimiter: String, n: i64 },
    RegexpExtract(RegexExtract),
    UrlHost,
    UrlPath,
    Coalesce,
}

/// Every supported function with its signature, for messages.
const FUNCTIONS: &[(&str, &str)] = &[
    ("char_length", "char_length(s)"),
    ("character_length", "character_length(s)"),
    ("coalesce", "coalesce(a, b, ...)"),
    ("gcd", "gcd(a, b)"),
    ("length", "length(s)"),
    ("lower", "lower(s)"),
    ("octet_length", "octet_length(s)"),
    ("regexp_extract", "regexp_extract(s, pattern, group)"),
    ("split_part", "split_part(s, delimiter, n)"),
    ("substr", "substr(s, start[, len])"),
    ("substring", "substring(s, start[, len])"),
    ("upper", "upper(s)"),
    ("url_host", "url_host(s)"),
    ("url_path", "url_path(s)"),
];

pub(crate) fn exists(name: &str) -> bool {
    FUNCTIONS.iter().any(|(n, _)| *n == name)
}

/// "functions are: ..." for unknown-function errors.
pub(crate) fn hint() -> String {
    let names: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
    format!("functions are: {}", names.join(", "))
}

fn signature(name: &str) -> &str {
    FUNCTIONS.iter().find(|(n, _)| *n == name).map_or(name, |(_, s)| s)
}

fn arity(name: &str, args: &[Typed], min: usize, max: usize) -> Result<(), ExprError> {
    if (min..=max).contains(&args.len()) {
        return Ok(());
    }
    let wanted = match (min, max) {
        (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
        (a, usize::MAX) => format!("at least {a} argument{}", if a == 1 { "" } else { "s" }),
        (a, b) => format!("{a} or {b} arguments"),
    };
    Err(ExprError::type_error(format!("{} takes {wanted}, got {}", signature(name), args.len())))
}

/// A string argument (a NULL literal counts as a null string).
fn string_arg(name: &str, t: Typed, sql: &str) -> Result<Typed, ExprError> {
    match &t.data_type {
        DataType::Null => cast_to(t, &DataType::Utf8),
        d if is_string(d) => Ok(t),
        d => Err(ExprError::type_error(format!("{name} needs a string, got `{sql}` ({})", type_name(d)))),
    }
}

/// An argument that must be a non-null integer constant.
fn const_int(name: &str, what: &str, t: &Typed, sql: &str) -> Result<i64, ExprError> {
    let bad = || ExprError::type_error(format!("{name}: {what} must be an integer constant, got `{sql}`"));
    let value = t.as_literal().filter(|v| is_integer(v.data_type()) && !is_null_scalar(v)).ok_or_else(bad)?;
    let value = cast(value, &DataType::Int64).map_err(|_| bad())?;
    value
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .filter(|a| a.is_valid(0))
        .map(|a| a.value(0))
        .ok_or_else(bad)
}

/// An argument that must be a non-null string constant.
fn const_str(name: &str, what: &str, t: &Typed, sql: &str) -> Result<String, ExprError> {
    let bad = || ExprError::type_error(format!("{name}: {what} must be a string constant, got `{sql}`"));
    let value = t.as_literal().filter(|v| is_string(v.data_type()) && !is_null_scalar(v)).ok_or_else(bad)?;
    let value = cast(value, &DataType::Utf8).map_err(|_| bad())?;
    value
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .filter(|a| a.is_valid(0))
        .map(|a| a.value(0).to_owned())
        .ok_or_else(bad)
}

/// Checks and types a call of `name` (lower case) with planned `args`; `sql`
/// holds each argument's text for messages.
pub(crate) fn plan_call(name: &str, mut args: Vec<Typed>, sql: &[String]) -> Result<Typed, ExprError> {
    let text = |i: usize| sql.get(i).map_or("", String::as_str);
    let call = |function: Function, args: Vec<Typed>, data_type: DataType, nullable: bool| {
        Ok(Typed::new(Node::Call { function, args }, data_type, nullable))
    };
    match name {
        "gcd" => {
            arity(name, &args, 2, 2)?;
            for (i, a) in args.iter().enumerate() {
                if !is_integer(&a.data_type) && a.data_type != DataType::Null {
                    return Err(ExprError::type_error(format!(
                        "gcd needs integers, got `{}` ({})",
                        text(i),
                        type_name(&a.data_type)
                    )));
                }
            }
            let (args, t) = unify(args, &|a, b| {
                ExprError::type_error(format!("gcd: no common integer type for {} and {}", type_name(a), type_name(b)))
            })?;
            let t = match t {
                DataType::Int8 | DataType::Int16 | DataType::Int32 => DataType::Int32,
                DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => DataType::UInt32,
                DataType::UInt64 => DataType::UInt64,
                _ => DataType::Int64,
            };
            let args = args.into_iter().map(|a| cast_to(a, &t)).collect::<Result<Vec<_>, _>>()?;
            let nullable = args.iter().any(|a| a.nullable);
            call(Function::Gcd, args, t, nullable)
        }
        "lower" | "upper" | "url_host" | "url_path" => {
            arity(name, &args, 1, 1)?;
            let s = string_arg(name, args.remove(0), text(0))?;
            let out = string_output_type(&s.data_type);
            let (function, nullable) = match name {
                "lower" => (Function::Lower, s.nullable),
                "upper" => (Function::Upper, s.nullable),
                "url_host" => (Function::UrlHost, true),
                _ => (Function::UrlPath, true),
            };
            call(function, vec![s], out, nullable)
        }
        "length" | "char_length" | "character_length" | "octet_length" => {
            arity(name, &args, 1, 1)?;
            let s = string_arg(name, args.remove(0), text(0))?;
            let out = if s.data_type == DataType::LargeUtf8 { DataType::Int64 } else { DataType::Int32 };
            let function = if name == "octet_length" { Function::OctetLength } else { Function::CharLength };
            let nullable = s.nullable;
            call(function, vec![s], out, nullable)
        }
        "substr" | "substring" => {
            arity(name, &args, 2, 3)?;
            let start = const_int(name, "start", &args[1], text(1))?;
            let len = match args.get(2) {
                Some(l) => Some(const_int(name, "length", l, text(2))?),
                None => None,
            };
            if let Some(l) = len.filter(|&l| l < 0) {
                return Err(ExprError::type_error(format!("{name}: negative substring length {l} is not allowed")));
            }
            let s = string_arg(name, args.remove(0), text(0))?;
            let (out, nullable) = (string_output_type(&s.data_type), s.nullable);
            call(Function::Substr { start, len }, vec![s], out, nullable)
        }
        "split_part" => {
            arity(name, &args, 3, 3)?;
            let delimiter = const_str(name, "delimiter", &args[1], text(1))?;
            let n = const_int(name, "field number", &args[2], text(2))?;
            if n == 0 {
                return Err(ExprError::type_error("split_part: field position must not be zero"));
            }
            let s = string_arg(name, args.remove(0), text(0))?;
            let (out, nullable) = (string_output_type(&s.data_type), s.nullable);
            call(Function::SplitPart { delimiter, n }, vec![s], out, nullable)
        }
        "regexp_extract" => {
            arity(name, &args, 3, 3)?;
            let pattern = const_str(name, "pattern", &args[1], text(1))?;
            let group = const_int(name, "group", &args[2], text(2))?;
            let extract = RegexExtract::new(&pattern, group)?;
            let s = string_arg(name, args.remove(0), text(0))?;
            let out = string_output_type(&s.data_type);
            call(Function::RegexpExtract(extract), vec![s], out, true)
        }
        "coalesce" => {
            arity(name, &args, 1, usize::MAX)?;
            let (args, t) = unify(args, &|a, b| {
                ExprError::type_error(format!(
                    "coalesce: arguments have incompatible types {} and {}",
                    type_name(a),
                    type_name(b)
                ))
            })?;
            let nullable = args.iter().all(|a| a.nullable);
            call(Function::Coalesce, args, t, nullable)
        }
        other => {
            Err(ExprError::new(crate::error::ExprErrorKind::UnknownFunction, format!("unknown function `{other}`"))
                .with_hint(hint()))
        }
    }
}

/// Evaluates a call over its evaluated arguments.
pub(crate) fn invoke(function: &Function, args: Vec<Value>) -> Result<Value, ExprError> {
    let mut args = args.into_iter();
    let mut next = || args.next().ok_or_else(|| ExprError::evaluation("function argument missing"));
    match function {
        Function::Gcd => {
            let (a, b) = (next()?, next()?);
            let scalar = a.is_scalar() && b.is_scalar();
            Ok(wrap(kernels::gcd(&a, &b)?, scalar))
        }
        Function::Lower => next()?.map(kernels::lower),
        Function::Upper => next()?.map(kernels::upper),
        Function::CharLength => next()?.map(kernels::char_length),
        Function::OctetLength => next()?.map(kernels::octet_length),
        Function::Substr { start, len } => next()?.map(|a| kernels::substr(a, *start, *len)),
        Function::SplitPart { delimiter, n } => next()?.map(|a| kernels::split_part(a, delimiter, *n)),
        Function::RegexpExtract(extract) => next()?.map(|a| extract.apply(a)),
        Function::UrlHost => next()?.map(kernels::url_host),
        Function::UrlPath => next()?.map(kernels::url_path),
        Function::Coalesce => {
            let values: Vec<Value> = args.collect();
            let mut values = values.into_iter().rev();
            let mut result = values.next().ok_or_else(|| ExprError::evaluation("coalesce needs an argument"))?;
            for v in values {
                result = match &v {
                    Value::Scalar(s) if is_null_scalar(s) => result,
                    Value::Scalar(_) => v,
                    Value::Array(a) => {
                        let present = is_not_null(a)?;
                        Value::Array(zip(&present, &v, &result)?)
                    }
                };
            }
            Ok(result)
        }
    }
}
