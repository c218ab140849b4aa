#!/usr/bin/env python3
"""Sums up a kernel timeline written by bench/kernel_trace.cpp: where a decode step's time goes.

  python3 scripts/bench/kernel_timeline.py trace.csv [--marker screen_finish] [--device 0]

Steps are cut at each kernel whose name holds MARKER (the last kernel of a greedy decode step).
Only steps with the most common kernel count are kept (the steady one-token steps), the first and
last few dropped. Inside a CUDA graph with programmatic dependent launch a kernel starts before its
predecessor ends, so a kernel's cost to the step is `end - previous end` (its increment of the
critical path), printed beside its own duration (`end - start`) and its launch lead
(`previous end - start`: how early it was resident). Per kernel name: count a step, mean increment,
mean duration, and the increments' total a step; then the step time.
"""
import argparse
import collections
import csv
import statistics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--marker", default="screen_finish")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--skip", type=int, default=8, help="steps dropped at each end")
    ap.add_argument("--sequence", action="store_true", help="also print one layer's kernels in order")
    a = ap.parse_args()

    rows = []
    with open(a.trace) as f:
        for r in csv.DictReader(f):
            if int(r["device"]) != a.device:
                continue
            rows.append((int(r["start_ns"]), int(r["end_ns"]), r["name"]))
    rows.sort(key=lambda r: r[1])
    steps, cur = [], []
    for r in rows:
        cur.append(r)
        if a.marker in r[2]:
            steps.append(cur)
            cur = []
    if not steps:
        print(f"no kernel named *{a.marker}* on device {a.device}")
        return
    common = collections.Counter(len(s) for s in steps).most_common(1)[0][0]
    steady = [s for s in steps if len(s) == common]
    steady = steady[a.skip:len(steady) - a.skip] if len(steady) > 2 * a.skip + 2 else steady
    names_seq = [r[2] for r in steady[0]]
    steady = [s for s in steady if [r[2] for r in s] == names_seq]
    print(f"device {a.device}: {len(steps)} steps, {len(steady)} steady steps of {common} kernels")

    # Step time: marker end to marker end over consecutive steady steps.
    step_ms = [(s[-1][1] - p[-1][1]) / 1e6 for p, s in zip(steady, steady[1:]) if s[0][0] > p[-1][0]]
    inc = collections.defaultdict(list)
    dur = collections.defaultdict(list)
    lead = collections.defaultdict(list)
    per_pos_inc = [[] for _ in range(common)]
    for p, s in zip(steady, steady[1:]):
        prev_end = p[-1][1]
        for i, (st, en, nm) in enumerate(s):
            inc[nm].append((en - prev_end) / 1e3)
            per_pos_inc[i].append((en - prev_end) / 1e3)
            dur[nm].append((en - st) / 1e3)
            lead[nm].append((prev_end - st) / 1e3)
            prev_end = max(prev_end, en)
    count = collections.Counter(names_seq)
    print(f"{'kernel':44s} {'a step':>6s} {'incr us':>8s} {'dur us':>8s} {'lead us':>8s} {'us a step':>10s}")
    total = 0.0
    for nm, n in sorted(count.items(), key=lambda kv: -statistics.mean(inc[kv[0]]) * kv[1]):
        per_step = statistics.mean(inc[nm]) * n
        total += per_step
        print(f"{nm[:44]:44s} {n:6d} {statistics.mean(inc[nm]):8.2f} {statistics.mean(dur[nm]):8.2f} "
              f"{statistics.mean(lead[nm]):8.2f} {per_step:10.1f}")
    print(f"{'sum of increments':44s} {'':6s} {'':8s} {'':8s} {'':8s} {total:10.1f}")
    if step_ms:
        print(f"step time: mean {statistics.mean(step_ms):.4f} ms, median {statistics.median(step_ms):.4f} ms")
    if a.sequence:
        # One layer in the middle of the step: the kernels in order with their mean increments.
        mid = common // 2
        print("kernels around the middle of a step (position, name, mean increment us):")
        for i in range(max(0, mid - 12), min(common, mid + 12)):
            print(f"  {i:4d} {names_seq[i][:50]:50s} {statistics.mean(per_pos_inc[i]):8.2f}")


if __name__ == "__main__":
    main()
