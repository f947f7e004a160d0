#!/usr/bin/env bash
# The GPU checks, as one script that finishes in a few minutes on a machine
# with an NVIDIA GPU, CUDA 13's driver, Python with PyTorch (torchvision,
# transformers), onnx, numpy, safetensors, tokenizers and onnxruntime:
#
#   1. writes the benchmark models (ResNet-18 and a MiniLM-L6 layout, seeded);
#   2. runs the flumen-gpu tests with FLUMEN_GPU_TESTS=1: every operator and
#      model on the GPU against ONNX Runtime on the CPU (differential);
#   3. runs the executor benchmark beside PyTorch on the same GPU;
#   4. runs W7's model stage on two CPU cores beside sentence-transformers
#      (which such machines have and CPU CI machines do not).
#
#   benches/gpu/check.sh [PREBUILT_DIR]
#
# With PREBUILT_DIR (holding the `graphs`, `differential`, `executor` and
# `w7_text` binaries built by `cargo test/bench -p flumen-gpu --release
# --no-run` and `cargo bench -p flumen-inference --bench w7_text --no-run`, for
# machines without a Rust toolchain) nothing is compiled. The log goes to
# $OUT/gpu-check.log (OUT defaults to target/gpu-check).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
prebuilt="${1:-}"

echo "== machine"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 - <<'PY'
import onnxruntime, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "| onnxruntime", onnxruntime.__version__)
PY
ORT_DYLIB_PATH="$(python3 -c 'import onnxruntime, os, glob; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])')"
export ORT_DYLIB_PATH

echo "== models"
models="${FLUMEN_BENCH_MODELS:-$PWD/target/gpu-models}"
python3 tests/models/make_resnet.py "$models/resnet18" --device gpu || exit 1
tokenizer="${FLUMEN_TOKENIZER:-}"
python3 tests/models/make_minilm.py "$models/minilm" --random 7 $tokenizer || exit 1
export FLUMEN_BENCH_MODELS="$models" FLUMEN_GPU_TESTS=1 FLUMEN_NVRTC_TESTS=1 FLUMEN_CACHE_DIR="$PWD/target/gpu-cache"

status=0
echo "== tests (GPU against ONNX Runtime)"
if [ -n "$prebuilt" ]; then
    "$prebuilt/graphs" --nocapture --test-threads 1 || status=1
    "$prebuilt/differential" --nocapture --test-threads 1 || status=1
    echo "-- again with convolutions by im2col + cuBLAS instead of cuDNN"
    FLUMEN_GPU_CONV=im2col "$prebuilt/differential" --nocapture --test-threads 1 || status=1
else
    cargo test -p flumen-gpu --release -- --nocapture --test-threads 1 || status=1
    echo "-- again with convolutions by im2col + cuBLAS instead of cuDNN"
    FLUMEN_GPU_CONV=im2col cargo test -p flumen-gpu --release --test differential -- --nocapture --test-threads 1 || status=1
fi

echo "== benchmark (model stage, beside PyTorch)"
if [ -n "$prebuilt" ]; then
    "$prebuilt/executor" || status=1
else
    cargo bench -p flumen-gpu --bench executor || status=1
fi
echo "== W7 model stage on two CPU cores, beside sentence-transformers"
if [ -n "$prebuilt" ]; then
    FLUMEN_MINILM_DIR="$models/minilm" taskset -c 0,1 "$prebuilt/w7_text" || status=1
else
    FLUMEN_MINILM_DIR="$models/minilm" taskset -c 0,1 cargo bench -p flumen-inference --bench w7_text || status=1
fi
echo "== done: status $status"
exit $status
