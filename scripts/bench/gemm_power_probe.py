#!/usr/bin/env python3
"""What the vendor's bf16 GEMMs sustain at the card's power limit, at a serving step's shapes.

  python3 scripts/bench/gemm_power_probe.py [--seconds 4] [--json out.json]

A short GEMM benchmark runs at the card's top clock; a serving run keeps the tensor cores busy
for seconds, and an H100 then sits at its power limit with the SM clock lowered
(docs/performance.md, "bf16 serving: where the time goes, and the power cap"). This runs each
shape of a Llama-3-8B serving step (the qkv, o, gate_up and down projections at 1024 and 8192
rows) back to back through torch.matmul (cuBLAS) for --seconds, samples the card with nvidia-smi
meanwhile, and prints the sustained TFLOP/s, the SM clock and power, and the rate as a share of
the tensor cores' peak at that clock (Hopper: 4096 dense bf16 FLOP a clock an SM, which is the
published 989.4 TFLOP/s of an H100 SXM at 1830 MHz). Independent of Lamina's own code: the same
library rate, measured the way the serving run loads the card.
"""
import argparse
import json
import statistics
import subprocess
import time

import torch

from power_summary import NVIDIA_SMI_SAMPLING, power_capped, read_samples  # beside this script

SHAPES = [  # (name, M rows, N outputs, K inputs) of Llama-3-8B's projections
    ("qkv", 6144, 4096),
    ("o", 4096, 4096),
    ("gate_up", 28672, 4096),
    ("down", 4096, 14336),
]
FLOP_PER_CLOCK_SM = 4096  # Hopper tensor cores, dense bf16


def sample_card():
    """Starts nvidia-smi sampling every 100 ms (power_summary.py's query); its stdout: CSV lines."""
    return subprocess.Popen(NVIDIA_SMI_SAMPLING, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def stop_sampling(proc, min_watts=250.0):
    """The samples under load: (SM clocks, watts, the power limit, how many were power-capped)."""
    proc.terminate()
    out, _ = proc.communicate()
    clocks, watts, limits, reasons = read_samples(out.splitlines(), min_watts)
    return clocks, watts, (statistics.median(limits) if limits else None), power_capped(reasons)


def run_shape(name, M, N, K, seconds, sms):
    torch.manual_seed(0)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
    out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(x, w.t(), out=out)
    torch.cuda.synchronize()
    # Calls per timed batch: ~50 ms of work at ~700 TFLOP/s.
    flop = 2.0 * M * N * K
    per_batch = max(1, int(0.05 * 700e12 / flop))
    proc = sample_card()
    start, batches = time.time(), []
    while time.time() - start < seconds:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(per_batch):
            torch.matmul(x, w.t(), out=out)
        b.record()
        b.synchronize()
        batches.append(a.elapsed_time(b) / per_batch)  # ms a call
    clocks, watts, limit, capped = stop_sampling(proc)
    steady = batches[len(batches) // 2:]  # the second half: the card has settled at its limit
    ms = statistics.median(steady)
    tflops = flop / (ms * 1e-3) / 1e12
    first = flop / (batches[0] * 1e-3) / 1e12
    clock = statistics.median(clocks) if clocks else float("nan")
    peak = sms * FLOP_PER_CLOCK_SM * clock * 1e6 / 1e12
    row = {"gemm": name, "M": M, "N": N, "K": K, "tflops_sustained": tflops, "tflops_first_batch": first,
           "sm_clock_p50_mhz": clock, "power_p50_w": statistics.median(watts) if watts else None,
           "power_limit_w": limit, "samples": len(clocks), "samples_power_capped": capped,
           "peak_at_clock_tflops": peak, "share_of_peak_at_clock": tflops / peak if clocks else None}
    print(f"{name:8s} M={M:<5d} N={N:<5d} K={K:<5d} sustained {tflops:6.1f} TFLOP/s (first 50 ms {first:6.1f}); "
          f"SM clock p50 {clock:.0f} MHz, power p50 {row['power_p50_w'] or 0:.0f} W of {limit or 0:.0f}, "
          f"power-capped {capped}/{len(clocks)} samples; {100 * tflops / peak:.0f}% of the "
          f"{peak:.0f} TFLOP/s peak at that clock", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rows", default="1024,8192")
    ap.add_argument("--json")
    a = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}, cuBLAS through torch.matmul")
    rows = []
    for M in (int(r) for r in a.rows.split(",")):
        for name, N, K in SHAPES:
            rows.append(run_shape(name, M, N, K, a.seconds, props.multi_processor_count))
    # The projections' FLOP-weighted rate: what a serving step's GEMMs (lm_head aside) sustain.
    for M in sorted({r["M"] for r in rows}):
        mine = [r for r in rows if r["M"] == M]
        flop = sum(2.0 * r["M"] * r["N"] * r["K"] for r in mine)
        secs = sum(2.0 * r["M"] * r["N"] * r["K"] / (r["tflops_sustained"] * 1e12) for r in mine)
        print(f"a layer's projections at M={M}: {flop / secs / 1e12:.1f} TFLOP/s sustained")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": props.name, "sms": props.multi_processor_count, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
