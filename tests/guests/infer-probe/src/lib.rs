//! Test guest for `inference.infer-blobs` against references it was not
//! handed: with `config.mode`, for every reference of the image column
//! `config.column` (default `blob`) it calls the model `config.model` with
//!
//! - `forged`: the reference with one token byte flipped;
//! - `resized`: the reference claiming a size one byte larger (its token no
//!   longer matches: the size is part of what the token proves);
//! - `huge`: the reference repeated until the call names more than 1 GiB of
//!   blob bytes (each reference genuine);
//! - `genuine`: the reference as handed over (the control case).
//!
//! It fails the batch with the host's error (the test reads the message), or
//! passes the batch on when the host answered.

use flumen_sdk::blob::{BlobColumn, BlobRef};
use flumen_sdk::inference::Model;
use flumen_sdk::{Context, Emitter, Error, Operator, RecordBatch, SchemaRef, export_operator};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: String,
    model: String,
    #[serde(default = "default_column")]
    column: String,
}

fn default_column() -> String {
    "blob".into()
}

struct InferProbe {
    schema: SchemaRef,
    column: usize,
    mode: String,
    model: Model,
}

impl Operator for InferProbe {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let schema = ctx.input(0)?.clone();
        let column = schema
            .index_of(&config.column)
            .map_err(|_| Error::config(format!("infer-probe: no column `{}`", config.column)))?;
        let model = Model::load(&config.model)?;
        Ok(Self { schema, column, mode: config.mode, model })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let column = BlobColumn::new(batch.column(self.column).as_ref())
            .map_err(|e| Error::input(format!("infer-probe: {e}")))?;
        let genuine: Vec<BlobRef> = (0..batch.num_rows()).filter_map(|i| column.get(i)).collect();
        let refs: Vec<BlobRef> = match self.mode.as_str() {
            "genuine" => genuine,
            "forged" => genuine
                .into_iter()
                .map(|mut r| {
                    r.token[0] ^= 0xff;
                    r
                })
                .collect(),
            "resized" => genuine
                .into_iter()
                .map(|mut r| {
                    r.size += 1;
                    r
                })
                .collect(),
            "huge" => {
                let one = genuine.first().cloned().ok_or_else(|| Error::input("infer-probe: no reference"))?;
                let copies = (1u64 << 30) / one.size.max(1) + 1;
                vec![one; copies as usize]
            }
            other => return Err(Error::config(format!("infer-probe: unknown mode `{other}`"))),
        };
        self.model.infer_blobs(&refs)?;
        out.emit(&batch)
    }
}

export_operator!(InferProbe);
