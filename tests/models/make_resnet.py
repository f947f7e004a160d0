"""Writes a ResNet-18 (ImageNet layout: 3x224x224 in, 1000 scores out) with
seeded random weights as a Flumen model folder, for W6 and the GPU
executor's differential tests. Speed does not depend on the weights.

    python3 tests/models/make_resnet.py OUT_DIR [--device gpu|cpu] [--seed N]

Needs numpy and onnx (PyPI). The graph keeps BatchNormalization nodes (as
exported models do), so loaders that fold them are exercised.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(seed):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def param(name, array):
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv_bn(x, name, cin, cout, k, stride, relu=True):
        w = rng.normal(0.0, np.sqrt(2.0 / (cin * k * k)), size=(cout, cin, k, k))
        pad = k // 2
        nodes.append(helper.make_node("Conv", [x, param(name + ".w", w)], [name + ".conv"], name=name + ".conv",
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        bn = [param(name + ".gamma", rng.uniform(0.4, 0.6, cout)), param(name + ".beta", rng.normal(0, 0.05, cout)),
              param(name + ".mean", rng.normal(0, 0.05, cout)), param(name + ".var", rng.uniform(0.8, 1.2, cout))]
        out = name + ".bn"
        nodes.append(helper.make_node("BatchNormalization", [name + ".conv"] + bn, [out], name=out, epsilon=1e-5))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [name + ".relu"], name=name + ".relu"))
            return name + ".relu"
        return out

    x = conv_bn("input", "stem", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool", 64
    for stage, cout in enumerate([64, 128, 256, 512]):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"layer{stage + 1}.{block}"
            h = conv_bn(x, name + ".a", cin, cout, 3, stride)
            h = conv_bn(h, name + ".b", cout, cout, 3, 1, relu=False)
            skip = x
            if stride != 1 or cin != cout:
                skip = conv_bn(x, name + ".down", cin, cout, 1, stride, relu=False)
            nodes.append(helper.make_node("Add", [h, skip], [name + ".sum"], name=name + ".sum"))
            nodes.append(helper.make_node("Relu", [name + ".sum"], [name + ".out"], name=name + ".out"))
            x, cin = name + ".out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat", axis=1))
    fc_w = param("fc.w", rng.normal(0.0, np.sqrt(1.0 / 512), size=(1000, 512)))
    fc_b = param("fc.b", rng.normal(0.0, 0.01, size=(1000,)))
    nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.producer_name = "flumen-make-resnet"
    model.producer_version = "1"
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--max-batch", type=int, default=32)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    onnx.save(build(args.seed), os.path.join(args.out, "model.onnx"))
    with open(os.path.join(args.out, "model.toml"), "w") as f:
        f.write(f"""# ResNet-18 with seeded random weights (tests/models/make_resnet.py --seed {args.seed}).
description = "ResNet-18, random weights: image -> 1000 scores"
device = "{args.device}"
max_batch = {args.max_batch}
preferred_batch = [{args.max_batch}]
max_queue_delay_ms = 5

[preprocess.image]
width = 224
height = 224
mode = "fill"
filter = "triangle"
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
""")
    print(f"wrote {args.out}: model.onnx (ResNet-18, seed {args.seed}), model.toml")


if __name__ == "__main__":
    main()
