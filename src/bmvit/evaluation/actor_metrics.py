"""Class-agnostic actor detection: precision and recall at θ, and actor AP (paper Table 1b, §6.2).

The paper reports, next to mAP, the precision and recall of the actor detector: the boxes of the
tokens kept at inference (``p(actor) > θ``), without their actions, against the annotated
actors. Definitions (all per key frame, boxes normalized ``x1, y1, x2, y2``, IoU without the +1
pixel convention):

* **Ground-truth actors**: the annotated actor boxes of the key frame (one per person).
* **Candidates**: the detector's actor boxes with their ``p(actor)``, best first; the kept
  detections (``p(actor) > θ``) are a prefix of that list.
* **Matching** (one-to-one, greedy by actor score): in descending ``p(actor)`` each detection
  takes the still unmatched ground-truth actor of highest IoU (the first on ties); IoU >= 0.5
  makes it a true positive and removes that actor, otherwise it is a false positive. Equal
  scores keep candidate order. Because the matching is greedy, the outcome of a detection does
  not depend on detections that score lower, so one matching serves every θ.
* **precision@θ** = TP among kept / number kept; **recall@θ** = TP among kept / number of
  ground-truth actors (``NaN`` when the denominator is 0).
* **actor AP**: the first ``max_candidates`` (100) candidates of every frame, whatever θ, ranked
  by ``p(actor)`` over the split; VOC all-points AP (the area under the precision/recall curve
  with precision made non-increasing, as AVA's frame-AP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bmvit.evaluation.act_protocol import match_best_remaining, pairs_by_group
from bmvit.evaluation.ava import average_precision, precision_recall
from bmvit.evaluation.report import json_number

__all__ = ["ActorResult", "ActorRows", "evaluate_actor_rows", "evaluate_actors", "iou_normalized"]

MAX_CANDIDATES = 100  # candidates per frame that count towards actor AP


class ActorRows(NamedTuple):
    """Ground-truth actors and actor candidates of a split (or of one batch), column-wise; frames
    are sample indices into the dataset, boxes normalized ``x1, y1, x2, y2``."""

    gt_frame: np.ndarray  # (G,) int64
    gt_boxes: np.ndarray  # (G, 4) float64
    frame: np.ndarray  # (M,) int64: candidates
    boxes: np.ndarray  # (M, 4) float32
    scores: np.ndarray  # (M,) p(actor)
    kept: np.ndarray  # (M,) bool: kept at θ, as the post-processing compared p(actor)


@dataclass
class ActorResult:
    """Actor precision/recall at θ and actor AP of one evaluation."""

    threshold: float  # θ
    iou_threshold: float
    num_gt: int  # ground-truth actors
    num_kept: int  # detections with p(actor) > θ
    tp_kept: int  # of which true positives
    precision: float  # tp_kept / num_kept (NaN without kept detections)
    recall: float  # tp_kept / num_gt (NaN without ground truth)
    ap: float  # class-agnostic actor AP (NaN without ground truth)
    max_candidates: int = MAX_CANDIDATES

    def to_json(self) -> dict:
        return {
            "threshold": self.threshold, "iou_threshold": self.iou_threshold, "num_gt": self.num_gt,
            "num_kept": self.num_kept, "tp_kept": self.tp_kept, "precision": json_number(self.precision),
            "recall": json_number(self.recall), "ap": json_number(self.ap), "max_candidates": self.max_candidates,
        }

    def line(self) -> str:
        """One line: ``actor precision@θ=0.2: P  recall: R  actor AP@0.5: A`` (percent)."""

        def pct(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"

        return (f"actor precision@θ={self.threshold:g}: {pct(self.precision)}  recall: {pct(self.recall)}  "
                f"actor AP@{self.iou_threshold:g}: {pct(self.ap)}  ({self.tp_kept} of {self.num_kept} kept boxes "
                f"match one of {self.num_gt} actors)")


def iou_normalized(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned boxes (P, 4) x (P, 4) -> (P,), corners without the +1 convention."""
    iw = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    ih = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _voc_ap(tp: np.ndarray, num_gt: int) -> float:
    """VOC all-points AP of (N,) TP flags in rank order."""
    if num_gt == 0:
        return math.nan
    return average_precision(*precision_recall(tp, num_gt))  # the AVA evaluator's AP


def evaluate_actors(
    gt_frame: np.ndarray,
    gt_boxes: np.ndarray,
    det_frame: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    threshold: float,
    iou_threshold: float = 0.5,
    max_candidates: int = MAX_CANDIDATES,
    kept: np.ndarray | None = None,
) -> ActorResult:
    """Precision/recall at θ = ``threshold`` and actor AP (module docstring).

    ``gt_frame`` (G,) / ``det_frame`` (D,) are integer frame ids, ``gt_boxes`` (G, 4) and
    ``det_boxes`` (D, 4) normalized corners, ``det_scores`` (D,) ``p(actor)``. The candidates of
    a frame are its detection rows; they must include every row scoring above θ. ``kept`` (D,)
    bool, if given, says which rows were kept at θ (as the detector compared them), else
    ``det_scores > threshold``.
    """
    det_frame = np.asarray(det_frame, np.int64)
    gt_frame = np.asarray(gt_frame, np.int64)
    det_scores = np.asarray(det_scores, np.float64)
    order = np.lexsort((-det_scores, det_frame))  # (D,) by frame, best first, candidate order on ties
    f_sorted = det_frame[order]
    starts = np.searchsorted(f_sorted, f_sorted, side="left")
    pos_in_frame = np.empty(len(order), np.int64)
    pos_in_frame[order] = np.arange(len(order)) - starts  # (D,) 0 = the frame's best candidate
    # Greedy matching per frame: rank positions by descending score within each frame.
    pair_det, pair_gt = pairs_by_group(det_frame[order], gt_frame)
    iou = iou_normalized(np.asarray(det_boxes, np.float64)[order][pair_det], np.asarray(gt_boxes, np.float64)[pair_gt])
    tp_sorted = match_best_remaining(pair_det, pair_gt, iou, f_sorted, len(gt_frame), iou_threshold)
    tp = np.empty(len(order), bool)
    tp[order] = tp_sorted  # (D,) per detection row
    kept = det_scores > threshold if kept is None else np.asarray(kept, bool)
    num_gt, num_kept, tp_kept = len(gt_frame), int(kept.sum()), int((tp & kept).sum())
    in_ap = pos_in_frame < max_candidates
    rank = np.argsort(-det_scores[in_ap], kind="stable")
    return ActorResult(
        threshold=threshold, iou_threshold=iou_threshold, num_gt=num_gt, num_kept=num_kept, tp_kept=tp_kept,
        precision=tp_kept / num_kept if num_kept else math.nan,
        recall=tp_kept / num_gt if num_gt else math.nan,
        ap=_voc_ap(tp[in_ap][rank], num_gt), max_candidates=max_candidates,
    )


def evaluate_actor_rows(rows: ActorRows | None, threshold: float) -> ActorResult | None:
    """:func:`evaluate_actors` of collected :class:`ActorRows` (None: nothing collected)."""
    if rows is None:
        return None
    return evaluate_actors(rows.gt_frame, rows.gt_boxes, rows.frame, rows.boxes.astype(np.float64),
                           rows.scores.astype(np.float64), threshold, kept=rows.kept)
