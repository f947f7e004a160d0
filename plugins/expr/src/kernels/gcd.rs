//! `gcd(a, b)`: greatest common divisor over integer arrays, one native loop over the value slices.

use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, Datum, PrimitiveArray};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::DataType;
use std::sync::Arc;

use crate::error::{ExprError, ExprErrorKind};
use crate::types::type_name;

/// Greatest common divisor of `a` and `b`, element-wise (either may be a scalar).
///
/// Both sides must have the same type, one of int32, int64, uint32 or uint64.
/// `gcd(0, 0)` is 0, the result is never negative, and it is null where either
/// input is null. A result that does not fit the type (`gcd(i64::MIN, 0)`) is an
/// [`ExprErrorKind::Overflow`] error. When both inputs are scalars, so is the result.
pub fn gcd(a: &dyn Datum, b: &dyn Datum) -> Result<ArrayRef, ExprError> {
    let (a, a_scalar) = a.get();
    let (b, b_scalar) = b.get();
    if (a_scalar && a.len() != 1) || (b_scalar && b.len() != 1) {
        return Err(ExprError::evaluation("gcd: a scalar argument must hold exactly one value"));
    }
    if a.data_type() != b.data_type() {
        return Err(ExprError::type_error(format!(
            "gcd needs two integers of the same type, got {} and {}",
            type_name(a.data_type()),
            type_name(b.data_type())
        )));
    }
    match a.data_type() {
        DataType::Int32 => gcd_typed::<Int32Type>(a, a_scalar, b, b_scalar),
        DataType::Int64 => gcd_typed::<Int64Type>(a, a_scalar, b, b_scalar),
        DataType::UInt32 => gcd_typed::<UInt32Type>(a, a_scalar, b, b_scalar),
        DataType::UInt64 => gcd_typed::<UInt64Type>(a, a_scalar, b, b_scalar),
        other => Err(ExprError::type_error(format!(
            "gcd needs int32, int64, uint32 or uint64 arguments, got {}",
            type_name(other)
        ))),
    }
}

/// Integer types `gcd` works on: values go through `u64` magnitudes and back.
trait GcdType: ArrowPrimitiveType {
    /// The largest magnitude the type can hold as a result.
    const MAX: u64;
    fn magnitude(v: Self::Native) -> u64;
    /// Converts back a magnitude known to be `<= MAX`; larger ones wrap, and are
    /// reported as overflow by the caller.
    fn from_magnitude(v: u64) -> Self::Native;
}

macro_rules! gcd_type {
    ($t:ty, $native:ty, $v:ident => $abs:expr) => {
        impl GcdType for $t {
            const MAX: u64 = <$native>::MAX as u64;
            #[inline]
            fn magnitude($v: $native) -> u64 {
                $abs
            }
            #[inline]
            fn from_magnitude(v: u64) -> $native {
                v as $native
            }
        }
    };
}

gcd_type!(Int32Type, i32, v => u64::from(v.unsigned_abs()));
gcd_type!(Int64Type, i64, v => v.unsigned_abs());
gcd_type!(UInt32Type, u32, v => u64::from(v));
gcd_type!(UInt64Type, u64, v => v);

/// Stein's binary GCD.
#[inline]
fn gcd_u64(mut a: u64, mut b: u64) -> u64 {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

fn gcd_typed<T: GcdType>(a: &dyn Array, a_scalar: bool, b: &dyn Array, b_scalar: bool) -> Result<ArrayRef, ExprError> {
    let a = a
        .as_any()
        .downcast_ref::<PrimitiveArray<T>>()
        .ok_or_else(|| ExprError::evaluation("gcd: unexpected array type"))?;
    let b = b
        .as_any()
        .downcast_ref::<PrimitiveArray<T>>()
        .ok_or_else(|| ExprError::evaluation("gcd: unexpected array type"))?;
    let mut overflow = false;
    let (values, nulls): (Vec<T::Native>, Option<NullBuffer>) = match (a_scalar, b_scalar) {
        (false, true) | (true, false) => {
            let (array, scalar) = if a_scalar { (b, a) } else { (a, b) };
            if scalar.is_null(0) {
                return Ok(Arc::new(PrimitiveArray::<T>::new_null(array.len())));
            }
            let k = T::magnitude(scalar.value(0));
            let values = array
                .values()
                .iter()
                .map(|&v| {
                    let g = gcd_u64(T::magnitude(v), k);
                    overflow |= g > T::MAX;
                    T::from_magnitude(g)
                })
                .collect();
            (values, array.nulls().cloned())
        }
        _ => {
            if a.len() != b.len() {
                return Err(ExprError::evaluation(format!(
                    "gcd: arrays have different lengths ({} and {})",
                    a.len(),
                    b.len()
                )));
            }
            let values = a
                .values()
                .iter()
                .zip(b.values().iter())
                .map(|(&x, &y)| {
                    let g = gcd_u64(T::magnitude(x), T::magnitude(y));
                    overflow |= g > T::MAX;
                    T::from_magnitude(g)
                })
                .collect();
            (values, NullBuffer::union(a.nulls(), b.nulls()))
        }
    };
    let result = PrimitiveArray::<T>::try_new(ScalarBuffer::from(values), nulls)?;
    if overflow {
        // Only a valid row counts: null slots may hold any value.
        let len = a.len().max(b.len());
        let at = |array: &PrimitiveArray<T>, scalar: bool, i: usize| array.value(if scalar { 0 } else { i });
        for i in 0..len {
            if result.is_valid(i) {
                let (x, y) = (at(a, a_scalar, i), at(b, b_scalar, i));
                if gcd_u64(T::magnitude(x), T::magnitude(y)) > T::MAX {
                    return Err(ExprError::new(
                        ExprErrorKind::Overflow,
                        format!("integer overflow: gcd({x:?}, {y:?}) does not fit in {}", type_name(&T::DATA_TYPE)),
                    ));
                }
            }
        }
    }
    Ok(Arc::new(result))
}

#[cfg(test)]
mod tests {
    use super::gcd_u64;

    #[test]
    fn binary_gcd_matches_euclid() {
        fn euclid(a: u64, b: u64) -> u64 {
            if b == 0 { a } else { euclid(b, a % b) }
        }
        for a in 0..200u64 {
            for b in 0..200u64 {
                assert_eq!(gcd_u64(a, b), euclid(a, b), "gcd({a}, {b})");
            }
        }
        assert_eq!(gcd_u64(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(gcd_u64(1 << 63, 0), 1 << 63);
    }
}
