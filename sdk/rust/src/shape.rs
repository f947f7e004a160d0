//! [`Shape`]: what an operator reads from its inputs and what it carries
//! through unchanged, declared once at open so the host copies only what the
//! operator needs into it and builds carried columns from the input's own
//! buffers.

use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};

use crate::{Context, Error};

/// Which input columns an operator reads and which of its output columns are
/// input columns carried unchanged. Returned by
/// [`Operator::shape`](crate::Operator::shape).
///
/// ```text
/// // A map that reads `price` (column 2) and replaces it with a computed
/// // column, carrying the other columns of its 4-column input:
/// Shape::new().reads(0, [2]).carries([Some(0), Some(1), None, Some(3)])
/// ```
///
/// - **Reads**: `process` receives only the named top-level columns of that
///   port, in ascending order; columns it does not read are never copied into
///   the instance. Ports without a `reads` get every column.
/// - **Carries**: one entry per top-level field of
///   [`Operator::schema`](crate::Operator::schema): `Some(i)` is column `i` of
///   the batch being processed, carried unchanged (same type; the output
///   field's name may differ), `None` is computed by the operator. The
///   operator then emits only its computed columns
///   ([`Emitter::emit`](crate::Emitter::emit) for every input row,
///   [`Emitter::emit_filtered`](crate::Emitter::emit_filtered) /
///   [`Emitter::emit_taken`](crate::Emitter::emit_taken) for a selection, or
///   [`Emitter::keep`](crate::Emitter::keep) when it computes none). Carried
///   columns exist only while `process` runs: an operator that emits from
///   `finish` or `on_watermark` carries nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    reads: Vec<(u32, Vec<usize>)>,
    carried: Option<Vec<Option<usize>>>,
}

/// A shape checked against the operator's inputs and output schema.
#[derive(Debug)]
pub(crate) struct Planned {
    pub carried: Vec<Option<u32>>,
    pub reads: Vec<Option<Vec<u32>>>,
    /// The schema of the batches `process` receives, per port.
    pub received: Vec<SchemaRef>,
    /// The schema of the columns the operator emits.
    pub computed: SchemaRef,
    pub carries: bool,
}

impl Shape {
    /// Reads every input column, computes every output column.
    pub fn new() -> Self {
        Self::default()
    }

    /// `process` receives only `columns` (top-level indices into the schema
    /// of input `port`; order and repeats do not matter) of that port.
    pub fn reads(mut self, port: u32, columns: impl IntoIterator<Item = usize>) -> Self {
        let mut columns: Vec<usize> = columns.into_iter().collect();
        columns.sort_unstable();
        columns.dedup();
        self.reads.retain(|(p, _)| *p != port);
        self.reads.push((port, columns));
        self
    }

    /// The output layout: one entry per top-level output field, `Some(i)`
    /// carrying input column `i`, `None` computed.
    pub fn carries(mut self, layout: impl IntoIterator<Item = Option<usize>>) -> Self {
        self.carried = Some(layout.into_iter().collect());
        self
    }

    /// Checks the shape against `ctx` and the output `schema`.
    pub(crate) fn plan(&self, ctx: &Context, schema: &SchemaRef) -> Result<Planned, Error> {
        let bad = |m: String| Error::internal(format!("operator `{}`: shape: {m}", ctx.operator_id));
        let mut reads: Vec<Option<Vec<u32>>> = vec![None; ctx.inputs.len()];
        let mut received = ctx.inputs.clone();
        for (port, columns) in &self.reads {
            let input = ctx
                .inputs
                .get(*port as usize)
                .ok_or_else(|| bad(format!("reads from input port {port}, the operator has {}", ctx.inputs.len())))?;
            if let Some(c) = columns.iter().find(|c| **c >= input.fields().len()) {
                return Err(bad(format!("reads column {c} of input port {port}, which has {}", input.fields().len())));
            }
            received[*port as usize] = Arc::new(input.project(columns).map_err(|e| bad(e.to_string()))?);
            reads[*port as usize] = Some(columns.iter().map(|&c| c as u32).collect());
        }
        let (carried, computed) = match &self.carried {
            None => (Vec::new(), schema.clone()),
            Some(layout) => {
                if layout.len() != schema.fields().len() {
                    return Err(bad(format!(
                        "`carries` has {} entries for an output schema of {} fields",
                        layout.len(),
                        schema.fields().len()
                    )));
                }
                let computed: Vec<_> =
                    schema.fields().iter().zip(layout).filter(|(_, c)| c.is_none()).map(|(f, _)| f.clone()).collect();
                let carried = layout
                    .iter()
                    .map(|c| c.map(u32::try_from).transpose().map_err(|_| bad("column index out of range".into())))
                    .collect::<Result<Vec<_>, _>>()?;
                (carried, Arc::new(Schema::new_with_metadata(computed, schema.metadata().clone())))
            }
        };
        let carries = carried.iter().any(Option::is_some);
        let reads = if reads.iter().all(Option::is_none) { Vec::new() } else { reads };
        Ok(Planned { carried, reads, received, computed, carries })
    }
}
