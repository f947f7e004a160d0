//! Evaluation: runs a typed tree over a record batch, one Arrow kernel call per
//! node; constants stay one-element scalars until a kernel broadcasts them.

use std::sync::Arc;

use arrow_arith::boolean::{and_kleene, is_not_null, is_null, not, or_kleene};
use arrow_arith::numeric;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, ArrowNativeTypeOp, ArrowPrimitiveType, BooleanArray, Datum, new_empty_array, new_null_array,
};
use arrow_buffer::BooleanBuffer;
use arrow_cast::{CastOptions, cast_with_options};
use arrow_ord::cmp;
use arrow_schema::{ArrowError, DataType};
use arrow_select::{nullif::nullif, zip::zip};
use arrow_string::concat_elements::concat_elements_dyn;
use arrow_string::like;

use crate::error::ExprError;
use crate::functions;
use crate::tree::{ArithOp, CmpOp, Node, Typed};
use crate::types::type_name;
use arrow_array::RecordBatch;

/// An intermediate result: a full column, or one value standing for every row.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Array(ArrayRef),
    /// A one-element array.
    Scalar(ArrayRef),
}

impl Datum for Value {
    fn get(&self) -> (&dyn Array, bool) {
        match self {
            Value::Array(a) => (a.as_ref(), false),
            Value::Scalar(a) => (a.as_ref(), true),
        }
    }
}

impl Value {
    pub(crate) fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }

    pub(crate) fn array(&self) -> &ArrayRef {
        match self {
            Value::Array(a) | Value::Scalar(a) => a,
        }
    }

    /// The value as a column of `rows` rows (a scalar is repeated).
    pub(crate) fn into_array(self, rows: usize) -> Result<ArrayRef, ExprError> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(s) if rows == 1 => Ok(s),
            Value::Scalar(s) if rows == 0 => Ok(new_empty_array(s.data_type())),
            Value::Scalar(s) if is_null_scalar(&s) => Ok(new_null_array(s.data_type(), rows)),
            Value::Scalar(s) => {
                let mask = BooleanArray::new(BooleanBuffer::new_set(rows), None);
                let scalar = Value::Scalar(s);
                Ok(zip(&mask, &scalar, &scalar)?)
            }
        }
    }

    /// Applies a one-input kernel, keeping scalars scalar.
    pub(crate) fn map(self, f: impl FnOnce(&dyn Array) -> Result<ArrayRef, ExprError>) -> Result<Value, ExprError> {
        Ok(match self {
            Value::Array(a) => Value::Array(f(a.as_ref())?),
            Value::Scalar(s) => Value::Scalar(f(s.as_ref())?),
        })
    }
}

/// Whether a one-element array holds null (a `NullArray` has no validity
/// buffer, so `is_null` alone would say no).
pub(crate) fn is_null_scalar(a: &dyn Array) -> bool {
    a.logical_nulls().is_some_and(|n| n.is_null(0))
}

/// Wraps a kernel result: scalar when every input was.
pub(crate) fn wrap(array: ArrayRef, scalar: bool) -> Value {
    if scalar { Value::Scalar(array) } else { Value::Array(array) }
}

fn boolean(v: &ArrayRef) -> Result<&BooleanArray, ExprError> {
    v.as_boolean_opt().ok_or_else(|| ExprError::evaluation(format!("expected a boolean array, got {}", v.data_type())))
}

/// Applies a kernel over two boolean values of a batch with `rows` rows.
fn boolean_pair(
    l: Value,
    r: Value,
    rows: usize,
    f: fn(&BooleanArray, &BooleanArray) -> Result<BooleanArray, ArrowError>,
) -> Result<Value, ExprError> {
    let scalar = l.is_scalar() && r.is_scalar();
    let (l, r) =
        if scalar { (l.array().clone(), r.array().clone()) } else { (l.into_array(rows)?, r.into_array(rows)?) };
    Ok(wrap(Arc::new(f(boolean(&l)?, boolean(&r)?)?), scalar))
}

/// Evaluates `t` over `batch`.
pub(crate) fn eval(t: &Typed, batch: &RecordBatch) -> Result<Value, ExprError> {
    let rows = batch.num_rows();
    Ok(match &t.node {
        Node::Column { index, name } => {
            let column = batch.columns().get(*index).ok_or_else(|| {
                ExprError::evaluation(format!(
                    "the batch has {} column(s); column `{name}` is expected at index {index}",
                    batch.num_columns()
                ))
            })?;
            if column.data_type() != &t.data_type {
                return Err(ExprError::evaluation(format!(
                    "column `{name}` is {} in this batch, the expression was parsed for {}",
                    type_name(column.data_type()),
                    type_name(&t.data_type)
                )));
            }
            Value::Array(column.clone())
        }
        Node::Literal(v) => Value::Scalar(v.clone()),
        Node::Arithmetic { op, left, right } => {
            let (l, r) = (eval(left, batch)?, eval(right, batch)?);
            arithmetic(*op, &l, &r, &t.data_type)?
        }
        Node::Negate(e) => eval(e, batch)?.map(|a| Ok(numeric::neg(a)?))?,
        Node::Compare { op, left, right } => {
            let (l, r) = (eval(left, batch)?, eval(right, batch)?);
            let kernel = match op {
                CmpOp::Eq => cmp::eq,
                CmpOp::NotEq => cmp::neq,
                CmpOp::Lt => cmp::lt,
                CmpOp::LtEq => cmp::lt_eq,
                CmpOp::Gt => cmp::gt,
                CmpOp::GtEq => cmp::gt_eq,
                CmpOp::Distinct => cmp::distinct,
                CmpOp::NotDistinct => cmp::not_distinct,
            };
            wrap(Arc::new(kernel(&l, &r)?), l.is_scalar() && r.is_scalar())
        }
        Node::And(items) => logic_chain(items, batch, and_kleene)?,
        Node::Or(items) => logic_chain(items, batch, or_kleene)?,
        Node::Not(e) => eval(e, batch)?.map(|a| Ok(Arc::new(not(boolean_ref(a)?)?)))?,
        Node::IsNull { expr, negated } => {
            let kernel = if *negated { is_not_null } else { is_null };
            eval(expr, batch)?.map(|a| Ok(Arc::new(kernel(a)?)))?
        }
        Node::IsBool { expr, value, negated } => eval(expr, batch)?.map(|a| {
            let b = boolean_ref(a)?;
            let mut bits = if *value { b.values().clone() } else { !b.values() };
            if let Some(valid) = b.nulls() {
                bits = &bits & valid.inner();
            }
            if *negated {
                bits = !&bits;
            }
            Ok(Arc::new(BooleanArray::new(bits, None)))
        })?,
        Node::Like { expr, pattern, negated, case_insensitive } => {
            let (e, p) = (eval(expr, batch)?, eval(pattern, batch)?);
            let kernel = match (case_insensitive, negated) {
                (false, false) => like::like,
                (false, true) => like::nlike,
                (true, false) => like::ilike,
                (true, true) => like::nilike,
            };
            wrap(Arc::new(kernel(&e, &p)?), e.is_scalar() && p.is_scalar())
        }
        Node::InList { expr, list, negated } => {
            let e = eval(expr, batch)?;
            let mut found: Option<Value> = None;
            for item in list {
                let v = eval(item, batch)?;
                let hit = wrap(Arc::new(cmp::eq(&e, &v)?), e.is_scalar() && v.is_scalar());
                found = Some(match found {
                    None => hit,
                    Some(acc) => boolean_pair(acc, hit, rows, or_kleene)?,
                });
            }
            let found = found.unwrap_or_else(|| Value::Scalar(Arc::new(BooleanArray::from(vec![false]))));
            if *negated { found.map(|a| Ok(Arc::new(not(boolean_ref(a)?)?)))? } else { found }
        }
        Node::Between { expr, low, high, negated } => {
            let (e, lo, hi) = (eval(expr, batch)?, eval(low, batch)?, eval(high, batch)?);
            let ge = wrap(Arc::new(cmp::gt_eq(&e, &lo)?), e.is_scalar() && lo.is_scalar());
            let le = wrap(Arc::new(cmp::lt_eq(&e, &hi)?), e.is_scalar() && hi.is_scalar());
            let within = boolean_pair(ge, le, rows, and_kleene)?;
            if *negated { within.map(|a| Ok(Arc::new(not(boolean_ref(a)?)?)))? } else { within }
        }
        Node::Cast { expr, safe } => {
            let options = CastOptions { safe: *safe, ..Default::default() };
            eval(expr, batch)?.map(|a| Ok(cast_with_options(a, &t.data_type, &options)?))?
        }
        Node::Case { branches, otherwise } => {
            let mut result = match otherwise {
                Some(o) => eval(o, batch)?,
                None => Value::Scalar(new_null_array(&t.data_type, 1)),
            };
            for (when, then) in branches.iter().rev() {
                let (when, then) = (eval(when, batch)?, eval(then, batch)?);
                result = match when {
                    Value::Scalar(w) => {
                        if boolean(&w)?.is_valid(0) && boolean(&w)?.value(0) {
                            then
                        } else {
                            result
                        }
                    }
                    Value::Array(w) => Value::Array(zip(boolean(&w)?, &then, &result)?),
                };
            }
            result
        }
        Node::Concat(l, r) => {
            let (l, r) = (eval(l, batch)?, eval(r, batch)?);
            let scalar = l.is_scalar() && r.is_scalar();
            let (l, r) = if scalar {
                (l.array().clone(), r.array().clone())
            } else {
                (l.into_array(rows)?, r.into_array(rows)?)
            };
            wrap(concat_elements_dyn(&l, &r)?, scalar)
        }
        Node::Call { function, args } => {
            let values = args.iter().map(|a| eval(a, batch)).collect::<Result<Vec<_>, _>>()?;
            functions::invoke(function, values)?
        }
    })
}

/// Folds an AND / OR chain left to right.
fn logic_chain(
    items: &[Typed],
    batch: &RecordBatch,
    f: fn(&BooleanArray, &BooleanArray) -> Result<BooleanArray, ArrowError>,
) -> Result<Value, ExprError> {
    let mut items = items.iter();
    let first = items.next().ok_or_else(|| ExprError::evaluation("empty AND / OR chain"))?;
    let mut acc = eval(first, batch)?;
    for item in items {
        acc = boolean_pair(acc, eval(item, batch)?, batch.num_rows(), f)?;
    }
    Ok(acc)
}

fn boolean_ref(a: &dyn Array) -> Result<&BooleanArray, ExprError> {
    a.as_boolean_opt().ok_or_else(|| ExprError::evaluation(format!("expected a boolean array, got {}", a.data_type())))
}

fn arithmetic_kernel(op: ArithOp) -> fn(&dyn Datum, &dyn Datum) -> Result<ArrayRef, ArrowError> {
    match op {
        ArithOp::Add => numeric::add,
        ArithOp::Sub => numeric::sub,
        ArithOp::Mul => numeric::mul,
        ArithOp::Div => numeric::div,
        ArithOp::Rem => numeric::rem,
    }
}

/// The type `op` yields for operands of types `l` and `r`, found by running the
/// kernel on empty arrays (so it always agrees with evaluation); an error when
/// the kernel does not support the pair.
pub(crate) fn arithmetic_type(op: ArithOp, l: &DataType, r: &DataType) -> Result<DataType, ArrowError> {
    let (l, r) = (new_empty_array(l), new_empty_array(r));
    Ok(arithmetic_kernel(op)(&l, &r)?.data_type().clone())
}

/// Checked arithmetic; division and remainder by zero give null.
fn arithmetic(op: ArithOp, l: &Value, r: &Value, out: &DataType) -> Result<Value, ExprError> {
    let scalar = l.is_scalar() && r.is_scalar();
    let kernel = arithmetic_kernel(op);
    if matches!(op, ArithOp::Div | ArithOp::Rem) {
        let zeros = zero_mask(r.array())?;
        if zeros.true_count() > 0 {
            if r.is_scalar() {
                return Ok(Value::Scalar(new_null_array(out, 1)));
            }
            let divisor = Value::Array(nullif(r.array(), &zeros)?);
            return Ok(wrap(kernel(l, &divisor)?, scalar));
        }
    }
    Ok(wrap(kernel(l, r)?, scalar))
}

/// True where a numeric array holds a (non-null) zero.
pub(crate) fn zero_mask(a: &dyn Array) -> Result<BooleanArray, ExprError> {
    fn mask<T: ArrowPrimitiveType>(a: &dyn Array) -> Result<BooleanArray, ExprError> {
        let array = a.as_primitive_opt::<T>().ok_or_else(|| ExprError::evaluation("unexpected array type"))?;
        let values = array.values();
        let zeros = BooleanBuffer::collect_bool(values.len(), |i| values[i].is_zero());
        let zeros = match array.nulls() {
            Some(valid) => &zeros & valid.inner(),
            None => zeros,
        };
        Ok(BooleanArray::new(zeros, None))
    }
    match a.data_type() {
        DataType::Int8 => mask::<Int8Type>(a),
        DataType::Int16 => mask::<Int16Type>(a),
        DataType::Int32 => mask::<Int32Type>(a),
        DataType::Int64 => mask::<Int64Type>(a),
        DataType::UInt8 => mask::<UInt8Type>(a),
        DataType::UInt16 => mask::<UInt16Type>(a),
        DataType::UInt32 => mask::<UInt32Type>(a),
        DataType::UInt64 => mask::<UInt64Type>(a),
        DataType::Float16 => mask::<Float16Type>(a),
        DataType::Float32 => mask::<Float32Type>(a),
        DataType::Float64 => mask::<Float64Type>(a),
        DataType::Decimal32(..) => mask::<Decimal32Type>(a),
        DataType::Decimal64(..) => mask::<Decimal64Type>(a),
        DataType::Decimal128(..) => mask::<Decimal128Type>(a),
        DataType::Decimal256(..) => mask::<Decimal256Type>(a),
        _ => Ok(BooleanArray::new(BooleanBuffer::new_unset(a.len()), None)),
    }
}
