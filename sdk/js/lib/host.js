// Wrappers over the host capabilities a plugin may import: log, state, blobs and inference.
// Each is present only when plugin.toml lists it (see capabilities.js); using one that is not
// fails with an error saying which capability to add.

import caps, { name as pluginName } from "../capabilities.js";
import { FlumenError, internalError, inputError, configError, unwrapPayload } from "./errors.js";
import { encode as utf8Encode } from "./utf8.js";
import { Utf8Column, BinaryColumn, PrimitiveColumn, BooleanColumn } from "./columns.js";

function need(capability) {
    const c = caps[capability];
    if (!c) throw internalError(`${pluginName}: uses \`${capability}\`, which plugin.toml does not list in \`capabilities\``);
    return c;
}

// ---------------------------------------------------------------------------------------------
// log

function logAt(level) {
    return (message) => {
        if (caps.log) caps.log.log(level, String(message));
    };
}

/// Structured logging into the host's tracing output; a no-op without the `log` capability.
export const log = {
    trace: logAt("trace"),
    debug: logAt("debug"),
    info: logAt("info"),
    warn: logAt("warn"),
    error: logAt("error"),
    /// Whether a message at `level` would be recorded.
    enabled: (level) => (caps.log ? caps.log.enabled(level) : false),
};

// ---------------------------------------------------------------------------------------------
// state

/// Most keys or entries in one `*-many` call; larger requests are split (as in the Rust SDK).
const MANY_CHUNK = 1 << 16;

const TAG_NULL = 0x00;
const TAG_BOOL = 0x01;
const TAG_INT = 0x02;
const TAG_UINT_ABOVE_I64 = 0x03;
const TAG_UTF8 = 0x04;
const TAG_BINARY = 0x05;
const I64_MAX = (1n << 63n) - 1n;

/// The state key of one value, in the encoding every Flumen SDK shares: a tag byte then the
/// value — null `00`; boolean `01 00|01`; an integer up to i64 max `02` + its i64 big-endian
/// with the sign bit flipped; a larger uint64 `03` + big-endian; a string `04` + UTF-8; bytes
/// (Uint8Array) `05` + the bytes. Integers are Numbers (integral) or BigInts.
export function stateKey(value) {
    if (value === null || value === undefined) return Uint8Array.of(TAG_NULL);
    if (typeof value === "boolean") return Uint8Array.of(TAG_BOOL, value ? 1 : 0);
    if (typeof value === "string") {
        const bytes = utf8Encode(value);
        const key = new Uint8Array(bytes.length + 1);
        key[0] = TAG_UTF8;
        key.set(bytes, 1);
        return key;
    }
    if (value instanceof Uint8Array) return tagged(TAG_BINARY, value);
    if (typeof value === "number" || typeof value === "bigint") {
        if (typeof value === "number" && !Number.isInteger(value)) throw inputError(`a state key cannot be the float ${value}`);
        const v = BigInt(value);
        const key = new Uint8Array(9);
        const view = new DataView(key.buffer);
        if (v > I64_MAX) {
            key[0] = TAG_UINT_ABOVE_I64;
            view.setBigUint64(1, v, false);
        } else {
            key[0] = TAG_INT;
            view.setBigUint64(1, BigInt.asUintN(64, v) ^ (1n << 63n), false);
        }
        return key;
    }
    throw inputError(`a state key cannot be of type ${typeof value}`);
}

function tagged(tag, bytes) {
    const key = new Uint8Array(bytes.length + 1);
    key[0] = tag;
    key.set(bytes, 1);
    return key;
}

/// The state key of every row of `column` (integer, boolean, utf8 or binary), in row order.
/// String keys are made from the column's bytes directly, without decoding them.
export function keysOf(column) {
    const n = column.length;
    const keys = new Array(n);
    if (column instanceof BinaryColumn) {
        const tag = column instanceof Utf8Column ? TAG_UTF8 : TAG_BINARY;
        for (let i = 0; i < n; i++) keys[i] = column.isNull(i) ? Uint8Array.of(TAG_NULL) : tagged(tag, column.bytes(i));
        return keys;
    }
    if (column instanceof PrimitiveColumn || column instanceof BooleanColumn) {
        const t = column.field.type;
        if (!(column instanceof BooleanColumn) && !/^u?int(8|16|32|64)$/.test(t)) {
            throw configError(`column \`${column.field.name}\` has type ${t}, which cannot be a state key`);
        }
        for (let i = 0; i < n; i++) keys[i] = stateKey(column.get(i));
        return keys;
    }
    throw configError(`column \`${column.field.name}\` has type ${column.field.typeName}, which cannot be a state key`);
}

/// The 8 little-endian bytes of an int64 value.
export function i64Bytes(v) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigInt64(0, typeof v === "bigint" ? v : BigInt(v), true);
    return b;
}

/// The int64 stored by `i64Bytes`, as a BigInt.
export function i64FromBytes(bytes, stateName = "") {
    if (bytes.length !== 8) throw internalError(`state \`${stateName}\` holds a value of ${bytes.length} bytes, not an 8-byte int64`);
    return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigInt64(0, true);
}

/// A value per key in the host's state (needs the `state` capability). Keys are Uint8Arrays
/// (`stateKey`, `keysOf`); read and write a whole batch's keys with one `getMany`/`setMany`.
export class ValueState {
    constructor(name) {
        this.name = name;
    }

    get(key) {
        return hostCall(() => need("state").valueGet(this.name, key));
    }

    set(key, value) {
        hostCall(() => need("state").valueSet(this.name, key, value));
    }

    delete(key) {
        hostCall(() => need("state").valueDelete(this.name, key));
    }

    /// The values under `keys` (null where none), in order.
    getMany(keys) {
        const out = [];
        for (let at = 0; at < keys.length; at += MANY_CHUNK) {
            const chunk = keys.slice(at, at + MANY_CHUNK);
            const got = hostCall(() => need("state").valueGetMany(this.name, chunk));
            if (got.length !== chunk.length) throw internalError(`state \`${this.name}\`: the host returned ${got.length} values for ${chunk.length} keys`);
            for (const v of got) out.push(v);
        }
        return out;
    }

    /// Sets every [key, value] of `entries`.
    setMany(entries) {
        for (let at = 0; at < entries.length; at += MANY_CHUNK) {
            const chunk = entries.slice(at, at + MANY_CHUNK);
            hostCall(() => need("state").valueSetMany(this.name, chunk));
        }
    }

    deleteMany(keys) {
        for (let at = 0; at < keys.length; at += MANY_CHUNK) {
            const chunk = keys.slice(at, at + MANY_CHUNK);
            hostCall(() => need("state").valueDeleteMany(this.name, chunk));
        }
    }

    /// int64 values (8 bytes, little-endian) as BigInts, null where none.
    getI64(key) {
        const v = this.get(key);
        return v === null ? null : i64FromBytes(v, this.name);
    }

    setI64(key, value) {
        this.set(key, i64Bytes(value));
    }

    getManyI64(keys) {
        return this.getMany(keys).map((v) => (v === null ? null : i64FromBytes(v, this.name)));
    }

    /// `entries`: [key, BigInt or integral Number] pairs.
    setManyI64(entries) {
        this.setMany(entries.map(([k, v]) => [k, i64Bytes(v)]));
    }
}

/// Runs a host call; an error record it throws becomes a FlumenError of the same kind.
function hostCall(f) {
    try {
        return f();
    } catch (thrown) {
        if (thrown instanceof FlumenError) throw thrown;
        const e = unwrapPayload(thrown);
        if (e !== null && typeof e === "object" && typeof e.kind === "string" && typeof e.message === "string") throw new FlumenError(e.kind, e.message);
        throw thrown;
    }
}

// ---------------------------------------------------------------------------------------------
// blobs

/// Bytes asked for per `blobs.read` call by `readAll` and `readChunks`.
export const BLOB_CHUNK_BYTES = 65536;

/// Blob references ({digest, size, mediaType, token}, from a BlobColumn) read by value (needs
/// the `blobs` capability).
export const blobs = {
    /// Bytes [offset, offset + len) of `ref`, cut at its end.
    read: (ref, offset, len) => hostCall(() => need("blobs").read(ref, offset, len)),

    /// Calls `onChunk(bytes)` for each piece of `ref`, reading `chunkBytes` at a time from
    /// offset 0 until a read returns no bytes; returns the number of bytes read.
    readChunks(ref, onChunk, chunkBytes = BLOB_CHUNK_BYTES) {
        const host = need("blobs");
        let offset = 0;
        for (;;) {
            const chunk = hostCall(() => host.read(ref, offset, chunkBytes));
            if (chunk.length === 0) return offset;
            onChunk(chunk);
            offset += chunk.length;
        }
    },

    /// The whole blob in one Uint8Array.
    readAll(ref, chunkBytes = BLOB_CHUNK_BYTES) {
        const parts = [];
        const total = blobs.readChunks(ref, (c) => parts.push(c), chunkBytes);
        if (parts.length === 1) return parts[0];
        const out = new Uint8Array(total);
        let at = 0;
        for (const p of parts) {
            out.set(p, at);
            at += p.length;
        }
        return out;
    },

    /// {size, mediaType, source} without reading the bytes.
    stat: (ref) => hostCall(() => need("blobs").stat(ref)),
    /// Makes a blob of `data` (up to 64 MiB); returns its reference.
    create: (data, mediaType = "application/octet-stream") => hostCall(() => need("blobs").create(data, mediaType)),
    retain: (ref) => hostCall(() => need("blobs").retain(ref)),
    release: (ref) => hostCall(() => need("blobs").release(ref)),
};

// ---------------------------------------------------------------------------------------------
// inference

/// The error kind each `infer-error` case becomes.
const INFER_KINDS = {
    "unknown-model": "invalid-config",
    mismatch: "invalid-input",
    refused: "limit",
    "deadline-exceeded": "internal",
    backend: "internal",
};

function inferCall(what, f) {
    try {
        return f();
    } catch (thrown) {
        const e = unwrapPayload(thrown);
        if (e !== null && typeof e === "object" && typeof e.tag === "string") {
            throw new FlumenError(INFER_KINDS[e.tag] || "internal", `${what}: ${e.tag}: ${e.val}`);
        }
        throw thrown;
    }
}

/// Dense tensors: `{dtype, shape, data}` with little-endian row-major bytes.
export const tensor = {
    /// A float32 tensor of `shape` over `values` (a Float32Array; its bytes are not copied).
    f32(shape, values) {
        return { dtype: "float32", shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
    },
    /// A float32 tensor's values as a Float32Array (a view when aligned).
    toF32(t) {
        if (t.dtype !== "float32") throw internalError(`expected a float32 tensor, got ${t.dtype}`);
        const data = t.data;
        const len = data.byteLength >> 2;
        if (data.byteOffset % 4 === 0) return new Float32Array(data.buffer, data.byteOffset, len);
        return new Float32Array(data.slice().buffer, 0, len);
    },
};

/// A model the host runs (needs the `inference` capability).
export class Model {
    constructor(name, handle) {
        this.name = name;
        this.handle = handle;
        this._info = null;
    }

    /// Loads the model called `name` from the job's model repository.
    static load(name) {
        const host = need("inference");
        return new Model(name, inferCall(`model \`${name}\``, () => host.load(name)));
    }

    /// {name, digest, inputs, outputs, maxBatch, labels, accepts}.
    info() {
        if (this._info === null) this._info = this.handle.info();
        return this._info;
    }

    /// Runs the model: one tensor per input, in `info().inputs` order; returns the outputs.
    infer(inputs, deadlineMs = null) {
        return inferCall(`model \`${this.name}\``, () => this.handle.infer(inputs, deadlineMs));
    }
}

