#!/usr/bin/env python3
"""Writes a Llama-3-8B- (or 70B-) shaped HF checkpoint with random bf16 weights (speed does not
depend on the values), and measures HF transformers on it in the same process, for side-by-side
figures.

    python3 scripts/bench/make_random_llama.py --out /tmp/llama8b --json hf.json [--no_hf]
    python3 scripts/bench/make_random_llama.py --shape llama3-70b --out /tmp/llama70b --json l.json --stream

With --stream (implies --no_hf) no model is built: the shards are written tensor by tensor
(N(0, 0.02) matrices, norm weights 1), so a 141 GB 70B checkpoint needs one 5 GB shard of host
memory at a time.

Also measures the device's copy bandwidth and bf16 matmul rate: the two physical limits that
docs/performance.md compares Lamina against.
"""
import argparse
import json
import math
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llama_shapes import SHAPES, tensor_shapes


def write_random_shards(c, out, shard_bytes=5 << 30):
    """Writes config.json, the safetensors shards and their index without building a model."""
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    LlamaConfig(**c).save_pretrained(out)
    cfg_path = os.path.join(out, "config.json")
    cfg = json.load(open(cfg_path))
    if "dtype" not in cfg and "torch_dtype" not in cfg:
        cfg["dtype"] = "bfloat16"
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    shards, cur, size = [], [], 0
    for name, shape in tensor_shapes(c):
        n = 2 * math.prod(shape)
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += n
    shards.append(cur)
    weight_map, total = {}, 0
    gen = torch.Generator(device="cuda").manual_seed(0)
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard:
            if len(shape) == 1:
                t = torch.ones(shape, dtype=torch.bfloat16)
            else:
                t = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen) * 0.02).cpu()
            tensors[name] = t
            weight_map[name] = fname
            total += t.numel() * 2
        save_file(tensors, os.path.join(out, fname), metadata={"format": "pt"})
        print(f"wrote {fname} ({len(shard)} tensors)", flush=True)
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=1)
    return sum(math.prod(s) for _, s in tensor_shapes(c))


def timed(fn, reps):
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def device_limits():
    n = 1 << 30  # 2 GiB of bf16 per buffer: far past L2
    a = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    t = timed(lambda: b.copy_(a), 10)
    bandwidth = 2 * a.numel() * 2 / t  # bytes read + written
    del a, b
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t = timed(lambda: m @ k, 10)
    return {"copy_bandwidth_GBps": bandwidth / 1e9, "bf16_matmul_TFLOPs": 2 * 8192 ** 3 / t / 1e12}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--json", required=True)
    ap.add_argument("--no_hf", action="store_true", help="skip the transformers measurements")
    ap.add_argument("--stream", action="store_true",
                    help="write the shards tensor by tensor, without building a model (implies --no_hf)")
    args = ap.parse_args()
    result = {"device": torch.cuda.get_device_name(), **device_limits()}
    print("limits:", result, flush=True)

    if args.stream:
        t0 = time.time()
        result["params"] = write_random_shards(SHAPES[args.shape], args.out)
        print(f"wrote {result['params'] / 1e9:.2f}B params to {args.out} in {time.time() - t0:.1f}s", flush=True)
        json.dump(result, open(args.json, "w"), indent=1)
        return

    cfg = LlamaConfig(**SHAPES[args.shape])
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.eval()
    result["params"] = sum(p.numel() for p in model.parameters())
    print(f"made {result['params'] / 1e9:.2f}B params in {time.time() - t0:.1f}s", flush=True)
    t0 = time.time()
    model.save_pretrained(args.out, max_shard_size="5GB")
    print(f"saved to {args.out} in {time.time() - t0:.1f}s", flush=True)

    if not args.no_hf:
        with torch.no_grad():
            ids = torch.randint(0, cfg.vocab_size, (1, 2048), device="cuda")
            t = timed(lambda: model(ids, logits_to_keep=1), 3)
            result["hf_prefill_2048_tok_per_s"] = 2048 / t
            prompt = ids[:, :512]
            gen = lambda n: model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            gen(4)
            t256 = timed(lambda: gen(256), 1)
            t1 = timed(lambda: gen(1), 1)
            result["hf_decode_ms_per_token"] = (t256 - t1) / 255 * 1e3
            result["hf_decode_tok_per_s"] = 255 / (t256 - t1)
    print("result:", result, flush=True)
    json.dump(result, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
