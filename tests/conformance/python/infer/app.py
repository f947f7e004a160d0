# Conformance operator `infer`: one model call per batch; the best of three scores and its index.
import flumen
from flumen import inference


class Infer(flumen.Operator):
    name = "infer"

    def open(self, ctx):
        cfg = ctx.config(model=("mlp", str))
        self.model = inference.load(cfg.model)
        cols = [ctx.column("id", flumen.INT64), ctx.column("qty", flumen.INT64), ctx.column("amount", flumen.FLOAT64)]
        return ctx.plan(reads=cols, carry=True, add=[
            flumen.Field("best", flumen.INT64, nullable=False), flumen.Field("score", flumen.FLOAT32, nullable=False)])

    def process(self, port, batch, out):
        x = []
        for i, q, a in zip(batch["id"].values, batch["qty"].to_list(), batch["amount"].to_list()):
            x += [float(i), float(q or 0), a or 0.0, 1.0]
        (y,) = self.model.infer([inference.f32(batch.num_rows, x)])
        best, score = [], []
        for r in range(batch.num_rows):
            row = list(y.row(r))
            b = row.index(max(row))
            best.append(b)
            score.append(row[b])
        out.emit(flumen.int64(best), flumen.float32(score))


Transform, Snapshot, EventTime = flumen.export(Infer)
