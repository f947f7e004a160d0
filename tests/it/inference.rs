//! The `inference` capability end to end: the `predict` plugin calls a model
//! of the job's repository (`tests/models`) through the host's batcher and
//! ONNX Runtime, and every way of getting the setup wrong fails at plan time
//! with what to change. Needs ONNX Runtime (`pip install onnxruntime` or
//! ORT_DYLIB_PATH); without it the tests that run models say they were
//! skipped, unless FLUMEN_ORT_TESTS=1 demands it (`.ci/run` sets it).

use std::path::{Path, PathBuf};

use crate::common::{Job, assert_contains};

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// Whether ONNX Runtime is here; panics when FLUMEN_ORT_TESTS=1 and it is not.
pub(crate) fn have_ort() -> bool {
    match flumen_ort::find_library(None) {
        Ok(_) => true,
        Err(e) if std::env::var("FLUMEN_ORT_TESTS").as_deref() != Ok("1") => {
            eprintln!("skipped: {e} (set FLUMEN_ORT_TESTS=1 to make this a failure)");
            false
        }
        Err(e) => panic!("FLUMEN_ORT_TESTS=1 but ONNX Runtime is missing: {e}"),
    }
}

fn expected() -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(models_dir().join("mlp/expected.json")).expect("expected.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let rows = |k: &str| -> Vec<Vec<f64>> {
        v[k].as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("number")).collect())
            .collect()
    };
    (rows("x"), rows("y"))
}

/// A job: CSV of the MLP's 64 test rows → `predict` → JSON lines.
fn predict_job(operator_extra: &str, inference_table: &str) -> Job {
    let job = Job::new(&format!(
        r#"
[job]
name = "predict"
batch_rows = 8

{inference_table}

[[source]]
id = "in"
kind = "csv"
path = "input.csv"

[[operator]]
id = "score"
plugin = "predict"
inputs = ["in"]
parallelism = 2
{operator_extra}

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["score"]
"#
    ));
    let (x, _) = expected();
    let mut csv = String::from("id,f0,f1,f2,f3\n");
    for (i, r) in x.iter().enumerate() {
        csv.push_str(&format!("{i},{},{},{},{}\n", r[0], r[1], r[2], r[3]));
    }
    std::fs::write(job.file("input.csv"), csv).expect("csv");
    job
}

fn repo_table() -> String {
    format!("[inference]\nmodels = {:?}", models_dir().display().to_string())
}

const GRANTED: &str = r#"capabilities = ["inference"]
config = { model = "mlp", features = ["f0", "f1", "f2", "f3"], output = "scores" }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_runs_a_model_over_every_row_batched_across_instances() {
    if !have_ort() {
        return;
    }
    let job = predict_job(GRANTED, &repo_table());
    let prepared = crate::common::engine().prepare(&job.path).await.unwrap_or_else(|e| panic!("{e}"));
    let metrics = prepared.metrics();
    let summary = prepared.run(std::future::pending()).await.unwrap_or_else(|e| panic!("{e}"));
    // What a cluster node's metrics expose: the model's calls, rows, batches and queue times.
    let stats = metrics.models();
    assert_eq!(stats.len(), 1, "{stats:?}");
    let m = &stats[0];
    // A loaded model is shared by every job of the process that uses it (other tests here
    // run the same model at the same time): its counters hold at least this job's rows.
    assert!(m.model == "mlp" && m.rows >= 64, "{m:?}");
    assert!(m.calls >= 1 && m.batches >= 1, "{m:?}");
    assert!(m.queue_max_seconds <= m.queue_seconds + 1e-9, "the longest wait is one of the waits summed: {m:?}");
    let text = std::fs::read_to_string(job.file("out.jsonl")).expect("output");
    let (_, y) = expected();
    let mut seen = vec![false; y.len()];
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let id = v["id"].as_u64().expect("id") as usize;
        let got: Vec<f64> = v["scores"].as_array().expect("scores").iter().map(|x| x.as_f64().expect("f")).collect();
        assert_eq!(got.len(), 3, "{line}");
        for (g, w) in got.iter().zip(&y[id]) {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "row {id}: got {got:?}, numpy says {:?}", y[id]);
        }
        assert!(!std::mem::replace(&mut seen[id], true), "row {id} twice");
    }
    assert!(seen.iter().all(|s| *s), "every row scored once");
    let rendered = summary.render();
    // 64 rows in batches of 8 from two instances: one line for the model, with its digest.
    assert_eq!(summary.models.len(), 1, "{rendered}");
    assert_contains(&summary.models[0], &["model mlp (model.onnx, sha256:", "onnxruntime", "64 rows"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_names_the_model_and_its_digest() {
    if !have_ort() {
        return;
    }
    let job = predict_job(GRANTED, &repo_table());
    let prepared = crate::common::engine().prepare(&job.path).await.unwrap_or_else(|e| panic!("{e}"));
    let schema = prepared.schema("score").expect("schema of score");
    let field = schema.field_with_name("scores").expect("scores column");
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(models_dir().join("mlp/model.onnx")).expect("model")))
    };
    assert_eq!(field.metadata().get("flumen.model").map(String::as_str), Some("mlp"));
    assert_eq!(field.metadata().get("flumen.model.digest"), Some(&format!("sha256:{digest}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_without_the_grant_is_refused_naming_the_capability() {
    let job = predict_job(r#"config = { model = "mlp", features = ["f0", "f1", "f2", "f3"] }"#, &repo_table());
    let err = job.run_err().await;
    assert_contains(&err, &["score", "imports capability `inference`", "add \"inference\" to its `capabilities`"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_without_a_repository_is_refused() {
    let job = predict_job(GRANTED, "");
    let err = job.run_err().await;
    assert_contains(
        &err,
        &["operator `score` is granted `inference` but the job has no model repository", "[inference]"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_is_a_config_error_listing_the_models() {
    if !have_ort() {
        return;
    }
    let job = predict_job(&GRANTED.replace("\"mlp\"", "\"resnet\""), &repo_table());
    let err = job.run_err().await;
    assert_contains(&err, &["score", "unknown model `resnet` (known: colors, mlp, slow, words)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_runtime_says_how_to_install_it() {
    let table = format!("{}\nruntime = \"no/such/libonnxruntime.so\"", repo_table());
    let job = predict_job(GRANTED, &table);
    let err = job.run_err().await;
    assert_contains(&err, &["[inference]", "does not exist", "pip install onnxruntime"]);
}

#[test]
fn models_list_and_inspect_describe_the_repository() {
    let flumen = crate::common::flumen_bin();
    let out = std::process::Command::new(flumen).args(["models", "list"]).arg(models_dir()).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_contains(&text, &["mlp  model.onnx  sha256:", "max_batch 16  delay 20 ms", "slow  model.onnx"]);

    let broken = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(broken.path().join("m")).expect("dir");
    std::fs::write(broken.path().join("m/model.toml"), "max_batch = 4\nmax_bacth = 8\n").expect("config");
    let out = std::process::Command::new(flumen).args(["models", "list"]).arg(broken.path()).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert_contains(&String::from_utf8_lossy(&out.stderr), &["m/model.toml: line 2", "max_bacth"]);

    if !have_ort() {
        return;
    }
    let out = std::process::Command::new(flumen)
        .args(["models", "inspect"])
        .arg(models_dir())
        .arg("mlp")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_contains(
        &text,
        &["input     x: float32 [?, 4]", "output    y: float32 [?, 3]", "onnxruntime", "preferred [8, 16]"],
    );
}

/// A checkpointed job whose model has `memo = true`: generated rows → predict → JSON lines.
fn memo_job(rows: u64, rate: u64) -> Job {
    let job = Job::new(&format!(
        r#"
[job]
name = "memo"
batch_rows = 20

[checkpoint]
interval_ms = 100
dir = "ck"

[inference]
models = "models"

[[source]]
id = "gen"
kind = "generator"
rows = {rows}
rows_per_second = {rate}
columns = [
  {{ name = "f0", gen = "sequence" }},
  {{ name = "f1", gen = "modulo", modulus = 7 }},
  {{ name = "f2", gen = "modulo", modulus = 3 }},
  {{ name = "f3", gen = "divide", divisor = 5 }},
]

[[operator]]
id = "score"
plugin = "predict"
inputs = ["gen"]
parallelism = 2
capabilities = ["inference"]
config = {{ model = "mlp", features = ["f0", "f1", "f2", "f3"], output = "scores" }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out"
inputs = ["score"]
"#
    ));
    let models = job.file("models/mlp");
    std::fs::create_dir_all(&models).expect("models dir");
    std::fs::copy(models_dir().join("mlp/model.onnx"), models.join("model.onnx")).expect("model");
    let config = std::fs::read_to_string(models_dir().join("mlp/model.toml")).expect("config");
    std::fs::write(models.join("model.toml"), format!("memo = true\n{config}")).expect("config");
    job
}

/// Committed output rows: f0 → scores.
fn committed_scores(dir: &Path) -> std::collections::BTreeMap<i64, Vec<f64>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("out dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !(name.starts_with("part-") && name.ends_with(".jsonl")) {
            continue;
        }
        for line in std::fs::read_to_string(&path).expect("part").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let scores = v["scores"].as_array().expect("scores").iter().map(|x| x.as_f64().expect("f")).collect();
            assert!(out.insert(v["f0"].as_i64().expect("f0"), scores).is_none(), "row twice: {line}");
        }
    }
    out
}

/// `memo H hits M misses (E remembered from earlier runs)` from a summary.
fn memo_counts(text: &str) -> (u64, u64, u64) {
    let line = text.lines().find(|l| l.starts_with("model mlp")).unwrap_or_else(|| panic!("no model line:\n{text}"));
    let words: Vec<&str> = line.split(", memo ").nth(1).expect(line).split_whitespace().collect();
    let num = |i: usize| words[i].trim_start_matches('(').parse::<u64>().expect(line);
    (num(0), num(2), num(4))
}

#[test]
fn a_resumed_job_with_the_memo_on_never_infers_a_row_twice() {
    use crate::checkpoint::{finish, flumen, resume_to_completion};
    if !have_ort() {
        return;
    }
    let rows = 1500;
    let job = memo_job(rows, 2000);
    let mut child = flumen(&job, false).spawn().expect("flumen runs");
    // Kill it once the memo holds some rows and a checkpoint was taken.
    let memo_dir = job.file("ck/.memo");
    let started = std::time::Instant::now();
    loop {
        let memo_bytes: u64 = std::fs::read_dir(&memo_dir)
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        if memo_bytes > 4096 && started.elapsed() > std::time::Duration::from_millis(300) {
            break;
        }
        assert!(child.try_wait().expect("wait").is_none(), "the job ended before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let text = resume_to_completion(&job);
    let (hits, misses, remembered) = memo_counts(&text);
    eprintln!("resumed: {hits} hits, {misses} misses, {remembered} remembered before the kill");
    // Every row was inferred once in all: what the killed run remembered,
    // plus what the resumed run had to infer; rows it replayed were hits.
    assert!(remembered > 0, "{text}");
    assert_eq!(remembered + misses, rows, "rows inferred twice or not at all:\n{text}");
    assert!(hits + misses <= rows, "{text}");

    // The output equals an uninterrupted run's.
    let clean = memo_job(rows, 1_000_000);
    let (code, out) = finish(flumen(&clean, false).spawn().expect("flumen runs"), "clean");
    assert_eq!(code, 0, "{out}");
    let (resumed, expected) = (committed_scores(&job.file("out")), committed_scores(&clean.file("out")));
    assert_eq!(resumed.len(), rows as usize);
    assert_eq!(resumed.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (k, got) in &resumed {
        for (g, w) in got.iter().zip(&expected[k]) {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "row {k}: {got:?} against {:?}", expected[k]);
        }
    }
}

/// Solid-colour PNGs of `size`, written as `pictures/<name>`.
fn write_solid_png(dir: &Path, name: &str, rgb: [u8; 3], (w, h): (u32, u32)) {
    let image = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    image.save_with_format(dir.join(name), image::ImageFormat::Png).expect("png");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_image_labels_pictures_decoded_by_the_host() {
    if !have_ort() {
        return;
    }
    let job = Job::new(&format!(
        r#"
[job]
name = "colors"
batch_rows = 3

{}

[[source]]
id = "files"
kind = "blobs"
path = "pictures"
column_type = "image"

[[operator]]
id = "classify"
plugin = "classify-image"
capabilities = ["inference"]
parallelism = 2
config = {{ model = "colors", input = "blob", k = 2 }}
inputs = ["files"]
on_error = {{ then = "dead-letter", dead_letter = "rejects" }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
blobs = "reference"
inputs = ["classify"]

[[sink]]
id = "rejects"
kind = "jsonl"
path = "rejects.jsonl"
blobs = "reference"
"#,
        repo_table()
    ));
    let pictures = job.file("pictures");
    std::fs::create_dir(&pictures).expect("dir");
    let colours = [("red", [250, 10, 10]), ("green", [5, 240, 20]), ("blue", [0, 30, 255])];
    for (i, (name, rgb)) in colours.iter().enumerate() {
        // Different sizes: the host resizes each to the model's 32 × 32.
        write_solid_png(&pictures, &format!("{name}.png"), *rgb, (40 + 10 * i as u32, 30 + 7 * i as u32));
        write_solid_png(&pictures, &format!("{name}-small.png"), *rgb, (8, 5));
    }
    std::fs::write(pictures.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").expect("broken");
    let summary = job.run().await.unwrap_or_else(|e| panic!("{e}"));

    let text = std::fs::read_to_string(job.file("out.jsonl")).expect("output");
    let mut seen = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let path = v["path"].as_str().expect("path").to_owned();
        let labels: Vec<&str> = v["label"].as_array().expect("labels").iter().map(|l| l.as_str().expect("l")).collect();
        let scores: Vec<f64> = v["score"].as_array().expect("scores").iter().map(|s| s.as_f64().expect("s")).collect();
        let want = path.trim_start_matches("pictures/").split(['-', '.']).next().expect("colour");
        assert_eq!(labels[0], want, "{line}");
        assert!(scores[0] > 0.9 && scores[0] >= scores[1], "{line}");
        seen.push(path);
    }
    seen.sort();
    assert_eq!(seen.len(), 6, "{text}");
    let rejects = std::fs::read_to_string(job.file("rejects.jsonl")).expect("rejects");
    assert_contains(&rejects, &["broken.png", "classify-image: cannot classify"]);
    // No image byte entered the guest: it only read the reference column.
    let node = summary.nodes.iter().find(|n| n.id.as_str() == "classify").expect("classify node");
    assert_eq!(node.blob_bytes_read, 0, "{}", summary.render());
    assert_contains(&summary.models[0], &["model colors", "sizes"]);
}

#[test]
fn the_image_classify_example_labels_its_pictures() {
    if !have_ort() {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/image-classify");
    let dir = tempfile::tempdir().expect("tmp");
    copy_tree(&example, dir.path());
    let out = std::process::Command::new(crate::common::flumen_bin())
        .args(["run", "--quiet"])
        .arg(dir.path().join("job.toml"))
        .env("FLUMEN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"))
        .output()
        .expect("flumen runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert_contains(&text, &["model colors", "wrote"]);
    let file = std::fs::File::open(dir.path().join("out/labels.parquet")).expect("labels.parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let want = [
        ("cherry", "red"),
        ("lawn", "green"),
        ("leaf", "green"),
        ("ocean", "blue"),
        ("sky", "blue"),
        ("tomato", "red"),
    ];
    let mut got = Vec::new();
    for batch in reader {
        use arrow::array::AsArray;
        let batch = batch.expect("batch");
        let paths = batch.column_by_name("path").expect("path").as_string::<i32>().clone();
        let labels = batch.column_by_name("label").expect("label").as_list::<i32>().clone();
        for i in 0..batch.num_rows() {
            let top = labels.value(i);
            let top = top.as_string::<i32>().value(0).to_owned();
            let stem = paths.value(i).rsplit('/').next().unwrap_or_default().trim_end_matches(".png").to_owned();
            got.push((stem, top));
        }
    }
    got.sort();
    let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(got, want);
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            if entry.file_name() == "out" {
                continue;
            }
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The `words` toy encoder's pooled vector of `text` (see make_models.py):
/// the normalized mean of its words' colour axes.
fn words_vector(text: &str) -> [f32; 3] {
    let mut v = [0f32; 3];
    for w in text.to_lowercase().split_whitespace() {
        match w {
            "red" | "apple" | "cherry" => v[0] += 1.0,
            "green" | "grass" => v[1] += 1.0,
            "blue" | "sky" => v[2] += 1.0,
            _ => {}
        }
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_text_appends_an_embedding_per_row_from_the_host_tokenizer() {
    if !have_ort() {
        return;
    }
    let job = Job::new(&format!(
        r#"
[job]
name = "embed"
batch_rows = 2

{}

[[source]]
id = "in"
kind = "csv"
path = "input.csv"
schema = [{{ name = "id", type = "int64" }}, {{ name = "text", type = "utf8" }}]

[[operator]]
id = "embed"
plugin = "embed-text"
capabilities = ["inference"]
parallelism = 2
config = {{ model = "words", input = "text", output = "vec" }}
inputs = ["in"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
inputs = ["embed"]
"#,
        repo_table()
    ));
    let texts = ["red apple", "Sky", "green grass and a cherry", "", "the blue sky", "cherry", "red apple", "grass"];
    let mut csv = String::from("id,text\n");
    for (i, t) in texts.iter().enumerate() {
        csv.push_str(&format!("{i},{t}\n"));
    }
    std::fs::write(job.file("input.csv"), csv).expect("csv");
    let summary = job.run().await.unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(job.file("out.jsonl")).expect("output");
    let mut seen = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let id = v["id"].as_i64().expect("id") as usize;
        // An empty CSV field is a null text, and its embedding is null.
        if texts[id].is_empty() {
            assert!(v["vec"].is_null(), "{line}");
            seen += 1;
            continue;
        }
        let got: Vec<f32> = v["vec"].as_array().expect("vec").iter().map(|x| x.as_f64().expect("f") as f32).collect();
        let want = words_vector(texts[id]);
        assert_eq!(got.len(), 3, "{line}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{:?}: got {got:?}, want {want:?}", texts[id]);
        }
        seen += 1;
    }
    assert_eq!(seen, texts.len(), "{text}");
    assert_contains(&summary.models[0], &["model words", "memo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_text_reads_documents_by_reference_in_the_host_only() {
    if !have_ort() {
        return;
    }
    let job = Job::new(&format!(
        r#"
[job]
name = "embed-files"

{}

[[source]]
id = "docs"
kind = "blobs"
path = "docs"

[[operator]]
id = "embed"
plugin = "embed-text"
capabilities = ["inference"]
config = {{ model = "words", input = "blob" }}
inputs = ["docs"]
on_error = {{ then = "dead-letter", dead_letter = "rejects" }}

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
blobs = "reference"
inputs = ["embed"]

[[sink]]
id = "rejects"
kind = "jsonl"
path = "rejects.jsonl"
blobs = "reference"
"#,
        repo_table()
    ));
    let docs = job.file("docs");
    std::fs::create_dir(&docs).expect("dir");
    std::fs::write(docs.join("a.txt"), "red cherry").expect("a");
    std::fs::write(docs.join("b.txt"), "blue sky\n").expect("b");
    std::fs::write(docs.join("c.bin"), b"\xff\xfe\x00binary").expect("c");
    let summary = job.run().await.unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(job.file("out.jsonl")).expect("output");
    let mut got: Vec<(String, Vec<f64>)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let path = v["path"].as_str().expect("path").to_owned();
            (path, v["embedding"].as_array().expect("e").iter().map(|x| x.as_f64().expect("f")).collect())
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 2, "{text}");
    assert_eq!(got[0].1, vec![1.0, 0.0, 0.0], "{text}");
    assert_eq!(got[1].1, vec![0.0, 0.0, 1.0], "{text}");
    let rejects = std::fs::read_to_string(job.file("rejects.jsonl")).expect("rejects");
    assert_contains(&rejects, &["c.bin", "not UTF-8"]);
    let node = summary.nodes.iter().find(|n| n.id.as_str() == "embed").expect("embed node");
    assert_eq!(node.blob_bytes_read, 0, "{}", summary.render());
}

/// The all-MiniLM-L6-v2 folder `tests/models/make_minilm.py` writes, named
/// by FLUMEN_MINILM_DIR (`.ci/run` builds it and sets it); `None`, saying
/// so, when it is not set.
fn minilm_dir() -> Option<PathBuf> {
    match std::env::var_os("FLUMEN_MINILM_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!(
                "skipped: set FLUMEN_MINILM_DIR to a folder written by `python3 tests/models/make_minilm.py DIR` \
                 (`.ci/run` does)"
            );
            None
        }
    }
}

/// `flumen run --quiet <dir>/<job>`: whether it succeeded, and its output.
fn run_example_job(dir: &Path, job: &str) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(crate::common::flumen_bin())
        .args(["run", "--quiet"])
        .arg(dir.join(job))
        .env("FLUMEN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"))
        .output()
        .expect("flumen runs");
    (out.status, format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The rows of `out/answers.jsonl`: (rank, score, path, chunk).
fn answers(dir: &Path) -> Vec<(u64, f64, String, String)> {
    let text = std::fs::read_to_string(dir.join("out/answers.jsonl")).expect("answers.jsonl");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {line}")).to_owned();
            (v["rank"].as_u64().expect("rank"), v["score"].as_f64().expect("score"), field("path"), field("chunk"))
        })
        .collect()
}

/// Ranks 1, 2, 3 with scores falling, and the best answer from `document`.
fn assert_ranked(answers: &[(u64, f64, String, String)], document: &str) {
    let ranks: Vec<u64> = answers.iter().map(|a| a.0).collect();
    assert_eq!(ranks, [1, 2, 3], "{answers:#?}");
    assert!(answers.windows(2).all(|w| w[0].1 >= w[1].1), "scores fall with rank: {answers:#?}");
    assert!(answers.iter().all(|a| (-1.0..=1.0).contains(&a.1)), "cosines: {answers:#?}");
    assert_eq!(answers[0].2, format!("data/{document}"), "{answers:#?}");
}

#[test]
fn the_semantic_search_example_finds_the_right_document() {
    if !have_ort() {
        return;
    }
    let Some(minilm) = minilm_dir() else { return };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/semantic-search");
    let dir = tempfile::tempdir().expect("tmp");
    let dir = dir.path();
    for file in ["index.toml", "query.toml"] {
        std::fs::copy(example.join(file), dir.join(file)).expect("copy");
    }
    std::fs::create_dir(dir.join("data")).expect("mkdir");
    copy_tree(&example.join("data"), &dir.join("data"));
    // The model folder as the README has it built: models/minilm.
    std::fs::create_dir_all(dir.join("models/minilm")).expect("mkdir");
    for f in ["model.onnx", "model.toml", "tokenizer.json"] {
        std::os::unix::fs::symlink(minilm.join(f), dir.join("models/minilm").join(f)).expect("symlink");
    }

    let (status, text) = run_example_job(dir, "index.toml");
    assert!(status.success(), "{text}");
    assert_contains(&text, &["model minilm", "wrote"]);
    // Every document gave chunks, each with its file and a 384-d embedding
    // that kept its extension type through Parquet.
    let file = std::fs::File::open(dir.join("out/chunks.parquet")).expect("chunks.parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut documents = std::collections::BTreeSet::new();
    for batch in reader {
        use arrow::array::{Array, AsArray};
        let batch = batch.expect("batch");
        let schema = batch.schema();
        let (_, field) = schema.column_with_name("embedding").expect("embedding column");
        assert_eq!(
            field.metadata().get("ARROW:extension:name").map(String::as_str),
            Some("flumen.embedding"),
            "{field:?}"
        );
        assert!(field.metadata().get("flumen.model.digest").is_some_and(|d| d.starts_with("sha256:")), "{field:?}");
        let embeddings = batch.column_by_name("embedding").expect("embedding").as_fixed_size_list();
        assert_eq!((embeddings.value_length(), embeddings.null_count()), (384, 0));
        let paths = batch.column_by_name("path").expect("path").as_string::<i32>();
        documents.extend(paths.iter().map(|p| p.expect("path").to_owned()));
        assert!(batch.column_by_name("chunk").is_some());
    }
    assert_eq!(documents.len(), 8, "{documents:?}");

    let (status, text) = run_example_job(dir, "query.toml");
    assert!(status.success(), "{text}");
    assert_contains(&text, &["rank", "bicycle-repair.txt", "model minilm"]);
    let got = answers(dir);
    assert_ranked(&got, "bicycle-repair.txt");
    assert!(got[0].3.contains("flat tyre"), "{got:#?}");

    // Another question, another document; the index is not rebuilt.
    let query = std::fs::read_to_string(dir.join("query.toml")).expect("query.toml");
    let asked = query.replace("How do I fix a flat tyre?", "What makes a volcanic eruption explosive?");
    assert_ne!(asked, query, "query.toml asks how to fix a flat tyre");
    std::fs::write(dir.join("volcano.toml"), &asked).expect("write");
    let (status, text) = run_example_job(dir, "volcano.toml");
    assert!(status.success(), "{text}");
    assert_ranked(&answers(dir), "volcanoes.txt");

    // A query embedded by another model than the index's is refused at plan
    // time, naming both models.
    std::os::unix::fs::symlink(models_dir().join("words"), dir.join("models/words")).expect("symlink");
    std::fs::write(dir.join("words.toml"), query.replace("model = \"minilm\"", "model = \"words\"")).expect("write");
    let (status, text) = run_example_job(dir, "words.toml");
    assert_eq!(status.code(), Some(2), "{text}");
    assert_contains(&text, &["nearest", "column `embedding` holds embeddings of model `minilm`", "`words`"]);
    // So is a model of the same name whose file is not the one that made
    // the index.
    std::fs::create_dir(dir.join("other")).expect("mkdir");
    std::os::unix::fs::symlink(models_dir().join("words"), dir.join("other/minilm")).expect("symlink");
    std::fs::write(dir.join("other.toml"), query.replace("models = \"models\"", "models = \"other\"")).expect("write");
    let (status, text) = run_example_job(dir, "other.toml");
    assert_eq!(status.code(), Some(2), "{text}");
    assert_contains(&text, &["column `embedding` was embedded by model `minilm` sha256:", "embed the rows again"]);
}

/// A repository with the test MLP, its config asking for the GPU.
fn gpu_repo(fallback: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let to = dir.path().join("mlp");
    std::fs::create_dir(&to).expect("dir");
    std::fs::copy(models_dir().join("mlp/model.onnx"), to.join("model.onnx")).expect("model");
    let config = std::fs::read_to_string(models_dir().join("mlp/model.toml")).expect("config");
    std::fs::write(to.join("model.toml"), format!("device = \"gpu\"\nfallback = \"{fallback}\"\n{config}"))
        .expect("config");
    let table = format!("[inference]\nmodels = {:?}", dir.path().display().to_string());
    (dir, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_model_without_a_gpu_runs_on_the_cpu_and_says_so_or_fails_as_configured() {
    if std::env::var("FLUMEN_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: FLUMEN_GPU_TESTS=1, this machine has a GPU");
        return;
    }
    if !have_ort() {
        return;
    }
    let (_repo, table) = gpu_repo("cpu");
    let job = predict_job(GRANTED, &table);
    let plan = crate::common::engine().prepare(&job.path).await.unwrap_or_else(|e| panic!("{e}")).describe();
    assert_contains(&plan, &["mlp", "wants the GPU, which is unavailable", "running on the CPU"]);
    let summary = job.run().await.unwrap_or_else(|e| panic!("{e}"));
    assert_contains(
        &summary.models[0],
        &["model mlp", "onnxruntime", "on cpu", "64 rows", "wants the GPU, which is unavailable"],
    );
    assert_eq!(crate::common::read_jsonl_ids(&job.file("out.jsonl")).len(), 64);

    let (_repo, table) = gpu_repo("fail");
    let err = predict_job(GRANTED, &table).run_err().await;
    assert_contains(&err, &["mlp"]);
    assert!(err.contains("CUDA") || err.contains("GPU") || err.contains("not found"), "{err}");
}

/// `infer-blobs` takes only references the guest was handed: a flipped token
/// byte or a size that is not the blob's is refused as forged, naming the
/// row, before the host reads a byte; a call naming more than 1 GiB of blob
/// bytes is refused at admission; the genuine references are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_blobs_refuses_forged_references_and_oversized_calls() {
    if !have_ort() {
        return;
    }
    let run = |mode: &str, big: bool| {
        let job = Job::new(&format!(
            r#"
[job]
name = "probe"

{}

[[source]]
id = "files"
kind = "blobs"
path = "pictures"
column_type = "image"

[[operator]]
id = "probe"
plugin = "{{guest:infer-probe}}"
capabilities = ["inference"]
config = {{ mode = "{mode}", model = "colors" }}
inputs = ["files"]

[[sink]]
id = "out"
kind = "jsonl"
path = "out.jsonl"
blobs = "reference"
inputs = ["probe"]
"#,
            repo_table()
        ));
        let pictures = job.file("pictures");
        std::fs::create_dir(&pictures).expect("dir");
        write_solid_png(&pictures, "red.png", [250, 10, 10], (12, 9));
        if big {
            // 64 MiB: seventeen references to it name more than 1 GiB.
            std::fs::write(pictures.join("big.png"), vec![0u8; 64 << 20]).expect("big file");
        }
        job
    };
    let ok = run("genuine", false);
    ok.run().await.unwrap_or_else(|e| panic!("genuine references must be answered: {e}"));
    for mode in ["forged", "resized"] {
        let err = run(mode, false).run_err().await;
        assert_contains(&err, &["probe[0]", "model `colors`: row 0", "forged"]);
    }
    let err = run("huge", true).run_err().await;
    assert_contains(&err, &["probe[0]", "model `colors`", "blob bytes in one call (at most 1073741824)"]);
}
