"""The host's matrix-product rate: the ceiling a model's GFLOP/s (``bmvit benchmark``) is read against.

Times ``--size``² @ ``--size``² products in fp32 and bf16 with ``--threads`` torch threads and
prints the median rate of ``--runs`` products (after 3 warm-ups). Issue 18's real-time budget is
read against it: a detector of G GFLOP per clip needs at least G / rate seconds per clip even if
every operation ran at the matrix-product rate.

    python benchmarks/matmul_peak.py [--threads 2] [--size 2048] [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def rate(dtype: torch.dtype, n: int, runs: int) -> float:
    """Median GFLOP/s of ``n×n @ n×n`` in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        print(f"{name}: {rate(dt, args.size, args.runs):.0f} GFLOP/s ({args.size}² matmul, {args.threads} threads, "
              f"median of {args.runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
