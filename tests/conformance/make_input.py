#!/usr/bin/env python3
# Writes the conformance suite's input into a directory: events.jsonl (the
# `events` source, see README.md) and blobs/ (files for the blob-size job).
# Deterministic: the same seed and row count give the same bytes.
# Usage: make_input.py <out dir> [rows] [seed]
import json
import os
import random
import sys

KEYS = ["a", "b", "c", "ü", "日本"]
TEXTS = ["hello", "", "Straße", "café au lait", "日本語のテキスト", "emoji 🚀 ok", "MiXeD cAsE 42", "tab\tand\nnewline", "ÀÉÎõü"]


def main() -> None:
    out = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    rng = random.Random(seed)
    os.makedirs(os.path.join(out, "blobs"), exist_ok=True)
    ts = 1_700_000_000_000
    with open(os.path.join(out, "events.jsonl"), "w", encoding="utf-8") as f:
        for i in range(rows):
            ts += rng.randint(0, 40)
            late = rng.random() < 0.05
            row = {
                "id": i,
                "key": rng.choice(KEYS),
                "qty": None if rng.random() < 0.1 else rng.randint(-5, 20),
                "amount": None if rng.random() < 0.1 else rng.choice([12.5, -0.25, 1e-3, 3.0, 99.99, 0.1]) * rng.randint(1, 9),
                "text": None if rng.random() < 0.15 else rng.choice(TEXTS) + ("" if rng.random() < 0.5 else str(i)),
                "ts": ts - (rng.randint(1, 500) if late else 0),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    sizes = [0, 1, 100, 65535, 65536, 65537, 200_000]
    for n, size in enumerate(sizes):
        data = bytes(rng.randrange(256) for _ in range(size))
        with open(os.path.join(out, "blobs", f"file{n}.bin"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
