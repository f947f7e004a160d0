//! The `map` operator: adds (or replaces) columns computed by SQL expressions.
//!
//! It reads only the columns its expressions name and carries the other
//! input columns through: only the computed columns leave the guest.

use std::collections::HashSet;
use std::sync::Arc;

use flumen_expr::Expr;
use flumen_sdk::arrow_array::RecordBatchOptions;
use flumen_sdk::{Context, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator};
use serde::Deserialize;

/// `config = { columns = [{ name = "price", expr = "price * 0.908" }] }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    columns: Vec<ColumnConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnConfig {
    /// The output column: replaced in place when the input has it, else appended.
    name: String,
    /// A SQL expression over the input's columns.
    expr: String,
}

/// Where a computed column goes in the output.
#[derive(Debug)]
enum Slot {
    /// Replaces input column `usize`.
    Replace(usize),
    Append,
}

struct Map {
    schema: SchemaRef,
    /// Per output field: the input column it carries, or `None` (computed).
    layout: Vec<Option<usize>>,
    /// The input columns the expressions read, ascending.
    reads: Vec<usize>,
    /// The computed columns in output order, over a batch of just `reads`.
    computed: Vec<(String, Expr)>,
}

impl Operator for Map {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if ctx.inputs.len() != 1 {
            return Err(Error::config(format!(
                "map: takes one input, operator `{}` has {}",
                ctx.operator_id,
                ctx.inputs.len()
            )));
        }
        let input = ctx.input(0)?.clone();
        if config.columns.is_empty() {
            return Err(Error::config("map: `columns` is empty; give at least one { name, expr }"));
        }
        let mut seen = HashSet::new();
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut computed = Vec::with_capacity(config.columns.len());
        for column in config.columns {
            if column.name.is_empty() {
                return Err(Error::config(format!("map: a column for `{}` has an empty name", column.expr)));
            }
            if !seen.insert(column.name.clone()) {
                return Err(Error::config(format!("map: column `{}` is computed twice", column.name)));
            }
            let expr = Expr::parse(&column.expr, &input)
                .map_err(|e| Error::config(format!("map: column `{}`: {}", column.name, e.display_in("expression"))))?;
            let field = Field::new(column.name.clone(), expr.data_type().clone(), expr.nullable());
            let slot = match input.index_of(&column.name) {
                Ok(i) => {
                    fields[i] = field;
                    Slot::Replace(i)
                }
                Err(_) => {
                    fields.push(field);
                    Slot::Append
                }
            };
            computed.push((column.name, expr, slot));
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        // Output order: replaced columns where they stand, appended ones after.
        computed.sort_by_key(|(_, _, slot)| match slot {
            Slot::Replace(i) => (0, *i),
            Slot::Append => (1, 0),
        });
        let mut layout: Vec<Option<usize>> = (0..input.fields().len()).map(Some).collect();
        for (_, _, slot) in &computed {
            match slot {
                Slot::Replace(i) => layout[*i] = None,
                Slot::Append => layout.push(None),
            }
        }
        let reads: Vec<usize> = computed
            .iter()
            .flat_map(|(_, expr, _)| expr.columns())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let computed = computed
            .into_iter()
            .map(|(name, expr, _)| {
                let expr = expr
                    .over_columns(&input, &reads)
                    .map_err(|e| Error::config(format!("map: column `{name}`: {}", e.display_in("expression"))))?;
                Ok((name, expr))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self { schema, layout, reads, computed })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        Shape::new().reads(0, self.reads.iter().copied()).carries(self.layout.iter().copied())
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let columns = self
            .computed
            .iter()
            .map(|(name, expr)| {
                expr.evaluate(&batch)
                    .map_err(|e| Error::input(format!("map: column `{name}`: {}", e.display_in("expression"))))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let result = RecordBatch::try_new_with_options(out.schema().clone(), columns, &options)?;
        out.emit(&result)
    }
}

export_operator!(Map);

#[cfg(test)]
mod tests {
    use super::*;
    use flumen_sdk::DataType;
    use flumen_sdk::arrow_array::{Int64Array, cast::AsArray, types::Float64Type};

    fn context() -> Context {
        let schema = Schema::new(vec![
            Field::new("price", DataType::Int64, false),
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]);
        Context { operator_id: "m".into(), subtask: 0, parallelism: 1, inputs: vec![Arc::new(schema)] }
    }

    fn open(json: &str) -> Result<Map, Error> {
        Map::open(&context(), serde_json::from_str(json).map_err(|e| Error::config(e.to_string()))?)
    }

    #[test]
    fn replaces_in_place_and_appends() {
        let map =
            open(r#"{"columns": [{"name": "price", "expr": "price * 0.908"}, {"name": "g", "expr": "gcd(a, b)"}]}"#)
                .unwrap();
        let names: Vec<_> =
            map.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
        assert_eq!(
            names,
            vec![
                ("price".into(), DataType::Float64, false),
                ("a".into(), DataType::Int64, true),
                ("b".into(), DataType::Int64, true),
                ("g".into(), DataType::Int64, true),
            ]
        );
        let batch = RecordBatch::try_new(
            context().inputs[0].clone(),
            vec![
                Arc::new(Int64Array::from(vec![100, 200])),
                Arc::new(Int64Array::from(vec![4, 9])),
                Arc::new(Int64Array::from(vec![6, 12])),
            ],
        )
        .unwrap();
        let price = map.computed[0].1.evaluate(&batch).unwrap();
        assert_eq!(price.as_primitive::<Float64Type>().values().to_vec(), vec![90.8, 181.6]);
        assert_eq!(map.shape(), Shape::new().reads(0, [0, 1, 2]).carries([None, Some(1), Some(2), None]));
    }

    #[test]
    fn reads_only_what_its_expressions_name() {
        let map = open(r#"{"columns": [{"name": "b", "expr": "a * 2"}]}"#).unwrap();
        assert_eq!(map.shape(), Shape::new().reads(0, [1]).carries([Some(0), Some(1), None]));
        let batch = RecordBatch::try_new(
            Arc::new(context().inputs[0].project(&[1]).unwrap()),
            vec![Arc::new(Int64Array::from(vec![4, 9]))],
        )
        .unwrap();
        let b = map.computed[0].1.evaluate(&batch).unwrap();
        assert_eq!(b.as_primitive::<flumen_sdk::arrow_array::types::Int64Type>().values().to_vec(), vec![8, 18]);
    }

    #[test]
    fn config_errors_name_the_problem() {
        let e = open(r#"{"columns": [{"name": "x", "expr": "prce * 2"}]}"#).err().unwrap();
        assert_eq!(e.kind, flumen_sdk::ErrorKind::InvalidConfig);
        assert_eq!(
            e.message,
            "map: column `x`: unknown column `prce` in expression `prce * 2`; columns are: price, a, b"
        );
        let e = open(r#"{"columns": [{"name": "x", "expr": "1"}, {"name": "x", "expr": "2"}]}"#).err().unwrap();
        assert_eq!(e.message, "map: column `x` is computed twice");
        assert_eq!(
            open(r#"{"columns": []}"#).err().unwrap().message,
            "map: `columns` is empty; give at least one { name, expr }"
        );
        assert!(
            open(r#"{"columns": [{"name": "x", "expr": "1", "typo": 2}]}"#)
                .err()
                .unwrap()
                .message
                .contains("unknown field `typo`")
        );
        assert!(open(r#"{"columns": [{"name": "x"}]}"#).err().unwrap().message.contains("missing field `expr`"));
        assert!(open(r#"{"columns": [{"name": "", "expr": "1"}]}"#).is_err());
    }
}
