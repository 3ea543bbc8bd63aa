"""``bmvit prepare ava --out DIR``: AVA v2.2 downloaded and prepared in one command (docs/datasets.md).

Registers the ``ava`` verb under ``bmvit prepare`` and turns its options into an
:class:`bmvit.data.prepare.ava.AvaOptions`. Prints one line per video, then the report's summary
(``DIR/prepare_ava_report.json`` has the details). Exit status 0 when every video is present,
1 when some were skipped under ``--on-error skip``, 2 on an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bmvit.cli.argtypes import count, number

# Defaults of bmvit.data.prepare.ava, repeated here so that `bmvit --help` does not import PyAV and torch.
ANNOTATIONS_URL = "https://research.google.com/ava/download/ava_v2.2.zip"
BASE_URL = "https://s3.amazonaws.com/ava-dataset"


def add_parser(verbs) -> None:
    p = verbs.add_parser("ava", help="download AVA v2.2 (annotations, file list, movies) and write its frames")
    p.add_argument("--out", required=True, type=Path, help="dataset folder to fill (data.root, e.g. data/ava)")
    p.add_argument("--splits", default="train,val",
                   help="splits whose videos to get: train,val (default), train or val")
    p.add_argument("--annotations-url", default=ANNOTATIONS_URL,
                   help=f"annotations zip (default {ANNOTATIONS_URL})")
    p.add_argument("--base-url", default=BASE_URL,
                   help="<base>/annotations/ava_file_names_trainval_v2.1.txt and <base>/trainval/<file> "
                        f"(default {BASE_URL})")
    p.add_argument("--start", type=number(0), default=900.0,
                   help="second of the movie that becomes frame 1 (default 900)")
    p.add_argument("--end", type=number(0, open_min=True), default=1800.0,
                   help="stop before this second (default 1800)")
    p.add_argument("--short-side", type=count(8), default=None,
                   help="resize frames to this short side (default: keep size)")
    p.add_argument("--no-frames", action="store_true",
                   help="keep cut videos videos/<vid>.mp4 instead of frames (for data.source=video)")
    p.add_argument("--workers", type=count(1), default=4, help="videos processed at a time (default 4)")
    p.add_argument("--on-error", choices=("error", "skip"), default="error",
                   help="a video that cannot be had stops the run (default) or is reported and skipped")
    p.add_argument("--keep-videos", action="store_true", help="keep the downloaded movies in downloads/videos/")
    p.add_argument("--retries", type=count(0), default=5, help="retries of a download without progress (default 5)")
    p.add_argument("--backoff", type=number(0), default=2.0,
                   help="seconds before the first retry, doubling (default 2)")
    p.add_argument("--timeout", type=number(0, open_min=True), default=60.0,
                   help="seconds without data before a retry (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_ava)


def run_ava(args) -> int:
    from tqdm import tqdm

    from bmvit.data.prepare.ava import REPORT_NAME, AvaOptions, prepare_ava
    from bmvit.data.prepare.ava_report import human_bytes as _size
    from bmvit.data.prepare.frames import Recipe

    opts = AvaOptions(annotations_url=args.annotations_url, base_url=args.base_url,
                      splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
                      recipe=Recipe(fps=30, ext="jpg", quality=90, start=args.start, end=args.end,
                                    short_side=args.short_side),
                      frames=not args.no_frames, workers=args.workers, on_error=args.on_error,
                      keep_videos=args.keep_videos, retries=args.retries, backoff=args.backoff,
                      timeout=args.timeout, progress=not args.no_progress)
    rep = prepare_ava(args.out, opts, log=lambda line: tqdm.write(line, file=sys.stdout))
    v = rep["videos"]
    print(f"videos: {v['expected']} expected, {v['present']} present ({v['written']} written, {v['kept']} kept), "
          f"{v['failed']} failed; downloaded {_size(rep['downloaded_bytes'])} in {rep['seconds']:.1f} s")
    for split, k in rep["keyframes"].items():
        print(f"{split}: {k['present']} of {k['keyframes']} key frames of the CSV on disk "
              f"({k['videos_present']} of {k['videos']} videos)")
    d = rep["disk_bytes"]
    print(f"disk: {_size(d['total'])} (annotations {_size(d['annotations'])}, "
          f"{'frames' if opts.frames else 'videos'} {_size(d['outputs'])}, downloads {_size(d['downloads'])}); "
          f"report: {Path(args.out) / REPORT_NAME}")
    if rep["failed"]:
        ids = [f["video"] for f in rep["failed"]]
        print(f"failed: {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''} (why: the lines above and the report; "
              "a re-run tries them again)", file=sys.stderr)
    src = "data.frames_dir=frames" if opts.frames else "data.source=video data.video_dir=videos data.video_offset=0"
    missing = sum(k["keyframes"] - k["present"] for k in rep["keyframes"].values())
    skip = " data.on_error=skip" if missing else ""  # rows whose frames are not on disk are errors otherwise
    print(f"use: data.root={args.out} {src} data.first_second={args.start:g}{skip}"
          + (f"  ({missing} key frame(s) of the CSVs not on disk: left out, counted)" if missing else ""))
    return 1 if v["failed"] else 0
