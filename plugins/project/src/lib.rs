//! The `project` operator: picks, reorders, renames and computes output columns.
//!
//! Kept and renamed columns are carried by the host without entering the
//! guest; only the columns computed expressions read are copied in.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use flumen_expr::{Expr, columns_hint};
use flumen_sdk::arrow_array::RecordBatchOptions;
use flumen_sdk::{Context, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `config = { columns = ["auction", { name = "euros", expr = "price * 0.908" }], rename = { auction = "id" } }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The output columns in order; all input columns when absent.
    columns: Option<Vec<ColumnSpec>>,
    /// New names for kept input columns.
    #[serde(default)]
    rename: BTreeMap<String, String>,
}

/// One output column: an input column kept as-is, or a computed one.
#[derive(Debug)]
enum ColumnSpec {
    Keep(String),
    Computed(Computed),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Computed {
    name: String,
    expr: String,
}

impl<'de> Deserialize<'de> for ColumnSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = ColumnSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a column name or a table { name = "...", expr = "..." }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ColumnSpec, E> {
                Ok(ColumnSpec::Keep(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ColumnSpec, A::Error> {
                Computed::deserialize(de::value::MapAccessDeserializer::new(map)).map(ColumnSpec::Computed)
            }
        }
        deserializer.deserialize_any(SpecVisitor)
    }
}

/// How one output column is produced.
enum Output {
    /// Input column `usize`, shared without copying.
    Input(usize),
    Computed {
        name: String,
        expr: Expr,
    },
}

struct Project {
    schema: SchemaRef,
    outputs: Vec<Output>,
    /// The input columns computed expressions read, ascending; they are
    /// parsed over a batch of just these.
    reads: Vec<usize>,
}

impl Operator for Project {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if ctx.inputs.len() != 1 {
            return Err(Error::config(format!(
                "project: takes one input, operator `{}` has {}",
                ctx.operator_id,
                ctx.inputs.len()
            )));
        }
        let input = ctx.input(0)?.clone();
        let specs = match config.columns {
            Some(specs) if specs.is_empty() => {
                return Err(Error::config("project: `columns` is empty; list at least one column"));
            }
            Some(specs) => specs,
            None => input.fields().iter().map(|f| ColumnSpec::Keep(f.name().clone())).collect(),
        };
        let mut rename = config.rename;
        let mut fields = Vec::with_capacity(specs.len());
        let mut outputs = Vec::with_capacity(specs.len());
        for spec in specs {
            match spec {
                ColumnSpec::Keep(name) => {
                    let index = input.index_of(&name).map_err(|_| {
                        Error::config(format!("project: unknown column `{name}`; {}", columns_hint(&input)))
                    })?;
                    let new_name = rename.remove(&name).unwrap_or(name);
                    fields.push(input.field(index).clone().with_name(new_name));
                    outputs.push(Output::Input(index));
                }
                ColumnSpec::Computed(Computed { name, expr }) => {
                    let parsed = Expr::parse(&expr, &input).map_err(|e| {
                        Error::config(format!("project: column `{name}`: {}", e.display_in("expression")))
                    })?;
                    match parsed.column_index() {
                        // `{ name = "new", expr = "old" }` is a rename: keep the field's metadata.
                        Some(index) => {
                            fields.push(input.field(index).clone().with_name(name));
                            outputs.push(Output::Input(index));
                        }
                        None => {
                            fields.push(Field::new(name.clone(), parsed.data_type().clone(), parsed.nullable()));
                            outputs.push(Output::Computed { name, expr: parsed });
                        }
                    }
                }
            }
        }
        if let Some(old) = rename.keys().next() {
            let message = match input.index_of(old) {
                Ok(_) => format!("project: rename: column `{old}` is not among the kept columns"),
                Err(_) => format!("project: rename: unknown column `{old}`; {}", columns_hint(&input)),
            };
            return Err(Error::config(message));
        }
        let mut seen = HashSet::new();
        for field in &fields {
            if field.name().is_empty() {
                return Err(Error::config("project: output column names must not be empty"));
            }
            if !seen.insert(field.name().as_str()) {
                return Err(Error::config(format!("project: output column `{}` appears twice", field.name())));
            }
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        let reads: Vec<usize> = outputs
            .iter()
            .flat_map(|o| match o {
                Output::Computed { expr, .. } => expr.columns(),
                Output::Input(_) => Vec::new(),
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let outputs = outputs
            .into_iter()
            .map(|o| match o {
                Output::Computed { name, expr } => {
                    let expr = expr.over_columns(&input, &reads).map_err(|e| {
                        Error::config(format!("project: column `{name}`: {}", e.display_in("expression")))
                    })?;
                    Ok(Output::Computed { name, expr })
                }
                input => Ok(input),
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self { schema, outputs, reads })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        let layout = self.outputs.iter().map(|o| match o {
            Output::Input(i) => Some(*i),
            Output::Computed { .. } => None,
        });
        Shape::new().reads(0, self.reads.iter().copied()).carries(layout)
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut columns = Vec::with_capacity(out.schema().fields().len());
        for output in &self.outputs {
            if let Output::Computed { name, expr } = output {
                columns.push(
                    expr.evaluate(&batch).map_err(|e| {
                        Error::input(format!("project: column `{name}`: {}", e.display_in("expression")))
                    })?,
                );
            }
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let result = RecordBatch::try_new_with_options(out.schema().clone(), columns, &options)?;
        out.emit(&result)
    }
}

export_operator!(Project);

#[cfg(test)]
mod tests {
    use super::*;
    use flumen_sdk::DataType;

    fn context() -> Context {
        let schema = Schema::new(vec![
            Field::new("auction", DataType::Int64, false),
            Field::new("price", DataType::Int64, true),
            Field::new("bidder", DataType::Utf8, true),
        ]);
        Context { operator_id: "p".into(), subtask: 0, parallelism: 1, inputs: vec![Arc::new(schema)] }
    }

    fn open(json: &str) -> Result<Project, Error> {
        Project::open(&context(), serde_json::from_str(json).map_err(|e| Error::config(e.to_string()))?)
    }

    fn shape(p: &Project) -> Vec<(String, DataType)> {
        p.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect()
    }

    #[test]
    fn keeps_computes_and_renames_in_order() {
        let p = open(r#"{"columns": ["price", {"name": "euros", "expr": "price * 0.908"}, {"name": "who", "expr": "bidder"}, "auction"], "rename": {"auction": "id"}}"#).unwrap();
        assert_eq!(
            shape(&p),
            vec![
                ("price".into(), DataType::Int64),
                ("euros".into(), DataType::Float64),
                ("who".into(), DataType::Utf8),
                ("id".into(), DataType::Int64)
            ]
        );
        assert!(matches!(p.outputs[2], Output::Input(2)), "a bare column is shared, not evaluated");
        // Kept columns are carried by the host; only `price` enters the guest, for `euros`.
        assert_eq!(p.shape(), Shape::new().reads(0, [1]).carries([Some(1), None, Some(2), Some(0)]));
        let all = open(r#"{"rename": {"price": "p"}}"#).unwrap();
        assert_eq!(
            shape(&all),
            vec![("auction".into(), DataType::Int64), ("p".into(), DataType::Int64), ("bidder".into(), DataType::Utf8)]
        );
    }

    #[test]
    fn config_errors_name_the_problem() {
        let cases = [
            (r#"{"columns": ["prce"]}"#, "project: unknown column `prce`; columns are: auction, price, bidder"),
            (
                r#"{"columns": [{"name": "x", "expr": "prce + 1"}]}"#,
                "project: column `x`: unknown column `prce` in expression `prce + 1`; columns are: auction, price, bidder",
            ),
            (
                r#"{"columns": ["price"], "rename": {"bidder": "b"}}"#,
                "project: rename: column `bidder` is not among the kept columns",
            ),
            (
                r#"{"rename": {"nope": "b"}}"#,
                "project: rename: unknown column `nope`; columns are: auction, price, bidder",
            ),
            (r#"{"columns": ["price", "price"]}"#, "project: output column `price` appears twice"),
            (
                r#"{"columns": ["price", {"name": "price", "expr": "1"}]}"#,
                "project: output column `price` appears twice",
            ),
            (r#"{"columns": []}"#, "project: `columns` is empty; list at least one column"),
            (r#"{"columns": ["price"], "rename": {"price": ""}}"#, "project: output column names must not be empty"),
        ];
        for (json, want) in cases {
            let e = open(json).err().unwrap();
            assert_eq!(e.kind, flumen_sdk::ErrorKind::InvalidConfig, "{json}");
            assert_eq!(e.message, want, "{json}");
        }
        for (json, want) in [
            (r#"{"columns": [{"name": "x", "exp": "1"}]}"#, "unknown field `exp`, expected `name` or `expr`"),
            (r#"{"columns": [1]}"#, r#"expected a column name or a table { name = "...", expr = "..." }"#),
            (r#"{"cols": []}"#, "unknown field `cols`"),
        ] {
            let e = open(json).err().unwrap();
            assert!(e.message.contains(want), "{json}: {}", e.message);
        }
    }
}
