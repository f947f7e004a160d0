//! Logging into the host's structured log: `flumen_sdk::info!("rows: {n}")`.

use crate::bindings::flumen::dataflow::log as wit;

pub use wit::Level;

/// Whether a message at `level` would be recorded.
pub fn enabled(level: Level) -> bool {
    wit::enabled(level)
}

/// Records `message` at `level`.
pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}

#[doc(hidden)]
pub fn __log_fmt(level: Level, args: std::fmt::Arguments<'_>) {
    if wit::enabled(level) {
        wit::log(level, &args.to_string());
    }
}

#[macro_export]
macro_rules! trace { ($($t:tt)*) => { $crate::log::__log_fmt($crate::log::Level::Trace, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::__log_fmt($crate::log::Level::Debug, format_args!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::__log_fmt($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::__log_fmt($crate::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::__log_fmt($crate::log::Level::Error, format_args!($($t)*)) } }
