//! Vectorised kernels behind the SQL functions, public so that operators can call
//! them directly (the `strings` plugin does) and the logic exists once.
//!
//! String kernels take utf8, large-utf8 or utf8-view arrays (utf8-view is read as
//! utf8) and return utf8, or large-utf8 for large-utf8 input; nulls stay null.

mod gcd;
mod text;
mod url;

pub use gcd::gcd;
pub use text::{RegexExtract, char_length, lower, octet_length, split_part, substr, upper};
pub use url::{url_host, url_host_of, url_path, url_path_of};

use arrow_array::{Array, GenericStringArray, OffsetSizeTrait};
use arrow_buffer::{Buffer, NullBufferBuilder, OffsetBuffer};
use arrow_schema::DataType;

use crate::error::ExprError;

/// The type a string kernel returns for input of type `input`.
pub fn string_output_type(input: &DataType) -> DataType {
    match input {
        DataType::LargeUtf8 => DataType::LargeUtf8,
        _ => DataType::Utf8,
    }
}

/// Runs `$body` with `$s` bound to `$array` as a `GenericStringArray` (utf8-view
/// is cast to utf8 first); any other type is a type error naming `$what`.
macro_rules! with_strings {
    ($array:expr, $what:expr, |$s:ident| $body:expr) => {{
        use arrow_array::cast::AsArray as _;
        let array: &dyn arrow_array::Array = $array;
        let unexpected = || crate::error::ExprError::evaluation(format!("{}: unexpected array type", $what));
        match array.data_type() {
            arrow_schema::DataType::Utf8 => {
                let $s = array.as_string_opt::<i32>().ok_or_else(unexpected)?;
                $body
            }
            arrow_schema::DataType::LargeUtf8 => {
                let $s = array.as_string_opt::<i64>().ok_or_else(unexpected)?;
                $body
            }
            arrow_schema::DataType::Utf8View => {
                // Copied into utf8 directly rather than through arrow-cast, so that
                // operators using only these kernels do not link every cast.
                let view = array.as_string_view_opt().ok_or_else(unexpected)?;
                let utf8: arrow_array::StringArray = view.iter().collect();
                let $s = &utf8;
                $body
            }
            other => Err(crate::error::ExprError::type_error(format!(
                "{} needs a string argument, got {}",
                $what,
                crate::types::type_name(other)
            ))),
        }
    }};
}
pub(crate) use with_strings;

/// Builds a string array with one value per row of `input`: `f` appends a row's
/// bytes (valid UTF-8) to the buffer and returns true, or appends nothing and
/// returns false for null. Null input rows stay null without calling `f`.
pub(crate) fn map_strings<O: OffsetSizeTrait>(
    input: &GenericStringArray<O>,
    mut f: impl FnMut(&str, &mut Vec<u8>) -> bool,
) -> Result<GenericStringArray<O>, ExprError> {
    let offsets = input.value_offsets();
    let used = match (offsets.first(), offsets.last()) {
        (Some(first), Some(last)) => last.as_usize().saturating_sub(first.as_usize()),
        _ => 0,
    };
    let mut values = Vec::with_capacity(used);
    let mut out_offsets = Vec::with_capacity(input.len() + 1);
    out_offsets.push(O::usize_as(0));
    let mut nulls = NullBufferBuilder::new(input.len());
    for i in 0..input.len() {
        let valid = input.is_valid(i) && f(input.value(i), &mut values);
        nulls.append(valid);
        let end = O::from_usize(values.len())
            .ok_or_else(|| ExprError::evaluation("string result is too large for its offset type"))?;
        out_offsets.push(end);
    }
    let array =
        GenericStringArray::try_new(OffsetBuffer::new(out_offsets.into()), Buffer::from_vec(values), nulls.finish())?;
    Ok(array)
}
