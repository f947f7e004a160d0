"""The sentence-transformers side of W7 (host/inference/benches/w7_text.rs):
`SentenceTransformer.encode` on texts read from a file, one per line, with
the all-MiniLM-L6-v2 architecture (BERT, 6 layers, 384 wide, mean pooling,
normalized) and the given tokenizer, on the CPU with a fixed thread count.
The weights are random unless a model directory is given (speed does not
depend on them). Prints one JSON line.

    python3 benches/peers/st_encode.py TEXTS TOKENIZER_JSON --batch 32 --threads 2 --runs 3
"""
import argparse
import json
import tempfile
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("texts")
    ap.add_argument("tokenizer")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    texts = [line.rstrip("\n") for line in open(args.texts, encoding="utf-8")]
    folder = tempfile.mkdtemp(prefix="st-minilm-")
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tok = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tok.save_pretrained(folder)
    word = models.Transformer(folder, max_seq_length=args.max_length)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
    st.encode(texts[: args.batch], batch_size=args.batch)
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        st.encode(texts, batch_size=args.batch)
        times.append(time.perf_counter() - t)
    times.sort()
    t = times[len(times) // 2]
    import sentence_transformers
    print(json.dumps({"engine": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
                      "threads": args.threads, "batch": args.batch, "texts": len(texts), "median_s": t,
                      "per_s": len(texts) / t}), flush=True)


if __name__ == "__main__":
    main()
