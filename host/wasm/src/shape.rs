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

    /// A selection of rows (anything but `all`) applies to carried columns:
    /// an operator that carries none may not send one.
    pub fn check_selects(&self, all: bool) -> Result<(), String> {
        if all || self.carries() {
            Ok(())
        } else {
            Err("sent a selection of rows, but the operator carries no input column".into())
        }
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
        self.check_selects(matches!(selection, Selection::All))?;
        let Some(carried) = &self.carried else { return Ok(computed) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::WitSchema;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field};

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Int64, true),
        ]))
    }

    fn plan(carried: Vec<Option<u32>>, reads: Vec<Option<Vec<u32>>>) -> WitPlan {
        WitPlan { schema: WitSchema { fields: Vec::new(), metadata: Vec::new() }, carried, reads }
    }

    /// Output (id carried, twice computed, name carried as `who`).
    fn output() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("twice", DataType::Int64, true),
            Field::new("who", DataType::Utf8, true),
        ]))
    }

    fn shape() -> Shape {
        Shape::from_plan(output(), &plan(vec![Some(0), None, Some(1)], vec![Some(vec![2])]), &[input()])
            .expect("plan fits")
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(Int64Array::from(vec![10, 20, 30])),
            ],
        )
        .expect("batch")
    }

    fn computed(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("twice", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).expect("computed")
    }

    #[test]
    fn plans_that_do_not_fit_the_inputs_are_refused_by_name() {
        let bad = |carried, reads| Shape::from_plan(output(), &plan(carried, reads), &[input()]).unwrap_err();
        assert_eq!(bad(vec![], vec![Some(vec![3])]), "`reads` names column 3 of input port 0, which has 3 column(s)");
        assert_eq!(
            bad(vec![], vec![Some(vec![2, 1])]),
            "`reads` for input port 0 must be strictly ascending, got [2, 1]"
        );
        assert_eq!(bad(vec![], vec![None, None]), "`reads` has 2 entries for an operator with 1 input port(s)");
        assert_eq!(
            bad(vec![Some(0), None], vec![]),
            "`carried` has 2 entries for an output schema of 3 top-level field(s)"
        );
        assert_eq!(
            bad(vec![Some(1), None, Some(1)], vec![]),
            "output field `id` (Int64) carries input column 1 `name` of port 0, which is Utf8"
        );
        assert_eq!(
            bad(vec![Some(2), None, Some(1)], vec![]),
            "output field `id` is not nullable but carries nullable input column `price` of port 0"
        );
        assert_eq!(
            bad(vec![Some(0), None, Some(7)], vec![]),
            "output field `who` carries column 7 of the input, but input port 0 has 3 column(s)"
        );
    }

    #[test]
    fn inputs_are_projected_to_the_columns_read() {
        let shape = shape();
        let projected = shape.project(0, &batch()).unwrap().unwrap();
        assert_eq!(projected.num_columns(), 1);
        assert_eq!(projected.schema().field(0).name(), "price");
        // What each input column is needed for: read (price) or carried into a needed output.
        assert_eq!(shape.input_needed(0, 3, &[true, true, true]), [true, true, true]);
        assert_eq!(shape.input_needed(0, 3, &[false, true, false]), [false, false, true]);
        assert_eq!(Shape::all_computed(output(), 1).input_needed(0, 3, &[false; 3]), [true; 3]);
    }

    #[test]
    fn outputs_join_computed_and_carried_columns_under_each_selection() {
        let shape = shape();
        let input = batch();
        let all = shape.assemble(computed(vec![20, 40, 60]), Selection::All, Some(&input)).unwrap();
        assert_eq!(all.schema(), output());
        assert_eq!(all.column(0).as_ref(), input.column(0).as_ref());
        assert!(all.column(0).to_data().buffers()[0].ptr_eq(&input.column(0).to_data().buffers()[0]), "shared");
        let masked =
            shape.assemble(computed(vec![60, 20]), Selection::Mask(Buffer::from(vec![0b101u8])), Some(&input)).unwrap();
        assert_eq!(masked.column(0).as_ref(), &Int64Array::from(vec![1, 3]) as &dyn arrow_array::Array);
        assert_eq!(masked.column(2).as_ref(), &StringArray::from(vec!["a", "c"]) as &dyn arrow_array::Array);
        let taken =
            shape.assemble(computed(vec![1, 2, 3, 4]), Selection::Indices(vec![2, 2, 0, 1]), Some(&input)).unwrap();
        assert_eq!(taken.column(0).as_ref(), &Int64Array::from(vec![3, 3, 1, 2]) as &dyn arrow_array::Array);
        assert_eq!(taken.num_rows(), 4);
    }

    #[test]
    fn malformed_selections_are_errors_not_panics() {
        let shape = shape();
        let input = batch();
        let run = |rows: Vec<i64>, selection| shape.assemble(computed(rows), selection, Some(&input)).unwrap_err();
        assert_eq!(run(vec![1], Selection::All), "selects all 3 input rows, but the computed columns have 1 rows");
        assert_eq!(
            run(vec![1], Selection::Mask(Buffer::from(Vec::<u8>::new()))),
            "a selection mask of 0 bytes for 3 input rows (must be 1)"
        );
        assert_eq!(
            run(vec![1], Selection::Mask(Buffer::from(vec![0b1001u8]))),
            "the selection mask sets bits past input row 2"
        );
        assert_eq!(
            run(vec![1], Selection::Mask(Buffer::from(vec![0b011u8]))),
            "the selection mask keeps 2 rows, but the computed columns have 1"
        );
        assert_eq!(
            run(vec![1, 2], Selection::Indices(vec![0, 3])),
            "selection index 3 (at position 1) is out of range for 3 input rows"
        );
        assert_eq!(
            run(vec![1], Selection::Indices(vec![0, 1])),
            "selects 2 input rows by index, but the computed columns have 1 rows"
        );
        let err = shape.assemble(computed(vec![1]), Selection::All, None).unwrap_err();
        assert!(err.contains("exist only while `process` runs"), "{err}");
        let plain = Shape::all_computed(output(), 1);
        let out = RecordBatch::new_empty(output());
        assert_eq!(
            plain.assemble(out, Selection::Indices(vec![]), Some(&input)).unwrap_err(),
            "sent a selection of rows, but the operator carries no input column"
        );
    }
}
