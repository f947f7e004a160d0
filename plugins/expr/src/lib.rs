//! SQL scalar expressions over Arrow record batches: parsed with `sqlparser`,
//! typed against a schema up front, evaluated with Arrow compute kernels over
//! whole arrays.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch};
//! use arrow_schema::{DataType, Field, Schema};
//! use flumen_expr::Expr;
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("price", DataType::Int64, false)]));
//! let expr = Expr::parse("price * 0.908", &schema).unwrap();
//! assert_eq!(expr.data_type(), &DataType::Float64);
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![100, 200]))]).unwrap();
//! let result = expr.evaluate(&batch).unwrap();
//! assert_eq!(result.len(), 2);
//! ```
//!
//! # What is supported
//!
//! - Column references, matched exactly or, when unquoted, case-insensitively if
//!   that picks one column; `"quoted"` names match exactly.
//! - Literals: integers (int64), decimals and exponents (float64), `'strings'`,
//!   `TRUE`/`FALSE`, `NULL`, and typed literals such as `DATE '2024-01-01'` or
//!   `TIMESTAMP '2024-01-01 10:00:00'`.
//! - Arithmetic `+ - * / %` and unary minus, with SQL-like numeric coercion
//!   (int32 + int64 is int64, int64 * 0.5 is float64, decimals keep exact
//!   precision and scale); timestamps and dates where Arrow supports the pair.
//! - Comparisons `= != <> < <= > >=`, `IS [NOT] DISTINCT FROM`, `AND OR NOT`
//!   (three-valued), `IS [NOT] NULL`, `IS [NOT] TRUE/FALSE/UNKNOWN`,
//!   `[NOT] LIKE`/`ILIKE` (backslash escapes), `[NOT] BETWEEN`, `[NOT] IN (list)`,
//!   `||` string concatenation, `CASE [x] WHEN ... THEN ... [ELSE ...] END`.
//! - `CAST(x AS type)` and `x::type` (failure is an error), `TRY_CAST` (failure
//!   is null).
//! - Functions: `gcd`, `lower`, `upper`, `length`/`char_length`, `octet_length`,
//!   `substr`/`substring`, `split_part`, `regexp_extract`, `url_host`,
//!   `url_path`, `coalesce`; see [`kernels`] for their exact semantics.
//!
//! A literal beside a column takes the column's type when that loses nothing
//! (`int32_col > 5` compares int32s, `ts > '2024-01-01'` parses the string as a
//! timestamp), so constants do not force a cast of the whole column.
//!
//! # Errors and edge cases
//!
//! - Parse-time: syntax, unknown columns (the message lists the columns),
//!   unknown functions (it lists the functions), type mismatches and bad
//!   constant arguments are reported by [`Expr::parse`], before any data flows.
//! - Floats compare in Arrow's IEEE total order: `-0.0 < 0.0`, and NaN equals
//!   itself and sorts above every other value.
//! - Integer overflow (`+ - *`, unary minus, `gcd`) is an error
//!   ([`ExprErrorKind::Overflow`]), never a wrapped value.
//! - Division or remainder by zero yields **NULL** for that row (for integers,
//!   floats and decimals alike), so one bad row does not fail a whole batch;
//!   guard with `CASE` or `COALESCE` where another value is wanted.
//! - `CASE` evaluates every branch over the whole batch and then picks per row,
//!   so a branch that fails (overflow, failing `CAST`) fails the expression even
//!   on rows where it is not chosen.

mod error;
mod eval;
mod functions;
pub mod kernels;
mod plan;
mod tree;
mod types;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

pub use error::{ExprError, ExprErrorKind};
pub use plan::columns_hint;
pub use types::type_name;

/// A parsed, typed SQL scalar expression, ready to evaluate over batches of the
/// schema it was parsed against.
#[derive(Debug, Clone)]
pub struct Expr {
    sql: String,
    root: tree::Typed,
}

impl Expr {
    /// Parses `sql` and resolves it against `input`: columns, function
    /// signatures and types are all checked here.
    pub fn parse(sql: &str, input: &Schema) -> Result<Expr, ExprError> {
        let ast = parse_sql(sql).map_err(|e| e.with_sql(sql))?;
        let root = plan::Planner::new(input).plan(&ast).map_err(|e| e.with_sql(sql))?;
        Ok(Expr { sql: sql.to_owned(), root })
    }

    /// The type of every array [`Expr::evaluate`] returns.
    pub fn data_type(&self) -> &DataType {
        &self.root.data_type
    }

    /// Whether results may contain nulls.
    pub fn nullable(&self) -> bool {
        self.root.nullable
    }

    /// The expression's text, as given to [`Expr::parse`].
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The input column index when the expression is just a column reference
    /// (evaluating it then returns that column without copying).
    pub fn column_index(&self) -> Option<usize> {
        match &self.root.node {
            tree::Node::Column { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The input columns the expression reads, ascending (indices into the
    /// schema it was parsed against).
    pub fn columns(&self) -> Vec<usize> {
        let mut out = std::collections::BTreeSet::new();
        self.root.columns(&mut out);
        out.into_iter().collect()
    }

    /// The same expression over a batch holding only `columns` (ascending
    /// indices into the schema it was parsed against, a superset of
    /// [`Expr::columns`]) of its input: for operators that read only the
    /// columns their expressions need.
    pub fn over_columns(&self, input: &Schema, columns: &[usize]) -> Result<Expr, ExprError> {
        let projected = input.project(columns).map_err(|e| ExprError::new(ExprErrorKind::Type, e.to_string()))?;
        Expr::parse(&self.sql, &projected)
    }

    /// Evaluates the expression over `batch`, which must have the schema the
    /// expression was parsed against; the result has `batch.num_rows()` rows.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef, ExprError> {
        eval::eval(&self.root, batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| e.with_sql(&self.sql))
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.sql)
    }
}

fn parse_sql(sql: &str) -> Result<sqlparser::ast::Expr, ExprError> {
    let syntax = |e: ParserError| {
        let message = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "expression nests too deeply".to_owned(),
        };
        ExprError::new(ExprErrorKind::Syntax, format!("syntax error: {message}"))
    };
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    let expr = parser.parse_expr().map_err(syntax)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(ExprError::new(
            ExprErrorKind::Syntax,
            format!("syntax error: unexpected `{}` after the expression", next.token),
        ));
    }
    Ok(expr)
}
