//! The `audio` operator: decodes the audio blob in each row (WAV, FLAC, Ogg
//! Vorbis, MP3), downmixes and resamples it, and adds it as a `flumen.audio`
//! column.

mod decode;
mod resample;

use std::io;
use std::sync::Arc;

use flumen_sdk::arrow_array::builder::Int64Builder;
use flumen_sdk::arrow_array::{ArrayRef, RecordBatchOptions};
use flumen_sdk::blob::{self, BlobColumn, BlobRef};
use flumen_sdk::media::{AudioBuilder, audio_field, is_blob_ref};
use flumen_sdk::{Context, DataType, Emitter, Error, Field, Operator, RecordBatch, Schema, SchemaRef, export_operator};
use serde::Deserialize;
use symphonia::core::formats::probe::Hint;
use symphonia::core::io::MediaSource;

use crate::decode::{Target, decode};

/// `config = { column = "blob", output = "audio", sample_rate = 16000, channels = 1 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The input column of blob references (`flumen.blob`, or a typed blob column).
    #[serde(default = "default_column")]
    column: String,
    /// The `flumen.audio` column to write: appended, or replaced if the input has it.
    #[serde(default = "default_output")]
    output: String,
    /// Output rate in Hz, or `"source"`.
    #[serde(default = "default_sample_rate")]
    sample_rate: Setting,
    /// `1` (average the channels) or `"source"`.
    #[serde(default = "default_channels")]
    channels: Setting,
    /// Longest clip accepted, in seconds.
    #[serde(default = "default_max_seconds")]
    max_seconds: u32,
    /// Also write `duration_ms: int64`, the source's length.
    #[serde(default)]
    duration_ms: bool,
}

fn default_column() -> String {
    "blob".into()
}
fn default_output() -> String {
    "audio".into()
}
fn default_sample_rate() -> Setting {
    Setting::Value(16_000)
}
fn default_channels() -> Setting {
    Setting::Value(1)
}
fn default_max_seconds() -> u32 {
    600
}

/// Lowest and highest output rates accepted: telephone-band speech to
/// studio masters; outside that a typo is likelier than a wish.
const SAMPLE_RATE_MIN: u32 = 1_000;
const SAMPLE_RATE_MAX: u32 = 384_000;

/// Longest clip `max_seconds` may allow (one day): decoded audio lives in
/// the instance's memory, which its limit caps long before.
const MAX_SECONDS_MAX: u32 = 86_400;

/// Samples gathered before a batch is emitted: bounds the memory one output
/// batch holds (64 MiB of `f32`) however many rows the input batch has.
const BATCH_SAMPLES_MAX: usize = 16 << 20;

/// A number, or `"source"` for "as the source has it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    Source,
    Value(u32),
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Setting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a positive integer or \"source\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Setting, E> {
                u32::try_from(v).map(Setting::Value).map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Setting, E> {
                u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative"))).and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Setting, E> {
                match v {
                    "source" => Ok(Setting::Source),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Where a new column goes in the output.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Replace(usize),
    Append,
}

struct Audio {
    schema: SchemaRef,
    input: usize,
    audio_slot: Slot,
    duration_slot: Option<Slot>,
    target: Target,
}

impl Operator for Audio {
    type Config = Config;

    fn open(ctx: &Context, config: Config) -> Result<Self, Error> {
        if ctx.inputs.len() != 1 {
            return Err(Error::config(format!(
                "audio: takes one input, operator `{}` has {}",
                ctx.operator_id,
                ctx.inputs.len()
            )));
        }
        let schema = ctx.input(0)?.clone();
        let input = schema.index_of(&config.column).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::config(format!("audio: unknown column `{}`; columns are: {}", config.column, names.join(", ")))
        })?;
        if !is_blob_ref(schema.field(input)) {
            return Err(Error::config(format!(
                "audio: column `{}` is {}, not blob references (read files with a `blobs` source)",
                config.column,
                schema.field(input).data_type()
            )));
        }
        let sample_rate = match config.sample_rate {
            Setting::Source => None,
            Setting::Value(r) if (SAMPLE_RATE_MIN..=SAMPLE_RATE_MAX).contains(&r) => Some(r),
            Setting::Value(r) => {
                return Err(Error::config(format!(
                    "audio: `sample_rate` = {r} is outside {SAMPLE_RATE_MIN}..={SAMPLE_RATE_MAX} Hz"
                )));
            }
        };
        let mono = match config.channels {
            Setting::Value(1) => true,
            Setting::Source => false,
            Setting::Value(n) => {
                return Err(Error::config(format!(
                    "audio: `channels` = {n} is not supported: use 1 (downmix) or \"source\""
                )));
            }
        };
        if config.max_seconds == 0 || config.max_seconds > MAX_SECONDS_MAX {
            return Err(Error::config(format!(
                "audio: `max_seconds` = {} is outside 1..={MAX_SECONDS_MAX}",
                config.max_seconds
            )));
        }
        if config.output.is_empty() {
            return Err(Error::config("audio: `output` must not be empty"));
        }

        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let audio_slot = place(&mut fields, audio_field(&config.output, true));
        let duration_slot = config.duration_ms.then(|| {
            if config.output == "duration_ms" {
                return Err(Error::config("audio: `output` cannot be `duration_ms` when `duration_ms` = true"));
            }
            Ok(place(&mut fields, Field::new("duration_ms", DataType::Int64, true)))
        });
        let duration_slot = duration_slot.transpose()?;
        Ok(Self {
            schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
            input,
            audio_slot,
            duration_slot,
            target: Target { sample_rate, mono, max_seconds: config.max_seconds },
        })
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: u32, batch: RecordBatch, out: &mut Emitter) -> Result<(), Error> {
        let refs = BlobColumn::new(batch.column(self.input).as_ref())?;
        let mut audio = AudioBuilder::new();
        let mut durations = Int64Builder::new();
        let mut start = 0;
        for row in 0..batch.num_rows() {
            match refs.get(row) {
                None => {
                    audio.append_null();
                    durations.append_null();
                }
                Some(r) => {
                    let clip = self.decode(&r)?;
                    audio.append(clip.sample_rate, clip.channels, &clip.samples)?;
                    durations.append_value(clip.duration_ms);
                }
            }
            if audio.samples_len() >= BATCH_SAMPLES_MAX || row + 1 == batch.num_rows() {
                let slice = batch.slice(start, row + 1 - start);
                let audio: ArrayRef = Arc::new(audio.finish());
                let durations: ArrayRef = Arc::new(durations.finish());
                out.emit(&self.assemble(&slice, audio, durations)?)?;
                start = row + 1;
            }
        }
        Ok(())
    }
}

impl Audio {
    /// Decodes one blob, streaming it from the host; errors name the file.
    fn decode(&self, r: &BlobRef) -> Result<decode::Clip, Error> {
        let name = file_name(r);
        let reader = blob::open(r).map_err(|e| Error::new(e.kind, format!("audio: {name}: {}", e.message)))?;
        let mut hint = Hint::new();
        if let Some(ext) = extension(&name) {
            hint.with_extension(ext);
        }
        hint.mime_type(&r.media_type);
        decode(Box::new(BlobSource(reader)), &hint, &self.target)
            .map_err(|e| Error::input(format!("audio: {name} ({}): {e}", r.media_type)))
    }

    fn assemble(&self, input: &RecordBatch, audio: ArrayRef, durations: ArrayRef) -> Result<RecordBatch, Error> {
        let mut columns: Vec<ArrayRef> = input.columns().to_vec();
        put(&mut columns, self.audio_slot, audio);
        if let Some(slot) = self.duration_slot {
            put(&mut columns, slot, durations);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(input.num_rows()));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }
}

fn place(fields: &mut Vec<Field>, field: Field) -> Slot {
    match fields.iter().position(|f| f.name() == field.name()) {
        Some(i) => {
            fields[i] = field;
            Slot::Replace(i)
        }
        None => {
            fields.push(field);
            Slot::Append
        }
    }
}

fn put(columns: &mut Vec<ArrayRef>, slot: Slot, column: ArrayRef) {
    match slot {
        Slot::Replace(i) => columns[i] = column,
        Slot::Append => columns.push(column),
    }
}

/// How errors name a blob: the path or URI it was read from, else its digest.
fn file_name(r: &BlobRef) -> String {
    match blob::stat(r) {
        Ok(blob::BlobInfo { source: Some(source), .. }) => source,
        _ => format!("blob {}", r.digest_hex()),
    }
}

/// The extension of a path or URI's last segment, if it has one.
fn extension(name: &str) -> Option<&str> {
    let last = name.rsplit(['/', '\\']).next()?;
    let (_, ext) = last.rsplit_once('.')?;
    (!ext.is_empty() && ext.len() <= 8).then_some(ext)
}

/// A blob streamed from the host, as symphonia reads media.
struct BlobSource(blob::Reader);

impl io::Read for BlobSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Seek for BlobSource {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl MediaSource for BlobSource {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        Some(self.0.size())
    }
}

export_operator!(Audio);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn config_defaults_and_source_settings() {
        let c = config("{}").unwrap();
        assert_eq!((c.column.as_str(), c.output.as_str()), ("blob", "audio"));
        assert_eq!(
            (c.sample_rate, c.channels, c.max_seconds, c.duration_ms),
            (Setting::Value(16_000), Setting::Value(1), 600, false)
        );
        let c = config(r#"{"sample_rate": "source", "channels": "source", "duration_ms": true}"#).unwrap();
        assert_eq!((c.sample_rate, c.channels, c.duration_ms), (Setting::Source, Setting::Source, true));
        let err = config(r#"{"sample_rate": "fast"}"#).unwrap_err().to_string();
        assert!(err.contains("\"source\""), "{err}");
        assert!(config(r#"{"sample_rate": -1}"#).is_err());
        assert!(config(r#"{"rate": 8000}"#).is_err());
    }

    #[test]
    fn extension_of_paths_and_uris() {
        assert_eq!(extension("/data/a.b/clip.wav"), Some("wav"));
        assert_eq!(extension("s3://bucket/x/song.MP3"), Some("MP3"));
        assert_eq!(extension("/data/a.b/noext"), None);
        assert_eq!(extension("blob 0a1b"), None);
    }
}
