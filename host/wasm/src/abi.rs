//! Host-side mirrors of the WIT records that are not schemas, with the
//! canonical-ABI derives: errors, log levels, the `open` context and plan,
//! borrowed types for lowering batches into a guest (one copy, made by
//! wasmtime), and lazily read types for lifting batches out of a guest
//! (bounds checked before a byte is copied). Schemas are
//! `flumen_batch::wire`'s types.

use flumen_batch::ColumnView;
use wasmtime::component::{ComponentType, Lift, Lower, WasmList};

// The schema records (`time-unit` … `schema`) are `flumen-batch`'s `wire`
// types, with the canonical-ABI derives of its `wasmtime` feature: the one
// mapping to and from Arrow lives there, shared with the guest SDK.
pub use flumen_batch::wire::Schema as WitSchema;

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
#[allow(dead_code, reason = "some variants only arrive by lifting from a guest")]
pub enum WitErrorKind {
    #[component(name = "invalid-config")]
    InvalidConfig,
    #[component(name = "invalid-input")]
    InvalidInput,
    #[component(name = "limit")]
    Limit,
    #[component(name = "internal")]
    Internal,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct WitError {
    pub kind: WitErrorKind,
    pub message: String,
}

/// The `transform.operator-plan` record (0.2) that `open` returns.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct WitPlan {
    pub schema: WitSchema,
    pub carried: Vec<Option<u32>>,
    pub reads: Vec<Option<Vec<u32>>>,
}

/// The `types.selection` variant (0.2), lifted lazily with an emitted batch.
#[derive(ComponentType, Lift)]
#[component(variant)]
#[allow(missing_debug_implementations, reason = "WasmList has no Debug")]
pub enum SelectionOut {
    #[component(name = "all")]
    All,
    #[component(name = "mask")]
    Mask(WasmList<u8>),
    #[component(name = "indices")]
    Indices(WasmList<u32>),
}

/// The `transform.context` record, lowered into the guest at `open`.
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct WitContext {
    #[component(name = "operator-id")]
    pub operator_id: String,
    pub subtask: u32,
    pub parallelism: u32,
    pub config: String,
    pub inputs: Vec<WitSchema>,
}

// ---- batches into a guest: borrowed, copied once by the canonical ABI ----

#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
pub struct ValidityIn<'a> {
    pub bits: &'a [u8],
    pub offset: u64,
}

#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
pub struct ColumnIn<'a> {
    pub len: u64,
    pub offset: u64,
    pub validity: Option<ValidityIn<'a>>,
    pub buffers: &'a [&'a [u8]],
}

#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
pub struct BatchIn<'a> {
    #[component(name = "num-rows")]
    pub num_rows: u64,
    pub columns: &'a [ColumnIn<'a>],
}

/// Builds the borrowed column records for `views`; `buffers` must hold each view's buffer list.
pub fn columns_in<'a>(views: &'a [ColumnView<'a>]) -> Vec<ColumnIn<'a>> {
    views
        .iter()
        .map(|v| ColumnIn {
            len: v.len,
            offset: v.offset,
            validity: v.validity.map(|(bits, offset)| ValidityIn { bits, offset }),
            buffers: &v.buffers,
        })
        .collect()
}

// ---- batches out of a guest: lifted lazily, read where they lie ----
// (no Debug: `WasmList` has none)

#[derive(ComponentType, Lift)]
#[component(record)]
#[allow(missing_debug_implementations, reason = "WasmList has no Debug")]
pub struct ValidityOut {
    pub bits: WasmList<u8>,
    pub offset: u64,
}

#[derive(ComponentType, Lift)]
#[component(record)]
#[allow(missing_debug_implementations, reason = "WasmList has no Debug")]
pub struct ColumnOut {
    pub len: u64,
    pub offset: u64,
    pub validity: Option<ValidityOut>,
    pub buffers: WasmList<WasmList<u8>>,
}

#[derive(ComponentType, Lift)]
#[component(record)]
#[allow(missing_debug_implementations, reason = "WasmList has no Debug")]
pub struct BatchOut {
    #[component(name = "num-rows")]
    pub num_rows: u64,
    pub columns: WasmList<ColumnOut>,
}

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[component(enum)]
#[repr(u8)]
#[allow(dead_code, reason = "variants only arrive by lifting from a guest")]
pub enum WitLevel {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}
