//! `[preprocess.text]`: the host tokenizes text with the model folder's
//! `tokenizer.json`, batches calls of different lengths together (padded),
//! and mean-pools the encoder's states into unit vectors — on the toy `words`
//! encoder (`tests/models/make_models.py`) and, where FLUMEN_MINILM_DIR names
//! a folder written by `tests/models/make_minilm.py`, on all-MiniLM-L6-v2
//! against an independent numpy implementation. Needs ONNX Runtime, as the
//! batching tests do.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::{models_dir, ort};
use flumen_inference::ModelHub;
use flumen_types::inference::{InferenceService, ModelHandle, Tensor};

fn texts(items: &[&str]) -> Vec<Bytes> {
    items.iter().map(|t| Bytes::from(t.to_string())).collect()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let dim = t.shape[1];
    t.to_f32().expect("float32").chunks(dim).map(<[f32]>::to_vec).collect()
}

fn copy_words(to: &Path, config: Option<&str>) {
    let from = models_dir().join("words");
    std::fs::create_dir_all(to).expect("dir");
    for f in ["model.onnx", "model.toml", "tokenizer.json"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
    if let Some(c) = config {
        std::fs::write(to.join("model.toml"), c).expect("config");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_of_different_lengths_share_batches_and_pool_to_unit_vectors() {
    let Some(backends) = ort() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    copy_words(&dir.path().join("words"), None);
    let hub = ModelHub::open(dir.path(), backends, 2).expect("repository");
    let model = hub.load("words").expect("words loads");
    assert_eq!(model.info.accepts.as_deref(), Some("text"));
    let cases: [(&str, [f32; 3]); 6] = [
        ("red", [1.0, 0.0, 0.0]),
        ("Sky and GRASS", [0.0, 0.5f32.sqrt(), 0.5f32.sqrt()]),
        ("a cherry", [1.0, 0.0, 0.0]),
        ("green apples", [0.5f32.sqrt(), 0.5f32.sqrt(), 0.0]),
        // Truncated to max_length = 8 tokens: [CLS] blue × 6 [SEP]; red never counts.
        ("blue blue blue blue blue blue blue blue red red red", [0.0, 0.0, 1.0]),
        // Only special tokens, whose states are zero: a zero vector, not NaN.
        ("", [0.0, 0.0, 0.0]),
    ];
    let mut calls = Vec::new();
    for round in 0..4 {
        for (text, want) in cases {
            let model = Arc::clone(&model);
            calls.push(tokio::spawn(async move {
                let (out, failed) = model.infer_encoded(texts(&[text, "sky"]), None).await.expect("inference");
                assert!(failed.is_empty(), "{failed:?}");
                let got = rows(&out[0]);
                assert_eq!(out[0].shape, vec![2, 3], "round {round}: {text:?}");
                for (g, w) in got[0].iter().zip(want) {
                    assert!((g - w).abs() < 1e-5, "{text:?}: got {:?}, want {want:?}", got[0]);
                }
                assert_eq!(got[1], vec![0.0, 0.0, 1.0]);
            }));
        }
    }
    for c in calls {
        c.await.expect("caller");
    }
    let s = model.stats();
    assert_eq!(s.calls.load(Ordering::Relaxed), 24);
    let batches = s.batches.load(Ordering::Relaxed);
    assert!(batches < 24, "calls of different lengths joined batches: {batches} batches for 24 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_is_not_text_fails_alone_and_the_memo_answers_repeats() {
    let Some(backends) = ort() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    copy_words(&dir.path().join("words"), None);
    let hub = ModelHub::open(dir.path(), backends, 2).expect("repository");
    let handle = hub.model("words").expect("words");
    let mut items = texts(&["red apple", "blue sky"]);
    items.insert(1, Bytes::from_static(b"\xff\xfe not utf-8"));
    let (out, failed) = handle.infer_encoded(items.clone(), None).await.expect("inference");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 1);
    assert!(failed[0].1.contains("not UTF-8"), "{}", failed[0].1);
    let first = rows(&out[0]);
    assert_eq!(first[0], vec![1.0, 0.0, 0.0]);
    assert_eq!(first[2], vec![0.0, 0.0, 1.0]);

    let model = hub.load("words").expect("loaded");
    let backend_rows = model.stats().rows.load(Ordering::Relaxed);
    let memo = hub.memo_of("words").expect("memo on");
    let hits = memo.stats.hits.load(Ordering::Relaxed);
    // Again: the two good rows come from the memo; the bad one is tried (and fails) again.
    let (again, failed) = handle.infer_encoded(items, None).await.expect("inference");
    assert_eq!(rows(&again[0]), first);
    assert_eq!(failed.len(), 1);
    assert_eq!(memo.stats.hits.load(Ordering::Relaxed) - hits, 2);
    assert_eq!(model.stats().rows.load(Ordering::Relaxed) - backend_rows, 1, "only the failed row reached the model");
}

#[test]
fn a_text_model_set_up_wrong_fails_at_load_with_what_to_change() {
    let Some(backends) = ort() else { return };
    let base = std::fs::read_to_string(models_dir().join("words/model.toml")).expect("config");
    let cases = [
        (base.replace("pool = \"mean\"", "pool = \"max\""), "preprocess.text.pool = \"max\" (mean, cls or none)"),
        (base.replace("max_length = 8", "tokenizer = \"vocab.txt\"\nmax_length = 8"), "vocab.txt"),
        (format!("{base}\n[preprocess.image]\nwidth = 4\nheight = 4\n"), "not both"),
        (base.replace("max_length = 8", "max_length = 8\noutput = \"logits\""), "output `logits`"),
    ];
    for (config, want) in cases {
        let dir = tempfile::tempdir().expect("tmp");
        copy_words(&dir.path().join("words"), Some(&config));
        let err = match ModelHub::open(dir.path(), Arc::clone(&backends), 2) {
            Err(e) => e.to_string(),
            Ok(hub) => hub.load("words").map(|_| ()).expect_err("must fail").to_string(),
        };
        assert!(err.contains(want) && err.contains("words"), "{err}\nshould say {want:?}");
    }
}

/// The folder `make_minilm.py` wrote, or `None` (skipped, said).
fn minilm() -> Option<PathBuf> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_embeddings_match_the_reference_implementation() {
    let Some(backends) = ort() else { return };
    let Some(folder) = minilm() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("reference.json")).expect("reference.json"))
            .expect("json");
    let rows_ref = reference["rows"].as_array().expect("rows");
    let sentences: Vec<&str> = rows_ref.iter().map(|r| r["text"].as_str().expect("text")).collect();
    let want: Vec<Vec<f32>> = rows_ref
        .iter()
        .map(|r| r["embedding"].as_array().expect("e").iter().map(|v| v.as_f64().expect("f") as f32).collect())
        .collect();
    let dir = tempfile::tempdir().expect("tmp");
    let link = dir.path().join("minilm");
    std::fs::create_dir(&link).expect("dir");
    for f in ["model.onnx", "model.toml", "tokenizer.json"] {
        std::fs::copy(folder.join(f), link.join(f)).expect("copy");
    }
    let hub = ModelHub::open(dir.path(), backends, 2).expect("repository");
    let model = hub.model("minilm").expect("minilm loads");
    // All sentences in one call (8 to 256 tokens, padded together), then one by one.
    let (together, failed) = model.infer_encoded(texts(&sentences), None).await.expect("inference");
    assert!(failed.is_empty());
    let together = rows(&together[0]);
    for (i, s) in sentences.iter().enumerate() {
        let (alone, _) = model.infer_encoded(texts(&[s]), None).await.expect("inference");
        for got in [&together[i], &rows(&alone[0])[0]] {
            assert_eq!(got.len(), 384);
            let cos: f32 = got.iter().zip(&want[i]).map(|(a, b)| a * b).sum();
            let norm: f32 = got.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(cos >= 0.999, "{s:?}: cosine {cos} with the reference");
            assert!((norm - 1.0).abs() < 1e-4, "{s:?}: norm {norm}");
        }
    }
    let cos = |a: usize, b: usize| -> f32 { together[a].iter().zip(&together[b]).map(|(x, y)| x * y).sum() };
    // Known similarities: eating food ~ eating bread; the movie pair is closest.
    assert!(cos(0, 1) > 0.7 && cos(0, 1) > cos(0, 2) + 0.5, "{} {}", cos(0, 1), cos(0, 2));
    assert!(cos(2, 3) > 0.85, "{}", cos(2, 3));
}

#[test]
fn a_model_over_its_memory_quota_is_refused_at_load() {
    let Some(backends) = ort() else { return };
    let Some(folder) = minilm() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let to = dir.path().join("minilm");
    std::fs::create_dir(&to).expect("dir");
    for f in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(folder.join(f), to.join(f)).expect("copy");
    }
    // 90 MB of weights, twice, against a 100 MiB quota.
    let config = "instances = 2\nmemory_mb = 100\n\n[preprocess.text]\npool = \"mean\"\n";
    std::fs::write(to.join("model.toml"), config).expect("config");
    let hub = ModelHub::open(dir.path(), backends, 2).expect("repository");
    let err = hub.load("minilm").map(|_| ()).expect_err("over quota").to_string();
    assert!(err.contains("minilm") && err.contains("exceed memory_mb = 100"), "{err}");
}

#[test]
fn a_memo_file_that_is_not_a_memo_is_refused_naming_it_and_left_alone() {
    let Some(backends) = ort() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    copy_words(&dir.path().join("words"), None);
    let memo_dir = dir.path().join("memo");
    std::fs::create_dir(&memo_dir).expect("dir");
    let hub = ModelHub::open(dir.path(), backends, 2).expect("repository").with_memo_dir(memo_dir.clone());
    let short = hub.repository().get("words").expect("words").short_digest();
    let file = memo_dir.join(format!("words-{short}.memo"));
    std::fs::write(&file, b"somebody else's file").expect("junk");
    let err = hub.model("words").map(|_| ()).expect_err("not a memo").to_string();
    assert!(err.contains("words") && err.contains("is not an inference memo") && err.contains(".memo"), "{err}");
    assert_eq!(std::fs::read(&file).expect("still there"), b"somebody else's file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_larger_than_a_batch_runs_in_length_sorted_pieces_and_keeps_its_order() {
    let Some(backends) = ort() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    copy_words(&dir.path().join("words"), None);
    let hub = ModelHub::open(dir.path(), backends, 2).expect("repository");
    let model = hub.load("words").expect("words");
    // 20 rows (max_batch is 8) whose lengths alternate between 1 and 5 words.
    let texts: Vec<String> = (0..20)
        .map(|i| match i % 4 {
            0 => "red".to_owned(),
            1 => "the sky is a sky".to_owned(),
            2 => "grass".to_owned(),
            _ => "a red apple and cherry".to_owned(),
        })
        .collect();
    let items: Vec<Bytes> = texts.iter().map(|t| Bytes::from(t.clone())).collect();
    let (out, failed) = model.infer_encoded(items, None).await.expect("inference");
    assert!(failed.is_empty());
    assert_eq!(out[0].shape, vec![20, 3]);
    let want = |i: usize| -> [f32; 3] {
        match i % 4 {
            0 | 3 => [1.0, 0.0, 0.0],
            1 => [0.0, 0.0, 1.0],
            _ => [0.0, 1.0, 0.0],
        }
    };
    for (i, row) in rows(&out[0]).iter().enumerate() {
        for (g, w) in row.iter().zip(want(i)) {
            assert!((g - w).abs() < 1e-5, "row {i} {:?}: got {row:?}", texts[i]);
        }
    }
    // Three pieces: 8 + 8 + 4 rows, each padded only to its own longest row.
    assert_eq!(model.stats().batches.load(Ordering::Relaxed), 3);
    assert_eq!(model.stats().rows.load(Ordering::Relaxed), 20);
}
