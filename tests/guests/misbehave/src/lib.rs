//! Test guest: passes batches through, or misbehaves in the way its config's
//! `mode` names, so the host's limits and checks can be tested against a real
//! component. `after` delays the misbehaviour until that many batches passed.

use flumen_sdk::bindings::flumen::dataflow::{output, types as wit};
use flumen_sdk::{Context, Emitter, Error, Operator, RecordBatch, SchemaRef, export_operator};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    after: u64,
    /// With `mode = "fail-rows"`: fail any batch containing this value in column `id`.
    #[serde(default)]
    poison: Option<i64>,
}

struct Misbehave {
    schema: SchemaRef,
    mode: String,
    after: u64,
    seen: u64,
    poison: Option<i64>,
    hoard: Vec<Vec<u8>>,
}

impl Operator for Misbehave {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if config.mode == "bad-config" {
            return Err(Error::config("misbehave: `mode = bad-config` is refused on purpose"));
        }
        if config.mode == "trap-open" {
            panic!("misbehave: trapping in open");
        }
        Ok(Self {
            schema: ctx.input(0)?.clone(),
            mode: config.mode,
            after: config.after,
            seen: 0,
            poison: config.poison,
            hoard: Vec::new(),
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        self.seen += 1;
        if self.seen <= self.after {
            return out.emit(&batch);
        }
        match self.mode.as_str() {
            "" | "pass" => out.emit(&batch),
            "log" => {
                flumen_sdk::info!("misbehave saw {} rows", batch.num_rows());
                out.emit(&batch)
            }
            "error" => Err(Error::input("misbehave: refusing this batch on purpose")),
            "fail-rows" => {
                let ids = batch
                    .column_by_name("id")
                    .and_then(|c| c.as_any().downcast_ref::<flumen_sdk::arrow_array::Int64Array>())
                    .ok_or_else(|| Error::input("misbehave: needs an int64 column `id`"))?;
                if ids.iter().flatten().any(|v| Some(v) == self.poison) {
                    panic!("misbehave: poison id {:?} seen", self.poison);
                }
                out.emit(&batch)
            }
            "trap" => panic!("misbehave: trapping on purpose"),
            "loop" => {
                let mut x: u64 = self.seen;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "recurse" => {
                fn deep(n: u64) -> u64 {
                    if n == u64::MAX { 0 } else { std::hint::black_box(deep(std::hint::black_box(n + 1)) + 1) }
                }
                let _ = deep(0);
                Ok(())
            }
            "grow" => loop {
                self.hoard.push(vec![1u8; 16 << 20]);
            },
            "huge-output" => {
                // Emit the batch over and over: the host's per-call caps must stop it.
                loop {
                    out.emit(&batch)?;
                }
            }
            "ignore-emit-error" => {
                // Emits a malformed batch, ignores the error and reports success.
                let _ = raw_emit(1, &[0u8; 3], &offsets(&[0, 1]), b"a");
                Ok(())
            }
            // Expects an input of (id: int64, name: utf8); each mode breaks one thing.
            "bad-lengths" => raw_emit(2, &[0u8; 3], &offsets(&[0, 1, 2]), b"ab").map_err(Into::into),
            "bad-utf8" => raw_emit(1, &[0u8; 8], &offsets(&[0, 2]), &[0xff, 0xfe]).map_err(Into::into),
            "bad-offsets" => raw_emit(1, &[0u8; 8], &offsets(&[0, 1 << 30]), b"abc").map_err(Into::into),
            "wrong-schema" => {
                let other = RecordBatch::try_from_iter([(
                    "unexpected",
                    std::sync::Arc::new(flumen_sdk::arrow_array::Float64Array::from(vec![1.0])) as flumen_sdk::ArrayRef,
                )])?;
                out.emit(&other)
            }
            other => Err(Error::config(format!("misbehave: unknown mode `{other}`"))),
        }
    }
}

/// Emits a batch of (int64, utf8) from raw buffers, bypassing the SDK's checks.
fn raw_emit(num_rows: u64, ints: &[u8], offsets: &[u8], chars: &[u8]) -> Result<(), wit::Error> {
    let int_buffers: [&[u8]; 1] = [ints];
    let str_buffers: [&[u8]; 2] = [offsets, chars];
    let columns = [
        wit::ColumnParam { len: num_rows, offset: 0, validity: None, buffers: &int_buffers },
        wit::ColumnParam { len: num_rows, offset: 0, validity: None, buffers: &str_buffers },
    ];
    output::emit(wit::BatchParam { num_rows, columns: &columns })
}

fn offsets(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

export_operator!(Misbehave);
