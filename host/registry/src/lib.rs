//! Operator packages in OCI registries.
