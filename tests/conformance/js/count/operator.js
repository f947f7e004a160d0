// Conformance operator `count`: the running count of each row's key, kept in value state `count`.
import { operator, param, field, Int64Builder, ValueState, keysOf } from "flumen";

const counts = new ValueState("count");

class Count {
    open(ctx) {
        const cfg = ctx.config({ key: param.string("key") });
        ctx.column(cfg.key, "utf8");
        this.key = cfg.key;
        return ctx.plan({ reads: [cfg.key], carry: "all", computed: [field("count", "int64", false)] });
    }

    // One value-get-many for the batch's distinct keys, one value-set-many for their new counts.
    process(batch, out) {
        const keys = keysOf(batch.column(this.key));
        const slot = new Map(); // key bytes as a binary string -> index into `distinct`
        const distinct = [];
        const rowSlot = new Int32Array(keys.length);
        for (let i = 0; i < keys.length; i++) {
            const id = String.fromCharCode.apply(null, keys[i]);
            let s = slot.get(id);
            if (s === undefined) {
                s = distinct.length;
                slot.set(id, s);
                distinct.push(keys[i]);
            }
            rowSlot[i] = s;
        }
        const running = counts.getManyI64(distinct).map((v) => (v === null ? 0n : v));
        const count = new Int64Builder(keys.length);
        for (let i = 0; i < keys.length; i++) count.values[i] = ++running[rowSlot[i]];
        counts.setManyI64(distinct.map((k, s) => [k, running[s]]));
        out.emit([count]);
    }
}

export const { transform, snapshot, eventTime } = operator(Count);
