//! The `filter` operator: keeps the rows of each batch where a SQL predicate is true.
//!
//! It reads only the columns its predicate names and carries every column
//! through: the host copies those columns in, gets a bitmap back, and builds
//! the output from the input's own buffers.

use flumen_expr::{Expr, type_name};
use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::{Context, DataType, Emitter, Error, Operator, RecordBatch, SchemaRef, Shape, export_operator};
use serde::Deserialize;

/// `config = { predicate = "price > 100" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A SQL boolean expression over the input's columns.
    predicate: String,
}

struct Filter {
    schema: SchemaRef,
    /// The input columns the predicate reads, ascending.
    reads: Vec<usize>,
    /// The predicate over a batch of just those columns.
    predicate: Expr,
}

impl Operator for Filter {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if ctx.inputs.len() != 1 {
            return Err(Error::config(format!(
                "filter: takes one input, operator `{}` has {}",
                ctx.operator_id,
                ctx.inputs.len()
            )));
        }
        let schema = ctx.input(0)?.clone();
        let predicate = Expr::parse(&config.predicate, &schema)
            .map_err(|e| Error::config(format!("filter: {}", e.display_in("predicate"))))?;
        if !matches!(predicate.data_type(), DataType::Boolean | DataType::Null) {
            return Err(Error::config(format!(
                "filter: predicate `{}` is {}, not boolean",
                config.predicate,
                type_name(predicate.data_type())
            )));
        }
        let reads = predicate.columns();
        let predicate = predicate
            .over_columns(&schema, &reads)
            .map_err(|e| Error::config(format!("filter: {}", e.display_in("predicate"))))?;
        Ok(Self { schema, reads, predicate })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        Shape::new().reads(0, self.reads.iter().copied()).carries((0..self.schema.fields().len()).map(Some))
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let mask = self
            .predicate
            .evaluate(&batch)
            .map_err(|e| Error::input(format!("filter: {}", e.display_in("predicate"))))?;
        // A predicate that is NULL everywhere (type null) keeps nothing.
        let Some(mask) = mask.as_boolean_opt() else {
            return Ok(());
        };
        // Null counts as false; the host gathers the carried columns.
        out.keep(mask)
    }
}

export_operator!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use flumen_sdk::arrow_array::{Int64Array, StringArray};
    use flumen_sdk::{Field, Schema};
    use std::sync::Arc;

    fn context() -> Context {
        let schema =
            Schema::new(vec![Field::new("price", DataType::Int64, true), Field::new("auction", DataType::Utf8, true)]);
        Context { operator_id: "f".into(), subtask: 0, parallelism: 1, inputs: vec![Arc::new(schema)] }
    }

    fn open(predicate: &str) -> Result<Filter, Error> {
        Filter::open(&context(), Config { predicate: predicate.into() })
    }

    #[test]
    fn bad_predicates_fail_at_open() {
        let e = open("prce > 3").err().unwrap();
        assert_eq!(e.kind, flumen_sdk::ErrorKind::InvalidConfig);
        assert_eq!(e.message, "filter: unknown column `prce` in predicate `prce > 3`; columns are: price, auction");
        assert_eq!(open("price + 1").err().unwrap().message, "filter: predicate `price + 1` is int64, not boolean");
        assert!(open("price >").err().unwrap().message.starts_with("filter: syntax error: "));
        assert!(open("price > 3 AND auction LIKE 'a%'").is_ok());
        let two = Context { inputs: vec![context().inputs[0].clone(); 2], ..context() };
        assert!(Filter::open(&two, Config { predicate: "true".into() }).is_err());
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let e = serde_json::from_str::<Config>(r#"{"predicate": "true", "extra": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        let e = serde_json::from_str::<Config>("{}").unwrap_err();
        assert!(e.to_string().contains("missing field `predicate`"), "{e}");
    }

    #[test]
    fn reads_only_the_predicates_columns() {
        let filter = open("auction LIKE 'b%'").unwrap();
        assert_eq!(filter.reads, vec![1]);
        assert_eq!(filter.shape(), Shape::new().reads(0, [1]).carries([Some(0), Some(1)]));
        let batch = RecordBatch::try_new(
            Arc::new(filter.schema.project(&[1]).unwrap()),
            vec![Arc::new(StringArray::from(vec!["a", "b", "c"]))],
        )
        .unwrap();
        let mask = filter.predicate.evaluate(&batch).unwrap();
        assert_eq!(mask.as_boolean().true_count(), 1);
    }

    #[test]
    fn evaluates_the_mask() {
        let filter = open("price > 100").unwrap();
        let batch = RecordBatch::try_new(
            Arc::new(filter.schema.project(&filter.reads).unwrap()),
            vec![Arc::new(Int64Array::from(vec![Some(50), Some(150), None]))],
        )
        .unwrap();
        let mask = filter.predicate.evaluate(&batch).unwrap();
        assert_eq!(mask.as_boolean().true_count(), 1);
    }
}
