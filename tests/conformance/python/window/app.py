# Conformance operator `window`: per-key tumbling event-time windows in instance memory, emitted on watermarks.
import json

import flumen


class Window(flumen.Operator):
    name = "window"

    def open(self, ctx):
        cfg = ctx.config(size_ms=(1000, int))
        if cfg.size_ms <= 0:
            raise flumen.ConfigError(f"window: `size_ms` must be > 0, not {cfg.size_ms}")
        self.size = cfg.size_ms
        self.windows = {}  # (start, key) -> [count, sum]
        self.watermark = None
        cols = [ctx.column("key", flumen.UTF8), ctx.column("ts", flumen.INT64), ctx.column("amount", flumen.FLOAT64)]
        return ctx.plan(reads=cols, add=[
            flumen.Field("key", flumen.UTF8, nullable=False), flumen.Field("window_start", flumen.INT64, nullable=False),
            flumen.Field("count", flumen.INT64, nullable=False), flumen.Field("sum", flumen.FLOAT64, nullable=False)])

    def process(self, port, batch, out):
        size, wm, windows = self.size, self.watermark, self.windows
        for key, ts, amount in zip(batch["key"].to_list(), batch["ts"].values, batch["amount"].to_list()):
            start = (ts // size) * size
            if wm is not None and start + size <= wm:
                continue
            w = windows.setdefault((start, key), [0, 0.0])
            w[0] += 1
            if amount is not None:
                w[1] += amount

    def on_watermark(self, watermark, out):
        self.watermark = watermark
        done = sorted((k for k in self.windows if k[0] + self.size <= watermark),
                      key=lambda k: (k[0], k[1].encode("utf-8")))
        if not done:
            return
        rows = [(k, self.windows.pop(k)) for k in done]
        out.emit(flumen.utf8([k[1] for k, _ in rows]), flumen.int64([k[0] for k, _ in rows]),
                 flumen.int64([w[0] for _, w in rows]), flumen.float64([w[1] for _, w in rows]))

    def save(self):
        windows = [[s, k, c, t] for (s, k), (c, t) in self.windows.items()]
        return json.dumps({"watermark": self.watermark, "windows": windows}).encode()

    def restore(self, data):
        saved = json.loads(data)
        self.watermark = saved["watermark"]
        self.windows = {(s, k): [c, t] for s, k, c, t in saved["windows"]}


Transform, Snapshot, EventTime = flumen.export(Window)
