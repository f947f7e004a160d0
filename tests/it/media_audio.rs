//! The `audio` plugin over WAV files read by a `blobs` source: clips come out
//! at the asked rate and channel count, with the right length and pitch; a
//! corrupt file and a non-audio file go to the dead-letter sink, named,
//! while the good files come out; `max_seconds` refuses a long clip.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray, Float32Array, Int64Array, StringArray, StructArray, UInt16Array, UInt32Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::common::*;

/// A decoded clip as the Parquet sink wrote it.
#[derive(Debug)]
struct Clip {
    sample_rate: u32,
    channels: u16,
    samples: Vec<f32>,
    duration_ms: Option<i64>,
}

impl Clip {
    fn channel(&self, c: usize) -> Vec<f32> {
        self.samples.iter().skip(c).step_by(self.channels as usize).copied().collect()
    }
}

/// Writes `seconds` of a sine of `freq` Hz as 16-bit PCM, one amplitude per channel.
fn write_sine(path: &Path, rate: u32, freq: f64, seconds: f64, amplitudes: &[f64]) {
    let spec = hound::WavSpec {
        channels: amplitudes.len() as u16,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(f64::from(rate) * seconds).round() as u64 {
        let v = (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin();
        for a in amplitudes {
            w.write_sample((v * a * f64::from(i16::MAX)) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// Upward zero crossings: one per period of a clean sine, so a count over a
/// known length is the dominant frequency.
fn crossings(samples: &[f32]) -> usize {
    samples.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count()
}

fn peak(samples: &[f32]) -> f32 {
    samples.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// The clips in `out.parquet`, by file name.
fn read_clips(path: &Path) -> BTreeMap<String, Clip> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut clips = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let paths = batch.column_by_name("path").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let audio = batch.column_by_name("audio").expect("audio column").as_struct().clone();
        let durations =
            batch.column_by_name("duration_ms").map(|c| c.as_any().downcast_ref::<Int64Array>().unwrap().clone());
        for row in 0..batch.num_rows() {
            let name = Path::new(paths.value(row)).file_name().unwrap().to_string_lossy().into_owned();
            clips.insert(name, clip(&audio, row, durations.as_ref().map(|d| d.value(row))));
        }
    }
    clips
}

fn clip(audio: &StructArray, row: usize, duration_ms: Option<i64>) -> Clip {
    assert!(audio.is_valid(row));
    let rates = audio.column_by_name("sample_rate").unwrap().as_any().downcast_ref::<UInt32Array>().unwrap();
    let channels = audio.column_by_name("channels").unwrap().as_any().downcast_ref::<UInt16Array>().unwrap();
    let samples = audio.column_by_name("samples").unwrap().as_list::<i32>().value(row);
    let samples = samples.as_any().downcast_ref::<Float32Array>().unwrap();
    Clip {
        sample_rate: rates.value(row),
        channels: channels.value(row),
        samples: samples.values().to_vec(),
        duration_ms,
    }
}

fn job(config: &str) -> Job {
    let job = Job::new(&format!(
        r#"
[job]
name = "audio"
batch_rows = 10

[[source]]
id = "clips"
kind = "blobs"
path = "clips/"

[[operator]]
id = "audio"
plugin = "audio"
capabilities = ["log", "blobs"]
config = {config}
inputs = ["clips"]
on_error = {{ then = "dead-letter", dead_letter = "bad" }}

[[sink]]
id = "out"
kind = "parquet"
path = "out.parquet"
inputs = ["audio"]

[[sink]]
id = "bad"
kind = "jsonl"
path = "bad.jsonl"
"#
    ));
    std::fs::create_dir(job.file("clips")).unwrap();
    job
}

fn dead_letters(job: &Job) -> Vec<serde_json::Value> {
    let path = job.file("bad.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clips_are_downmixed_and_resampled_keeping_length_and_pitch() {
    let job = job("{ sample_rate = 16000, channels = 1, duration_ms = true }");
    // 2 s of 440 Hz at 44.1 kHz stereo, the right channel at half the left's amplitude.
    write_sine(&job.file("clips/a.wav"), 44_100, 440.0, 2.0, &[0.5, 0.25]);
    // 1.5 s of 1 kHz at 8 kHz mono: resampled upwards.
    write_sine(&job.file("clips/b.wav"), 8_000, 1_000.0, 1.5, &[0.8]);
    job.run().await.expect("job completes");

    let clips = read_clips(&job.file("out.parquet"));
    assert_eq!(clips.keys().collect::<Vec<_>>(), ["a.wav", "b.wav"]);
    for (name, seconds, freq, amplitude) in [("a.wav", 2.0, 440.0, 0.375), ("b.wav", 1.5, 1000.0, 0.8)] {
        let c = &clips[name];
        assert_eq!((c.sample_rate, c.channels), (16_000, 1), "{name}");
        let expected = seconds * 16_000.0;
        let len = c.samples.len() as f64;
        assert!((len - expected).abs() <= expected * 0.01, "{name}: {len} samples for {seconds} s at 16 kHz");
        let measured = crossings(&c.samples) as f64 / seconds;
        assert!((measured - freq).abs() <= freq * 0.01, "{name}: dominant frequency {measured} Hz, not {freq}");
        // The downmix averages the channels: (0.5 + 0.25) / 2.
        assert!((f64::from(peak(&c.samples)) - amplitude).abs() < 0.02, "{name}: peak {}", peak(&c.samples));
        assert_eq!(c.duration_ms, Some((seconds * 1000.0) as i64), "{name}");
    }
    assert!(dead_letters(&job).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_rate_and_channels_are_kept_when_asked() {
    let job = job(r#"{ sample_rate = "source", channels = "source" }"#);
    write_sine(&job.file("clips/a.wav"), 44_100, 440.0, 1.0, &[0.5, 0.25]);
    job.run().await.expect("job completes");
    let clips = read_clips(&job.file("out.parquet"));
    let c = &clips["a.wav"];
    assert_eq!((c.sample_rate, c.channels, c.samples.len()), (44_100, 2, 88_200));
    assert_eq!(c.duration_ms, None, "no duration column unless asked");
    let (left, right) = (c.channel(0), c.channel(1));
    assert!((peak(&left) - 0.5).abs() < 0.01 && (peak(&right) - 0.25).abs() < 0.01);
    // Upward crossings after the first sample: the sine starts at 0 going up.
    assert_eq!(crossings(&left), 439);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_non_audio_files_are_dead_lettered_by_name() {
    let job = job("{ }");
    write_sine(&job.file("clips/good.wav"), 22_050, 500.0, 1.0, &[0.5]);
    // A WAV header promising 13-bit samples, then noise.
    let mut corrupt = std::fs::read(job.file("clips/good.wav")).unwrap();
    corrupt[34..36].copy_from_slice(&13u16.to_le_bytes());
    std::fs::write(job.file("clips/corrupt.wav"), corrupt).unwrap();
    std::fs::write(job.file("clips/notes.txt"), "these are notes, not audio\n".repeat(50)).unwrap();
    job.run().await.expect("job completes");

    let clips = read_clips(&job.file("out.parquet"));
    assert_eq!(clips.keys().collect::<Vec<_>>(), ["good.wav"], "the good file comes out");
    assert_eq!(clips["good.wav"].samples.len(), 16_000);

    let bad = dead_letters(&job);
    let errors: BTreeMap<String, String> = bad
        .iter()
        .map(|r| {
            let path = r["path"].as_str().expect("path");
            let name = Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
            (name, r["_flumen_error"].as_str().expect("_flumen_error").to_string())
        })
        .collect();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["corrupt.wav", "notes.txt"]);
    assert_contains(&errors["corrupt.wav"], &["corrupt.wav", "audio/wav", "cannot decode audio"]);
    assert_contains(&errors["notes.txt"], &["notes.txt", "unsupported audio", "WAV, FLAC, Ogg Vorbis, MP3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_over_max_seconds_is_refused_by_name() {
    let job = job("{ max_seconds = 1 }");
    write_sine(&job.file("clips/long.wav"), 8_000, 300.0, 1.5, &[0.5]);
    write_sine(&job.file("clips/short.wav"), 8_000, 300.0, 0.5, &[0.5]);
    job.run().await.expect("job completes");
    assert_eq!(read_clips(&job.file("out.parquet")).keys().collect::<Vec<_>>(), ["short.wav"]);
    let bad = dead_letters(&job);
    assert_eq!(bad.len(), 1);
    assert_contains(bad[0]["_flumen_error"].as_str().unwrap(), &["long.wav", "`max_seconds` = 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_before_data_flows() {
    let job = job("{ channels = 2 }");
    write_sine(&job.file("clips/a.wav"), 8_000, 300.0, 0.1, &[0.5]);
    assert_contains(&job.run_err().await, &["`channels` = 2 is not supported"]);
    let job = job_on_column("id");
    assert_contains(&job.run_err().await, &["column `id`", "not blob references"]);
}

/// A job whose `audio` operator reads `column` of a CSV source.
fn job_on_column(column: &str) -> Job {
    one_operator(
        &format!("plugin = \"audio\"\ncapabilities = [\"log\", \"blobs\"]\nconfig = {{ column = \"{column}\" }}"),
        3,
    )
}
