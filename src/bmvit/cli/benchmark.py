"""``bmvit benchmark``: median latency of a config's backbone (batch 1, fp32, inference).

The clip is ``data.num_frames × data.size²`` and the backbone is built as configured (e.g.
``configs/paper/ava/mvitv2s_16x256_out8x16.yaml``: 16×256², last pool removed) with random
weights — latency does not depend on them. A few warm-up runs, then ``--runs`` timed runs of
``forward_features`` under ``torch.inference_mode``; the median is the figure to quote.
``benchmarks/backbone.py`` compares against the reference implementation.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Callable

import torch

from bmvit.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="median backbone latency (batch 1, fp32)")
    p.add_argument("--config", help="YAML config (default: built-in defaults)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default: 2)")
    p.add_argument("--runs", type=int, default=5, help="timed runs (default: 5)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.size=224")
    p.set_defaults(func=run)


def measure_latency(fn: Callable[[], object], warmup: int, runs: int, device: torch.device) -> list[float]:
    """Seconds per call of ``fn`` for ``runs`` timed calls after ``warmup`` untimed ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return times


def run(args) -> int:
    from bmvit.config import load_config
    from bmvit.models.build import BACKBONES

    if args.runs < 1 or args.warmup < 0:
        raise ConfigError("--runs must be at least 1 and --warmup at least 0")
    cfg = load_config(args.config, args.overrides)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (cfg.data.num_frames, cfg.data.size, cfg.data.size)
    torch.manual_seed(0)
    backbone = BACKBONES[cfg.model.backbone](cfg.model, size).eval().to(device)
    clip = torch.randn(1, 3, *size, device=device)
    times = measure_latency(lambda: backbone.forward_features(clip), args.warmup, args.runs, device)
    result = {
        "config": args.config, "backbone": cfg.model.backbone, "remove_last_pool": cfg.model.remove_last_pool,
        "input": list(size), "device": str(device), "threads": torch.get_num_threads(), "dtype": "float32",
        "batch": 1, "warmup": args.warmup, "runs": args.runs, "median_s": statistics.median(times),
        "min_s": min(times), "times_s": times, "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        t, h, w = size
        print(f"{cfg.model.backbone} (last pool {'removed' if cfg.model.remove_last_pool else 'kept'}) at {t}×{h}×{w}, "
              f"batch 1, fp32, {device} ({torch.get_num_threads()} threads): median {result['median_s'] * 1e3:.0f} ms "
              f"over {args.runs} runs (min {result['min_s'] * 1e3:.0f} ms, {args.warmup} warm-up)")
    return 0
