"""``bmvit eval-ava``: AVA frame-mAP@0.5IoU of a detection CSV, as the official 2019 evaluator.

Prints the per-class markdown table and, last, ``frame-mAP@0.5: X`` (X a fraction, 4 decimals).
``--json`` writes ``{"mAP", "per_class", ...}``; ``--plot DIR`` writes ``DIR/ava_pr.png``.
``--max-dets-per-frame 0`` is the uncapped variant PySlowFast reports (the official keeps 50).
Rules: :mod:`bmvit.evaluation.ava`.
"""

from __future__ import annotations

import time
from pathlib import Path

from bmvit.cli.argtypes import count, number


def add_parser(sub) -> None:
    p = sub.add_parser("eval-ava", help="AVA frame-mAP@0.5 of a detection CSV (official 2019 semantics)")
    p.add_argument("--gt", required=True, type=Path, help="ground-truth CSV (video,timestamp,x1,y1,x2,y2,action,person)")
    p.add_argument("--pred", required=True, type=Path, help="detection CSV (video,timestamp,x1,y1,x2,y2,action,score)")
    p.add_argument("--labelmap", required=True, type=Path, help="label map .pbtxt (the evaluated classes)")
    p.add_argument("--exclusions", type=Path, help="excluded timestamps CSV (video,timestamp)")
    p.add_argument("--max-dets-per-frame", type=count(0), default=50, metavar="N",
                   help="keep the N highest-scoring rows per frame (official: 50; 0 = uncapped, PySlowFast)")
    p.add_argument("--iou", type=number(0, 1, open_min=True), default=0.5, help="IoU threshold (default 0.5)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write metrics as JSON")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write a precision/recall PNG into DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from bmvit.errors import ConfigError
    from bmvit.evaluation.ava import evaluate_ava_files
    from bmvit.evaluation.report import markdown_table, write_json

    if args.max_dets_per_frame < 0:
        raise ConfigError(f"--max-dets-per-frame must be >= 0, got {args.max_dets_per_frame}")
    if not 0.0 < args.iou <= 1.0:
        raise ConfigError(f"--iou must be in (0, 1], got {args.iou}")
    t0 = time.perf_counter()
    res = evaluate_ava_files(args.gt, args.pred, args.labelmap, args.exclusions, args.max_dets_per_frame, args.iou)
    seconds = time.perf_counter() - t0
    keys = res.class_keys()
    names = [keys[k] for k in res.per_class_ap]
    aps = {keys[k]: ap for k, ap in res.per_class_ap.items()}
    cap = args.max_dets_per_frame or "uncapped"
    print(f"AVA frame-mAP@{args.iou:g}IoU, {res.num_frames} frames with GT, detections per frame: {cap} "
          f"({seconds:.2f} s)\n")
    print(markdown_table(names, {f"AP@{args.iou:g}": aps}, {keys[k]: n for k, n in res.num_gt.items()}))
    note = res.unlisted_note()
    if note:
        print(f"\n{note}")
    if args.json:
        doc = res.to_json()
        doc.update({"gt": str(args.gt), "pred": str(args.pred), "labelmap": str(args.labelmap),
                    "exclusions": str(args.exclusions) if args.exclusions else None, "seconds": round(seconds, 3)})
        print(f"\nmetrics: {write_json(args.json, doc)}")
    if args.plot:
        from bmvit.evaluation.plots import plot_pr_curves

        curves = {keys[k]: c for k, c in res.pr_curves.items()}
        png = plot_pr_curves(curves, aps, args.plot / "ava_pr.png",
                             f"AVA frame-mAP@{args.iou:g} = {100 * res.mean_ap:.2f}% (cap {cap})")
        print(f"plot: {png}")
    print(f"frame-mAP@{args.iou:g}: {res.mean_ap:.4f}")
    return 0
