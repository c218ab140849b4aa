#!/usr/bin/env bash
# GPU kernel time of an offline serving run (ISL/OSL 128/128, 1024 requests at once) under
# Nsight Systems, where the machine has nsys: the kernels that take a serving step's time.
#   ENGINE=/tmp/lamina-8b/engine-serve LAMINA=build-device/tools/lamina/lamina bash scripts/bench/profile_serving.sh
set -uo pipefail
LAMINA=${LAMINA:-build-device/tools/lamina/lamina}
ENGINE=${ENGINE:-/tmp/lamina-8b/engine-serve}
REQUESTS=${REQUESTS:-1024}
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
if [[ -z "$nsys" ]]; then
  echo "no nsys on this machine"
  exit 0
fi
rep=/tmp/lamina-serving-profile
"$nsys" profile -o "$rep" --force-overwrite true -t cuda "$LAMINA" bench_serving --engine_dir "$ENGINE" --skip_checksum \
  --concurrency "$REQUESTS" --num_requests "$REQUESTS" --isl 128 --osl 128 --vocab_size 128000 | tail -4
"$nsys" stats --report cuda_gpu_kern_sum --format csv "$rep.nsys-rep" 2>/dev/null |
  python3 -c '
import csv, sys
rows = [r for r in csv.reader(sys.stdin) if len(r) > 8]
head, body = rows[0], rows[1:]
t = head.index("Total Time (ns)"); n = head.index("Instances"); name = head.index("Name")
total = sum(float(r[t]) for r in body)
print(f"GPU kernel time {total/1e9:.3f} s in {sum(int(r[n]) for r in body)} launches")
for r in sorted(body, key=lambda r: -float(r[t]))[:25]:
    print(f"{100*float(r[t])/total:5.1f}% {float(r[t])/1e9:7.3f} s {int(r[n]):7d}x  {r[name][:150]}")
'
