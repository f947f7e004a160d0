// UTF-8 encoding and decoding for the QuickJS runtime, which has no TextEncoder or TextDecoder.

// Code units are gathered in a reused array and turned into a string this many at a time
// (String.fromCharCode.apply has an argument-count limit).
const CHUNK_UNITS = 4096;
const units = new Array(CHUNK_UNITS);

/// The string that `bytes[start, end)` encode; invalid sequences become U+FFFD.
export function decode(bytes, start = 0, end = bytes.length) {
    let out = "";
    let n = 0;
    let i = start;
    while (i < end) {
        const b = bytes[i];
        let cp;
        if (b < 0x80) {
            cp = b;
            i += 1;
        } else if (b >= 0xc2 && b < 0xe0 && i + 1 < end && (bytes[i + 1] & 0xc0) === 0x80) {
            cp = ((b & 0x1f) << 6) | (bytes[i + 1] & 0x3f);
            i += 2;
        } else if (b >= 0xe0 && b < 0xf0 && i + 2 < end && (bytes[i + 1] & 0xc0) === 0x80 && (bytes[i + 2] & 0xc0) === 0x80) {
            cp = ((b & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f);
            if (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000)) cp = 0xfffd;
            i += 3;
        } else if (b >= 0xf0 && b < 0xf5 && i + 3 < end && (bytes[i + 1] & 0xc0) === 0x80 && (bytes[i + 2] & 0xc0) === 0x80 && (bytes[i + 3] & 0xc0) === 0x80) {
            cp = ((b & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) | ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f);
            if (cp < 0x10000 || cp > 0x10ffff) cp = 0xfffd;
            i += 4;
        } else {
            cp = 0xfffd;
            i += 1;
        }
        if (n + 2 > CHUNK_UNITS) {
            out += String.fromCharCode.apply(null, units.slice(0, n));
            n = 0;
        }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            units[n++] = 0xd800 + (cp >> 10);
            units[n++] = 0xdc00 + (cp & 0x3ff);
        } else {
            units[n++] = cp;
        }
    }
    if (n > 0) out += String.fromCharCode.apply(null, n === CHUNK_UNITS ? units : units.slice(0, n));
    return out;
}

/// How many bytes `encode(s)` returns.
export function byteLength(s) {
    let len = 0;
    for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c < 0x80) len += 1;
        else if (c < 0x800) len += 2;
        else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
            len += 4;
            i++;
        } else len += 3;
    }
    return len;
}

/// Writes the UTF-8 bytes of `s` into `out` at `at` (which must have room:
/// see `byteLength`); returns the position after them. Lone surrogates become U+FFFD.
export function encodeInto(s, out, at) {
    for (let i = 0; i < s.length; i++) {
        let c = s.charCodeAt(i);
        if (c < 0x80) {
            out[at++] = c;
        } else if (c < 0x800) {
            out[at++] = 0xc0 | (c >> 6);
            out[at++] = 0x80 | (c & 0x3f);
        } else {
            if (c >= 0xd800 && c < 0xe000) {
                const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
                if (c < 0xdc00 && (next & 0xfc00) === 0xdc00) {
                    const cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
                    i++;
                    out[at++] = 0xf0 | (cp >> 18);
                    out[at++] = 0x80 | ((cp >> 12) & 0x3f);
                    out[at++] = 0x80 | ((cp >> 6) & 0x3f);
                    out[at++] = 0x80 | (cp & 0x3f);
                    continue;
                }
                c = 0xfffd;
            }
            out[at++] = 0xe0 | (c >> 12);
            out[at++] = 0x80 | ((c >> 6) & 0x3f);
            out[at++] = 0x80 | (c & 0x3f);
        }
    }
    return at;
}

/// The UTF-8 bytes of `s`.
export function encode(s) {
    const out = new Uint8Array(byteLength(s));
    encodeInto(s, out, 0);
    return out;
}
