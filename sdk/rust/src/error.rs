//! The error an operator returns; the host's failure policy decides what follows.

use std::fmt;

use crate::bindings::flumen::dataflow::types as wit;

/// What kind of failure; see the WIT `error-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidConfig,
    InvalidInput,
    Limit,
    Internal,
}

/// An operator failure with a message for the job's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    /// The configuration is unusable.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }
    /// This input cannot be processed.
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self::input(e.to_string())
    }
}

impl From<flumen_batch::BatchError> for Error {
    fn from(e: flumen_batch::BatchError) -> Self {
        Self::input(e.to_string())
    }
}

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        let kind = match e.kind {
            ErrorKind::InvalidConfig => wit::ErrorKind::InvalidConfig,
            ErrorKind::InvalidInput => wit::ErrorKind::InvalidInput,
            ErrorKind::Limit => wit::ErrorKind::Limit,
            ErrorKind::Internal => wit::ErrorKind::Internal,
        };
        wit::Error { kind, message: e.message }
    }
}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        let kind = match e.kind {
            wit::ErrorKind::InvalidConfig => ErrorKind::InvalidConfig,
            wit::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            wit::ErrorKind::Limit => ErrorKind::Limit,
            wit::ErrorKind::Internal => ErrorKind::Internal,
        };
        Self { kind, message: e.message }
    }
}
