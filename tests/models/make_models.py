"""Writes the small ONNX models the tests use, deterministically (fixed seeds,
fixed producer fields), with the outputs numpy computes for them.

    python3 tests/models/make_models.py   # needs numpy and onnx (PyPI)

The files are checked in; rerun only to change a model.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def save(model, folder, config, extra=None):
    path = os.path.join(HERE, folder)
    os.makedirs(path, exist_ok=True)
    model.producer_name = "flumen-tests"
    model.producer_version = "1"
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(path, "model.onnx"))
    with open(os.path.join(path, "model.toml"), "w") as f:
        f.write(config)
    for name, text in (extra or {}).items():
        with open(os.path.join(path, name), "w") as f:
            f.write(text)


def mlp():
    """x: float32 [N, 4] -> Gemm(4x8) -> Relu -> Gemm(8x3) -> y: float32 [N, 3]."""
    rng = np.random.default_rng(7)
    w1 = np.round(rng.normal(size=(4, 8)), 3).astype(np.float32)
    b1 = np.round(rng.normal(size=(8,)), 3).astype(np.float32)
    w2 = np.round(rng.normal(size=(8, 3)), 3).astype(np.float32)
    b2 = np.round(rng.normal(size=(3,)), 3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "w2", "b2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.round(np.random.default_rng(11).normal(size=(64, 4)), 3).astype(np.float32)
    y = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    expected = {"x": x.tolist(), "y": y.astype(np.float32).tolist()}
    config = """# A two-layer perceptron: 4 features in, 3 scores out.
description = "test MLP (4 -> 8 -> 3)"
max_batch = 16
preferred_batch = [8, 16]
max_queue_delay_ms = 20
max_call_rows = 64

[[input]]
name = "x"
dtype = "float32"
shape = [-1, 4]

[[output]]
name = "y"
dtype = "float32"
shape = [-1, 3]
"""
    save(model, "mlp", config, {"expected.json": json.dumps(expected)})


def slow():
    """x: float32 [N, 1] -> a Loop of 400k `+ 1` steps -> y: float32 [N, 1]; takes a while."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", 1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", 1]),
        ],
        [numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [
            numpy_helper.from_array(np.array(400000, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = """# Adds 1 to its input 400 000 times: a model that is slow on purpose.
description = "slow test model"
max_batch = 4
max_queue_delay_ms = 1
"""
    save(model, "slow", config)


def colors():
    """A tiny image classifier: x float32 [N, 3, 32, 32] (normalized to [-1, 1]) -> the mean of each
    channel (1x1 convolution, global average pool) -> logits [N, 3] for red, green, blue."""
    conv_w = np.zeros((3, 3, 1, 1), dtype=np.float32)
    for c in range(3):
        conv_w[c, c, 0, 0] = 4.0
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "conv_w"], ["c"]),
            helper.make_node("GlobalAveragePool", ["c"], ["p"]),
            helper.make_node("Flatten", ["p"], ["logits"], axis=1),
        ],
        "colors",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(conv_w, "conv_w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = """# Which of red, green and blue dominates an image: the host decodes and
# normalizes the images ([preprocess.image]); the model averages each channel.
description = "test image classifier (red, green, blue)"
max_batch = 8
max_queue_delay_ms = 5
labels = "labels.txt"

[preprocess.image]
width = 32
height = 32
mode = "fill"
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
"""
    save(model, "colors", config, {"labels.txt": "red\ngreen\nblue\n"})


def words():
    """A toy sentence encoder for `[preprocess.text]`: a WordPiece tokenizer
    over 16 words and an embedding table whose states point along a colour
    axis (red, green, blue) — pooled, a sentence points at its colours.

    input_ids, attention_mask: int64 [N, L] -> states: float32 [N, L, 3]
    (each token's row of the table, zeroed where the mask is 0).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "green", "blue", "apple", "grass", "sky",
             "the", "is", "a", "and", "##s", "cherry"]
    ids = {w: i for i, w in enumerate(vocab)}
    table = np.zeros((len(vocab), 3), np.float32)
    for word, axis in (("red", 0), ("apple", 0), ("cherry", 0), ("green", 1), ("grass", 1), ("blue", 2), ("sky", 2)):
        table[ids[word], axis] = 1.0
    table[ids["[UNK]"]] = [0.1, 0.1, 0.1]
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    )
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
            helper.make_node("Mul", ["rows", "mask3"], ["states"]),
        ],
        "words",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "L"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "L"]),
        ],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["N", "L", 3])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([-1], np.int64), "last")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = """# A toy sentence encoder: words point along colour axes (red, green, blue).
description = "test text encoder (16 words -> 3-d colour vectors)"
max_batch = 8
preferred_batch = [8]
max_queue_delay_ms = 20
memo = true

[preprocess.text]
max_length = 8
pool = "mean"
normalize = true
"""
    save(model, "words", config)
    tok.save(os.path.join(HERE, "words", "tokenizer.json"), pretty=True)


if __name__ == "__main__":
    mlp()
    slow()
    colors()
    words()
