# Conformance operator `filter`: keeps rows whose int64 `column` is non-null and >= `min`.
import flumen


class Filter(flumen.Operator):
    name = "filter"

    def open(self, ctx):
        cfg = ctx.config(column=str, min=int)
        self.column = ctx.column(cfg.column, flumen.INT64)
        self.min = cfg.min
        return ctx.plan(reads=[self.column], carry=True)

    def process(self, port, batch, out):
        least = self.min
        out.keep([v is not None and v >= least for v in batch[0].to_list()])


Transform, Snapshot, EventTime = flumen.export(Filter)
