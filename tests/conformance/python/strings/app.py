# Conformance operator `strings`: ASCII upper-casing and code-point counts over a utf8 column with nulls.
import flumen

_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


class Strings(flumen.Operator):
    name = "strings"

    def open(self, ctx):
        cfg = ctx.config(column=("text", str))
        col = ctx.column(cfg.column, flumen.UTF8)
        return ctx.plan(reads=[col], carry=True,
                        add=[flumen.Field("upper", flumen.UTF8), flumen.Field("chars", flumen.INT64)])

    def process(self, port, batch, out):
        texts = batch[0].to_list()
        upper = [None if t is None else t.translate(_ASCII_UPPER) for t in texts]
        chars = [None if t is None else len(t) for t in texts]
        out.emit(flumen.utf8(upper), flumen.int64(chars))


Transform, Snapshot, EventTime = flumen.export(Strings)
