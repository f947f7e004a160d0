//! The `classify-image` operator: a column of image references → the top-k
//! labels and scores of a classification model. The host reads, decodes,
//! resizes and normalizes the images itself (the model's `[preprocess.image]`)
//! and batches the calls of every instance: no image byte enters this
//! sandbox. Labels come from the model folder's labels file.

use std::sync::Arc;

use flumen_sdk::arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use flumen_sdk::arrow_array::{ArrayRef, RecordBatchOptions};
use flumen_sdk::blob::BlobColumn;
use flumen_sdk::inference::{Model, TensorType};
use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};
use serde::Deserialize;

/// `config = { model = "tiny-cnn", input = "image", k = 1 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    model: String,
    /// The column of image references (`flumen.image` or `flumen.blob`).
    input: String,
    /// How many labels per row (default 1: scalar columns; more: lists, best first).
    #[serde(default = "one")]
    k: usize,
    /// Output column names (default `label` and `score`).
    #[serde(default = "label")]
    label: String,
    #[serde(default = "score")]
    score: String,
    /// Turn the model's logits into probabilities (default true; false when
    /// the model ends in a softmax itself).
    #[serde(default = "yes")]
    softmax: bool,
}

fn one() -> usize {
    1
}
fn label() -> String {
    "label".into()
}
fn score() -> String {
    "score".into()
}
fn yes() -> bool {
    true
}

struct Classify {
    model: Model,
    schema: SchemaRef,
    input: usize,
    carried: usize,
    k: usize,
    classes: usize,
    labels: Vec<String>,
    softmax: bool,
}

impl Operator for Classify {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input_schema = ctx.input(0)?.clone();
        let input = input_schema.index_of(&config.input).map_err(|_| {
            let names: Vec<&str> = input_schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::config(format!("classify-image: `{}` is not an input column ({})", config.input, names.join(", ")))
        })?;
        let model = Model::load(&config.model)?;
        let info = model.info().clone();
        if info.accepts.as_deref() != Some("image") {
            return Err(Error::config(format!(
                "classify-image: model `{}` takes no images; give its model.toml a [preprocess.image] table",
                info.name
            )));
        }
        let out = info.outputs.first().ok_or_else(|| Error::config("classify-image: the model has no output"))?;
        if out.dtype != TensorType::Float32 || out.shape.len() != 2 || out.shape[1] <= 0 {
            return Err(Error::config(format!(
                "classify-image: model `{}` gives `{}` as {:?} {:?}; classify-image takes float32 [rows, classes]",
                info.name, out.name, out.dtype, out.shape
            )));
        }
        let classes = out.shape[1] as usize;
        if !info.labels.is_empty() && info.labels.len() != classes {
            return Err(Error::config(format!(
                "classify-image: model `{}` has {classes} classes but {} labels",
                info.name,
                info.labels.len()
            )));
        }
        if config.k == 0 || config.k > classes {
            return Err(Error::config(format!("classify-image: k = {} (1 to {classes})", config.k)));
        }
        let metadata: std::collections::HashMap<String, String> = [
            ("flumen.model".to_owned(), info.name.clone()),
            ("flumen.model.digest".to_owned(), format!("sha256:{}", info.digest)),
        ]
        .into_iter()
        .collect();
        let (label_type, score_type) = if config.k == 1 {
            (DataType::Utf8, DataType::Float32)
        } else {
            (
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            )
        };
        let mut fields: Vec<Field> = input_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for name in [&config.label, &config.score] {
            if input_schema.index_of(name).is_ok() {
                return Err(Error::config(format!("classify-image: output `{name}` is already an input column")));
            }
        }
        fields.push(Field::new(config.label.clone(), label_type, true).with_metadata(metadata.clone()));
        fields.push(Field::new(config.score.clone(), score_type, true).with_metadata(metadata));
        let labels = info.labels.clone();
        Ok(Classify {
            model,
            schema: Arc::new(Schema::new_with_metadata(fields, input_schema.metadata().clone())),
            input,
            carried: input_schema.fields().len(),
            k: config.k,
            classes,
            labels,
            softmax: config.softmax,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        let mut layout: Vec<Option<usize>> = (0..self.carried).map(Some).collect();
        layout.extend([None, None]);
        Shape::new().reads(0, [self.input]).carries(layout)
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let column = BlobColumn::new(batch.column(0))?;
        let mut refs = Vec::with_capacity(rows);
        let mut present = Vec::with_capacity(rows);
        for row in 0..rows {
            match column.get(row) {
                Some(r) => {
                    present.push(Some(refs.len()));
                    refs.push(r);
                }
                None => present.push(None),
            }
        }
        let (outputs, failed) =
            if refs.is_empty() { (Vec::new(), Vec::new()) } else { self.model.infer_blobs(&refs)? };
        if let Some(f) = failed.first() {
            return Err(Error::input(format!("classify-image: cannot classify {}", f.message)));
        }
        let scores = match outputs.first() {
            Some(t) => t.to_f32()?,
            None => Vec::new(),
        };
        let mut label_col = StringBuilder::new();
        let mut score_col = Float32Builder::new();
        let mut label_list = ListBuilder::new(StringBuilder::new());
        let mut score_list = ListBuilder::new(Float32Builder::new());
        for p in present {
            let Some(i) = p else {
                if self.k == 1 {
                    label_col.append_null();
                    score_col.append_null();
                } else {
                    label_list.append_null();
                    score_list.append_null();
                }
                continue;
            };
            let top = self.top(&scores[i * self.classes..(i + 1) * self.classes]);
            if self.k == 1 {
                label_col.append_value(self.label_of(top[0].0));
                score_col.append_value(top[0].1);
            } else {
                for (c, s) in &top {
                    label_list.values().append_value(self.label_of(*c));
                    score_list.values().append_value(*s);
                }
                label_list.append(true);
                score_list.append(true);
            }
        }
        let columns: Vec<ArrayRef> = if self.k == 1 {
            vec![Arc::new(label_col.finish()), Arc::new(score_col.finish())]
        } else {
            vec![Arc::new(label_list.finish()), Arc::new(score_list.finish())]
        };
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        out.emit(&RecordBatch::try_new_with_options(out.schema().clone(), columns, &options)?)
    }
}

impl Classify {
    /// The `k` best classes of one row and their scores, best first.
    fn top(&self, logits: &[f32]) -> Vec<(usize, f32)> {
        let probs: Vec<f32> = if self.softmax {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.iter().map(|e| e / sum).collect()
        } else {
            logits.to_vec()
        };
        let mut order: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        order.truncate(self.k);
        order
    }

    fn label_of(&self, class: usize) -> String {
        self.labels.get(class).cloned().unwrap_or_else(|| format!("class {class}"))
    }
}

export_operator!(Classify);
