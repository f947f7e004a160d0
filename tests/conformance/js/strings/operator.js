// Conformance operator `strings`: `upper` (ASCII a-z to A-Z) and `chars` (code points) of a utf8 column.
import { operator, param, field, Utf8Builder, Int64Builder } from "flumen";

class Strings {
    open(ctx) {
        const cfg = ctx.config({ column: param.string("text") });
        ctx.column(cfg.column, "utf8");
        this.column = cfg.column;
        return ctx.plan({ reads: [cfg.column], carry: "all", computed: [field("upper", "utf8"), field("chars", "int64")] });
    }

    // Works on the UTF-8 bytes: upper-casing touches only ASCII bytes, and a code point is
    // every byte that is not a continuation byte (10xxxxxx).
    process(batch, out) {
        const text = batch.column(this.column);
        const n = batch.numRows;
        const upper = new Utf8Builder(n);
        const chars = new Int64Builder(n);
        for (let i = 0; i < n; i++) {
            const bytes = text.bytes(i);
            if (bytes === null) {
                upper.appendNull();
                chars.setNull(i);
                continue;
            }
            const copy = bytes.slice();
            let count = 0;
            for (let k = 0; k < copy.length; k++) {
                const b = copy[k];
                if (b >= 0x61 && b <= 0x7a) copy[k] = b - 32;
                if ((b & 0xc0) !== 0x80) count++;
            }
            upper.appendBytes(copy);
            chars.values[i] = BigInt(count);
        }
        out.emit([upper, chars]);
    }
}

export const { transform, snapshot, eventTime } = operator(Strings);
