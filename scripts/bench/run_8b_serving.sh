#!/usr/bin/env bash
# On a GPU machine, after the build: serving throughput of a Llama-3-8B-shaped bf16 engine,
# ISL/OSL 128/128, 1024 requests (TensorRT-LLM publishes 28,312 output tok/s there with FP8 weights).
#   LAMINA=build-device/tools/lamina/lamina OUT=/tmp/out bash scripts/bench/run_8b_serving.sh
# QUANT=FP8 (or W8A16, W4A16_AWQ) serves a quantized engine instead; its JSON files get a _FP8 suffix.
# KV_QUANT=FP8 adds an FP8 KV cache (suffix _kvFP8).
# SKIP_OFFLINE=1 skips the in-process run.
set -euo pipefail
LAMINA=${LAMINA:-build-device/tools/lamina/lamina}
OUT=${OUT:-/tmp/lamina-bench}
WORK=${WORK:-/tmp/lamina-8b}
CONCURRENCY=${CONCURRENCY:-256}
PORT=${PORT:-8123}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
[ -f "$WORK/hf/config.json" ] || python3 scripts/bench/make_random_llama.py --out "$WORK/hf" --json "$OUT/limits.json" --no_hf
QUANT=${QUANT:-}
KV_QUANT=${KV_QUANT:-}
sfx=${QUANT:+_$QUANT}${KV_QUANT:+_kv$KV_QUANT}
ckpt=$WORK/ckpt$sfx
# The device's 64 GB disk holds the HF checkpoint (16 GB), one engine and about two more
# checkpoints: drop the other configurations' checkpoints before making another.
if [ ! -d "$ckpt" ]; then
  for other in "$WORK"/ckpt*; do [ -d "$other" ] && [ "$other" != "$ckpt" ] && rm -rf "$other"; done
fi
[ -d "$ckpt" ] || "$LAMINA" convert --model_dir "$WORK/hf" --output_dir "$ckpt" --dtype bfloat16 \
  ${QUANT:+--quant_algo "$QUANT"} ${KV_QUANT:+--kv_cache_quant_algo "$KV_QUANT"}
# Slots hold max_seq_len rows each: 256 x 512 tokens of KV is 17 GB for this shape.
rm -rf "$WORK/engine-serve"
"$LAMINA" build --checkpoint_dir "$ckpt" --output_dir "$WORK/engine-serve" --max_batch_size "$CONCURRENCY" \
  --max_input_len 256 --max_seq_len 512 --max_num_tokens 8192
"$LAMINA" serve --engine_dir "$WORK/engine-serve" ${TOKENIZER_DIR:+--tokenizer_dir "$TOKENIZER_DIR"} --port "$PORT" --http_threads $((CONCURRENCY + 16)) --skip_checksum >"$OUT/serve$sfx.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done
"$LAMINA" bench_serving --server "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY" --num_requests 1024 \
  --isl 128 --osl 128 --vocab_size 128000 --json "$OUT/serving_8b$sfx.json"
kill -TERM $server; wait $server || true
# The same load offline (engine + scheduler in-process, no HTTP): what the server adds is the difference.
[[ "${SKIP_OFFLINE:-0}" == 1 ]] && exit 0
"$LAMINA" bench_serving --engine_dir "$WORK/engine-serve" --skip_checksum --concurrency "$CONCURRENCY" \
  --num_requests 1024 --isl 128 --osl 128 --vocab_size 128000 --json "$OUT/serving_8b${sfx}_offline.json"
