#!/usr/bin/env bash
# Offline serving (engine + scheduler in-process, ISL/OSL 128/128, 1024 requests at concurrency
# 1024) of a random Llama-3-8B-shaped engine per QUANTS entry, each run once per AB variant in
# turn, REPS rounds, on one GPU, from the repository root:
#   OUT=$OUT QUANTS="FP8+kvFP8 bf16" AB="LAMINA_ATTN_MMA_WARPS=4 LAMINA_ATTN_MMA_WARPS=2" bash scripts/bench/serving_ab_round.sh
# A QUANTS entry is a weight format (bf16, FP8, ...) with "+kvFP8" for an FP8 KV cache; an AB
# variant is VAR=VALUE[,VAR=VALUE...] ("-" for none), where an item starting with "--" is passed
# to bench_serving instead (e.g. --disable_overlap_scheduler). Builds lamina first (scripts/device-check.sh).
# Prints and keeps $OUT/serving_ab.txt (output tok/s of each run); JSON files in $OUT.
# TRACE=1 adds one run per QUANTS entry under bench/kernel_trace.cpp (CUPTI) and sums up how long
# the GPU sat idle and between which kernels (scripts/bench/gpu_idle.py) into $OUT/idle_<entry>.txt.
# POWER=1 samples the GPU's SM clock, power and throttle reasons every 100 ms during each (untraced)
# run and prints their summary after its tok/s (scripts/bench/power_summary.py): whether the card
# sat at its power limit.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
targets=lamina; [[ "${TRACE:-0}" == 1 ]] && targets="lamina kernel_trace"
OUT=$OUT/build TARGETS="$targets" TESTS= BENCHES= BUILD_ONLY=1 bash scripts/device-check.sh >/dev/null 2>&1
L=build-device/tools/lamina/lamina
W=${WORK:-/tmp/lamina-8b}
load=(--engine_dir "$W/engine" --skip_checksum --concurrency 1024 --num_requests 1024 --isl 128 --osl 128
  --vocab_size 128000)  # every run's load, traced or not
[ -f "$W/hf/config.json" ] || python3 scripts/bench/make_random_llama.py --out "$W/hf" --json "$OUT/limits.json" \
  --no_hf >"$OUT/hf.log" 2>&1
for q in ${QUANTS:-FP8+kvFP8}; do
  w=${q%%+*}; kv=""; [[ "$q" == *+kvFP8 ]] && kv="--kv_cache_quant_algo FP8"
  quant=""; [[ "$w" != bf16 ]] && quant="--quant_algo $w"
  rm -rf "$W/ckpt" "$W/engine"
  "$L" convert --model_dir "$W/hf" --output_dir "$W/ckpt" --dtype bfloat16 $quant $kv >"$OUT/convert_$q.log" 2>&1
  "$L" build --checkpoint_dir "$W/ckpt" --output_dir "$W/engine" --max_batch_size 1024 --max_input_len 256 \
    --max_seq_len 512 --max_num_tokens ${MAX_NUM_TOKENS:-8192} >"$OUT/build_$q.log" 2>&1 || { echo "$q: build failed"; continue; }
  for ((rep = 0; rep < ${REPS:-2}; rep++)); do
    for v in ${AB:--}; do
      name=$(echo "$q $v" | tr -c 'A-Za-z0-9_\n' '_')
      vars=(); args=()
      if [[ "$v" != - ]]; then
        for item in ${v//,/ }; do if [[ "$item" == --* ]]; then args+=("$item"); else vars+=("$item"); fi; done
      fi
      smi=""
      if [[ "${POWER:-0}" == 1 ]]; then
        nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,power.limit,clocks_throttle_reasons.active \
          --format=csv,noheader -lms 100 >"$OUT/power_${name}_$rep.csv" 2>/dev/null &
        smi=$!
      fi
      env "${vars[@]}" "$L" bench_serving "${args[@]}" "${load[@]}" \
        --json "$OUT/offline_${name}_$rep.json" >"$OUT/offline_${name}_$rep.log" 2>&1
      if [[ -n "$smi" ]]; then kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null; fi
      tps=$(python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["output_token_throughput"])' \
        "$OUT/offline_${name}_$rep.json" 2>/dev/null || echo "FAILED: $(tail -2 "$OUT/offline_${name}_$rep.log")")
      echo "$q $v: $tps output tok/s" | tee -a "$OUT/serving_ab.txt"
      if [[ -n "$smi" ]]; then
        python3 scripts/bench/power_summary.py "$OUT/power_${name}_$rep.csv" | sed 's/^/  /' | tee -a "$OUT/serving_ab.txt"
      fi
    done
  done
  if [[ "${TRACE:-0}" == 1 ]]; then
    name=$(echo "$q" | tr -c 'A-Za-z0-9_\n' '_')
    so=$(realpath build-device/bench/libkernel_trace.so)
    CUDA_INJECTION64_PATH=$so LAMINA_KERNEL_TRACE="$OUT/trace_$name.csv" "$L" bench_serving "${load[@]}" \
      --json "$OUT/traced_$name.json" >"$OUT/traced_$name.log" 2>&1
    # The timed run alone: the trace's last `duration` seconds (the load and warm-up come before).
    run_s=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["duration_s"])' "$OUT/traced_$name.json" \
      2>/dev/null || echo 0)
    { tail -1 "$OUT/traced_$name.log"; python3 scripts/bench/gpu_idle.py "$OUT/trace_$name.csv" --last_s "$run_s"; } \
      >"$OUT/idle_$name.txt" 2>&1
    echo "$q traced:"; cat "$OUT/idle_$name.txt"
    gzip -f "$OUT/trace_$name.csv"
  fi
done
