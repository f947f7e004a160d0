//! The typed expression tree, and the casts, literal adoption and constant
//! folding that the planner uses to build it.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_cast::{CastOptions, can_cast_types, cast_with_options};
use arrow_schema::{DataType, Schema};

use crate::error::ExprError;
use crate::eval;
use crate::functions::Function;
use crate::types::{common_type, is_float, is_integer, is_numeric, is_string, type_name};

/// An expression node with its result type.
#[derive(Debug, Clone)]
pub(crate) struct Typed {
    pub node: Node,
    pub data_type: DataType,
    pub nullable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Distinct,
    NotDistinct,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Input column `index`; `name` is for messages.
    Column {
        index: usize,
        name: String,
    },
    /// A constant: a one-element array.
    Literal(ArrayRef),
    Arithmetic {
        op: ArithOp,
        left: Box<Typed>,
        right: Box<Typed>,
    },
    Negate(Box<Typed>),
    Compare {
        op: CmpOp,
        left: Box<Typed>,
        right: Box<Typed>,
    },
    /// `a AND b AND ...`: a chain is one node, so long chains do not nest.
    And(Vec<Typed>),
    Or(Vec<Typed>),
    Not(Box<Typed>),
    IsNull {
        expr: Box<Typed>,
        negated: bool,
    },
    /// `IS [NOT] TRUE` / `IS [NOT] FALSE`.
    IsBool {
        expr: Box<Typed>,
        value: bool,
        negated: bool,
    },
    Like {
        expr: Box<Typed>,
        pattern: Box<Typed>,
        negated: bool,
        case_insensitive: bool,
    },
    InList {
        expr: Box<Typed>,
        list: Vec<Typed>,
        negated: bool,
    },
    Between {
        expr: Box<Typed>,
        low: Box<Typed>,
        high: Box<Typed>,
        negated: bool,
    },
    /// Cast to the node's type; `safe` turns failures into nulls (TRY_CAST).
    Cast {
        expr: Box<Typed>,
        safe: bool,
    },
    Case {
        branches: Vec<(Typed, Typed)>,
        otherwise: Option<Box<Typed>>,
    },
    Concat(Box<Typed>, Box<Typed>),
    Call {
        function: Function,
        args: Vec<Typed>,
    },
}

impl Typed {
    pub(crate) fn new(node: Node, data_type: DataType, nullable: bool) -> Self {
        Self { node, data_type, nullable }
    }

    pub(crate) fn literal(value: ArrayRef) -> Self {
        let nullable = eval::is_null_scalar(&value);
        Self { data_type: value.data_type().clone(), node: Node::Literal(value), nullable }
    }

    pub(crate) fn as_literal(&self) -> Option<&ArrayRef> {
        match &self.node {
            Node::Literal(v) => Some(v),
            _ => None,
        }
    }

    /// Adds the input columns this node reads to `out`.
    pub(crate) fn columns(&self, out: &mut std::collections::BTreeSet<usize>) {
        let mut stack = vec![self];
        while let Some(t) = stack.pop() {
            if let Node::Column { index, .. } = &t.node {
                out.insert(*index);
            }
            stack.extend(t.children());
        }
    }

    fn children(&self) -> Vec<&Typed> {
        match &self.node {
            Node::Column { .. } | Node::Literal(_) => vec![],
            Node::Arithmetic { left, right, .. } | Node::Compare { left, right, .. } => {
                vec![left, right]
            }
            Node::And(items) | Node::Or(items) => items.iter().collect(),
            Node::Concat(l, r) => vec![l, r],
            Node::Negate(e)
            | Node::Not(e)
            | Node::IsNull { expr: e, .. }
            | Node::IsBool { expr: e, .. }
            | Node::Cast { expr: e, .. } => {
                vec![e]
            }
            Node::Like { expr, pattern, .. } => vec![expr, pattern],
            Node::InList { expr, list, .. } => std::iter::once(&**expr).chain(list).collect(),
            Node::Between { expr, low, high, .. } => vec![expr, low, high],
            Node::Case { branches, otherwise } => {
                branches.iter().flat_map(|(w, t)| [w, t]).chain(otherwise.as_deref()).collect()
            }
            Node::Call { args, .. } => args.iter().collect(),
        }
    }
}

/// Evaluates a node whose inputs are all constants, making it a literal.
pub(crate) fn fold(t: Typed) -> Result<Typed, ExprError> {
    if matches!(t.node, Node::Column { .. } | Node::Literal(_))
        || !t.children().iter().all(|c| c.as_literal().is_some())
    {
        return Ok(t);
    }
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let value = eval::eval(&t, &batch)?.into_array(1)?;
    Ok(Typed::literal(value))
}

/// Casts `t` to `to`, folding constants; an impossible cast is a type error.
pub(crate) fn cast_to(t: Typed, to: &DataType) -> Result<Typed, ExprError> {
    if &t.data_type == to {
        return Ok(t);
    }
    if !can_cast_types(&t.data_type, to) {
        return Err(ExprError::type_error(format!("cannot cast {} to {}", type_name(&t.data_type), type_name(to))));
    }
    let nullable = t.nullable;
    fold(Typed::new(Node::Cast { expr: Box::new(t), safe: false }, to.clone(), nullable))
}

pub(crate) fn strict() -> CastOptions<'static> {
    CastOptions { safe: false, ..Default::default() }
}

/// A literal takes the other operand's type when that loses nothing:
/// `int32_col > 5` compares int32s, `ts_col > '2024-01-01'` parses the string as
/// a timestamp, `NULL` becomes a null of the other type. A float literal never becomes an
/// integer, and only strings and NULL cross type families.
pub(crate) fn adopt(t: &Typed, target: &DataType) -> Option<Typed> {
    let value = t.as_literal()?;
    let from = value.data_type();
    if from == target {
        return Some(t.clone());
    }
    let family = |d: &DataType| {
        if is_numeric(d) {
            0
        } else if d.is_temporal() {
            1
        } else {
            2
        }
    };
    let converted = match from {
        DataType::Null => cast_with_options(value, target, &strict()).ok()?,
        f if is_string(f) => cast_with_options(value, target, &strict()).ok()?,
        f if family(f) == 2 || family(f) != family(target) => return None,
        f if is_float(f) && is_integer(target) => return None,
        f => {
            let converted = cast_with_options(value, target, &strict()).ok()?;
            let back = cast_with_options(&converted, f, &strict()).ok()?;
            if back.to_data() != value.to_data() {
                return None;
            }
            converted
        }
    };
    Some(Typed::literal(converted))
}

/// Casts `items` to one common type: non-literals decide it, literals adopt it
/// where they can (see [`adopt`]) and widen it where they cannot.
pub(crate) fn unify(
    items: Vec<Typed>,
    mismatch: &dyn Fn(&DataType, &DataType) -> ExprError,
) -> Result<(Vec<Typed>, DataType), ExprError> {
    let mut anchor: Option<DataType> = None;
    for item in items.iter().filter(|i| i.as_literal().is_none()) {
        anchor = Some(match anchor {
            None => item.data_type.clone(),
            Some(a) => common_type(&a, &item.data_type).ok_or_else(|| mismatch(&a, &item.data_type))?,
        });
    }
    let mut adopted = Vec::with_capacity(items.len());
    for item in items {
        if item.as_literal().is_some() {
            match &anchor {
                Some(a) => {
                    if let Some(lit) = adopt(&item, a) {
                        adopted.push(lit);
                        continue;
                    }
                    anchor = Some(common_type(a, &item.data_type).ok_or_else(|| mismatch(a, &item.data_type))?);
                }
                None => anchor = Some(item.data_type.clone()),
            }
        }
        adopted.push(item);
    }
    let anchor = anchor.unwrap_or(DataType::Null);
    let items = adopted.into_iter().map(|i| cast_to(i, &anchor)).collect::<Result<Vec<_>, _>>()?;
    Ok((items, anchor))
}
