"""The PyTorch side of the GPU model benchmark (host/gpu/benches/executor.rs):
ResNet-18 (torchvision layout) and a MiniLM-L6-layout BERT encoder
(transformers), float32, eval mode, on the same GPU and batch sizes, each
call copying its batch host -> device and its output device -> host, as
Flumen's executor does per run. float32 throughout (TF32 off), as Flumen
computes; ResNet-18 is also timed with PyTorch's default (TF32 in cuDNN's
convolutions). Weights are random (speed does not depend
on them). Prints one JSON line per model.

    python3 benches/peers/torch_models.py --resnet-batch 32 --bert-batch 64 --seq 128 --runs 20
"""
import argparse
import json
import time

import torch


def timed(fn, runs):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resnet-batch", type=int, default=32)
    ap.add_argument("--bert-batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name(0)

    import torchvision

    resnet = torchvision.models.resnet18(weights=None).eval().to(dev)
    images = torch.randn(args.resnet_batch, 3, 224, 224).pin_memory()

    def run_resnet():
        with torch.inference_mode():
            return resnet(images.to(dev, non_blocking=True)).cpu()

    # Strict float32 first (what Flumen computes), then PyTorch's default,
    # which lets cuDNN use TF32 tensor cores for convolutions.
    for tf32, label in ((False, "float32"), (True, "default: TF32 convolutions")):
        torch.backends.cudnn.allow_tf32 = tf32
        t = timed(run_resnet, args.runs)
        print(json.dumps({"model": "resnet18", "engine": f"pytorch {torch.__version__} ({label})", "gpu": gpu,
                          "batch": args.resnet_batch, "median_s": t, "per_s": args.resnet_batch / t}), flush=True)
    torch.backends.cudnn.allow_tf32 = False

    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, attn_implementation="eager")
    bert = BertModel(config, add_pooling_layer=False).eval().to(dev)
    ids = torch.randint(1000, 29000, (args.bert_batch, args.seq)).pin_memory()
    mask = torch.ones_like(ids).pin_memory()

    def run_bert():
        with torch.inference_mode():
            out = bert(input_ids=ids.to(dev, non_blocking=True), attention_mask=mask.to(dev, non_blocking=True))
            return out.last_hidden_state.cpu()

    t = timed(run_bert, args.runs)
    print(json.dumps({"model": "minilm", "engine": f"pytorch {torch.__version__} (eager attention)", "gpu": gpu,
                      "batch": args.bert_batch, "seq": args.seq, "median_s": t, "per_s": args.bert_batch / t}),
          flush=True)
    bert_sdpa = BertModel(BertConfig(**{**config.to_dict(), "attn_implementation": "sdpa"}),
                          add_pooling_layer=False).eval().to(dev)

    def run_sdpa():
        with torch.inference_mode():
            out = bert_sdpa(input_ids=ids.to(dev, non_blocking=True), attention_mask=mask.to(dev, non_blocking=True))
            return out.last_hidden_state.cpu()

    t = timed(run_sdpa, args.runs)
    print(json.dumps({"model": "minilm", "engine": f"pytorch {torch.__version__} (sdpa attention)", "gpu": gpu,
                      "batch": args.bert_batch, "seq": args.seq, "median_s": t, "per_s": args.bert_batch / t}),
          flush=True)


if __name__ == "__main__":
    main()
