//! Test guest: passes batches through, or misbehaves in the way its config's
//! `mode` names, so the host's limits and checks can be tested against a real
//! component. `after` delays the misbehaviour until that many batches passed.
//! Some modes declare an output schema of their own at `open`: `null-rows`
//! (one Null column), `no-columns`, `fixed-size-list-rows`, `big-value` (one
//! binary column), and `schema`,
//! whose field type `shape` names (one a guest must not be able to declare).
//! The `select-*` modes and `carry-in-finish` carry every input column and
//! compute none, then send the host a selection of rows it must refuse
//! (`select-reverse` sends a valid one: every row, reversed). `leak` grows
//! memory by `mb` MiB on every call, never to use it again.

use flumen_sdk::bindings::flumen::dataflow::{output, types as wit};
use std::sync::Arc;

use flumen_sdk::{
    Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, Shape, export_operator,
};

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
    /// With `null-rows`, `no-columns`, `fixed-size-list-rows`: the row count to emit (default 2^40).
    #[serde(default)]
    rows: Option<u64>,
    /// With `schema`: the type of the one field `open` declares (see `shape_type`).
    #[serde(default)]
    shape: Option<String>,
    /// With `grow-to`: the MiB of linear memory to grow to (untouched pages, so cheap);
    /// with `big-value`: the size of the value.
    #[serde(default)]
    mb: u64,
}

struct Misbehave {
    schema: SchemaRef,
    mode: String,
    after: u64,
    seen: u64,
    poison: Option<i64>,
    hoard: Vec<Vec<u8>>,
    rows: u64,
    mb: u64,
}

/// The field type of a `schema` mode's `shape`: each one Arrow or a sink cannot handle.
fn shape_type(shape: &str) -> Result<DataType, Error> {
    use flumen_sdk::arrow_schema::TimeUnit;
    Ok(match shape {
        "time32-ns" => DataType::Time32(TimeUnit::Nanosecond),
        "time32-us" => DataType::Time32(TimeUnit::Microsecond),
        "time64-s" => DataType::Time64(TimeUnit::Second),
        "time64-ms" => DataType::Time64(TimeUnit::Millisecond),
        "fixed-size-binary-neg" => DataType::FixedSizeBinary(-5),
        "fixed-size-list-neg" => DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int8, true)), -1),
        "decimal128-0-100" => DataType::Decimal128(0, 100),
        "decimal128-10-20" => DataType::Decimal128(10, 20),
        "decimal256-90-neg100" => DataType::Decimal256(90, -100),
        "bad-tz" => DataType::Timestamp(TimeUnit::Millisecond, Some("Not/AZone".into())),
        "nested-time32-ns" => DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(vec![Field::new("t", DataType::Time32(TimeUnit::Nanosecond), true)].into()),
            true,
        ))),
        // A valid one, for contrast.
        "time32-ms" => DataType::Time32(TimeUnit::Millisecond),
        other => return Err(Error::config(format!("misbehave: unknown shape `{other}`"))),
    })
}

/// The output schema a mode declares, if it declares its own.
fn own_schema(config: &Config) -> Result<Option<SchemaRef>, Error> {
    let field = |t: DataType| Some(Arc::new(Schema::new(vec![Field::new("x", t, true)])));
    Ok(match config.mode.as_str() {
        "null-rows" => field(DataType::Null),
        "no-columns" => Some(Arc::new(Schema::empty())),
        "fixed-size-list-rows" => {
            field(DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int8, true)), i32::MAX))
        }
        "schema" => field(shape_type(config.shape.as_deref().unwrap_or(""))?),
        "big-value" => field(DataType::Binary),
        _ => None,
    })
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
        let schema = match own_schema(&config)? {
            Some(schema) => schema,
            None => ctx.input(0)?.clone(),
        };
        Ok(Self {
            schema,
            mode: config.mode,
            after: config.after,
            seen: 0,
            poison: config.poison,
            hoard: Vec::new(),
            rows: config.rows.unwrap_or(1 << 40),
            mb: config.mb,
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn shape(&self) -> Shape {
        if self.carries() { Shape::new().carries((0..self.schema.fields().len()).map(Some)) } else { Shape::new() }
    }

    fn finish(&mut self, _out: &mut Emitter) -> Result<(), Error> {
        if self.mode == "carry-in-finish" {
            return select(1, wit::Selection::All);
        }
        Ok(())
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
            "grow-to" => {
                let page = 64 * 1024;
                let want = (self.mb as usize * (1 << 20)).div_ceil(page);
                let have = core::arch::wasm32::memory_size(0);
                if want > have && core::arch::wasm32::memory_grow(0, want - have) == usize::MAX {
                    return Err(Error::new(
                        flumen_sdk::ErrorKind::Limit,
                        format!("misbehave: cannot grow to {} MiB", self.mb),
                    ));
                }
                out.emit(&batch)
            }
            // Grows memory by `mb` MiB on every call and never uses it again, as
            // a language runtime that leaks what crosses the boundary does.
            "leak" => {
                let pages = (self.mb as usize * (1 << 20)).div_ceil(64 * 1024);
                if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                    return Err(Error::new(flumen_sdk::ErrorKind::Limit, "misbehave: cannot leak more".to_string()));
                }
                out.emit(&batch)
            }
            // One row whose one binary value is `mb` MiB: a legitimate big column.
            "big-value" => {
                let len = self.mb as usize * (1 << 20);
                let value = vec![b'x'; len];
                let buffers: [&[u8]; 2] = [&offsets(&[0, len as i32]), &value];
                let columns = [wit::ColumnParam { len: 1, offset: 0, validity: None, buffers: &buffers }];
                output::emit(wit::BatchParam { num_rows: 1, columns: &columns }, wit::Selection::All)
                    .map_err(Into::into)
            }
            // Rows that cost no bytes: a Null column, or no column at all.
            "null-rows" => {
                let none: [&[u8]; 0] = [];
                let columns = [wit::ColumnParam { len: self.rows, offset: 0, validity: None, buffers: &none }];
                output::emit(wit::BatchParam { num_rows: self.rows, columns: &columns }, wit::Selection::All)
                    .map_err(Into::into)
            }
            "no-columns" => output::emit(wit::BatchParam { num_rows: self.rows, columns: &[] }, wit::Selection::All)
                .map_err(Into::into),
            // A list of i32::MAX int8s per row, and an empty child: its length must be checked without overflow.
            "fixed-size-list-rows" => {
                let none: [&[u8]; 0] = [];
                let empty: [&[u8]; 1] = [&[]];
                let columns = [
                    wit::ColumnParam { len: self.rows, offset: 0, validity: None, buffers: &none },
                    wit::ColumnParam { len: 0, offset: 0, validity: None, buffers: &empty },
                ];
                output::emit(wit::BatchParam { num_rows: self.rows, columns: &columns }, wit::Selection::All)
                    .map_err(Into::into)
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
                    Arc::new(flumen_sdk::arrow_array::Float64Array::from(vec![1.0])) as flumen_sdk::ArrayRef,
                )])?;
                out.emit(&other)
            }
            // Selections the host must refuse (the shape carries every column).
            "carry-in-finish" => out.keep(&flumen_sdk::arrow_array::BooleanArray::from(vec![true; batch.num_rows()])),
            "select-mask-short" => select(1, wit::Selection::Mask(&[])),
            "select-stray-bits" => {
                // Every row kept, plus a bit past the last row.
                let rows = batch.num_rows();
                let mut bits = vec![0xffu8; rows.div_ceil(8)];
                if let Some(last) = bits.last_mut() {
                    *last = 0xff;
                }
                select(rows as u64, wit::Selection::Mask(&bits))
            }
            "select-count-mismatch" => select(batch.num_rows() as u64 + 1, wit::Selection::All),
            "select-index-out-of-range" => {
                let bad = [0, batch.num_rows() as u32 + 7];
                select(2, wit::Selection::Indices(&bad))
            }
            // A legitimate selection: every row, in reverse order.
            "select-reverse" => {
                let rows: Vec<u32> = (0..batch.num_rows() as u32).rev().collect();
                select(rows.len() as u64, wit::Selection::Indices(&rows))
            }
            "select-without-carry" => select(1, wit::Selection::Indices(&[0])),
            other => Err(Error::config(format!("misbehave: unknown mode `{other}`"))),
        }
    }
}

impl Misbehave {
    /// Whether the mode's shape carries every input column.
    fn carries(&self) -> bool {
        self.mode.starts_with("select-") && self.mode != "select-without-carry" || self.mode == "carry-in-finish"
    }
}

/// Emits `rows` rows of no computed column under `selection`, bypassing the SDK's checks.
fn select(rows: u64, selection: wit::Selection<'_>) -> Result<(), Error> {
    output::emit(wit::BatchParam { num_rows: rows, columns: &[] }, selection).map_err(Into::into)
}

/// Emits a batch of (int64, utf8) from raw buffers, bypassing the SDK's checks.
fn raw_emit(num_rows: u64, ints: &[u8], offsets: &[u8], chars: &[u8]) -> Result<(), wit::Error> {
    let int_buffers: [&[u8]; 1] = [ints];
    let str_buffers: [&[u8]; 2] = [offsets, chars];
    let columns = [
        wit::ColumnParam { len: num_rows, offset: 0, validity: None, buffers: &int_buffers },
        wit::ColumnParam { len: num_rows, offset: 0, validity: None, buffers: &str_buffers },
    ];
    output::emit(wit::BatchParam { num_rows, columns: &columns }, wit::Selection::All)
}

fn offsets(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

export_operator!(Misbehave);
