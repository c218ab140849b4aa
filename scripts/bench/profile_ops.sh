#!/usr/bin/env bash
# GPU time by op (LAMINA_PROFILE_OPS=1, see src/backends/cuda/op_profiler.h) of the 8B-shaped
# engines: an offline serving run (ISL/OSL 128/128, 1024 requests at once) and a batch-1 decode,
# for each of QUANTS (default bf16). Uses the checkpoint run_8b_serving.sh made ($WORK/hf).
#   QUANTS="bf16 FP8 FP8+kvFP8" LAMINA=build-device/tools/lamina/lamina bash scripts/bench/profile_ops.sh
set -uo pipefail
LAMINA=${LAMINA:-build-device/tools/lamina/lamina}
WORK=${WORK:-/tmp/lamina-8b}
# A QUANTS entry ending in +kvFP8 adds --kv_cache_quant_algo FP8 ("bf16+kvFP8", "FP8+kvFP8").
for q in ${QUANTS:-bf16}; do
  name=$q
  kv=""
  [[ "$q" == *+kvFP8 ]] && kv=FP8 q=${q%+kvFP8}
  [[ "$q" == bf16 ]] && q=""
  sfx=${q:+_$q}${kv:+_kv$kv}
  ckpt=$WORK/ckpt$sfx engine=$WORK/engine-profile$sfx
  [ -d "$ckpt" ] || "$LAMINA" convert --model_dir "$WORK/hf" --output_dir "$ckpt" --dtype bfloat16 \
    ${q:+--quant_algo "$q"} ${kv:+--kv_cache_quant_algo "$kv"} >/dev/null
  rm -rf "$engine"
  "$LAMINA" build --checkpoint_dir "$ckpt" --output_dir "$engine" --max_batch_size 1024 --max_input_len 256 \
    --max_seq_len 512 --max_num_tokens 8192 >/dev/null
  echo "=== $name: offline serving, 1024 requests, 128/128"
  LAMINA_PROFILE_OPS=1 "$LAMINA" bench_serving --engine_dir "$engine" --skip_checksum --concurrency 1024 \
    --num_requests 1024 --isl 128 --osl 128 --vocab_size 128000 2>&1 | grep -vE "^\|---|^\| target" | head -32
  echo "=== $name: batch-1 decode, 256 in / 128 out"
  LAMINA_PROFILE_OPS=1 "$LAMINA" bench --engine_dir "$engine" --skip_checksum --input_len 256 --output_len 128 \
    --warmup 0 --runs 1 2>&1 | grep -vE "^\|---|^\| engine" | head -24
  rm -rf "$engine"
done
