#!/usr/bin/env bash
# A tensor-parallel round on a machine of 2+ GPUs, from the repository root, in at most two
# device calls of 10 minutes:
#   OUT=$OUT PREPARE_70B=1 bash scripts/bench/tp_round.sh          # call 1: build, GPU tests, 8B tp 1 vs 2
#   OUT=$OUT SHAPE=llama3-70b bash scripts/bench/tp_round.sh       # call 2, same machine: 70B at tp 4
# Call 1 builds (scripts/device-check.sh), runs the GPU tests that cover tensor parallelism (each
# killed after TEST_TIMEOUT seconds, so a hung collective cannot use up the call) and
# scripts/bench/run_tp.sh on the 8B shape with TP_SIZES (default "1 2"). With PREPARE_70B=1 it
# also writes the random 70B HF checkpoint meanwhile, on the last GPU, into /tmp/lamina-70b, where
# call 2's run_tp.sh (SHAPE=llama3-70b, TP_SIZES=4) finds it. AB_TPN (default
# LAMINA_FUSED_ALL_REDUCE_NORM=0) adds decode runs of tp > 1 with a switch changed; TRACE=1 adds a
# traced decode run of each tp (run_tp.sh); EXTRA_TARGETS (e.g. bench_kernels) are built too.
# Logs land in $OUT/round/, packed into $OUT/round.tgz; the headline lines are printed.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
R=$OUT/round
mkdir -p "$R"
SHAPE=${SHAPE:-llama3-8b}
export AB_TPN=${AB_TPN-LAMINA_FUSED_ALL_REDUCE_NORM=0}
if [[ -d .devdeps/lib ]]; then export LD_LIBRARY_PATH="$PWD/.devdeps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
export LAMINA=$PWD/build-device/tools/lamina/lamina
W70=/tmp/lamina-70b
hf_pid=""
if [[ "${PREPARE_70B:-0}" == 1 ]]; then
  mkdir -p "$W70"
  last_gpu=$(($(nvidia-smi -L | wc -l) - 1))
  CUDA_VISIBLE_DEVICES=$last_gpu python3 scripts/bench/make_random_llama.py --shape llama3-70b --out "$W70/hf" \
    --json "$W70/hf_limits.json" --no_hf --stream >"$R/hf70b.log" 2>&1 &
  hf_pid=$!
fi
if [[ "$SHAPE" == llama3-70b ]]; then
  [[ -x "$LAMINA" ]] || { echo "build first (call 1)"; exit 1; }
  OUT=$R/tp70b SHAPE=llama3-70b TP_SIZES=4 WORK=$W70 bash scripts/bench/run_tp.sh >"$R/tp70b.log" 2>&1 \
    || echo "run_tp.sh (70B) FAILED" >>"$R/summary.txt"
  grep -hE "^tp|^[a-z0-9_]+_[A-Z]|convert|rror" "$R/tp70b.log" | tail -20 >>"$R/summary.txt"
else
  trace_target=""; [[ "${TRACE:-0}" == 1 ]] && trace_target=kernel_trace
  TARGETS="lamina test_gpu_all_reduce test_gpu_tensor_parallel test_gpu_end_to_end test_ops bench_all_reduce $trace_target ${EXTRA_TARGETS:-}" \
    TESTS=${TESTS-"test_gpu_all_reduce test_gpu_tensor_parallel test_gpu_end_to_end test_ops"} BENCHES="" \
    TEST_TIMEOUT=${TEST_TIMEOUT:-240} OUT=$R bash scripts/device-check.sh >/dev/null 2>&1
  if grep -q "FAILED\|NOT BUILT" "$R/summary.txt"; then
    echo "--- tests failed: no benchmark" >>"$R/summary.txt"
  else
    OUT=$R/tp SHAPE=llama3-8b TP_SIZES=${TP_SIZES:-1 2} bash scripts/bench/run_tp.sh >"$R/tp.log" 2>&1 \
      || echo "run_tp.sh FAILED" >>"$R/summary.txt"
    { echo "--- 8B tensor parallel"; grep -hE "^tp|^[a-z0-9_]+_[A-Z]|rror" "$R/tp.log" | tail -20
      cat "$R/tp/all_reduce.txt" 2>/dev/null; } >>"$R/summary.txt"
  fi
fi
if [[ -n "$hf_pid" ]]; then wait "$hf_pid"; echo "70B HF checkpoint: $(tail -1 "$R/hf70b.log")" >>"$R/summary.txt"; fi
tar -czf "$OUT/round.tgz" -C "$OUT" round
cat "$R/summary.txt"
