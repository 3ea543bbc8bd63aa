"""``bmvit eval-frame``: UCF101-24 / JHMDB frame-mAP of per-frame detections (ACT protocol).

Prints the per-class markdown table and, last, ``frame-mAP@<iou>: X`` (fraction, 4 decimals).
Formats: :mod:`bmvit.evaluation.frame_csv`; rules: :mod:`bmvit.evaluation.frame_map`.
"""

from __future__ import annotations

import time
from pathlib import Path

from bmvit.cli.argtypes import number


def add_parser(sub) -> None:
    p = sub.add_parser("eval-frame", help="frame-mAP of UCF101-24/JHMDB detections (ACT/MOC protocol)")
    p.add_argument("--classes", required=True, type=Path, help="class list, one name per line")
    p.add_argument("--gt", required=True, type=Path, help="GT CSV: video,frame,class_name,x1,y1,x2,y2 (or with tube_id)")
    p.add_argument("--pred", required=True, type=Path, help="detections CSV: video,frame,class_name,score,x1,y1,x2,y2")
    p.add_argument("--iou", type=number(0, 1, open_min=True), default=0.5, help="IoU threshold (default 0.5)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write metrics as JSON")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write a precision/recall PNG into DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from bmvit.errors import ConfigError
    from bmvit.evaluation.frame_map import evaluate_frame_map_files
    from bmvit.evaluation.report import markdown_table, write_json

    if not 0.0 < args.iou <= 1.0:
        raise ConfigError(f"--iou must be in (0, 1], got {args.iou}")
    t0 = time.perf_counter()
    res = evaluate_frame_map_files(args.classes, args.gt, args.pred, args.iou)
    seconds = time.perf_counter() - t0
    classes = list(res.per_class_ap)
    print(f"frame-mAP@{args.iou:g} (ACT protocol), {sum(res.num_gt.values())} GT boxes, "
          f"{sum(res.num_det.values())} detections ({seconds:.2f} s)\n")
    print(markdown_table(classes, {f"AP@{args.iou:g}": res.per_class_ap}, res.num_gt, res.num_det))
    if res.inverted_note:
        print(res.inverted_note)
    if args.json:
        doc = res.to_json()
        doc.update({"classes": str(args.classes), "gt": str(args.gt), "pred": str(args.pred), "seconds": round(seconds, 3)})
        print(f"\nmetrics: {write_json(args.json, doc)}")
    if args.plot:
        from bmvit.evaluation.plots import plot_pr_curves

        png = plot_pr_curves(res.pr_curves, res.per_class_ap, args.plot / "frame_pr.png",
                             f"frame-mAP@{args.iou:g} = {100 * res.mean_ap:.2f}%", interpolated=False)
        print(f"plot: {png}")
    print(f"frame-mAP@{args.iou:g}: {res.mean_ap:.4f}")
    return 0
