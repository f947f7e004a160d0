//! Type names, SQL type names to Arrow types, and the coercion rules between operand types.

use arrow_schema::{DataType, TimeUnit};
use sqlparser::ast;

use crate::error::ExprError;

/// A short lower-case name for a type, as messages show it.
pub fn type_name(t: &DataType) -> String {
    use DataType::*;
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    };
    match t {
        Null => "null".into(),
        Boolean => "boolean".into(),
        Int8 => "int8".into(),
        Int16 => "int16".into(),
        Int32 => "int32".into(),
        Int64 => "int64".into(),
        UInt8 => "uint8".into(),
        UInt16 => "uint16".into(),
        UInt32 => "uint32".into(),
        UInt64 => "uint64".into(),
        Float16 => "float16".into(),
        Float32 => "float32".into(),
        Float64 => "float64".into(),
        Utf8 => "utf8".into(),
        LargeUtf8 => "large-utf8".into(),
        Utf8View => "utf8-view".into(),
        Binary => "binary".into(),
        LargeBinary => "large-binary".into(),
        BinaryView => "binary-view".into(),
        Date32 => "date32".into(),
        Date64 => "date64".into(),
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => {
            format!("decimal({p}, {s})")
        }
        Timestamp(u, None) => format!("timestamp({})", unit(u)),
        Timestamp(u, Some(tz)) => format!("timestamp({}, {tz})", unit(u)),
        Time32(u) | Time64(u) => format!("time({})", unit(u)),
        Duration(u) => format!("duration({})", unit(u)),
        other => other.to_string().to_lowercase(),
    }
}

pub(crate) fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

pub(crate) fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

pub(crate) fn is_float(t: &DataType) -> bool {
    t.is_floating()
}

pub(crate) fn is_decimal(t: &DataType) -> bool {
    matches!(t, DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..))
}

pub(crate) fn is_numeric(t: &DataType) -> bool {
    is_integer(t) || is_float(t) || is_decimal(t)
}

/// (signed, bits) of an integer type.
fn int_shape(t: &DataType) -> Option<(bool, u8)> {
    use DataType::*;
    Some(match t {
        Int8 => (true, 8),
        Int16 => (true, 16),
        Int32 => (true, 32),
        Int64 => (true, 64),
        UInt8 => (false, 8),
        UInt16 => (false, 16),
        UInt32 => (false, 32),
        UInt64 => (false, 64),
        _ => return None,
    })
}

fn int_type(signed: bool, bits: u8) -> DataType {
    use DataType::*;
    match (signed, bits) {
        (true, 8) => Int8,
        (true, 16) => Int16,
        (true, 32) => Int32,
        (true, _) => Int64,
        (false, 8) => UInt8,
        (false, 16) => UInt16,
        (false, 32) => UInt32,
        (false, _) => UInt64,
    }
}

/// The narrowest integer type holding every value of both; a signed/unsigned mix
/// goes to the next wider signed type (int64 at most: uint64 values beyond its
/// range fail at evaluation).
fn common_integer(l: &DataType, r: &DataType) -> Option<DataType> {
    let (ls, lb) = int_shape(l)?;
    let (rs, rb) = int_shape(r)?;
    Some(match (ls, rs) {
        (a, b) if a == b => int_type(a, lb.max(rb)),
        _ => {
            let (sb, ub) = if ls { (lb, rb) } else { (rb, lb) };
            if sb > ub { int_type(true, sb) } else { int_type(true, (ub * 2).min(64)) }
        }
    })
}

/// Decimal width class: 0 = decimal32 ... 3 = decimal256, with its (precision, scale).
pub(crate) fn decimal_shape(t: &DataType) -> Option<(u8, u8, i8)> {
    use DataType::*;
    match t {
        Decimal32(p, s) => Some((0, *p, *s)),
        Decimal64(p, s) => Some((1, *p, *s)),
        Decimal128(p, s) => Some((2, *p, *s)),
        Decimal256(p, s) => Some((3, *p, *s)),
        _ => int_shape(t).map(|(signed, bits)| {
            let digits = match (signed, bits) {
                (_, 8) => 3,
                (_, 16) => 5,
                (_, 32) => 10,
                (true, _) => 19,
                (false, _) => 20,
            };
            (0, digits, 0)
        }),
    }
}

pub(crate) fn decimal_type(class: u8, precision: u8, scale: i8) -> DataType {
    let (class, max) = [(0, 9), (1, 18), (2, 38), (3, 76)]
        .into_iter()
        .find(|&(c, max)| c >= class && precision <= max)
        .unwrap_or((3, 76));
    let precision = precision.min(max);
    match class {
        0 => DataType::Decimal32(precision, scale),
        1 => DataType::Decimal64(precision, scale),
        2 => DataType::Decimal128(precision, scale),
        _ => DataType::Decimal256(precision, scale),
    }
}

/// `t` as a decimal of at least width `class` (integers get scale 0).
fn as_decimal(t: &DataType, class: u8) -> Option<DataType> {
    let (c, p, s) = decimal_shape(t)?;
    Some(decimal_type(c.max(class).max(1), p, s))
}

fn float_of(l: &DataType, r: &DataType) -> DataType {
    let small = |t: &DataType| matches!(t, DataType::Float16 | DataType::Float32);
    if small(l) && small(r) { DataType::Float32 } else { DataType::Float64 }
}

/// The types both operands of an arithmetic operator are cast to (Arrow's
/// kernels want equal types, except for decimals of one width, which may differ
/// in precision and scale). `None` when they are not both numeric.
pub(crate) fn arithmetic_operands(l: &DataType, r: &DataType) -> Option<(DataType, DataType)> {
    if !is_numeric(l) || !is_numeric(r) {
        return None;
    }
    if l == r {
        return Some((l.clone(), r.clone()));
    }
    if is_float(l) || is_float(r) {
        let t = float_of(l, r);
        return Some((t.clone(), t));
    }
    if is_decimal(l) || is_decimal(r) {
        let class = decimal_shape(l)?.0.max(decimal_shape(r)?.0);
        let (lt, rt) = (as_decimal(l, class)?, as_decimal(r, class)?);
        // Both must end up the same width: widen to the wider of the two.
        let class = decimal_shape(&lt)?.0.max(decimal_shape(&rt)?.0);
        return Some((as_decimal(&lt, class)?, as_decimal(&rt, class)?));
    }
    let t = common_integer(l, r)?;
    Some((t.clone(), t))
}

/// The one type both sides of a comparison (or all branches of a CASE, items of
/// an IN list, arguments of COALESCE) are cast to; `None` when there is none.
pub(crate) fn common_type(l: &DataType, r: &DataType) -> Option<DataType> {
    use DataType::*;
    if l == r {
        return Some(l.clone());
    }
    match (l, r) {
        (Null, t) | (t, Null) => return Some(t.clone()),
        _ => {}
    }
    if is_numeric(l) && is_numeric(r) {
        if is_float(l) || is_float(r) {
            return Some(float_of(l, r));
        }
        if is_decimal(l) || is_decimal(r) {
            let (lc, lp, ls) = decimal_shape(l)?;
            let (rc, rp, rs) = decimal_shape(r)?;
            let scale = ls.max(rs);
            let int_digits = (i16::from(lp) - i16::from(ls)).max(i16::from(rp) - i16::from(rs));
            let precision = u8::try_from(int_digits + i16::from(scale)).ok()?;
            return Some(decimal_type(lc.max(rc).max(1), precision, scale));
        }
        return common_integer(l, r);
    }
    if is_string(l) && is_string(r) {
        return Some(if matches!(l, LargeUtf8) || matches!(r, LargeUtf8) { LargeUtf8 } else { Utf8View });
    }
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    if binary(l) && binary(r) {
        return Some(if matches!(l, LargeBinary) || matches!(r, LargeBinary) { LargeBinary } else { BinaryView });
    }
    match (l, r) {
        (Timestamp(lu, ltz), Timestamp(ru, rtz)) if ltz.is_some() == rtz.is_some() => {
            Some(Timestamp(finer(lu, ru), ltz.clone().or_else(|| rtz.clone())))
        }
        (Date32, Date64) | (Date64, Date32) => Some(Date64),
        (Date32 | Date64, Timestamp(..)) => Some(r.clone()),
        (Timestamp(..), Date32 | Date64) => Some(l.clone()),
        (Duration(lu), Duration(ru)) => Some(Duration(finer(lu, ru))),
        _ => None,
    }
}

fn finer(a: &TimeUnit, b: &TimeUnit) -> TimeUnit {
    let rank = |u: &TimeUnit| match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    };
    if rank(a) >= rank(b) { *a } else { *b }
}

/// The Arrow type for a SQL type name in `CAST(x AS type)` or `type 'literal'`.
pub(crate) fn sql_type(t: &ast::DataType) -> Result<DataType, ExprError> {
    use ast::DataType as S;
    let no_length = |len: &Option<ast::CharacterLength>| match len {
        None => Ok(DataType::Utf8),
        Some(_) => Err(ExprError::unsupported(format!(
            "type `{t}`: length limits are not supported; use VARCHAR, TEXT or STRING"
        ))),
    };
    Ok(match t {
        S::Boolean | S::Bool => DataType::Boolean,
        S::TinyInt(_) => DataType::Int8,
        S::SmallInt(_) | S::Int2(_) | S::Int16 => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) | S::MediumInt(_) | S::Int32 => DataType::Int32,
        S::BigInt(_) | S::Int8(_) | S::Int64 => DataType::Int64,
        S::TinyIntUnsigned(_) | S::UTinyInt | S::UInt8 => DataType::UInt8,
        S::SmallIntUnsigned(_) | S::USmallInt | S::UInt16 | S::Int2Unsigned(_) => DataType::UInt16,
        S::IntUnsigned(_) | S::IntegerUnsigned(_) | S::Int4Unsigned(_) | S::MediumIntUnsigned(_) | S::UInt32 => {
            DataType::UInt32
        }
        S::BigIntUnsigned(_) | S::UBigInt | S::UInt64 | S::Int8Unsigned(_) => DataType::UInt64,
        S::Real | S::Float4 | S::Float32 => DataType::Float32,
        S::Float(ast::ExactNumberInfo::Precision(p)) if *p <= 24 => DataType::Float32,
        S::Float(_) | S::Double(_) | S::DoublePrecision | S::Float8 | S::Float64 => DataType::Float64,
        S::Decimal(info) | S::Numeric(info) | S::Dec(info) => {
            let (p, s) = match info {
                ast::ExactNumberInfo::None => (38, 10),
                ast::ExactNumberInfo::Precision(p) => (*p, 0),
                ast::ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
            };
            match (u8::try_from(p), i8::try_from(s)) {
                (Ok(p @ 1..=38), Ok(s)) if i16::from(s) <= i16::from(p) => DataType::Decimal128(p, s),
                (Ok(p @ 39..=76), Ok(s)) if i16::from(s) <= i16::from(p) => DataType::Decimal256(p, s),
                _ => {
                    return Err(ExprError::type_error(format!(
                        "type `{t}`: precision must be 1 to 76 and scale at most the precision"
                    )));
                }
            }
        }
        S::Varchar(len)
        | S::Char(len)
        | S::Character(len)
        | S::CharacterVarying(len)
        | S::CharVarying(len)
        | S::Nvarchar(len) => no_length(len)?,
        S::Text | S::String(None) => DataType::Utf8,
        S::Bytea | S::Binary(None) | S::Varbinary(None) | S::Blob(None) => DataType::Binary,
        S::Date => DataType::Date32,
        S::Time(precision, tz) => {
            if matches!(tz, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) {
                return Err(ExprError::unsupported("TIME WITH TIME ZONE is not supported"));
            }
            match time_unit(t, *precision)? {
                u @ (TimeUnit::Second | TimeUnit::Millisecond) => DataType::Time32(u),
                u => DataType::Time64(u),
            }
        }
        S::Timestamp(precision, tz) => {
            let zone = match tz {
                ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz => Some("UTC".into()),
                _ => None,
            };
            DataType::Timestamp(time_unit(t, *precision)?, zone)
        }
        other => {
            return Err(ExprError::unsupported(format!(
                "type `{other}` is not supported; types are: BOOLEAN, TINYINT, SMALLINT, INT, BIGINT (and UNSIGNED), \
                 REAL, DOUBLE, DECIMAL(p, s), VARCHAR, TEXT, BYTEA, DATE, TIME(p), TIMESTAMP(p) [WITH TIME ZONE]"
            )));
        }
    })
}

/// Fractional-second precision 0, 3, 6 or 9 (default 6) as a time unit.
fn time_unit(t: &ast::DataType, precision: Option<u64>) -> Result<TimeUnit, ExprError> {
    Ok(match precision {
        Some(0) => TimeUnit::Second,
        Some(3) => TimeUnit::Millisecond,
        None | Some(6) => TimeUnit::Microsecond,
        Some(9) => TimeUnit::Nanosecond,
        Some(_) => {
            return Err(ExprError::type_error(format!("type `{t}`: precision must be 0, 3, 6 or 9")));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;

    #[test]
    fn arithmetic_coercion() {
        assert_eq!(arithmetic_operands(&Int32, &Int64), Some((Int64, Int64)));
        assert_eq!(arithmetic_operands(&Int64, &Float64), Some((Float64, Float64)));
        assert_eq!(arithmetic_operands(&Float32, &Int8), Some((Float64, Float64)));
        assert_eq!(arithmetic_operands(&Float32, &Float32), Some((Float32, Float32)));
        assert_eq!(arithmetic_operands(&UInt8, &Int8), Some((Int16, Int16)));
        assert_eq!(arithmetic_operands(&UInt32, &Int64), Some((Int64, Int64)));
        assert_eq!(arithmetic_operands(&UInt64, &Int8), Some((Int64, Int64)));
        assert_eq!(arithmetic_operands(&Decimal128(10, 2), &Int64), Some((Decimal128(10, 2), Decimal128(19, 0))));
        assert_eq!(arithmetic_operands(&Decimal128(10, 2), &Float32), Some((Float64, Float64)));
        assert_eq!(arithmetic_operands(&Utf8, &Int64), None);
    }

    #[test]
    fn comparison_coercion() {
        assert_eq!(common_type(&Int32, &Int64), Some(Int64));
        assert_eq!(common_type(&Null, &Utf8), Some(Utf8));
        assert_eq!(common_type(&Utf8, &LargeUtf8), Some(LargeUtf8));
        assert_eq!(common_type(&Utf8, &Utf8View), Some(Utf8View));
        assert_eq!(common_type(&Decimal128(10, 2), &Decimal128(5, 4)), Some(Decimal128(12, 4)));
        assert_eq!(common_type(&Decimal128(10, 2), &Int32), Some(Decimal128(12, 2)));
        assert_eq!(
            common_type(&Timestamp(TimeUnit::Millisecond, None), &Timestamp(TimeUnit::Microsecond, None)),
            Some(Timestamp(TimeUnit::Microsecond, None))
        );
        assert_eq!(common_type(&Date32, &Timestamp(TimeUnit::Second, None)), Some(Timestamp(TimeUnit::Second, None)));
        assert_eq!(common_type(&Utf8, &Int64), None);
        assert_eq!(common_type(&Boolean, &Int64), None);
    }

    #[test]
    fn names() {
        assert_eq!(type_name(&Int64), "int64");
        assert_eq!(type_name(&Decimal128(10, 2)), "decimal(10, 2)");
        assert_eq!(type_name(&Timestamp(TimeUnit::Millisecond, Some("UTC".into()))), "timestamp(ms, UTC)");
    }
}
