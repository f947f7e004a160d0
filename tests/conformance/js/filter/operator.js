// Conformance operator `filter`: keeps the rows whose int64 `column` is non-null and >= `min`.
import { operator, param } from "flumen";

class Filter {
    open(ctx) {
        const cfg = ctx.config({ column: param.string(), min: param.integer() });
        ctx.column(cfg.column, "int64");
        this.column = cfg.column;
        this.min = BigInt(cfg.min);
        return ctx.plan({ reads: [cfg.column], carry: "all" });
    }

    process(batch, out) {
        const col = batch.column(this.column);
        const values = col.values;
        const keep = new Uint8Array(batch.numRows);
        for (let i = 0; i < keep.length; i++) keep[i] = !col.isNull(i) && values[i] >= this.min ? 1 : 0;
        out.keep(keep);
    }
}

export const { transform, snapshot, eventTime } = operator(Filter);
