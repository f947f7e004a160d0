//! Flumen's Rust SDK: implement [`Operator`], call [`export_operator!`], and
//! your type runs as a sandboxed Flumen operator over arrow-rs record batches.
//!
//! ```text
//! use flumen_sdk::{Context, Emitter, Error, Operator, RecordBatch, SchemaRef, export_operator};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { column: String }
//!
//! struct PassThrough { schema: SchemaRef }
//!
//! impl Operator for PassThrough {
//!     type Config = Config;
//!     fn open(ctx: &Context, _config: Config) -> Result<Self, Error> {
//!         Ok(Self { schema: ctx.input(0)?.clone() })
//!     }
//!     fn schema(&self) -> SchemaRef { self.schema.clone() }
//!     fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
//!         out.emit(&batch)
//!     }
//! }
//!
//! export_operator!(PassThrough);
//! ```
//!
//! Batches arrive as arrow-rs arrays built over the buffers the host copied
//! into this instance's memory (one copy, made by the canonical ABI); emitted
//! batches are read by the host straight from your arrays' buffers (one copy,
//! made by the host). Nothing is copied row by row.
//!
//! An operator that reads a few columns, or passes most of its input through,
//! says so in [`Operator::shape`]: only the columns it reads are copied in,
//! and the columns it carries never enter it at all. A filter that reads one
//! column and keeps every column of the rows it selects:
//!
//! ```text
//! fn shape(&self) -> Shape {
//!     Shape::new().reads(0, [self.price]).carries((0..self.schema.fields().len()).map(Some))
//! }
//! fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
//!     let mask = /* a BooleanArray over `batch`, which holds only the price column */;
//!     out.keep(&mask)
//! }
//! ```
//!
//! State that must survive a restart lives either in the host, keyed, through
//! [`state`] (the job grants the `state` capability), or in the instance's
//! memory, saved at checkpoints by [`Operator::save`] and given back by
//! [`Operator::restore`].
//!
//! Operators that act on event time implement [`Operator::on_watermark`]; the
//! [`window`] module keeps tumbling, sliding and session windows in host state.

pub mod blob;
mod convert;
mod error;
pub mod inference;
pub mod log;
pub mod media;
mod shape;
pub mod state;
pub mod window;

use std::any::Any;
use std::cell::RefCell;

use arrow_array::{BooleanArray, UInt32Array};

pub use arrow_array::{self, ArrayRef, RecordBatch};
pub use arrow_schema::{self, DataType, Field, Schema, SchemaRef};
pub use arrow_select;
pub use error::{Error, ErrorKind};
use serde::de::DeserializeOwned;
pub use shape::Shape;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "operator",
        pub_export_macro: true,
        default_bindings_module: "flumen_sdk::bindings",
        ownership: Borrowing { duplicate_if_necessary: true },
        // The schema records are `flumen-batch`'s, the types the host binds
        // too, with the one mapping to and from Arrow.
        with: {
            "flumen:dataflow/types@0.2.0/time-unit": ::flumen_batch::wire::TimeUnit,
            "flumen:dataflow/types@0.2.0/timestamp-type": ::flumen_batch::wire::TimestampType,
            "flumen:dataflow/types@0.2.0/decimal-type": ::flumen_batch::wire::DecimalType,
            "flumen:dataflow/types@0.2.0/data-type": ::flumen_batch::wire::DataType,
            "flumen:dataflow/types@0.2.0/field": ::flumen_batch::wire::Field,
            "flumen:dataflow/types@0.2.0/schema": ::flumen_batch::wire::Schema,
        },
    });
}

/// What an operator instance learns when it opens.
#[derive(Debug, Clone)]
pub struct Context {
    /// The operator's id in the job spec.
    pub operator_id: String,
    /// Which parallel instance this is (0-based) and how many there are.
    pub subtask: u32,
    pub parallelism: u32,
    /// The schema of each input port.
    pub inputs: Vec<SchemaRef>,
}

impl Context {
    /// The schema of input `port`, or an error naming the port.
    pub fn input(&self, port: usize) -> Result<&SchemaRef, Error> {
        self.inputs.get(port).ok_or_else(|| {
            Error::config(format!(
                "operator `{}` needs input port {port}, it has {}",
                self.operator_id,
                self.inputs.len()
            ))
        })
    }

    /// The position of top-level column `name` of input `port`, which must
    /// have type `data_type`; otherwise an invalid-config error starting with
    /// `operator` (the plugin's name), e.g. `filter: column `text` must be
    /// int64, it is utf8` or `filter: the input has no column `qty``.
    pub fn typed_column(&self, port: usize, name: &str, data_type: &DataType, operator: &str) -> Result<usize, Error> {
        let input = self.input(port)?;
        let index =
            input.index_of(name).map_err(|_| Error::config(format!("{operator}: the input has no column `{name}`")))?;
        let actual = input.field(index).data_type();
        if actual != data_type {
            return Err(Error::config(format!(
                "{operator}: column `{name}` must be {}, it is {}",
                type_name(data_type),
                type_name(actual)
            )));
        }
        Ok(index)
    }
}

/// A type as the job spec writes it (`int64`, `utf8`, …).
pub fn type_name(data_type: &DataType) -> String {
    data_type.to_string().to_lowercase()
}

/// An operator: opened once per instance, then fed batches.
pub trait Operator: Sized + 'static {
    /// The operator's configuration, parsed from the job spec's `config` table.
    type Config: DeserializeOwned;

    /// Prepares an instance. Validate the config and input schemas here, so
    /// that a bad job fails before any data flows.
    fn open(ctx: &Context, config: Self::Config) -> Result<Self, Error>;

    /// The schema of every batch this operator emits: the columns it
    /// computes and those it carries (see [`Operator::shape`]), in output order.
    fn schema(&self) -> SchemaRef;

    /// Which input columns [`Operator::process`] receives and which output
    /// columns are input columns carried unchanged; asked once, after
    /// [`Operator::open`]. The default reads every column and computes every
    /// output column. See [`Shape`].
    fn shape(&self) -> Shape {
        Shape::new()
    }

    /// Handles one batch from input `port`. It holds the columns
    /// [`Operator::shape`] reads from that port, in ascending order (all of
    /// them by default).
    fn process(&mut self, port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error>;

    /// All inputs ended: emit what is left.
    fn finish(&mut self, _out: &mut Emitter) -> Result<(), Error> {
        Ok(())
    }

    /// Event time reached `watermark` (milliseconds since the epoch) on every
    /// input: no batch that arrives later carries an earlier time (rows that
    /// do are late; see [`window`]). Called between `process` calls, only
    /// when the watermark advanced; may emit. When every input has ended the
    /// host calls it once more with `i64::MAX`, before [`Operator::finish`],
    /// so whatever waits for event time (windows) is released. The default
    /// does nothing.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Emitter) -> Result<(), Error> {
        Ok(())
    }

    /// Keeps in-memory state across restarts: returns the bytes to store with
    /// a checkpoint. The host calls it at each checkpoint barrier, between
    /// `process` calls, and gives the bytes back to [`Operator::restore`] when
    /// the job resumes from that checkpoint. The default keeps nothing: an
    /// operator without in-memory state (or one that keeps it all in
    /// [`state`]) need not implement it.
    fn save(&mut self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }

    /// Restores the in-memory state [`Operator::save`] returned at the
    /// checkpoint the job resumes from. The host calls it at most once per
    /// instance, right after `open` and before any `process`; an instance that
    /// starts fresh is never restored. Treat `data` as untrusted: return an
    /// error rather than panic if it does not parse.
    fn restore(&mut self, _data: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

/// Sends batches downstream.
#[derive(Debug)]
pub struct Emitter {
    /// The computed columns' schema: the whole output unless columns are carried.
    computed: SchemaRef,
    carries: bool,
}

impl Emitter {
    /// Emits `batch`. Without carried columns it has the schema returned by
    /// [`Operator::schema`]; with them, it holds only the computed columns
    /// (the output fields [`Shape::carries`] marks `None`), one row per input
    /// row, and the carried columns are the input batch's own.
    pub fn emit(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.check(batch)?;
        convert::emit(batch, convert::Rows::All)
    }

    /// Emits the rows of the input batch where `mask` is true (null counts
    /// as false): `computed` holds the computed columns for exactly those
    /// rows; the carried columns are gathered by the host.
    pub fn emit_filtered(&mut self, computed: &RecordBatch, mask: &BooleanArray) -> Result<(), Error> {
        self.check(computed)?;
        self.check_carries("emit_filtered")?;
        convert::emit(computed, convert::Rows::Mask(mask))
    }

    /// Emits the input rows at `indices` (any order, repeats allowed):
    /// `computed` holds the computed columns for those rows, in that order.
    pub fn emit_taken(&mut self, computed: &RecordBatch, indices: &UInt32Array) -> Result<(), Error> {
        self.check(computed)?;
        self.check_carries("emit_taken")?;
        convert::emit(computed, convert::Rows::Indices(indices))
    }

    /// For an operator that computes no column (every output column is
    /// carried): keeps the input rows where `mask` is true (null counts as
    /// false). Emits nothing when no row is kept.
    pub fn keep(&mut self, mask: &BooleanArray) -> Result<(), Error> {
        self.check_carries("keep")?;
        // `true_count` counts valid trues only: a null slot is not kept.
        let kept = mask.true_count();
        if kept == 0 {
            return Ok(());
        }
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(kept));
        let computed = RecordBatch::try_new_with_options(self.computed.clone(), Vec::new(), &options)
            .map_err(|e| Error::internal(format!("`keep` needs an operator that computes no column: {e}")))?;
        if kept == mask.len() {
            convert::emit(&computed, convert::Rows::All)
        } else {
            convert::emit(&computed, convert::Rows::Mask(mask))
        }
    }

    /// The schema of the batches [`Emitter::emit`] takes: the output fields
    /// the operator computes, in order (all of [`Operator::schema`] unless
    /// its shape carries some).
    pub fn schema(&self) -> &SchemaRef {
        &self.computed
    }

    fn check(&self, batch: &RecordBatch) -> Result<(), Error> {
        if batch.schema_ref() != &self.computed && batch.schema_ref().fields() != self.computed.fields() {
            return Err(Error::internal(format!(
                "emitted batch has schema {:?}, the operator computes {:?}",
                batch.schema(),
                self.computed
            )));
        }
        Ok(())
    }

    fn check_carries(&self, what: &str) -> Result<(), Error> {
        if !self.carries {
            return Err(Error::internal(format!(
                "`{what}` selects input rows for carried columns, but the operator's shape carries none"
            )));
        }
        Ok(())
    }
}

/// An opened operator and what the SDK needs to call it.
struct Opened {
    op: Box<dyn Any>,
    /// The computed columns' schema.
    computed: SchemaRef,
    carries: bool,
}

thread_local! {
    static INSTANCE: RefCell<Option<Opened>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use bindings::exports::flumen::dataflow::transform as wit;

    pub fn open<T: Operator>(ctx: wit::Context) -> Result<wit::OperatorPlan, wit::Error> {
        let run = || -> Result<_, Error> {
            let inputs = ctx.inputs.into_iter().map(|s| s.into_arrow()).collect::<Result<Vec<_>, _>>()?;
            let context =
                Context { operator_id: ctx.operator_id, subtask: ctx.subtask, parallelism: ctx.parallelism, inputs };
            let config: T::Config = serde_json::from_str(&ctx.config)
                .map_err(|e| Error::config(format!("operator `{}`: config: {e}", context.operator_id)))?;
            let op = T::open(&context, config)?;
            let schema = op.schema();
            let shape = op.shape();
            let planned = shape.plan(&context, &schema)?;
            let plan = wit::OperatorPlan {
                schema: flumen_batch::wire::Schema::from_arrow(&schema)?,
                carried: planned.carried,
                reads: planned.reads,
            };
            __private::INPUTS.with(|i| *i.borrow_mut() = planned.received);
            INSTANCE.with(|cell| {
                *cell.borrow_mut() =
                    Some(Opened { op: Box::new(op), computed: planned.computed, carries: planned.carries })
            });
            Ok(plan)
        };
        run().map_err(Into::into)
    }

    pub fn process<T: Operator>(
        port: u32,
        input: bindings::flumen::dataflow::types::BatchResult,
    ) -> Result<(), wit::Error> {
        with_instance::<T>(|op, out| {
            let schema = op_input_schema(port)?;
            let batch = convert::batch_from_wit(&schema, input)?;
            op.process(port, batch, out)
        })
    }

    pub fn finish<T: Operator>() -> Result<(), wit::Error> {
        with_instance::<T>(|op, out| op.finish(out))
    }

    pub fn on_watermark<T: Operator>(watermark: i64) -> Result<(), wit::Error> {
        with_instance::<T>(|op, out| op.on_watermark(watermark, out))
    }

    pub fn save<T: Operator>() -> Result<Vec<u8>, wit::Error> {
        with_operator::<T, _>(|op| op.save())
    }

    pub fn restore<T: Operator>(data: Vec<u8>) -> Result<(), wit::Error> {
        with_operator::<T, _>(|op| op.restore(&data))
    }

    fn op_input_schema(port: u32) -> Result<SchemaRef, Error> {
        INPUTS.with(|inputs| {
            inputs
                .borrow()
                .get(port as usize)
                .cloned()
                .ok_or_else(|| Error::input(format!("batch arrived on unknown input port {port}")))
        })
    }

    thread_local! {
        pub(crate) static INPUTS: RefCell<Vec<SchemaRef>> = const { RefCell::new(Vec::new()) };
    }

    fn with_instance<T: Operator>(f: impl FnOnce(&mut T, &mut Emitter) -> Result<(), Error>) -> Result<(), wit::Error> {
        INSTANCE
            .with(|cell| {
                let mut guard = cell.borrow_mut();
                let opened = guard.as_mut().ok_or_else(|| Error::internal("operator called before open"))?;
                let mut out = Emitter { computed: opened.computed.clone(), carries: opened.carries };
                let op = opened.op.downcast_mut::<T>().ok_or_else(|| Error::internal("operator type mismatch"))?;
                f(op, &mut out)
            })
            .map_err(Into::into)
    }

    /// Like `with_instance`, for calls that emit nothing (`save`, `restore`).
    fn with_operator<T: Operator, R>(f: impl FnOnce(&mut T) -> Result<R, Error>) -> Result<R, wit::Error> {
        INSTANCE
            .with(|cell| {
                let mut guard = cell.borrow_mut();
                let opened = guard.as_mut().ok_or_else(|| Error::internal("operator called before open"))?;
                let op = opened.op.downcast_mut::<T>().ok_or_else(|| Error::internal("operator type mismatch"))?;
                f(op)
            })
            .map_err(Into::into)
    }
}

/// Exports `$ty` (an [`Operator`]) as this component's operator: the
/// `transform` interface, the `snapshot` interface (backed by
/// [`Operator::save`] and [`Operator::restore`], whose defaults keep nothing)
/// and the `event-time` interface (backed by [`Operator::on_watermark`], whose
/// default does nothing).
#[macro_export]
macro_rules! export_operator {
    ($ty:ty) => {
        struct __FlumenOperator;
        impl $crate::bindings::exports::flumen::dataflow::transform::Guest for __FlumenOperator {
            fn open(
                ctx: $crate::bindings::exports::flumen::dataflow::transform::Context,
            ) -> ::core::result::Result<
                $crate::bindings::exports::flumen::dataflow::transform::OperatorPlan,
                $crate::bindings::flumen::dataflow::types::Error,
            > {
                $crate::__private::open::<$ty>(ctx)
            }
            fn process(
                port: u32,
                input: $crate::bindings::flumen::dataflow::types::BatchResult,
            ) -> ::core::result::Result<(), $crate::bindings::flumen::dataflow::types::Error> {
                $crate::__private::process::<$ty>(port, input)
            }
            fn finish() -> ::core::result::Result<(), $crate::bindings::flumen::dataflow::types::Error> {
                $crate::__private::finish::<$ty>()
            }
        }
        impl $crate::bindings::exports::flumen::dataflow::snapshot::Guest for __FlumenOperator {
            fn save() -> ::core::result::Result<
                ::std::vec::Vec<u8>,
                $crate::bindings::flumen::dataflow::types::Error,
            > {
                $crate::__private::save::<$ty>()
            }
            fn restore(
                data: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<(), $crate::bindings::flumen::dataflow::types::Error> {
                $crate::__private::restore::<$ty>(data)
            }
        }
        impl $crate::bindings::exports::flumen::dataflow::event_time::Guest for __FlumenOperator {
            fn on_watermark(
                watermark: i64,
            ) -> ::core::result::Result<(), $crate::bindings::flumen::dataflow::types::Error> {
                $crate::__private::on_watermark::<$ty>(watermark)
            }
        }
        $crate::bindings::export!(__FlumenOperator with_types_in $crate::bindings);
    };
}
