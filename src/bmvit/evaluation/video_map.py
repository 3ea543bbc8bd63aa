"""Video-mAP for UCF101-24 / JHMDB, as ACT and MOC-Detector compute it (``videoAP``).

Contract: :func:`evaluate_video_map` takes GT tubes and detected tubes (linked with
:mod:`bmvit.evaluation.tube_linking`, or given) and returns per-class video-AP at each IoU
threshold: by default 0.2, 0.5 and 0.75, plus 0.5:0.95 = the mean of the mAPs at
0.50, 0.55, ..., 0.95 (MOC-Detector's ``videoAP_all``). Rules:

1. **Tube NMS.** Per (video, class), detected tubes go through greedy 3-D NMS: by descending
   score (ties: input order), a tube is dropped if its ST-IoU with an already kept tube is
   > ``tube_nms`` (ACT: 0.3; None: off).
2. **Matching and AP** (:mod:`bmvit.evaluation.act_protocol`): per class, tubes are ranked by
   score over the split (ties in input order); each takes the *remaining* GT tube of its video
   and class with the highest ST-IoU (:func:`bmvit.evaluation.tubes.st_iou`; first GT tube in
   file order on ties); ST-IoU >= threshold makes it a TP and removes the GT tube. AP is the
   trapezoid over raw precision/recall from (R=0, P=1).
3. The mean is over classes with GT tubes; a class with GT but no tubes scores 0; a class
   without GT is NaN and left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bmvit.evaluation.act_protocol import (
    match_best_remaining,
    pairs_by_group,
    rank_order,
    trapezoid_ap,
)
from bmvit.evaluation.frame_csv import shared_codes
from bmvit.evaluation.report import json_number, nan_mean
from bmvit.evaluation.tubes import Tubes, st_iou

__all__ = ["RANGE_50_95", "REPORTED", "VideoMapResult", "evaluate_video_map", "tube_nms"]

REPORTED = (0.2, 0.5, 0.75)
RANGE_50_95 = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass
class VideoMapResult:
    """Per-class video-AP at each evaluated threshold, keyed by class name (class-list order)."""

    per_class_ap: dict[float, dict[str, float]]  # threshold -> class -> AP (NaN: no GT)
    num_gt: dict[str, int]  # GT tubes per class
    num_det: dict[str, int]  # detected tubes per class after tube NMS
    reported: tuple[float, ...] = REPORTED
    pr_curves: dict[float, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict, repr=False)

    def mean_ap(self, threshold: float) -> float:
        return nan_mean(self.per_class_ap[threshold].values())

    def per_class_50_95(self) -> dict[str, float]:
        """Per class, the mean AP over 0.50:0.05:0.95 (NaN without GT)."""
        return {c: float(np.mean([self.per_class_ap[t][c] for t in RANGE_50_95])) for c in self.num_gt}

    @property
    def map_50_95(self) -> float:
        return float(np.mean([self.mean_ap(t) for t in RANGE_50_95]))

    def summary(self) -> dict[str, float]:
        """``{"0.2": mAP, "0.5": ..., "0.75": ..., "0.5:0.95": ...}``."""
        out = {f"{t:g}": self.mean_ap(t) for t in self.reported}
        out["0.5:0.95"] = self.map_50_95
        return out

    def to_json(self) -> dict:
        head = 0.5 if 0.5 in self.per_class_ap else self.reported[0]
        return {
            "metric": f"video_mAP@{head:g} (ACT protocol); see video_mAP for other thresholds",
            "mAP": json_number(self.mean_ap(head)),
            "per_class": {c: json_number(v) for c, v in self.per_class_ap[head].items()},
            "video_mAP": {k: json_number(v) for k, v in self.summary().items()},
            "per_class_by_threshold": {
                **{f"{t:g}": {c: json_number(v) for c, v in self.per_class_ap[t].items()} for t in self.reported},
                "0.5:0.95": {c: json_number(v) for c, v in self.per_class_50_95().items()},
            },
            "num_gt_tubes": self.num_gt,
            "num_detected_tubes": self.num_det,
        }


def tube_nms(tubes: Tubes, threshold: float | None) -> np.ndarray:
    """Indices of the tubes kept by rule 1, in input order."""
    n = len(tubes)
    if threshold is None or n < 2:
        return np.arange(n)
    _, codes = np.unique(tubes.videos, return_inverse=True)
    group = codes.reshape(-1).astype(np.int64) * (int(tubes.labels.max()) + 1) + tubes.labels
    order = np.lexsort((np.arange(n), -tubes.scores, group))  # group, best first
    keep = np.zeros(n, dtype=bool)
    bounds = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1], True])
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        members = order[lo:hi]
        if members.size == 1:
            keep[members] = True
            continue
        ii, jj = np.triu_indices(members.size, k=1)
        iou = np.zeros((members.size, members.size))
        iou[ii, jj] = st_iou(tubes, members[ii], tubes, members[jj])
        alive = np.ones(members.size, dtype=bool)
        for i in range(members.size):
            if alive[i]:
                keep[members[i]] = True
                alive[i + 1 :] &= iou[i, i + 1 :] <= threshold
    return np.flatnonzero(keep)


def evaluate_video_map(
    gt: Tubes,
    det: Tubes,
    classes: list[str],
    tube_nms_iou: float | None = 0.3,
    reported: tuple[float, ...] = REPORTED,
) -> VideoMapResult:
    """Video-AP per class at ``reported`` thresholds and 0.5:0.95 (rules in the module docstring)."""
    num_classes = len(classes)
    det = det.select(tube_nms(det, tube_nms_iou))
    rank = rank_order(det.scores)  # (D,) tube at each rank position
    gv, dv = shared_codes(gt.videos, det.videos)
    gt_group = gv * num_classes + gt.labels  # (G,)
    det_group = dv[rank] * num_classes + det.labels[rank]  # (D,)
    pair_det, pair_gt = pairs_by_group(det_group, gt_group)
    pair_iou = st_iou(det, rank[pair_det], gt, pair_gt)
    _, dense_group = np.unique(det_group, return_inverse=True)
    det_labels = det.labels[rank]
    gt_counts = np.bincount(gt.labels, minlength=num_classes)
    det_counts = np.bincount(det.labels, minlength=num_classes)

    thresholds = sorted(set(reported) | set(RANGE_50_95))
    per_threshold: dict[float, dict[str, float]] = {}
    curves: dict[float, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for th in thresholds:
        tp = match_best_remaining(pair_det, pair_gt, pair_iou, dense_group.reshape(-1), len(gt), th)
        per_threshold[th], curves[th] = {}, {}
        for c, name in enumerate(classes):
            if gt_counts[c] == 0:
                per_threshold[th][name] = math.nan
                continue
            ap, precision, recall = trapezoid_ap(tp[det_labels == c], int(gt_counts[c]))
            per_threshold[th][name], curves[th][name] = ap, (precision, recall)
    return VideoMapResult(
        per_class_ap=per_threshold,
        num_gt={n: int(gt_counts[c]) for c, n in enumerate(classes)},
        num_det={n: int(det_counts[c]) for c, n in enumerate(classes)},
        reported=tuple(reported),
        pr_curves=curves,
    )
