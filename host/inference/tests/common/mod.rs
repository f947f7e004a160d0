//! What the inference integration tests share: the test models' folder and
//! ONNX Runtime as a backend provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flumen_inference::BackendProvider;
use flumen_ort::OrtBackend;
use flumen_types::inference::InferenceBackend;

pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/models")
}

/// ONNX Runtime as a backend provider, or `None` (test skipped) when the
/// machine has none and the run does not demand it.
pub fn ort() -> Option<BackendProvider> {
    match OrtBackend::load(None) {
        Ok(b) => {
            let b: Arc<dyn InferenceBackend> = b;
            Some(Arc::new(move |_: &str, _| Ok(Arc::clone(&b))))
        }
        Err(e) if std::env::var("FLUMEN_ORT_TESTS").as_deref() != Ok("1") => {
            eprintln!("skipped: {e} (set FLUMEN_ORT_TESTS=1 to make this a failure)");
            None
        }
        Err(e) => panic!("FLUMEN_ORT_TESTS=1 but ONNX Runtime cannot be used: {e}"),
    }
}
