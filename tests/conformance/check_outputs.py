#!/usr/bin/env python3
# Checks a conformance job's output against the spec (README.md), recomputing
# what each operator must emit from the input alone: an oracle independent of
# every guest language, used beside the suite's cross-language comparison.
#
# Usage: check_outputs.py <op> <input dir> <result.jsonl> [job.toml]
#
# <op> is one of filter, map, strings, count, blob-size, window, infer;
# <input dir> is what make_input.py wrote; the operator's config (and, for
# window, the batch size and watermark delay) come from job.toml, by default
# the job template jobs/<op>.toml beside this script. Exits 0 when the output
# is right, otherwise 1 with a message naming the first mismatch.
#
# The jsonl sink leaves out null values, so a missing key counts as null; the
# keys present must be in the output schema's column order. Floats must be
# equal exactly, except infer's scores (the model runs in float32 in the host;
# here it runs in float64 from the weights in tests/models/mlp/model.onnx).
# Standard library only.
import hashlib
import json
import math
import os
import struct
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ["id", "key", "qty", "amount", "text", "ts"]
MLP = os.path.join(HERE, "..", "models", "mlp", "model.onnx")


class Mismatch(Exception):
    pass


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print("usage: check_outputs.py <op> <input dir> <result.jsonl> [job.toml]", file=sys.stderr)
        return 2
    op, input_dir, result = sys.argv[1:4]
    job_path = sys.argv[4] if len(sys.argv) == 5 else os.path.join(HERE, "jobs", f"{op}.toml")
    checks = {
        "filter": check_filter,
        "map": check_map,
        "strings": check_strings,
        "count": check_count,
        "blob-size": check_blob_size,
        "window": check_window,
        "infer": check_infer,
    }
    if op not in checks:
        print(f"unknown operator `{op}`; one of {', '.join(checks)}", file=sys.stderr)
        return 2
    with open(job_path, "rb") as f:
        job = tomllib.load(f)
    rows = read_jsonl(result)
    try:
        checks[op](input_dir, rows, job)
    except Mismatch as e:
        print(f"{op}: {result}: {e}", file=sys.stderr)
        return 1
    print(f"{op}: {len(rows)} rows as the spec says")
    return 0


# ---- the operators ----


def check_filter(input_dir, rows, job):
    config = operator_config(job)
    column, least = config["column"], config["min"]
    expected = [e for e in events(input_dir) if e[column] is not None and e[column] >= least]
    compare_rows(rows, expected, COLUMNS)


def check_map(input_dir, rows, job):
    config = operator_config(job)
    out = config.get("out", "total")
    fail_on_id = config.get("fail_on_id")
    expected = []
    for e in events(input_dir):
        if e["id"] == fail_on_id:
            continue
        total = None if e["amount"] is None or e["qty"] is None else e["amount"] * float(e["qty"])
        expected.append({**e, out: total})
    compare_rows(rows, expected, COLUMNS + [out])


def check_strings(input_dir, rows, job):
    column = operator_config(job).get("column", "text")
    expected = []
    for e in events(input_dir):
        s = e[column]
        upper = None if s is None else "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s)
        expected.append({**e, "upper": upper, "chars": None if s is None else len(s)})
    compare_rows(rows, expected, COLUMNS + ["upper", "chars"])


def check_count(input_dir, rows, job):
    key = operator_config(job).get("key", "key")
    seen = {}
    expected = []
    for e in events(input_dir):
        seen[e[key]] = seen.get(e[key], 0) + 1
        expected.append({**e, "count": seen[e[key]]})
    compare_rows(rows, expected, COLUMNS + ["count"])


def check_blob_size(input_dir, rows, job):
    column = operator_config(job).get("column", "blob")
    folder = os.path.join(input_dir, "blobs")
    files = sorted(os.listdir(folder))
    seen = set()
    for n, row in enumerate(rows, 1):
        where = f"row {n}"
        order = ["path", "size", column, "bytes", "sum"]
        check_key_order(row, order, where)
        name = os.path.basename(row.get("path") or "")
        if name not in files:
            raise Mismatch(f"{where}: `path` {row.get('path')!r} is not a file of {folder}")
        if name in seen:
            raise Mismatch(f"{where}: {name} appears twice")
        seen.add(name)
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        # The sink writes a blob column as its bytes in hex; a SHA-256 digest
        # in hex (what a dead-letter sink writes) is accepted too.
        written = row.get(column)
        if written not in (data.hex(), hashlib.sha256(data).hexdigest()):
            raise Mismatch(f"{where} ({name}): `{column}` is neither the blob's bytes nor its digest in hex")
        for field, want in (("size", len(data)), ("bytes", len(data)), ("sum", sum(data))):
            if not same(row.get(field), want):
                raise Mismatch(f"{where} ({name}): `{field}` is {row.get(field)!r}, expected {want}")
    if seen != set(files):
        raise Mismatch(f"files missing from the output: {sorted(set(files) - seen)}")


def check_window(input_dir, rows, job):
    size = operator_config(job).get("size_ms", 1000)
    source = job["source"][0]
    batch_rows = source.get("batch_rows", job.get("job", {}).get("batch_rows", 8192))
    delay = source.get("watermark", {}).get("delay_ms")
    windows = {}  # (start, key) -> [count, sum]
    watermark = None
    newest = None
    all_events = events(input_dir)
    for at in range(0, len(all_events), batch_rows):
        batch = all_events[at : at + batch_rows]
        for e in batch:
            start = (e["ts"] // size) * size  # floor, also below zero
            if watermark is not None and start + size <= watermark:
                continue  # late
            tally = windows.setdefault((start, e["key"]), [0, 0.0])
            tally[0] += 1
            if e["amount"] is not None:
                tally[1] += e["amount"]
        # The source sends `newest ts - delay` after every batch that raised it.
        top = max(e["ts"] for e in batch)
        if delay is not None and (newest is None or top > newest):
            newest = top
            watermark = newest - delay
    # Every fired batch is ordered by start then key bytes, and no window can
    # open before one already fired (its rows would be late): the whole
    # output is in that order.
    order = sorted(windows, key=lambda w: (w[0], w[1].encode("utf-8")))
    expected = [{"key": k, "window_start": s, "count": windows[(s, k)][0], "sum": windows[(s, k)][1]} for s, k in order]
    compare_rows(rows, expected, ["key", "window_start", "count", "sum"])


def check_infer(input_dir, rows, job):
    model = operator_config(job).get("model", "mlp")
    if model != "mlp":
        raise Mismatch(f"only the test model `mlp` can be checked, the job runs `{model}`")
    w1, b1, w2, b2 = mlp_weights()
    expected = events(input_dir)
    if len(rows) != len(expected):
        raise Mismatch(f"{len(rows)} rows, expected {len(expected)}")
    for n, (row, e) in enumerate(zip(rows, expected), 1):
        where = f"row {n} (id {e['id']})"
        carried = {k: row.get(k) for k in COLUMNS}
        compare_row(carried, e, where)
        check_key_order(row, COLUMNS + ["best", "score"], where)
        x = [f32(e["id"]), f32(e["qty"] or 0), f32(e["amount"] or 0.0), 1.0]
        h = [max(0.0, b1[j] + sum(x[i] * w1[i][j] for i in range(4))) for j in range(8)]
        y = [b2[k] + sum(h[j] * w2[j][k] for j in range(8)) for k in range(3)]
        # float32 arithmetic in the host: allow for its rounding, relative
        # to the size of the terms summed.
        scale = 1.0 + sum(abs(x[i] * w1[i][j]) for i in range(4) for j in range(8)) * max(abs(v) for r in w2 for v in r)
        tolerance = 1e-5 * scale
        best, score = row.get("best"), row.get("score")
        if not isinstance(best, int) or not 0 <= best < 3:
            raise Mismatch(f"{where}: `best` is {best!r}, expected 0, 1 or 2")
        if not isinstance(score, float):
            raise Mismatch(f"{where}: `score` is {score!r}, expected a float")
        # The sink prints a float32 in its shortest form: read it back as one.
        score = f32(score)
        if abs(score - y[best]) > tolerance:
            raise Mismatch(f"{where}: `score` is {score!r}, the model gives {y[best]!r} for index {best}")
        # The largest score; where two are within rounding of each other,
        # either may be the host's largest.
        if y[best] < max(y) - tolerance:
            raise Mismatch(f"{where}: `best` is {best}, the model's scores are {y}")


# ---- comparing ----


def compare_rows(rows, expected, order):
    for n, (row, want) in enumerate(zip(rows, expected), 1):
        where = f"row {n}" + (f" (id {want['id']})" if "id" in want else "")
        compare_row(row, want, where)
        check_key_order(row, order, where)
    if len(rows) != len(expected):
        raise Mismatch(f"{len(rows)} rows, expected {len(expected)}")


def compare_row(row, want, where):
    extra = set(row) - set(want)
    if extra:
        raise Mismatch(f"{where}: unexpected columns {sorted(extra)}")
    for column, value in want.items():
        if not same(row.get(column), value):
            raise Mismatch(f"{where}: `{column}` is {row.get(column)!r}, expected {value!r}")


def check_key_order(row, order, where):
    present = [k for k in row if row[k] is not None]
    wanted = [k for k in order if k in present]
    if present != wanted:
        raise Mismatch(f"{where}: columns in order {present}, expected {wanted}")


def same(got, want):
    """Equal values of the same JSON type (an int is not a float)."""
    if want is None:
        return got is None
    if isinstance(want, float):
        return isinstance(got, float) and (got == want or (math.isnan(got) and math.isnan(want)))
    return type(got) is type(want) and got == want


# ---- reading ----


def events(input_dir):
    return read_jsonl(os.path.join(input_dir, "events.jsonl"))


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def operator_config(job):
    return job["operator"][0].get("config", {})


def f32(v):
    """`v` rounded to the nearest float32."""
    return struct.unpack("<f", struct.pack("<f", float(v)))[0]


def mlp_weights():
    """w1 [4][8], b1 [8], w2 [8][3], b2 [3] from the ONNX file: a protobuf
    read here field by field (ModelProto.graph = 7, GraphProto.initializer =
    5, TensorProto dims = 1, name = 8, raw_data = 9)."""
    with open(MLP, "rb") as f:
        model = f.read()
    graph = next(v for k, v in protobuf_fields(model) if k == 7)
    tensors = {}
    for k, v in protobuf_fields(graph):
        if k != 5:
            continue
        fields = list(protobuf_fields(v))
        name = next(v for k, v in fields if k == 8).decode()
        dims = []
        for k, v in fields:
            if k == 1:  # one varint, or several packed in bytes
                dims.extend([v] if isinstance(v, int) else varints(v))
        raw = next(v for k, v in fields if k == 9)
        values = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        if len(dims) == 2:
            values = [values[r * dims[1] : (r + 1) * dims[1]] for r in range(dims[0])]
        tensors[name] = values
    return tensors["w1"], tensors["b1"], tensors["w2"], tensors["b2"]


def protobuf_fields(data):
    """(field number, value) pairs: ints for varints, bytes for the rest."""
    at = 0
    while at < len(data):
        key, at = varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = varint(data, at)
        elif wire == 2:
            length, at = varint(data, at)
            value, at = data[at : at + length], at + length
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def varints(data):
    at = 0
    while at < len(data):
        value, at = varint(data, at)
        yield value


if __name__ == "__main__":
    sys.exit(main())
