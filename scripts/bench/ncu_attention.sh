#!/usr/bin/env bash
# Nsight Compute reports of the decode attention kernels at a serving batch (1024 tokens, 256 rows
# each, Llama-3-8B heads): the tensor-core kernel over a bf16 and an FP8 cache and the pipelined
# kernel over the FP8 cache, to see what bounds them. Needs ncu (the device machine has it) and a
# build in build-device (scripts/device-check.sh). Reports land in $OUT/ncu_attn_<what>.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=build-device/bench/bench_kernels
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats --section ComputeWorkloadAnalysis --section InstructionStats"
ncu --kernel-name "regex:attn_decode_mma_kernel" --launch-count 1 $SECTIONS "$BIN" --only "decode attention b1024" \
  >"$OUT/ncu_attn_mma_bf16.txt" 2>&1
ncu --kernel-name "regex:attn_decode_mma_kernel" --launch-count 1 $SECTIONS "$BIN" --only "fp8 kv b1024" \
  >"$OUT/ncu_attn_mma_fp8.txt" 2>&1
LAMINA_ATTN_DECODE=pipelined ncu --kernel-name "regex:attn_decode_kernel" --launch-count 1 $SECTIONS "$BIN" \
  --only "fp8 kv b1024" >"$OUT/ncu_attn_pipelined_fp8.txt" 2>&1
