"""fp32, bf16 autocast, bf16 backbone (``--dtype bf16``), dynamic int8 (``--quantize int8``) and,
with ``--compile``, the bf16 backbone through ``torch.compile`` (``bmvit benchmark --dtype bf16
--compile``) timed in turn in one process — load hits all modes alike — with the max |Δ| of their
outputs against fp32 and the median of the per-round speed ratios against fp32.

onnxruntime is not timed here: with onnxruntime sessions in the same process the PyTorch modes ran
~2.5x slower (bf16 7.7 s per clip vs 2.9-3.3 s in a process of its own at the same load; cause not
isolated, its own thread pool the likely one); compare it with ``bmvit benchmark --onnx [--quantize
int8]``, one process per mode.

Each forward is timed by the wall clock and by the process's CPU time (``time.process_time``, all
threads): on a machine shared with other jobs the wall clock mostly measures the others, the CPU
time still measures this process's work; the ratios of both are printed.

    python benchmarks/precision_speed.py [--runs 5] [--compile] [--config configs/paper/ava/mvitv2s_16x256_out8x16.yaml] [key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from bmvit.config import load_config
from bmvit.inference.precision import compile_backbone, prepare_model
from bmvit.models.build import build_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/paper/ava/mvitv2s_16x256_out8x16.yaml")
    ap.add_argument("--runs", type=int, default=5, help="timed rounds after one warm-up round (the ratios are medians over rounds)")
    ap.add_argument("--num-classes", type=int, default=80)
    ap.add_argument("--compile", action="store_true", help="also time the compiled bf16 backbone (compiles first: minutes)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, ["model.pretrained=null", *args.overrides])
    torch.manual_seed(0)
    base = build_detector(cfg.model, cfg.data, args.num_classes, load_pretrained=False).eval()
    x = torch.randn(1, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size)  # (1, 3, T, S, S)
    modes = {"fp32": base, "bf16 autocast": base, "bf16 backbone": prepare_model(copy.deepcopy(base), "bf16"),
             "int8": prepare_model(copy.deepcopy(base), "fp32", "int8")}
    if args.compile:
        compiled = prepare_model(copy.deepcopy(base), "bf16")
        seconds = compile_backbone(compiled, 1).warm_up(tuple(x.shape[1:]))
        print(f"bf16 compiled: compilation {seconds:.1f} s", flush=True)
        modes["bf16 compiled"] = compiled
    wall: dict[str, list[float]] = {k: [] for k in modes}
    cpu: dict[str, list[float]] = {k: [] for k in modes}
    outs = {}
    with torch.inference_mode():
        for r in range(args.runs + 1):
            for k, m in modes.items():
                with torch.autocast("cpu", torch.bfloat16, enabled=k == "bf16 autocast"):
                    c0, t0 = time.process_time(), time.perf_counter()
                    outs[k] = m(x)
                    dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if r:
                    wall[k].append(dt)
                    cpu[k].append(dc)
    for k in modes:
        d = {n: float((outs[k][n].float() - outs["fp32"][n].float()).abs().max()) for n in ("boxes", "actor_logits", "action_logits")}
        w, c = statistics.median(wall[k]), statistics.median(cpu[k])
        rw = statistics.median(a / b for a, b in zip(wall["fp32"], wall[k]))  # per round: same load
        rc = statistics.median(a / b for a, b in zip(cpu["fp32"], cpu[k]))
        print(f"{k:14s} median {w:.2f} s wall ({rw:.2f}x vs fp32), {c:.2f} s CPU ({rc:.2f}x)  max|diff| "
              + ", ".join(f"{n} {v:.4f}" for n, v in d.items()))
    print(f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
