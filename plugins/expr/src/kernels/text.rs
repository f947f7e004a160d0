//! String kernels: lower, upper, character and byte length, substr, split_part, regexp_extract.

use std::sync::Arc;

use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, GenericStringArray, OffsetSizeTrait, PrimitiveArray};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_string::substring::substring_by_char;
use regex::{Regex, RegexBuilder};

use super::{map_strings, with_strings};
use crate::error::ExprError;

/// Compiled-size cap for user patterns, so that a pattern cannot take much of a
/// guest's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `lower(s)`: Unicode lower case. ASCII-only data is converted in one pass
/// over the value buffer, reusing the offsets and validity.
pub fn lower(array: &dyn Array) -> Result<ArrayRef, ExprError> {
    with_strings!(array, "lower", |s| change_case(s, <[u8]>::to_ascii_lowercase, str::to_lowercase))
}

/// `upper(s)`: Unicode upper case; see [`lower`].
pub fn upper(array: &dyn Array) -> Result<ArrayRef, ExprError> {
    with_strings!(array, "upper", |s| change_case(s, <[u8]>::to_ascii_uppercase, str::to_uppercase))
}

fn change_case<O: OffsetSizeTrait>(
    s: &GenericStringArray<O>,
    ascii: fn(&[u8]) -> Vec<u8>,
    unicode: fn(&str) -> String,
) -> Result<ArrayRef, ExprError> {
    if s.values().is_ascii() {
        let values = Buffer::from_vec(ascii(s.values()));
        let array = GenericStringArray::<O>::try_new(s.offsets().clone(), values, s.nulls().cloned())?;
        return Ok(Arc::new(array));
    }
    let array = map_strings(s, |v, out| {
        out.extend_from_slice(unicode(v).as_bytes());
        true
    })?;
    Ok(Arc::new(array))
}

/// `length(s)` / `char_length(s)`: the number of characters (not bytes), as
/// int32 (int64 for large-utf8).
pub fn char_length(array: &dyn Array) -> Result<ArrayRef, ExprError> {
    with_strings!(array, "length", |s| {
        if s.values().is_ascii() {
            return Ok(arrow_string::length::length(s)?);
        }
        Ok(count_chars(s))
    })
}

/// Character counts: bytes that do not continue a UTF-8 sequence.
fn count_chars<O: OffsetSizeTrait>(s: &GenericStringArray<O>) -> ArrayRef {
    if O::IS_LARGE { Arc::new(counts::<O, Int64Type>(s)) } else { Arc::new(counts::<O, Int32Type>(s)) }
}

fn counts<O: OffsetSizeTrait, T: ArrowPrimitiveType>(s: &GenericStringArray<O>) -> PrimitiveArray<T>
where
    T::Native: TryFrom<usize> + Default,
{
    let values: &[u8] = s.values();
    let counts: ScalarBuffer<T::Native> = s
        .value_offsets()
        .windows(2)
        .map(|w| {
            let bytes = values.get(w[0].as_usize()..w[1].as_usize()).unwrap_or_default();
            let n = bytes.iter().filter(|&&b| (b as i8) >= -0x40).count();
            T::Native::try_from(n).unwrap_or_default()
        })
        .collect();
    PrimitiveArray::new(counts, s.nulls().cloned())
}

/// `octet_length(s)`: the number of bytes, as int32 (int64 for large-utf8).
pub fn octet_length(array: &dyn Array) -> Result<ArrayRef, ExprError> {
    with_strings!(array, "octet_length", |s| Ok(arrow_string::length::length(s)?))
}

/// `substr(s, start[, len])` with SQL semantics: `start` counts characters from 1,
/// positions before 1 are counted but yield nothing (`substr('hello', 0, 3)` is
/// `'he'`), and a negative `len` is an error.
pub fn substr(array: &dyn Array, start: i64, len: Option<i64>) -> Result<ArrayRef, ExprError> {
    if let Some(len) = len.filter(|&l| l < 0) {
        return Err(ExprError::type_error(format!("substr: negative substring length {len} is not allowed")));
    }
    let from = start.max(1);
    let arrow_start = from - 1;
    let arrow_len = len.map(|l| u64::try_from(start.saturating_add(l).saturating_sub(from)).unwrap_or(0));
    with_strings!(array, "substr", |s| Ok(Arc::new(substring_by_char(s, arrow_start, arrow_len)?) as ArrayRef))
}

/// `split_part(s, delimiter, n)` as in PostgreSQL: the `n`th field (from 1), or
/// counting from the end when `n` is negative; `''` when there are fewer fields.
/// `n = 0` is an error.
pub fn split_part(array: &dyn Array, delimiter: &str, n: i64) -> Result<ArrayRef, ExprError> {
    if n == 0 {
        return Err(ExprError::type_error("split_part: field position must not be zero"));
    }
    let mut chars = delimiter.chars();
    let single = match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    };
    with_strings!(array, "split_part", |s| {
        let array = map_strings(s, |v, out| {
            let field = match single {
                Some(c) => nth_field(v, n, |v| v.split(c), |v| v.matches(c).count()),
                None if delimiter.is_empty() => (n == 1 || n == -1).then_some(v),
                None => nth_field(v, n, |v| v.split(delimiter), |v| v.matches(delimiter).count()),
            };
            out.extend_from_slice(field.unwrap_or("").as_bytes());
            true
        })?;
        Ok(Arc::new(array) as ArrayRef)
    })
}

/// The `n`th field of `v` (negative: from the end), given how to split it and
/// how to count the delimiters in it.
fn nth_field<'a, I: Iterator<Item = &'a str>>(
    v: &'a str,
    n: i64,
    split: impl Fn(&'a str) -> I,
    delimiters: impl Fn(&'a str) -> usize,
) -> Option<&'a str> {
    let index = if n > 0 {
        usize::try_from(n - 1).ok()?
    } else {
        let fields = delimiters(v) + 1;
        fields.checked_sub(usize::try_from(n.unsigned_abs()).ok()?)?
    };
    split(v).nth(index)
}

/// `regexp_extract(s, pattern, group)`: the text of capture `group` (0 = the
/// whole match) in the first match of `pattern`; null when there is no match or
/// the group did not take part in it. The pattern is compiled once.
#[derive(Debug, Clone)]
pub struct RegexExtract {
    regex: Regex,
    group: usize,
}

impl RegexExtract {
    /// Compiles `pattern` (Rust `regex` syntax) and checks that `group` exists.
    pub fn new(pattern: &str, group: i64) -> Result<Self, ExprError> {
        let regex = RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| {
            ExprError::type_error(format!("regexp_extract: invalid pattern `{pattern}`: {}", one_line(&e.to_string())))
        })?;
        let groups = regex.captures_len() - 1;
        let group = usize::try_from(group).ok().filter(|&g| g <= groups).ok_or_else(|| {
            ExprError::type_error(format!(
                "regexp_extract: group {group} is out of range: pattern `{pattern}` has {groups} capture group{}",
                if groups == 1 { "" } else { "s" }
            ))
        })?;
        Ok(Self { regex, group })
    }

    /// The pattern's text.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// The capture group extracted.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Applies the extraction to every string of `array`.
    pub fn apply(&self, array: &dyn Array) -> Result<ArrayRef, ExprError> {
        with_strings!(array, "regexp_extract", |s| {
            let mut locations = self.regex.capture_locations();
            let array = map_strings(s, |v, out| {
                let span = if self.group == 0 {
                    self.regex.find(v).map(|m| (m.start(), m.end()))
                } else {
                    self.regex.captures_read(&mut locations, v).and_then(|_| locations.get(self.group))
                };
                match span.and_then(|(a, b)| v.get(a..b)) {
                    Some(text) => {
                        out.extend_from_slice(text.as_bytes());
                        true
                    }
                    None => false,
                }
            })?;
            Ok(Arc::new(array) as ArrayRef)
        })
    }
}

/// Regex errors come with a multi-line caret diagram; keep their last line.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or(message).to_owned()
}
