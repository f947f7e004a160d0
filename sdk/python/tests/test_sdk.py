# The Python SDK's own tests under CPython, outside a component: key encoding
# (the vectors every SDK shares), column views and builders, checked config,
# plans, and the export glue with `output.emit` captured. Needs the bindings
# `componentize-py bindings` generates, in the directory FLUMEN_PY_BINDINGS
# names (tests/it/conformance.rs generates them and runs this file).
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.environ["FLUMEN_PY_BINDINGS"])
sys.path.insert(0, os.path.join(ROOT, "sdk", "python"))

import flumen  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from flumen import state  # noqa: E402
from flumen.columns import Column, pack_bits  # noqa: E402
from wit_world.exports import transform as wit_transform  # noqa: E402
from wit_world.imports import output as wit_output  # noqa: E402
from wit_world.imports import types as wit  # noqa: E402


def view(array, name="c"):
    """A column view over what a builder made, as `process` would see it."""
    return Column(flumen.Field(name, array.type), array.column, [])


class StateKeys(unittest.TestCase):
    def test_keys_match_the_vectors_every_sdk_shares(self):
        with open(os.path.join(ROOT, "tests", "conformance", "state-keys.json"), encoding="utf-8") as f:
            vectors = json.load(f)["keys"]
        for v in vectors:
            value = v["value"]
            if v["type"] in ("int", "uint"):
                value = int(value)
            elif v["type"] == "bytes":
                value = bytes.fromhex(value)
            self.assertEqual(state.key(value).hex(), v["key"], v)

    def test_keys_outside_64_bits_are_refused(self):
        with self.assertRaises(OverflowError):
            state.key(1 << 64)
        with self.assertRaises(TypeError):
            state.key(1.5)


class Columns(unittest.TestCase):
    def test_builders_round_trip_through_views_with_nulls(self):
        cases = [
            (flumen.int64([1, None, -3]), [1, None, -3]),
            (flumen.float64([0.5, None, 1e300]), [0.5, None, 1e300]),
            (flumen.utf8(["a", None, "", "日本 🚀"]), ["a", None, "", "日本 🚀"]),
            (flumen.boolean([True, False, None]), [True, False, None]),
            (flumen.binary([b"\x00\xff", None]), [b"\x00\xff", None]),
        ]
        for array, want in cases:
            self.assertEqual(view(array).to_list(), want)

    def test_float32_rounds_to_nearest(self):
        got = view(flumen.float32([0.1])).to_list()[0]
        self.assertNotEqual(got, 0.1)
        self.assertAlmostEqual(got, 0.1, places=7)

    def test_values_are_a_memoryview_over_the_buffer(self):
        col = view(flumen.int64(list(range(10))))
        self.assertIsInstance(col.values, memoryview)
        self.assertEqual(sum(col.values), 45)
        self.assertIsNone(col.validity())

    def test_bits_are_lsb_first(self):
        self.assertEqual(pack_bits([True, False, False, False, False, False, False, False, True]), b"\x01\x01")


def context(config, fields):
    schema = wit.Schema([wit.Field(n, t, True, 0, []) for n, t in fields], [])
    return wit_transform.Context("op", 0, 1, json.dumps(config), [schema])


class AtLeast(flumen.Operator):
    name = "at-least"

    def open(self, ctx):
        cfg = ctx.config(column=str, min=int, out=("doubled", str))
        self.col = ctx.column(cfg.column, flumen.INT64)
        self.min = cfg.min
        return ctx.plan(reads=[self.col], carry=True, add=[flumen.Field(cfg.out, flumen.INT64)])

    def process(self, port, batch, out):
        values = batch[0].to_list()
        keep = [v is not None and v >= self.min for v in values]
        out.keep(keep, flumen.int64([v * 2 for v, k in zip(values, keep) if k]))


class Export(unittest.TestCase):
    def setUp(self):
        self.emitted = []
        self.saved_emit = wit_output.emit
        wit_output.emit = lambda batch, selection: self.emitted.append((batch, selection))
        self.transform, _, _ = flumen.export(AtLeast)
        self.transform = self.transform()

    def tearDown(self):
        wit_output.emit = self.saved_emit

    def open_err(self, config, fields=(("id", flumen.INT64), ("s", flumen.UTF8))):
        with self.assertRaises(Err) as caught:
            self.transform.open(context(config, list(fields)))
        return caught.exception.value

    def test_the_plan_reads_one_column_carries_all_and_computes_one(self):
        plan = self.transform.open(context({"column": "id", "min": 2}, [("id", flumen.INT64), ("s", flumen.UTF8)]))
        self.assertEqual(plan.reads, [[0]])
        self.assertEqual(plan.carried, [0, 1, None])
        self.assertEqual([f.name for f in plan.schema.fields], ["id", "s", "doubled"])

    def test_process_keeps_rows_and_emits_only_the_computed_column(self):
        self.transform.open(context({"column": "id", "min": 2}, [("id", flumen.INT64), ("s", flumen.UTF8)]))
        ids = flumen.int64([1, 2, None, 5])
        self.transform.process(0, wit.Batch(4, [ids.column]))
        (batch, selection), = self.emitted
        self.assertEqual(batch.num_rows, 2)
        self.assertEqual(selection, wit.Selection_Mask(bytes([0b1010])))
        self.assertEqual(view(flumen.Array(wit.DataType_Int64(), 2, batch.columns[0])).to_list(), [4, 10])

    def test_config_errors_are_invalid_config_naming_the_key(self):
        for config, needle in [({"column": "id"}, "`min`"), ({"column": "id", "min": "2"}, "`min` must be int"),
                               ({"column": "id", "min": True}, "`min` must be int"),
                               ({"column": "id", "min": 1, "max": 2}, "unknown config key `max`"),
                               ({"column": "nope", "min": 1}, "no column `nope`"),
                               ({"column": "s", "min": 1}, "column `s` is utf8, expected int64")]:
            err = self.open_err(config)
            self.assertEqual(err.kind, wit.ErrorKind.INVALID_CONFIG, config)
            self.assertIn(needle, err.message, config)
            self.assertTrue(err.message.startswith("at-least: "), err.message)

    def test_an_exception_in_process_is_internal_naming_type_file_and_line(self):
        class Broken(AtLeast):
            def process(self, port, batch, out):
                raise ZeroDivisionError("nope")

        transform = flumen.export(Broken)[0]()
        transform.open(context({"column": "id", "min": 2}, [("id", flumen.INT64)]))
        with self.assertRaises(Err) as caught:
            transform.process(0, wit.Batch(1, [flumen.int64([1]).column]))
        err = caught.exception.value
        self.assertEqual(err.kind, wit.ErrorKind.INTERNAL)
        self.assertIn("ZeroDivisionError: nope (test_sdk.py line", err.message)

    def test_emit_checks_the_computed_column_count(self):
        class Wrong(AtLeast):
            def process(self, port, batch, out):
                out.emit()

        transform = flumen.export(Wrong)[0]()
        transform.open(context({"column": "id", "min": 2}, [("id", flumen.INT64)]))
        with self.assertRaises(Err) as caught:
            transform.process(0, wit.Batch(1, [flumen.int64([1]).column]))
        self.assertIn("the plan computes 1", caught.exception.value.message)


if __name__ == "__main__":
    unittest.main()
