#!/usr/bin/env bash
# On a GPU machine, after the build: make a Llama-3-8B-shaped random bf16 checkpoint, measure HF
# transformers on it, then time lamina convert + build + load and bench decode and prefill.
#   LAMINA=build-device/tools/lamina/lamina OUT=/tmp/out bash scripts/bench/run_8b.sh
set -uo pipefail
LAMINA=${LAMINA:-build-device/tools/lamina/lamina}
OUT=${OUT:-/tmp/lamina-bench}
WORK=${WORK:-/tmp/lamina-8b}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1

if [ ! -f "$WORK/hf/config.json" ]; then
  python3 scripts/bench/make_random_llama.py --out "$WORK/hf" --json "$OUT/hf_baseline.json" ${HF_FLAGS:-}
fi
# Drop the page cache's advantage? We can't (no privileges needed for timing honesty here):
# the convert below reads files just written, as a user converting a fresh download would not.
if [[ "${SKIP_BF16:-0}" != 1 ]]; then
t0=$(date +%s.%N)
"$LAMINA" convert --model_dir "$WORK/hf" --output_dir "$WORK/ckpt" --dtype bfloat16
t1=$(date +%s.%N)
"$LAMINA" build --checkpoint_dir "$WORK/ckpt" --output_dir "$WORK/engine" --max_batch_size 8 \
  --max_input_len 2048 --max_seq_len 4096 --max_num_tokens 2048
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" "$OUT/convert_build.json" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
r = {"convert_s": t1 - t0, "build_s": t2 - t1, "total_s": t2 - t0}
print("convert+build:", r)
json.dump(r, open(sys.argv[4], "w"))
PY
rm -rf "$WORK/ckpt"
"$LAMINA" bench --engine_dir "$WORK/engine" --input_len 512 --output_len 256 --warmup 1 --runs 3 --json "$OUT/bench_decode.json"
"$LAMINA" bench --engine_dir "$WORK/engine" --input_len 2048 --output_len 2 --warmup 1 --runs 5 --skip_checksum --json "$OUT/bench_prefill.json"
fi  # SKIP_BF16
# Quantized engines (QUANTS="FP8 W4A16_AWQ W8A16"): convert + build each, then the same decode
# and prefill benchmarks. AB_QUANT="LAMINA_INT4_TILES=0": extra decode runs of each quantized
# engine, one per space-separated variant VAR=VALUE[,VAR=VALUE...], as bench_decode_<q>_<variant>.json.
# FP8: cuBLASLt's own log of errors (CUBLASLT_LOG_LEVEL=1) goes to $OUT/cublaslt_<q>.log, to see why
# it answers NOT_SUPPORTED for the batched FP8 GEMM (docs/quantization.md).
# A QUANTS entry "FP8+kvFP8" adds --kv_cache_quant_algo FP8 ("bf16+kvFP8": bf16 weights, FP8 KV cache);
# "W4A16_AWQ+lm_head" adds --quantize_lm_head.
# TRACE=1: one more decode run of each quantized engine under bench/kernel_trace.cpp (CUPTI), its
# kernel timeline summed up by scripts/bench/kernel_timeline.py into $OUT/timeline_<q>.txt.
trace_decode() {
  local so
  so=$(dirname "$LAMINA")/../../bench/libkernel_trace.so
  [[ -f "$so" ]] || { echo "no $so: build the kernel_trace target"; return; }
  CUDA_INJECTION64_PATH=$(realpath "$so") LAMINA_KERNEL_TRACE="$OUT/trace_$2.csv" "$LAMINA" bench --engine_dir "$1" \
    --input_len 512 --output_len 256 --warmup 0 --runs 1 --json "$OUT/bench_decode_$2_traced.json"
  python3 scripts/bench/kernel_timeline.py "$OUT/trace_$2.csv" --sequence >"$OUT/timeline_$2.txt" 2>&1
  cat "$OUT/timeline_$2.txt"
  gzip -f "$OUT/trace_$2.csv"
}
for q in ${QUANTS:-}; do
  export CUBLASLT_LOG_LEVEL=1 CUBLASLT_LOG_FILE="$OUT/cublaslt_$q.log"
  t0=$SECONDS
  weights=${q%%+*}
  flags=()
  [[ "$weights" != bf16 ]] && flags+=(--quant_algo "$weights")
  [[ "$q" == *+kvFP8* ]] && flags+=(--kv_cache_quant_algo FP8)
  [[ "$q" == *+lm_head* ]] && flags+=(--quantize_lm_head)
  "$LAMINA" convert --model_dir "$WORK/hf" --output_dir "$WORK/ckpt-$q" --dtype bfloat16 "${flags[@]}"
  "$LAMINA" build --checkpoint_dir "$WORK/ckpt-$q" --output_dir "$WORK/engine-$q" --max_batch_size 8 \
    --max_input_len 2048 --max_seq_len 4096 --max_num_tokens 2048
  echo "convert+build $q: $((SECONDS - t0)) s"
  rm -rf "$WORK/ckpt-$q"
  "$LAMINA" bench --engine_dir "$WORK/engine-$q" --input_len 512 --output_len 256 --warmup 1 --runs 3 --json "$OUT/bench_decode_$q.json"
  for kv in ${AB_QUANT:-}; do
    name=$(echo "$kv" | tr -c 'A-Za-z0-9_\n' '_')
    env $(echo "$kv" | tr , ' ') "$LAMINA" bench --engine_dir "$WORK/engine-$q" --input_len 512 --output_len 256 \
      --warmup 1 --runs 3 --json "$OUT/bench_decode_${q}_${name}.json"
  done
  "$LAMINA" bench --engine_dir "$WORK/engine-$q" --input_len 2048 --output_len 2 --warmup 1 --runs 3 --skip_checksum --json "$OUT/bench_prefill_$q.json"
  if [[ "${TRACE:-0}" == 1 ]]; then trace_decode "$WORK/engine-$q" "$q"; fi
  rm -rf "$WORK/engine-$q"
  unset CUBLASLT_LOG_LEVEL CUBLASLT_LOG_FILE
done
