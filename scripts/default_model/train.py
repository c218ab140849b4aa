#!/usr/bin/env python3
"""Train Lamina's bundled default model, models/lamina-tiny-llama, from scratch.

One run does everything, in order:
  1. trains a byte-level BPE tokenizer (HF `tokenizers`) in the LLaMA 3 tokenizer.json layout:
     4096 BPE entries, then 256 LLaMA-3-style special tokens at 4096..4351;
  2. trains a tiny LLaMA 3 architecture model (HF transformers LlamaForCausalLM: GQA, RoPE with
     rope_type "llama3", SwiGLU, RMSNorm, tied embeddings like Llama 3.2) on the corpus made by
     prepare_data.sh, for a wall-clock budget, keeping the weights with the best validation loss;
  3. saves a normal HF checkpoint (bf16 model.safetensors, config.json, generation_config.json,
     tokenizer.json, tokenizer_config.json with the Llama 3 Instruct chat template);
  4. reloads it with transformers and measures the held-out perplexity on heldout.txt (fp32 and bf16)
     plus greedy generations with their token ids, into eval.json.

Run on a CUDA machine (python3 with torch, transformers 5, tokenizers, safetensors), from the repo root:
  scripts/default_model/prepare_data.sh          # once, on Debian 12 as root (makes data/corpus.jsonl.xz)
  PYTHONUNBUFFERED=1 python3 scripts/default_model/train.py --out models/lamina-tiny-llama
It replaces only the files it writes (OUTPUT_FILES); heldout.txt and MODEL_CARD.md stay.
The committed model came from `--out /tmp/lamina-tiny-llama --tar $OUT/model.tar` with the defaults
below, on one H100 (240 s of training); see models/lamina-tiny-llama/MODEL_CARD.md.

Held-out metric (what eval.json records, so other implementations can reproduce it):
  ids = tokenizer.encode(heldout.txt, no special tokens); cut into consecutive chunks of
  window-1 = 255 ids (the last one may be shorter); each chunk is scored as [BOS] + chunk, the
  model predicting every chunk token; mean NLL = sum of -log p over all chunk tokens / their count;
  perplexity = exp(mean NLL).
"""
import argparse
import inspect
import json
import lzma
import math
import os
import random
import shutil
import tarfile
import time
import traceback

T0 = time.time()
OUTPUT_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "eval.json", "train_log.json"]


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama 3 (8B) order: 128000 begin, 128001 end, 128002-128005 reserved 0-3, 128006 start_header,
# 128007 end_header, 128008 reserved 4, 128009 eot, 128010.. reserved 5..250 (256 in all).
SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>"]
            + [f"<|reserved_special_token_{i}|>" for i in range(0, 4)]
            + ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
            + [f"<|reserved_special_token_{i}|>" for i in range(5, 251)])
assert len(SPECIALS) == 256

# Meta-Llama-3-8B-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def train_tokenizer(texts, bpe_vocab, out_dir, model_max_length):
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers,
                            processors, trainers)
    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    n_bpe = tok.get_vocab_size(with_added_tokens=False)
    log(f"tokenizer: trained {n_bpe} BPE entries")
    if n_bpe != bpe_vocab:
        log(f"WARNING: wanted {bpe_vocab} BPE entries, got {n_bpe}; specials start at {n_bpe}")

    # Pin the model fields to the Llama 3 values (the trainer may reset some of them).
    j = json.loads(tok.to_str())
    j["model"].update({"dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                       "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                       "ignore_merges": True})
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False, lstrip=False, rstrip=False,
                                       single_word=False) for s in SPECIALS])
    bos = tok.token_to_id("<|begin_of_text|>")
    assert bos == n_bpe, (bos, n_bpe)
    # Like the later Llama 3 tokenizer.json: ByteLevel (offsets only) then TemplateProcessing adding BOS.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A:0",
            pair="<|begin_of_text|>:0 $A:0 <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"), pretty=True)

    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    cfg = {
        "added_tokens_decoder": {str(ids[s]): {"content": s, "lstrip": False, "normalized": False,
                                               "rstrip": False, "single_word": False, "special": True}
                                 for s in SPECIALS},
        "bos_token": "<|begin_of_text|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|end_of_text|>",
        "extra_special_tokens": {},
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")

    # Reload from disk and self-check.
    tok = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    for s in ["In the beginning God created the heaven and the earth.", "  two  spaces\n\n\tand tabs ",
              "Mr. Darcy's 1,234,567 pounds—“quoted”…", "한국어 텍스트 😀 ü"]:
        e = tok.encode(s)
        assert e.ids[0] == bos, e.ids[:3]
        assert tok.decode(e.ids, skip_special_tokens=True) == s, (s, tok.decode(e.ids))
    e = tok.encode("<|start_header_id|>user<|end_header_id|>", add_special_tokens=False)
    assert e.ids[0] == ids["<|start_header_id|>"] and e.ids[-1] == ids["<|end_header_id|>"], e.ids
    log("tokenizer: special ids", {k: ids[k] for k in SPECIALS[:10]},
        "last", SPECIALS[-1], ids[SPECIALS[-1]])
    return tok, ids


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def load_docs(path):
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def encode_docs(tok, texts, bos, eos):
    import numpy as np
    out = []
    for e in tok.encode_batch(texts, add_special_tokens=False):
        out.append(bos)
        out.extend(e.ids)
        out.append(eos)
    return np.asarray(out, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def make_config(a, vocab_size, bos, eos):
    from transformers import LlamaConfig
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": a.ctx}
    kw = dict(vocab_size=vocab_size, hidden_size=a.hidden, intermediate_size=a.intermediate,
              num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
              head_dim=a.hidden // a.heads, hidden_act="silu", max_position_embeddings=a.max_pos,
              initializer_range=0.02, rms_norm_eps=1e-5, use_cache=True, tie_word_embeddings=True,
              attention_bias=False, attention_dropout=0.0, mlp_bias=False,
              bos_token_id=bos, eos_token_id=eos, pad_token_id=None)
    params = inspect.signature(LlamaConfig.__init__).parameters
    if "rope_parameters" in params:                       # transformers 5
        kw["rope_parameters"] = dict(rope, rope_theta=a.rope_theta)
    else:                                                 # transformers 4
        kw["rope_scaling"] = rope
        kw["rope_theta"] = a.rope_theta
    return LlamaConfig(**kw)


def add_residual_dropout(model, p):
    """Dropout on each attention / MLP output before it joins the residual stream (training only)."""
    import torch.nn.functional as F

    def hook(mod, inp, out):
        if not mod.training or p <= 0:
            return out
        if isinstance(out, tuple):
            return (F.dropout(out[0], p, True),) + tuple(out[1:])
        return F.dropout(out, p, True)

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


def windows_nll(model, ids, window, bos, device, batch=64, dtype=None):
    """Sum of NLL and count over consecutive chunks of window-1 ids, each scored as [BOS]+chunk."""
    import torch
    import torch.nn.functional as F
    chunks = [ids[i:i + window - 1] for i in range(0, len(ids), window - 1)]
    chunks = [c for c in chunks if len(c) > 0]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(chunks), batch):
            group = chunks[i:i + batch]
            L = max(len(c) for c in group)
            x = torch.full((len(group), L + 1), bos, dtype=torch.long)
            y = torch.full((len(group), L), -100, dtype=torch.long)
            mask = torch.zeros((len(group), L + 1), dtype=torch.long)
            for r, c in enumerate(group):
                t = torch.as_tensor(list(c), dtype=torch.long)
                x[r, 1:1 + len(c)] = t
                y[r, :len(c)] = t
                mask[r, :1 + len(c)] = 1
            x, y, mask = x.to(device), y.to(device), mask.to(device)
            if dtype is None:
                logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits
            else:
                with torch.autocast("cuda", dtype=dtype):
                    logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits
            logits = logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                  ignore_index=-100, reduction="sum")
            total += nll.item()
            count += int((y != -100).sum().item())
    return total, count


def stream_loss(model, stream, ctx, starts, device, batch=128):
    """Mean NLL over windows stream[s : s+ctx+1] (no BOS added: the stream already holds them)."""
    import torch
    import torch.nn.functional as F
    model.eval()
    tot, n = 0.0, 0
    ar = torch.arange(ctx + 1, device=device)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(0, len(starts), batch):
            s = starts[i:i + batch]
            w = stream[s[:, None] + ar]
            logits = model(input_ids=w[:, :-1], use_cache=False).logits.float()
            tot += F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1),
                                   reduction="sum").item()
            n += w[:, 1:].numel()
    model.train()
    return tot / max(n, 1)


# ----------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    ap.add_argument("--data", default=os.path.join(here, "data/corpus.jsonl.xz"))
    ap.add_argument("--heldout", default=os.path.join(repo, "models/lamina-tiny-llama/heldout.txt"))
    ap.add_argument("--out", required=True, help="output checkpoint folder")
    ap.add_argument("--tar", default="", help="also pack the output folder into this .tar at the end")
    ap.add_argument("--bpe-vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--max-pos", type=int, default=2048)
    ap.add_argument("--rope-theta", type=float, default=500000.0)
    ap.add_argument("--ctx", type=int, default=256, help="training context; also rope original_max_position_embeddings")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--train-seconds", type=float, default=240.0)
    ap.add_argument("--deadline", type=float, default=470.0,
                    help="seconds since start by which everything must be done; training is shortened to fit")
    ap.add_argument("--eval-every", type=float, default=20.0, help="seconds between validation passes")
    ap.add_argument("--val-every-nth-doc", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-smoke", action="store_true", help="skip the export check before training")
    ap.add_argument("--max-bytes", type=int, default=12_000_000, help="size budget of the whole folder")
    a = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    import tokenizers
    log(f"torch {torch.__version__} transformers {transformers.__version__} tokenizers {tokenizers.__version__}"
        f" cuda {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}")
    device = "cuda"
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    # Replace only the files this script writes: --out may be models/lamina-tiny-llama itself, which
    # also holds heldout.txt and MODEL_CARD.md.
    os.makedirs(a.out, exist_ok=True)
    for fn in OUTPUT_FILES:
        if os.path.exists(os.path.join(a.out, fn)):
            os.remove(os.path.join(a.out, fn))
    summary = {"args": vars(a)}

    # ---- data + tokenizer
    docs = load_docs(a.data)
    train_docs = [d for i, d in enumerate(docs) if i % a.val_every_nth_doc != a.val_every_nth_doc // 2]
    val_docs = [d for i, d in enumerate(docs) if i % a.val_every_nth_doc == a.val_every_nth_doc // 2]
    with open(a.heldout, encoding="utf-8") as f:
        heldout_text = f.read()
    log(f"docs: {len(train_docs)} train, {len(val_docs)} val; heldout {len(heldout_text)} chars")
    tok, ids = train_tokenizer([d["text"] for d in train_docs], a.bpe_vocab, a.out, a.max_pos)
    bos, eos, eot = ids["<|begin_of_text|>"], ids["<|end_of_text|>"], ids["<|eot_id|>"]
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    train_ids = encode_docs(tok, [d["text"] for d in train_docs], bos, eos)
    val_ids = encode_docs(tok, [d["text"] for d in val_docs], bos, eos)
    heldout_ids = tok.encode(heldout_text, add_special_tokens=False).ids
    nbytes = sum(len(d["text"].encode("utf-8")) for d in train_docs)
    log(f"tokens: train {len(train_ids):,} ({nbytes / len(train_ids):.2f} bytes/token), "
        f"val {len(val_ids):,}, heldout {len(heldout_ids):,}; vocab {vocab_size}")
    summary["data"] = {"train_docs": len(train_docs), "val_docs": len(val_docs), "train_tokens": int(len(train_ids)),
                       "val_tokens": int(len(val_ids)), "heldout_tokens": len(heldout_ids),
                       "train_bytes_per_token": nbytes / len(train_ids)}

    # ---- model
    from transformers import GenerationConfig, LlamaForCausalLM
    config = make_config(a, vocab_size, bos, eos)
    model = LlamaForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters ({n_params * 2 / 1e6:.2f} MB in bf16); "
        f"attn {getattr(model.config, '_attn_implementation', '?')}; "
        f"rope_type {getattr(model.model.rotary_emb, 'rope_type', '?')}; config {config.to_dict()}")
    if n_params * 2 > a.max_bytes - 500_000:
        log("WARNING: bf16 weights leave less than 0.5 MB of the size budget for the other files")

    ctx = Ctx()
    ctx.tok, ctx.ids, ctx.bos, ctx.eos, ctx.eot, ctx.ctx = tok, ids, bos, eos, eot, a.ctx
    ctx.heldout_ids, ctx.train_ids, ctx.val_ids = heldout_ids, train_ids, val_ids
    if not a.skip_smoke:
        # Export + reload + evaluate + generate the untrained model first, strictly: an API mismatch
        # shows up here in seconds instead of after the training budget is spent.
        smoke = a.out.rstrip("/") + "-smoke"
        shutil.rmtree(smoke, ignore_errors=True)
        os.makedirs(smoke)
        for fn in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(a.out, fn), smoke)
        export_and_evaluate(model, smoke, ctx, strict=True)
        log("smoke export OK:", sorted(os.listdir(smoke)))
        shutil.rmtree(smoke, ignore_errors=True)
    add_residual_dropout(model, a.dropout)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)

    train_t = torch.as_tensor(train_ids, device=device)
    val_t = torch.as_tensor(val_ids, device=device)
    ar = torch.arange(a.ctx + 1, device=device)
    g = torch.Generator(device="cpu").manual_seed(1234)
    val_starts = torch.arange(0, len(val_ids) - a.ctx - 1, a.ctx, device=device)
    train_eval_starts = torch.randint(0, len(train_ids) - a.ctx - 1, (len(val_starts),), generator=g).to(device)

    budget = min(a.train_seconds, a.deadline - (time.time() - T0) - 90.0)
    log(f"training for {budget:.0f}s: batch {a.batch} x ctx {a.ctx}, lr {a.lr} -> {a.min_lr}, "
        f"dropout {a.dropout}, wd {a.wd}")
    history, best = [], {"val": float("inf")}
    best_state = None
    step, tokens_seen = 0, 0
    t_start = time.time()
    next_eval = t_start + a.eval_every
    model.train()
    loss_ema = None
    try:
        while True:
            elapsed = time.time() - t_start
            progress = min(elapsed / budget, 1.0)
            lr = a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * progress))
            lr *= min(1.0, (step + 1) / a.warmup)
            for grp in opt.param_groups:
                grp["lr"] = lr
            starts = torch.randint(0, len(train_ids) - a.ctx - 1, (a.batch,), device=device)
            w = train_t[starts[:, None] + ar]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=w[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits.float().reshape(-1, vocab_size), w[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens_seen += a.batch * a.ctx
            if step % 100 == 0:
                lv = loss.item()
                loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
            now = time.time()
            done = now - t_start >= budget
            if now >= next_eval or done:
                next_eval = now + a.eval_every
                v = stream_loss(model, val_t, a.ctx, val_starts, device)
                tr = stream_loss(model, train_t, a.ctx, train_eval_starts, device)
                rec = {"step": step, "seconds": round(now - t_start, 1), "tokens": tokens_seen,
                       "epochs": round(tokens_seen / len(train_ids), 2), "lr": lr,
                       "train_loss": round(tr, 4), "val_loss": round(v, 4)}
                history.append(rec)
                if v < best["val"]:
                    best = dict(rec, val=v)
                    best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                log(f"step {step:6d} ep {rec['epochs']:6.2f} lr {lr:.2e} train(ema) {loss_ema} "
                    f"train {tr:.4f} val {v:.4f} (ppl {math.exp(v):.2f}) best@{best.get('step')}")
            if done:
                break
    except Exception:
        log("TRAINING STOPPED BY AN ERROR (exporting the best weights so far):")
        traceback.print_exc()
    train_secs = time.time() - t_start
    log(f"trained {step} steps, {tokens_seen:,} tokens in {train_secs:.0f}s "
        f"({tokens_seen / max(train_secs, 1e-9):,.0f} tok/s); best val {best['val']:.4f} at step {best.get('step')}")
    summary["training"] = {"steps": step, "tokens": tokens_seen, "seconds": round(train_secs, 1),
                           "tokens_per_second": round(tokens_seen / max(train_secs, 1e-9)),
                           "best": {k: v for k, v in best.items() if k != "val"}, "history": history,
                           "device": torch.cuda.get_device_name(0)}

    # ---- export the best weights, then measure them through transformers
    if best_state is not None:
        model.load_state_dict(best_state)
    del opt, best_state
    evaluation = export_and_evaluate(model, a.out, ctx, strict=False)
    evaluation["training"] = {k: v for k, v in summary["training"].items() if k != "history"}
    evaluation["data"] = summary["data"]
    finish(a, evaluation, summary)
    if a.tar:
        with tarfile.open(a.tar, "w") as tf:
            for fn in OUTPUT_FILES:
                if os.path.exists(os.path.join(a.out, fn)):
                    tf.add(os.path.join(a.out, fn), arcname=fn)
        log("packed", a.tar)
    log("done")


class Ctx:
    """What the export and evaluation steps need besides the model."""


def export_and_evaluate(model, out_dir, c, strict):
    """Save `model` as a bf16 HF checkpoint into out_dir (which already holds the tokenizer files),
    reload it with transformers, and evaluate. strict=True raises on the first failure (used for the
    pre-training smoke test); strict=False prints the error and goes on, so a late failure never loses
    the trained weights."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import GenerationConfig
    device = "cuda"
    ev = {"heldout_file": "heldout.txt", "window": c.ctx,
          "metric": "chunks of window-1 ids from tokenizer.encode(heldout.txt, no specials), each scored "
                    "as [BOS]+chunk; mean NLL over all chunk tokens; ppl = exp(mean NLL)",
          "heldout_tokens": len(c.heldout_ids),
          "special_token_ids": {s: c.ids[s] for s in SPECIALS[:10]}}

    def guarded(name, fn):
        if strict:
            return fn()
        try:
            return fn()
        except Exception:
            log(f"EXPORT STEP FAILED: {name}")
            traceback.print_exc()
            return None

    def save_model():
        import copy
        m16 = copy.deepcopy(model).eval().to(torch.bfloat16)
        m16.generation_config = GenerationConfig(bos_token_id=c.bos, eos_token_id=[c.eos, c.eot],
                                                 do_sample=True, temperature=0.6, top_p=0.9)
        m16.save_pretrained(out_dir, safe_serialization=True)
        del m16
        with open(os.path.join(out_dir, "config.json")) as f:
            log("saved:", sorted(os.listdir(out_dir)), "config.json:", f.read())

    guarded("save_model", save_model)
    torch.cuda.empty_cache()

    def hf_eval():
        from transformers import AutoModelForCausalLM
        try:
            m = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
        except TypeError:
            m = AutoModelForCausalLM.from_pretrained(out_dir, torch_dtype=torch.float32)
        m = m.to(device).eval()
        rp = getattr(m.config, "rope_parameters", None) or getattr(m.config, "rope_scaling", None)
        rot = getattr(m.model, "rotary_emb", None)
        log("reloaded with transformers:", type(m).__name__, "rope:", rp,
            "rotary rope_type:", getattr(rot, "rope_type", "?"),
            "attn:", getattr(m.config, "_attn_implementation", "?"),
            "tied:", m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr())
        res = {}
        for label, dt in [("fp32", None), ("bf16_autocast", torch.bfloat16)]:
            s, n = windows_nll(m, c.heldout_ids, c.ctx, c.bos, device, dtype=dt)
            res[label] = {"nll_sum": s, "tokens": n, "mean_nll": s / n, "ppl": math.exp(s / n)}
            log(f"heldout ({label}): mean NLL {s / n:.4f}, ppl {math.exp(s / n):.3f} over {n} tokens")
        ev["heldout"] = res
        # Train / val loss of the exported weights, fp32.
        trs = torch.randint(0, len(c.train_ids) - c.ctx - 1, (256,), generator=torch.Generator().manual_seed(7))
        chunks = [c.train_ids[s:s + c.ctx + 1] for s in trs.tolist()]
        tot, cnt = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(chunks), 64):
                w = torch.as_tensor(np.stack(chunks[i:i + 64])).to(device)
                lg = m(input_ids=w[:, :-1], use_cache=False).logits.float()
                tot += F.cross_entropy(lg.reshape(-1, lg.size(-1)), w[:, 1:].reshape(-1), reduction="sum").item()
                cnt += w[:, 1:].numel()
        ev["train_sample"] = {"what": "256 random windows of ctx+1 tokens from the training stream (seed 7)",
                              "mean_nll": tot / cnt, "ppl": math.exp(tot / cnt)}
        vs, vn = windows_nll(m, c.val_ids.tolist(), c.ctx, c.bos, device)
        ev["val_docs"] = {"what": "corpus documents kept out of training (every 50th), same metric as heldout",
                          "mean_nll": vs / vn, "ppl": math.exp(vs / vn), "tokens": vn}
        log(f"train sample loss {tot / cnt:.4f} (ppl {math.exp(tot / cnt):.2f}); val docs {vs / vn:.4f} "
            f"(ppl {math.exp(vs / vn):.2f})")
        return m

    m = guarded("hf_eval", hf_eval)

    def hf_tokenizer_checks():
        from transformers import AutoTokenizer
        t = AutoTokenizer.from_pretrained(out_dir)
        msgs = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "  Who made the heaven and the earth?  "}]
        text = t.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        cids = t(text, add_special_tokens=False)["input_ids"]
        ev["chat_template_check"] = {"messages": msgs, "add_generation_prompt": True, "text": text, "ids": cids}
        ev["tokenizer_class"] = type(t).__name__
        plain = t("In the beginning")["input_ids"]
        assert plain[0] == c.bos, plain
        log("transformers tokenizer:", type(t).__name__, "chat template:", repr(text), "ids:", cids)

    guarded("hf_tokenizer_checks", hf_tokenizer_checks)

    def generate():
        prompts = ["In the beginning God created", "And the LORD said unto Moses,",
                   "It is a truth universally acknowledged", "Emma Woodhouse, handsome, clever, and rich,",
                   "The king said"]
        out = []
        for p in prompts:
            pid = c.tok.encode(p).ids                     # [BOS] + prompt
            x = torch.tensor([pid], device=device)
            with torch.no_grad():
                r = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=48, do_sample=False,
                               output_scores=True, return_dict_in_generate=True, eos_token_id=[c.eos, c.eot],
                               pad_token_id=c.eos)
            new = r.sequences[0, len(pid):].tolist()
            margins = []
            for sc in r.scores:
                top2 = torch.topk(sc[0].float(), 2).values
                margins.append(round(float(top2[0] - top2[1]), 4))
            text = c.tok.decode(new, skip_special_tokens=False)
            out.append({"prompt": p, "prompt_ids": pid, "output_ids": new, "text": text,
                        "top2_logit_margins": margins})
            log(f"greedy | {p}{text!r}")
        ev["greedy_fp32"] = {"note": "transformers generate, do_sample=False, fp32 compute on the bf16 weights, "
                                     "prompt ids = [BOS] + encode(prompt)", "samples": out}
        torch.manual_seed(0)
        x = torch.tensor([[c.bos]], device=device)
        with torch.no_grad():
            r = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=120, do_sample=True,
                           temperature=0.8, top_k=40, eos_token_id=[c.eos, c.eot], pad_token_id=c.eos)
        text = c.tok.decode(r[0, 1:].tolist(), skip_special_tokens=False)
        ev["sampled_from_bos"] = {"seed": 0, "temperature": 0.8, "top_k": 40, "max_new_tokens": 120, "text": text}
        log(f"sampled from BOS: {text!r}")

    if m is not None:
        guarded("generate", generate)
    del m
    torch.cuda.empty_cache()
    return ev


def finish(a, evaluation, summary):
    try:
        with open(os.path.join(a.out, "eval.json"), "w", encoding="utf-8") as f:
            json.dump(evaluation, f, indent=2, ensure_ascii=False)
            f.write("\n")
        with open(os.path.join(a.out, "train_log.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, ensure_ascii=False)
            f.write("\n")
        total = 0
        for fn in sorted(os.listdir(a.out)):
            sz = os.path.getsize(os.path.join(a.out, fn))
            total += sz
            log(f"  {fn:28s} {sz:>10,d}")
        log(f"  total {total:,} bytes (budget {a.max_bytes:,} with heldout.txt and MODEL_CARD.md)")
    except Exception:
        traceback.print_exc()


if __name__ == "__main__":
    main()
