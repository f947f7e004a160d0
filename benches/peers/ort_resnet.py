"""The plain onnxruntime loop beside W6 (benches/w6_classify.rs): the same
image files, decoded with Pillow, resized (shorter side to 224 with a
bilinear filter, then the center 224 x 224: what Flumen's `fill` mode does),
normalized with the ImageNet mean and std, run through the same ResNet-18
ONNX file in batches with the same thread count, top-1 kept. Prints one
JSON line: images/s for the whole loop and for the model runs alone.

    python3 benches/peers/ort_resnet.py MODEL.onnx IMAGE_DIR --batch 32 --threads 2
"""
import argparse
import glob
import json
import os
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def prepare(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = 224 / min(w, h)
    img = img.resize((max(224, round(w * scale)), max(224, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    files = sorted(glob.glob(os.path.join(args.images, "*.png")))
    session.run(None, {name: np.zeros((1, 3, 224, 224), np.float32)})
    started = time.perf_counter()
    infer_s = 0.0
    top1 = []
    for i in range(0, len(files), args.batch):
        x = np.stack([prepare(f) for f in files[i : i + args.batch]])
        t = time.perf_counter()
        logits = session.run(None, {name: x})[0]
        infer_s += time.perf_counter() - t
        top1.extend(logits.argmax(1).tolist())
    total = time.perf_counter() - started
    print(json.dumps({"engine": f"onnxruntime {ort.__version__} + Pillow", "images": len(files),
                      "per_s": len(files) / total, "infer_per_s": len(files) / infer_s, "threads": args.threads}))


if __name__ == "__main__":
    main()
