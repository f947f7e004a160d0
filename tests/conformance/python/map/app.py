# Conformance operator `map`: `out = amount * qty` (float64, null if either is null).
import flumen


class Map(flumen.Operator):
    name = "map"

    def open(self, ctx):
        cfg = ctx.config(out=("total", str), fail_on_id=(None, int))
        self.fail_on_id = cfg.fail_on_id
        cols = [ctx.column("id", flumen.INT64), ctx.column("qty", flumen.INT64), ctx.column("amount", flumen.FLOAT64)]
        return ctx.plan(reads=cols, carry=True, add=[flumen.Field(cfg.out, flumen.FLOAT64)])

    def process(self, port, batch, out):
        ids, qty, amount = batch["id"], batch["qty"].to_list(), batch["amount"].to_list()
        if self.fail_on_id is not None and self.fail_on_id in ids.values:
            raise RuntimeError(f"map: failing on id {self.fail_on_id}")
        total = [None if q is None or a is None else a * float(q) for q, a in zip(qty, amount)]
        out.emit(flumen.float64(total))


Transform, Snapshot, EventTime = flumen.export(Map)
