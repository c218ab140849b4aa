#!/usr/bin/env bash
# The README's main command: install what is missing, build Lamina, then convert → build → run
# the bundled default model, streaming its text. Runs on the GPU when there is one, else the CPU.
#   bash scripts/demo.sh ["prompt text"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
LAMINA="$BUILD_DIR/tools/lamina/lamina"
MODEL=${MODEL:-models/lamina-tiny-llama}
WORK=${WORK:-/tmp/lamina-demo}
PROMPT=${1:-"And God said,"}

"$LAMINA" convert --model_dir "$MODEL" --output_dir "$WORK/checkpoint" --dtype bfloat16
"$LAMINA" build --checkpoint_dir "$WORK/checkpoint" --output_dir "$WORK/engine" \
  --max_batch_size 8 --max_input_len 512 --max_seq_len 1024
"$LAMINA" run --engine_dir "$WORK/engine" --input_text "$PROMPT" --max_output_len 120 --streaming \
  --temperature 0.8 --top_k 40 --top_p 0.95 --repetition_penalty 1.1 --random_seed 1
