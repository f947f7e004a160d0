//! Planning: turns a sqlparser AST into a typed tree, resolving columns, coercing
//! operand types and folding constants, so that evaluation only runs kernels.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, NullArray, StringArray, UInt64Array};
use arrow_cast::{can_cast_types, cast_with_options};
use arrow_schema::{DataType, Schema};
use sqlparser::ast;

use crate::error::{ExprError, ExprErrorKind};
use crate::eval;
use crate::functions;
use crate::tree::{ArithOp, CmpOp, Node, Typed, adopt, cast_to, fold, strict, unify};
use crate::types::{
    arithmetic_operands, decimal_shape, decimal_type, is_decimal, is_float, is_integer, is_numeric, is_string,
    sql_type, type_name,
};

/// How deep expressions may nest; deeper ones are rejected rather than risking
/// the guest's stack.
const MAX_DEPTH: usize = 128;

/// Turns AST expressions into typed nodes against one input schema.
pub(crate) struct Planner<'a> {
    schema: &'a Schema,
    depth: usize,
}

impl<'a> Planner<'a> {
    pub(crate) fn new(schema: &'a Schema) -> Self {
        Self { schema, depth: 0 }
    }

    pub(crate) fn plan(&mut self, e: &ast::Expr) -> Result<Typed, ExprError> {
        self.depth += 1;
        let result = if self.depth > MAX_DEPTH {
            Err(ExprError::unsupported(format!("expression nests more than {MAX_DEPTH} levels deep")))
        } else {
            self.plan_inner(e).and_then(fold)
        };
        self.depth -= 1;
        result
    }

    /// Dispatches on the AST node. Each construct has its own method, so that the
    /// frames of a deep recursion only hold what that construct needs.
    fn plan_inner(&mut self, e: &ast::Expr) -> Result<Typed, ExprError> {
        use ast::Expr as E;
        match e {
            E::Identifier(ident) => self.column(ident),
            E::CompoundIdentifier(parts) => self.compound(e, parts),
            E::Nested(inner) => self.plan(inner),
            E::Value(v) => literal(&v.value, false),
            E::UnaryOp { op: ast::UnaryOperator::Minus, expr }
                if matches!(&**expr, E::Value(ast::ValueWithSpan { value: ast::Value::Number(..), .. })) =>
            {
                match &**expr {
                    E::Value(v) => literal(&v.value, true),
                    _ => Err(ExprError::unsupported(format!("`{e}` is not supported"))),
                }
            }
            E::UnaryOp { op, expr } => self.unary(op, expr),
            E::BinaryOp { left, op, right } => self.binary(left, op, right),
            E::IsNull(inner) | E::IsNotNull(inner) => self.is_null(inner, matches!(e, E::IsNotNull(_)), false),
            E::IsUnknown(inner) | E::IsNotUnknown(inner) => self.is_null(inner, matches!(e, E::IsNotUnknown(_)), true),
            E::IsTrue(inner) | E::IsNotTrue(inner) | E::IsFalse(inner) | E::IsNotFalse(inner) => self.is_bool(
                inner,
                matches!(e, E::IsTrue(_) | E::IsNotTrue(_)),
                matches!(e, E::IsNotTrue(_) | E::IsNotFalse(_)),
            ),
            E::IsDistinctFrom(l, r) => self.compare(CmpOp::Distinct, l, r),
            E::IsNotDistinctFrom(l, r) => self.compare(CmpOp::NotDistinct, l, r),
            E::Like { negated, any, expr, pattern, escape_char } => {
                self.like(*negated, *any, expr, pattern, escape_char.as_deref(), false)
            }
            E::ILike { negated, any, expr, pattern, escape_char } => {
                self.like(*negated, *any, expr, pattern, escape_char.as_deref(), true)
            }
            E::InList { expr, list, negated } => self.in_list(expr, list, *negated),
            E::Between { expr, negated, low, high } => self.between(expr, low, high, *negated),
            E::Cast { kind, expr, data_type, format } => self.cast(kind, expr, data_type, format.is_some()),
            E::TypedString(ts) => typed_string(e, ts),
            E::Case { operand, conditions, else_result, .. } => {
                self.case(operand.as_deref(), conditions, else_result.as_deref())
            }
            E::Substring { expr, substring_from, substring_for, .. } => {
                self.substring(expr, substring_from.as_deref(), substring_for.as_deref())
            }
            E::Function(f) => self.function(f),
            E::InSubquery { .. } | E::Subquery(_) | E::Exists { .. } => {
                Err(ExprError::unsupported("subqueries are not supported"))
            }
            other => Err(ExprError::unsupported(format!("`{other}` is not supported"))),
        }
    }

    fn compound(&self, e: &ast::Expr, parts: &[ast::Ident]) -> Result<Typed, ExprError> {
        let joined = parts.iter().map(|p| p.value.as_str()).collect::<Vec<_>>().join(".");
        match self.schema.index_of(&joined) {
            Ok(index) => Ok(self.column_at(index)),
            Err(_) => Err(ExprError::unsupported(format!(
                "qualified name `{e}` is not supported; quote a column whose name contains a dot, as in \"{joined}\""
            ))),
        }
    }

    fn unary(&mut self, op: &ast::UnaryOperator, expr: &ast::Expr) -> Result<Typed, ExprError> {
        let inner = self.plan(expr)?;
        match op {
            ast::UnaryOperator::Not => {
                let inner = boolean_operand(inner, expr, "NOT")?;
                let nullable = inner.nullable;
                Ok(Typed::new(Node::Not(Box::new(inner)), DataType::Boolean, nullable))
            }
            ast::UnaryOperator::Plus if is_numeric(&inner.data_type) => Ok(inner),
            ast::UnaryOperator::Minus if is_numeric(&inner.data_type) && !inner.data_type.is_unsigned_integer() => {
                let (dt, nullable) = (inner.data_type.clone(), inner.nullable);
                Ok(Typed::new(Node::Negate(Box::new(inner)), dt, nullable))
            }
            ast::UnaryOperator::Minus if inner.data_type.is_unsigned_integer() => {
                let signed =
                    arithmetic_operands(&inner.data_type, &DataType::Int8).map(|(t, _)| t).unwrap_or(DataType::Int64);
                let inner = cast_to(inner, &signed)?;
                let nullable = inner.nullable;
                Ok(Typed::new(Node::Negate(Box::new(inner)), signed, nullable))
            }
            ast::UnaryOperator::Plus | ast::UnaryOperator::Minus => Err(ExprError::type_error(format!(
                "unary `{op}` needs a number, got `{expr}` ({})",
                type_name(&inner.data_type)
            ))),
            other => Err(ExprError::unsupported(format!("operator `{other}` is not supported"))),
        }
    }

    /// `IS [NOT] NULL`, or `IS [NOT] UNKNOWN` (`unknown`: boolean operand only).
    fn is_null(&mut self, inner: &ast::Expr, negated: bool, unknown: bool) -> Result<Typed, ExprError> {
        let mut expr = self.plan(inner)?;
        if unknown {
            expr = boolean_operand(expr, inner, "IS UNKNOWN")?;
        }
        Ok(Typed::new(Node::IsNull { expr: Box::new(expr), negated }, DataType::Boolean, false))
    }

    fn is_bool(&mut self, inner: &ast::Expr, value: bool, negated: bool) -> Result<Typed, ExprError> {
        let expr = Box::new(boolean_operand(self.plan(inner)?, inner, "IS TRUE / IS FALSE")?);
        Ok(Typed::new(Node::IsBool { expr, value, negated }, DataType::Boolean, false))
    }

    fn like(
        &mut self,
        negated: bool,
        any: bool,
        expr: &ast::Expr,
        pattern: &ast::Expr,
        escape: Option<&ast::Expr>,
        case_insensitive: bool,
    ) -> Result<Typed, ExprError> {
        if any {
            return Err(ExprError::unsupported("LIKE ANY is not supported"));
        }
        if let Some(escape) = escape {
            let backslash = match escape {
                ast::Expr::Value(v) => matches!(&v.value, ast::Value::SingleQuotedString(s) if s == "\\"),
                _ => false,
            };
            if !backslash {
                return Err(ExprError::unsupported(format!(
                    "ESCAPE {escape} is not supported; LIKE escapes with a backslash"
                )));
            }
        }
        let (value, pat) = (self.plan(expr)?, self.plan(pattern)?);
        let (mut items, t) = unify(vec![value, pat], &|a, b| {
            ExprError::type_error(format!("LIKE needs strings, got {} and {}", type_name(a), type_name(b)))
        })?;
        let t = match t {
            DataType::Null => DataType::Utf8,
            t if is_string(&t) => t,
            t => {
                return Err(ExprError::type_error(format!("LIKE needs strings, got `{expr}` ({})", type_name(&t))));
            }
        };
        items = items.into_iter().map(|i| cast_to(i, &t)).collect::<Result<_, _>>()?;
        let nullable = items.iter().any(|i| i.nullable);
        let (Some(pattern), Some(expr)) = (items.pop(), items.pop()) else {
            return Err(ExprError::evaluation("LIKE: operands lost"));
        };
        let node = Node::Like { expr: Box::new(expr), pattern: Box::new(pattern), negated, case_insensitive };
        Ok(Typed::new(node, DataType::Boolean, nullable))
    }

    fn in_list(&mut self, expr: &ast::Expr, list: &[ast::Expr], negated: bool) -> Result<Typed, ExprError> {
        let mut items = Vec::with_capacity(list.len() + 1);
        items.push(self.plan(expr)?);
        for item in list {
            items.push(self.plan(item)?);
        }
        let (mut items, _) = unify(items, &|a, b| {
            ExprError::type_error(format!("IN list: cannot compare {} with {}", type_name(a), type_name(b)))
        })?;
        let expr = items.remove(0);
        let nullable = expr.nullable || items.iter().any(|i| i.nullable);
        Ok(Typed::new(Node::InList { expr: Box::new(expr), list: items, negated }, DataType::Boolean, nullable))
    }

    fn between(
        &mut self,
        expr: &ast::Expr,
        low: &ast::Expr,
        high: &ast::Expr,
        negated: bool,
    ) -> Result<Typed, ExprError> {
        let items = vec![self.plan(expr)?, self.plan(low)?, self.plan(high)?];
        let (items, _) = unify(items, &|a, b| {
            ExprError::type_error(format!("BETWEEN: cannot compare {} with {}", type_name(a), type_name(b)))
        })?;
        let nullable = items.iter().any(|i| i.nullable);
        let [expr, low, high]: [Typed; 3] =
            items.try_into().map_err(|_| ExprError::evaluation("BETWEEN: operands lost"))?;
        let node = Node::Between { expr: Box::new(expr), low: Box::new(low), high: Box::new(high), negated };
        Ok(Typed::new(node, DataType::Boolean, nullable))
    }

    fn cast(
        &mut self,
        kind: &ast::CastKind,
        expr: &ast::Expr,
        data_type: &ast::DataType,
        has_format: bool,
    ) -> Result<Typed, ExprError> {
        if has_format {
            return Err(ExprError::unsupported("CAST ... FORMAT is not supported"));
        }
        let to = sql_type(data_type)?;
        let inner = self.plan(expr)?;
        if !can_cast_types(&inner.data_type, &to) {
            return Err(ExprError::type_error(format!(
                "cannot cast `{expr}` ({}) to {}",
                type_name(&inner.data_type),
                type_name(&to)
            )));
        }
        let safe = matches!(kind, ast::CastKind::TryCast | ast::CastKind::SafeCast);
        let nullable = inner.nullable || safe;
        Ok(Typed::new(Node::Cast { expr: Box::new(inner), safe }, to, nullable))
    }

    /// `SUBSTRING(s FROM a FOR b)` and friends, as `substr(s, a, b)`.
    fn substring(
        &mut self,
        expr: &ast::Expr,
        from: Option<&ast::Expr>,
        count: Option<&ast::Expr>,
    ) -> Result<Typed, ExprError> {
        let mut args = vec![self.plan(expr)?];
        let mut sql = vec![expr.to_string()];
        if from.is_none() && count.is_none() {
            return Err(ExprError::type_error("substr(s, start[, len]) takes 2 or 3 arguments, got 1"));
        }
        let one = ast::Expr::value(ast::Value::Number("1".into(), false));
        for a in [from.or(Some(&one)), count].into_iter().flatten() {
            args.push(self.plan(a)?);
            sql.push(a.to_string());
        }
        functions::plan_call("substr", args, &sql)
    }

    fn column_at(&self, index: usize) -> Typed {
        let field = self.schema.field(index);
        Typed::new(Node::Column { index, name: field.name().clone() }, field.data_type().clone(), field.is_nullable())
    }

    /// Resolves a column: quoted names match exactly; unquoted ones exactly, or
    /// else case-insensitively when that picks one column.
    fn column(&self, ident: &ast::Ident) -> Result<Typed, ExprError> {
        let name = &ident.value;
        if let Ok(index) = self.schema.index_of(name) {
            return Ok(self.column_at(index));
        }
        if ident.quote_style.is_none() {
            let matches: Vec<usize> = (0..self.schema.fields().len())
                .filter(|&i| self.schema.field(i).name().eq_ignore_ascii_case(name))
                .collect();
            match matches.as_slice() {
                [index] => return Ok(self.column_at(*index)),
                [] => {}
                many => {
                    let names = many
                        .iter()
                        .map(|&i| format!("`{}`", self.schema.field(i).name()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(ExprError::new(
                        ExprErrorKind::UnknownColumn,
                        format!("column `{name}` is ambiguous: it matches {names}"),
                    )
                    .with_hint("quote the name to pick one"));
                }
            }
        }
        Err(ExprError::new(ExprErrorKind::UnknownColumn, format!("unknown column `{name}`"))
            .with_hint(columns_hint(self.schema)))
    }

    fn binary(&mut self, left: &ast::Expr, op: &ast::BinaryOperator, right: &ast::Expr) -> Result<Typed, ExprError> {
        use ast::BinaryOperator as B;
        let arith = match op {
            B::Plus => Some(ArithOp::Add),
            B::Minus => Some(ArithOp::Sub),
            B::Multiply => Some(ArithOp::Mul),
            B::Divide => Some(ArithOp::Div),
            B::Modulo => Some(ArithOp::Rem),
            _ => None,
        };
        if let Some(arith) = arith {
            return self.arithmetic(arith, op, left, right);
        }
        let cmp = match op {
            B::Eq => Some(CmpOp::Eq),
            B::NotEq => Some(CmpOp::NotEq),
            B::Lt => Some(CmpOp::Lt),
            B::LtEq => Some(CmpOp::LtEq),
            B::Gt => Some(CmpOp::Gt),
            B::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        if let Some(cmp) = cmp {
            return self.compare(cmp, left, right);
        }
        match op {
            B::And | B::Or => self.logic_chain(left, op, right),
            B::StringConcat => {
                let (l, r) = (self.plan(left)?, self.plan(right)?);
                let target = if l.data_type == DataType::LargeUtf8 || r.data_type == DataType::LargeUtf8 {
                    DataType::LargeUtf8
                } else {
                    DataType::Utf8
                };
                let (l, r) = (cast_to(l, &target)?, cast_to(r, &target)?);
                let nullable = l.nullable || r.nullable;
                Ok(Typed::new(Node::Concat(Box::new(l), Box::new(r)), target, nullable))
            }
            other => Err(ExprError::unsupported(format!("operator `{other}` is not supported"))),
        }
    }

    /// A chain `a AND b AND c` (or OR), collected along the parse tree's left
    /// spine without recursion.
    fn logic_chain(
        &mut self,
        left: &ast::Expr,
        op: &ast::BinaryOperator,
        right: &ast::Expr,
    ) -> Result<Typed, ExprError> {
        let word = if matches!(op, ast::BinaryOperator::And) { "AND" } else { "OR" };
        let mut operands = vec![right];
        let mut rest = left;
        while let ast::Expr::BinaryOp { left, op: o, right } = rest {
            if o != op {
                break;
            }
            operands.push(right);
            rest = left;
        }
        operands.push(rest);
        let mut items = Vec::with_capacity(operands.len());
        for e in operands.into_iter().rev() {
            items.push(boolean_operand(self.plan(e)?, e, word)?);
        }
        let nullable = items.iter().any(|i| i.nullable);
        let node = if word == "AND" { Node::And(items) } else { Node::Or(items) };
        Ok(Typed::new(node, DataType::Boolean, nullable))
    }

    fn compare(&mut self, op: CmpOp, left: &ast::Expr, right: &ast::Expr) -> Result<Typed, ExprError> {
        let (l, r) = (self.plan(left)?, self.plan(right)?);
        let (lt, rt) = (l.data_type.clone(), r.data_type.clone());
        let (mut items, _) = unify(vec![l, r], &|_, _| {
            ExprError::type_error(format!(
                "cannot compare `{left}` ({}) with `{right}` ({})",
                type_name(&lt),
                type_name(&rt)
            ))
        })?;
        let (Some(r), Some(l)) = (items.pop(), items.pop()) else {
            return Err(ExprError::evaluation("comparison operands lost"));
        };
        let nullable = !matches!(op, CmpOp::Distinct | CmpOp::NotDistinct) && (l.nullable || r.nullable);
        Ok(Typed::new(Node::Compare { op, left: Box::new(l), right: Box::new(r) }, DataType::Boolean, nullable))
    }

    fn arithmetic(
        &mut self,
        op: ArithOp,
        sql_op: &ast::BinaryOperator,
        left: &ast::Expr,
        right: &ast::Expr,
    ) -> Result<Typed, ExprError> {
        let (mut l, mut r) = (self.plan(left)?, self.plan(right)?);
        // A literal takes an integer or float operand's type where lossless.
        let number = |t: &DataType| is_integer(t) || is_float(t);
        if l.as_literal().is_some()
            && r.as_literal().is_none()
            && (number(&r.data_type) || l.data_type == DataType::Null)
        {
            l = adopt(&l, &r.data_type).unwrap_or(l);
        } else if r.as_literal().is_some()
            && l.as_literal().is_none()
            && (number(&l.data_type) || r.data_type == DataType::Null)
        {
            r = adopt(&r, &l.data_type).unwrap_or(r);
        }
        // An integer literal beside a decimal becomes a decimal of just its digits,
        // so `dec * 2` does not widen like a product with a 19-digit decimal.
        if is_decimal(&r.data_type) {
            l = decimal_literal(&l, &r.data_type)?.unwrap_or(l);
        }
        if is_decimal(&l.data_type) {
            r = decimal_literal(&r, &l.data_type)?.unwrap_or(r);
        }
        if l.data_type == DataType::Null && r.data_type == DataType::Null {
            l = cast_to(l, &DataType::Int64)?;
            r = cast_to(r, &DataType::Int64)?;
        }
        let mismatch = || {
            ExprError::type_error(format!(
                "cannot apply `{sql_op}` to `{left}` ({}) and `{right}` ({})",
                type_name(&l.data_type),
                type_name(&r.data_type)
            ))
        };
        let (lt, rt) = match arithmetic_operands(&l.data_type, &r.data_type) {
            Some(types) => types,
            None if eval::arithmetic_type(op, &l.data_type, &r.data_type).is_ok() => {
                (l.data_type.clone(), r.data_type.clone())
            }
            None => return Err(mismatch()),
        };
        let out = eval::arithmetic_type(op, &lt, &rt).map_err(|_| mismatch())?;
        let (l, r) = (cast_to(l, &lt)?, cast_to(r, &rt)?);
        let nonzero_divisor =
            r.as_literal().is_some_and(|v| !eval::is_null_scalar(v) && !eval::zero_mask(v).is_ok_and(|m| m.value(0)));
        let nullable = l.nullable || r.nullable || (matches!(op, ArithOp::Div | ArithOp::Rem) && !nonzero_divisor);
        Ok(Typed::new(Node::Arithmetic { op, left: Box::new(l), right: Box::new(r) }, out, nullable))
    }

    fn case(
        &mut self,
        operand: Option<&ast::Expr>,
        conditions: &[ast::CaseWhen],
        otherwise: Option<&ast::Expr>,
    ) -> Result<Typed, ExprError> {
        let mut whens = Vec::with_capacity(conditions.len());
        for c in conditions {
            let when = match operand {
                Some(op) => self.compare(CmpOp::Eq, op, &c.condition)?,
                None => boolean_operand(self.plan(&c.condition)?, &c.condition, "CASE WHEN")?,
            };
            whens.push(when);
        }
        let mut results = Vec::with_capacity(conditions.len() + 1);
        for c in conditions {
            results.push(self.plan(&c.result)?);
        }
        if let Some(e) = otherwise {
            results.push(self.plan(e)?);
        }
        let (mut results, t) = unify(results, &|a, b| {
            ExprError::type_error(format!(
                "CASE branches have incompatible types {} and {}",
                type_name(a),
                type_name(b)
            ))
        })?;
        let otherwise = if otherwise.is_some() { results.pop().map(Box::new) } else { None };
        let nullable = otherwise.as_ref().is_none_or(|o| o.nullable) || results.iter().any(|r| r.nullable);
        let branches = whens.into_iter().zip(results).collect();
        Ok(Typed::new(Node::Case { branches, otherwise }, t, nullable))
    }

    fn function(&mut self, f: &ast::Function) -> Result<Typed, ExprError> {
        if f.over.is_some() {
            return Err(ExprError::unsupported(format!("window function `{f}` is not supported")));
        }
        if f.filter.is_some()
            || !f.within_group.is_empty()
            || f.null_treatment.is_some()
            || !matches!(f.parameters, ast::FunctionArguments::None)
        {
            return Err(ExprError::unsupported(format!("`{f}`: aggregate clauses are not supported")));
        }
        let name = match f.name.0.as_slice() {
            [ast::ObjectNamePart::Identifier(id)] => id.value.to_lowercase(),
            _ => {
                return Err(ExprError::new(ExprErrorKind::UnknownFunction, format!("unknown function `{}`", f.name))
                    .with_hint(functions::hint()));
            }
        };
        if !functions::exists(&name) {
            return Err(ExprError::new(ExprErrorKind::UnknownFunction, format!("unknown function `{name}`"))
                .with_hint(functions::hint()));
        }
        let list = match &f.args {
            ast::FunctionArguments::None => {
                return Err(ExprError::type_error(format!("{name} needs parentheses and arguments")));
            }
            ast::FunctionArguments::Subquery(_) => {
                return Err(ExprError::unsupported("subqueries are not supported"));
            }
            ast::FunctionArguments::List(list) => list,
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(ExprError::unsupported(format!("`{f}`: DISTINCT and clauses in arguments are not supported")));
        }
        let mut args = Vec::with_capacity(list.args.len());
        let mut sql = Vec::with_capacity(list.args.len());
        for arg in &list.args {
            match arg {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => {
                    args.push(self.plan(e)?);
                    sql.push(e.to_string());
                }
                other => {
                    return Err(ExprError::unsupported(format!(
                        "{name}: argument `{other}` is not supported; pass plain expressions"
                    )));
                }
            }
        }
        functions::plan_call(&name, args, &sql)
    }
}

/// An integer literal as a decimal of scale 0 with as many digits as its value,
/// in the width class of `like`; `None` for anything else.
fn decimal_literal(t: &Typed, like: &DataType) -> Result<Option<Typed>, ExprError> {
    let Some(value) = t.as_literal().filter(|v| is_integer(v.data_type()) && !eval::is_null_scalar(v)) else {
        return Ok(None);
    };
    let text = arrow_cast::cast(value, &DataType::Utf8)?;
    let digits = text.as_any().downcast_ref::<StringArray>().map_or(20, |s| s.value(0).trim_start_matches('-').len());
    let class = decimal_shape(like).map_or(2, |(c, _, _)| c);
    let target = decimal_type(class, u8::try_from(digits).unwrap_or(20), 0);
    cast_to(t.clone(), &target).map(Some)
}

/// `DATE '2024-01-01'` and the like: the string cast to the type, now.
fn typed_string(e: &ast::Expr, ts: &ast::TypedString) -> Result<Typed, ExprError> {
    let to = sql_type(&ts.data_type)?;
    let text = ts
        .value
        .value
        .clone()
        .into_string()
        .ok_or_else(|| ExprError::unsupported(format!("`{e}`: a typed literal needs a quoted string")))?;
    let value: ArrayRef = Arc::new(StringArray::from(vec![text.clone()]));
    let converted = cast_with_options(&value, &to, &strict()).map_err(|err| {
        ExprError::type_error(format!("invalid {} literal '{text}': {}", ts.data_type, ExprError::from(err).message()))
    })?;
    Ok(Typed::literal(converted))
}

/// Checks a boolean operand (a NULL literal becomes a boolean null).
fn boolean_operand(t: Typed, sql: &ast::Expr, context: &str) -> Result<Typed, ExprError> {
    match t.data_type {
        DataType::Boolean => Ok(t),
        DataType::Null => cast_to(t, &DataType::Boolean),
        ref other => {
            Err(ExprError::type_error(format!("{context} needs a boolean, got `{sql}` ({})", type_name(other))))
        }
    }
}

/// `columns are: a, b` (or `the input has no columns`), the hint that follows an
/// unknown-column error; operators use it for their own column checks.
pub fn columns_hint(schema: &Schema) -> String {
    if schema.fields().is_empty() {
        "the input has no columns".to_owned()
    } else {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        format!("columns are: {}", names.join(", "))
    }
}

/// A literal value; `negative` for a number under unary minus.
fn literal(v: &ast::Value, negative: bool) -> Result<Typed, ExprError> {
    use ast::Value as V;
    let array: ArrayRef = match v {
        V::Number(text, _) => {
            let signed = if negative { format!("-{text}") } else { text.clone() };
            if let Ok(i) = signed.parse::<i64>() {
                Arc::new(Int64Array::from(vec![i]))
            } else if let Ok(u) = signed.parse::<u64>() {
                Arc::new(UInt64Array::from(vec![u]))
            } else if text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ExprError::type_error(format!("integer literal {signed} is out of range")));
            } else {
                let f = signed.parse::<f64>().map_err(|_| ExprError::type_error(format!("invalid number {signed}")))?;
                Arc::new(Float64Array::from(vec![f]))
            }
        }
        V::SingleQuotedString(s)
        | V::EscapedStringLiteral(s)
        | V::UnicodeStringLiteral(s)
        | V::NationalStringLiteral(s)
        | V::TripleSingleQuotedString(s)
        | V::SingleQuotedRawStringLiteral(s) => Arc::new(StringArray::from(vec![s.as_str()])),
        V::DollarQuotedString(s) => Arc::new(StringArray::from(vec![s.value.as_str()])),
        V::Boolean(b) => Arc::new(BooleanArray::from(vec![*b])),
        V::Null => Arc::new(NullArray::new(1)),
        V::Placeholder(p) => {
            return Err(ExprError::unsupported(format!("placeholder `{p}` is not supported")));
        }
        other => {
            return Err(ExprError::unsupported(format!("literal `{other}` is not supported")));
        }
    };
    Ok(Typed::literal(array))
}
