// Flumen's JavaScript SDK: write an operator as a class, export `operator(MyClass)`, and build it
// into a WebAssembly component with sdk/js/build.sh (jco's QuickJS backend). See README.md.

import caps, { name as pluginName } from "./capabilities.js";
import { Schema, Field, field } from "./lib/schema.js";
import { Batch, packMask } from "./lib/columns.js";
import { parseConfig, param } from "./lib/config.js";
import { FlumenError, configError, internalError, toWitError, unwrapPayload } from "./lib/errors.js";

export { Schema, Field, field, param };
export * from "./lib/columns.js";
export * from "./lib/errors.js";
export { log, stateKey, keysOf, i64Bytes, i64FromBytes, ValueState, blobs, BLOB_CHUNK_BYTES, tensor, Model } from "./lib/host.js";
export * as utf8 from "./lib/utf8.js";
import { encode as utf8Encode, decode as utf8Decode } from "./lib/utf8.js";

/// The plugin's name (plugin.toml `name`), for error messages.
export const name = pluginName;

/// JSON through UTF-8 bytes, for snapshots: `save() { return json.encode(this.windows) }`.
export const json = {
    encode: (value) => utf8Encode(JSON.stringify(value)),
    decode: (bytes) => JSON.parse(utf8Decode(bytes)),
};

/// What an instance learns when it opens; `plan(...)` turns it into the operator's plan.
export class Context {
    constructor(wit) {
        this.operatorId = wit.operatorId;
        this.subtask = wit.subtask;
        this.parallelism = wit.parallelism;
        this.configText = wit.config;
        this.inputs = wit.inputs.map((s, port) => Schema.fromWit(s, wit.inputs.length === 1 ? "the input" : `input ${port}`));
    }

    /// The schema of input `port`.
    input(port = 0) {
        const s = this.inputs[port];
        if (s === undefined) throw configError(`${pluginName}: needs input port ${port}, the operator has ${this.inputs.length}`);
        return s;
    }

    /// The config checked against `spec` ({ key: param.string(), ... }); see `param`.
    config(spec) {
        return parseConfig(this.configText, spec, pluginName);
    }

    /// Column `name` of input `port`, checked to have type `types` (a tag like "int64", "blob",
    /// or an array of them): its index, or an invalid-config error naming the column.
    column(name, types, port = 0) {
        return this.input(port).require(name, types, pluginName);
    }

    /// The operator's plan, in one call:
    ///   reads:    input columns `process` receives (names or indices of input 0, or one
    ///             such array per port); default: all of them
    ///   carry:    "all" (every column of input 0, in order) or names/indices carried unchanged
    ///   computed: Fields of the columns the operator emits, after the carried ones
    ///   output:   instead of carry + computed, the full layout: a name/index carries that
    ///             input column, a Field is computed
    plan({ reads, carry, computed = [], output } = {}) {
        const input0 = this.inputs[0] || new Schema([]);
        const resolve = (schema, c) => {
            const i = typeof c === "number" ? c : schema.indexOf(c);
            if (i < 0 || i >= schema.fields.length) throw internalError(`${pluginName}: plan names column \`${c}\`, which the input does not have`);
            return i;
        };
        // Reads, per port.
        let perPort = [];
        if (reads !== undefined) perPort = reads.length > 0 && Array.isArray(reads[0]) ? reads : [reads];
        const witReads = [];
        this.received = this.inputs.map((schema, port) => {
            const r = perPort[port];
            if (r === undefined || r === null) {
                witReads.push(null);
                return schema;
            }
            const idx = [...new Set(r.map((c) => resolve(schema, c)))].sort((a, b) => a - b);
            witReads.push(idx);
            return new Schema(idx.map((i) => schema.fields[i]), schema.metadata, schema.label);
        });
        // Output layout.
        let layout = output;
        if (layout === undefined) {
            const carried = carry === "all" ? input0.fields.map((_, i) => i) : carry || [];
            layout = [...carried, ...computed];
        }
        const fields = [];
        const carried = [];
        this.computed = [];
        for (const entry of layout) {
            if (entry instanceof Field) {
                fields.push(entry);
                carried.push(null);
                this.computed.push(entry);
            } else {
                const i = resolve(input0, entry);
                fields.push(input0.fields[i]);
                carried.push(i);
            }
        }
        this.carries = carried.some((c) => c !== null);
        const schema = new Schema(fields);
        return {
            schema: schema.toWit(),
            carried: this.carries ? carried : [],
            reads: witReads.every((r) => r === null) ? [] : witReads,
        };
    }
}

/// Where an operator's results go. In `process` the selection picks the input rows its
/// carried columns take; from `finish` and `onWatermark` (nothing carried) it is all rows.
export class Output {
    constructor(inputRows) {
        this.inputRows = inputRows;
    }

    /// Emits the computed columns (builders or WIT column records, in output order). `select`:
    /// omitted for every input row; `{ mask }` one truthy entry per input row; `{ indices }`
    /// input row numbers (any order, repeats allowed).
    emit(columns, select) {
        const wire = columns.map((c) => (typeof c.finish === "function" ? c.finish() : c));
        let selection = { tag: "all" };
        let rows = wire.length > 0 ? wire[0].len : this.inputRows;
        if (select && select.mask !== undefined) {
            if (this.inputRows !== undefined && select.mask.length !== this.inputRows) {
                throw internalError(`${pluginName}: a mask of ${select.mask.length} entries for a batch of ${this.inputRows} rows`);
            }
            const { bits, count } = packMask(select.mask);
            selection = { tag: "mask", val: bits };
            if (wire.length === 0) rows = count;
        } else if (select && select.indices !== undefined) {
            selection = { tag: "indices", val: Uint32Array.from(select.indices) };
            if (wire.length === 0) rows = select.indices.length;
        }
        if (rows === undefined) throw internalError(`${pluginName}: emit with no columns outside process: nothing to say how many rows`);
        if (!caps.output) throw internalError(`${pluginName}: the component does not import \`output\``);
        try {
            caps.output.emit({ numRows: rows, columns: wire }, selection);
        } catch (thrown) {
            const e = unwrapPayload(thrown);
            throw e instanceof Error ? e : new FlumenError(e.kind || "internal", e.message || String(e));
        }
    }

    /// Keeps the input rows whose `mask` entry is truthy (a filter that computes nothing).
    keep(mask) {
        this.emit([], { mask });
    }

    /// Emits input rows by index with no computed columns.
    take(indices) {
        this.emit([], { indices });
    }
}

/// The exports jco expects (`transform`, `snapshot`, `eventTime`) for an operator class:
///
///   class MyOp {
///     open(ctx) { ...; return ctx.plan({...}) }   // required
///     process(batch, out, port) { ... }            // required
///     finish(out) {}                               // optional
///     onWatermark(watermark, out) {}               // optional (event time, ms)
///     save() { return Uint8Array }                 // optional snapshot
///     restore(bytes) {}                            // optional
///   }
///   export const { transform, snapshot, eventTime } = operator(MyOp);
///
/// Anything a method throws becomes the WIT error: a FlumenError keeps its kind (the SDK's
/// config helpers throw `invalid-config`), any other exception is `internal` with its message.
export function operator(Class) {
    let instance = null;
    let ctx = null;
    const guard = (f) => {
        try {
            return f();
        } catch (e) {
            throw toWitError(e);
        }
    };
    const opened = () => {
        if (instance === null) throw internalError(`${pluginName}: called before open`);
        return instance;
    };
    return {
        transform: {
            open: (wit) => guard(() => {
                ctx = new Context(wit);
                instance = new Class();
                const plan = instance.open(ctx);
                if (!plan || !plan.schema) throw internalError(`${pluginName}: open must return ctx.plan(...)`);
                return plan;
            }),
            process: (port, wit) => guard(() => {
                const op = opened();
                const batch = new Batch(ctx.received[port], wit);
                op.process(batch, new Output(batch.numRows), port);
            }),
            finish: () => guard(() => {
                const op = opened();
                if (op.finish) op.finish(new Output(undefined));
            }),
        },
        snapshot: {
            save: () => guard(() => {
                const op = opened();
                return op.save ? op.save() : new Uint8Array(0);
            }),
            restore: (bytes) => guard(() => {
                const op = opened();
                if (op.restore) op.restore(bytes);
                else if (bytes.length > 0) throw internalError(`${pluginName}: has no restore for a ${bytes.length}-byte snapshot`);
            }),
        },
        eventTime: {
            onWatermark: (watermark) => guard(() => {
                const op = opened();
                if (op.onWatermark) op.onWatermark(Number(watermark), new Output(undefined));
            }),
        },
    };
}
