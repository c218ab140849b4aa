#!/usr/bin/env bash
# Nsight Compute reports of the one-token int4 tile GEMV (the backend's shape: 16 warps a tile, 2
# chunks a group, x in shared memory) on the o and down projections of the 8B shape, and the fp8
# GEMV on o, to see what bounds them. Needs ncu (the device machine has it) and a build in
# build-device (scripts/device-check.sh). Reports land in $OUT/ncu_<what>.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=build-device/bench/bench_kernels
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats"
for what in o down; do
  ncu --kernel-name-base demangled --kernel-name "regex:gemv_int4_tiles_kernel<__nv_bfloat16, \(int\)16, \(int\)2, \(bool\)1, \(bool\)0>" \
    --launch-count 1 $SECTIONS "$BIN" --only "int4 tiles $what" >"$OUT/ncu_int4_$what.txt" 2>&1
done
# The fp8 GEMV on o (4 rows and 256 threads a block; demangled names spell template arguments
# "(int)4", the format as "(lamina::WeightFormat)1").
ncu --kernel-name-base demangled \
  --kernel-name "regex:gemv_quant_kernel<__nv_bfloat16, \(lamina::WeightFormat\)1, \(int\)1, \(int\)4, \(int\)256" \
  --launch-count 1 $SECTIONS "$BIN" --only "o" >"$OUT/ncu_fp8_o.txt" 2>&1
