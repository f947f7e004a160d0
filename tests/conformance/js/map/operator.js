// Conformance operator `map`: appends `out` = amount * qty (float64, null if either is null).
import { operator, param, field, Float64Builder } from "flumen";

class Multiply {
    open(ctx) {
        const cfg = ctx.config({ out: param.string("total"), fail_on_id: param.integer(null) });
        ctx.column("id", "int64");
        ctx.column("qty", "int64");
        ctx.column("amount", "float64");
        this.failOnId = cfg.fail_on_id === null ? null : BigInt(cfg.fail_on_id);
        return ctx.plan({ reads: ["id", "qty", "amount"], carry: "all", computed: [field(cfg.out, "float64")] });
    }

    process(batch, out) {
        const id = batch.column("id");
        const qty = batch.column("qty");
        const amount = batch.column("amount");
        if (this.failOnId !== null && id.values.includes(this.failOnId)) {
            throw new Error(`map: failing on id ${this.failOnId}`);
        }
        const total = new Float64Builder(batch.numRows);
        for (let i = 0; i < batch.numRows; i++) {
            if (qty.isNull(i) || amount.isNull(i)) total.setNull(i);
            else total.values[i] = Number(qty.values[i]) * amount.values[i];
        }
        out.emit([total]);
    }
}

export const { transform, snapshot, eventTime } = operator(Multiply);
