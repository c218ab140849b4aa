#!/usr/bin/env bash
# On a machine with 2+ GPUs, after the build: tensor-parallel decode and prefill against tp 1 and
# against the bound of issue #8. A random bf16 checkpoint of SHAPE (llama3-8b, default, or
# llama3-70b) is converted with each --tp_size of TP_SIZES, built, and run with `lamina bench`
# (decode: 512 in, 256 out; prefill: 2048). Prints each tp's ms/token against tp 1 (when
# TP_SIZES holds 1) and against the bound
#   bytes per GPU per token / copy bandwidth + 2 x layers x (measured all-reduce of one token)
# with the all-reduce time from bench_all_reduce (build-device/bench/bench_all_reduce).
#   LAMINA=build-device/tools/lamina/lamina OUT=/tmp/out bash scripts/bench/run_tp.sh
#   SHAPE=llama3-70b TP_SIZES=4 bash scripts/bench/run_tp.sh        # 141 GB: 4x H200
# The 70B files (141 GB each) are placed so that no disk or RAM holds more than one copy at a time
# (a 4x H200 machine: 235 GB disk, /dev/shm half of 512 GB): the HF checkpoint in WORK on disk, the
# converted checkpoint in RAMDIR (default /dev/shm), the HF files deleted once converted, then
# the engine in WORK. One tp size a run for 70B (the HF files are gone after its convert).
# A 70B run cut off by a time limit goes on from its last finished stage when run again on the
# same machine: a built engine, else a converted checkpoint, else a complete HF checkpoint (one
# with its index, written last), else it starts over.
# AB_TP1="LAMINA_ATTN_DECODE=pipelined" / AB_TPN="LAMINA_CUSTOM_ALL_REDUCE=0": extra decode runs of
# tp 1 / tp > 1, one per space-separated variant VAR=VALUE[,VAR=VALUE...] (A/B of switches on the
# same engine), as bench_decode_tpN_<variant>.json.
# TRACE=1: one more decode run of each tp under bench/kernel_trace.cpp (CUPTI; build the
# kernel_trace target), its timeline summed up per GPU by scripts/bench/kernel_timeline.py into
# $OUT/timeline_tpN_gpuG.txt, the trace kept as $OUT/trace_tpN.csv.gz; TRACE_AB_TPN (variants as
# AB_TPN's) adds a traced run of tp > 1 for each, as timeline_tpN_<variant>_gpuG.txt.
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0, docs/tensor-parallel.md); NCCL_DEBUG=WARN.
set -uo pipefail
LAMINA=${LAMINA:-build-device/tools/lamina/lamina}
SHAPE=${SHAPE:-llama3-8b}
OUT=${OUT:-/tmp/lamina-bench-tp}
WORK=${WORK:-/tmp/lamina-${SHAPE#llama3-}}  # /tmp/lamina-8b is shared with run_8b*.sh
TP_SIZES=${TP_SIZES:-1 2}
mkdir -p "$OUT" "$WORK"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} NCCL_DEBUG=${NCCL_DEBUG:-WARN}
nvidia-smi topo -m > "$OUT/topology.txt" 2>&1 || true
df -h "$WORK" /dev/shm > "$OUT/disk.txt" 2>&1 || true

ALLREDUCE=${ALLREDUCE:-$(dirname "$LAMINA")/../../bench/bench_all_reduce}
if [ -x "$ALLREDUCE" ]; then
  "$ALLREDUCE" --json "$OUT/all_reduce.json" > "$OUT/all_reduce.txt" 2>&1 || echo "bench_all_reduce failed"
  cat "$OUT/all_reduce.txt"
fi

trace_decode() {  # engine dir, tp[, variant VAR=VALUE[,VAR=VALUE...] traced instead of the default]
  local so name=tp$2 kv=${3:-}
  so=$(dirname "$LAMINA")/../../bench/libkernel_trace.so
  [ -f "$so" ] || { echo "no $so: build the kernel_trace target"; return; }
  [ -n "$kv" ] && name=tp$2_$(echo "$kv" | tr -c 'A-Za-z0-9_\n' '_')
  env $(echo "$kv" | tr , ' ') CUDA_INJECTION64_PATH=$(realpath "$so") LAMINA_KERNEL_TRACE="$OUT/trace_$name.csv" \
    "$LAMINA" bench --engine_dir "$1" --input_len 512 --output_len 256 --warmup 0 --runs 1 --json "$OUT/traced_$name.json"
  for ((g = 0; g < $2; g++)); do
    python3 scripts/bench/kernel_timeline.py "$OUT/trace_$name.csv" --device "$g" --sequence >"$OUT/timeline_${name}_gpu$g.txt" 2>&1
  done
  gzip -f "$OUT/trace_$name.csv"
}

SRC=$WORK CKPT=$WORK
if [ "$SHAPE" = llama3-70b ]; then
  set -- $TP_SIZES
  if [ $# -ne 1 ]; then echo "SHAPE=llama3-70b takes one tp size a run (TP_SIZES=4)"; exit 1; fi
  RAMDIR=${RAMDIR:-/dev/shm/lamina-$SHAPE}
  avail=$(df --output=avail -B1G "$(dirname "$RAMDIR")" 2>/dev/null | tail -1 | tr -d ' ')
  disk=$(df --output=avail -B1G "$WORK" 2>/dev/null | tail -1 | tr -d ' ')
  echo "free: $(dirname "$RAMDIR") ${avail:-?} GB, $WORK ${disk:-?} GB (the 70B needs ~145 GB in each)"
  if [ "${avail:-0}" -ge 145 ]; then CKPT=$RAMDIR; mkdir -p "$CKPT"; else
    echo "note: $(dirname "$RAMDIR") has < 145 GB free; the converted checkpoint goes to $WORK too"
  fi
fi
# Stages already done (a resumed 70B run): a built engine or a converted checkpoint of some tp.
later_stage_done() { ls "$WORK"/engine-tp*/config.json "$CKPT"/ckpt-tp*/config.json >/dev/null 2>&1; }
if [ ! -f "$SRC/hf/model.safetensors.index.json" ] && ! later_stage_done; then
  stream=""; [ "$SHAPE" = llama3-70b ] && stream=--stream
  python3 scripts/bench/make_random_llama.py --shape "$SHAPE" --out "$SRC/hf" --json "$WORK/hf_limits.json" --no_hf $stream \
    || exit 1
fi
cp "$WORK/hf_limits.json" "$OUT/" 2>/dev/null || true  # kept in WORK for a resumed run
for tp in $TP_SIZES; do
  t0=$SECONDS
  if [ ! -f "$WORK/engine-tp$tp/config.json" ]; then
    if [ ! -f "$CKPT/ckpt-tp$tp/config.json" ]; then
      "$LAMINA" convert --model_dir "$SRC/hf" --output_dir "$CKPT/ckpt-tp$tp" --dtype bfloat16 --tp_size "$tp" || exit 1
      echo "convert tp $tp: $((SECONDS - t0)) s"
    fi
    if [ "$SHAPE" = llama3-70b ]; then rm -rf "$SRC/hf"; fi  # room on the disk for the engine
    "$LAMINA" build --checkpoint_dir "$CKPT/ckpt-tp$tp" --output_dir "$WORK/engine-tp$tp" --max_batch_size 8 \
      --max_input_len 2048 --max_seq_len 4096 --max_num_tokens 2048 || exit 1
    echo "convert+build tp $tp: $((SECONDS - t0)) s"
    rm -rf "$CKPT/ckpt-tp$tp"
  fi
  "$LAMINA" bench --engine_dir "$WORK/engine-tp$tp" --input_len 512 --output_len 256 --warmup 1 --runs 3 \
    --json "$OUT/bench_decode_tp$tp.json" || exit 1
  if [ "$tp" = 1 ]; then ab=${AB_TP1:-}; else ab=${AB_TPN:-}; fi
  for kv in $ab; do  # one variant: VAR=VALUE[,VAR=VALUE...]
    name=$(echo "$kv" | tr -c 'A-Za-z0-9_\n' '_')
    env $(echo "$kv" | tr , ' ') "$LAMINA" bench --engine_dir "$WORK/engine-tp$tp" --input_len 512 --output_len 256 \
      --warmup 1 --runs 3 --json "$OUT/bench_decode_tp${tp}_${name}.json" || exit 1
  done
  if [ "${TRACE:-0}" = 1 ]; then
    trace_decode "$WORK/engine-tp$tp" "$tp"
    if [ "$tp" != 1 ]; then for kv in ${TRACE_AB_TPN:-}; do trace_decode "$WORK/engine-tp$tp" "$tp" "$kv"; done; fi
  fi
  "$LAMINA" bench --engine_dir "$WORK/engine-tp$tp" --input_len 2048 --output_len 2 --warmup 1 --runs 3 \
    --skip_checksum --json "$OUT/bench_prefill_tp$tp.json" || exit 1
  rm -rf "$WORK/engine-tp$tp"
done
python3 - "$OUT" "$SHAPE" $TP_SIZES <<'PY'
import glob, json, math, os, sys
sys.path.insert(0, "scripts/bench")
from llama_shapes import SHAPES, tensor_shapes
out, shape, sizes = sys.argv[1], sys.argv[2], sys.argv[3:]
c = SHAPES[shape]
def load(kind, tp):
    return json.load(open(f"{out}/bench_{kind}_tp{tp}.json"))
limits = json.load(open(f"{out}/hf_limits.json")) if os.path.exists(f"{out}/hf_limits.json") else {}
bw = limits.get("copy_bandwidth_GBps")
ar = json.load(open(f"{out}/all_reduce.json")) if os.path.exists(f"{out}/all_reduce.json") else []
# Bytes a decode token reads on each GPU: every matrix but the embedding (one row), split over tp.
params = sum(math.prod(s) for _, s in tensor_shapes(c))
emb = c["vocab_size"] * c["hidden_size"]
base = load("decode", "1")["ms_per_token"] if "1" in sizes else None
summary = {}
for tp in sizes:
    d, p = load("decode", tp), load("prefill", tp)
    r = {"ms_per_token": d["ms_per_token"], "ttft_ms_2048": p["ttft_ms"]}
    line = f"tp {tp}: {r['ms_per_token']:.3f} ms/token"
    if base:
        r["vs_tp1"] = d["ms_per_token"] / base
        line += f" ({r['vs_tp1']:.2f}x of tp 1; goal for tp 2: <= 0.6x)"
    t_ar = [a["engine_us"] for a in ar if a["ranks"] == int(tp) and a["elements"] == c["hidden_size"]]
    if bw and (int(tp) == 1 or t_ar):
        bytes_gpu = (params - emb) * 2 / int(tp)
        bound_ms = bytes_gpu / (bw * 1e9) * 1e3 + (2 * c["num_hidden_layers"] * t_ar[0] / 1e3 if t_ar else 0.0)
        r.update(bytes_per_gpu=bytes_gpu, bound_ms=bound_ms, vs_bound=d["ms_per_token"] / bound_ms)
        line += f"; bound {bound_ms:.3f} ms ({bytes_gpu / 1e9:.2f} GB/GPU at {bw:.0f} GB/s"
        line += (f" + {2 * c['num_hidden_layers']} all-reduces of {t_ar[0]:.1f} us)" if t_ar else ")")
        line += f", {r['vs_bound']:.2f}x of it (goal for 70B at tp 4: <= 1.25x)"
    summary[tp] = r
    print(line + f", prefill 2048 TTFT {r['ttft_ms_2048']:.1f} ms")
for f in sorted(glob.glob(f"{out}/bench_decode_tp*_*.json")):
    name = os.path.basename(f)[len("bench_decode_"):-len(".json")]
    ms = json.load(open(f))["ms_per_token"]
    summary[name] = {"ms_per_token": ms}
    print(f"{name}: {ms:.3f} ms/token" + (f" ({ms / base:.2f}x of tp 1)" if base else ""))
json.dump(summary, open(f"{out}/tp_summary.json", "w"), indent=1)
PY
