#!/usr/bin/env bash
# Every kernel of a short batch-1 run (prefill of 512 tokens, then a few one-token steps) under
# Nsight Compute: its name, grid, duration, DRAM bytes, registers and shared memory (with the
# L1/shared split the driver configured for it), one CSV row each, to see where a decode
# step's time goes kernel by kernel (ncu runs kernels one at a time, so PDL overlap is gone and
# each kernel's ramp and tail show in full). Needs ncu and a build in build-device.
#   OUT=/tmp/out QUANTS="FP8 W4A16_AWQ" bash scripts/bench/ncu_decode_step.sh
# Makes the 8B-shaped random checkpoint like run_8b.sh when $WORK/hf is missing.
set -uo pipefail
cd "$(dirname "$0")/../.."
LAMINA=${LAMINA:-$PWD/build-device/tools/lamina/lamina}
OUT=${OUT:-/tmp/out}
WORK=${WORK:-/tmp/lamina-8b}
mkdir -p "$OUT" "$WORK"
[[ -f "$WORK/hf/config.json" ]] || python3 scripts/bench/make_random_llama.py --out "$WORK/hf" --json "$OUT/hf.json" --stream
for q in ${QUANTS:-FP8}; do
  flags=()
  [[ "$q" != bf16 ]] && flags+=(--quant_algo "$q")
  if [[ ! -d "$WORK/engine-$q" ]]; then
    "$LAMINA" convert --model_dir "$WORK/hf" --output_dir "$WORK/ckpt-$q" --dtype bfloat16 "${flags[@]}" >/dev/null
    "$LAMINA" build --checkpoint_dir "$WORK/ckpt-$q" --output_dir "$WORK/engine-$q" --max_batch_size 8 \
      --max_input_len 2048 --max_seq_len 4096 --max_num_tokens 2048 >/dev/null
    rm -rf "$WORK/ckpt-$q"
  fi
  ncu --clock-control none --cache-control none --csv --page raw \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size,launch__block_size,launch__shared_mem_config_size,launch__shared_mem_per_block_static,launch__shared_mem_per_block_dynamic,launch__registers_per_thread \
    "$LAMINA" bench --engine_dir "$WORK/engine-$q" --input_len 512 --output_len 4 --warmup 0 --runs 1 \
    --skip_checksum >"$OUT/ncu_decode_$q.csv" 2>"$OUT/ncu_decode_$q.err"
  echo "$q: $(grep -c '^"' "$OUT/ncu_decode_$q.csv") rows"
done
