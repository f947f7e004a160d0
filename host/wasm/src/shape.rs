//! An operator's shape: which input columns it reads and which output columns
//! it carries unchanged from its input (declared at `open` by a 0.2 component;
//! a 0.1 component reads everything and computes everything). Checked once
//! against the input schemas, then applied to every call: inputs are
//! projected before they are lowered (unread columns are never copied into
//! the guest), and outputs are built from the columns the guest computed plus
//! the carried input columns under the guest's selection of rows. Only bytes
//! that came from the guest are validated; carried columns are the input's
//! own Arrow buffers, shared when every row passes and gathered with Arrow's
//! `filter`/`take` otherwise.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow_buffer::{BooleanBuffer, Buffer};
use arrow_schema::{Schema, SchemaRef};

use crate::abi::WitPlan;

/// Which rows of the input batch the carried columns of an emitted batch take.
#[derive(Debug)]
pub(crate) enum Selection {
    All,
    /// ceil(rows / 8) bytes, LSB first.
    Mask(Buffer),
    Indices(Vec<u32>),
}

#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// The schema of every batch the operator emits.
    pub output: SchemaRef,
    /// The fields the guest computes and emits, in output order.
    pub computed: SchemaRef,
    /// Per top-level output field: the input column it carries, or `None`
    /// for the next computed column. `None` when every field is computed.
    carried: Option<Vec<Option<usize>>>,
    /// Per input port: the top-level columns lowered into the guest (`None`: all).
    reads: Vec<Option<Vec<usize>>>,
}

impl Shape {
    /// The 0.1 shape: every input column read, every output column computed.
    pub fn all_computed(output: SchemaRef, ports: usize) -> Self {
        Self { computed: output.clone(), output, carried: None, reads: vec![None; ports] }
    }

    /// Checks a 0.2 plan against the operator's `inputs` (its schemas are
    /// already parsed into `output`). Errors say what is wrong in the plan.
    pub fn from_plan(output: SchemaRef, plan: &WitPlan, inputs: &[SchemaRef]) -> Result<Self, String> {
        let fields = output.fields();
        let reads = if plan.reads.is_empty() {
            vec![None; inputs.len()]
        } else {
            if plan.reads.len() != inputs.len() {
                return Err(format!(
                    "`reads` has {} entries for an operator with {} input port(s)",
                    plan.reads.len(),
                    inputs.len()
                ));
            }
            plan.reads
                .iter()
                .zip(inputs)
                .enumerate()
                .map(|(port, (read, schema))| match read {
                    None => Ok(None),
                    Some(cols) => {
                        let n = schema.fields().len();
                        let mut prev: Option<u32> = None;
                        for &c in cols {
                            if c as usize >= n {
                                return Err(format!(
                                    "`reads` names column {c} of input port {port}, which has {n} column(s)"
                                ));
                            }
                            if prev.is_some_and(|p| p >= c) {
                                return Err(format!(
                                    "`reads` for input port {port} must be strictly ascending, got {cols:?}"
                                ));
                            }
                            prev = Some(c);
                        }
                        Ok(Some(cols.iter().map(|&c| c as usize).collect()))
                    }
                })
                .collect::<Result<Vec<_>, String>>()?
        };
        if plan.carried.is_empty() || plan.carried.iter().all(Option::is_none) {
            return Ok(Self { computed: output.clone(), output, carried: None, reads });
        }
        if plan.carried.len() != fields.len() {
            return Err(format!(
                "`carried` has {} entries for an output schema of {} top-level field(s)",
                plan.carried.len(),
                fields.len()
            ));
        }
        if inputs.is_empty() {
            return Err("`carried` names input columns, but the operator has no input".into());
        }
        let mut computed = Vec::new();
        let mut carried = Vec::with_capacity(fields.len());
        for (field, source) in fields.iter().zip(&plan.carried) {
            let Some(col) = source else {
                computed.push(field.clone());
                carried.push(None);
                continue;
            };
            let col = *col as usize;
            for (port, schema) in inputs.iter().enumerate() {
                let Some(input) = schema.fields().get(col) else {
                    return Err(format!(
                        "output field `{}` carries column {col} of the input, but input port {port} has {} column(s)",
                        field.name(),
                        schema.fields().len()
                    ));
                };
                if !input.data_type().equals_datatype(field.data_type()) {
                    return Err(format!(
                        "output field `{}` ({}) carries input column {col} `{}` of port {port}, which is {}",
                        field.name(),
                        field.data_type(),
                        input.name(),
                        input.data_type()
                    ));
                }
                if input.is_nullable() && !field.is_nullable() {
                    return Err(format!(
                        "output field `{}` is not nullable but carries nullable input column `{}` of port {port}",
                        field.name(),
                        input.name()
                    ));
                }
            }
            carried.push(Some(col));
        }
        let computed = Arc::new(Schema::new_with_metadata(computed, output.metadata().clone()));
        Ok(Self { output, computed, carried: Some(carried), reads })
    }

    /// Which of the `columns` top-level columns of input `port` the operator
    /// needs, given which of its output columns some consumer needs: those it
    /// reads, and those it carries into a needed output column.
    pub fn input_needed(&self, port: u32, columns: usize, output_needed: &[bool]) -> Vec<bool> {
        let mut need = match self.reads.get(port as usize) {
            Some(Some(read)) => {
                let mut need = vec![false; columns];
                for &c in read {
                    if let Some(n) = need.get_mut(c) {
                        *n = true;
                    }
                }
                need
            }
            _ => return vec![true; columns],
        };
        if let Some(carried) = &self.carried {
            for (out, source) in carried.iter().enumerate() {
                if let Some(c) = source
                    && output_needed.get(out).copied().unwrap_or(true)
                    && let Some(n) = need.get_mut(*c)
                {
                    *n = true;
                }
            }
        }
        need
    }

    /// Whether some output column is carried from the input.
    pub fn carries(&self) -> bool {
        self.carried.is_some()
    }

    /// The part of `batch` (arriving on `port`) that is lowered into the guest.
    pub fn project(&self, port: u32, batch: &RecordBatch) -> Result<Option<RecordBatch>, String> {
        match self.reads.get(port as usize) {
            Some(Some(cols)) => batch.project(cols).map(Some).map_err(|e| format!("projecting input port {port}: {e}")),
            _ => Ok(None),
        }
    }

    /// Builds one output batch from what the guest `computed` and the
    /// selected rows of `input` (the batch being processed, if any).
    pub fn assemble(
        &self,
        computed: RecordBatch,
        selection: Selection,
        input: Option<&RecordBatch>,
    ) -> Result<RecordBatch, String> {
        let Some(carried) = &self.carried else {
            return match selection {
                Selection::All => Ok(computed),
                _ => Err("sent a selection of rows, but the operator carries no input column".into()),
            };
        };
        let Some(input) = input else {
            return Err("carries input columns, which exist only while `process` runs; emit from `finish` or \
                        `on-watermark` only from an operator that carries none"
                .into());
        };
        let rows = input.num_rows();
        let want = computed.num_rows();
        let sources: Vec<usize> = carried.iter().flatten().copied().collect();
        let picked: Vec<ArrayRef> = sources.iter().map(|&c| input.column(c).clone()).collect();
        let picked = match selection {
            Selection::All => {
                if want != rows {
                    return Err(format!("selects all {rows} input rows, but the computed columns have {want} rows"));
                }
                picked
            }
            Selection::Mask(bits) => {
                let bytes = rows.div_ceil(8);
                if bits.len() != bytes {
                    return Err(format!(
                        "a selection mask of {} bytes for {rows} input rows (must be {bytes})",
                        bits.len()
                    ));
                }
                if rows % 8 != 0 && bits.as_slice().last().is_some_and(|b| b >> (rows % 8) != 0) {
                    return Err(format!("the selection mask sets bits past input row {}", rows - 1));
                }
                let mask = BooleanArray::new(BooleanBuffer::new(bits, 0, rows), None);
                let kept = mask.true_count();
                if kept != want {
                    return Err(format!("the selection mask keeps {kept} rows, but the computed columns have {want}"));
                }
                if kept == rows {
                    picked
                } else {
                    let filter = arrow_select::filter::FilterBuilder::new(&mask).optimize().build();
                    picked
                        .iter()
                        .map(|a| filter.filter(a.as_ref()))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("selecting rows: {e}"))?
                }
            }
            Selection::Indices(indices) => {
                if indices.len() != want {
                    return Err(format!(
                        "selects {} input rows by index, but the computed columns have {want} rows",
                        indices.len()
                    ));
                }
                if let Some((at, bad)) = indices.iter().enumerate().find(|(_, i)| **i as usize >= rows) {
                    return Err(format!(
                        "selection index {bad} (at position {at}) is out of range for {rows} input rows"
                    ));
                }
                let indices = UInt32Array::from(indices);
                picked
                    .iter()
                    .map(|a| arrow_select::take::take(a.as_ref(), &indices, None))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("selecting rows: {e}"))?
            }
        };
        let mut picked = picked.into_iter();
        let mut made = computed.columns().iter();
        let columns: Vec<ArrayRef> = carried
            .iter()
            .map(|c| match c {
                Some(_) => picked.next(),
                None => made.next().cloned(),
            })
            .collect::<Option<_>>()
            .ok_or_else(|| "fewer columns than the output schema has fields".to_string())?;
        let options = RecordBatchOptions::new().with_row_count(Some(want));
        RecordBatch::try_new_with_options(self.output.clone(), columns, &options)
            .map_err(|e| format!("building the output batch: {e}"))
    }
}
