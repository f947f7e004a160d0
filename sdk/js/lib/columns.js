// Typed views over the Arrow buffers of an incoming batch (no per-row copies), and builders
// that produce the WIT column records of computed columns.

import { decode, byteLength, encodeInto } from "./utf8.js";

/// A typed array of `len` elements starting at element `first` of the bytes `buf`: a view
/// when the start is aligned for the element type, a copy when it is not.
export function typedView(Ctor, buf, first, len) {
    const size = Ctor.BYTES_PER_ELEMENT;
    const start = buf.byteOffset + first * size;
    if (start % size === 0) return new Ctor(buf.buffer, start, len);
    const copy = buf.slice(first * size, (first + len) * size);
    return new Ctor(copy.buffer, 0, len);
}

/// Element types of the fixed-width columns, by WIT type tag.
const PRIMITIVE = {
    int8: Int8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array,
    uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array,
    float32: Float32Array, float64: Float64Array,
    date32: Int32Array, date64: BigInt64Array, time32: Int32Array, time64: BigInt64Array,
    timestamp: BigInt64Array, duration: BigInt64Array,
};

/// Any column: length, nulls, and the raw WIT buffers.
export class Column {
    constructor(field, wire, children) {
        this.field = field;
        this.length = wire.len;
        this.offset = wire.offset;
        this.validity = wire.validity;
        this.buffers = wire.buffers;
        this.children = children;
    }

    /// Whether row `i` is null.
    isNull(i) {
        const v = this.validity;
        if (!v) return false;
        const bit = v.offset + i;
        return ((v.bits[bit >> 3] >> (bit & 7)) & 1) === 0;
    }

    isValid(i) {
        return !this.isNull(i);
    }

    /// How many rows are null.
    get nullCount() {
        if (!this.validity) return 0;
        let n = 0;
        for (let i = 0; i < this.length; i++) if (this.isNull(i)) n++;
        return n;
    }

    /// The value of row `i` (null for a null row).
    get(i) {
        throw new TypeError(`column \`${this.field.name}\` of type ${this.field.typeName} has no value accessor; read its buffers`);
    }

    /// Every value, nulls as null, in a plain array (a copy: prefer `values` and `isNull` in hot loops).
    toArray() {
        const out = new Array(this.length);
        for (let i = 0; i < this.length; i++) out[i] = this.get(i);
        return out;
    }
}

/// A fixed-width numeric column. `values` is a typed array over the Arrow buffer
/// (BigInt64Array/BigUint64Array for 64-bit integers, whose `numbers()` gives Numbers).
export class PrimitiveColumn extends Column {
    constructor(field, wire, children) {
        super(field, wire, children);
        this.values = typedView(PRIMITIVE[field.type], wire.buffers[0], wire.offset, wire.len);
    }

    get(i) {
        return this.isNull(i) ? null : this.values[i];
    }

    /// Row `i` as a Number (64-bit integers beyond 2^53 lose precision), or null.
    number(i) {
        return this.isNull(i) ? null : Number(this.values[i]);
    }

    /// Every value as a Float64Array of Numbers (null rows hold whatever the buffer holds).
    numbers() {
        const v = this.values;
        if (v instanceof Float64Array) return v;
        const out = new Float64Array(v.length);
        for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
        return out;
    }
}

/// A bit-packed boolean column.
export class BooleanColumn extends Column {
    get(i) {
        if (this.isNull(i)) return null;
        const bit = this.offset + i;
        return ((this.buffers[0][bit >> 3] >> (bit & 7)) & 1) === 1;
    }
}

/// A utf8 or binary column: `offsets` (Int32Array of length + 1 entries) into `data`.
export class BinaryColumn extends Column {
    constructor(field, wire, children) {
        super(field, wire, children);
        this.offsets = typedView(Int32Array, wire.buffers[0], wire.offset, wire.len + 1);
        this.data = wire.buffers[1] || new Uint8Array(0);
    }

    /// The bytes of row `i` (a view, not a copy), or null.
    bytes(i) {
        return this.isNull(i) ? null : this.data.subarray(this.offsets[i], this.offsets[i + 1]);
    }

    get(i) {
        return this.bytes(i);
    }
}

export class Utf8Column extends BinaryColumn {
    /// Row `i` decoded into a string, or null.
    get(i) {
        return this.isNull(i) ? null : decode(this.data, this.offsets[i], this.offsets[i + 1]);
    }
}

/// A fixed-size-binary column: `width` bytes per row.
export class FixedSizeBinaryColumn extends Column {
    get width() {
        return this.field.param;
    }

    get(i) {
        if (this.isNull(i)) return null;
        const start = (this.offset + i) * this.width;
        return this.buffers[0].subarray(start, start + this.width);
    }
}

/// A struct column; `child(name)` is the column of one of its fields.
export class StructColumn extends Column {
    child(name) {
        const i = this.field.children.findIndex((f) => f.name === name);
        return this.children[i];
    }

    /// Row `i` as an object of its fields' values, or null.
    get(i) {
        if (this.isNull(i)) return null;
        const out = {};
        this.field.children.forEach((f, k) => (out[f.name] = this.children[k].get(this.offset + i)));
        return out;
    }
}

/// A `flumen.blob` column: `get(i)` is a blob reference `{digest, size, mediaType, token}` (what
/// the `blobs` calls take), or null.
export class BlobColumn extends StructColumn {
    get(i) {
        if (this.isNull(i)) return null;
        const [digest, size, mediaType, token] = this.children;
        const j = this.offset + i;
        if (digest.isNull(j) || size.isNull(j) || mediaType.isNull(j) || token.isNull(j)) return null;
        return { digest: digest.get(j), size: Number(size.values[j]), mediaType: mediaType.get(j), token: token.get(j) };
    }
}

/// The view class for `field`.
function viewClass(field) {
    if (field.isBlob) return BlobColumn;
    if (PRIMITIVE[field.type]) return PrimitiveColumn;
    switch (field.type) {
        case "boolean": return BooleanColumn;
        case "utf8": return Utf8Column;
        case "binary": return BinaryColumn;
        case "fixed-size-binary": return FixedSizeBinaryColumn;
        case "record": return StructColumn;
        default: return Column;
    }
}

/// Views over the pre-order WIT columns of `fields` (top-level Field objects).
export function viewColumns(fields, wireColumns) {
    let at = 0;
    const take = (f) => {
        const wire = wireColumns[at++];
        if (wire === undefined) throw new TypeError("the batch has fewer columns than its schema");
        const children = f.children.map(take);
        const Cls = viewClass(f);
        return new Cls(f, wire, children);
    };
    return fields.map(take);
}

/// The batch `process` receives: the columns the plan reads from its port.
export class Batch {
    constructor(schema, wire) {
        this.schema = schema;
        this.numRows = wire.numRows;
        this.columns = viewColumns(schema.fields, wire.columns);
    }

    /// The column called `name` (or at position `name` among the columns read).
    column(name) {
        const c = typeof name === "number" ? this.columns[name] : this.columns[this.schema.indexOf(name)];
        if (c === undefined) throw new TypeError(`the batch has no column \`${name}\` (it has ${this.schema.names.join(", ")}): does the plan read it?`);
        return c;
    }
}

// ---------------------------------------------------------------------------------------------
// Builders

/// Validity bits for `len` rows, all valid, made on the first null.
class Nulls {
    constructor() {
        this.bits = null;
    }

    setNull(i, len) {
        if (this.bits === null) {
            // Bits past `len` stay set (a growing builder's later rows are valid); `toWit` clears them.
            this.bits = new Uint8Array(Math.max(8, (len + 7) >> 3)).fill(0xff);
        } else if (this.bits.length * 8 < len) {
            const grown = new Uint8Array(Math.max(this.bits.length * 2, (len + 7) >> 3)).fill(0xff);
            grown.set(this.bits);
            this.bits = grown;
        }
        this.bits[i >> 3] &= ~(1 << (i & 7));
    }

    toWit(len) {
        if (this.bits === null) return null;
        const bytes = (len + 7) >> 3;
        const bits = new Uint8Array(bytes).fill(0xff);
        bits.set(this.bits.subarray(0, bytes));
        if (len & 7) bits[bytes - 1] &= (1 << (len & 7)) - 1;
        return { bits, offset: 0 };
    }
}

/// The bytes of a typed array, as a view.
function bytesOf(a) {
    return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/// A fixed-length numeric column of `length` rows: write `values[i]` directly (a typed array,
/// zero-filled) and mark nulls with `setNull(i)`, or use `set(i, v)` (null/undefined is null).
export class PrimitiveBuilder {
    constructor(Ctor, length) {
        this.values = new Ctor(length);
        this.length = length;
        this.nulls = new Nulls();
    }

    set(i, v) {
        if (v === null || v === undefined) this.setNull(i);
        else this.values[i] = v;
    }

    setNull(i) {
        this.nulls.setNull(i, this.length);
    }

    /// The WIT column record.
    finish() {
        return { len: this.length, offset: 0, validity: this.nulls.toWit(this.length), buffers: [bytesOf(this.values)] };
    }
}

/// int64 values; `set` takes a BigInt or an integral Number.
export class Int64Builder extends PrimitiveBuilder {
    constructor(length) {
        super(BigInt64Array, length);
    }

    set(i, v) {
        if (v === null || v === undefined) this.setNull(i);
        else this.values[i] = typeof v === "bigint" ? v : BigInt(v);
    }
}

export class Int32Builder extends PrimitiveBuilder {
    constructor(length) {
        super(Int32Array, length);
    }
}

export class Float64Builder extends PrimitiveBuilder {
    constructor(length) {
        super(Float64Array, length);
    }
}

/// float32 values: Numbers stored round to nearest.
export class Float32Builder extends PrimitiveBuilder {
    constructor(length) {
        super(Float32Array, length);
    }
}

/// A fixed-length, bit-packed boolean column.
export class BoolBuilder {
    constructor(length) {
        this.length = length;
        this.bits = new Uint8Array((length + 7) >> 3);
        this.nulls = new Nulls();
    }

    set(i, v) {
        if (v === null || v === undefined) this.setNull(i);
        else if (v) this.bits[i >> 3] |= 1 << (i & 7);
        else this.bits[i >> 3] &= ~(1 << (i & 7));
    }

    setNull(i) {
        this.nulls.setNull(i, this.length);
    }

    finish() {
        return { len: this.length, offset: 0, validity: this.nulls.toWit(this.length), buffers: [this.bits] };
    }
}

/// A growing utf8 (or binary) column: `append(string)`, `appendBytes(Uint8Array)`, `appendNull()`.
export class Utf8Builder {
    constructor(capacity = 64) {
        this.length = 0;
        this.offsets = new Int32Array(capacity + 1);
        this.data = new Uint8Array(capacity * 8);
        this.end = 0;
        this.nulls = new Nulls();
    }

    reserveRows() {
        if (this.length + 1 >= this.offsets.length) {
            const grown = new Int32Array(this.offsets.length * 2);
            grown.set(this.offsets);
            this.offsets = grown;
        }
    }

    /// Makes room for `n` more bytes; returns the data buffer.
    reserveBytes(n) {
        if (this.end + n > this.data.length) {
            const grown = new Uint8Array(Math.max(this.data.length * 2, this.end + n));
            grown.set(this.data.subarray(0, this.end));
            this.data = grown;
        }
        return this.data;
    }

    append(s) {
        if (s === null || s === undefined) return this.appendNull();
        this.reserveRows();
        this.reserveBytes(byteLength(s));
        this.end = encodeInto(s, this.data, this.end);
        this.offsets[++this.length] = this.end;
    }

    appendBytes(bytes) {
        if (bytes === null || bytes === undefined) return this.appendNull();
        this.reserveRows();
        this.reserveBytes(bytes.length).set(bytes, this.end);
        this.end += bytes.length;
        this.offsets[++this.length] = this.end;
    }

    appendNull() {
        this.reserveRows();
        this.nulls.setNull(this.length, this.length + 1);
        this.offsets[++this.length] = this.end;
    }

    finish() {
        return {
            len: this.length,
            offset: 0,
            validity: this.nulls.toWit(this.length),
            buffers: [bytesOf(this.offsets.subarray(0, this.length + 1)), this.data.slice(0, this.end)],
        };
    }
}

/// Packs one truthy/falsy entry per row (an array, a Uint8Array of 0/1) into an LSB-first
/// bitmask of ceil(n / 8) bytes; returns the mask and how many rows it keeps.
export function packMask(keep) {
    const n = keep.length;
    const bits = new Uint8Array((n + 7) >> 3);
    let count = 0;
    for (let i = 0; i < n; i++) {
        if (keep[i]) {
            bits[i >> 3] |= 1 << (i & 7);
            count++;
        }
    }
    return { bits, count };
}
