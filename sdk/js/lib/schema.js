// Schemas and fields: the WIT pre-order field list turned into a tree, type checks that raise
// invalid-config errors, and constructors for the fields an operator computes.

import { configError } from "./errors.js";

/// Field metadata key naming an Arrow extension type (e.g. `flumen.blob`).
export const EXTENSION_NAME = "ARROW:extension:name";

/// Extension names whose storage is the blob-reference struct.
const BLOB_TYPES = ["flumen.blob", "flumen.image", "flumen.video"];

/// One field with its children. `type` is the WIT data-type tag (`int64`, `utf8`,
/// `fixed-size-binary`, `record`, ...), `param` its payload (a width, a unit), if any.
export class Field {
    constructor(name, type, nullable = true, { param, children = [], metadata = [] } = {}) {
        this.name = name;
        this.type = type;
        this.param = param;
        this.nullable = nullable;
        this.children = children;
        this.metadata = metadata;
    }

    /// The value of metadata `key`, or undefined.
    meta(key) {
        const hit = this.metadata.find(([k]) => k === key);
        return hit ? hit[1] : undefined;
    }

    /// The extension type name (`flumen.blob`, ...), or undefined.
    get extension() {
        return this.meta(EXTENSION_NAME);
    }

    /// Whether this is a blob-reference column (`flumen.blob` struct of digest, size, media_type, token).
    get isBlob() {
        if (!BLOB_TYPES.includes(this.extension) || this.type !== "record") return false;
        const want = [["digest", "fixed-size-binary", 32], ["size", "uint64"], ["media_type", "utf8"], ["token", "fixed-size-binary", 16]];
        return this.children.length === 4 && want.every(([n, t, p], i) => {
            const c = this.children[i];
            return c.name === n && c.type === t && (p === undefined || c.param === p);
        });
    }

    /// A readable type name for messages: `int64`, `fixed-size-binary(32)`, `flumen.blob`.
    get typeName() {
        if (this.extension) return this.extension;
        return this.param === undefined || typeof this.param === "object" ? this.type : `${this.type}(${this.param})`;
    }

    /// The pre-order WIT field records of this field and its descendants.
    toWit(out = []) {
        const dataType = this.param === undefined ? { tag: this.type } : { tag: this.type, val: this.param };
        out.push({ name: this.name, dataType, nullable: this.nullable, children: this.children.length, metadata: this.metadata });
        for (const c of this.children) c.toWit(out);
        return out;
    }

    /// The same field under another name.
    renamed(name) {
        return new Field(name, this.type, this.nullable, { param: this.param, children: this.children, metadata: this.metadata });
    }
}

/// A field of a computed column: `field("total", "float64")`, nullable unless `nullable` is false.
export function field(name, type, nullable = true) {
    return new Field(name, type, nullable);
}

/// The top-level fields of a schema, plus lookup by name that fails as invalid config.
export class Schema {
    constructor(fields, metadata = [], label = "the input") {
        this.fields = fields;
        this.metadata = metadata;
        this.label = label;
    }

    /// From the WIT record (pre-order fields).
    static fromWit(wit, label) {
        let at = 0;
        const take = () => {
            const f = wit.fields[at++];
            if (f === undefined) throw configError("malformed schema: a field's children run past the end");
            const tag = f.dataType.tag;
            const children = [];
            for (let i = 0; i < f.children; i++) children.push(take());
            return new Field(f.name, tag, f.nullable, { param: f.dataType.val, children, metadata: f.metadata });
        };
        const fields = [];
        while (at < wit.fields.length) fields.push(take());
        return new Schema(fields, wit.metadata, label);
    }

    toWit() {
        const fields = [];
        for (const f of this.fields) f.toWit(fields);
        return { fields, metadata: this.metadata };
    }

    get names() {
        return this.fields.map((f) => f.name);
    }

    /// The index of the column called `name`, or -1.
    indexOf(name) {
        return this.fields.findIndex((f) => f.name === name);
    }

    field(name) {
        return this.fields[this.indexOf(name)];
    }

    /// The index of column `name`, checked to have one of `types` (a type tag such as `int64`,
    /// `blob` for a blob-reference column, or an array of them); otherwise an invalid-config
    /// error naming the column. `who` prefixes the message (the operator's name).
    require(name, types, who = "") {
        const prefix = who ? `${who}: ` : "";
        const i = this.indexOf(name);
        if (i < 0) throw configError(`${prefix}column \`${name}\` is not in ${this.label} (it has ${this.names.map((n) => `\`${n}\``).join(", ")})`);
        if (types === undefined) return i;
        const wanted = Array.isArray(types) ? types : [types];
        const f = this.fields[i];
        const fits = wanted.some((t) => (t === "blob" ? f.isBlob : f.type === t && f.extension === undefined));
        if (!fits) {
            const names = wanted.map((t) => (t === "blob" ? "flumen.blob" : t)).join(" or ");
            throw configError(`${prefix}column \`${name}\` must be ${names}, it is ${f.typeName}`);
        }
        return i;
    }
}
