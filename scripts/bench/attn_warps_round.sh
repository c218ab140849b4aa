#!/usr/bin/env bash
# The tensor-core decode attention (attention_decode_mma.cu) at each block size of
# LAMINA_ATTN_MMA_WARPS (2 or 4 warps a block), on one GPU, from the repository root:
#   OUT=$OUT bash scripts/bench/attn_warps_round.sh
# Builds bench_kernels and test_ops (scripts/device-check.sh), runs the attention tests with the
# kernel forced (LAMINA_ATTN_DECODE=mma) at each block size, then bench_kernels' serving-batch
# decode attention (bf16 and FP8 caches) at each, REPS times in turn. Logs in $OUT/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
OUT=$OUT/build TARGETS="bench_kernels test_ops" TESTS= BENCHES= BUILD_ONLY=1 bash scripts/device-check.sh >/dev/null 2>&1
tail -3 "$OUT/build/summary.txt"
T=$(find build-device -name test_ops -type f -perm -u+x | head -1)
B=$(find build-device -name bench_kernels -type f -perm -u+x | head -1)
for w in ${WARPS:-2 4}; do
  LAMINA_ATTN_DECODE=mma LAMINA_ATTN_MMA_WARPS=$w timeout 300 "$T" --gtest_color=no \
    --gtest_filter='*AttentionOps*:*Fp8KvCache*Attention*:*GraphCapture*' >"$OUT/test_w$w.log" 2>&1
  echo "W$w tests (rc $?): $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test_w$w.log" | tr '\n' ' ')"
done
for ((rep = 0; rep < ${REPS:-2}; rep++)); do
  for w in ${WARPS:-2 4}; do
    LAMINA_ATTN_MMA_WARPS=$w "$B" --only "${ONLY:-b1024|b256 s256}" 2>&1 | grep "attn decode" | sed "s/^/W$w /" \
      | tee -a "$OUT/bench_warps.txt"
  done
done
