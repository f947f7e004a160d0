//! The `strings` operator: one string function over one column, configured
//! without SQL; the functions are `flumen-expr`'s kernels.
//!
//! Only its input column enters the guest and only the computed column
//! leaves it; the host carries every other column.

use std::sync::Arc;

use flumen_expr::kernels::{self, RegexExtract};
use flumen_expr::{columns_hint, type_name};
use flumen_sdk::arrow_array::{ArrayRef, RecordBatchOptions};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

/// `config = { column = "url", function = "url-host", output = "host" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The input column (utf8, large-utf8 or utf8-view).
    column: String,
    function: Function,
    /// `split`: the separator.
    delimiter: Option<String>,
    /// `split`: which field, from 1 (negative: from the end).
    index: Option<i64>,
    /// `extract` / `regex`: the regular expression.
    pattern: Option<String>,
    /// `extract` / `regex`: which capture group (0 = the whole match).
    group: Option<i64>,
    /// The column to write: appended, or replaced in place if the input has it.
    output: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Function {
    Split,
    Extract,
    Regex,
    UrlHost,
    UrlPath,
    Lower,
    Upper,
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Function::Split => "split",
            Function::Extract => "extract",
            Function::Regex => "regex",
            Function::UrlHost => "url-host",
            Function::UrlPath => "url-path",
            Function::Lower => "lower",
            Function::Upper => "upper",
        }
    }
}

/// A function with its arguments checked and its pattern compiled.
enum Prepared {
    Split { delimiter: String, index: i64 },
    Extract(RegexExtract),
    UrlHost,
    UrlPath,
    Lower,
    Upper,
}

impl Prepared {
    fn new(config: &Config) -> Result<Self, Error> {
        let f = config.function;
        let reject = |key: &str, present: bool| {
            if present {
                Err(Error::config(format!("strings: `{key}` does not apply to function `{}`", f.name())))
            } else {
                Ok(())
            }
        };
        let require = |key: &str| Error::config(format!("strings: function `{}` needs `{key}`", f.name()));
        match f {
            Function::Split => {
                reject("pattern", config.pattern.is_some())?;
                reject("group", config.group.is_some())?;
                let delimiter = config.delimiter.clone().ok_or_else(|| require("delimiter"))?;
                let index = config.index.ok_or_else(|| require("index"))?;
                if index == 0 {
                    return Err(Error::config(
                        "strings: `index` must not be 0: fields count from 1, negative ones from the end",
                    ));
                }
                Ok(Prepared::Split { delimiter, index })
            }
            Function::Extract | Function::Regex => {
                reject("delimiter", config.delimiter.is_some())?;
                reject("index", config.index.is_some())?;
                let pattern = config.pattern.as_deref().ok_or_else(|| require("pattern"))?;
                let default_group = match f {
                    // `extract` takes the first capture group unless told otherwise.
                    Function::Extract => i64::from(RegexExtract::new(pattern, 1).is_ok()),
                    _ => 0,
                };
                let group = config.group.unwrap_or(default_group);
                let extract = RegexExtract::new(pattern, group)
                    .map_err(|e| Error::config(format!("strings: {}", e.message())))?;
                Ok(Prepared::Extract(extract))
            }
            Function::UrlHost | Function::UrlPath | Function::Lower | Function::Upper => {
                for (key, present) in [
                    ("delimiter", config.delimiter.is_some()),
                    ("index", config.index.is_some()),
                    ("pattern", config.pattern.is_some()),
                    ("group", config.group.is_some()),
                ] {
                    reject(key, present)?;
                }
                Ok(match f {
                    Function::UrlHost => Prepared::UrlHost,
                    Function::UrlPath => Prepared::UrlPath,
                    Function::Lower => Prepared::Lower,
                    _ => Prepared::Upper,
                })
            }
        }
    }

    fn apply(&self, column: &dyn flumen_sdk::arrow_array::Array) -> Result<ArrayRef, flumen_expr::ExprError> {
        match self {
            Prepared::Split { delimiter, index } => kernels::split_part(column, delimiter, *index),
            Prepared::Extract(extract) => extract.apply(column),
            Prepared::UrlHost => kernels::url_host(column),
            Prepared::UrlPath => kernels::url_path(column),
            Prepared::Lower => kernels::lower(column),
            Prepared::Upper => kernels::upper(column),
        }
    }
}

/// Where the result goes in the output.
enum Slot {
    Replace(usize),
    Append,
}

struct Strings {
    schema: SchemaRef,
    input: usize,
    function: Prepared,
    slot: Slot,
    describe: String,
}

impl Operator for Strings {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if ctx.inputs.len() != 1 {
            return Err(Error::config(format!(
                "strings: takes one input, operator `{}` has {}",
                ctx.operator_id,
                ctx.inputs.len()
            )));
        }
        let schema = ctx.input(0)?.clone();
        let input = schema.index_of(&config.column).map_err(|_| {
            Error::config(format!("strings: unknown column `{}`; {}", config.column, columns_hint(&schema)))
        })?;
        let input_type = schema.field(input).data_type();
        if !matches!(input_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return Err(Error::config(format!(
                "strings: column `{}` is {}, not a string",
                config.column,
                type_name(input_type)
            )));
        }
        if config.output.is_empty() {
            return Err(Error::config("strings: `output` must not be empty"));
        }
        let function = Prepared::new(&config)?;
        let field = Field::new(config.output.clone(), kernels::string_output_type(input_type), true);
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let slot = match schema.index_of(&config.output) {
            Ok(i) => {
                fields[i] = field;
                Slot::Replace(i)
            }
            Err(_) => {
                fields.push(field);
                Slot::Append
            }
        };
        let describe = format!("{}({}) -> {}", config.function.name(), config.column, config.output);
        Ok(Self {
            schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
            input,
            function,
            slot,
            describe,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Reads its input column; carries every other column (the replaced one excepted).
    fn shape(&self) -> Shape {
        let carried = (0..self.schema.fields().len()).map(|i| match self.slot {
            Slot::Replace(r) if r == i => None,
            Slot::Append if i + 1 == self.schema.fields().len() => None,
            _ => Some(i),
        });
        Shape::new().reads(0, [self.input]).carries(carried)
    }

    /// `batch` holds the input column only.
    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let column =
            batch.columns().first().ok_or_else(|| Error::input("strings: the batch lacks its input column"))?;
        let result = self
            .function
            .apply(column.as_ref())
            .map_err(|e| Error::input(format!("strings: {}: {e}", self.describe)))?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.emit(&RecordBatch::try_new_with_options(out.schema().clone(), vec![result], &options)?)
    }
}

export_operator!(Strings);

#[cfg(test)]
mod tests {
    use super::*;
    use flumen_sdk::arrow_array::StringArray;
    use flumen_sdk::arrow_array::cast::AsArray;

    fn context() -> Context {
        let schema =
            Schema::new(vec![Field::new("url", DataType::Utf8, true), Field::new("n", DataType::Int64, false)]);
        Context { operator_id: "s".into(), subtask: 0, parallelism: 1, inputs: vec![Arc::new(schema)] }
    }

    fn open(json: &str) -> Result<Strings, Error> {
        Strings::open(&context(), serde_json::from_str(json).map_err(|e| Error::config(e.to_string()))?)
    }

    fn run(json: &str) -> Vec<Option<String>> {
        let s = open(json).unwrap();
        let urls = StringArray::from(vec![Some("https://Example.com/a/b?q=1"), None, Some("not/a/url")]);
        let out = s.function.apply(&urls).unwrap();
        out.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect()
    }

    fn some(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn functions() {
        assert_eq!(
            run(r#"{"column": "url", "function": "url-host", "output": "host"}"#),
            vec![some("Example.com"), None, None]
        );
        assert_eq!(run(r#"{"column": "url", "function": "url-path", "output": "p"}"#), vec![some("/a/b"), None, None]);
        assert_eq!(
            run(r#"{"column": "url", "function": "split", "delimiter": "/", "index": 2, "output": "p"}"#),
            vec![some(""), None, some("a")]
        );
        assert_eq!(
            run(r#"{"column": "url", "function": "split", "delimiter": "/", "index": -1, "output": "p"}"#),
            vec![some("b?q=1"), None, some("url")]
        );
        assert_eq!(
            run(r#"{"column": "url", "function": "extract", "pattern": "//([^/]+)", "output": "p"}"#),
            vec![some("Example.com"), None, None]
        );
        assert_eq!(
            run(r#"{"column": "url", "function": "extract", "pattern": "[a-z]+", "output": "p"}"#),
            vec![some("https"), None, some("not")]
        );
        assert_eq!(
            run(r#"{"column": "url", "function": "regex", "pattern": "//([^/]+)", "output": "p"}"#),
            vec![some("//Example.com"), None, None]
        );
        assert_eq!(
            run(r#"{"column": "url", "function": "regex", "pattern": "(\\w+)/(\\w+)", "group": 2, "output": "p"}"#),
            vec![some("a"), None, some("a")]
        );
        assert_eq!(
            run(r#"{"column": "url", "function": "lower", "output": "p"}"#)[0],
            some("https://example.com/a/b?q=1")
        );
        assert_eq!(run(r#"{"column": "url", "function": "upper", "output": "p"}"#)[2], some("NOT/A/URL"));
    }

    #[test]
    fn output_schema() {
        let s = open(r#"{"column": "url", "function": "url-host", "output": "host"}"#).unwrap();
        let fields: Vec<_> = s.schema().fields().iter().map(|f| (f.name().clone(), f.is_nullable())).collect();
        assert_eq!(fields, vec![("url".into(), true), ("n".into(), false), ("host".into(), true)]);
        assert_eq!(s.shape(), Shape::new().reads(0, [0]).carries([Some(0), Some(1), None]));
        let s = open(r#"{"column": "url", "function": "lower", "output": "url"}"#).unwrap();
        assert_eq!(s.schema().fields().len(), 2, "an existing output column is replaced in place");
        assert_eq!(s.shape(), Shape::new().reads(0, [0]).carries([None, Some(1)]));
    }

    #[test]
    fn config_errors_name_the_problem() {
        let cases = [
            (
                r#"{"column": "ur", "function": "lower", "output": "x"}"#,
                "strings: unknown column `ur`; columns are: url, n",
            ),
            (r#"{"column": "n", "function": "lower", "output": "x"}"#, "strings: column `n` is int64, not a string"),
            (
                r#"{"column": "url", "function": "split", "index": 1, "output": "x"}"#,
                "strings: function `split` needs `delimiter`",
            ),
            (
                r#"{"column": "url", "function": "split", "delimiter": "/", "output": "x"}"#,
                "strings: function `split` needs `index`",
            ),
            (
                r#"{"column": "url", "function": "split", "delimiter": "/", "index": 0, "output": "x"}"#,
                "strings: `index` must not be 0: fields count from 1, negative ones from the end",
            ),
            (
                r#"{"column": "url", "function": "split", "delimiter": "/", "index": 1, "pattern": "a", "output": "x"}"#,
                "strings: `pattern` does not apply to function `split`",
            ),
            (
                r#"{"column": "url", "function": "extract", "output": "x"}"#,
                "strings: function `extract` needs `pattern`",
            ),
            (
                r#"{"column": "url", "function": "extract", "pattern": "(a)", "group": 3, "output": "x"}"#,
                "strings: regexp_extract: group 3 is out of range: pattern `(a)` has 1 capture group",
            ),
            (
                r#"{"column": "url", "function": "lower", "delimiter": "/", "output": "x"}"#,
                "strings: `delimiter` does not apply to function `lower`",
            ),
            (r#"{"column": "url", "function": "lower", "output": ""}"#, "strings: `output` must not be empty"),
        ];
        for (json, want) in cases {
            let e = open(json).err().unwrap();
            assert_eq!(e.kind, flumen_sdk::ErrorKind::InvalidConfig, "{json}");
            assert_eq!(e.message, want, "{json}");
        }
        let e = open(r#"{"column": "url", "function": "regex", "pattern": "(", "output": "x"}"#).err().unwrap();
        assert!(e.message.starts_with("strings: regexp_extract: invalid pattern `(`: "), "{}", e.message);
        let e = open(r#"{"column": "url", "function": "reverse", "output": "x"}"#).err().unwrap();
        assert!(e.message.contains("unknown variant `reverse`, expected one of `split`, `extract`, `regex`, `url-host`, `url-path`, `lower`, `upper`"), "{}", e.message);
        assert!(
            open(r#"{"column": "url", "function": "lower", "output": "x", "typo": 1}"#)
                .err()
                .unwrap()
                .message
                .contains("unknown field `typo`")
        );
    }
}
