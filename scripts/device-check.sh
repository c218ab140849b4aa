#!/usr/bin/env bash
# The one script to run on a GPU machine, from the repo root:
#   configure (CUDA on, sm_90a, Ninja) -> build -> GPU tests -> kernel benchmarks -> summary.
# Everything is logged under $OUT (default ./out): device-check.log (all output), build.log,
# tests.log, bench.log, bench_kernels.json, summary.txt. Steps after a failed one still run where
# they can; the exit status is non-zero if any step failed.
#
# Environment:
#   TARGETS="test_ops bench_kernels"  targets to build (default: these two)
#   TESTS="test_ops"                  test binaries to run (gtest; GTEST_FILTER is honoured)
#   BENCHES="bench_kernels"           benchmark binaries to run ("" to skip)
#   BENCH_ONLY="decode attention"     passed as --only to each benchmark binary (its matching cases)
#   HARNESS=1                         build from a scratch project holding only src/common,
#                                     src/ops, src/backends/{cpu,cuda}, tests/ops and bench (used
#                                     automatically when the top-level configure fails or lacks a
#                                     requested target, e.g. while other folders are mid-change)
#   TEST_TIMEOUT=300                  seconds before a test binary is killed (a hang fails the step)
#   SANITIZE_FILTER=pattern           also run test_ops under compute-sanitizer memcheck, filtered
#                                     (killed after SANITIZE_TIMEOUT seconds, default 180)
#   BUILD_ONLY=1                      stop after the build (for a dry run on a machine without GPU)
# Needs .devdeps/ (scripts/make-devdeps.sh) on machines without the Debian -dev packages.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-$root/out}
mkdir -p "$OUT"
export OUT
TARGETS=${TARGETS:-test_ops bench_kernels}
TESTS=${TESTS-test_ops}
BENCHES=${BENCHES-bench_kernels}
jobs=$(nproc)
if [[ -d .devdeps/lib ]]; then export LD_LIBRARY_PATH="$root/.devdeps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi

exec > >(tee -a "$OUT/device-check.log") 2>&1
summary=()
failed=0
note() { summary+=("$(printf '%-34s %s' "$1" "$2")"); }
stamp() { date +%s; }

echo "=== device-check $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 || true
{ nvcc --version | tail -2; cmake --version | head -1; gcc --version | head -1; } 2>&1
git log -1 --format='commit %h %s' 2>/dev/null || true

# ---- configure ----
cuda_flags=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DLAMINA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a)
write_harness() {  # $1: directory for the scratch CMakeLists.txt
  mkdir -p "$1"
  cat >"$1/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.24)
project(lamina_device_harness LANGUAGES CXX CUDA)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)
set(LAMINA_HAVE_CUDA ON)
set(LAMINA_ROOT "$root")
if(EXISTS \${LAMINA_ROOT}/.devdeps)
  list(PREPEND CMAKE_PREFIX_PATH \${LAMINA_ROOT}/.devdeps)
  include_directories(BEFORE SYSTEM \${LAMINA_ROOT}/.devdeps/include)
  link_directories(\${LAMINA_ROOT}/.devdeps/lib)
endif()
find_package(nlohmann_json 3 REQUIRED)
find_package(OpenMP)
find_package(Threads REQUIRED)
add_compile_options(\$<\$<COMPILE_LANGUAGE:CXX>:-Wall> \$<\$<COMPILE_LANGUAGE:CXX>:-Wextra>)
set(LAMINA_SRC_DIR \${LAMINA_ROOT}/src)
add_subdirectory(\${LAMINA_SRC_DIR}/common common)
add_subdirectory(\${LAMINA_SRC_DIR}/ops ops)
add_subdirectory(\${LAMINA_SRC_DIR}/backends/cpu backends_cpu)
add_subdirectory(\${LAMINA_SRC_DIR}/backends/cuda backends_cuda)
enable_testing()
add_subdirectory(\${LAMINA_ROOT}/tests/ops tests_ops)
add_subdirectory(\${LAMINA_ROOT}/bench bench)
CMAKE
}

t0=$(stamp)
build=build-device
mode=top-level
if [[ "${HARNESS:-0}" != 1 ]]; then
  if cmake -S . -B "$build" "${cuda_flags[@]}" >"$OUT/configure.log" 2>&1; then
    known=$(ninja -C "$build" -t targets all 2>/dev/null | cut -d: -f1)
    for t in $TARGETS; do
      if ! grep -qx "$t" <<<"$known"; then
        echo "target $t is not in the top-level build: using the harness"
        mode=harness
      fi
    done
  else
    echo "top-level configure failed (tail of configure.log below): using the harness"
    tail -15 "$OUT/configure.log"
    mode=harness
  fi
else
  mode=harness
fi
if [[ $mode == harness ]]; then
  build=build-device-harness
  write_harness "$build/src"
  if ! cmake -S "$build/src" -B "$build" "${cuda_flags[@]}" >>"$OUT/configure.log" 2>&1; then
    tail -30 "$OUT/configure.log"
    note "configure ($mode)" "FAILED"
    printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
    exit 1
  fi
fi
note "configure ($mode)" "ok $(($(stamp) - t0)) s"

# ---- build ----
t0=$(stamp)
# shellcheck disable=SC2086
if cmake --build "$build" --parallel "$jobs" --target $TARGETS >"$OUT/build.log" 2>&1; then
  note "build ($TARGETS)" "ok $(($(stamp) - t0)) s"
else
  grep -E "error|Error|FAILED" "$OUT/build.log" | head -40
  note "build ($TARGETS)" "FAILED"
  failed=1
fi
[[ "${BUILD_ONLY:-0}" == 1 ]] && { printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"; exit $failed; }

find_bin() { find "$build" -type f -name "$1" -perm -u+x | head -1; }

# run_test LABEL LOG BIN [ARGS...]: one run of a gtest binary (with the caller's environment),
# its log appended to tests.log, its counts in the summary under LABEL.
run_test() {
  local label=$1 log=$2 bin=$3
  shift 3
  local t0 rc counts
  t0=$(stamp)
  # A hung test (e.g. a collective waiting on a peer) fails its step instead of using up the call.
  timeout "${TEST_TIMEOUT:-300}" "$bin" --gtest_color=no "$@" >"$log" 2>&1
  rc=$?
  cat "$log" >>"$OUT/tests.log"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]|Failure|error|replay" "$log" | head -80
  ((rc == 124)) && echo "$label: killed after ${TEST_TIMEOUT:-300} s (TEST_TIMEOUT)"
  counts=$(grep -E "^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test" "$log" | sed 's/\[ *//;s/ *\]//' | tr '\n' ' ')
  if ((rc == 0)); then note "$label" "ok $(($(stamp) - t0)) s: $counts"; else note "$label" "FAILED (rc $rc): $counts"; failed=1; fi
}

# ---- tests ----
for t in $TESTS; do
  bin=$(find_bin "$t")
  if [[ -z $bin ]]; then note "test $t" "NOT BUILT"; failed=1; continue; fi
  run_test "test $t" "$OUT/test_$t.log" "$bin"
  # The attention tests again with each many-token decode kernel forced: the automatic choice
  # (attention.cu) gives most test steps, which are small, to the pipelined kernel.
  if [[ $t == test_ops && -z "${GTEST_FILTER:-}" ]]; then
    for kernel in mma pipelined bulk; do
      LAMINA_ATTN_DECODE=$kernel run_test "test $t ($kernel decode)" "$OUT/test_${t}_$kernel.log" "$bin" \
        --gtest_filter='*AttentionOps*:*Fp8KvCache*Attention*'
    done
  fi
done
if [[ -n "${SANITIZE_FILTER:-}" ]]; then
  bin=$(find_bin test_ops)
  t0=$(stamp)
  timeout "${SANITIZE_TIMEOUT:-180}" compute-sanitizer --tool memcheck --error-exitcode 9 "$bin" --gtest_filter="$SANITIZE_FILTER" >"$OUT/sanitizer.log" 2>&1
  rc=$?
  tail -5 "$OUT/sanitizer.log"
  if ((rc == 0)); then note "memcheck ($SANITIZE_FILTER)" "ok $(($(stamp) - t0)) s"; else note "memcheck ($SANITIZE_FILTER)" "FAILED (rc $rc)"; failed=1; fi
fi

# ---- benchmarks ----
for b in $BENCHES; do
  bin=$(find_bin "$b")
  if [[ -z $bin ]]; then note "bench $b" "NOT BUILT"; failed=1; continue; fi
  t0=$(stamp)
  "$bin" ${BENCH_ONLY:+--only "$BENCH_ONLY"} 2>&1 | tee -a "$OUT/bench.log"
  rc=${PIPESTATUS[0]}
  if ((rc == 0)); then note "bench $b" "ok $(($(stamp) - t0)) s"; else note "bench $b" "FAILED (rc $rc)"; failed=1; fi
done

# ---- summary ----
{
  echo
  echo "=== summary"
  printf '%s\n' "${summary[@]}"
  if [[ -f "$OUT/bench.log" ]]; then
    echo "--- benchmark figures"
    grep -E "^(copy|gemm|gemv|attn)" "$OUT/bench.log"
  fi
} | tee "$OUT/summary.txt"
exit $failed
