"""``bmvit prepare import-cvat ANNOTATIONS.xml --video VIDEO --root ROOT``: one CVAT for video 1.1
export into the AVA layout (:mod:`bmvit.data.prepare.cvat_import`; docs/custom-data.md).

Prints the import summary (tracks, key frames, rows per action, boxes clipped, what was written)
and the ``bmvit train`` overrides that read the result.
"""

from __future__ import annotations

from pathlib import Path

from bmvit.cli.argtypes import count, number


def add_verb(verbs) -> None:
    """Register ``import-cvat`` under ``bmvit prepare``."""
    c = verbs.add_parser("import-cvat", help="a CVAT for video 1.1 export (annotations.xml) + its video -> AVA layout")
    c.add_argument("annotations", type=Path, help="annotations.xml of a 'CVAT for video 1.1' task export, or the export's .zip")
    c.add_argument("--video", required=True, type=Path, help="the video the CVAT task was made from")
    c.add_argument("--root", required=True, type=Path, help="dataset folder (data.root): annotations/ and frames/ in it")
    c.add_argument("--split", choices=("train", "val"), default="train", help="annotations/<split>.csv (default train)")
    c.add_argument("--video-id", help="video_id in the CSV and frames folder name (default: the video's file name)")
    c.add_argument("--keyframes-per-second", type=number(0, 1, open_min=True), default=1.0, metavar="K",
                   help="1 (default) or 1/N: a key frame every N whole seconds")
    c.add_argument("--actions", choices=("auto", "label", "attributes"), default="auto",
                   help="actions from the track's label, or from the box's checkbox attributes that are true "
                        "(default auto: attributes if the task declares checkbox attributes)")
    c.add_argument("--fps", type=count(1), default=30, help="frame rate of the extracted frames (data.fps, default 30)")
    c.add_argument("--frames-dir", default="frames", help="frames folder under ROOT (data.frames_dir, default frames)")
    c.set_defaults(func=run)


def run(args) -> int:
    from bmvit.data.prepare.cvat_import import import_cvat

    summary = import_cvat(args.annotations, args.video, args.root, args.split, args.video_id,
                          args.keyframes_per_second, args.actions, args.fps, args.frames_dir)
    for line in summary.lines():
        print(line)
    extra = "".join(f" {k}={v}" for k, v, d in (("data.fps", args.fps, 30), ("data.frames_dir", args.frames_dir, "frames"))
                    if v != d)
    print(f"train with: bmvit train --config CONFIG data.root={args.root} data.first_second=0{extra}")
    return 0
