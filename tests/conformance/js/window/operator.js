// Conformance operator `window`: per-key tumbling windows of `size_ms`, counting rows and summing
// `amount`, emitted when the watermark passes their end; kept in memory and saved in snapshots.
import { operator, param, field, json, Utf8Builder, Int64Builder, Float64Builder } from "flumen";

class Window {
    open(ctx) {
        const cfg = ctx.config({ size_ms: param.integer(1000, { min: 1 }) });
        ctx.column("key", "utf8");
        ctx.column("ts", "int64");
        ctx.column("amount", "float64");
        this.size = cfg.size_ms;
        // Open windows: start -> (key's UTF-8 bytes as a binary string -> [count, sum]). Binary
        // strings compare in byte order, the order windows are emitted in.
        this.windows = new Map();
        this.watermark = -Infinity;
        return ctx.plan({
            reads: ["key", "ts", "amount"],
            computed: [field("key", "utf8", false), field("window_start", "int64", false), field("count", "int64", false), field("sum", "float64", false)],
        });
    }

    process(batch) {
        const key = batch.column("key");
        const ts = batch.column("ts").values;
        const amount = batch.column("amount");
        const size = this.size;
        for (let i = 0; i < batch.numRows; i++) {
            const t = Number(ts[i]);
            const start = t - (((t % size) + size) % size);
            if (start + size <= this.watermark) continue; // late: its window has closed
            let byKey = this.windows.get(start);
            if (byKey === undefined) this.windows.set(start, (byKey = new Map()));
            const k = String.fromCharCode.apply(null, key.bytes(i));
            let w = byKey.get(k);
            if (w === undefined) byKey.set(k, (w = [0, 0]));
            w[0] += 1;
            if (!amount.isNull(i)) w[1] += amount.values[i];
        }
    }

    onWatermark(watermark, out) {
        this.watermark = Math.max(this.watermark, watermark);
        const due = [...this.windows.keys()].filter((s) => s + this.size <= watermark).sort((a, b) => a - b);
        if (due.length === 0) return;
        const rows = due.reduce((n, s) => n + this.windows.get(s).size, 0);
        const keys = new Utf8Builder(rows);
        const starts = new Int64Builder(rows);
        const counts = new Int64Builder(rows);
        const sums = new Float64Builder(rows);
        let r = 0;
        for (const start of due) {
            const byKey = this.windows.get(start);
            for (const k of [...byKey.keys()].sort()) {
                const [count, sum] = byKey.get(k);
                keys.appendBytes(Uint8Array.from(k, (c) => c.charCodeAt(0)));
                starts.values[r] = BigInt(start);
                counts.values[r] = BigInt(count);
                sums.values[r] = sum;
                r++;
            }
            this.windows.delete(start);
        }
        out.emit([keys, starts, counts, sums]);
    }

    save() {
        const windows = [...this.windows].map(([start, byKey]) => [start, [...byKey]]);
        return json.encode({ watermark: Number.isFinite(this.watermark) ? this.watermark : null, windows });
    }

    restore(bytes) {
        const saved = json.decode(bytes);
        this.watermark = saved.watermark === null ? -Infinity : saved.watermark;
        this.windows = new Map(saved.windows.map(([start, byKey]) => [start, new Map(byKey)]));
    }
}

export const { transform, snapshot, eventTime } = operator(Window);
