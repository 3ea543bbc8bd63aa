"""``bmvit train``: train a detector from a YAML config plus ``key=value`` overrides."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from bmvit.cli.argtypes import count
from bmvit.config import load_config, to_dict


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a detector")
    p.add_argument("--config", help="YAML config (default: built-in defaults)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    start = p.add_mutually_exclusive_group()  # continue a run, or discard it: not both
    start.add_argument("--resume", metavar="auto|DIR", help="continue from the newest intact checkpoint of train.out_dir "
                   "('auto'; starts fresh if there is none) or from a checkpoint folder")
    start.add_argument("--overwrite", action="store_true", help="discard checkpoints of an earlier run in train.out_dir")
    p.add_argument("--render", type=count(0), default=0, metavar="N",
                   help="draw N val videos with the final evaluation's predictions and GT (RUN/eval/render_*.mp4)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=3e-4")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from bmvit.cli.eval import print_evaluation, render_videos
    from bmvit.engine.train import train

    final = train(cfg, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    rendered = []
    if args.render:  # from the final evaluation's detections: no second evaluation
        from bmvit.data.build import make_dataset

        rendered = render_videos(make_dataset(cfg, "val"), final["detections"], Path(cfg.train.out_dir) / "eval",
                                 args.render)
    print(f"trained {final['step']} steps in {final['train_minutes']:.1f} min (run folder {cfg.train.out_dir}); "
          f"the final evaluation on val:")
    print_evaluation(final["report"], rendered, final["val_frame_map"])  # as bmvit eval: last line frame-mAP@0.5: X
    return 0
