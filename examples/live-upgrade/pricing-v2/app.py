# The `pricing` operator, version 2.0.0: as 1.0.0, and bulk orders (`qty` of
# at least `bulk_qty`) get `bulk_discount` off. Same output columns as 1.0.0,
# so a running job can switch to it live.
import flumen

VERSION = "2.0.0"


class Pricing(flumen.Operator):
    name = "pricing"

    def open(self, ctx):
        cfg = ctx.config(rate=float, bulk_qty=(10, int), bulk_discount=(0.1, float))
        self.rate, self.bulk_qty, self.bulk_discount = cfg.rate, cfg.bulk_qty, cfg.bulk_discount
        price, qty = ctx.column("price", flumen.FLOAT64), ctx.column("qty", flumen.INT64)
        flumen.log.info(f"pricing {VERSION}: price_eur = price * {self.rate}, "
                        f"{self.bulk_discount:.0%} off from {self.bulk_qty} items")
        return ctx.plan(reads=[price, qty], carry=True,
                        add=[flumen.Field("price_eur", flumen.FLOAT64), flumen.Field("version", flumen.UTF8)])

    def process(self, port, batch, out):
        eur = []
        for p, q in zip(batch[0].to_list(), batch[1].to_list()):
            if p is None:
                eur.append(None)
                continue
            bulk = q is not None and q >= self.bulk_qty
            eur.append(round(p * self.rate * (1 - self.bulk_discount if bulk else 1), 2))
        out.emit(flumen.float64(eur), flumen.utf8([VERSION] * len(eur)))


Transform, Snapshot, EventTime = flumen.export(Pricing)
