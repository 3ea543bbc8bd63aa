"""AVA frame-mAP@0.5IoU, with the semantics of the official ActivityNet 2019 evaluator.

Reference: ``Evaluation/get_ava_performance.py`` of the ActivityNet repository as of the 2019
challenge (with the ``object_detection_evaluation`` / ``per_image_evaluation`` / ``metrics``
modules it uses). This is an independent, vectorized re-implementation. Rules, in order:

1. Rows whose action is not in the label map are dropped (GT and detections). GT rows are
   not de-duplicated. A frame is identified by ``frame_key(video_id, timestamp)``.
2. Detections are capped per frame (over all classes, before anything below) to the
   ``max_dets_per_frame`` highest scores; ``0`` keeps all (the PySlowFast variant). Which rows
   survive a tie at the cut is decided exactly as the original does: a bounded min-heap fed in
   file order, where a new row only replaces the heap minimum if its score is strictly higher
   and the minimum is the smallest ``(score, action, y1, x1, y2, x2)`` tuple.
3. Excluded frames lose both GT and detections. Detections on frames without GT are false
   positives. Detection boxes with ``x1 >= x2`` or ``y1 >= y2`` are dropped (after the cap).
4. Per frame and class, detections in rank order each take the GT box of highest IoU (no +1
   convention; first box on ties): a true positive if IoU >= ``iou_threshold`` and that box is
   still unmatched, otherwise a false positive (even if another box would have matched).
   "First" is the original's GT order, which is not file order: it reads GT through the same
   heap as detections, with the person id in the score slot, so a frame's GT rows run by
   descending person id, and rows of equal person id in the heap's array order.
5. Per class, AP is the area under the precision/recall curve with precision made
   non-increasing (VOC all-points). Classes without GT get NaN and are left out of the mean;
   classes with GT but no detections get 0.

Rank order is score descending, ties in detection-file order (a stable sort). The original uses
``np.argsort(scores)[::-1]`` (an unstable sort) on per-frame concatenations, so its order among
equal scores depends on the numpy build; such ties change AP only when equal-score detections of
one class mix true and false positives.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmvit.data.ava_format import AvaRows, frame_key, read_exclusions, read_label_map, read_rows
from bmvit.errors import DataError

__all__ = ["AvaEvalResult", "evaluate_ava", "evaluate_ava_files", "format_table"]


@dataclass
class AvaEvalResult:
    """Frame-mAP of one evaluation; per-class dicts are keyed by label-map action id."""

    mean_ap: float  # nan-mean over classes that have GT (nan if none has)
    per_class_ap: dict[int, float]  # action_id -> AP (nan if class has no GT)
    class_names: dict[int, str]
    num_gt: dict[int, int]  # per class, after label-map filtering and exclusions
    num_frames: int  # frames with GT after exclusions
    iou_threshold: float = 0.5

    def to_json(self) -> dict:
        """A JSON-serializable dict; NaN APs become ``None``."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "metric": f"frame_mAP@{self.iou_threshold:g}IoU",
            "mean_ap": num(self.mean_ap),
            "num_frames": self.num_frames,
            "classes": [
                {"id": k, "name": self.class_names[k], "ap": num(ap), "num_gt": self.num_gt[k]}
                for k, ap in self.per_class_ap.items()
            ],
        }


def format_table(result: AvaEvalResult) -> str:
    """Per-class AP (in percent) with names and GT counts, then the mean, as plain text."""
    width = max([len(n) for n in result.class_names.values()] + [5])
    lines = [f"{'id':>4}  {'class':<{width}}  {'AP':>6}  {'#GT':>6}"]
    for k, ap in result.per_class_ap.items():
        ap_text = "   n/a" if math.isnan(ap) else f"{100 * ap:6.2f}"
        lines.append(f"{k:>4}  {result.class_names[k]:<{width}}  {ap_text}  {result.num_gt[k]:>6}")
    mean = "n/a" if math.isnan(result.mean_ap) else f"{100 * result.mean_ap:.2f}"
    lines.append(
        f"frame-mAP@{result.iou_threshold:g}IoU: {mean} "
        f"({sum(not math.isnan(a) for a in result.per_class_ap.values())} classes with GT, "
        f"{result.num_frames} frames)"
    )
    return "\n".join(lines)


def _check_rows(rows: AvaRows, what: str, is_gt: bool) -> None:
    """Reject non-finite values (and, for GT, inverted boxes, which the original crashes on)."""
    bad = ~np.isfinite(rows.boxes).all(axis=1)
    if not is_gt:
        bad |= ~np.isfinite(rows.extra)
    else:
        bad |= (rows.boxes[:, 0] > rows.boxes[:, 2]) | (rows.boxes[:, 1] > rows.boxes[:, 3])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        reason = "a box with x1 > x2 or y1 > y2, or " if is_gt else ""
        raise DataError(
            f"{what}: row {i + 1} ({rows.video_ids[i]},{int(rows.timestamps[i])}) has "
            f"{reason}a non-finite value; {int(bad.sum())} such row(s)"
        )


def _take(rows: AvaRows, idx: np.ndarray) -> AvaRows:
    """Rows reordered by an index array (``AvaRows.select`` takes a boolean mask)."""
    vids = [rows.video_ids[i] for i in idx.tolist()]
    return AvaRows(vids, rows.timestamps[idx], rows.boxes[idx], rows.actions[idx], rows.extra[idx])


def _frame_indices(rows: AvaRows, index: dict[str, int]) -> np.ndarray:
    """(R,) int64 frame number of each row; unseen frame keys are appended to ``index``."""
    keys = (frame_key(v, t) for v, t in zip(rows.video_ids, rows.timestamps.tolist()))
    return np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)


def _heap_survivors(
    scores: np.ndarray, actions: np.ndarray, boxes: np.ndarray, cap: int
) -> list[int]:
    """Indices kept by the original's bounded min-heap over one frame's rows (in file order)."""
    heap: list[tuple] = []
    rows = zip(scores.tolist(), actions.tolist(), boxes.tolist())
    for i, (s, a, (x1, y1, x2, y2)) in enumerate(rows):
        # The trailing index only orders exactly equal tuples, which cannot change the outcome.
        item = (s, a, y1, x1, y2, x2, i)
        if len(heap) < cap:
            heapq.heappush(heap, item)
        elif s > heap[0][0]:
            heapq.heapreplace(heap, item)
    return [item[-1] for item in heap]


def _gt_rank(gt: AvaRows, gt_frame: np.ndarray, gt_cls: np.ndarray) -> np.ndarray:
    """(G,) sort key of each GT row inside its frame: the original's order (rule 4).

    Within a frame and class the original lists GT by descending person id (a stable sort of its
    heap's array). Rows with equal person id but different boxes would keep that heap order, so
    only frames holding such rows are replayed through a heap; elsewhere such rows are identical
    and their order cannot matter.
    """
    n = len(gt)
    order = np.lexsort((np.arange(n), -gt.extra, gt_cls, gt_frame))  # frame, class, pid desc, file
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    if n < 2:
        return rank
    f, c, pid, box = gt_frame[order], gt_cls[order], gt.extra[order], gt.boxes[order]
    clash = (f[1:] == f[:-1]) & (c[1:] == c[:-1]) & (pid[1:] == pid[:-1])
    clash &= np.any(box[1:] != box[:-1], axis=1)
    if not clash.any():
        return rank
    by_frame = np.argsort(gt_frame, kind="stable")  # frames contiguous, file order inside
    bounds = np.searchsorted(gt_frame[by_frame], np.unique(f[1:][clash]))
    ends = np.searchsorted(gt_frame[by_frame], np.unique(f[1:][clash]), side="right")
    for lo, hi in zip(bounds.tolist(), ends.tolist()):
        rows = by_frame[lo:hi]
        heap: list[tuple] = []
        for i, (p, a, (x1, y1, x2, y2)) in zip(
            rows.tolist(), zip(gt.extra[rows].tolist(), gt.actions[rows].tolist(), gt.boxes[rows].tolist())
        ):
            heapq.heappush(heap, (p, a, y1, x1, y2, x2, i))
        listed = sorted(heap, key=lambda item: -item[0])  # stable, like the original
        rank[[item[-1] for item in listed]] = rank[rows].min() + np.arange(len(listed))
    return rank


def _cap_per_frame(frame: np.ndarray, det: AvaRows, cap: int) -> np.ndarray:
    """(D,) bool: rows surviving the per-frame cap. ``frame``: (D,) int frame index per row."""
    n = len(frame)
    keep = np.ones(n, dtype=bool)
    if cap <= 0 or n == 0:
        return keep
    counts = np.bincount(frame)  # (F,)
    if counts.max() <= cap:
        return keep
    order = np.lexsort((np.arange(n), -det.extra, frame))  # frame, score desc, file order
    starts = np.cumsum(counts) - counts  # (F,) first sorted position of each frame
    rank = np.arange(n) - starts[frame[order]]
    keep[order] = rank < cap
    # Frames cut inside a run of equal scores: which rows survive depends on arrival order.
    over = np.flatnonzero(counts > cap)
    sorted_scores = det.extra[order]
    tied = over[sorted_scores[starts[over] + cap - 1] == sorted_scores[starts[over] + cap]]
    for f in tied.tolist():
        rows = np.sort(order[starts[f] : starts[f] + counts[f]])  # this frame, file order
        keep[rows] = False
        keep[rows[_heap_survivors(det.extra[rows], det.actions[rows], det.boxes[rows], cap)]] = True
    return keep


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned box pairs, (P, 4) x (P, 4) -> (P,), corners without the +1 convention."""
    iw = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    ih = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter)


def _average_precision(tp: np.ndarray, num_gt: int) -> float:
    """VOC all-points AP of (N,) bool TP flags in rank order, given the class's GT count."""
    if tp.size == 0:
        return 0.0
    cum_tp = np.cumsum(tp)
    precision = cum_tp / np.arange(1, tp.size + 1)
    recall = cum_tp / num_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # non-increasing in rank
    prev = np.concatenate(([0.0], recall[:-1]))
    step = recall != prev
    return float(np.sum((recall - prev)[step] * envelope[step]))


def evaluate_ava(
    gt: AvaRows,
    detections: AvaRows,
    label_map: dict[int, str],
    exclusions: set[str] | None = None,
    max_dets_per_frame: int = 50,
    iou_threshold: float = 0.5,
) -> AvaEvalResult:
    """AVA frame-mAP of ``detections`` (score in ``extra``) against ``gt``; rules in the module doc.

    ``exclusions`` holds ``frame_key`` strings; ``max_dets_per_frame=0`` disables the cap.
    Rows of ``detections`` must be in file order (it decides ties). Raises ``DataError`` for
    non-finite values, GT boxes with x1 > x2 or y1 > y2, or an empty label map.
    """
    if not label_map:
        raise DataError("label map has no classes")
    if max_dets_per_frame < 0:
        raise ValueError(f"max_dets_per_frame must be >= 0, got {max_dets_per_frame}")
    _check_rows(gt, "ground truth", is_gt=True)
    _check_rows(detections, "detections", is_gt=False)
    class_ids = np.array(sorted(label_map), dtype=np.int64)  # (C,)
    num_classes = len(class_ids)
    excluded = exclusions or set()

    gt = gt.select(np.isin(gt.actions, class_ids))
    det = detections.select(np.isin(detections.actions, class_ids))
    frame_index: dict[str, int] = {}
    gt_frame = _frame_indices(gt, frame_index)  # (G,)
    det_frame = _frame_indices(det, frame_index)  # (D,)
    frame_excluded = np.array([k in excluded for k in frame_index], dtype=bool)  # (F,)

    gt_keep = ~frame_excluded[gt_frame]
    gt, gt_frame = gt.select(gt_keep), gt_frame[gt_keep]
    det_keep = _cap_per_frame(det_frame, det, max_dets_per_frame)
    det_keep &= ~frame_excluded[det_frame]
    det_keep &= (det.boxes[:, 0] < det.boxes[:, 2]) & (det.boxes[:, 1] < det.boxes[:, 3])
    det, det_frame = det.select(det_keep), det_frame[det_keep]

    # Rank order: score descending, ties in file order.
    rank = np.argsort(-det.extra, kind="stable")
    det, det_frame = _take(det, rank), det_frame[rank]
    gt_cls = np.searchsorted(class_ids, gt.actions)  # (G,)
    det_cls = np.searchsorted(class_ids, det.actions)  # (D,)

    # Candidate GT of each detection: same frame and class, as a contiguous run of sorted GT.
    gt_group = gt_frame * num_classes + gt_cls
    gt_order = np.lexsort((_gt_rank(gt, gt_frame, gt_cls), gt_group))  # original order in a group
    sorted_group = gt_group[gt_order]
    det_group = det_frame * num_classes + det_cls
    lo = np.searchsorted(sorted_group, det_group, side="left")  # (D,)
    cnt = np.searchsorted(sorted_group, det_group, side="right") - lo  # (D,)

    tp = np.zeros(len(det), dtype=bool)  # (D,) in rank order
    has_gt = np.flatnonzero(cnt > 0)
    if has_gt.size:
        c = cnt[has_gt]
        seg_start = np.cumsum(c) - c  # (H,) start of each detection's pairs
        pair_det = np.repeat(has_gt, c)  # (P,)
        pair_gt = gt_order[np.repeat(lo[has_gt] - seg_start, c) + np.arange(c.sum())]  # (P,)
        iou = _pairwise_iou(det.boxes[pair_det], gt.boxes[pair_gt])  # (P,)
        best_iou = np.maximum.reduceat(iou, seg_start)  # (H,)
        is_best = iou == np.repeat(best_iou, c)
        first = np.minimum.reduceat(np.where(is_best, np.arange(iou.size), iou.size), seg_start)
        best_gt = pair_gt[first]  # (H,) first GT of maximal IoU
        cand = np.flatnonzero(best_iou >= iou_threshold)
        # In rank order, the first detection claiming a GT box wins it; later claimants are FPs.
        _, first_claim = np.unique(best_gt[cand], return_index=True)
        tp[has_gt[cand[first_claim]]] = True

    gt_counts = np.bincount(gt_cls, minlength=num_classes)  # (C,)
    by_class = np.argsort(det_cls, kind="stable")  # keeps rank order inside a class
    bounds = np.searchsorted(det_cls[by_class], np.arange(num_classes + 1))
    per_class_ap: dict[int, float] = {}
    for ci, k in enumerate(class_ids.tolist()):
        if gt_counts[ci] == 0:
            per_class_ap[k] = math.nan
        else:
            flags = tp[by_class[bounds[ci] : bounds[ci + 1]]]
            per_class_ap[k] = _average_precision(flags, int(gt_counts[ci]))
    valid = [ap for ap in per_class_ap.values() if not math.isnan(ap)]
    return AvaEvalResult(
        mean_ap=float(np.mean(valid)) if valid else math.nan,
        per_class_ap=per_class_ap,
        class_names={k: label_map[k] for k in class_ids.tolist()},
        num_gt={k: int(n) for k, n in zip(class_ids.tolist(), gt_counts.tolist())},
        num_frames=len(np.unique(gt_frame)),
        iou_threshold=iou_threshold,
    )


def evaluate_ava_files(
    gt_csv: str | Path,
    pred_csv: str | Path,
    label_map_pbtxt: str | Path,
    exclusions_csv: str | Path | None = None,
    max_dets_per_frame: int = 50,
    iou_threshold: float = 0.5,
) -> AvaEvalResult:
    """:func:`evaluate_ava` on files; errors (``DataError``) name the offending file."""
    label_map = read_label_map(label_map_pbtxt)
    gt, det = read_rows(gt_csv), read_rows(pred_csv)
    exclusions = read_exclusions(exclusions_csv) if exclusions_csv is not None else None
    _check_rows(gt, str(gt_csv), is_gt=True)
    _check_rows(det, str(pred_csv), is_gt=False)
    return evaluate_ava(gt, det, label_map, exclusions, max_dets_per_frame, iou_threshold)
