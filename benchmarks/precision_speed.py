"""fp32, bf16 autocast, bf16 backbone (``--dtype bf16``) and dynamic int8 (``--quantize int8``) timed
in turn in one process — load hits all four alike — with the max |Δ| of their outputs against fp32.

    python benchmarks/precision_speed.py [--runs 2] [--config configs/paper/ava/mvitv2s_16x256_out8x16.yaml] [key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from bmvit.config import load_config
from bmvit.inference.precision import prepare_model
from bmvit.models.build import build_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/paper/ava/mvitv2s_16x256_out8x16.yaml")
    ap.add_argument("--runs", type=int, default=2, help="timed rounds after one warm-up round")
    ap.add_argument("--num-classes", type=int, default=80)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, ["model.pretrained=null", *args.overrides])
    torch.manual_seed(0)
    base = build_detector(cfg.model, cfg.data, args.num_classes, load_pretrained=False).eval()
    x = torch.randn(1, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size)  # (1, 3, T, S, S)
    modes = {"fp32": base, "bf16 autocast": base, "bf16 backbone": prepare_model(copy.deepcopy(base), "bf16"),
             "int8": prepare_model(copy.deepcopy(base), "fp32", "int8")}
    times: dict[str, list[float]] = {k: [] for k in modes}
    outs = {}
    with torch.inference_mode():
        for r in range(args.runs + 1):
            for k, m in modes.items():
                with torch.autocast("cpu", torch.bfloat16, enabled=k == "bf16 autocast"):
                    t = time.perf_counter()
                    outs[k] = m(x)
                    dt = time.perf_counter() - t
                if r:
                    times[k].append(dt)
    ref = statistics.median(times["fp32"])
    for k in modes:
        d = {n: float((outs[k][n].float() - outs["fp32"][n].float()).abs().max()) for n in ("boxes", "actor_logits", "action_logits")}
        med = statistics.median(times[k])
        print(f"{k:14s} median {med:.2f} s  {ref / med:.2f}x vs fp32  max|diff| " + ", ".join(f"{n} {v:.4f}" for n, v in d.items()))
    print(f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
