//! Test guest for the `blobs` capability. `config.mode` picks what it does
//! with the blob reference column `config.column` (default `blob`):
//!
//! - `read`: reads every blob in pieces through a reader and emits `path`,
//!   `read_len` and `checksum` (FNV-1a of the bytes);
//! - `forge`: passes the batch on with one digest byte flipped (the host must refuse it);
//! - `read-forged`: reads a reference with a made-up token (the host must refuse it);
//! - `make-retain`: makes a blob `made-<id>` per row of the int64 column
//!   `config.column`, retains it and keeps its reference in memory (saved by
//!   `snapshot`); at `finish` reads every kept blob back and emits `path`
//!   (the id), `content`;
//! - `copy-retain`: copies every blob (its bytes, reversed) into a new one,
//!   retained until `finish`, and emits the batch with the copies' references;
//! - `writers`: on every batch opens `config.writers` blob writers, writes
//!   `config.write_mb` MiB into each while all stay open, finishes them,
//!   checks their sizes and passes the batch on (the host must charge the
//!   open writers' buffers to `limits.host_memory_mb`). Needs no blob column.
use std::io::Read;
use std::sync::Arc;

use flumen_sdk::arrow_array::builder::{StringBuilder, UInt64Builder};
use flumen_sdk::arrow_array::{Array, ArrayRef, StringArray, StructArray};
use flumen_sdk::blob::{self, BlobColumn, BlobRef};
use flumen_sdk::{Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, export_operator};

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
    #[serde(default = "default_column")]
    column: String,
    #[serde(default)]
    writers: u32,
    #[serde(default)]
    write_mb: u32,
}

fn default_column() -> String {
    "blob".into()
}

struct Probe {
    mode: String,
    column: usize,
    input: SchemaRef,
    schema: SchemaRef,
    kept: Vec<(String, BlobRef)>,
    /// `writers` mode: (writers, MiB each).
    writers: (u32, u32),
}

fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl Operator for Probe {
    type Config = Config;
    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        let input = ctx.input(0)?.clone();
        let column = match input.index_of(&config.column) {
            Ok(i) => i,
            Err(_) if config.mode == "writers" => 0,
            Err(e) => return Err(Error::config(e.to_string())),
        };
        let schema = match config.mode.as_str() {
            "read" => Arc::new(Schema::new(vec![
                Field::new("path", DataType::Utf8, true),
                Field::new("read_len", DataType::UInt64, false),
                Field::new("checksum", DataType::UInt64, false),
            ])),
            "make-retain" => Arc::new(Schema::new(vec![
                Field::new("path", DataType::Utf8, true),
                Field::new("content", DataType::Utf8, false),
            ])),
            "forge" | "read-forged" | "copy-retain" | "writers" => input.clone(),
            other => return Err(Error::config(format!("unknown mode `{other}`"))),
        };
        let writers = (config.writers, config.write_mb);
        Ok(Self { mode: config.mode, column, input, schema, kept: Vec::new(), writers })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        if self.mode == "writers" {
            many_writers(self.writers.0, self.writers.1)?;
            return out.emit(&batch);
        }
        if self.mode == "make-retain" {
            let ids = batch
                .column(self.column)
                .as_any()
                .downcast_ref::<flumen_sdk::arrow_array::Int64Array>()
                .ok_or_else(|| Error::config("make-retain needs an int64 column"))?;
            for row in 0..ids.len() {
                let id = ids.value(row).to_string();
                let made = blob::create(format!("made-{id}").as_bytes(), "text/plain")?;
                blob::retain(&made)?;
                self.kept.push((id, made));
            }
            return Ok(());
        }
        let refs = BlobColumn::new(batch.column(self.column).as_ref())?;
        let paths = batch
            .schema()
            .index_of("path")
            .ok()
            .and_then(|i| batch.column(i).as_any().downcast_ref::<StringArray>().cloned());
        let path_of = |row: usize| paths.as_ref().map(|p| p.value(row).to_string()).unwrap_or_default();
        match self.mode.as_str() {
            "read" => {
                let mut p = StringBuilder::new();
                let mut lens = UInt64Builder::new();
                let mut sums = UInt64Builder::new();
                for row in 0..refs.len() {
                    let Some(r) = refs.get(row) else { continue };
                    let mut reader = blob::open(&r)?;
                    let mut buf = vec![0u8; 1 << 20];
                    let (mut len, mut h) = (0u64, 0xcbf29ce484222325u64);
                    loop {
                        let n = reader.read(&mut buf).map_err(|e| Error::input(e.to_string()))?;
                        if n == 0 {
                            break;
                        }
                        len += n as u64;
                        h = fnv(&buf[..n], h);
                    }
                    p.append_value(path_of(row));
                    lens.append_value(len);
                    sums.append_value(h);
                }
                let cols: Vec<ArrayRef> = vec![Arc::new(p.finish()), Arc::new(lens.finish()), Arc::new(sums.finish())];
                out.emit(&RecordBatch::try_new(self.schema.clone(), cols)?)
            }
            "forge" => {
                let Some(first) = refs.get(0) else { return out.emit(&batch) };
                let mut forged = first.clone();
                forged.digest[0] ^= 0xff;
                let mut b = blob::BlobColumnBuilder::new();
                b.append(Some(&forged));
                for row in 1..refs.len() {
                    b.append(refs.get(row).as_ref());
                }
                let col: StructArray = b.finish();
                let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
                cols[self.column] = Arc::new(col);
                out.emit(&RecordBatch::try_new(self.input.clone(), cols)?)
            }
            "read-forged" => {
                let Some(first) = refs.get(0) else { return out.emit(&batch) };
                let mut forged = first.clone();
                forged.token = [0x5a; blob::TOKEN_BYTES];
                blob::read_all(&forged)?;
                out.emit(&batch)
            }
            _ => {
                let mut b = blob::BlobColumnBuilder::new();
                for row in 0..refs.len() {
                    let Some(r) = refs.get(row) else {
                        b.append(None);
                        continue;
                    };
                    let mut bytes = blob::read_all(&r)?;
                    bytes.reverse();
                    let copy = blob::create(&bytes, &r.media_type)?;
                    blob::retain(&copy)?;
                    b.append(Some(&copy));
                    self.kept.push((path_of(row), copy));
                }
                let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
                cols[self.column] = Arc::new(b.finish());
                out.emit(&RecordBatch::try_new(self.input.clone(), cols)?)
            }
        }
    }

    fn finish(&mut self, out: &mut Emitter) -> Result<(), Error> {
        if self.mode == "copy-retain" {
            for (_, r) in self.kept.drain(..) {
                blob::release(&r)?;
            }
            return Ok(());
        }
        if self.mode != "make-retain" {
            return Ok(());
        }
        let mut p = StringBuilder::new();
        let mut c = StringBuilder::new();
        for (path, r) in &self.kept {
            let bytes = blob::read_all(r)?;
            p.append_value(path);
            c.append_value(String::from_utf8_lossy(&bytes));
            blob::release(r)?;
        }
        let cols: Vec<ArrayRef> = vec![Arc::new(p.finish()), Arc::new(c.finish())];
        out.emit(&RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    fn save(&mut self) -> Result<Vec<u8>, Error> {
        let rows: Vec<(String, String, u64, String, String)> = self
            .kept
            .iter()
            .map(|(p, r)| (p.clone(), hex(&r.digest), r.size, r.media_type.clone(), hex(&r.token)))
            .collect();
        serde_json::to_vec(&rows).map_err(|e| Error::internal(e.to_string()))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), Error> {
        let rows: Vec<(String, String, u64, String, String)> =
            serde_json::from_slice(data).map_err(|e| Error::internal(e.to_string()))?;
        self.kept = rows
            .into_iter()
            .map(|(p, d, size, media_type, t)| {
                let digest = unhex(&d).try_into().map_err(|_| Error::internal("bad digest"))?;
                let token = unhex(&t).try_into().map_err(|_| Error::internal("bad token"))?;
                Ok((p, BlobRef { digest, size, media_type, token }))
            })
            .collect::<Result<_, Error>>()?;
        Ok(())
    }
}

/// Opens `n` writers, writes `mb` MiB into each while all are open, then
/// finishes them. Calls the WIT functions directly, so a refusal keeps its kind.
fn many_writers(n: u32, mb: u32) -> Result<(), Error> {
    use flumen_sdk::bindings::flumen::dataflow::blobs as wit_blobs;
    let chunk = vec![0xa5_u8; 1 << 20];
    let writers: Vec<wit_blobs::Writer> = (0..n).map(|_| wit_blobs::Writer::new()).collect();
    for _ in 0..mb {
        for w in &writers {
            w.write(&chunk)?;
        }
    }
    for w in writers {
        let made = w.finish("application/octet-stream")?;
        if made.size != u64::from(mb) << 20 {
            return Err(Error::internal(format!("blob-probe: a writer made {} bytes, not {mb} MiB", made.size)));
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

export_operator!(Probe);
