// Conformance operator `blob-size`: `bytes` and `sum` of each blob, read through blobs.read in 64 KiB pieces.
import { operator, param, field, Int64Builder, blobs } from "flumen";

class BlobSize {
    open(ctx) {
        const cfg = ctx.config({ column: param.string("blob") });
        ctx.column(cfg.column, "blob");
        this.column = cfg.column;
        return ctx.plan({ reads: [cfg.column], carry: "all", computed: [field("bytes", "int64"), field("sum", "int64")] });
    }

    process(batch, out) {
        const refs = batch.column(this.column);
        const bytes = new Int64Builder(batch.numRows);
        const sum = new Int64Builder(batch.numRows);
        for (let i = 0; i < batch.numRows; i++) {
            const ref = refs.get(i);
            if (ref === null) {
                bytes.setNull(i);
                sum.setNull(i);
                continue;
            }
            let total = 0;
            const read = blobs.readChunks(ref, (chunk) => {
                for (let k = 0; k < chunk.length; k++) total += chunk[k];
            });
            bytes.values[i] = BigInt(read);
            sum.values[i] = BigInt(total);
        }
        out.emit([bytes, sum]);
    }
}

export const { transform, snapshot, eventTime } = operator(BlobSize);
