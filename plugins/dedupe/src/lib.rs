//! The `dedupe` operator: keeps the first row of each key and drops every
//! later one, by value or, for blob references, by content. Seen keys live
//! in host state, so each key comes out once across checkpoints and restarts.

use std::collections::HashSet;

use flumen_sdk::arrow_array::{Array, BooleanArray};
use flumen_sdk::blob::BlobColumn;
use flumen_sdk::state::{self, ValueState};
use flumen_sdk::{Context, Emitter, Error, Operator, RecordBatch, SchemaRef, export_operator, media};
use serde::Deserialize;

/// Name of the host state holding the keys seen so far.
const SEEN: &str = "seen";

/// Value stored under a seen key (only its presence matters).
const SEEN_MARK: &[u8] = &[1];

/// Key of a null row, in both key kinds: a null is one more key (SQL
/// `DISTINCT`), and one byte cannot collide with a 32-byte digest nor with a
/// value key (whose null is this same byte, see `state::key_of`).
const NULL_KEY: &[u8] = &[0];

/// `config = { column = "blob" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The key: a blob reference column (deduped by content) or an integer,
    /// boolean, string or binary column (deduped by value).
    column: String,
}

/// How rows become keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// The blob's digest: equal bytes are equal keys, whatever the reference's
    /// media type or where the bytes came from.
    Content,
    /// The column's value, encoded by `state::keys_of`.
    Value,
}

struct Dedupe {
    schema: SchemaRef,
    column: usize,
    kind: KeyKind,
    seen: ValueState,
}

impl Operator for Dedupe {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let schema = ctx.input(0)?.clone();
        let (column, field) = schema.column_with_name(&config.column).ok_or_else(|| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::config(format!("dedupe: no column `{}`; columns are: {}", config.column, names.join(", ")))
        })?;
        let kind = if media::is_blob_ref(field) {
            KeyKind::Content
        } else {
            state::check_key_field(field).map_err(|mut e| {
                e.message = format!("dedupe: {}, or a blob reference column", e.message);
                e
            })?;
            KeyKind::Value
        };
        Ok(Self { schema, column, kind, seen: ValueState::new(SEEN) })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = row_keys(batch.column(self.column).as_ref(), self.kind)?;
        let firsts = first_occurrences(&keys);
        let candidates: Vec<&[u8]> = firsts.iter().map(|&row| keys[row].as_slice()).collect();
        let stored = self.seen.get_many(&candidates)?;
        let mut keep = vec![false; keys.len()];
        let mut new_keys: Vec<(&[u8], &[u8])> = Vec::new();
        for (&row, stored) in firsts.iter().zip(&stored) {
            if stored.is_none() {
                keep[row] = true;
                new_keys.push((keys[row].as_slice(), SEEN_MARK));
            }
        }
        if new_keys.is_empty() {
            return Ok(());
        }
        // Emit before recording the keys: the host keeps a call's output only
        // if the call succeeds, so a failed emit leaves the keys unseen for a
        // retry, and a failed write drops the emitted rows with the call.
        if new_keys.len() == batch.num_rows() {
            out.emit(&batch)?;
        } else {
            let mask = BooleanArray::from(keep);
            let kept = flumen_sdk::arrow_select::filter::filter_record_batch(&batch, &mask)
                .map_err(|e| Error::internal(format!("dedupe: filtering the batch: {e}")))?;
            out.emit(&kept)?;
        }
        self.seen.set_many(&new_keys)
    }
}

/// The key of every row of `column`.
fn row_keys(column: &dyn Array, kind: KeyKind) -> Result<Vec<Vec<u8>>, Error> {
    match kind {
        KeyKind::Value => state::keys_of(column),
        KeyKind::Content => {
            let refs = BlobColumn::new(column)?;
            Ok((0..refs.len()).map(|row| refs.digest(row).unwrap_or(NULL_KEY).to_vec()).collect())
        }
    }
}

/// The rows whose key no earlier row of the batch has, in row order.
fn first_occurrences(keys: &[Vec<u8>]) -> Vec<usize> {
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(keys.len());
    (0..keys.len()).filter(|&row| seen.insert(keys[row].as_slice())).collect()
}

export_operator!(Dedupe);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flumen_sdk::arrow_array::{Int64Array, StringArray};
    use flumen_sdk::media::{BlobColumnBuilder, BlobRef};
    use flumen_sdk::{DataType, Field, Schema};

    use super::*;

    fn blob(fill: u8, media_type: &str) -> BlobRef {
        BlobRef { digest: [fill; 32], size: 3, media_type: media_type.into(), token: [fill ^ 0x55; 16] }
    }

    #[test]
    fn duplicates_within_a_batch_keep_the_first_row() {
        let keys =
            state::keys_of(&StringArray::from(vec![Some("b"), Some("a"), Some("b"), None, Some("a"), None])).unwrap();
        assert_eq!(first_occurrences(&keys), [0, 1, 3]);
    }

    #[test]
    fn blob_keys_are_the_digest_whatever_the_media_type() {
        let mut b = BlobColumnBuilder::new();
        b.append(Some(&blob(7, "text/plain")));
        b.append(Some(&blob(7, "text/markdown")));
        b.append(None);
        b.append(Some(&blob(9, "text/plain")));
        b.append(None);
        let keys = row_keys(&b.finish(), KeyKind::Content).unwrap();
        assert_eq!(keys[0], vec![7; 32]);
        assert_eq!(keys[0], keys[1], "same bytes, same key");
        assert_eq!(keys[2], NULL_KEY);
        assert_eq!(first_occurrences(&keys), [0, 2, 3]);
    }

    #[test]
    fn value_keys_agree_across_integer_widths() {
        let keys = row_keys(&Int64Array::from(vec![5, 6, 5]), KeyKind::Value).unwrap();
        assert_eq!(first_occurrences(&keys), [0, 1]);
    }

    fn ctx(fields: Vec<Field>, parallelism: u32) -> Context {
        Context { operator_id: "d".into(), subtask: 0, parallelism, inputs: vec![Arc::new(Schema::new(fields))] }
    }

    fn open_err(ctx: &Context, column: &str) -> String {
        Dedupe::open(ctx, Config { column: column.into() }).err().unwrap().message
    }

    #[test]
    fn config_errors_name_the_problem() {
        let c = ctx(vec![Field::new("x", DataType::Float64, false), media::blob_field("doc", true)], 1);
        assert!(open_err(&c, "y").contains("no column `y`; columns are: x, doc"));
        let e = open_err(&c, "x");
        assert!(e.contains("cannot be a state key") && e.contains("blob reference column"), "{e}");
        let d = Dedupe::open(&c, Config { column: "doc".into() }).ok().unwrap();
        assert_eq!(d.kind, KeyKind::Content);
        let c = ctx(vec![media::blob_field("doc", true), Field::new("id", DataType::Int64, false)], 2);
        assert_eq!(Dedupe::open(&c, Config { column: "doc".into() }).ok().unwrap().kind, KeyKind::Content);
        assert_eq!(Dedupe::open(&c, Config { column: "id".into() }).ok().unwrap().kind, KeyKind::Value);
    }
}
