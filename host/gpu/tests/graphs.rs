//! What the CPU machines can check of the GPU backend: every model the
//! benchmarks and tests use parses and is covered by the executor (BatchNorm
//! folded), an unsupported operator is an error naming the node, the kernels
//! compile to PTX with NVRTC (from PyPI's `nvidia-cuda-nvrtc`; skipped, said,
//! without it unless FLUMEN_NVRTC_TESTS=1), and without a GPU the backend
//! says why it is unavailable.

mod support;

use std::path::{Path, PathBuf};

use flumen_gpu::{GpuBackend, Graph, OPS};
use flumen_types::inference::DType;
use support::{A, f32_init, model, node, value};

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/models")
}

fn parse(path: &Path) -> Graph {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Graph::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_covered(g: &Graph) {
    for op in g.op_types() {
        assert!(OPS.iter().any(|(o, _)| *o == op), "{op} is run but missing from the coverage table");
    }
}

#[test]
fn the_test_models_parse_and_every_operator_is_covered() {
    for name in ["mlp", "colors", "words", "slow"] {
        let path = models_dir().join(name).join("model.onnx");
        let bytes = std::fs::read(&path).expect("model");
        match Graph::parse(&bytes) {
            Ok(g) => assert_covered(&g),
            // `slow` loops on a boolean on purpose: refused at load, saying what.
            Err(e) if name == "slow" => assert!(e.contains("not supported"), "{e}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let mlp = parse(&models_dir().join("mlp/model.onnx"));
    assert_eq!(mlp.inputs[0].dtype, DType::F32);
    assert_eq!(mlp.inputs[0].shape, vec![-1, 4]);
    assert_eq!(mlp.op_types(), vec!["Gemm", "Relu"]);
}

/// The benchmark models, written by `make_resnet.py` and `make_minilm.py`
/// (`.ci/run` writes them under target/models; FLUMEN_BENCH_MODELS names
/// the folder). Without them the test says it was skipped.
#[test]
fn the_benchmark_models_are_covered_with_batch_norm_folded() {
    let Some(dir) = std::env::var_os("FLUMEN_BENCH_MODELS").map(PathBuf::from) else {
        eprintln!("skipped: set FLUMEN_BENCH_MODELS to a folder with resnet18/ and minilm/ (`.ci/run` does)");
        return;
    };
    let resnet = parse(&dir.join("resnet18/model.onnx"));
    assert_covered(&resnet);
    assert!(!resnet.op_types().iter().any(|o| o == "BatchNormalization"), "{:?}", resnet.op_types());
    // 20 convolutions, each with its BatchNormalization folded in; the
    // ReLUs after them run inside the convolution's output kernel.
    assert_eq!(resnet.nodes.iter().filter(|n| n.op_type == "Conv").count(), 20);
    assert_eq!(resnet.nodes.iter().filter(|n| n.op_type == "Relu").count(), 8, "only the residual ReLUs remain");
    let minilm = parse(&dir.join("minilm/model.onnx"));
    assert_covered(&minilm);
    assert_eq!(minilm.inputs.len(), 3);
    assert_eq!(minilm.outputs[0].shape, vec![-1, -1, 384]);
    // Each layer's six bias rows and its attention scale ride on their MatMuls.
    let count = |op: &str| minilm.nodes.iter().filter(|n| n.op_type == op).count();
    assert_eq!((count("MatMul"), count("Add"), count("Mul")), (48, 26, 13), "{:?}", minilm.op_types());
}

#[test]
fn an_unsupported_operator_or_attribute_names_the_node() {
    let x = || value("x", 1, &[-1, 4]);
    let cases = [
        (node("Det", &["x"], "y", vec![]), "node `Det_y` (Det): operator Det is not supported by the GPU executor"),
        (node("Softmax", &["x"], "y", vec![]), ""),
        (node("Conv", &["x", "w"], "y", vec![("group", A::I(2))]), "node `Conv_y` (Conv): group = 2 is not supported"),
        (node("MaxPool", &["x"], "y", vec![("kernel_shape", A::Is(vec![2, 2])), ("ceil_mode", A::I(1))]), "ceil_mode"),
    ];
    for (n, want) in cases {
        let bytes =
            model(vec![n], vec![x()], vec![value("y", 1, &[-1, 4])], vec![f32_init("w", &[2, 2, 1, 1], vec![1.0; 4])]);
        match Graph::parse(&bytes) {
            Ok(_) => assert!(want.is_empty(), "should fail with {want:?}"),
            Err(e) => assert!(!want.is_empty() && e.contains(want), "{e}\nshould say {want:?}"),
        }
    }
    assert!(Graph::parse(b"certainly not protobuf").unwrap_err().contains("not an ONNX model"));
    let mut no_output = node("Relu", &["x"], "y", vec![]);
    no_output.output.clear();
    let bytes = model(vec![no_output], vec![x()], vec![value("y", 1, &[-1, 4])], vec![]);
    assert!(Graph::parse(&bytes).unwrap_err().contains("node `Relu_y` (Relu) has no output"));
    let bn = node("BatchNormalization", &["x"], "y", vec![]);
    let bytes = model(vec![bn], vec![x()], vec![value("y", 1, &[-1, 4])], vec![]);
    assert!(Graph::parse(&bytes).unwrap_err().contains("must be initializers"));
}

#[test]
fn the_kernels_compile_to_ptx_with_nvrtc() {
    if let Err(e) = flumen_gpu::nvrtc_available() {
        if std::env::var("FLUMEN_NVRTC_TESTS").as_deref() == Ok("1") {
            panic!("FLUMEN_NVRTC_TESTS=1 but {e}");
        }
        eprintln!("skipped: {e} (set FLUMEN_NVRTC_TESTS=1 to make this a failure)");
        return;
    }
    for arch in ["compute_75", "compute_90"] {
        let ptx = flumen_gpu::kernels::compile(arch).unwrap_or_else(|e| panic!("{e}"));
        for name in flumen_gpu::kernels::NAMES {
            assert!(ptx.contains(&format!(".entry {name}(")), "{arch}: kernel {name} missing from the PTX");
        }
        assert!(ptx.contains(&format!(".target sm_{}", &arch["compute_".len()..])), "{arch}");
    }
}

#[test]
fn without_a_gpu_the_backend_says_why() {
    if std::env::var("FLUMEN_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: FLUMEN_GPU_TESTS=1, this machine has a GPU");
        return;
    }
    let err = GpuBackend::load().expect_err("no GPU on this machine");
    assert!(
        err.contains("no CUDA driver")
            || err.contains("sees no GPU")
            || err.contains("not found")
            || err.contains("CUDA"),
        "{err}"
    );
}
