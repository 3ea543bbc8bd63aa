"""``bmvit synth``: write the synthetic action dataset in the AVA layout."""

from __future__ import annotations

import sys
import time

from bmvit.cli.argtypes import count
from bmvit.data.synthetic import SPEC_RANGES, SynthSpec, generate


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="generate the built-in synthetic action dataset (AVA layout)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--videos", type=count(*SPEC_RANGES["train_videos"]), default=SynthSpec.train_videos, help="training videos")
    p.add_argument("--val-videos", type=count(*SPEC_RANGES["val_videos"]), default=SynthSpec.val_videos, help="validation videos (seed + 1)")
    p.add_argument("--seconds", type=count(*SPEC_RANGES["seconds"]), default=SynthSpec.seconds, help="length of each video")
    p.add_argument("--seed", type=count(*SPEC_RANGES["seed"]), default=SynthSpec.seed)
    p.add_argument("--width", type=count(*SPEC_RANGES["width"]), default=SynthSpec.width)
    p.add_argument("--height", type=count(*SPEC_RANGES["height"]), default=SynthSpec.height)
    p.add_argument("--workers", type=count(0), default=0, help="processes (0: one per core)")
    p.add_argument("--force", action="store_true", help="regenerate even if the folder matches")
    p.set_defaults(func=run)


def run(args) -> int:
    spec = SynthSpec(train_videos=args.videos, val_videos=args.val_videos, seconds=args.seconds,
                     seed=args.seed, width=args.width, height=args.height)
    t0 = time.perf_counter()
    root = generate(args.out, spec, workers=args.workers or None, force=args.force)
    print(f"synthetic dataset in {args.out} ({spec.train_videos} train + {spec.val_videos} val videos, "
          f"{time.perf_counter() - t0:.1f} s)")
    for split, videos in (("train", spec.train_videos), ("val", spec.val_videos)):
        csv = root / "annotations" / f"{split}.csv"
        if not csv.stat().st_size:  # few short videos may hold no annotated key frame at all
            print(f"warning: {csv}: the {split} split has no annotated key frame ({videos} video(s) of "
                  f"{spec.seconds} s); `bmvit train` needs some: use more --{'videos' if split == 'train' else 'val-videos'}, "
                  f"--seconds or another --seed", file=sys.stderr)
    return 0
