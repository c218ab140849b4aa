#!/usr/bin/env bash
# A/B of a change on the device: runs CMD with the current build (B), then puts the files under
# $OLD (a tree of the same relative paths, e.g. made with `git show REV:path > $OLD/path`) in
# place, rebuilds TARGETS and runs CMD again (A), then restores the files and rebuilds. Both runs
# log to $OUT/ab_new.log and $OUT/ab_old.log. Needs a finished build in build-device.
#   OLD=ab/old TARGETS="lamina bench_kernels" CMD='build-device/bench/bench_kernels --only "token choice"' \
#     OUT=/tmp/out bash scripts/bench/ab_files.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
OLD=${OLD:?OLD: a folder of the old files}
mkdir -p "$OUT"
files=$(cd "$OLD" && find . -type f | sed 's|^\./||')
bash -c "$CMD" >"$OUT/ab_new.log" 2>&1
for f in $files; do cp "$f" "$f.ab-new" && cp "$OLD/$f" "$f"; done
ninja -C build-device $TARGETS >"$OUT/ab_build_old.log" 2>&1 || echo "ab_files: the old build failed" >>"$OUT/ab_old.log"
bash -c "$CMD" >>"$OUT/ab_old.log" 2>&1
for f in $files; do mv "$f.ab-new" "$f"; done
ninja -C build-device $TARGETS >>"$OUT/ab_build_old.log" 2>&1
echo "=== new"; grep -hE "${SHOW:-.}" "$OUT/ab_new.log" | tail -20
echo "=== old"; grep -hE "${SHOW:-.}" "$OUT/ab_old.log" | tail -20
