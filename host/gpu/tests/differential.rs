//! The GPU executor against ONNX Runtime on the CPU, on the same models and
//! inputs: per-operator graphs and whole models (the test MLP, the toy text
//! encoder, ResNet-18 and MiniLM-L6 when FLUMEN_BENCH_MODELS names their
//! folder). float32 tolerance: |gpu − cpu| ≤ 1e-4 + 1e-3·|cpu| per value
//! (both compute in float32; cuBLAS and ONNX Runtime sum in different orders).
//! Needs a GPU: runs only with FLUMEN_GPU_TESTS=1 and says so when skipped.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use flumen_gpu::GpuBackend;
use flumen_ort::OrtBackend;
use flumen_types::inference::{DType, Device, InferenceBackend, LoadRequest, ModelInstance, Tensor};
use support::{A, f32_init, i64_init, model, node, value, values};

fn backends() -> Option<(Arc<GpuBackend>, Arc<OrtBackend>)> {
    if std::env::var("FLUMEN_GPU_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: needs a GPU (set FLUMEN_GPU_TESTS=1 on a machine with one)");
        return None;
    }
    let gpu = GpuBackend::load().unwrap_or_else(|e| panic!("FLUMEN_GPU_TESTS=1 but {e}"));
    let ort = OrtBackend::load(None).unwrap_or_else(|e| panic!("ONNX Runtime is needed as the reference: {e}"));
    eprintln!("GPU: {}", gpu.device());
    Some((gpu, ort))
}

fn load(b: &dyn InferenceBackend, path: &Path, device: Device) -> Box<dyn ModelInstance> {
    let req = LoadRequest { name: "t", path, device, threads: 4 };
    b.load(&req).unwrap_or_else(|e| panic!("{} on {device}: {e}", path.display()))
}

fn f32_tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape.to_vec(), &values(shape.iter().product(), seed)).expect("tensor")
}

fn i64_tensor(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::new(DType::I64, shape.to_vec(), Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()))
        .expect("tensor")
}

/// Runs both and compares every output; returns the largest difference.
fn agree(what: &str, gpu: &mut dyn ModelInstance, cpu: &mut dyn ModelInstance, inputs: &[Tensor]) -> f32 {
    let g = gpu.run(inputs).unwrap_or_else(|e| panic!("{what} on the GPU: {e}"));
    let c = cpu.run(inputs).unwrap_or_else(|e| panic!("{what} on ONNX Runtime: {e}"));
    assert_eq!(g.len(), c.len(), "{what}: outputs");
    let mut worst = 0f32;
    for (i, (g, c)) in g.iter().zip(&c).enumerate() {
        assert_eq!(g.shape, c.shape, "{what}: output {i} shape");
        let (gv, cv) = (g.to_f32().expect("f32"), c.to_f32().expect("f32"));
        for (j, (a, b)) in gv.iter().zip(&cv).enumerate() {
            let d = (a - b).abs();
            assert!(d <= 1e-4 + 1e-3 * b.abs(), "{what}: output {i} value {j}: GPU {a}, ONNX Runtime {b}");
            worst = worst.max(d);
        }
    }
    eprintln!("{what}: agree, largest difference {worst:.2e}");
    worst
}

fn write_model(dir: &Path, name: &str, bytes: Vec<u8>) -> PathBuf {
    let p = dir.join(format!("{name}.onnx"));
    std::fs::write(&p, bytes).expect("model");
    p
}

#[test]
fn each_operator_agrees_with_onnx_runtime() {
    let Some((gpu, ort)) = backends() else { return };
    let dir = std::env::temp_dir().join(format!("flumen-gpu-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let f = 1; // float32
    type Case = (&'static str, Vec<u8>, Vec<Tensor>);
    let cases: Vec<Case> = vec![
        (
            "Add broadcast",
            model(
                vec![node("Add", &["x", "b"], "y", vec![])],
                vec![value("x", f, &[-1, 3, 4])],
                vec![value("y", f, &[-1, 3, 4])],
                vec![f32_init("b", &[4], values(4, 1))],
            ),
            vec![f32_tensor(&[5, 3, 4], 2)],
        ),
        (
            "Mul/Div/Sub broadcast both ways",
            model(
                vec![
                    node("Mul", &["x", "b"], "m", vec![]),
                    node("Div", &["m", "c"], "d", vec![]),
                    node("Sub", &["d", "x"], "y", vec![]),
                ],
                vec![value("x", f, &[-1, 1, 4])],
                vec![value("y", f, &[-1, 3, 4])],
                vec![f32_init("b", &[3, 1], values(3, 3)), f32_init("c", &[], vec![2.5])],
            ),
            vec![f32_tensor(&[2, 1, 4], 4)],
        ),
        (
            "unary",
            model(
                vec![
                    node("Erf", &["x"], "a", vec![]),
                    node("Sigmoid", &["a"], "b", vec![]),
                    node("Tanh", &["b"], "c", vec![]),
                    node("Relu", &["x"], "r", vec![]),
                    node("Add", &["c", "r"], "y", vec![]),
                ],
                vec![value("x", f, &[-1, 7])],
                vec![value("y", f, &[-1, 7])],
                vec![],
            ),
            vec![f32_tensor(&[9, 7], 5)],
        ),
        (
            "Softmax and LayerNormalization (last axis, 300 wide)",
            model(
                vec![
                    node("Softmax", &["x"], "s", vec![("axis", A::I(-1))]),
                    node("LayerNormalization", &["x", "g", "b"], "l", vec![("epsilon", A::F(1e-5))]),
                    node("Add", &["s", "l"], "y", vec![]),
                ],
                vec![value("x", f, &[-1, 2, 300])],
                vec![value("y", f, &[-1, 2, 300])],
                vec![f32_init("g", &[300], values(300, 6)), f32_init("b", &[300], values(300, 7))],
            ),
            vec![f32_tensor(&[3, 2, 300], 8)],
        ),
        (
            "Gemm transB, alpha, beta, bias row",
            model(
                vec![node(
                    "Gemm",
                    &["x", "w", "c"],
                    "y",
                    vec![("transB", A::I(1)), ("alpha", A::F(0.5)), ("beta", A::F(2.0))],
                )],
                vec![value("x", f, &[-1, 6])],
                vec![value("y", f, &[-1, 5])],
                vec![f32_init("w", &[5, 6], values(30, 9)), f32_init("c", &[5], values(5, 10))],
            ),
            vec![f32_tensor(&[4, 6], 11)],
        ),
        (
            "Gemm transA",
            model(
                vec![node("Gemm", &["x", "w"], "y", vec![("transA", A::I(1))])],
                vec![value("x", f, &[6, -1])],
                vec![value("y", f, &[-1, 5])],
                vec![f32_init("w", &[6, 5], values(30, 12))],
            ),
            vec![f32_tensor(&[6, 3], 13)],
        ),
        (
            "MatMul 3-D × 2-D and batched 4-D, Transpose, Reshape",
            model(
                vec![
                    node("MatMul", &["x", "w"], "p", vec![]),
                    node("Reshape", &["p", "s"], "h", vec![]),
                    node("Transpose", &["h"], "q", vec![("perm", A::Is(vec![0, 2, 1, 3]))]),
                    node("Transpose", &["h"], "k", vec![("perm", A::Is(vec![0, 2, 3, 1]))]),
                    node("MatMul", &["q", "k"], "y", vec![]),
                ],
                vec![value("x", f, &[-1, 5, 8])],
                vec![value("y", f, &[-1, 2, 5, 5])],
                vec![f32_init("w", &[8, 8], values(64, 14)), i64_init("s", &[4], vec![0, 0, 2, 4])],
            ),
            vec![f32_tensor(&[3, 5, 8], 15)],
        ),
        (
            "MatMul with its scale and bias row folded in, a bias before the MatMul's output (Add b, x)",
            model(
                vec![
                    node("MatMul", &["x", "w"], "p", vec![]),
                    node("Mul", &["p", "s"], "q", vec![]),
                    node("Add", &["q", "b"], "r", vec![]),
                    node("MatMul", &["x", "w"], "p2", vec![]),
                    node("Add", &["b", "p2"], "r2", vec![]),
                    node("Sub", &["r", "r2"], "y", vec![]),
                ],
                vec![value("x", f, &[-1, 7, 8])],
                vec![value("y", f, &[-1, 7, 6])],
                vec![
                    f32_init("w", &[8, 6], values(48, 24)),
                    f32_init("s", &[], vec![0.37]),
                    f32_init("b", &[6], values(6, 25)),
                ],
            ),
            vec![f32_tensor(&[3, 7, 8], 26)],
        ),
        (
            "MatMul reading a transposed weight in place (Transpose [1, 0] becomes no copy)",
            model(
                vec![
                    node("Transpose", &["w"], "wt", vec![("perm", A::Is(vec![1, 0]))]),
                    node("MatMul", &["x", "wt"], "y", vec![]),
                ],
                vec![value("x", f, &[-1, 5])],
                vec![value("y", f, &[-1, 6])],
                vec![f32_init("w", &[6, 5], values(30, 27))],
            ),
            vec![f32_tensor(&[4, 5], 28)],
        ),
        (
            "Gather rows by int64 ids, Cast, Unsqueeze, Shape/Range positions",
            model(
                vec![
                    node("Gather", &["table", "ids"], "e", vec![]),
                    node("Shape", &["ids"], "shape", vec![]),
                    node("Gather", &["shape", "one"], "len", vec![("axis", A::I(0))]),
                    node("Range", &["zero", "len", "one"], "pos", vec![]),
                    node("Gather", &["ptable", "pos"], "p", vec![]),
                    node("Add", &["e", "p"], "ep", vec![]),
                    node("Cast", &["ids"], "idf", vec![("to", A::I(1))]),
                    node("Unsqueeze", &["idf", "axes"], "idu", vec![]),
                    node("Mul", &["ep", "idu"], "y", vec![]),
                ],
                vec![value("ids", 7, &[-1, -1])],
                vec![value("y", f, &[-1, -1, 4])],
                vec![
                    f32_init("table", &[10, 4], values(40, 16)),
                    f32_init("ptable", &[6, 4], values(24, 17)),
                    i64_init("one", &[], vec![1]),
                    i64_init("zero", &[], vec![0]),
                    i64_init("axes", &[1], vec![-1]),
                ],
            ),
            vec![i64_tensor(&[2, 5], &[1, 2, 3, 9, 0, 4, 4, 8, 7, 6])],
        ),
        (
            "Conv 3×3 stride 2 pad 1 + unfolded BatchNormalization + MaxPool + GlobalAveragePool + Flatten",
            model(
                vec![
                    node(
                        "Conv",
                        &["x", "w", "cb"],
                        "c",
                        vec![
                            ("kernel_shape", A::Is(vec![3, 3])),
                            ("strides", A::Is(vec![2, 2])),
                            ("pads", A::Is(vec![1, 1, 1, 1])),
                        ],
                    ),
                    node("Relu", &["c"], "r", vec![]),
                    node("BatchNormalization", &["r", "g", "b", "m", "v"], "n", vec![]),
                    node(
                        "MaxPool",
                        &["n"],
                        "p",
                        vec![
                            ("kernel_shape", A::Is(vec![3, 3])),
                            ("strides", A::Is(vec![2, 2])),
                            ("pads", A::Is(vec![1, 1, 1, 1])),
                        ],
                    ),
                    node("Conv", &["p", "w1"], "c1", vec![("kernel_shape", A::Is(vec![1, 1]))]),
                    node("GlobalAveragePool", &["c1"], "gap", vec![]),
                    node("Flatten", &["gap"], "y", vec![("axis", A::I(1))]),
                ],
                vec![value("x", f, &[-1, 3, 17, 15])],
                vec![value("y", f, &[-1, 6])],
                vec![
                    f32_init("w", &[4, 3, 3, 3], values(108, 18)),
                    f32_init("cb", &[4], values(4, 19)),
                    f32_init("g", &[4], vec![1.0, 0.5, 2.0, 1.5]),
                    f32_init("b", &[4], values(4, 20)),
                    f32_init("m", &[4], values(4, 21)),
                    f32_init("v", &[4], vec![1.0, 0.25, 2.0, 0.5]),
                    f32_init("w1", &[6, 4, 1, 1], values(24, 22)),
                ],
            ),
            vec![f32_tensor(&[2, 3, 17, 15], 23)],
        ),
    ];
    for (what, bytes, inputs) in cases {
        let path = write_model(&dir, "case", bytes);
        let mut g = load(gpu.as_ref(), &path, Device::Gpu);
        let mut c = load(ort.as_ref(), &path, Device::Cpu);
        agree(what, g.as_mut(), c.as_mut(), &inputs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_test_models_agree_with_onnx_runtime() {
    let Some((gpu, ort)) = backends() else { return };
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/models");
    let ids: Vec<i64> = (0..24).map(|i| [2, 4, 7, 9, 12, 15, 3][i % 7]).collect();
    let cases: Vec<(&str, Vec<Tensor>)> = vec![
        ("mlp", vec![f32_tensor(&[37, 4], 30)]),
        ("colors", vec![f32_tensor(&[5, 3, 32, 32], 31)]),
        ("words", vec![i64_tensor(&[4, 6], &ids), i64_tensor(&[4, 6], &[1; 24])]),
    ];
    for (name, inputs) in cases {
        let path = models.join(name).join("model.onnx");
        let mut g = load(gpu.as_ref(), &path, Device::Gpu);
        let mut c = load(ort.as_ref(), &path, Device::Cpu);
        agree(name, g.as_mut(), c.as_mut(), &inputs);
    }
}

/// ResNet-18 and MiniLM-L6 (the W6 and W7 models), on the GPU and on ONNX
/// Runtime, with their timings per batch (the GPU's after a warm-up run).
#[test]
fn the_benchmark_models_agree_with_onnx_runtime() {
    let Some((gpu, ort)) = backends() else { return };
    let Some(dir) = std::env::var_os("FLUMEN_BENCH_MODELS").map(PathBuf::from) else {
        panic!("FLUMEN_GPU_TESTS=1 needs FLUMEN_BENCH_MODELS (a folder with resnet18/ and minilm/)");
    };
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for row in 0..8i64 {
        let len = 20 + row * 13;
        for j in 0..128i64 {
            ids.push(if j < len { 100 + (row * 131 + j * 17) % 29000 } else { 0 });
            mask.push((j < len) as i64);
        }
    }
    let types = vec![0i64; ids.len()];
    let cases: Vec<(&str, Vec<Tensor>)> = vec![
        ("resnet18", vec![f32_tensor(&[8, 3, 224, 224], 40)]),
        ("minilm", vec![i64_tensor(&[8, 128], &ids), i64_tensor(&[8, 128], &mask), i64_tensor(&[8, 128], &types)]),
    ];
    for (name, inputs) in cases {
        let path = dir.join(name).join("model.onnx");
        let mut g = load(gpu.as_ref(), &path, Device::Gpu);
        let mut c = load(ort.as_ref(), &path, Device::Cpu);
        agree(name, g.as_mut(), c.as_mut(), &inputs);
        let t = Instant::now();
        for _ in 0..5 {
            g.run(&inputs).expect("gpu");
        }
        let gpu_ms = t.elapsed().as_secs_f64() * 1e3 / 5.0;
        let t = Instant::now();
        c.run(&inputs).expect("cpu");
        let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
        eprintln!("{name}: batch of 8 in {gpu_ms:.2} ms on the GPU, {cpu_ms:.1} ms on ONNX Runtime (CPU)");
    }
}
