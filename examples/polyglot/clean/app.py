# Polyglot example, step 1 (Python): normalizes review text (whitespace collapsed,
# lower case) into `clean`, and drops reviews with no words.
import flumen


class Clean(flumen.Operator):
    name = "clean"

    def open(self, ctx):
        cfg = ctx.config(column=("text", str))
        col = ctx.column(cfg.column, flumen.UTF8)
        return ctx.plan(reads=[col], carry=True, add=[flumen.Field("clean", flumen.UTF8, nullable=False)])

    def process(self, port, batch, out):
        cleaned = [None if t is None else " ".join(t.split()).lower() for t in batch[0].to_list()]
        keep = [bool(c) for c in cleaned]
        out.keep(keep, flumen.utf8([c for c in cleaned if c]))


Transform, Snapshot, EventTime = flumen.export(Clean)
