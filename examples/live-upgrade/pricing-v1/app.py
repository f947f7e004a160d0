# The `pricing` operator, version 1.0.0: each order's price in euros,
# `price_eur = round(price * rate, 2)`, and the `version` that computed it.
import flumen

VERSION = "1.0.0"


class Pricing(flumen.Operator):
    name = "pricing"

    def open(self, ctx):
        cfg = ctx.config(rate=float)
        self.rate = cfg.rate
        price = ctx.column("price", flumen.FLOAT64)
        flumen.log.info(f"pricing {VERSION}: price_eur = price * {self.rate}")
        return ctx.plan(reads=[price], carry=True,
                        add=[flumen.Field("price_eur", flumen.FLOAT64), flumen.Field("version", flumen.UTF8)])

    def process(self, port, batch, out):
        eur = [None if p is None else round(p * self.rate, 2) for p in batch[0].to_list()]
        out.emit(flumen.float64(eur), flumen.utf8([VERSION] * len(eur)))


Transform, Snapshot, EventTime = flumen.export(Pricing)
