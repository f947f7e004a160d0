// Tests of the JavaScript SDK under Node (node --test sdk/js/test): encodings, views, builders,
// config errors and the operator wrapper, with a fake `output` standing in for the host.
import test from "node:test";
import assert from "node:assert/strict";
import caps from "../capabilities.js";
import {
    operator, param, field, utf8, stateKey, i64Bytes, i64FromBytes, Int64Builder, Float64Builder,
    Utf8Builder, BoolBuilder, Batch, Schema, typedView, json,
} from "../flumen.js";

const emitted = [];
caps.output = { emit: (batch, selection) => emitted.push({ batch, selection }) };

const wireField = (name, tag, nullable = true, val) => ({ name, dataType: val === undefined ? { tag } : { tag, val }, nullable, children: 0, metadata: [] });
const bit = (bits, i) => (bits[i >> 3] >> (i & 7)) & 1;

test("utf8 round-trips every kind of character, and bad bytes become U+FFFD", () => {
    for (const s of ["", "hello", "Straße", "日本語", "emoji 🚀 ok", "tab\tand\nnewline", "x".repeat(10000) + "é"]) {
        const bytes = utf8.encode(s);
        assert.deepEqual([...bytes], [...Buffer.from(s, "utf8")]);
        assert.equal(utf8.decode(bytes), s);
    }
    assert.equal(utf8.decode(Uint8Array.of(0x61, 0xff, 0x62, 0xc3)), "a\ufffdb\ufffd");
    assert.deepEqual([...utf8.encode("\ud800")], [0xef, 0xbf, 0xbd]);
});

test("state keys use the shared encoding", () => {
    assert.deepEqual([...stateKey("ü")], [0x04, 0xc3, 0xbc]);
    assert.deepEqual([...stateKey(null)], [0x00]);
    assert.deepEqual([...stateKey(true)], [0x01, 0x01]);
    assert.deepEqual([...stateKey(5)], [0x02, 0x80, 0, 0, 0, 0, 0, 0, 5]);
    assert.deepEqual([...stateKey(-1n)], [0x02, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert.deepEqual([...stateKey(1n << 63n)], [0x03, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...stateKey(Uint8Array.of(1, 2))], [0x05, 1, 2]);
    assert.deepEqual([...i64Bytes(258)], [2, 1, 0, 0, 0, 0, 0, 0]);
    assert.equal(i64FromBytes(i64Bytes(-7n)), -7n);
});

test("state keys match the vectors every SDK shares (tests/conformance/state-keys.json)", async () => {
    const { readFile } = await import("node:fs/promises");
    const url = new URL("../../../tests/conformance/state-keys.json", import.meta.url);
    const { keys } = JSON.parse(await readFile(url, "utf8"));
    assert.ok(keys.length >= 10);
    for (const v of keys) {
        let value = v.value;
        if (v.type === "int" || v.type === "uint") value = BigInt(value);
        if (v.type === "bytes") value = Uint8Array.from(value.match(/../g) ?? [], (h) => parseInt(h, 16));
        const hex = [...stateKey(value)].map((b) => b.toString(16).padStart(2, "0")).join("");
        assert.equal(hex, v.key, JSON.stringify(v));
    }
});

test("builders make Arrow buffers that the views read back", () => {
    const n = 70;
    const ints = new Int64Builder(n);
    const floats = new Float64Builder(n);
    const texts = new Utf8Builder(2);
    const bools = new BoolBuilder(n);
    for (let i = 0; i < n; i++) {
        ints.set(i, i % 7 === 0 ? null : i);
        floats.values[i] = i / 2;
        texts.append(i === 66 ? null : `r${i}ü`);
        bools.set(i, i % 3 === 0);
    }
    const wire = { numRows: n, columns: [ints.finish(), floats.finish(), texts.finish(), bools.finish()] };
    assert.equal(wire.columns[1].validity, null);
    assert.equal(wire.columns[2].validity.bits.length, 9);
    assert.equal(bit(wire.columns[2].validity.bits, 65), 1);
    assert.equal(bit(wire.columns[2].validity.bits, 66), 0);
    const schema = Schema.fromWit({ fields: [wireField("i", "int64"), wireField("f", "float64"), wireField("s", "utf8"), wireField("b", "boolean")], metadata: [] });
    const batch = new Batch(schema, wire);
    assert.equal(batch.column("i").get(7), null);
    assert.equal(batch.column("i").get(8), 8n);
    assert.equal(batch.column("i").number(9), 9);
    assert.equal(batch.column("f").values[5], 2.5);
    assert.equal(batch.column("s").get(65), "r65ü");
    assert.equal(batch.column("s").get(66), null);
    assert.equal(batch.column("s").get(67), "r67ü");
    assert.equal(batch.column("b").get(3), true);
    assert.equal(batch.column("b").get(4), false);
});

test("views copy only a misaligned buffer, and honour the column offset", () => {
    const raw = new Uint8Array(8 * 4 + 1);
    const misaligned = raw.subarray(1);
    new DataView(misaligned.buffer, 1).setFloat64(8, 1.5, true);
    const v = typedView(Float64Array, misaligned, 1, 2);
    assert.equal(v[0], 1.5);
    assert.notEqual(v.buffer, raw.buffer);
    const aligned = new Uint8Array(32);
    assert.equal(typedView(Float64Array, aligned, 1, 2).buffer, aligned.buffer);
});

class Doubler {
    open(ctx) {
        const cfg = ctx.config({ column: param.string(), factor: param.integer(2, { min: 1 }) });
        ctx.column(cfg.column, "float64");
        this.column = cfg.column;
        this.factor = cfg.factor;
        this.seen = 0;
        return ctx.plan({ reads: [cfg.column], carry: "all", computed: [field("doubled", "float64")] });
    }
    process(batch, out) {
        if (batch.numRows === 0) throw new Error("doubler: empty batch");
        const col = batch.column(this.column);
        const outCol = new Float64Builder(batch.numRows);
        for (let i = 0; i < batch.numRows; i++) outCol.set(i, col.isNull(i) ? null : col.values[i] * this.factor);
        this.seen += batch.numRows;
        out.emit([outCol], { mask: Array.from({ length: batch.numRows }, (_, i) => i !== 1) });
    }
    save() {
        return json.encode({ seen: this.seen });
    }
    restore(bytes) {
        this.seen = json.decode(bytes).seen;
    }
}

const ctx = (config) => ({
    operatorId: "op", subtask: 0, parallelism: 1, config: JSON.stringify(config),
    inputs: [{ fields: [wireField("k", "utf8", false), wireField("x", "float64")], metadata: [] }],
});

test("operator: plan, process, emit and snapshot through the WIT shapes", () => {
    const { transform, snapshot } = operator(Doubler);
    const plan = transform.open(ctx({ column: "x" }));
    assert.deepEqual(plan.carried, [0, 1, null]);
    assert.deepEqual(plan.reads, [[1]]);
    assert.deepEqual(plan.schema.fields.map((f) => f.name), ["k", "x", "doubled"]);
    const x = new Float64Builder(3);
    x.values.set([1, 2, 3]);
    x.setNull(2);
    emitted.length = 0;
    transform.process(0, { numRows: 3, columns: [x.finish()] });
    const { batch, selection } = emitted[0];
    assert.equal(selection.tag, "mask");
    assert.deepEqual([...selection.val], [0b101]);
    assert.equal(batch.numRows, 3);
    assert.deepEqual([...new Float64Array(batch.columns[0].buffers[0].buffer)].slice(0, 2), [2, 4]);
    const saved = snapshot.save();
    const again = operator(Doubler);
    again.transform.open(ctx({ column: "x" }));
    again.snapshot.restore(saved);
    assert.deepEqual(json.decode(again.snapshot.save()), { seen: 3 });
});

test("operator: errors become WIT error records of the right kind", () => {
    const { transform } = operator(Doubler);
    const fails = (config) => {
        try {
            transform.open(ctx(config));
        } catch (e) {
            return e;
        }
        assert.fail("open succeeded");
    };
    assert.deepEqual(fails({}), { kind: "invalid-config", message: "operator: config key `column` is required (a string)" });
    assert.match(fails({ column: "x", extra: 1 }).message, /unknown config key `extra`/);
    assert.match(fails({ column: "x", factor: "2" }).message, /`factor` must be an integer, not a string/);
    assert.match(fails({ column: "x", factor: 0 }).message, /`factor` must be at least 1/);
    assert.match(fails({ column: "k" }).message, /column `k` must be float64, it is utf8/);
    assert.match(fails({ column: "nope" }).message, /column `nope` is not in the input/);
    transform.open(ctx({ column: "x" }));
    assert.throws(() => transform.process(0, { numRows: 0, columns: [new Float64Builder(0).finish()] }), { kind: "internal", message: "doubler: empty batch" });
});
