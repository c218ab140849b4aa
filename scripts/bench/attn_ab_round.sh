#!/usr/bin/env bash
# The tensor-core decode attention (attention_decode_mma.cu) under each value of one switch, on one
# GPU, from the repository root:
#   OUT=$OUT VAR=LAMINA_ATTN_MMA_WARPS VALUES="2 4" bash scripts/bench/attn_ab_round.sh
# Builds bench_kernels and test_ops (scripts/device-check.sh; TARGETS adds more), runs the attention
# tests with the kernel forced (LAMINA_ATTN_DECODE=mma) at each value, then bench_kernels'
# serving-batch decode attention (ONLY; default: bf16 and FP8 caches at 256 and 1024 tokens) at
# each value, REPS times in turn. Logs in $OUT/; the timings in $OUT/bench_ab.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
VAR=${VAR:-LAMINA_ATTN_MMA_WARPS}
VALUES=${VALUES:-2 4}
mkdir -p "$OUT"
OUT=$OUT/build TARGETS="bench_kernels test_ops ${TARGETS:-}" TESTS= BENCHES= BUILD_ONLY=1 bash scripts/device-check.sh \
  >/dev/null 2>&1
tail -3 "$OUT/build/summary.txt"
T=$(find build-device -name test_ops -type f -perm -u+x | head -1)
B=$(find build-device -name bench_kernels -type f -perm -u+x | head -1)
for v in $VALUES; do
  env LAMINA_ATTN_DECODE=mma "$VAR=$v" timeout 300 "$T" --gtest_color=no \
    --gtest_filter='*AttentionOps*:*Fp8KvCache*Attention*:*GraphCapture*' >"$OUT/test_$v.log" 2>&1
  echo "$VAR=$v tests (rc $?): $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test_$v.log" | tr '\n' ' ')"
done
for ((rep = 0; rep < ${REPS:-2}; rep++)); do
  for v in $VALUES; do
    env "$VAR=$v" "$B" --only "${ONLY:-b1024|b256 s256}" 2>&1 | grep "attn decode" | sed "s/^/$VAR=$v /" \
      | tee -a "$OUT/bench_ab.txt"
  done
done
