# Flumen's Python SDK: write a sandboxed Flumen operator over Arrow batches.
#
#     import flumen
#
#     class AtLeast(flumen.Operator):
#         def open(self, ctx):
#             cfg = ctx.config(column=str, min=int)
#             self.col = ctx.column(cfg.column, flumen.INT64)
#             self.min = cfg.min
#             return ctx.plan(reads=[self.col], carry=True)
#
#         def process(self, port, batch, out):
#             out.keep([v is not None and v >= self.min for v in batch[0].to_list()])
#
#     Transform, Snapshot, EventTime = flumen.export(AtLeast)
#
# Build with `flumen plugin build <dir>`. Batches cross as Arrow buffers;
# results leave through the host's `output.emit`, never as returned lists.
from . import blobs, columns, inference, log, state
from .columns import Array, Batch, Column, binary, boolean, float32, float64, int32, int64, uint64, utf8
from .operator import ConfigError, Context, FlumenError, InputError, LimitError, Operator, Output, Plan, export
from .schema import (BINARY, BOOL, FLOAT32, FLOAT64, INT8, INT16, INT32, INT64, LARGE_BINARY, LARGE_UTF8, NULL,
                     UINT8, UINT16, UINT32, UINT64, UTF8, Field, Schema, type_name)

__all__ = [
    "Array", "Batch", "Column", "ConfigError", "Context", "Field", "FlumenError", "InputError", "LimitError",
    "Operator", "Output", "Plan", "Schema", "export", "type_name",
    "binary", "boolean", "float32", "float64", "int32", "int64", "uint64", "utf8",
    "blobs", "columns", "inference", "log", "state",
    "BINARY", "BOOL", "FLOAT32", "FLOAT64", "INT8", "INT16", "INT32", "INT64", "LARGE_BINARY", "LARGE_UTF8", "NULL",
    "UINT8", "UINT16", "UINT32", "UINT64", "UTF8",
]
