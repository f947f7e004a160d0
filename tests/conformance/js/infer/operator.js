// Conformance operator `infer`: runs the test MLP on [id, qty or 0, amount or 0, 1] per row, appending
// the index (`best`) and value (`score`) of each row's largest output.
import { operator, param, field, Int64Builder, Float32Builder, Model, tensor } from "flumen";

class Infer {
    open(ctx) {
        const cfg = ctx.config({ model: param.string("mlp") });
        ctx.column("id", "int64");
        ctx.column("qty", "int64");
        ctx.column("amount", "float64");
        this.model = Model.load(cfg.model);
        return ctx.plan({
            reads: ["id", "qty", "amount"],
            carry: "all",
            computed: [field("best", "int64", false), field("score", "float32", false)],
        });
    }

    process(batch, out) {
        const n = batch.numRows;
        const id = batch.column("id");
        const qty = batch.column("qty");
        const amount = batch.column("amount");
        const x = new Float32Array(n * 4); // stores round to nearest float32
        for (let i = 0; i < n; i++) {
            x[i * 4] = Number(id.values[i]);
            x[i * 4 + 1] = qty.isNull(i) ? 0 : Number(qty.values[i]);
            x[i * 4 + 2] = amount.isNull(i) ? 0 : amount.values[i];
            x[i * 4 + 3] = 1;
        }
        const [y] = this.model.infer([tensor.f32([n, 4], x)]);
        const scores = tensor.toF32(y);
        const width = scores.length / n;
        const best = new Int64Builder(n);
        const score = new Float32Builder(n);
        for (let i = 0; i < n; i++) {
            let b = 0;
            for (let k = 1; k < width; k++) if (scores[i * width + k] > scores[i * width + b]) b = k;
            best.values[i] = BigInt(b);
            score.values[i] = scores[i * width + b];
        }
        out.emit([best, score]);
    }
}

export const { transform, snapshot, eventTime } = operator(Infer);
