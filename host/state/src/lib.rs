//! Operator state kept in fjall, and durable checkpoint storage (manifests and state files).
