//! The `embed-text` operator: a text column (or text files by reference) →
//! one `flumen.embedding` per row from a sentence-encoder model. The host
//! tokenizes with the model folder's `tokenizer.json`, batches the calls of
//! every instance, runs the encoder and mean-pools into unit vectors (the
//! model's `[preprocess.text]`); text by reference never enters this sandbox.

use std::sync::Arc;

use flumen_sdk::arrow_array::cast::AsArray;
use flumen_sdk::arrow_array::{Array, ArrayRef, RecordBatchOptions};
use flumen_sdk::blob::BlobColumn;
use flumen_sdk::inference::{Model, RowFailure, Tensor, TensorType};
use flumen_sdk::media::EmbeddingBuilder;
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

/// `config = { model = "minilm", input = "chunk", output = "embedding" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    model: String,
    /// The text column (`utf8`, `large_utf8`), or text blobs by reference.
    input: String,
    /// The embedding column appended (default `embedding`).
    #[serde(default = "embedding")]
    output: String,
}

fn embedding() -> String {
    "embedding".into()
}

/// How the input column holds its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Text,
    Blobs,
}

struct Embed {
    model: Model,
    schema: SchemaRef,
    input: usize,
    kind: Input,
    carried: usize,
    dim: usize,
}

impl Operator for Embed {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input_schema = ctx.input(0)?.clone();
        let input = input_schema.index_of(&config.input).map_err(|_| {
            let names: Vec<&str> = input_schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::config(format!("embed-text: `{}` is not an input column ({})", config.input, names.join(", ")))
        })?;
        let field = input_schema.field(input);
        let kind = match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Input::Text,
            _ if flumen_sdk::media::is_blob_ref(field) => Input::Blobs,
            other => {
                return Err(Error::config(format!(
                    "embed-text: column `{}` is {other}; embed-text takes text or text files by reference",
                    config.input
                )));
            }
        };
        if input_schema.index_of(&config.output).is_ok() {
            return Err(Error::config(format!("embed-text: output `{}` is already an input column", config.output)));
        }
        let model = Model::load(&config.model)?;
        let info = model.info().clone();
        if info.accepts.as_deref() != Some("text") {
            return Err(Error::config(format!(
                "embed-text: model `{}` takes no text; give its model.toml a [preprocess.text] table",
                info.name
            )));
        }
        let out = info.outputs.first().ok_or_else(|| Error::config("embed-text: the model has no output"))?;
        let dim = out.shape.last().copied().unwrap_or(-1);
        if out.dtype != TensorType::Float32 || dim <= 0 {
            return Err(Error::config(format!(
                "embed-text: model `{}` gives `{}` as {:?} {:?}; embed-text needs float32 states with a fixed last dimension",
                info.name, out.name, out.dtype, out.shape
            )));
        }
        let dim = dim as usize;
        let builder = EmbeddingBuilder::new(dim, Some(&info.name))?;
        let mut fields: Vec<Field> = input_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut out_field = builder.field(&config.output, true);
        let mut metadata = out_field.metadata().clone();
        metadata.insert("flumen.model.digest".to_owned(), format!("sha256:{}", info.digest));
        out_field = out_field.with_metadata(metadata);
        fields.push(out_field);
        Ok(Embed {
            model,
            schema: Arc::new(Schema::new_with_metadata(fields, input_schema.metadata().clone())),
            input,
            kind,
            carried: input_schema.fields().len(),
            dim,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        let mut layout: Vec<Option<usize>> = (0..self.carried).map(Some).collect();
        layout.push(None);
        Shape::new().reads(0, [self.input]).carries(layout)
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let column = batch.column(0);
        // Row → its place among the non-null rows sent to the model.
        let mut present: Vec<Option<usize>> = Vec::with_capacity(rows);
        let (outputs, failed) = match self.kind {
            Input::Text => {
                let texts = text_values(column)?;
                let mut sent = Vec::with_capacity(rows);
                for t in texts {
                    present.push(t.map(|t| {
                        sent.push(t);
                        sent.len() - 1
                    }));
                }
                if sent.is_empty() { (Vec::new(), Vec::new()) } else { self.model.infer_texts(&sent)? }
            }
            Input::Blobs => {
                let blobs = BlobColumn::new(column)?;
                let mut refs = Vec::with_capacity(rows);
                for row in 0..rows {
                    present.push(blobs.get(row).map(|r| {
                        refs.push(r);
                        refs.len() - 1
                    }));
                }
                if refs.is_empty() { (Vec::new(), Vec::new()) } else { self.model.infer_blobs(&refs)? }
            }
        };
        if let Some(RowFailure { message, .. }) = failed.first() {
            return Err(Error::input(format!("embed-text: cannot embed {message}")));
        }
        let sent = present.iter().flatten().count();
        let values = self.vectors(outputs.first(), sent)?;
        let mut builder = EmbeddingBuilder::new(self.dim, None)?;
        for p in present {
            match p {
                Some(i) => builder.append(&values[i * self.dim..(i + 1) * self.dim])?,
                None => builder.append_null(),
            }
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(builder.finish())];
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        out.emit(&RecordBatch::try_new_with_options(out.schema().clone(), columns, &options)?)
    }
}

impl Embed {
    /// The model's pooled `[rows, dim]` output as values, checked.
    fn vectors(&self, tensor: Option<&Tensor>, rows: usize) -> Result<Vec<f32>, Error> {
        let Some(t) = tensor else {
            return if rows == 0 {
                Ok(Vec::new())
            } else {
                Err(Error::internal("embed-text: the model gave no output"))
            };
        };
        if t.shape != [rows as u64, self.dim as u64] {
            return Err(Error::config(format!(
                "embed-text: the model gave {:?} for {rows} rows, not [{rows}, {}]: set `pool = \"mean\"` or \"cls\" in its [preprocess.text]",
                t.shape, self.dim
            )));
        }
        t.to_f32()
    }
}

/// The text of each row of a string column (`None` for nulls).
fn text_values(column: &ArrayRef) -> Result<Vec<Option<&str>>, Error> {
    Ok(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().collect(),
        DataType::LargeUtf8 => column.as_string::<i64>().iter().collect(),
        DataType::Utf8View => column.as_string_view().iter().collect(),
        other => return Err(Error::input(format!("embed-text: the input column is {other}, not text"))),
    })
}

export_operator!(Embed);
