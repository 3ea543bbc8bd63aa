"""``bmvit eval-video``: UCF101-24 / JHMDB video-mAP (ACT protocol) at 0.2, 0.5, 0.75, 0.5:0.95.

Per-frame detections (``--pred``) are linked into tubes first (:mod:`bmvit.evaluation.tube_linking`;
``--tubes-out`` saves them); ``--pred-tubes`` takes already-linked tubes instead. GT must carry
tube ids. Prints the per-class markdown table and, last, one line per threshold
``video-mAP@<t>: X``. Formats: :mod:`bmvit.evaluation.frame_csv`; rules:
:mod:`bmvit.evaluation.video_map`.
"""

from __future__ import annotations

import time
from pathlib import Path

from bmvit.cli.argtypes import count, number


def add_parser(sub) -> None:
    p = sub.add_parser("eval-video", help="video-mAP of UCF101-24/JHMDB detections (tube linking + ACT protocol)")
    p.add_argument("--classes", required=True, type=Path, help="class list, one name per line")
    p.add_argument("--gt", required=True, type=Path, help="GT tube CSV: video,frame,class_name,tube_id,x1,y1,x2,y2")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", type=Path, help="per-frame detections CSV: video,frame,class_name,score,x1,y1,x2,y2")
    src.add_argument("--pred-tubes", type=Path, help="linked tubes CSV: video,frame,class_name,tube_id,score,x1,y1,x2,y2")
    p.add_argument("--link-iou", type=number(0, 1), default=0.5, help="linking: min IoU with a tube's last box (0.5)")
    p.add_argument("--frame-nms", type=number(None, 1), default=0.6, help="linking: per-frame NMS IoU, <= 0 disables (0.6)")
    p.add_argument("--top-k", type=count(1), default=10, help="linking: boxes kept per frame and class (10)")
    p.add_argument("--min-tube-length", type=count(1), default=15, help="linking: drop shorter tubes, in frames (15)")
    p.add_argument("--min-tube-score", type=number(), default=0.005, help="linking: drop tubes scoring less (0.005)")
    p.add_argument("--tube-nms", type=number(None, 1), default=0.3, help="3-D NMS ST-IoU per video and class, <= 0 disables (0.3)")
    p.add_argument("--tubes-out", type=Path, help="write the linked tubes here (the --pred-tubes format)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write metrics as JSON")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write a precision/recall PNG (at 0.5) into DIR")
    p.set_defaults(func=run)


def write_tubes(path: Path, tubes, classes: list[str]) -> Path:
    """Write tubes as ``video,frame,class_name,tube_id,score,x1,y1,x2,y2`` rows (score = tube score)."""
    from bmvit.atomic import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:  # a kill leaves no half file; OutputError if unwritable
        for t in range(len(tubes)):
            lo, hi = tubes.offsets[t], tubes.offsets[t + 1]
            head = f"{tubes.videos[t]}"
            f.writelines(f"{head},{fr},{classes[tubes.labels[t]]},{tubes.names[t]},{tubes.scores[t]:.6f},"
                        f"{x1:.2f},{y1:.2f},{x2:.2f},{y2:.2f}\n" for fr, (x1, y1, x2, y2) in zip(tubes.frames[lo:hi].tolist(), tubes.boxes[lo:hi].tolist()))
    return path


def run(args) -> int:
    from bmvit.errors import ConfigError
    from bmvit.evaluation.frame_csv import (
        inverted_note,
        read_classes,
        read_detected_tubes,
        read_detections,
        read_gt,
    )
    from bmvit.evaluation.report import markdown_table, write_json
    from bmvit.evaluation.tube_linking import LinkingParams, link_tubes
    from bmvit.evaluation.tubes import tubes_from_rows
    from bmvit.evaluation.video_map import evaluate_video_map

    for name in ("link_iou", "min_tube_score"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if args.top_k < 1 or args.min_tube_length < 1:
        raise ConfigError("--top-k and --min-tube-length must be >= 1")
    t0 = time.perf_counter()
    classes = read_classes(args.classes)
    gt = tubes_from_rows(read_gt(args.gt, classes, tubes=True))
    params = LinkingParams(args.link_iou, args.frame_nms if args.frame_nms > 0 else None, args.top_k,
                           args.min_tube_length, args.min_tube_score)
    rows = read_detected_tubes(args.pred_tubes, classes) if args.pred_tubes else read_detections(args.pred, classes)
    if args.pred_tubes:
        det = tubes_from_rows(rows)
    else:
        det = link_tubes(rows, params)
        if args.tubes_out:
            print(f"linked tubes: {write_tubes(args.tubes_out, det, classes)}")
    res = evaluate_video_map(gt, det, classes, args.tube_nms if args.tube_nms > 0 else None)
    seconds = time.perf_counter() - t0
    summary = res.summary()
    print(f"video-mAP (ACT protocol), {len(gt)} GT tubes, {len(det)} detected tubes "
          f"({sum(res.num_det.values())} after tube NMS) ({seconds:.2f} s)\n")
    columns = {f"AP@{t:g}": res.per_class_ap[t] for t in res.reported}
    columns["AP@0.5:0.95"] = res.per_class_50_95()
    print(markdown_table(classes, columns, res.num_gt, res.num_det))
    note = inverted_note(rows)
    if note:
        print(note)
    if args.json:
        doc = res.to_json()
        doc.update({"classes": str(args.classes), "gt": str(args.gt), "pred": str(args.pred or args.pred_tubes),
                    "num_inverted_detection_boxes": int(rows.inverted().sum()),
                    "linking": None if args.pred_tubes else params.__dict__, "tube_nms": args.tube_nms,
                    "seconds": round(seconds, 3)})
        print(f"\nmetrics: {write_json(args.json, doc)}")
    if args.plot:
        from bmvit.evaluation.plots import plot_pr_curves

        png = plot_pr_curves(res.pr_curves[0.5], res.per_class_ap[0.5], args.plot / "video_pr.png",
                             f"video-mAP@0.5 = {100 * res.mean_ap(0.5):.2f}%", interpolated=False)
        print(f"plot: {png}")
    for key, value in summary.items():
        print(f"video-mAP@{key}: {value:.4f}")
    return 0
