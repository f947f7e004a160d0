//! The model repository, the dynamic batcher and ONNX Runtime together, on the
//! small models in `tests/models` (made by `tests/models/make_models.py`).
//! Needs ONNX Runtime (`pip install onnxruntime`, or ORT_DYLIB_PATH); without
//! it each test says it was skipped, unless FLUMEN_ORT_TESTS=1 demands it.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{models_dir, ort};
use flumen_inference::{ModelHub, summary_line};
use flumen_types::inference::{DType, InferError, ModelHandle, Tensor};

fn expected() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let text = std::fs::read_to_string(models_dir().join("mlp/expected.json")).expect("expected.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let rows = |k: &str| -> Vec<Vec<f32>> {
        v[k].as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("num") as f32).collect())
            .collect()
    };
    (rows("x"), rows("y"))
}

fn rows_tensor(rows: &[Vec<f32>]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_f32(vec![rows.len(), rows[0].len()], &flat).expect("tensor")
}

fn assert_close(got: &Tensor, want: &[Vec<f32>]) {
    let got = got.to_f32().expect("f32 output");
    let want: Vec<f32> = want.iter().flatten().copied().collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "value {i}: got {g}, numpy says {w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlp_answers_match_numpy_across_split_calls() {
    let Some(backends) = ort() else { return };
    let hub = ModelHub::open(&models_dir(), backends, 2).expect("repository");
    let model = hub.load("mlp").expect("mlp loads");
    assert_eq!(model.info().signature.inputs[0].shape, vec![-1, 4]);
    assert_eq!(model.info().digest.len(), 64);
    let (x, y) = expected();
    // 64 rows in one call: four pieces of max_batch = 16, joined back in order.
    let out = model.infer(vec![rows_tensor(&x)], None).await.expect("inference");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].shape, vec![64, 3]);
    assert_close(&out[0], &y);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_batches_and_get_their_own_rows() {
    let Some(backends) = ort() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    copy_model(&models_dir().join("mlp"), &dir.path().join("mlp"), None);
    let hub = ModelHub::open(dir.path(), backends, 2).expect("repository");
    let model = hub.load("mlp").expect("mlp loads");
    let (x, y) = expected();
    let mut calls = Vec::new();
    let mut at = 0;
    for i in 0..24 {
        let n = 1 + i % 3;
        let (xs, ys) = (x[at..at + n].to_vec(), y[at..at + n].to_vec());
        at = (at + n) % 60;
        let model = Arc::clone(&model);
        calls.push(tokio::spawn(async move {
            let out = model.infer(vec![rows_tensor(&xs)], None).await.expect("inference");
            assert_close(&out[0], &ys);
            n
        }));
    }
    let mut rows = 0;
    for c in calls {
        rows += c.await.expect("caller");
    }
    let s = model.stats();
    let batches = s.batches.load(Ordering::Relaxed);
    assert_eq!(s.calls.load(Ordering::Relaxed), 24);
    assert_eq!(s.rows.load(Ordering::Relaxed), rows as u64);
    // 48 rows from 24 callers arriving together, in batches of at most 16.
    assert!(batches < 24, "calls were batched together: {batches} batches for 24 calls");
    assert!(s.histogram().iter().all(|(le, _)| *le <= 16), "{:?}", s.histogram());
    let line = summary_line(&model, None);
    assert!(line.contains("24 calls") && line.contains(&format!("{rows} rows")), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_hits_its_deadline_while_others_keep_answering() {
    let Some(backends) = ort() else { return };
    let hub = ModelHub::open(&models_dir(), backends, 2).expect("repository");
    let slow = hub.load("slow").expect("slow loads");
    let mlp = hub.load("mlp").expect("mlp loads");
    let zero = || Tensor::from_f32(vec![1, 1], &[0.0]).expect("tensor");

    let err = slow.infer(vec![zero()], Some(Duration::from_millis(20))).await.expect_err("deadline");
    assert!(matches!(err, InferError::DeadlineExceeded { .. }), "{err}");
    assert!(err.to_string().contains("model `slow`: deadline of 20 ms exceeded"), "{err}");

    // A slow call without a deadline in flight does not hold up another model.
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let pending = tokio::spawn(async move {
        let out = slow.infer(vec![zero()], None).await.expect("slow answers");
        flag.store(true, Ordering::SeqCst);
        out
    });
    let (x, y) = expected();
    let out = mlp.infer(vec![rows_tensor(&x[..2])], None).await.expect("mlp answers");
    assert_close(&out[0], &y[..2]);
    assert!(!done.load(Ordering::SeqCst), "the mlp answered while the slow model was still running");
    let slow_out = pending.await.expect("task");
    assert_eq!(slow_out[0].to_f32(), Some(vec![400000.0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_are_refused_with_what_was_wrong() {
    let Some(backends) = ort() else { return };
    let hub = ModelHub::open(&models_dir(), backends, 2).expect("repository");
    let err = hub.load("resnet").expect_err("unknown");
    assert!(err.to_string().contains("unknown model `resnet` (known: colors, mlp, slow, words)"), "{err}");
    let mlp = hub.load("mlp").expect("mlp loads");

    let too_many = Tensor::from_f32(vec![65, 4], &[0.0; 260]).expect("tensor");
    let err = mlp.infer(vec![too_many], None).await.expect_err("refused");
    assert!(matches!(err, InferError::Refused { .. }) && err.to_string().contains("65 rows"), "{err}");

    let ints = Tensor::new(DType::I64, vec![1, 4], vec![0u8; 32].into()).expect("tensor");
    let err = mlp.infer(vec![ints], None).await.expect_err("dtype");
    assert!(err.to_string().contains("input `x` wants float32, got int64"), "{err}");

    let narrow = Tensor::from_f32(vec![2, 3], &[0.0; 6]).expect("tensor");
    let err = mlp.infer(vec![narrow], None).await.expect_err("shape");
    assert!(err.to_string().contains("input `x` wants shape [?, 4], got [2, 3]"), "{err}");

    let err = mlp.infer(vec![], None).await.expect_err("arity");
    assert!(err.to_string().contains("0 inputs given, the model takes 1 (x)"), "{err}");
}

#[test]
fn corrupt_or_misdeclared_models_fail_at_load_naming_the_model() {
    let Some(backends) = ort() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    copy_model(&models_dir().join("mlp"), &dir.path().join("broken"), None);
    std::fs::write(dir.path().join("broken/model.onnx"), b"this is not a protobuf").expect("write");
    let declared = std::fs::read_to_string(models_dir().join("mlp/model.toml"))
        .expect("config")
        .replace("shape = [-1, 4]", "shape = [-1, 5]");
    copy_model(&models_dir().join("mlp"), &dir.path().join("misdeclared"), Some(&declared));
    let hub = ModelHub::open(dir.path(), backends, 1).expect("repository");

    let err = hub.load("broken").expect_err("corrupt");
    let text = err.to_string();
    assert!(text.starts_with("model `broken` cannot be loaded:"), "{text}");
    assert!(text.contains("model.onnx is not a model ONNX Runtime can load"), "{text}");

    let err = hub.load("misdeclared").expect_err("declared shape");
    assert!(
        err.to_string().contains("input `x` is declared float32 [?, 5] in model.toml, the model has float32 [?, 4]"),
        "{err}"
    );
}

fn copy_model(from: &Path, to: &Path, config: Option<&str>) {
    std::fs::create_dir_all(to).expect("dir");
    for f in ["model.onnx", "model.toml"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
    if let Some(c) = config {
        std::fs::write(to.join("model.toml"), c).expect("config");
    }
}
