// Errors an operator raises, and their translation into the WIT `error` record the host reads.

/// An error with one of the WIT error kinds: `invalid-config`, `invalid-input`, `limit`, `internal`.
export class FlumenError extends Error {
    constructor(kind, message) {
        super(message);
        this.name = "FlumenError";
        this.kind = kind;
    }
}

/// The operator's configuration is unusable (a missing, ill-typed or unknown key, a wrong column).
export function configError(message) {
    return new FlumenError("invalid-config", message);
}

/// This input cannot be processed.
export function inputError(message) {
    return new FlumenError("invalid-input", message);
}

/// A limit was crossed.
export function limitError(message) {
    return new FlumenError("limit", message);
}

export function internalError(message) {
    return new FlumenError("internal", message);
}

const KINDS = new Set(["invalid-config", "invalid-input", "limit", "internal"]);

/// The WIT `error` record for anything thrown: a FlumenError keeps its kind, an error record a
/// host call threw passes unchanged, anything else (a TypeError, `throw new Error(...)`, a
/// string) is `internal` with its message.
export function toWitError(e) {
    e = unwrapPayload(e);
    if (e !== null && typeof e === "object" && KINDS.has(e.kind) && typeof e.message === "string") {
        return { kind: e.kind, message: e.message };
    }
    if (e instanceof Error) return { kind: "internal", message: e.message || String(e) };
    return { kind: "internal", message: String(e) };
}

/// What a host call failed with. The QuickJS bindings throw an Error whose `payload` is the
/// WIT `err` value (an `error` record, an `infer-error` variant); anything else is returned as is.
export function unwrapPayload(e) {
    return e !== null && typeof e === "object" && e.payload !== undefined && e.payload !== null ? e.payload : e;
}
