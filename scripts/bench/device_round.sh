#!/usr/bin/env bash
# One round on a GPU machine, from the repository root: build + GPU tests + kernel benchmarks
# (scripts/device-check.sh), then the Llama-3-8B-shaped decode/prefill benchmark
# (scripts/bench/run_8b.sh) and the serving benchmark (scripts/bench/run_8b_serving.sh).
# Every log and JSON lands in $OUT/round/ and is packed into $OUT/round.tgz; $OUT/summary.txt
# holds the headline figures.
#   OUT=/tmp/out bash scripts/bench/device_round.sh
# Environment: TESTS / GTEST_FILTER / BENCHES as for device-check.sh; SKIP_8B=1, SKIP_SERVING=1;
# HF_FLAGS=--no_hf skips the transformers baseline; CONCURRENCY for the serving run;
# EXTRA="command" runs last, logged to round/extra.log;
# TP_SIZES="1 2" (on a machine of 2+ GPUs) adds the tensor-parallel tests, bench_all_reduce and
# scripts/bench/run_tp.sh (SHAPE=llama3-70b for the 70B-shaped checkpoint).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
R=$OUT/round
mkdir -p "$R"
if [[ -n "${TP_SIZES:-}" ]]; then
  TARGETS=${TARGETS:-"lamina test_ops test_gpu_end_to_end bench_kernels test_gpu_all_reduce test_gpu_tensor_parallel bench_all_reduce"}
  TESTS=${TESTS-"test_ops test_gpu_end_to_end test_gpu_all_reduce test_gpu_tensor_parallel"}
fi
TARGETS=${TARGETS:-"lamina test_ops test_gpu_end_to_end bench_kernels"} TESTS=${TESTS-"test_ops test_gpu_end_to_end"} \
  BENCHES=${BENCHES-bench_kernels} OUT=$R bash scripts/device-check.sh >/dev/null 2>&1
cp "$R/summary.txt" "$OUT/summary.txt"
grep -h "NCCL" "$R/build.log" "$R/device-check.log" 2>/dev/null | sort -u | head -3 >>"$OUT/summary.txt"
export LAMINA=$PWD/build-device/tools/lamina/lamina
if [[ -n "${TP_SIZES:-}" ]]; then
  OUT=$R/tp TP_SIZES=$TP_SIZES bash scripts/bench/run_tp.sh >"$R/tp.log" 2>&1 \
    || echo "run_tp.sh FAILED" >>"$OUT/summary.txt"
  { echo "--- tensor parallel"; grep -hE "^tp|convert\+build|rror" "$R/tp.log" | tail -20; } >>"$OUT/summary.txt"
fi
if [[ "${SKIP_8B:-0}" != 1 ]]; then
  OUT=$R bash scripts/bench/run_8b.sh >"$R/run_8b.log" 2>&1 || echo "run_8b.sh FAILED" >>"$OUT/summary.txt"
  { echo "--- 8B"; grep -hE "^\||convert\+build|error" "$R/run_8b.log" | tail -40; } >>"$OUT/summary.txt"
fi
# The server needs a tokenizer: the Llama 3 one (scripts/make-devdeps.sh copies it into .devdeps).
if [[ -z "${TOKENIZER_DIR:-}" && -f .devdeps/llama3-tokenizer/tokenizer.json ]]; then
  export TOKENIZER_DIR=$PWD/.devdeps/llama3-tokenizer
fi
if [[ "${SKIP_SERVING:-0}" != 1 ]]; then
  OUT=$R bash scripts/bench/run_8b_serving.sh >"$R/serving.log" 2>&1 || echo "run_8b_serving.sh FAILED" >>"$OUT/summary.txt"
  { echo "--- serving"; tail -25 "$R/serving.log"; } >>"$OUT/summary.txt"
fi
# EXTRA="command": run last (logs into $R/extra.log), e.g. a benchmark A/B.
if [[ -n "${EXTRA:-}" ]]; then bash -c "$EXTRA" >"$R/extra.log" 2>&1; tail -30 "$R/extra.log" >>"$OUT/summary.txt"; fi
tar -czf "$OUT/round.tgz" -C "$OUT" round
rm -rf "$R"
cat "$OUT/summary.txt"
