#!/usr/bin/env bash
# On a machine with 2+ GPUs, after the build: the issue #8 check "tp 2 per-token latency <= 0.6x of
# tp 1" on a Llama-3-8B-shaped random bf16 checkpoint. Converts with --tp_size 1 and 2 (and
# TP_SIZES="1 2 4 8" for more), builds each, runs `lamina bench` decode and prefill for each, and
# prints ms_per_token of each tp against tp 1.
#   LAMINA=build-device/tools/lamina/lamina OUT=/tmp/out bash scripts/bench/run_8b_tp.sh
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0, docs/tensor-parallel.md); NCCL_DEBUG=WARN.
# AB_TP1="LAMINA_ATTN_DECODE=pipelined" / AB_TPN="LAMINA_CUSTOM_ALL_REDUCE=0": extra decode runs of
# tp 1 / tp > 1, one per space-separated variant VAR=VALUE[,VAR=VALUE...] (A/B of switches on the
# same engine), as bench_decode_tpN_<variant>.json.
set -uo pipefail
LAMINA=${LAMINA:-build-device/tools/lamina/lamina}
OUT=${OUT:-/tmp/lamina-bench-tp}
WORK=${WORK:-/tmp/lamina-8b}
TP_SIZES=${TP_SIZES:-1 2}
mkdir -p "$OUT" "$WORK"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} NCCL_DEBUG=${NCCL_DEBUG:-WARN}
nvidia-smi topo -m > "$OUT/topology.txt" 2>&1 || true

if [ ! -f "$WORK/hf/config.json" ]; then
  python3 scripts/bench/make_random_llama.py --out "$WORK/hf" --json "$OUT/hf_limits.json" --no_hf || exit 1
fi
for tp in $TP_SIZES; do
  t0=$SECONDS
  "$LAMINA" convert --model_dir "$WORK/hf" --output_dir "$WORK/ckpt-tp$tp" --dtype bfloat16 --tp_size "$tp" || exit 1
  "$LAMINA" build --checkpoint_dir "$WORK/ckpt-tp$tp" --output_dir "$WORK/engine-tp$tp" --max_batch_size 8 \
    --max_input_len 2048 --max_seq_len 4096 --max_num_tokens 2048 || exit 1
  echo "convert+build tp $tp: $((SECONDS - t0)) s"
  rm -rf "$WORK/ckpt-tp$tp"
  "$LAMINA" bench --engine_dir "$WORK/engine-tp$tp" --input_len 512 --output_len 256 --warmup 1 --runs 3 \
    --json "$OUT/bench_decode_tp$tp.json" || exit 1
  if [ "$tp" = 1 ]; then ab=${AB_TP1:-}; else ab=${AB_TPN:-}; fi
  for kv in $ab; do  # one variant: VAR=VALUE[,VAR=VALUE...]
    name=$(echo "$kv" | tr -c 'A-Za-z0-9_\n' '_')
    env $(echo "$kv" | tr , ' ') "$LAMINA" bench --engine_dir "$WORK/engine-tp$tp" --input_len 512 --output_len 256 \
      --warmup 1 --runs 3 --json "$OUT/bench_decode_tp${tp}_${name}.json" || exit 1
  done
  "$LAMINA" bench --engine_dir "$WORK/engine-tp$tp" --input_len 2048 --output_len 2 --warmup 1 --runs 3 \
    --skip_checksum --json "$OUT/bench_prefill_tp$tp.json" || exit 1
  rm -rf "$WORK/engine-tp$tp"
done
python3 - "$OUT" $TP_SIZES <<'PY'
import json, sys
out, sizes = sys.argv[1], sys.argv[2:]
def load(kind, tp):
    return json.load(open(f"{out}/bench_{kind}_tp{tp}.json"))
base = load("decode", "1")["ms_per_token"] if "1" in sizes else None
summary = {}
for tp in sizes:
    d, p = load("decode", tp), load("prefill", tp)
    r = {"ms_per_token": d["ms_per_token"], "ttft_ms_2048": p["ttft_ms"]}
    if base: r["vs_tp1"] = d["ms_per_token"] / base
    summary[tp] = r
    print(f"tp {tp}: {r['ms_per_token']:.3f} ms/token" + (f" ({r['vs_tp1']:.2f}x of tp 1; goal for tp 2: <= 0.6x)" if base else "")
          + f", prefill 2048 TTFT {r['ttft_ms_2048']:.1f} ms")
import glob, os
for f in sorted(glob.glob(f"{out}/bench_decode_tp*_*.json")):
    name = os.path.basename(f)[len("bench_decode_"):-len(".json")]
    ms = json.load(open(f))["ms_per_token"]
    summary[name] = {"ms_per_token": ms}
    print(f"{name}: {ms:.3f} ms/token" + (f" ({ms / base:.2f}x of tp 1)" if base else ""))
json.dump(summary, open(f"{out}/tp_summary.json", "w"), indent=1)
PY
