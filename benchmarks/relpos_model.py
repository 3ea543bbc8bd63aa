"""The paper-size detector with MViTv2's rel-pos attention folded into extra query/key channels (what
``models/mvit.py`` runs) against the reference's dense additive bias (``rel_pos_attention.dense_bias()``),
one model, the two formulations timed in alternation in one process, plus the largest output
difference of each against float32 with the folded form.

    python benchmarks/relpos_model.py [--dtype bf16|fp32] [--rounds 6] [--threads 2]

MViTv2-S 16×256², last pool removed, 80 classes, random weights (speed does not depend on them);
``--dtype bf16`` is ``bmvit detect --dtype bf16`` (``inference.precision.prepare_model``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from bmvit.config import load_config
from bmvit.engine.host_memory import keep_freed_memory
from bmvit.inference.precision import prepare_model
from bmvit.models.build import build_detector
from bmvit.models.rel_pos_attention import dense_bias

CONFIG = Path(__file__).resolve().parents[1] / "configs/paper/ava/mvitv2s_16x256_out8x16.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    keep_freed_memory()  # as every bmvit verb does
    torch.set_num_threads(args.threads)
    cfg = load_config(CONFIG, ["model.pretrained=null"])
    torch.manual_seed(0)
    ref_model = build_detector(cfg.model, cfg.data, 80, load_pretrained=False).eval()
    model = prepare_model(copy.deepcopy(ref_model), args.dtype)
    clip = torch.randn(1, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size)

    def dense():
        with dense_bias():
            return model(clip)

    modes = {"folded": lambda: model(clip), "dense bias": dense}
    with torch.inference_mode():
        ref = ref_model(clip)
        for name, run in modes.items():
            out = run()  # also the warm-up
            diff = max(float((out[k] - ref[k]).abs().max()) for k in ("actor_logits", "action_logits"))
            print(f"{name}: max |logit - fp32 folded| {diff:.2e}", flush=True)
        times: dict[str, list[float]] = {n: [] for n in modes}
        for r in range(args.rounds):
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for name in order:
                t0 = time.perf_counter()
                modes[name]()
                times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(ts) for n, ts in times.items()}
    for n, ts in times.items():
        print(f"{n}: median {1e3 * med[n]:.0f} ms per clip ({', '.join(f'{1e3 * t:.0f}' for t in ts)})")
    ratios = [d / f for d, f in zip(times["dense bias"], times["folded"])]
    print(f"{args.dtype}, {torch.get_num_threads()} threads: folded {med['dense bias'] / med['folded']:.2f}x faster "
          f"(round by round {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
