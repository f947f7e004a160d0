// W1 per language: host = the host of an http(s) URL (utf8), in JavaScript, by a byte scan of the data buffer.
import { operator, field, Utf8Builder } from "flumen";

const SLASH = 0x2f, QUESTION = 0x3f, HASH = 0x23, AT = 0x40, COLON = 0x3a, OPEN = 0x5b, CLOSE = 0x5d;

/// Where the host after `http://` or `https://` (ASCII case-insensitive) starts, or -1.
function afterScheme(d, s, e) {
    if (e - s < 7) return -1;
    if ((d[s] | 0x20) !== 0x68 || (d[s + 1] | 0x20) !== 0x74 || (d[s + 2] | 0x20) !== 0x74 || (d[s + 3] | 0x20) !== 0x70) {
        return -1;
    }
    let k = s + 4;
    if ((d[k] | 0x20) === 0x73) k++;
    if (e - k < 3 || d[k] !== COLON || d[k + 1] !== SLASH || d[k + 2] !== SLASH) return -1;
    return k + 3;
}

class UrlHost {
    open(ctx) {
        ctx.column("url", "utf8");
        return ctx.plan({ reads: ["url"], carry: "all", computed: [field("host", "utf8")] });
    }

    process(batch, out) {
        const col = batch.column("url");
        const offs = col.offsets;
        const d = col.data;
        const n = batch.numRows;
        const hosts = new Utf8Builder(n);
        hosts.reserveBytes(d.length >> 1);
        for (let i = 0; i < n; i++) {
            if (col.isNull(i)) {
                hosts.appendNull();
                continue;
            }
            const e = offs[i + 1];
            const st = afterScheme(d, offs[i], e);
            if (st < 0) {
                hosts.appendNull();
                continue;
            }
            // The authority ends at the first `/`, `?` or `#`; the host starts after its last `@`.
            let end = st;
            let hs = st;
            for (; end < e; end++) {
                const c = d[end];
                if (c === SLASH || c === QUESTION || c === HASH) break;
                if (c === AT) hs = end + 1;
            }
            // Less `:port`; a bracketed IPv6 host keeps its brackets.
            let he = hs;
            if (hs < end && d[hs] === OPEN) {
                while (he < end && d[he] !== CLOSE) he++;
                if (he === end) {
                    hosts.appendNull();
                    continue;
                }
                he++;
            } else {
                while (he < end && d[he] !== COLON) he++;
            }
            if (he === hs) hosts.appendNull();
            else hosts.appendBytes(d.subarray(hs, he));
        }
        out.emit([hosts]);
    }
}

export const { transform, snapshot, eventTime } = operator(UrlHost);
