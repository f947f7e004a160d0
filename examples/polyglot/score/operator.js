// Polyglot example, step 2 (JavaScript): `sentiment`, the share of a review's words that
// are positive minus the share that are negative, from two small word lists.
import { operator, field, Float64Builder } from "flumen";

const POSITIVE = new Set(["great", "love", "excellent", "sturdy", "quiet", "perfect"]);
const NEGATIVE = new Set(["broken", "noisy", "flimsy", "late", "awful", "refund"]);

class Score {
    open(ctx) {
        ctx.column("clean", "utf8");
        return ctx.plan({ reads: ["clean"], carry: "all", computed: [field("sentiment", "float64", false)] });
    }

    process(batch, out) {
        const clean = batch.column("clean");
        const sentiment = new Float64Builder(batch.numRows);
        for (let i = 0; i < batch.numRows; i++) {
            const words = clean.get(i).split(" ");
            let score = 0;
            for (const w of words) score += POSITIVE.has(w) ? 1 : NEGATIVE.has(w) ? -1 : 0;
            sentiment.values[i] = score / words.length;
        }
        out.emit([sentiment]);
    }
}

export const { transform, snapshot, eventTime } = operator(Score);
