// W1 per language: g = gcd(a, b) over two int32 columns in JavaScript (typed arrays; nulls propagate).
import { operator, field, Int32Builder } from "flumen";

/// Stein's binary GCD of two non-negative integers below 2^31, in 32-bit integer arithmetic.
function gcd(a, b) {
    if (a === 0) return b;
    if (b === 0) return a;
    const shift = Math.clz32(1) - Math.clz32((a | b) & -(a | b));
    a >>>= Math.clz32(1) - Math.clz32(a & -a);
    for (;;) {
        b >>>= Math.clz32(1) - Math.clz32(b & -b);
        if (a > b) {
            const t = a;
            a = b;
            b = t;
        }
        b -= a;
        if (b === 0) return a << shift;
    }
}

class Gcd {
    open(ctx) {
        ctx.column("a", "int32");
        ctx.column("b", "int32");
        return ctx.plan({ reads: ["a", "b"], carry: "all", computed: [field("g", "int32")] });
    }

    process(batch, out) {
        const a = batch.column("a");
        const b = batch.column("b");
        const av = a.values;
        const bv = b.values;
        const n = batch.numRows;
        const g = new Int32Builder(n);
        const gv = g.values;
        for (let i = 0; i < n; i++) gv[i] = gcd(Math.abs(av[i]), Math.abs(bv[i]));
        if (a.validity || b.validity) {
            for (let i = 0; i < n; i++) if (a.isNull(i) || b.isNull(i)) g.setNull(i);
        }
        out.emit([g]);
    }
}

export const { transform, snapshot, eventTime } = operator(Gcd);
