"""Accuracy of each inference mode on the synthetic val split, the compiled backbone included.

For fp32, bf16 (``bmvit detect --dtype bf16``), int8 (``--quantize int8``) and the bf16 backbone
through ``torch.compile`` (``inference.precision.compile_backbone``, for ``eval.batch_size`` clips):
the val frame-mAP@0.5 of a trained checkpoint (the evaluation of ``bmvit eval``:
``engine.evaluate.evaluate_split``) and its difference to fp32, one mode after the other in one
process.

    python benchmarks/runtime_accuracy.py --run runs/demo [--data data/synthetic] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from bmvit.config import load_config
from bmvit.data.build import make_dataset
from bmvit.engine.checkpoint import load_weights
from bmvit.engine.evaluate import evaluate_split
from bmvit.inference.precision import compile_backbone, prepare_model
from bmvit.models.build import build_detector

MODES = (("fp32", "fp32", None, False), ("bf16", "bf16", None, False), ("int8", "fp32", "int8", False),
         ("bf16 compiled", "bf16", None, True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="training run folder (config.yaml + model.safetensors or best.safetensors)")
    ap.add_argument("--weights", default="model.safetensors", help="file in --run (default: model.safetensors)")
    ap.add_argument("--data", help="data.root override (default: the run's)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(os.path.join(args.run, "config.yaml"), [f"data.root={args.data}"] if args.data else [])
    state, _, _ = load_weights(os.path.join(args.run, args.weights))
    ds = make_dataset(cfg, "val")
    clip_shape = (3, cfg.data.num_frames, cfg.data.size, cfg.data.size)
    ref = None
    for name, dtype, quantize, compiled in MODES:
        model = build_detector(cfg.model, cfg.data, len(ds.labels), load_pretrained=False)
        model.load_state_dict(state)
        model = prepare_model(model.eval(), dtype, quantize)
        if compiled:
            seconds = compile_backbone(model, cfg.eval.batch_size).warm_up(clip_shape)
            print(f"{name}: compilation {seconds:.1f} s", flush=True)
        t0 = time.perf_counter()
        res, _ = evaluate_split(model, ds, cfg.data.path(cfg.data.val_csv), cfg, torch.device("cpu"), progress=False)
        dt = time.perf_counter() - t0
        ref = res.mean_ap if ref is None else ref
        print(f"{name}: val frame-mAP@0.5 {res.mean_ap:.4f} (vs fp32 {res.mean_ap - ref:+.4f}), evaluation {dt:.1f} s, "
              f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
