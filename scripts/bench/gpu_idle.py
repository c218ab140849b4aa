#!/usr/bin/env python3
"""How long a GPU sat idle in a kernel timeline written by bench/kernel_trace.cpp.

  python3 scripts/bench/gpu_idle.py trace.csv [--device 0] [--gap_us 20] [--top 12]

Busy time is the union of the kernels' [start, end] intervals on the device (overlapping kernels
count once), idle time the span's rest. Gaps of at least GAP_US microseconds are grouped by the
kernels on either side of them (e.g. the token choice of one serving step and the first kernel of
the next), so the idle a step boundary costs (the host reading the ids, scheduling, launching)
stands apart from launch gaps inside a step.
"""
import argparse
import collections
import csv
import statistics


def read_kernels(path, device):
    """[(start_ns, end_ns, name)] of one device, by start."""
    out = []
    with open(path) as f:
        for row in csv.reader(f):
            if not row or not row[0].isdigit():
                continue  # header or blank
            start, end, dev = int(row[0]), int(row[1]), int(row[2])
            if dev == device and end >= start:
                out.append((start, end, row[5] if len(row) > 5 else "?"))
    out.sort()
    return out


def idle_gaps(kernels):
    """Busy ns and [(gap_ns, kernel before, kernel after)] between the merged busy intervals."""
    busy, gaps = 0, []
    cur_start, cur_end, cur_last = kernels[0][0], kernels[0][1], kernels[0][2]
    for start, end, name in kernels[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            gaps.append((start - cur_end, cur_last, name))
            cur_start, cur_end, cur_last = start, end, name
        elif end > cur_end:
            cur_end, cur_last = end, name
    busy += cur_end - cur_start
    return busy, gaps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--gap_us", type=float, default=20.0, help="gaps this long or longer are listed")
    ap.add_argument("--top", type=int, default=12, help="kernel pairs listed")
    ap.add_argument("--kernels", type=int, default=20, help="kernels listed by their summed time")
    ap.add_argument("--last_s", type=float, default=0.0,
                    help="only the kernels that start in the trace's last LAST_S seconds (a timed run after "
                         "the engine's load and warm-up)")
    a = ap.parse_args()

    kernels = read_kernels(a.trace, a.device)
    if kernels and a.last_s > 0:
        end = max(k[1] for k in kernels)
        kernels = [k for k in kernels if k[0] >= end - a.last_s * 1e9]
    if not kernels:
        raise SystemExit(f"{a.trace}: no kernels on device {a.device}")
    span = max(k[1] for k in kernels) - kernels[0][0]  # kernels are sorted by start, not by end
    busy, gaps = idle_gaps(kernels)
    idle = span - busy
    print(f"device {a.device}: {len(kernels)} kernels over {span / 1e6:.3f} ms; busy {busy / 1e6:.3f} ms, "
          f"idle {idle / 1e6:.3f} ms ({100.0 * idle / span:.1f} %)")

    # Where the busy time goes: each kernel name's summed duration (a concurrent pair counts twice).
    by_name = collections.defaultdict(lambda: [0, 0])
    for start, end, name in kernels:
        by_name[name][0] += end - start
        by_name[name][1] += 1
    print(f"{'total ms':>9} {'count':>6} {'mean us':>9}  kernel")
    for name, (ns, count) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[: a.kernels]:
        print(f"{ns / 1e6:9.3f} {count:6d} {ns / 1e3 / count:9.1f}  {name[:110]}")

    long_gaps = [g for g in gaps if g[0] >= a.gap_us * 1e3]
    if not long_gaps:
        print(f"no gap of {a.gap_us:g} us or more")
        return
    lengths = sorted(g[0] / 1e3 for g in long_gaps)
    print(f"gaps >= {a.gap_us:g} us: {len(long_gaps)}, {sum(lengths) / 1e3:.3f} ms in all; "
          f"median {statistics.median(lengths):.1f} us, p90 {lengths[int(0.9 * (len(lengths) - 1))]:.1f} us, "
          f"max {lengths[-1]:.1f} us")
    by_pair = collections.defaultdict(list)
    for length, before, after in long_gaps:
        by_pair[(before, after)].append(length / 1e3)
    # The median beside the total: one long wait (the run's start or end) can make a pair's total.
    print(f"{'total ms':>9} {'count':>6} {'median us':>9} {'max us':>9}  kernel before -> kernel after")
    for (before, after), ls in sorted(by_pair.items(), key=lambda kv: -sum(kv[1]))[: a.top]:
        print(f"{sum(ls) / 1e3:9.3f} {len(ls):6d} {statistics.median(ls):9.1f} {max(ls):9.1f}  {before} -> {after}")


if __name__ == "__main__":
    main()
