"""``bmvit flops``: multiply-accumulates, parameters and output token grid of a config's detector.

Counting convention: see :mod:`bmvit.models.flops` (MACs, as torchvision and the paper count
"FLOPs"; MViTv2-S at 16×224² = 64.22 G). Counted on the ``meta`` device: no weights, no data.
"""

from __future__ import annotations

import json
from pathlib import Path

from bmvit.cli.argtypes import count
from bmvit.config import load_config
from bmvit.errors import ConfigError

AVA_CLASSES = 80


def add_parser(sub) -> None:
    p = sub.add_parser("flops", help="GMACs, parameters and token grid of a config's backbone and detector")
    p.add_argument("--config", help="YAML config (default: built-in defaults)")
    p.add_argument("--num-classes", type=count(1), help="action classes of the head (default: from data.label_map "
                   f"when it exists, else {AVA_CLASSES}, AVA's)")
    p.add_argument("--input", metavar="HxW", help="frame size to count at (default: data.size²); e.g. 256x455 for "
                   "a 16:9 frame with data.resize=keep_aspect, whose cost varies with the aspect ratio")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.size=224")
    p.set_defaults(func=run)


def _num_classes(cfg, given: int | None) -> tuple[int, str]:
    if given is not None:
        return given, "--num-classes"
    path = cfg.data.path(cfg.data.label_map)
    if Path(path).is_file():
        from bmvit.data.formats.ava import read_label_map

        return len(read_label_map(path)), str(path)
    return AVA_CLASSES, f"AVA default ({path} not found)"


def run(args) -> int:
    from bmvit.models.flops import detector_cost

    cfg = load_config(args.config, args.overrides)
    num_classes, source = _num_classes(cfg, args.num_classes)
    frame_hw = None
    if args.input:
        try:
            frame_hw = tuple(int(v) for v in args.input.lower().split("x"))
        except ValueError:
            frame_hw = ()
        if len(frame_hw) != 2 or min(frame_hw) <= 0:
            raise ConfigError(f"--input {args.input!r}: expected HxW, e.g. 256x455")
    cost = detector_cost(cfg, num_classes, frame_hw)
    if args.json:
        print(json.dumps({"config": args.config, **cost.to_json(), "remove_last_pool": cfg.model.remove_last_pool,
                          "convention": "MACs (multiply-accumulates), torchvision/paper 'FLOPs'"}))
        return 0
    t, h, w = cost.tokens
    rows = [
        ("config", args.config or "(defaults)"),
        ("backbone", f"{cost.backbone}, " + ("no pooling stages (plain ViT)" if cost.backbone.startswith("vit") else
                                              f"last pool {'removed' if cfg.model.remove_last_pool else 'kept'}")),
        ("input T×H×W", "×".join(map(str, cost.input))),
        ("tokens t×h×w", f"{t}×{h}×{w} ({t * h * w} tokens)"),
        ("GMACs backbone", f"{cost.gmacs_backbone:.2f}"),
        ("GMACs detector", f"{cost.gmacs_total:.2f} (token selection {cost.token_selection}, heads for "
                           f"{num_classes} classes from {source})"),
        ("params", f"{cost.params / 1e6:.2f} M (backbone {cost.params_backbone / 1e6:.2f} M)"),
    ]
    if cfg.data.resize == "keep_aspect" and not args.input:
        rows.append(("note", "data.resize=keep_aspect: frames are not square, so the cost depends on their aspect "
                             "ratio; count one with --input HxW (e.g. 256x455 for 16:9)"))
    for k, v in rows:
        print(f"{k:16s} {v}")
    print("GMACs = multiply-accumulates / 1e9 (the 'GFLOPs' of torchvision and the paper), batch 1")
    return 0
