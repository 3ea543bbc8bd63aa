"""UCF101-24 / JHMDB frame-mAP@IoU, as ACT and MOC-Detector compute it (``frameAP``).

Contract: :func:`evaluate_frame_map` takes GT boxes and per-frame detections (see
:mod:`bmvit.evaluation.frame_csv` for the CSV format) and returns per-class AP and their mean.
Rules (ACT's; shared ones are detailed in :mod:`bmvit.evaluation.act_protocol`):

1. A GT group is ``(video, frame, class)``; GT rows are not de-duplicated and keep file order
   (the order "first on ties" refers to). Detections are compared only with the GT of their
   own frame and class.
2. Per class, detections are ranked by score over the whole split (ties in file order).
3. Each detection takes the *remaining* GT box of highest IoU in its frame; IoU >= threshold
   makes it a TP and removes the box, otherwise it is a FP. IoU uses the +1 pixel convention
   on absolute boxes. Detections on frames without GT of their class are FPs.
4. AP is the trapezoid over the raw precision/recall points from (R=0, P=1). The mean is over
   classes that have GT; a class with GT but no detections scores 0. A class without GT is
   NaN and left out (ACT averages over all classes and would divide by zero for such a class
   if it had detections; with none it would count it as 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmvit.evaluation.act_protocol import (
    match_best_remaining,
    pairs_by_group,
    pixel_iou,
    rank_order,
    trapezoid_ap,
)
from bmvit.evaluation.frame_csv import (
    FrameRows,
    inverted_note,
    read_classes,
    read_detections,
    read_gt,
    shared_codes,
)
from bmvit.evaluation.report import json_number, nan_mean

__all__ = ["FrameMapResult", "evaluate_frame_map", "evaluate_frame_map_files"]


@dataclass
class FrameMapResult:
    """Per-class frame-AP of one evaluation, keyed by class name (class-list order)."""

    iou_threshold: float
    per_class_ap: dict[str, float]  # NaN: class without GT
    num_gt: dict[str, int]
    num_det: dict[str, int]
    # class -> (precision (N,), recall (N,)) in rank order, for classes with GT
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    num_inverted: int = 0  # detection boxes with x2 < x1 or y2 < y1 (scored as ACT does)
    inverted_note: str | None = None  # one line about them for the user (frame_csv.inverted_note)

    @property
    def mean_ap(self) -> float:
        return nan_mean(self.per_class_ap.values())

    def to_json(self) -> dict:
        return {
            "metric": f"frame_mAP@{self.iou_threshold:g}IoU (ACT protocol)",
            "mAP": json_number(self.mean_ap),
            "per_class": {k: json_number(v) for k, v in self.per_class_ap.items()},
            "iou_threshold": self.iou_threshold,
            "num_gt": self.num_gt,
            "num_det": self.num_det,
            "num_inverted_detection_boxes": self.num_inverted,
        }


def evaluate_frame_map(
    gt: FrameRows, det: FrameRows, classes: list[str], iou_threshold: float = 0.5
) -> FrameMapResult:
    """Frame-AP per class and their mean under the rules of the module docstring."""
    num_classes = len(classes)
    gv, dv = shared_codes(gt.videos, det.videos)
    # Group (video, frame, class) as one int64: frames are shifted to start at 0.
    f0 = min(int(gt.frames.min(initial=0)), int(det.frames.min(initial=0)))
    span = max(int(gt.frames.max(initial=0)), int(det.frames.max(initial=0))) - f0 + 1
    gt_group = ((gv * span) + (gt.frames - f0)) * num_classes + gt.labels  # (G,)
    rank = rank_order(det.scores)  # (D,) detection row at each rank position
    det_group = ((dv[rank] * span) + (det.frames[rank] - f0)) * num_classes + det.labels[rank]  # (D,)

    # Pairs: each ranked detection with every GT box of its group (GT index = row, file order).
    pair_det, pair_gt = pairs_by_group(det_group, gt_group)
    pair_iou = pixel_iou(det.boxes[rank][pair_det], gt.boxes[pair_gt])
    _, dense_group = np.unique(det_group, return_inverse=True)
    tp = match_best_remaining(pair_det, pair_gt, pair_iou, dense_group.reshape(-1), len(gt), iou_threshold)

    det_labels = det.labels[rank]
    gt_counts = np.bincount(gt.labels, minlength=num_classes)
    det_counts = np.bincount(det_labels, minlength=num_classes)
    per_class, curves = {}, {}
    for c, name in enumerate(classes):
        if gt_counts[c] == 0:
            per_class[name] = math.nan
            continue
        flags = tp[det_labels == c]  # rank order within the class
        ap, precision, recall = trapezoid_ap(flags, int(gt_counts[c]))
        per_class[name], curves[name] = ap, (precision, recall)
    return FrameMapResult(
        iou_threshold=iou_threshold,
        per_class_ap=per_class,
        num_gt={n: int(gt_counts[c]) for c, n in enumerate(classes)},
        num_det={n: int(det_counts[c]) for c, n in enumerate(classes)},
        pr_curves=curves,
        num_inverted=int(det.inverted().sum()),
        inverted_note=inverted_note(det),
    )


def evaluate_frame_map_files(
    classes_txt: str | Path, gt_csv: str | Path, det_csv: str | Path, iou_threshold: float = 0.5
) -> FrameMapResult:
    """:func:`evaluate_frame_map` on files (formats in :mod:`bmvit.evaluation.frame_csv`)."""
    classes = read_classes(classes_txt)
    return evaluate_frame_map(read_gt(gt_csv, classes), read_detections(det_csv, classes), classes, iou_threshold)
