"""Decoding + preprocessing in the model's thread (``prefetch_batches=0``, the former behaviour) vs
on the background thread (``prefetch_batches=2``): wall time against the model's forward time for
the same detector and video, rounds interleaved in one process.

    python benchmarks/detect_overlap.py CHECKPOINT VIDEO [--rounds 3] [--batch 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from bmvit.inference.detector import Detector
from bmvit.inference.video_source import open_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("video")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    det = Detector.from_checkpoint(args.checkpoint, batch_size=args.batch)
    res: dict[int, list[tuple[float, float]]] = {0: [], 2: []}
    n = 0
    for _ in range(args.rounds):
        for pf in res:
            f0, t0 = det.forward_seconds, time.perf_counter()
            n = sum(1 for _ in det.iter_keyframes(open_source(args.video), 1.0, prefetch_batches=pf))
            res[pf].append((time.perf_counter() - t0, det.forward_seconds - f0))
    for pf, rows in res.items():
        w, f = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        print(f"prefetch {pf}: {n} key frames, wall {w:.2f} s, forward {f:.2f} s, wall/forward {w / f:.2f}")
    print(f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
