#!/usr/bin/env python3
"""The GPU's SM clock and power over a run, from nvidia-smi samples: whether the card was held at
its power limit (a compute-bound serving run on an H100 is: docs/performance.md).

  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,power.limit,clocks_throttle_reasons.active \
      --format=csv,noheader -lms 100 > power.csv &
  python3 scripts/bench/power_summary.py power.csv [--min_watts 250]

Only samples drawing at least MIN_WATTS count (the run under load, not the load before it or the
idle after). Prints the samples' SM clock and power percentiles, the mean power against the
limit, and how often each throttle reason was active (0x4: software power cap).
"""
import argparse
import collections
import statistics

# The sampling command above, for scripts that start it themselves (gemm_power_probe.py).
NVIDIA_SMI_SAMPLING = ["nvidia-smi",
                       "--query-gpu=timestamp,clocks.sm,power.draw,power.limit,clocks_throttle_reasons.active",
                       "--format=csv,noheader", "-lms", "100"]


def number(field):
    """'1560 MHz' -> 1560.0; None where nvidia-smi wrote no number ([N/A])."""
    try:
        return float(field.split()[0])
    except (ValueError, IndexError):
        return None


def read_samples(lines, min_watts):
    """The sampled lines drawing at least min_watts: (SM clocks, watts, power limits, a Counter of
    the active throttle-reason masks as nvidia-smi printed them)."""
    clocks, watts, limits, reasons = [], [], [], collections.Counter()
    for line in lines:
        fields = [x.strip() for x in line.split(",")]
        if len(fields) < 5:
            continue
        clock, power, limit = number(fields[1]), number(fields[2]), number(fields[3])
        if clock is None or power is None or power < min_watts:
            continue
        clocks.append(clock)
        watts.append(power)
        if limit is not None:
            limits.append(limit)
        reasons[fields[4]] += 1
    return clocks, watts, limits, reasons


def power_capped(reasons):
    """How many of the samples had the software power cap (0x4) among their throttle reasons."""
    return sum(n for mask, n in reasons.items() if mask.startswith("0x") and int(mask, 16) & 0x4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("samples")
    ap.add_argument("--min_watts", type=float, default=250.0)
    a = ap.parse_args()

    with open(a.samples) as f:
        clocks, watts, limits, reasons = read_samples(f, a.min_watts)
    if not watts:
        print(f"power: no sample at {a.min_watts:.0f} W or more in {a.samples}")
        return

    def pct(values, q):
        s = sorted(values)
        return s[round(q * (len(s) - 1))]

    limit = f" of {statistics.median(limits):.0f} W" if limits else ""
    print(f"power: {len(watts)} samples at >= {a.min_watts:.0f} W; SM clock p10/p50/p90 "
          f"{pct(clocks, .1):.0f}/{pct(clocks, .5):.0f}/{pct(clocks, .9):.0f} MHz; power p10/p50/p90 "
          f"{pct(watts, .1):.0f}/{pct(watts, .5):.0f}/{pct(watts, .9):.0f} W, mean {statistics.mean(watts):.0f} W{limit}")
    print("throttle reasons (samples): " + ", ".join(f"{r} {n}" for r, n in reasons.most_common(4)))


if __name__ == "__main__":
    main()
