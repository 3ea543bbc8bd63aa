"""Backbone latency: bmvit's MViTv2-S against the reference implementation, same machine, same weights.

Usage::

    python benchmarks/backbone.py [--reference PATH/mvit.py] [--size 256] [--frames 16]
                                  [--keep-last-pool] [--runs 5] [--warmup 2] [--threads N] [--json]

The reference is torchvision's ``models/video/mvit.py`` (0.28): the module at ``--reference`` (or
``$BMVIT_REFERENCE_MVIT``; a copy whose torchvision imports were replaced by local equivalents is
fine, its folder is put on ``sys.path``), else an installed ``torchvision``. Without one, only
bmvit is timed. The reference's last Q pool is removed the same way as ours (stride of the block
opening the last stage set to 1×1×1). Both models get the same random weights (the reference's,
converted with ``bmvit.models.checkpoints.mvit.from_torchvision``), so the script also reports the max-abs
difference of the output tokens. Timed runs alternate between the two models (so load from
other processes hits both alike); the ratio is of the medians, batch 1, fp32, inference mode.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bmvit.models.checkpoints.mvit import from_torchvision
from bmvit.models.mvit import mvitv2_s


def load_reference(path: str | None):
    """The reference ``mvit`` module, or None."""
    path = path or os.environ.get("BMVIT_REFERENCE_MVIT")
    if path:
        file = Path(path)
        if not file.is_file():
            raise SystemExit(f"error: reference {file} not found")
        sys.path.insert(0, str(file.parent))
        spec = importlib.util.spec_from_file_location("reference_mvit", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module("torchvision.models.video.mvit")
    except ImportError:
        return None


def build_reference(module, frames: int, size: int, remove_last_pool: bool) -> torch.nn.Module:
    """``mvit_v2_s`` of the reference module at ``frames × size²``, optionally without the last Q pool."""
    original = module._mvit

    def patched(block_setting, *args, **kwargs):
        if remove_last_pool:
            last = max(i for i, b in enumerate(block_setting) if b.stride_q and max(b.stride_q) > 1)
            block_setting[last].stride_q = [1, 1, 1]
        kwargs.update(spatial_size=(size, size), temporal_size=frames)  # mvit_v2_s hard-codes 16×224²
        return original(block_setting, *args, **kwargs)

    module._mvit = patched
    try:
        return module.mvit_v2_s().eval()
    finally:
        module._mvit = original


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="reference mvit.py (default: $BMVIT_REFERENCE_MVIT, then torchvision)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--keep-last-pool", action="store_true", help="time the reference architecture (8×8 output)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    remove = not args.keep_last_pool
    clip = torch.randn(1, 3, args.frames, args.size, args.size)
    ours = mvitv2_s((args.frames, args.size, args.size), remove_last_pool=remove).eval()
    module = load_reference(args.reference)
    ref = None
    if module is not None:
        ref = build_reference(module, args.frames, args.size, remove)
        ours.load_state_dict(from_torchvision(ref.state_dict(), target=ours), strict=True)
    else:
        print("no reference implementation found: timing bmvit only", file=sys.stderr)

    tokens = {}
    if ref is not None:
        ref.norm.register_forward_hook(lambda m, i, o: tokens.__setitem__("ref", o))
    calls = {"bmvit": lambda: tokens.__setitem__("bmvit", ours.forward_tokens(clip)[0])}
    if ref is not None:
        calls["reference"] = lambda: ref(clip)
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            for name, fn in calls.items():  # alternate: background load hits both alike
                t0 = time.perf_counter()
                fn()
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    result = {
        "input": [args.frames, args.size, args.size], "remove_last_pool": remove, "batch": 1, "dtype": "float32",
        "threads": torch.get_num_threads(), "warmup": args.warmup, "runs": args.runs, "torch": torch.__version__,
        **{f"median_s_{k}": statistics.median(v) for k, v in times.items()},
        **{f"times_s_{k}": v for k, v in times.items()},
    }
    if ref is not None:
        result["speedup"] = result["median_s_reference"] / result["median_s_bmvit"]
        result["max_abs_diff"] = (tokens["bmvit"] - tokens["ref"]).abs().max().item()
    if args.json:
        print(json.dumps(result))
        return 0
    t, s = args.frames, args.size
    print(f"MViTv2-S {t}×{s}², last pool {'removed' if remove else 'kept'}, batch 1, fp32, CPU, "
          f"{result['threads']} threads, {args.runs} timed runs after {args.warmup} warm-up")
    for name, v in times.items():
        print(f"  {name:10s} median {statistics.median(v) * 1e3:8.0f} ms   runs {[round(x * 1e3) for x in v]}")
    if ref is not None:
        print(f"  speed-up (reference median / bmvit median): {result['speedup']:.2f}x;"
              f" output tokens max-abs diff {result['max_abs_diff']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
