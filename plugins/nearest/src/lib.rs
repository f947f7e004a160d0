//! The `nearest` operator, the query side of semantic search: embeds one
//! query text with the job's sentence encoder when it opens, scores every
//! input row by the cosine similarity of its `flumen.embedding` with the
//! query, keeps the `k` best rows across all batches and emits them when the
//! input ends, best first.
//!
//! ```toml
//! [[operator]]
//! id = "answers"
//! plugin = "nearest"
//! capabilities = ["inference"]
//! parallelism = 1
//! config = { model = "minilm", query = "How do I fix a flat tyre?", column = "embedding", k = 5, score = "score" }
//! inputs = ["chunks"]
//! ```
//!
//! Output: every input column (the embedding too), then `score` (float32, the
//! cosine similarity, in [-1, 1]) and `rank` (uint32, 1 for the best): at most
//! `k` rows, best first. Rows whose embedding is null, all zeros or not finite
//! have no direction and are skipped. Equal scores rank in arrival order.
//!
//! The top k is that of one instance: run the operator with `parallelism = 1`
//! (the default) for the k best rows of the whole input. With N instances,
//! each emits the k best of the rows it was dealt: N × k rows, N ranked 1.
//!
//! The kept rows are saved with every checkpoint (an Arrow IPC stream), so a
//! resumed job still ranks the rows it read before its checkpoint.

use std::cmp::Ordering;
use std::io::Cursor;
use std::sync::Arc;

use flumen_sdk::arrow_array::{ArrayRef, Float32Array, UInt32Array};
use flumen_sdk::arrow_select::interleave::interleave_record_batch;
use flumen_sdk::inference::{Model, TensorType};
use flumen_sdk::media::{self, EmbeddingColumn};
use flumen_sdk::{Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, export_operator};
use serde::Deserialize;

/// Most rows `k` may ask for. The kept rows live in the instance's memory and
/// leave in one `finish` call, so a mistyped `k = 10000000` would exhaust the
/// instance's memory or its per-call output limits mid-run instead of being
/// refused when the job is planned.
pub const K_MAX: u64 = 10_000;

/// Metadata key under which `embed-text` records the SHA-256 of the model
/// that made a column.
const DIGEST_KEY: &str = "flumen.model.digest";

/// `config = { model = "minilm", query = "…", column = "embedding", k = 5, score = "score" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The sentence encoder that embeds the query: the one that made `column`.
    model: String,
    /// The text searched for.
    query: String,
    /// The `flumen.embedding` column scored (default `embedding`).
    #[serde(default = "embedding")]
    column: String,
    /// Rows kept and emitted (default 5, at most [`K_MAX`]).
    #[serde(default = "five")]
    k: u64,
    /// The similarity column appended (default `score`).
    #[serde(default = "score")]
    score: String,
    /// The rank column appended (default `rank`).
    #[serde(default = "rank")]
    rank: String,
}

fn embedding() -> String {
    "embedding".into()
}
fn five() -> u64 {
    5
}
fn score() -> String {
    "score".into()
}
fn rank() -> String {
    "rank".into()
}

struct Nearest {
    layout: Layout,
    /// The query's embedding.
    query: Vec<f32>,
    /// The scores of the best rows so far, best first.
    best: Vec<Scored>,
    /// Copies of those rows, in the same order.
    kept: RecordBatch,
    /// Arrival number of the next input row: breaks ties between equal scores.
    next_seq: u64,
}

/// What `open` learns from the config and the input schema, before any model
/// is loaded.
#[derive(Debug)]
struct Layout {
    input: SchemaRef,
    output: SchemaRef,
    /// Index of the embedding column in the input.
    column: usize,
    column_name: String,
    dim: usize,
    /// The model the column says made it, and that model's digest.
    made_by: Option<String>,
    digest: Option<String>,
    k: usize,
}

impl Operator for Nearest {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let layout = Layout::new(ctx.input(0)?, &config)?;
        let model = Model::load(&config.model)?;
        let query = layout.embed_query(&model, &config.query)?;
        Ok(Nearest { kept: RecordBatch::new_empty(layout.input.clone()), layout, query, best: Vec::new(), next_seq: 0 })
    }

    fn schema(&self) -> SchemaRef {
        self.layout.output.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, _out: &mut Emitter) -> Result<(), Error> {
        self.offer(&batch)
    }

    fn finish(&mut self, out: &mut Emitter) -> Result<(), Error> {
        if let Some(ranked) = self.ranked()? {
            out.emit(&ranked)?;
        }
        self.best.clear();
        self.kept = RecordBatch::new_empty(self.layout.input.clone());
        Ok(())
    }

    fn save(&mut self) -> Result<Vec<u8>, Error> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&self.next_seq.to_le_bytes());
        bytes.extend_from_slice(&(self.best.len() as u64).to_le_bytes());
        for s in &self.best {
            bytes.extend_from_slice(&s.score.to_le_bytes());
            bytes.extend_from_slice(&s.seq.to_le_bytes());
        }
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &self.layout.input)
            .map_err(|e| Error::internal(format!("nearest: cannot save the kept rows: {e}")))?;
        writer.write(&self.kept).map_err(|e| Error::internal(format!("nearest: cannot save the kept rows: {e}")))?;
        writer.finish().map_err(|e| Error::internal(format!("nearest: cannot save the kept rows: {e}")))?;
        Ok(bytes)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), Error> {
        let bad = |m: String| Error::internal(format!("nearest: the checkpoint's kept rows do not parse: {m}"));
        let (next_seq, best, ipc) = split_saved(data, self.layout.k).map_err(bad)?;
        let reader =
            arrow_ipc::reader::StreamReader::try_new(Cursor::new(ipc), None).map_err(|e| bad(e.to_string()))?;
        if reader.schema().fields() != self.layout.input.fields() {
            return Err(bad("its schema is not the input's".into()));
        }
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
        let kept = match batches.as_slice() {
            [] => RecordBatch::new_empty(self.layout.input.clone()),
            [one] => one.clone(),
            _ => return Err(bad(format!("{} batches instead of one", batches.len()))),
        };
        if kept.num_rows() != best.len() {
            return Err(bad(format!("{} rows for {} scores", kept.num_rows(), best.len())));
        }
        // The host's schema, metadata included, for the batches that follow.
        self.kept = RecordBatch::try_new(self.layout.input.clone(), kept.columns().to_vec())?;
        self.best = best;
        self.next_seq = next_seq;
        Ok(())
    }
}

/// What [`Nearest::save`] wrote: the next arrival number, the kept rows'
/// scores (best first), and the rest, the rows as an Arrow IPC stream.
fn split_saved(data: &[u8], k: usize) -> Result<(u64, Vec<Scored>, &[u8]), String> {
    let short = || format!("it ends at byte {}", data.len());
    let next_seq = read_u64(data, 0).ok_or_else(short)?;
    let n = read_u64(data, 8).ok_or_else(short)?;
    if n > k as u64 {
        return Err(format!("it holds {n} rows, more than k = {k}"));
    }
    let mut best = Vec::with_capacity(n as usize);
    let mut at = 16;
    for _ in 0..n {
        let score = data.get(at..at + 4).and_then(|b| b.try_into().ok()).map(f32::from_le_bytes).ok_or_else(short)?;
        best.push(Scored { score, seq: read_u64(data, at + 4).ok_or_else(short)? });
        at += 12;
    }
    Ok((next_seq, best, &data[at..]))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

impl Nearest {
    /// Scores `batch`'s rows and keeps a copy of those among the k best so
    /// far; the batch itself is not held on to.
    fn offer(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let schema = batch.schema();
        let embeddings =
            EmbeddingColumn::new(schema.field(self.layout.column), batch.column(self.layout.column).as_ref())?;
        if embeddings.dim() != self.query.len() {
            return Err(Error::input(format!(
                "nearest: column `{}` arrived with {} dimensions, not the {} it had when the operator opened",
                self.layout.column_name,
                embeddings.dim(),
                self.query.len()
            )));
        }
        let first = self.next_seq;
        self.next_seq += rows as u64;
        let scored: Vec<(usize, Scored)> = (0..rows)
            .filter_map(|row| {
                let score = cosine(&self.query, embeddings.get(row)?)?;
                Some((row, Scored { score, seq: first + row as u64 }))
            })
            .collect();
        let merged = merge(&self.best, scored, self.layout.k);
        if merged.iter().all(|(from, _)| matches!(from, Source::Kept(_))) {
            return Ok(()); // nothing of this batch made it in
        }
        let indices: Vec<(usize, usize)> = merged
            .iter()
            .map(|(from, _)| match *from {
                Source::Kept(i) => (0, i),
                Source::Batch(row) => (1, row),
            })
            .collect();
        self.kept = interleave_record_batch(&[&self.kept, batch], &indices)?;
        self.best = merged.into_iter().map(|(_, s)| s).collect();
        Ok(())
    }

    /// The kept rows, best first, with their scores and ranks; `None` if no
    /// row had an embedding.
    fn ranked(&self) -> Result<Option<RecordBatch>, Error> {
        if self.best.is_empty() {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> = self.kept.columns().to_vec();
        columns.push(Arc::new(Float32Array::from_iter_values(self.best.iter().map(|s| s.score))));
        columns.push(Arc::new(UInt32Array::from_iter_values(1..=self.best.len() as u32)));
        Ok(Some(RecordBatch::try_new(self.layout.output.clone(), columns)?))
    }
}

impl Layout {
    /// Checks the config against the input schema and lays out the output.
    fn new(input: &SchemaRef, config: &Config) -> Result<Layout, Error> {
        let names = || input.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
        let (column, field) = input.column_with_name(&config.column).ok_or_else(|| {
            Error::config(format!("nearest: no column `{}`; columns are: {}", config.column, names()))
        })?;
        if media::extension_name(field) != Some(media::EMBEDDING) {
            return Err(Error::config(format!(
                "nearest: column `{}` is {}, not a `{}`; make it with embed-text",
                config.column,
                field.data_type(),
                media::EMBEDDING
            )));
        }
        let empty = flumen_sdk::arrow_array::new_empty_array(field.data_type());
        let embedding = EmbeddingColumn::new(field, empty.as_ref())
            .map_err(|e| Error::config(format!("nearest: {}", e.message)))?;
        if let Some(blob) = input.fields().iter().find(|f| media::is_blob_ref(f)) {
            return Err(Error::config(format!(
                "nearest: column `{}` holds blob references, which nearest cannot keep past the batch that brought them; drop it before nearest",
                blob.name()
            )));
        }
        if config.query.trim().is_empty() {
            return Err(Error::config("nearest: `query` is empty"));
        }
        if config.k == 0 || config.k > K_MAX {
            return Err(Error::config(format!("nearest: `k` is {}; it must be from 1 to {K_MAX}", config.k)));
        }
        if config.score == config.rank {
            return Err(Error::config(format!("nearest: `score` and `rank` are both `{}`", config.score)));
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for name in [&config.score, &config.rank] {
            if input.index_of(name).is_ok() {
                return Err(Error::config(format!(
                    "nearest: the input already has a column `{name}`; name the output otherwise (`score`, `rank`)"
                )));
            }
        }
        fields.push(Field::new(&config.score, DataType::Float32, false));
        fields.push(Field::new(&config.rank, DataType::UInt32, false));
        Ok(Layout {
            input: input.clone(),
            output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            column,
            column_name: config.column.clone(),
            dim: embedding.dim(),
            made_by: embedding.model().map(str::to_owned),
            digest: field.metadata().get(DIGEST_KEY).cloned(),
            k: config.k as usize,
        })
    }

    /// The query's embedding by `model`, which must be the model that made
    /// the column and give vectors of its dimension.
    fn embed_query(&self, model: &Model, query: &str) -> Result<Vec<f32>, Error> {
        let info = model.info();
        let name = &info.name;
        if info.accepts.as_deref() != Some("text") {
            return Err(Error::config(format!(
                "nearest: model `{name}` takes no text, so it cannot embed the query; give its model.toml a [preprocess.text] table"
            )));
        }
        if let Some(made_by) = self.made_by.as_deref().filter(|m| m != name) {
            return Err(Error::config(format!(
                "nearest: column `{}` holds embeddings of model `{made_by}`, but the query would be embedded by `{name}`: similarities across models mean nothing; set `model = \"{made_by}\"`",
                self.column_name
            )));
        }
        let digest = format!("sha256:{}", info.digest);
        if let Some(made_with) = self.digest.as_deref().filter(|d| *d != digest) {
            return Err(Error::config(format!(
                "nearest: column `{}` was embedded by model `{name}` {made_with}, but that model is now {digest}: embed the rows again",
                self.column_name
            )));
        }
        let (outputs, failed) = model.infer_texts(&[query])?;
        if let Some(f) = failed.first() {
            return Err(Error::config(format!("nearest: model `{name}` cannot embed the query: {}", f.message)));
        }
        let tensor = outputs.first().ok_or_else(|| Error::config(format!("nearest: model `{name}` gave no output")))?;
        if tensor.dtype != TensorType::Float32 || tensor.shape.len() != 2 || tensor.shape[0] != 1 {
            return Err(Error::config(format!(
                "nearest: model `{name}` gave {:?} {:?} for the query, not one float32 vector: set `pool = \"mean\"` or \"cls\" in its [preprocess.text]",
                tensor.dtype, tensor.shape
            )));
        }
        let query = tensor.to_f32()?;
        if query.len() != self.dim {
            return Err(Error::config(format!(
                "nearest: model `{name}` embeds the query in {} dimensions, but column `{}` holds {}-dimensional embeddings",
                query.len(),
                self.column_name,
                self.dim
            )));
        }
        if !query.iter().all(|v| v.is_finite()) || query.iter().all(|&v| v == 0.0) {
            return Err(Error::config(format!(
                "nearest: model `{name}` embeds the query as a vector with no direction"
            )));
        }
        Ok(query)
    }
}

/// A row's similarity to the query and its arrival number.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored {
    score: f32,
    seq: u64,
}

/// Better first: the higher score, then the earlier row.
fn ranking(a: &Scored, b: &Scored) -> Ordering {
    b.score.total_cmp(&a.score).then(a.seq.cmp(&b.seq))
}

/// Where a row of the merged top k comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The row at this position among those kept so far.
    Kept(usize),
    /// The row at this index of the new batch.
    Batch(usize),
}

/// The `k` best of the rows kept so far (`kept`, best first) and a batch's
/// scored rows, best first.
fn merge(kept: &[Scored], mut batch: Vec<(usize, Scored)>, k: usize) -> Vec<(Source, Scored)> {
    if batch.len() > k {
        // Only the batch's own k best can make it in.
        batch.select_nth_unstable_by(k - 1, |a, b| ranking(&a.1, &b.1));
        batch.truncate(k);
    }
    let mut all: Vec<(Source, Scored)> = kept.iter().enumerate().map(|(i, s)| (Source::Kept(i), *s)).collect();
    all.extend(batch.into_iter().map(|(row, s)| (Source::Batch(row), s)));
    all.sort_by(|a, b| ranking(&a.1, &b.1));
    all.truncate(k);
    all
}

/// The cosine similarity of `query` and `row`, or `None` when `row` has no
/// direction (all zeros) or holds a value that is not finite.
fn cosine(query: &[f32], row: &[f32]) -> Option<f32> {
    let (mut dot, mut qq, mut rr) = (0f64, 0f64, 0f64);
    for (&q, &r) in query.iter().zip(row) {
        let (q, r) = (f64::from(q), f64::from(r));
        dot += q * r;
        qq += q * q;
        rr += r * r;
    }
    let score = dot / (qq.sqrt() * rr.sqrt());
    (score.is_finite() && rr > 0.0).then_some(score.clamp(-1.0, 1.0) as f32)
}

export_operator!(Nearest);

#[cfg(test)]
mod tests {
    use flumen_sdk::arrow_array::cast::AsArray;
    use flumen_sdk::arrow_array::{Array, StringArray};
    use flumen_sdk::media::EmbeddingBuilder;

    use super::*;

    fn s(score: f32, seq: u64) -> Scored {
        Scored { score, seq }
    }

    /// Runs `batches` of scores through `merge` as `process` does.
    fn top(k: usize, batches: &[&[f32]]) -> Vec<Scored> {
        let mut best = Vec::new();
        let mut seq = 0;
        for batch in batches {
            let scored = batch.iter().enumerate().map(|(row, &score)| (row, s(score, seq + row as u64))).collect();
            seq += batch.len() as u64;
            best = merge(&best, scored, k).into_iter().map(|(_, x)| x).collect();
        }
        best
    }

    #[test]
    fn keeps_the_k_best_across_batches_best_first() {
        let best = top(3, &[&[0.1, 0.9, 0.3], &[0.8, 0.2], &[0.95, 0.0, 0.5, 0.4]]);
        assert_eq!(best, [s(0.95, 5), s(0.9, 1), s(0.8, 3)]);
        // Fewer rows than k: all of them.
        assert_eq!(top(10, &[&[0.1], &[0.3]]), [s(0.3, 1), s(0.1, 0)]);
        assert_eq!(top(2, &[&[], &[]]), []);
    }

    #[test]
    fn equal_scores_rank_in_arrival_order_within_and_across_batches() {
        assert_eq!(top(3, &[&[0.5, 0.5], &[0.5, 0.7, 0.5]]), [s(0.7, 3), s(0.5, 0), s(0.5, 1)]);
        // A later equal score never displaces an earlier one.
        assert_eq!(top(1, &[&[0.5], &[0.5], &[0.5]]), [s(0.5, 0)]);
        // Within one batch larger than k, ties keep the earliest rows.
        assert_eq!(top(2, &[&[0.5, 0.5, 0.5, 0.5, 0.6]]), [s(0.6, 4), s(0.5, 0)]);
    }

    #[test]
    fn merge_says_where_each_row_comes_from() {
        let kept = [s(0.9, 0), s(0.4, 1)];
        let merged = merge(&kept, vec![(0, s(0.1, 2)), (1, s(0.5, 3))], 2);
        assert_eq!(merged, [(Source::Kept(0), s(0.9, 0)), (Source::Batch(1), s(0.5, 3))]);
    }

    #[test]
    fn cosine_is_the_real_cosine_and_skips_rows_without_direction() {
        let c = |q: &[f32], r: &[f32]| cosine(q, r);
        assert_eq!(c(&[1.0, 0.0], &[3.0, 0.0]), Some(1.0));
        assert_eq!(c(&[1.0, 0.0], &[-2.0, 0.0]), Some(-1.0));
        assert_eq!(c(&[1.0, 0.0], &[0.0, 5.0]), Some(0.0));
        let half = c(&[1.0, 1.0], &[0.0, 7.0]).unwrap();
        assert!((half - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{half}");
        assert_eq!(c(&[1.0, 0.0], &[0.0, 0.0]), None);
        assert_eq!(c(&[1.0, 0.0], &[f32::NAN, 1.0]), None);
        assert_eq!(c(&[1.0, 0.0], &[f32::INFINITY, 1.0]), None);
    }

    fn config(column: &str, k: u64) -> Config {
        Config {
            model: "words".into(),
            query: "red".into(),
            column: column.into(),
            k,
            score: "score".into(),
            rank: "rank".into(),
        }
    }

    fn input() -> SchemaRef {
        let e = EmbeddingBuilder::new(2, Some("words")).unwrap();
        Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, true), e.field("embedding", true)]))
    }

    fn layout_err(input: &SchemaRef, config: &Config) -> String {
        Layout::new(input, config).unwrap_err().message
    }

    #[test]
    fn config_errors_name_the_column_and_the_problem() {
        let input = input();
        let e = layout_err(&input, &config("vec", 5));
        assert!(e.contains("no column `vec`; columns are: text, embedding"), "{e}");
        let e = layout_err(&input, &config("text", 5));
        assert!(e.contains("column `text` is Utf8, not a `flumen.embedding`"), "{e}");
        // Declared an embedding, stored as something else.
        let forged = Arc::new(Schema::new(vec![
            Field::new("embedding", DataType::Utf8, true).with_metadata(input.field(1).metadata().clone()),
        ]));
        let e = layout_err(&forged, &config("embedding", 5));
        assert!(e.starts_with("nearest: embedding column `embedding`: storage is Utf8"), "{e}");
        let e = layout_err(&input, &config("embedding", 0));
        assert!(e.contains("`k` is 0; it must be from 1 to 10000"), "{e}");
        let e = layout_err(&input, &config("embedding", K_MAX + 1));
        assert!(e.contains("`k` is 10001"), "{e}");
        assert!(Layout::new(&input, &config("embedding", K_MAX)).is_ok());
        let mut c = config("embedding", 5);
        c.score = "text".into();
        let e = layout_err(&input, &c);
        assert!(e.contains("already has a column `text`"), "{e}");
        c.score = "rank".into();
        assert!(layout_err(&input, &c).contains("`score` and `rank` are both `rank`"));
        c = config("embedding", 5);
        c.query = " ".into();
        assert!(layout_err(&input, &c).contains("`query` is empty"));
        let with_blob = Arc::new(Schema::new(
            input
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .chain([media::blob_field("blob", true)])
                .collect::<Vec<_>>(),
        ));
        let e = layout_err(&with_blob, &config("embedding", 5));
        assert!(e.contains("column `blob` holds blob references"), "{e}");
    }

    #[test]
    fn the_layout_appends_score_and_rank_and_reads_the_column_model() {
        let layout = Layout::new(&input(), &config("embedding", 3)).unwrap();
        let names: Vec<&str> = layout.output.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["text", "embedding", "score", "rank"]);
        assert_eq!(layout.output.field(2).data_type(), &DataType::Float32);
        assert_eq!(layout.output.field(3).data_type(), &DataType::UInt32);
        assert_eq!((layout.column, layout.dim, layout.made_by.as_deref()), (1, 2, Some("words")));
    }

    fn batch(rows: &[(&str, Option<[f32; 2]>)]) -> RecordBatch {
        let mut e = EmbeddingBuilder::new(2, Some("words")).unwrap();
        for (_, v) in rows {
            match v {
                Some(v) => e.append(v).unwrap(),
                None => e.append_null(),
            }
        }
        let text = StringArray::from_iter_values(rows.iter().map(|(t, _)| *t));
        RecordBatch::try_new(input(), vec![Arc::new(text), Arc::new(e.finish())]).unwrap()
    }

    fn nearest(k: u64) -> Nearest {
        let layout = Layout::new(&input(), &config("embedding", k)).unwrap();
        Nearest {
            kept: RecordBatch::new_empty(layout.input.clone()),
            layout,
            query: vec![1.0, 0.0],
            best: Vec::new(),
            next_seq: 0,
        }
    }

    fn kept_texts(n: &Nearest) -> Vec<String> {
        n.kept.column(0).as_string::<i32>().iter().map(|t| t.unwrap_or_default().to_owned()).collect()
    }

    #[test]
    fn process_keeps_copies_of_the_best_rows_and_a_checkpoint_keeps_them_too() {
        let mut n = nearest(2);
        n.offer(&batch(&[("east", Some([1.0, 0.0])), ("none", None), ("north", Some([0.0, 1.0]))])).unwrap();
        n.offer(&batch(&[("zero", Some([0.0, 0.0])), ("north-east", Some([1.0, 1.0]))])).unwrap();
        assert_eq!(kept_texts(&n), ["east", "north-east"]);
        assert_eq!(n.best[0], s(1.0, 0));
        assert_eq!(n.best[1].seq, 4);
        assert!(n.kept.column(1).is_valid(1));
        let ranked = n.ranked().unwrap().unwrap();
        assert_eq!(ranked.schema(), n.layout.output);
        let scores = ranked.column(2).as_primitive::<flumen_sdk::arrow_array::types::Float32Type>();
        assert_eq!(scores.values().to_vec(), [1.0, std::f32::consts::FRAC_1_SQRT_2]);
        let ranks = ranked.column(3).as_primitive::<flumen_sdk::arrow_array::types::UInt32Type>();
        assert_eq!(ranks.values().to_vec(), [1, 2]);
        assert!(nearest(2).ranked().unwrap().is_none());

        let saved = n.save().unwrap();
        let mut resumed = nearest(2);
        resumed.restore(&saved).unwrap();
        assert_eq!((kept_texts(&resumed), resumed.best.clone(), resumed.next_seq), (kept_texts(&n), n.best.clone(), 5));
        // A row that ties with a kept one after the restore ranks after it.
        resumed.offer(&batch(&[("east again", Some([2.0, 0.0]))])).unwrap();
        assert_eq!(kept_texts(&resumed), ["east", "east again"]);

        assert!(nearest(2).restore(&saved[..20]).unwrap_err().message.contains("do not parse"));
        assert!(nearest(1).restore(&saved).unwrap_err().message.contains("more than k = 1"));
        let mut empty = nearest(2);
        empty.restore(&nearest(2).save().unwrap()).unwrap();
        assert!(empty.best.is_empty() && empty.kept.num_rows() == 0);
    }
}
