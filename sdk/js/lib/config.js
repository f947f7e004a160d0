// Config parsing: the job's `config` table (JSON text) checked against a declared set of keys,
// failing with invalid-config errors that name the key.

import { configError } from "./errors.js";

const REQUIRED = Symbol("required");

/// One config key: its type, its default (REQUIRED when it must be given; null when optional
/// with no value) and an optional check returning an error text.
class Param {
    constructor(type, fallback, check) {
        this.type = type;
        this.fallback = fallback;
        this.check = check;
    }
}

const TYPES = {
    string: { what: "a string", fits: (v) => typeof v === "string" },
    integer: { what: "an integer", fits: (v) => typeof v === "number" && Number.isInteger(v) },
    number: { what: "a number", fits: (v) => typeof v === "number" },
    boolean: { what: "a boolean", fits: (v) => typeof v === "boolean" },
    array: { what: "an array", fits: (v) => Array.isArray(v) },
    table: { what: "a table", fits: (v) => v !== null && typeof v === "object" && !Array.isArray(v) },
};

const make = (type) => (fallback = REQUIRED, { min, check } = {}) =>
    new Param(type, fallback, (v) => {
        if (min !== undefined && v < min) return `must be at least ${min}`;
        return check ? check(v) : undefined;
    });

/// Declares config keys: `param.string()` is required, `param.string("total")` defaults to
/// "total", `param.integer(null)` is optional (null when absent), `param.integer(1000, { min: 1 })`
/// checks a bound; `check: (v) => "an error text" | undefined` adds any other check.
export const param = {
    string: make("string"),
    integer: make("integer"),
    number: make("number"),
    boolean: make("boolean"),
    array: make("array"),
    table: make("table"),
};

function typeOf(v) {
    if (v === null) return "null";
    if (Array.isArray(v)) return "an array";
    if (typeof v === "number") return Number.isInteger(v) ? "an integer" : "a float";
    if (typeof v === "object") return "a table";
    return `a ${typeof v}`;
}

/// Parses `text` (the config JSON) against `spec` ({ key: param... }); unknown keys, missing
/// required keys and ill-typed values are invalid-config errors prefixed with `who`.
export function parseConfig(text, spec, who) {
    const prefix = who ? `${who}: ` : "";
    let raw;
    try {
        raw = text === "" ? {} : JSON.parse(text);
    } catch (e) {
        throw configError(`${prefix}config is not valid JSON: ${e.message}`);
    }
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw configError(`${prefix}config must be a table`);
    const known = Object.keys(spec);
    for (const key of Object.keys(raw)) {
        if (!Object.prototype.hasOwnProperty.call(spec, key)) {
            throw configError(`${prefix}unknown config key \`${key}\` (known: ${known.map((k) => `\`${k}\``).join(", ") || "none"})`);
        }
    }
    const out = {};
    for (const key of known) {
        const p = spec[key];
        const v = raw[key];
        if (v === undefined || v === null) {
            if (p.fallback === REQUIRED) throw configError(`${prefix}config key \`${key}\` is required (${TYPES[p.type].what})`);
            out[key] = p.fallback;
            continue;
        }
        if (!TYPES[p.type].fits(v)) throw configError(`${prefix}config key \`${key}\` must be ${TYPES[p.type].what}, not ${typeOf(v)}`);
        const problem = p.check(v);
        if (problem) throw configError(`${prefix}config key \`${key}\` ${problem}`);
        out[key] = v;
    }
    return out;
}
