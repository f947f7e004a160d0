# Conformance operator `count`: a running count per key, kept in the host's keyed state.
import flumen
from flumen import state


class Count(flumen.Operator):
    name = "count"

    def open(self, ctx):
        cfg = ctx.config(key=("key", str))
        col = ctx.column(cfg.key, flumen.UTF8)
        self.counts = state.Values("count")
        return ctx.plan(reads=[col], carry=True, add=[flumen.Field("count", flumen.INT64, nullable=False)])

    def process(self, port, batch, out):
        keys = state.keys(batch[0].to_list())
        distinct = list(dict.fromkeys(keys))
        running = {k: v or 0 for k, v in zip(distinct, self.counts.get_many_i64(distinct))}
        counts = []
        for k in keys:
            running[k] += 1
            counts.append(running[k])
        self.counts.set_many_i64(list(running.items()))
        out.emit(flumen.int64(counts))


Transform, Snapshot, EventTime = flumen.export(Count)
