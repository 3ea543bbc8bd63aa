"""``bmvit prepare``: turn raw data into what the readers take (docs/datasets.md).

``bmvit prepare frames --videos DIR --out DIR`` extracts frames into the AVA layout with the
pinned recipe of :mod:`bmvit.data.prepare.frames` and prints what it did (one line per video, then a
summary; ``<out>/prepare_report.json`` keeps the details). ``bmvit prepare act-gt --pkl FILE
--split N --out DIR`` writes the test-split ground truth of an ACT pickle for evaluation
(:mod:`bmvit.data.formats.act_export`).
"""

from __future__ import annotations

from pathlib import Path

from bmvit.cli.argtypes import count, number


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="extract frames from videos (AVA layout) / export UCF-JHMDB ground truth")
    verbs = p.add_subparsers(dest="what", required=True)
    f = verbs.add_parser("frames", help="videos -> <out>/<id>/<id>_%%06d.jpg at a fixed frame rate (PyAV)")
    f.add_argument("--videos", required=True, type=Path, help="folder of video files (mp4, mkv, webm, avi, mov, m4v, mts, ...)")
    f.add_argument("--out", required=True, type=Path, help="frames folder to write (data.frames_dir)")
    f.add_argument("--fps", type=count(1), default=30, help="frame rate of the grid (default 30; data.fps)")
    f.add_argument("--start", type=number(0), default=0.0,
                   help="second of each video that becomes frame 1 (AVA full movies: 900; default 0)")
    f.add_argument("--end", type=number(0, open_min=True), default=None, help="stop before this second (AVA full movies: 1800)")
    f.add_argument("--ext", choices=("jpg", "png"), default="jpg", help="jpg (default) or lossless png")
    f.add_argument("--quality", type=count(1, 95), default=90, help="JPEG quality 1..95 (default 90)")
    f.add_argument("--short-side", type=count(1), default=None, help="resize to this short side (default: keep size)")
    f.add_argument("--on-error", choices=("error", "skip"), default="error",
                   help="a bad video stops the run (default) or is reported and skipped")
    f.add_argument("--overwrite", action="store_true", help="redo videos whose folder exists")
    f.set_defaults(func=run_frames)
    a = verbs.add_parser("act-gt", help="test-split GT of an ACT pickle (UCF101-24 / JHMDB) as evaluation CSVs")
    a.add_argument("--pkl", required=True, type=Path, help="UCF101v2-GT.pkl / JHMDB-GT.pkl")
    a.add_argument("--split", type=count(1), default=1, help="split number (default 1)")
    a.add_argument("--out", required=True, type=Path, help="folder for the CSVs (e.g. <root>/annotations)")
    a.add_argument("--prefix", default=None, help="file-name prefix (default: ucf24 / jhmdb from the pkl name)")
    a.set_defaults(func=run_act_gt)
    from bmvit.cli import prepare_ava  # bmvit prepare ava: download + frames in one command

    prepare_ava.add_parser(verbs)
    from bmvit.cli import prepare_cvat  # bmvit prepare import-cvat: a CVAT for video export -> AVA layout

    prepare_cvat.add_verb(verbs)


def run_frames(args) -> int:
    from bmvit.data.prepare.frames import REPORT_NAME, Recipe, prepare_frames

    recipe = Recipe(fps=args.fps, ext=args.ext, quality=args.quality, start=args.start, end=args.end,
                    short_side=args.short_side)
    reports = prepare_frames(args.videos, args.out, recipe, on_error=args.on_error, overwrite=args.overwrite)
    counts = {s: sum(r.status == s for r in reports) for s in ("written", "exists", "failed")}
    frames = sum(r.frames for r in reports if r.status == "written")
    print(f"prepared {len(reports)} video(s) into {args.out}: {counts['written']} written ({frames} frames), "
          f"{counts['exists']} kept, {counts['failed']} failed; recipe: {args.fps} fps from {args.start:g} s, "
          f"{args.ext}{f' q{args.quality}' if args.ext == 'jpg' else ''}"
          f"{f', short side {args.short_side}' if args.short_side else ''}; report: {args.out / REPORT_NAME}")
    print(f"use: data.frames_dir=<this folder relative to data.root> data.fps={args.fps} "
          f"data.first_second=<second of frame 1 in your CSVs (AVA: 900)>")
    return 1 if counts["failed"] else 0


def run_act_gt(args) -> int:
    from bmvit.data.formats.act_export import write_act_gt
    from bmvit.data.formats.act import read_act_pkl

    prefix = args.prefix or ("jhmdb" if "jhmdb" in args.pkl.name.lower() else "ucf24")
    ann = read_act_pkl(args.pkl)
    paths = write_act_gt(ann, args.split, args.out, prefix)
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0
