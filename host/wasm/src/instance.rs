//! Operator instances: linking a component against the capabilities its job
//! grants, instantiating it with limits, and calling `open`/`process`/`finish`
//! (and the optional exports: `snapshot`'s `save`/`restore`, `event-time`'s
//! `on-watermark`).
//!
//! Each instance has its own `Store` with a memory cap (a `ResourceLimiter`),
//! a wall-clock deadline per call (epoch interruption: the guest yields to the
//! async executor at every tick and traps once the deadline has passed), and
//! caps on the batches and bytes it may emit per call. Any failure of a call
//! poisons the instance; the engine's failure policy decides what comes next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use flumen_batch::{ColumnParts, FlatBatch};
use flumen_types::inference::InferenceService;
use flumen_types::{HostMemoryBudget, HostMemoryCharge, OperatorLimits};
use wasmtime::component::ResourceTable;
use wasmtime::component::{Component, ComponentExportIndex, Func, InstancePre, Linker, TypedFunc, WasmList};
use wasmtime::{Store, StoreContextMut, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::abi::{
    self, BatchIn, BatchOut, ColumnOut, SelectionOut, WitContext, WitError, WitErrorKind, WitLevel, WitPlan, WitSchema,
};
use crate::blobs::BlobScope;
use crate::shape::{Selection, Shape};
use crate::state::StateHandle;
use crate::{CallError, CallErrorKind, LoadedComponent, WasmError, WasmRuntime};
use flumen_types::BlobPin;

/// The WIT package this host implements, and its newest version.
pub const WIT_PACKAGE: &str = "flumen:dataflow";
pub const WIT_VERSION: &str = WitVersion::V0_2.as_str();

/// The versions of the contract this host runs, side by side, oldest first.
/// A component targets exactly one; `0.x.y` links wherever `0.x.0` does
/// (semver: in 0.x the minor number is the breaking one).
pub const WIT_VERSIONS: &[&str] = &[WitVersion::V0_1.as_str(), WitVersion::V0_2.as_str()];

/// The contract version a component targets, read from its `transform` export
/// (and every `flumen:dataflow` import must agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WitVersion {
    /// Every column in, every column out.
    V0_1,
    /// Projection, carried columns with selections, batch state calls.
    V0_2,
}

impl WitVersion {
    /// The version this host links for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_1 => "0.1.0",
            WitVersion::V0_2 => "0.2.0",
        }
    }

    /// The version a `flumen:dataflow` name's `@…` suffix targets, if this host runs it.
    pub(crate) fn parse(version: &str) -> Option<Self> {
        let mut parts = version.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some("1")) => Some(WitVersion::V0_1),
            (Some("0"), Some("2")) => Some(WitVersion::V0_2),
            _ => None,
        }
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{WIT_PACKAGE}@{}", self.as_str())
    }
}

/// Bytes of stdout and of stderr kept per instance. Rust's std writes panic
/// messages to stderr, so a trap's error can quote them; a guest that writes
/// more than this traps, so output cannot grow the host's memory.
pub const GUEST_STDIO_BYTES_MAX: usize = 64 * 1024;

/// Host capabilities a job can grant an operator. `types` and `output` are
/// always linked. WASI 0.2 is linked narrowly (language runtimes call it on
/// start-up): no files, no sockets, no environment; stdout and stderr are
/// captured in bounded buffers; the insecure random seed is fixed per
/// operator instance so hash maps behave the same on every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities {
    pub log: bool,
    pub state: bool,
    pub blobs: bool,
    pub inference: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self { log: true, state: false, blobs: false, inference: false }
    }
}

/// Capability names a job spec may list, with what each links.
pub const CAPABILITIES: &[(&str, &str)] = &[
    ("log", "structured logging into the host's log"),
    ("state", "keyed and operator-wide state, checkpointed with the job"),
    ("blobs", "read, make and retain large objects by reference"),
    ("inference", "run models from the job's model repository, batched with every other caller (0.2)"),
];

/// What an instance learns when it opens.
#[derive(Debug, Clone)]
pub struct OpenContext {
    pub operator_id: String,
    pub subtask: u32,
    pub parallelism: u32,
    /// The operator's config as JSON text.
    pub config_json: String,
    pub inputs: Vec<SchemaRef>,
    /// The subtask's state store, for an operator granted `state`.
    pub state: Option<StateHandle>,
    /// The job's blob store as this subtask sees it: checks the references
    /// every instance emits, and serves the `blobs` capability.
    pub blobs: Option<BlobScope>,
    /// The job's models, for an operator granted `inference`.
    pub inference: Option<Arc<dyn InferenceService>>,
}

/// A linked, pre-instantiated operator component: instances are cheap to make from it.
#[derive(Clone)]
pub struct OperatorFactory {
    runtime: WasmRuntime,
    pre: InstancePre<HostState>,
    exports: Exports,
    limits: OperatorLimits,
    operator_id: Arc<str>,
    version: WitVersion,
}

impl OperatorFactory {
    /// The limits every instance of this operator runs under.
    pub fn limits(&self) -> &OperatorLimits {
        &self.limits
    }
}

impl std::fmt::Debug for OperatorFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorFactory").field("operator", &self.operator_id).finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
struct Exports {
    open: ComponentExportIndex,
    process: ComponentExportIndex,
    finish: ComponentExportIndex,
    /// The optional `snapshot` interface: (`save`, `restore`).
    snapshot: Option<(ComponentExportIndex, ComponentExportIndex)>,
    /// The optional `event-time` interface: `on-watermark`.
    on_watermark: Option<ComponentExportIndex>,
}

impl OperatorFactory {
    /// Checks that `component` is an operator (exports `transform`) and imports
    /// only what `capabilities` grants, then links and pre-instantiates it.
    pub fn new(
        runtime: &WasmRuntime,
        component: &LoadedComponent,
        operator_id: &str,
        capabilities: Capabilities,
        limits: OperatorLimits,
    ) -> Result<Self, WasmError> {
        let engine = runtime.engine();
        let component = &component.component;
        let world_err = |message: String| WasmError::World { operator: operator_id.to_string(), message };
        let memory_mb_max = runtime.config().memory_bytes_max as u64 >> 20;
        if limits.memory_mb > memory_mb_max {
            return Err(WasmError::Limit {
                operator: operator_id.to_string(),
                message: format!(
                    "`limits.memory_mb = {}` is over the most an instance can have, {memory_mb_max} MiB",
                    limits.memory_mb
                ),
            });
        }
        let (version, exports) = find_exports(engine, component).map_err(world_err)?;
        check_imports(engine, component, capabilities, version).map_err(world_err)?;

        let linker = runtime.linker(version, capabilities, || build_linker(engine, version, capabilities))?;
        // Anything else (a WASI proposal such as wasi:http, say) is not provided:
        // linking fails here, naming the import, before any data flows.
        let pre = linker.instantiate_pre(component).map_err(|e| {
            world_err(format!(
                "cannot be linked: {e:#}; operators get only the `operator` world and WASI 0.2 without I/O"
            ))
        })?;
        Ok(Self { runtime: runtime.clone(), pre, exports, limits, operator_id: operator_id.into(), version })
    }

    pub fn operator_id(&self) -> &str {
        &self.operator_id
    }

    /// Makes a fresh instance and opens it. The instance knows its output schema afterwards.
    pub async fn instantiate(&self, ctx: &OpenContext) -> Result<OperatorInstance, CallError> {
        let label: Arc<str> = format!("{}[{}]", ctx.operator_id, ctx.subtask).into();
        let stdout = MemoryOutputPipe::new(GUEST_STDIO_BYTES_MAX);
        let stderr = MemoryOutputPipe::new(GUEST_STDIO_BYTES_MAX);
        // Checked against the runtime's maximum in `new`: never silently lower than configured.
        let memory_bytes = usize::try_from(self.limits.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let state = HostState {
            limits: GaugedLimits::new(
                StoreLimitsBuilder::new()
                    .memory_size(memory_bytes)
                    .instances(crate::runtime::CORE_INSTANCES_PER_COMPONENT as usize)
                    .tables(16)
                    .memories(4)
                    .table_elements(1_000_000)
                    .trap_on_grow_failure(true)
                    .build(),
            ),
            label: label.clone(),
            wasi: WasiCtxBuilder::new()
                .stdout(stdout)
                .stderr(stderr.clone())
                .insecure_random_seed(seed_of(&label))
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
            stderr,
            stderr_mark: 0,
            last_error_log: None,
            shape: None,
            computed_fields: 0,
            input: None,
            outputs: Vec::new(),
            out_bytes: 0,
            out_bytes_max: self.limits.output_mb_per_call.saturating_mul(1 << 20),
            out_batches_max: self.limits.output_batches_per_call,
            out_rows: 0,
            out_rows_max: self.limits.output_rows_per_call,
            emit_failure: None,
            deadline: Instant::now(),
            bytes_in: 0,
            bytes_out: 0,
            state: ctx.state.clone(),
            blobs: ctx.blobs.clone(),
            inference: ctx.inference.clone(),
            call_pins: Vec::new(),
            blob_bytes_read: 0,
            blob_bytes_created: 0,
            host_memory: HostMemoryBudget::new(label.to_string(), self.limits.host_memory_mb.saturating_mul(1 << 20)),
            returned: None,
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_hostcall_fuel(hostcall_fuel(&self.limits));
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let timeout = Duration::from_millis(self.limits.call_timeout_ms);
        let fail = |kind: CallErrorKind, message: String| CallError { operator: label.to_string(), kind, message };
        store.data_mut().deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(&label, e, "instantiating", &self.limits, store.data()))?;
        let get = |store: &mut Store<HostState>, idx: &ComponentExportIndex, name: &str| {
            instance
                .get_func(&mut *store, idx)
                .ok_or_else(|| fail(CallErrorKind::Trap, format!("export `{name}` vanished")))
        };
        let open = get(&mut store, &self.exports.open, "open")?;
        let process = get(&mut store, &self.exports.process, "process")?;
        let finish = get(&mut store, &self.exports.finish, "finish")?;
        let snapshot = match &self.exports.snapshot {
            Some((save, restore)) => {
                let save = get(&mut store, save, "save")?
                    .typed::<(), (Result<Vec<u8>, WitError>,)>(&store)
                    .map_err(|e| fail(CallErrorKind::BadOutput, format!("`save` has the wrong signature: {e:#}")))?;
                let restore = get(&mut store, restore, "restore")?
                    .typed::<(Vec<u8>,), (Result<(), WitError>,)>(&store)
                    .map_err(|e| fail(CallErrorKind::BadOutput, format!("`restore` has the wrong signature: {e:#}")))?;
                Some((save, restore))
            }
            None => None,
        };
        let on_watermark = match &self.exports.on_watermark {
            Some(idx) => {
                Some(get(&mut store, idx, "on-watermark")?.typed::<(i64,), (Result<(), WitError>,)>(&store).map_err(
                    |e| fail(CallErrorKind::BadOutput, format!("`on-watermark` has the wrong signature: {e:#}")),
                )?)
            }
            None => None,
        };
        // Type-check once; calls below use the checked functions.
        let wrong_open =
            |e: wasmtime::Error| fail(CallErrorKind::BadOutput, format!("`open` has the wrong signature: {e:#}"));
        let typed_open = match self.version {
            WitVersion::V0_1 => {
                Open::V0_1(open.typed::<(WitContext,), (Result<WitSchema, WitError>,)>(&store).map_err(wrong_open)?)
            }
            WitVersion::V0_2 => {
                Open::V0_2(open.typed::<(WitContext,), (Result<WitPlan, WitError>,)>(&store).map_err(wrong_open)?)
            }
        };
        process
            .typed::<(u32, BatchIn<'static>), (Result<(), WitError>,)>(&store)
            .map_err(|e| fail(CallErrorKind::BadOutput, format!("`process` has the wrong signature: {e:#}")))?;
        let typed_finish = finish
            .typed::<(), (Result<(), WitError>,)>(&store)
            .map_err(|e| fail(CallErrorKind::BadOutput, format!("`finish` has the wrong signature: {e:#}")))?;

        let inputs = ctx
            .inputs
            .iter()
            .map(|s| WitSchema::from_arrow(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(CallErrorKind::BadOutput, format!("input schema: {e}")))?;
        let wit_ctx = WitContext {
            operator_id: ctx.operator_id.clone(),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
            config: ctx.config_json.clone(),
            inputs,
        };
        store.data_mut().deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        let classify_open =
            |e: wasmtime::Error, store: &Store<HostState>| classify(&label, e, "open", &self.limits, store.data());
        let (schema, plan) = match typed_open {
            Open::V0_1(open) => {
                let (result,) = open.call_async(&mut store, (wit_ctx,)).await.map_err(|e| classify_open(e, &store))?;
                (result.map_err(|e| guest_error(&label, "open", e))?, None)
            }
            Open::V0_2(open) => {
                let (result,) = open.call_async(&mut store, (wit_ctx,)).await.map_err(|e| classify_open(e, &store))?;
                let mut plan = result.map_err(|e| guest_error(&label, "open", e))?;
                (std::mem::take(&mut plan.schema), Some(plan))
            }
        };
        let schema = schema
            .into_arrow()
            .map_err(|e| fail(CallErrorKind::BadOutput, format!("`open` returned a malformed schema: {e}")))?;
        let shape = match plan {
            None => Shape::all_computed(schema.clone(), ctx.inputs.len()),
            Some(plan) => Shape::from_plan(schema.clone(), &plan, &ctx.inputs)
                .map_err(|e| fail(CallErrorKind::BadOutput, format!("`open` returned an unusable plan: {e}")))?,
        };
        let fields = flumen_batch::flatten_schema(&shape.computed)
            .map_err(|e| fail(CallErrorKind::BadOutput, format!("`open` returned an unusable schema: {e}")))?
            .len();
        let data = store.data_mut();
        data.shape = Some(Arc::new(shape));
        data.computed_fields = fields;
        let memory_at_open = data.limits.memory_bytes;
        Ok(OperatorInstance {
            memory_at_open,
            process_calls: 0,
            store,
            process,
            finish: typed_finish,
            snapshot,
            on_watermark,
            schema,
            timeout,
            label,
            limits: self.limits.clone(),
        })
    }
}

/// One live operator instance with its own store.
pub struct OperatorInstance {
    store: Store<HostState>,
    /// Linear memory (bytes, the largest of its memories) once `open` returned.
    memory_at_open: usize,
    /// `process` calls made so far.
    process_calls: u64,
    process: Func,
    finish: TypedFunc<(), (Result<(), WitError>,)>,
    snapshot: Option<SnapshotFuncs>,
    on_watermark: Option<OnWatermarkFunc>,
    schema: SchemaRef,
    timeout: Duration,
    label: Arc<str>,
    limits: OperatorLimits,
}

impl std::fmt::Debug for OperatorInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorInstance").field("operator", &self.label).finish_non_exhaustive()
    }
}

/// Bytes that crossed the boundary of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundaryBytes {
    /// Bytes copied into the guest (input buffers).
    pub bytes_in: u64,
    /// Bytes copied out of the guest (emitted buffers).
    pub bytes_out: u64,
    /// Blob bytes copied into the guest (`blobs` reads).
    pub blob_bytes_read: u64,
    /// Blob bytes copied out of the guest (`blobs` create and writes).
    pub blob_bytes_created: u64,
}

impl OperatorInstance {
    /// The schema of every batch this instance emits.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Which of the `columns` top-level columns of input `port` this operator
    /// needs when consumers need the output columns flagged in
    /// `output_needed`: the columns it reads and those it carries into a
    /// needed output. A 0.1 component needs every column.
    pub fn input_needed(&self, port: u32, columns: usize, output_needed: &[bool]) -> Vec<bool> {
        match &self.store.data().shape {
            Some(shape) => shape.input_needed(port, columns, output_needed),
            None => vec![true; columns],
        }
    }

    /// Whether this instance should be replaced by a fresh one before its
    /// next batch (`limits.recycle_after_calls`, `limits.recycle_memory_pct`):
    /// the reason, for the log, or `None`. Some language runtimes keep memory
    /// they will never use again (componentize-py leaks what crosses the
    /// boundary), so a long run recycles instead of reaching `memory_mb`.
    pub fn recycle_reason(&self) -> Option<String> {
        let limits = &self.limits;
        if limits.recycle_after_calls > 0 && self.process_calls >= limits.recycle_after_calls {
            return Some(format!("after {} calls (limit `recycle_after_calls`)", self.process_calls));
        }
        if limits.recycle_memory_pct == 0 {
            return None;
        }
        let cap = usize::try_from(limits.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let now = self.store.data().limits.memory_bytes;
        let room = cap.saturating_sub(self.memory_at_open);
        let grown = now.saturating_sub(self.memory_at_open);
        // `grown / room > pct / 100`, without overflow or floats.
        if room > 0 && (grown as u128) * 100 > (room as u128) * u128::from(limits.recycle_memory_pct) {
            return Some(format!(
                "its memory grew from {} to {} MiB after {} calls, past {}% of the room to its cap of {} MiB \
                 (limit `recycle_memory_pct`)",
                self.memory_at_open >> 20,
                now >> 20,
                self.process_calls,
                limits.recycle_memory_pct,
                limits.memory_mb
            ));
        }
        None
    }

    /// The instance's linear memory now, in bytes (the largest of its memories).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory_bytes
    }

    pub fn boundary_bytes(&self) -> BoundaryBytes {
        let d = self.store.data();
        BoundaryBytes {
            bytes_in: d.bytes_in,
            bytes_out: d.bytes_out,
            blob_bytes_read: d.blob_bytes_read,
            blob_bytes_created: d.blob_bytes_created,
        }
    }

    /// Hands `batch` (arriving on input `port`) to the guest: only the
    /// columns it reads are lowered, and the batch is kept for the columns
    /// it carries. Returns what it emitted.
    pub async fn process(&mut self, port: u32, batch: &RecordBatch) -> Result<Vec<RecordBatch>, CallError> {
        let shape = self.store.data().shape.clone();
        let projected = match shape.as_deref().map(|s| s.project(port, batch)).transpose() {
            Ok(p) => p.flatten(),
            Err(message) => {
                return Err(CallError { operator: self.label.to_string(), kind: CallErrorKind::BadOutput, message });
            }
        };
        let lowered = projected.as_ref().unwrap_or(batch);
        let flat = FlatBatch::new(lowered);
        let views = flat.views();
        let columns = abi::columns_in(&views);
        let arg = BatchIn { num_rows: flat.num_rows() as u64, columns: &columns };
        self.begin_call();
        let data = self.store.data_mut();
        data.bytes_in += views.iter().map(|v| v.byte_len() as u64).sum::<u64>();
        if shape.as_deref().is_some_and(Shape::carries) {
            data.input = Some(batch.clone());
        }
        #[allow(unsafe_code)]
        // SAFETY: `OperatorFactory::instantiate` type-checked `process` against
        // exactly these parameter and result types (with a 'static lifetime,
        // which does not change the component type); this is how wasmtime's
        // own bindings call functions with borrowed arguments.
        let typed = unsafe { TypedFunc::<(u32, BatchIn<'_>), (Result<(), WitError>,)>::new_unchecked(self.process) };
        let result = typed.call_async(&mut self.store, (port, arg)).await;
        self.process_calls += 1;
        self.end_call("process", result)
    }

    /// Tells the guest its inputs ended; returns what it emitted.
    pub async fn finish(&mut self) -> Result<Vec<RecordBatch>, CallError> {
        self.begin_call();
        let result = self.finish.call_async(&mut self.store, ()).await;
        self.end_call("finish", result)
    }

    /// Whether the component exports `event-time` (acts on watermarks).
    pub fn has_event_time(&self) -> bool {
        self.on_watermark.is_some()
    }

    /// Tells the guest that event time reached `watermark` on every input
    /// (`i64::MAX` once, at the end of input); returns what it emitted, under
    /// the same caps and deadline as `process`. Emits nothing and calls
    /// nothing when the component does not export `event-time`.
    pub async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>, CallError> {
        let Some(on_watermark) = self.on_watermark else { return Ok(Vec::new()) };
        self.begin_call();
        let result = on_watermark.call_async(&mut self.store, (watermark,)).await;
        self.end_call("on-watermark", result)
    }

    /// Gives this instance the subtask's state store (instances opened before
    /// the store existed, at prepare time, get it here).
    pub fn set_state(&mut self, state: Option<StateHandle>) {
        self.store.data_mut().state = state;
    }

    /// Gives this instance the subtask's blob scope (as [`Self::set_state`]).
    pub fn set_blobs(&mut self, blobs: Option<BlobScope>) {
        self.store.data_mut().blobs = blobs;
    }

    /// Whether the component exports `snapshot` (keeps state in its own memory).
    pub fn has_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Asks the guest for the bytes of its in-memory state (at a checkpoint
    /// barrier). `None` when the component does not export `snapshot`.
    pub async fn save(&mut self) -> Result<Option<Vec<u8>>, CallError> {
        let Some((save, _)) = self.snapshot else { return Ok(None) };
        self.begin_call();
        let result = save.call_async(&mut self.store, ()).await;
        let (returned,) = result.map_err(|e| classify(&self.label, e, "save", &self.limits, self.store.data()))?;
        self.check_no_output("save")?;
        returned.map(Some).map_err(|e| guest_error(&self.label, "save", e))
    }

    /// Gives the guest back the bytes `save` returned (once, after `open`, on resume).
    pub async fn restore(&mut self, data: &[u8]) -> Result<(), CallError> {
        let Some((_, restore)) = self.snapshot else {
            return Err(CallError {
                operator: self.label.to_string(),
                kind: CallErrorKind::BadOutput,
                message: "the checkpoint holds a snapshot of this operator, but its component does not export \
                          `snapshot` (was it replaced by a different component?)"
                    .into(),
            });
        };
        self.begin_call();
        let result = restore.call_async(&mut self.store, (data.to_vec(),)).await;
        let (returned,) = result.map_err(|e| classify(&self.label, e, "restore", &self.limits, self.store.data()))?;
        self.check_no_output("restore")?;
        returned.map_err(|e| guest_error(&self.label, "restore", e))
    }

    /// `save` and `restore` must not emit: their output would belong to no batch.
    fn check_no_output(&mut self, what: &str) -> Result<(), CallError> {
        let data = self.store.data_mut();
        if !data.outputs.is_empty() || data.emit_failure.is_some() {
            data.outputs.clear();
            return Err(CallError {
                operator: self.label.to_string(),
                kind: CallErrorKind::BadOutput,
                message: format!("`{what}` emitted batches; only `process`, `on-watermark` and `finish` may emit"),
            });
        }
        Ok(())
    }

    fn begin_call(&mut self) {
        let data = self.store.data_mut();
        data.deadline = Instant::now() + self.timeout;
        data.outputs.clear();
        data.out_bytes = 0;
        data.out_rows = 0;
        data.emit_failure = None;
        data.call_pins.clear();
        data.returned = None;
        data.stderr_mark = data.stderr.contents().len();
        data.last_error_log = None;
        self.store.set_epoch_deadline(1);
    }

    fn end_call(
        &mut self,
        what: &str,
        result: wasmtime::Result<(Result<(), WitError>,)>,
    ) -> Result<Vec<RecordBatch>, CallError> {
        // Blobs made during the call were pinned by the batches that carry
        // them (at emit); those that no batch carries are released now.
        let _made = std::mem::take(&mut self.store.data_mut().call_pins);
        self.store.data_mut().returned = None;
        self.store.data_mut().input = None;
        let (returned,) = result.map_err(|e| classify(&self.label, e, what, &self.limits, self.store.data()))?;
        let data = self.store.data_mut();
        // An emit that failed fails the call, even if the guest ignored the error.
        if let Some((kind, message)) = data.emit_failure.take() {
            return Err(CallError { operator: self.label.to_string(), kind, message });
        }
        returned.map_err(|e| guest_error(&self.label, what, e))?;
        Ok(std::mem::take(&mut data.outputs))
    }
}

/// The store's limits, plus the high-water mark of its linear memory (the
/// largest memory's size, in bytes), which decides when to recycle.
struct GaugedLimits {
    inner: StoreLimits,
    memory_bytes: usize,
}

impl GaugedLimits {
    fn new(inner: StoreLimits) -> Self {
        Self { inner, memory_bytes: 0 }
    }
}

impl wasmtime::ResourceLimiter for GaugedLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes = self.memory_bytes.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

pub(crate) struct HostState {
    limits: GaugedLimits,
    label: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    /// Length of `stderr` when the current call began.
    stderr_mark: usize,
    /// The last message the guest logged at error level during the current
    /// call: what a trap quotes when the guest wrote nothing to stderr (a C
    /// guest without stdio logs its reason, then aborts).
    last_error_log: Option<String>,
    /// What the operator reads and carries; its output schema (set by `open`).
    shape: Option<Arc<Shape>>,
    /// Fields of the computed schema in pre-order: the column count every emitted batch must have.
    computed_fields: usize,
    /// The batch being processed, while `process` runs, when the operator carries columns from it.
    input: Option<RecordBatch>,
    outputs: Vec<RecordBatch>,
    out_bytes: u64,
    out_bytes_max: u64,
    out_batches_max: u32,
    /// Rows emitted during the current call, and the most allowed.
    out_rows: u64,
    out_rows_max: u64,
    emit_failure: Option<(CallErrorKind, String)>,
    deadline: Instant,
    bytes_in: u64,
    bytes_out: u64,
    state: Option<StateHandle>,
    blobs: Option<BlobScope>,
    inference: Option<Arc<dyn InferenceService>>,
    /// Blobs the guest made during the current call, alive until it returns.
    call_pins: Vec<BlobPin>,
    pub(crate) blob_bytes_read: u64,
    pub(crate) blob_bytes_created: u64,
    /// Host memory held on the guest's behalf (`limits.host_memory_mb`).
    host_memory: HostMemoryBudget,
    /// The charge for what the last host call returned, held until the guest
    /// has it (released at the next host call that returns bytes, or when
    /// the guest call ends).
    returned: Option<HostMemoryCharge>,
}

/// `open`, typed for the version the component targets.
enum Open {
    V0_1(TypedFunc<(WitContext,), (Result<WitSchema, WitError>,)>),
    V0_2(TypedFunc<(WitContext,), (Result<WitPlan, WitError>,)>),
}

type SnapshotFuncs = (TypedFunc<(), (Result<Vec<u8>, WitError>,)>, TypedFunc<(Vec<u8>,), (Result<(), WitError>,)>);
type OnWatermarkFunc = TypedFunc<(i64,), (Result<(), WitError>,)>;

impl HostState {
    pub(crate) fn state(&self) -> Option<&StateHandle> {
        self.state.as_ref()
    }

    pub(crate) fn blobs(&self) -> Option<&BlobScope> {
        self.blobs.as_ref()
    }

    pub(crate) fn inference(&self) -> Option<&Arc<dyn InferenceService>> {
        self.inference.as_ref()
    }

    /// When the current guest call must end.
    pub(crate) fn call_deadline(&self) -> Instant {
        self.deadline
    }

    pub(crate) fn host_memory(&self) -> &HostMemoryBudget {
        &self.host_memory
    }

    /// Keeps `charge` until the guest has what the current host call returns.
    pub(crate) fn hold_returned(&mut self, charge: HostMemoryCharge) {
        self.returned = Some(charge);
    }

    /// Releases the charge of what an earlier host call returned (the guest has it by now).
    pub(crate) fn release_returned(&mut self) {
        self.returned = None;
    }

    pub(crate) fn hold_for_call(&mut self, pin: BlobPin) {
        self.call_pins.push(pin);
    }

    pub(crate) fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A fixed seed per instance label: the same operator sees the same hash-map
/// seed on every run, so replays behave alike.
fn seed_of(label: &str) -> u128 {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in label.bytes() {
        h = (h ^ u128::from(b)).wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}

#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("call deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// What the guest wrote to stderr during the current call, cut to its last
/// few lines (a Rust panic message, typically).
fn stderr_tail(state: &HostState) -> Option<String> {
    let all = state.stderr.contents();
    let new = all.get(state.stderr_mark..)?;
    let text = String::from_utf8_lossy(new);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE")).collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n");
    Some(tail.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect())
}

/// Hostcall fuel: the bytes (as wasmtime counts them) a guest may hand the
/// host in one host call before wasmtime refuses to lift them. It must let
/// through everything the limits allow (an emitted batch of up to
/// `output_mb_per_call`, and the column and buffer lists around it), and
/// never fall below wasmtime's own default, which the state and blob host
/// calls, with their own smaller limits, rely on.
pub const HOSTCALL_FUEL_MIN: usize = 128 << 20;

/// Fuel beyond `output_mb_per_call` for the lists that describe a batch
/// (wasmtime counts each lazily lifted list at the host's size of an element).
const HOSTCALL_FUEL_SLACK: u64 = 16 << 20;

fn hostcall_fuel(limits: &OperatorLimits) -> usize {
    let wanted = limits.output_mb_per_call.saturating_mul(1 << 20).saturating_add(HOSTCALL_FUEL_SLACK);
    usize::try_from(wanted).unwrap_or(usize::MAX).max(HOSTCALL_FUEL_MIN)
}

/// Whether `e` is wasmtime refusing to lift more than the hostcall fuel allows
/// (its error type is private; its message is stable).
fn is_fuel_exhausted(e: &wasmtime::Error) -> bool {
    e.chain().any(|c| c.to_string().contains("fuel allocated for hostcalls has been exhausted"))
}

/// The message for a guest that handed the host more than the hostcall fuel in one call.
fn fuel_message(what: &str, limits: &OperatorLimits) -> String {
    format!(
        "`{what}` handed the host more than {} MiB in one host call (limit `output_mb_per_call` = {} MiB)",
        hostcall_fuel(limits) >> 20,
        limits.output_mb_per_call
    )
}

fn classify(label: &str, e: wasmtime::Error, what: &str, limits: &OperatorLimits, state: &HostState) -> CallError {
    let (kind, message) = if e.downcast_ref::<DeadlineExceeded>().is_some() {
        (
            CallErrorKind::Timeout,
            format!(
                "`{what}` ran past its deadline of {} ms and was interrupted (limit `call_timeout_ms`)",
                limits.call_timeout_ms
            ),
        )
    } else if let Some(pool) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        (
            CallErrorKind::Trap,
            format!(
                "cannot make another operator instance: {pool}; a process holds at most {} operator instances \
                 (`OPERATOR_INSTANCES_MAX`, plus {} spare slots for replacing failed ones)",
                flumen_types::OPERATOR_INSTANCES_MAX,
                flumen_types::INSTANCE_SLOTS_SPARE
            ),
        )
    } else if is_fuel_exhausted(&e) {
        (CallErrorKind::OutputLimit, fuel_message(what, limits))
    } else {
        let text = format!("{e:?}");
        if text.contains("forcing trap when growing memory") {
            (
                CallErrorKind::MemoryLimit,
                format!("`{what}` tried to grow memory past its cap of {} MiB (limit `memory_mb`)", limits.memory_mb),
            )
        } else {
            match stderr_tail(state) {
                Some(said) => {
                    let cause = e.root_cause().to_string();
                    (CallErrorKind::Trap, format!("`{what}` trapped: {said} ({cause})"))
                }
                None => match &state.last_error_log {
                    // The guest logged why at error level, then trapped (C's abort()).
                    Some(said) => {
                        let cause = e.root_cause().to_string();
                        (CallErrorKind::Trap, format!("`{what}` trapped: {said} ({cause})"))
                    }
                    None => (CallErrorKind::Trap, format!("`{what}` trapped: {}", text.trim())),
                },
            }
        }
    };
    CallError { operator: label.to_string(), kind, message }
}

fn guest_error(label: &str, what: &str, e: WitError) -> CallError {
    let kind = match e.kind {
        WitErrorKind::InvalidConfig => crate::GuestErrorKind::InvalidConfig,
        WitErrorKind::InvalidInput => crate::GuestErrorKind::InvalidInput,
        WitErrorKind::Limit => crate::GuestErrorKind::Limit,
        WitErrorKind::Internal => crate::GuestErrorKind::Internal,
    };
    CallError {
        operator: label.to_string(),
        kind: CallErrorKind::Guest(kind),
        message: format!("`{what}` failed: {}", e.message),
    }
}

fn level_enabled(level: WitLevel) -> bool {
    match level {
        WitLevel::Trace => tracing::enabled!(tracing::Level::TRACE),
        WitLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
        WitLevel::Info => tracing::enabled!(tracing::Level::INFO),
        WitLevel::Warn => tracing::enabled!(tracing::Level::WARN),
        WitLevel::Error => tracing::enabled!(tracing::Level::ERROR),
    }
}

fn host_log(mut store: StoreContextMut<'_, HostState>, (level, message): (WitLevel, String)) -> wasmtime::Result<()> {
    let mut message = message;
    if message.len() > flumen_types::LOG_MESSAGE_BYTES_MAX {
        let mut cut = flumen_types::LOG_MESSAGE_BYTES_MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("… (cut)");
    }
    let op = &*store.data().label;
    match level {
        WitLevel::Trace => tracing::trace!(operator = op, "{message}"),
        WitLevel::Debug => tracing::debug!(operator = op, "{message}"),
        WitLevel::Info => tracing::info!(operator = op, "{message}"),
        WitLevel::Warn => tracing::warn!(operator = op, "{message}"),
        WitLevel::Error => tracing::error!(operator = op, "{message}"),
    }
    if matches!(level, WitLevel::Error) {
        store.data_mut().last_error_log = Some(message);
    }
    Ok(())
}

/// `output.emit` of 0.1: every column computed, every row its own.
fn host_emit_v01(
    store: StoreContextMut<'_, HostState>,
    (batch,): (BatchOut,),
) -> wasmtime::Result<(Result<(), WitError>,)> {
    host_emit(store, (batch, SelectionOut::All))
}

/// `output.emit`: checks the batch's size against the per-call caps before
/// copying a byte, copies each buffer once into an aligned Arrow buffer,
/// validates it against the computed schema, and adds the carried columns
/// under the selection.
fn host_emit(
    mut store: StoreContextMut<'_, HostState>,
    (batch, selection): (BatchOut, SelectionOut),
) -> wasmtime::Result<(Result<(), WitError>,)> {
    let outcome = read_emitted(&mut store, batch, selection);
    let data = store.data_mut();
    Ok((match outcome {
        Ok(rb) => {
            data.outputs.push(rb);
            Ok(())
        }
        Err((kind, message)) => {
            let wit_kind =
                if kind == CallErrorKind::OutputLimit { WitErrorKind::Limit } else { WitErrorKind::InvalidInput };
            let err = WitError { kind: wit_kind, message: message.clone() };
            data.emit_failure.get_or_insert((kind, message));
            Err(err)
        }
    },))
}

/// Buffers one emitted column may have. Arrow layouts have at most three;
/// view types add data buffers. Stops a guest from making the host walk
/// millions of empty lists.
pub const BUFFERS_PER_COLUMN_MAX: usize = 1024;

/// One emitted column, its lists still in guest memory.
struct EmittedColumn {
    len: u64,
    offset: u64,
    validity: Option<(WasmList<u8>, u64)>,
    buffers: Vec<WasmList<u8>>,
}

fn read_emitted(
    store: &mut StoreContextMut<'_, HostState>,
    batch: BatchOut,
    selection: SelectionOut,
) -> Result<RecordBatch, (CallErrorKind, String)> {
    let bad = |m: String| (CallErrorKind::BadOutput, format!("emitted a malformed batch: {m}"));
    let limit = |m: String| (CallErrorKind::OutputLimit, m);
    let data = store.data();
    if data.emit_failure.is_some() {
        return Err(bad("an earlier emit in this call already failed".into()));
    }
    if data.outputs.len() as u64 >= u64::from(data.out_batches_max) {
        return Err(limit(format!(
            "emitted more than {} batches in one call (limit `output_batches_per_call`)",
            data.out_batches_max
        )));
    }
    if batch.num_rows > data.out_rows_max.saturating_sub(data.out_rows) {
        return Err(limit(format!(
            "emitted more than {} rows in one call (limit `output_rows_per_call`): a batch of {} rows after {}",
            data.out_rows_max, batch.num_rows, data.out_rows
        )));
    }
    let shape = data.shape.clone().ok_or_else(|| bad("emit before `open` returned".into()))?;
    let schema = shape.computed.clone();
    // Before the column count: a selection from an operator that carries
    // nothing is the mistake to name, not the columns it then lacks.
    shape.check_selects(matches!(selection, SelectionOut::All)).map_err(bad)?;
    let fields = data.computed_fields;
    if batch.columns.len() != fields {
        return Err(bad(format!("{} columns for a schema of {fields} fields (pre-order)", batch.columns.len())));
    }
    let out_limit = |e: wasmtime::Error, data: &HostState| {
        if is_fuel_exhausted(&e) {
            limit(format!(
                "emitted more than {} MiB in one call (limit `output_mb_per_call`)",
                data.out_bytes_max >> 20
            ))
        } else {
            bad(e.to_string())
        }
    };
    let columns: Vec<ColumnOut> = match batch.columns.iter(&mut *store).and_then(|c| c.collect()) {
        Ok(c) => c,
        Err(e) => return Err(out_limit(e, store.data())),
    };
    let mut lists: Vec<EmittedColumn> = Vec::with_capacity(columns.len());
    let mut total: u64 = 0;
    for c in columns {
        if c.buffers.len() > BUFFERS_PER_COLUMN_MAX {
            return Err(bad(format!("{} buffers in one column (at most {BUFFERS_PER_COLUMN_MAX})", c.buffers.len())));
        }
        let buffers: Vec<WasmList<u8>> = match c.buffers.iter(&mut *store).and_then(|b| b.collect()) {
            Ok(b) => b,
            Err(e) => return Err(out_limit(e, store.data())),
        };
        total += buffers.iter().map(|b| b.len() as u64).sum::<u64>();
        total += c.validity.as_ref().map_or(0, |v| v.bits.len() as u64);
        lists.push(EmittedColumn {
            len: c.len,
            offset: c.offset,
            validity: c.validity.map(|v| (v.bits, v.offset)),
            buffers,
        });
    }
    let selection_bytes = match &selection {
        SelectionOut::All => 0,
        SelectionOut::Mask(bits) => bits.len() as u64,
        SelectionOut::Indices(indices) => indices.len() as u64 * 4,
    };
    total += selection_bytes;
    let data = store.data();
    if data.out_bytes + total > data.out_bytes_max {
        return Err(limit(format!(
            "emitted more than {} MiB in one call (limit `output_mb_per_call`)",
            data.out_bytes_max >> 20
        )));
    }
    let rows_max = data.out_rows_max;
    let parts = lists
        .into_iter()
        .map(|c| ColumnParts {
            len: c.len,
            offset: c.offset,
            validity: c.validity.map(|(bits, off)| (arrow_buffer::Buffer::from(bits.as_le_slice(&*store)), off)),
            buffers: c.buffers.iter().map(|b| arrow_buffer::Buffer::from(b.as_le_slice(&*store))).collect(),
        })
        .collect();
    let rb = flumen_batch::assemble_batch_bounded(&schema, batch.num_rows, parts, rows_max).map_err(|e| match e {
        flumen_batch::BatchError::TooManyRows { .. } => limit(format!("{e} (limit `output_rows_per_call`)")),
        other => bad(other.to_string()),
    })?;
    // References in blob columns must be this job's, and are pinned for as long as the batch lives.
    let rb = if flumen_batch::pins::blob_columns(&schema).is_empty() {
        rb
    } else {
        let Some(scope) = store.data().blobs.as_ref() else {
            return Err(bad("emits blob references but this job has no blob store".into()));
        };
        flumen_batch::pins::pin_batch(scope.store(), rb, true)
            .map_err(|e| (CallErrorKind::BadOutput, format!("emitted a blob reference the host cannot accept: {e}")))?
    };
    // An operator that carries nothing sent `all` (checked above): its batch is the output.
    let rb = if shape.carries() {
        let selection = match selection {
            SelectionOut::All => Selection::All,
            SelectionOut::Mask(bits) => Selection::Mask(arrow_buffer::Buffer::from(bits.as_le_slice(&*store))),
            SelectionOut::Indices(indices) => Selection::Indices(indices.as_le_slice(&*store).to_vec()),
        };
        let moved = !matches!(selection, Selection::All);
        let out = shape.assemble(rb, selection, store.data().input.as_ref()).map_err(bad)?;
        // Carried blob columns gathered into new buffers are pinned again
        // (without re-checking: they came from a checked input batch).
        match store.data().blobs.as_ref() {
            Some(scope) if moved && !flumen_batch::pins::blob_columns(&shape.output).is_empty() => {
                flumen_batch::pins::pin_batch(scope.store(), out, false)
                    .map_err(|e| (CallErrorKind::BadOutput, format!("carrying blob references: {e}")))?
            }
            _ => out,
        }
    } else {
        rb
    };
    let data = store.data_mut();
    data.out_bytes += total;
    data.out_rows += batch.num_rows;
    data.bytes_out += total;
    Ok(rb)
}

/// The host functions of contract `version` that `capabilities` grant, and
/// WASI without I/O. Built once per process for each version and set of
/// capabilities (see [`WasmRuntime::linker`]).
fn build_linker(
    engine: &wasmtime::Engine,
    version: WitVersion,
    capabilities: Capabilities,
) -> Result<Linker<HostState>, WasmError> {
    let mut linker: Linker<HostState> = Linker::new(engine);
    let prefix = format!("{WIT_PACKAGE}/");
    let at = version.as_str();
    let link_err = |e: wasmtime::Error| WasmError::Engine(format!("linking host functions: {e:#}"));
    let mut output = linker.instance(&format!("{prefix}output@{at}")).map_err(link_err)?;
    match version {
        WitVersion::V0_1 => output.func_wrap("emit", host_emit_v01).map_err(link_err)?,
        WitVersion::V0_2 => output.func_wrap("emit", host_emit).map_err(link_err)?,
    }
    if capabilities.log {
        let mut log = linker.instance(&format!("{prefix}log@{at}")).map_err(link_err)?;
        log.func_wrap("enabled", |_store: StoreContextMut<'_, HostState>, (level,): (WitLevel,)| {
            Ok((level_enabled(level),))
        })
        .map_err(link_err)?;
        log.func_wrap("log", host_log).map_err(link_err)?;
    }
    if capabilities.state {
        let mut state = linker.instance(&format!("{prefix}state@{at}")).map_err(link_err)?;
        crate::state::link(&mut state).map_err(link_err)?;
        if version >= WitVersion::V0_2 {
            crate::state::link_batch_forms(&mut state).map_err(link_err)?;
        }
    }
    if capabilities.blobs {
        let mut blobs = linker.instance(&format!("{prefix}blobs@{at}")).map_err(link_err)?;
        crate::blobs::link(&mut blobs).map_err(link_err)?;
    }
    if capabilities.inference && version >= WitVersion::V0_2 {
        let mut inference = linker.instance(&format!("{prefix}inference@{at}")).map_err(link_err)?;
        crate::inference::link(&mut inference).map_err(link_err)?;
    }
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
    Ok(linker)
}

fn check_imports(
    engine: &wasmtime::Engine,
    component: &Component,
    caps: Capabilities,
    target: WitVersion,
) -> Result<(), String> {
    for (name, _) in component.component_type().imports(engine) {
        if let Some(rest) = name.strip_prefix(&format!("{WIT_PACKAGE}/")) {
            let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
            if WitVersion::parse(version) != Some(target) {
                return Err(format!(
                    "imports `{name}` but exports the operator interface of {target}; a component targets one \
                     version of the contract (this host runs {})",
                    known_versions()
                ));
            }
            match iface {
                "types" | "output" => {}
                "log" if caps.log => {}
                "state" if caps.state => {}
                "blobs" if caps.blobs => {}
                "inference" if caps.inference => {}
                "inference" => {
                    return Err(format!(
                        "imports capability `inference` ({name}) but its job spec does not grant it; add \"inference\" to its `capabilities`"
                    ));
                }
                "blobs" => {
                    return Err(format!(
                        "imports capability `blobs` ({name}) but its job spec does not grant it; add \"blobs\" to its `capabilities`"
                    ));
                }
                "state" => {
                    return Err(format!(
                        "imports capability `state` ({name}) but its job spec does not grant it; add \"state\" to its `capabilities`"
                    ));
                }
                "log" => {
                    return Err(format!(
                        "imports capability `log` ({name}) but its job spec does not grant it; add \"log\" to its `capabilities`"
                    ));
                }
                other => return Err(format!("imports `{other}` ({name}), which this host does not provide")),
            }
        } else if !name.starts_with("wasi:") {
            return Err(format!("imports `{name}`, which Flumen does not provide to operators"));
        }
    }
    Ok(())
}

/// The versions this host runs, for messages: `flumen:dataflow@0.1.0 and @0.2.0`.
fn known_versions() -> String {
    let at: Vec<String> = WIT_VERSIONS.iter().map(|v| format!("@{v}")).collect();
    format!("{WIT_PACKAGE}{}", at.join(" and "))
}

/// Finds the operator exports and the contract version they target.
fn find_exports(engine: &wasmtime::Engine, component: &Component) -> Result<(WitVersion, Exports), String> {
    let transform = format!("{WIT_PACKAGE}/transform@");
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let Some(iface) = names.iter().find(|n| n.starts_with(&transform)) else {
        return Err(format!(
            "does not export `{WIT_PACKAGE}/transform@{WIT_VERSION}` (or `{WIT_PACKAGE}/transform@{}`), so it is not \
             an operator (is it built for the `operator` world?); it exports: [{}]",
            WIT_VERSIONS[0],
            names.join(", ")
        ));
    };
    let found = &iface[transform.len()..];
    let Some(version) = WitVersion::parse(found) else {
        return Err(format!(
            "targets {WIT_PACKAGE}@{found} (it exports `{iface}`), a version of the contract this host does not \
             know; this host runs {}. Rebuild the operator against one of those, or run it on a newer Flumen",
            known_versions()
        ));
    };
    let (_, parent) = component.get_export(None, iface).ok_or_else(|| format!("export `{iface}` not found"))?;
    let func = |name: &str| {
        component
            .get_export(Some(&parent), name)
            .map(|(_, idx)| idx)
            .ok_or_else(|| format!("`{iface}` lacks the function `{name}`"))
    };
    let optional = |interface: &str| -> Result<Option<String>, String> {
        let prefix = format!("{WIT_PACKAGE}/{interface}@");
        match names.iter().find(|n| n.starts_with(&prefix)) {
            None => Ok(None),
            Some(n) if WitVersion::parse(&n[prefix.len()..]) == Some(version) => Ok(Some(n.clone())),
            Some(n) => Err(format!("exports `{n}` beside `{iface}`; a component targets one version of the contract")),
        }
    };
    // `snapshot` is optional: components built by other tools may leave it out.
    let snapshot = match optional("snapshot")? {
        None => None,
        Some(snap) => {
            let (_, parent) = component.get_export(None, &snap).ok_or_else(|| format!("export `{snap}` not found"))?;
            let f = |name: &str| {
                component
                    .get_export(Some(&parent), name)
                    .map(|(_, idx)| idx)
                    .ok_or_else(|| format!("`{snap}` lacks the function `{name}`"))
            };
            Some((f("save")?, f("restore")?))
        }
    };
    // `event-time` is optional too: only operators that act on event time need it.
    let on_watermark = match optional("event-time")? {
        None => None,
        Some(time) => {
            let (_, parent) = component.get_export(None, &time).ok_or_else(|| format!("export `{time}` not found"))?;
            let idx = component
                .get_export(Some(&parent), "on-watermark")
                .map(|(_, idx)| idx)
                .ok_or_else(|| format!("`{time}` lacks the function `on-watermark`"))?;
            Some(idx)
        }
    };
    Ok((
        version,
        Exports { open: func("open")?, process: func("process")?, finish: func("finish")?, snapshot, on_watermark },
    ))
}
