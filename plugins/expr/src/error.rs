//! The error type: what went wrong, in which expression, and a hint for the user.

use std::fmt;

use arrow_schema::ArrowError;

/// What kind of failure an [`ExprError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprErrorKind {
    /// The text is not a valid SQL expression.
    Syntax,
    /// A column reference names no column of the input schema.
    UnknownColumn,
    /// A call names no supported function.
    UnknownFunction,
    /// Operand or argument types do not fit, or a constant argument is invalid.
    Type,
    /// Valid SQL that this engine does not evaluate (subqueries, window functions, ...).
    Unsupported,
    /// Integer arithmetic overflowed (raised at evaluation, or while folding constants).
    Overflow,
    /// Any other failure while evaluating (a failed `CAST`, a batch that does not
    /// match the schema the expression was parsed against).
    Evaluation,
}

/// An error from parsing or evaluating an expression.
///
/// Rendered as `<message> in `<sql>`[; <hint>]`, e.g.
/// ``unknown column `prce` in `prce > 3`; columns are: price, auction``.
/// [`ExprError::display_in`] names the expression's role instead, as in
/// ``unknown column `prce` in predicate `prce > 3`; ...``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    kind: ExprErrorKind,
    message: String,
    sql: Option<String>,
    hint: Option<String>,
}

impl ExprError {
    pub(crate) fn new(kind: ExprErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), sql: None, hint: None }
    }

    pub(crate) fn type_error(message: impl Into<String>) -> Self {
        Self::new(ExprErrorKind::Type, message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ExprErrorKind::Unsupported, message)
    }

    pub(crate) fn evaluation(message: impl Into<String>) -> Self {
        Self::new(ExprErrorKind::Evaluation, message)
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attaches the expression text unless an inner step already did.
    pub(crate) fn with_sql(mut self, sql: &str) -> Self {
        if self.sql.is_none() {
            self.sql = Some(sql.to_owned());
        }
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ExprErrorKind {
        self.kind
    }

    /// The failure itself, without the expression text or hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The expression text the failure occurred in, if known.
    pub fn sql(&self) -> Option<&str> {
        self.sql.as_deref()
    }

    /// Extra help, such as the list of available columns.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Renders the error naming the expression's role, e.g. `display_in("predicate")`
    /// gives ``unknown column `prce` in predicate `prce > 3`; columns are: price``.
    pub fn display_in(&self, role: &str) -> String {
        let mut out = self.message.clone();
        if let Some(sql) = &self.sql {
            out.push_str(&format!(" in {role} `{sql}`"));
        }
        if let Some(hint) = &self.hint {
            out.push_str("; ");
            out.push_str(hint);
        }
        out
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(sql) = &self.sql {
            write!(f, " in `{sql}`")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ExprError {}

impl From<ArrowError> for ExprError {
    fn from(e: ArrowError) -> Self {
        match e {
            ArrowError::ArithmeticOverflow(m) => Self::new(ExprErrorKind::Overflow, format!("integer overflow: {m}")),
            ArrowError::CastError(m) => Self::evaluation(format!("cast failed: {m}")),
            ArrowError::DivideByZero => Self::evaluation("division by zero"),
            other => Self::evaluation(other.to_string()),
        }
    }
}
