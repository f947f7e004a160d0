# W1 per language: g = gcd(a, b) over two int32 columns in Python (nulls propagate).
import math

import flumen


class Gcd(flumen.Operator):
    def open(self, ctx):
        cols = [ctx.column("a", flumen.INT32), ctx.column("b", flumen.INT32)]
        return ctx.plan(reads=cols, carry=True, add=[flumen.Field("g", flumen.INT32)])

    def process(self, port, batch, out):
        a, b = batch[0], batch[1]
        # math.gcd is C: one call per row over the memoryviews, no Python loop.
        g = list(map(math.gcd, a.values, b.values))
        va, vb = a.validity(), b.validity()
        if va is not None or vb is not None:
            ok = [x and y for x, y in zip(va or [True] * len(g), vb or [True] * len(g))]
            g = [v if k else None for v, k in zip(g, ok)]
        out.emit(flumen.int32(g))


Transform, Snapshot, EventTime = flumen.export(Gcd)
