//! Conformance operator `strings` (tests/conformance/README.md), the Rust
//! reference the other guest languages are compared against byte for byte:
//! appends `upper` (ASCII letters upper-cased, every other character
//! unchanged) and `chars` (the number of Unicode code points) of a utf8
//! column, both null where it is null.

use std::sync::Arc;

use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::{ArrayRef, Int64Array, StringArray};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_column")]
    column: String,
}

fn default_column() -> String {
    "text".into()
}

/// The computed columns, appended in this order.
const UPPER: &str = "upper";
const CHARS: &str = "chars";

struct Strings {
    schema: SchemaRef,
    column: usize,
}

impl Operator for Strings {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?;
        let column = ctx.typed_column(0, &config.column, &DataType::Utf8, "strings")?;
        for name in [UPPER, CHARS] {
            if input.index_of(name).is_ok() {
                return Err(Error::config(format!("strings: the input already has a column `{name}`")));
            }
        }
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new(UPPER, DataType::Utf8, true)));
        fields.push(Arc::new(Field::new(CHARS, DataType::Int64, true)));
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Self { schema, column })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Every input column carried, then `upper` and `chars`.
    fn shape(&self) -> Shape {
        let carried = self.schema.fields().len() - 2;
        Shape::new().reads(0, [self.column]).carries((0..carried).map(Some).chain([None, None]))
    }

    /// `batch` holds only the text column.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let text =
            batch.column(0).as_string_opt::<i32>().ok_or_else(|| Error::input("strings: the column must be utf8"))?;
        let upper: StringArray = text.iter().map(|s| s.map(str::to_ascii_uppercase)).collect();
        let chars: Int64Array = text.iter().map(|s| s.map(|s| s.chars().count() as i64)).collect();
        let columns: Vec<ArrayRef> = vec![Arc::new(upper), Arc::new(chars)];
        out.emit(&RecordBatch::try_new(out.schema().clone(), columns)?)
    }
}

export_operator!(Strings);
