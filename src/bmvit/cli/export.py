"""``bmvit export``: the whole detector (backbone + token selection + heads + box decoding) to ONNX,
then a parity check against PyTorch with onnxruntime (max abs difference printed)."""

from __future__ import annotations

import json
from pathlib import Path

from bmvit.cli.argtypes import count, number
from bmvit.errors import BmvitError, ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (with an onnxruntime parity check)")
    p.add_argument("--checkpoint", required=True, help="model.safetensors written by `bmvit train`")
    p.add_argument("--format", default="onnx", choices=("onnx",))
    p.add_argument("--out", help="output file (default: next to the checkpoint, <name>.onnx)")
    p.add_argument("--batch", type=count(1), default=1, help="batch size of the traced example (default: 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=number(0), default=1e-4, help="parity check: max abs difference allowed (default: 1e-4)")
    p.add_argument("--threads", type=count(0), default=0, help="torch / onnxruntime CPU threads (0: default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from bmvit.inference.detector import Detector
    from bmvit.inference.export import export_onnx, parity, require_onnx

    require_onnx()
    if args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    if args.threads:
        torch.set_num_threads(args.threads)
    # the network itself: one pass per clip, whatever the checkpoint's test-time averaging
    det = Detector.from_checkpoint(args.checkpoint, device="cpu", hflip_tta=False, time_tta=[])
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else ckpt.with_suffix(".onnx")
    shape = (args.batch, 3, det.num_frames, det.size, det.size)
    export_onnx(det.model, out, shape, args.dynamic_batch)
    result = {"checkpoint": str(ckpt), "onnx": str(out), "input": list(shape), "dynamic_batch": args.dynamic_batch,
              "outputs": {"boxes": "(B, L, 4) xyxy normalized", "actor_scores": "(B, L)", "action_scores": "(B, L, K)"},
              "size_mb": out.stat().st_size / 2**20}
    if not args.no_check:
        check_batch = 2 if args.dynamic_batch else args.batch
        clip = torch.randn(check_batch, *shape[1:], generator=torch.Generator().manual_seed(0))
        diffs = parity(det.model, out, clip, args.threads)
        result.update(parity_batch=check_batch, max_abs_diff=diffs["max"],
                      max_abs_diff_per_output={k: v for k, v in diffs.items() if k != "max"})
    if args.json:
        print(json.dumps(result))
    else:
        print(f"exported {out} ({result['size_mb']:.1f} MiB): clip {tuple(shape)}{' (dynamic batch)' if args.dynamic_batch else ''} "
              f"-> boxes (B, L, 4) xyxy normalized, actor_scores (B, L), action_scores (B, L, K)")
        if not args.no_check:
            print(f"parity vs PyTorch (onnxruntime, fp32, CPU, batch {result['parity_batch']}): "
                  f"max abs diff {result['max_abs_diff']:.2e}")
    if not args.no_check and not result["max_abs_diff"] <= args.tolerance:
        raise BmvitError(f"{out}: onnxruntime differs from PyTorch by {result['max_abs_diff']:.3g} "
                         f"(> --tolerance {args.tolerance:g})")
    return 0
