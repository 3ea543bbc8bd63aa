"""The paper-size detector (MViTv2-S 16×256², last pool removed) on CPU with its rel-pos biases in
one shared buffer per forward pass (``models/mvit.py: _BiasArena``, the default) against a fresh
buffer per block (the code before), timed in turn in one process so both see the same machine load.

    python benchmarks/bias_arena.py [--dtype bf16|fp32] [--rounds 8] [--threads 2]

Prints each round and the median seconds per clip of both, their ratio and the median of the
round-by-round ratios (> 1: the shared buffer is faster). The outputs are checked to be identical.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import bmvit.models.mvit as mvit
from bmvit.config import load_config
from bmvit.inference.precision import prepare_model
from bmvit.models.build import build_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shared = mvit._BiasArena.take
    modes = {"fresh": lambda self, q, shape: q.new_empty(shape), "shared": shared}
    cfg = load_config("configs/paper/ava/mvitv2s_16x256_out8x16.yaml", ["model.pretrained=null"])
    torch.manual_seed(0)
    model = prepare_model(build_detector(cfg.model, cfg.data, 80, load_pretrained=False).eval(), args.dtype, None,
                          torch.device("cpu"))
    x = torch.randn(1, 3, 16, 256, 256)
    times: dict[str, list[float]] = {name: [] for name in modes}
    try:
        with torch.inference_mode():
            outs = {}
            for name, take in modes.items():  # also the warm-up
                mvit._BiasArena.take = take
                outs[name] = model(x)["actor_logits"]
            if not torch.equal(outs["fresh"], outs["shared"]):
                raise SystemExit("error: the two modes disagree")
            for r in range(args.rounds):
                for name in (("fresh", "shared") if r % 2 == 0 else ("shared", "fresh")):
                    mvit._BiasArena.take = modes[name]
                    t0 = time.perf_counter()
                    model(x)
                    times[name].append(time.perf_counter() - t0)
                print(f"round {r}: " + ", ".join(f"{n} {v[-1]:.3f} s" for n, v in times.items()), flush=True)
    finally:
        mvit._BiasArena.take = shared
    f, s = statistics.median(times["fresh"]), statistics.median(times["shared"])
    pairs = statistics.median(a / b for a, b in zip(times["fresh"], times["shared"]))
    print(f"{args.dtype}, {args.threads} threads: median fresh {f:.3f} s, shared {s:.3f} s per clip; "
          f"ratio {f / s:.3f}, round-by-round {pairs:.3f}")


if __name__ == "__main__":
    main()
