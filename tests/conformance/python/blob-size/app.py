# Conformance operator `blob-size`: reads each referenced blob in 64 KiB pieces; its byte count and byte sum.
import flumen
from flumen import blobs


class BlobSize(flumen.Operator):
    name = "blob-size"

    def open(self, ctx):
        cfg = ctx.config(column=("blob", str))
        col = ctx.column(cfg.column)
        if not ctx.input(0)[col].is_blob():
            raise flumen.ConfigError(f"blob-size: column `{cfg.column}` is not a flumen.blob column")
        return ctx.plan(reads=[col], carry=True,
                        add=[flumen.Field("bytes", flumen.INT64), flumen.Field("sum", flumen.INT64)])

    def process(self, port, batch, out):
        sizes, sums = [], []
        for ref in batch[0].blob_refs():
            if ref is None:
                sizes.append(None)
                sums.append(None)
                continue
            n = total = 0
            for piece in blobs.chunks(ref, 65536):
                n += len(piece)
                total += sum(piece)
            sizes.append(n)
            sums.append(total)
        out.emit(flumen.int64(sizes), flumen.int64(sums))


Transform, Snapshot, EventTime = flumen.export(BlobSize)
