"""The matching-and-AP protocol of ACT / MOC-Detector, shared by frame-mAP and video-mAP.

Both of their evaluations (``frameAP`` and ``videoAP`` in ACT's evaluation script, reused by
MOC-Detector) score one class at a time with the same rules, implemented here vectorized:

1. **Ranking.** The class's detections are sorted by descending score over the whole split.
   Equal scores keep input order (a stable sort). ACT uses ``np.argsort(-scores)``, which
   agrees whenever numpy sorts stably (at most 16 detections); beyond that its order among
   equal scores is whatever numpy's introsort leaves.
2. **Greedy matching to the best remaining GT.** Each detection, in rank order, is compared with
   the GT items (boxes of its frame, or tubes of its video) of the same class that are *still
   unmatched*; it takes the one of highest IoU (the first in GT order on ties). If that IoU is
   >= the threshold it is a true positive and the GT item is removed; otherwise it is a false
   positive. So, unlike AVA/VOC, a detection whose best GT is already taken falls back to the
   best of the remaining ones. A detection with no GT left in its group is a false positive.
3. **AP.** Precision ``P_i = TP_i / i`` and recall ``R_i = TP_i / num_gt`` after each
   detection, preceded by the point ``(R=0, P=1)``; AP is the trapezoid rule over consecutive
   points, ``sum_i (R_i - R_{i-1}) (P_i + P_{i-1}) / 2``, on the raw (not interpolated)
   precision. ACT stores these points as float32; we keep float64 (differences < 1e-6).
"""

from __future__ import annotations

import numpy as np

__all__ = ["match_best_remaining", "pairs_by_group", "pixel_iou", "rank_order", "trapezoid_ap"]


def rank_order(scores: np.ndarray) -> np.ndarray:
    """(N,) permutation: descending score, ties in input order (rule 1)."""
    return np.argsort(-scores, kind="stable")


def match_best_remaining(
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_iou: np.ndarray,
    det_group: np.ndarray,
    num_gt: int,
    threshold: float,
) -> np.ndarray:
    """(D,) bool true-positive flags under rule 2.

    ``pair_det`` (P,) are detection *rank positions* (0 = best score), ``pair_gt`` (P,) GT
    indices (0..num_gt-1; lower index = earlier in GT order), ``pair_iou`` (P,) their IoU: one
    pair for every detection and every GT item of its group. ``det_group`` (D,) is each
    detection's group (frame/video and class), indexed by rank position.

    Vectorized in rounds: in a group whose last true positive is at rank ``p``, the detections
    after ``p`` that are false positives against the current remaining set stay false
    positives (the set only shrinks), so the next true positive is the first later detection
    whose best remaining IoU reaches the threshold. Each round finds it in every group at once;
    there are at most (GT items per group + 1) rounds.
    """
    num_det = len(det_group)
    tp = np.zeros(num_det, dtype=bool)
    if pair_det.size == 0:
        return tp
    order = np.lexsort((pair_gt, pair_det))  # by detection, then GT order
    pd, pg, iou = pair_det[order], pair_gt[order], pair_iou[order]
    taken = np.zeros(num_gt, dtype=bool)
    last_tp = np.full(int(det_group.max()) + 1, -1, dtype=np.int64)  # per group
    while pd.size:
        starts = np.flatnonzero(np.r_[True, pd[1:] != pd[:-1]])  # (S,) one segment per detection
        counts = np.diff(np.r_[starts, pd.size])
        best = np.maximum.reduceat(iou, starts)  # (S,)
        is_best = iou == np.repeat(best, counts)
        first = np.minimum.reduceat(np.where(is_best, np.arange(pd.size), pd.size), starts)
        hit = best >= threshold  # a NaN IoU (degenerate box) makes ``best`` NaN: a FP, as ACT's argmax
        first = np.minimum(first, pd.size - 1)  # rows without a best (NaN) are not hits; any index will do
        if not hit.any():
            break
        cand_det, cand_gt = pd[starts][hit], pg[first][hit]  # ascending rank
        groups, first_in_group = np.unique(det_group[cand_det], return_index=True)
        win_det, win_gt = cand_det[first_in_group], cand_gt[first_in_group]
        tp[win_det] = True
        taken[win_gt] = True
        last_tp[groups] = win_det
        active = np.zeros(len(last_tp), dtype=bool)
        active[groups] = True  # groups without a new TP are finished
        g = det_group[pd]
        keep = active[g] & (pd > last_tp[g]) & ~taken[pg]
        pd, pg, iou = pd[keep], pg[keep], iou[keep]
    return tp


def trapezoid_ap(tp: np.ndarray, num_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """AP under rule 3 of (N,) TP flags in rank order; also the (N,) precision and recall."""
    cum_tp = np.cumsum(tp, dtype=np.float64)
    precision = cum_tp / np.arange(1, tp.size + 1)
    recall = cum_tp / num_gt
    p = np.concatenate(([1.0], precision))
    r = np.concatenate(([0.0], recall))
    ap = float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) * 0.5))
    return ap, precision, recall


def pixel_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned absolute pixel boxes, (P, 4) x (P, 4) -> (P,), with the +1 convention.

    A box ``x1..x2`` covers ``x2 - x1 + 1`` pixels (ACT's ``area2d`` / ``overlap2d``). Inverted
    boxes (``x2 < x1``) get exactly ACT's value: a negative area, so an IoU of 0, a negative
    number, or NaN (0 / 0), never a match.
    """
    iw = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) + 1 - np.maximum(a[:, 0], b[:, 0]))
    ih = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) + 1 - np.maximum(a[:, 1], b[:, 1]))
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # inverted boxes: ACT's values (NaN, inf, < 0)
        return inter / (area_a + area_b - inter)


def pairs_by_group(det_group: np.ndarray, gt_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, GT) pair sharing a group: ``(pair_det (P,), pair_gt (P,))`` row indices.

    ``det_group`` (D,) and ``gt_group`` (G,) are int64 group keys. Pairs come grouped by
    detection; each detection's GT run is in GT row order, so a lower ``pair_gt`` is earlier.
    """
    gt_order = np.argsort(gt_group, kind="stable")
    sorted_group = gt_group[gt_order]
    lo = np.searchsorted(sorted_group, det_group, side="left")
    cnt = np.searchsorted(sorted_group, det_group, side="right") - lo  # (D,)
    pair_det = np.repeat(np.arange(len(det_group)), cnt)
    offsets = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return pair_det, gt_order[np.repeat(lo, cnt) + offsets]
