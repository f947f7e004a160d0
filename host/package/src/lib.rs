//! Operator packages.
