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

Equal scores. The original lists a frame's detections by a stable sort on descending score of
its heap's array, matches them in that order (rule 4), concatenates the frames of a class in
order of first appearance in the detection file, and ranks with ``np.argsort(scores)[::-1]``
under numpy 1.23 (what its ``np.bool``/``np.float`` need). We use exactly that per-frame order
for matching, rebuild each class's concatenated score list, and rank it with numpy's generic
introsort (:func:`introsort_argsort`), the algorithm behind that ``np.argsort``: the order among
equal scores, and so AP, is the original's to the last bit, for any number of ties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmvit.data.formats.ava import AvaRows, read_exclusions, read_label_map
from bmvit.errors import DataError
from bmvit.evaluation.ava_csv_fast import CodedAvaRows, read_rows_fast
from bmvit.evaluation.ava_heap import cap_and_list, gt_rank, stable_argsort_ints
from bmvit.evaluation.ava_ranking import concatenation_order, introsort_argsort, score_levels

__all__ = ["AvaEvalResult", "evaluate_ava", "evaluate_ava_files", "format_table", "introsort_argsort"]


@dataclass
class AvaEvalResult:
    """Frame-mAP of one evaluation; per-class dicts are keyed by label-map action id."""

    mean_ap: float  # nan-mean over classes that have GT (nan if none has)
    per_class_ap: dict[int, float]  # action_id -> AP (nan if class has no GT)
    class_names: dict[int, str]
    num_gt: dict[int, int]  # per class, after label-map filtering and exclusions
    num_frames: int  # frames with GT after exclusions
    iou_threshold: float = 0.5
    max_dets_per_frame: int | None = None  # the cap used (0 = uncapped)
    # action_id -> (precision (N,), recall (N,)) in rank order, for classes with GT
    pr_curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    # action_id -> rows left out by rule 1 (ids not in the label map), GT and detections
    unlisted_gt: dict[int, int] = field(default_factory=dict)
    unlisted_det: dict[int, int] = field(default_factory=dict)

    def unlisted_note(self) -> str | None:
        """One line about the rows whose action id is not in the label map (left out), or None."""
        parts = [f"{sum(d.values())} {what} rows (action ids {', '.join(map(str, sorted(d)[:8]))}"
                 f"{', ...' if len(d) > 8 else ''})" for what, d in (("ground-truth", self.unlisted_gt),
                                                                        ("detection", self.unlisted_det)) if d]
        if not parts:
            return None
        return f"note: {' and '.join(parts)} not in the label map: left out, as the official evaluator does"

    def class_keys(self) -> dict[int, str]:
        """Display key per class: its name, or ``"<id>:<name>"`` where names repeat."""
        names = list(self.class_names.values())
        return {k: n if names.count(n) == 1 else f"{k}:{n}" for k, n in self.class_names.items()}

    def to_json(self) -> dict:
        """A JSON-serializable dict; NaN APs become ``None``.

        ``mAP`` and ``per_class`` (class name -> AP) are the headline fields; ``classes`` repeats
        them with ids and GT counts. ``mean_ap`` is kept for older readers.
        """

        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        keys = self.class_keys()
        return {
            "metric": f"frame_mAP@{self.iou_threshold:g}IoU",
            "mAP": num(self.mean_ap),
            "per_class": {keys[k]: num(ap) for k, ap in self.per_class_ap.items()},
            "iou_threshold": self.iou_threshold,
            "max_dets_per_frame": self.max_dets_per_frame,
            "num_frames": self.num_frames,
            "num_classes_with_gt": sum(not math.isnan(a) for a in self.per_class_ap.values()),
            "mean_ap": num(self.mean_ap),
            "unlisted_rows": {"ground_truth": {str(k): n for k, n in self.unlisted_gt.items()},
                              "detections": {str(k): n for k, n in self.unlisted_det.items()}},
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


def _check_rows(rows: CodedAvaRows, what: str, is_gt: bool) -> None:
    """Reject non-finite values (and, for GT, inverted boxes, which the original crashes on)."""
    bad = ~np.isfinite(rows.boxes).all(axis=1)
    if not is_gt:
        bad |= ~np.isfinite(rows.person_or_score)
    else:
        bad |= (rows.boxes[:, 0] > rows.boxes[:, 2]) | (rows.boxes[:, 1] > rows.boxes[:, 3])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        reason = "a box with x1 > x2 or y1 > y2, or " if is_gt else ""
        raise DataError(
            f"{what}: row {i + 1} ({rows.video_id(i)},{int(rows.timestamps[i])}) has "
            f"{reason}a non-finite value; {int(bad.sum())} such row(s)"
        )


def _frame_ids(gt: CodedAvaRows, det: CodedAvaRows, excluded: set[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense frame numbers of GT (G,) and detection (D,) rows, and (F,) bool "frame excluded".

    A frame is ``(video, integer timestamp)``, the identity of ``frame_key``; working on integer
    codes avoids building a key string per row.
    """
    video = {v: i for i, v in enumerate(dict.fromkeys(gt.videos + det.videos))}
    gv = np.array([video[v] for v in gt.videos], np.int64)[gt.video]  # (G,)
    dv = np.array([video[v] for v in det.videos], np.int64)[det.video]  # (D,)
    ts = np.concatenate([gt.timestamps, det.timestamps])
    t0 = int(ts.min(initial=0))
    span = int(ts.max(initial=0)) - t0 + 1
    keys = np.concatenate([gv, dv]) * span + (ts - t0)  # (G + D,)
    if len(video) * span <= 4 * len(keys) + 1024:  # small key range: use the keys themselves
        uniq, inverse = np.arange(len(video) * span), keys
    else:
        uniq, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(-1)
    excluded_keys = []
    for k in excluded:
        vid, _, stamp = k.rpartition(",")
        if vid in video and t0 <= int(stamp) < t0 + span:
            excluded_keys.append(video[vid] * span + int(stamp) - t0)
    frame_excluded = np.isin(uniq, np.asarray(excluded_keys, dtype=np.int64))  # (F,)
    return inverse[: len(gt)], inverse[len(gt) :], frame_excluded


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned box pairs, (P, 4) x (P, 4) -> (P,), corners without the +1 convention."""
    iw = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    ih = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter)


def precision_recall(tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) precision and (N,) recall after each of (N,) bool TP flags in rank order."""
    cum_tp = np.cumsum(tp)
    return cum_tp / np.arange(1, tp.size + 1), cum_tp / num_gt


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC all-points AP: area under (N,) precision/recall points with a non-increasing envelope."""
    if precision.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # non-increasing in rank
    prev = np.concatenate(([0.0], recall[:-1]))
    step = recall != prev
    return float(np.sum((recall - prev)[step] * envelope[step]))


def evaluate_ava(
    gt: AvaRows | CodedAvaRows,
    detections: AvaRows | CodedAvaRows,
    label_map: dict[int, str],
    exclusions: set[str] | None = None,
    max_dets_per_frame: int = 50,
    iou_threshold: float = 0.5,
) -> AvaEvalResult:
    """AVA frame-mAP of ``detections`` (score in ``person_or_score``) against ``gt``; rules in the module doc.

    ``exclusions`` holds ``frame_key`` strings; ``max_dets_per_frame=0`` disables the cap.
    Rows of ``detections`` must be in file order (it decides ties). Raises ``DataError`` for
    non-finite values, GT boxes with x1 > x2 or y1 > y2, or an empty label map.
    """
    if not label_map:
        raise DataError("label map has no classes")
    if max_dets_per_frame < 0:
        raise ValueError(f"max_dets_per_frame must be >= 0, got {max_dets_per_frame}")
    gt, detections = CodedAvaRows.from_rows(gt), CodedAvaRows.from_rows(detections)
    _check_rows(gt, "ground truth", is_gt=True)
    _check_rows(detections, "detections", is_gt=False)
    class_ids = np.array(sorted(label_map), dtype=np.int64)  # (C,)
    num_classes = len(class_ids)

    listed_gt, listed_det = np.isin(gt.actions, class_ids), np.isin(detections.actions, class_ids)
    gt_all = gt
    gt = gt if listed_gt.all() else gt.select(listed_gt)
    det = detections if listed_det.all() else detections.select(listed_det)
    gt_frame, det_frame, frame_excluded = _frame_ids(gt, det, exclusions or set())  # (G,), (D,), (F,)
    num_frames = len(frame_excluded)

    gt_keep = ~frame_excluded[gt_frame]
    gt_frame, gt_boxes, gt_pid = gt_frame[gt_keep], gt.boxes[gt_keep], gt.person_or_score[gt_keep]
    gt_actions = gt.actions[gt_keep]
    gt_cls = np.searchsorted(class_ids, gt_actions)  # (G,)

    det_scores, det_actions, det_boxes = det.person_or_score, det.actions, det.boxes
    by_score = np.argsort(-det_scores, kind="stable")  # (D,)
    det_keep, _, listed = cap_and_list(det_frame, det_scores, det_actions, det_boxes, max_dets_per_frame, by_score)
    # Frames in order of first appearance among (label-map filtered) detection rows (the first
    # row index of a frame orders frames exactly as their appearance rank does).
    appearance = np.full(num_frames, len(det_frame), dtype=np.int64)  # (F,)
    np.minimum.at(appearance, det_frame, np.arange(len(det_frame)))
    det_keep &= ~frame_excluded[det_frame]
    det_keep &= (det_boxes[:, 0] < det_boxes[:, 2]) & (det_boxes[:, 1] < det_boxes[:, 3])

    # Rank order: score descending (equal scores in file order; each class is re-ranked below
    # exactly as the original ranks it, see introsort_argsort).
    rank = by_score[det_keep[by_score]]
    det_frame, det_scores, det_boxes, listed = det_frame[rank], det_scores[rank], det_boxes[rank], listed[rank]
    det_cls = np.searchsorted(class_ids, det_actions[rank])  # (D,)

    # Candidate GT of each detection: same frame and class, as a contiguous run of sorted GT.
    gt_group = gt_frame * num_classes + gt_cls
    gt_order = np.lexsort((gt_rank(gt_frame, gt_cls, gt_pid, gt_actions, gt_boxes), gt_group))
    sorted_group = gt_group[gt_order]
    det_group = det_frame * num_classes + det_cls
    if num_frames * num_classes <= 8 * (len(gt_group) + len(det_group)) + 4096:  # direct lookup table
        table_cnt = np.bincount(gt_group, minlength=num_frames * num_classes)
        table_lo = np.cumsum(table_cnt) - table_cnt
        lo, cnt = table_lo[det_group], table_cnt[det_group]  # (D,), (D,)
    else:
        lo = np.searchsorted(sorted_group, det_group, side="left")  # (D,)
        cnt = np.searchsorted(sorted_group, det_group, side="right") - lo  # (D,)

    tp = np.zeros(len(det_frame), dtype=bool)  # (D,) in rank order
    has_gt = np.flatnonzero(cnt > 0)
    if has_gt.size:
        c = cnt[has_gt]
        seg_start = np.cumsum(c) - c  # (H,) start of each detection's pairs
        pair_det = np.repeat(has_gt, c)  # (P,)
        pair_gt = gt_order[np.repeat(lo[has_gt] - seg_start, c) + np.arange(c.sum())]  # (P,)
        iou = _pairwise_iou(det_boxes[pair_det], gt_boxes[pair_gt])  # (P,)
        best_iou = np.maximum.reduceat(iou, seg_start)  # (H,)
        is_best = iou == np.repeat(best_iou, c)
        first = np.minimum.reduceat(np.where(is_best, np.arange(iou.size), iou.size), seg_start)
        best_gt = pair_gt[first]  # (H,) first GT of maximal IoU
        cand = np.flatnonzero(best_iou >= iou_threshold)
        # In the frame's matching order (score descending, then listing position) the first
        # detection claiming a GT box wins it; later claimants are FPs.
        cand = cand[np.lexsort((listed[has_gt[cand]], -det_scores[has_gt[cand]]))]
        _, first_claim = np.unique(best_gt[cand], return_index=True)
        tp[has_gt[cand[first_claim]]] = True

    gt_counts = np.bincount(gt_cls, minlength=num_classes)  # (C,)
    level = score_levels(det_scores)  # (D,) dense integer score levels, same order as the scores
    frame_rank = np.empty(num_frames, dtype=np.int64)  # (F,) frames numbered in order of first appearance
    frame_rank[np.argsort(appearance, kind="stable")] = np.arange(num_frames)
    by_class = stable_argsort_ints(det_cls)  # (D,) by class, rank order (score descending) inside
    bounds = np.searchsorted(det_cls[by_class], np.arange(num_classes + 1))
    per_class_ap: dict[int, float] = {}
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for ci, k in enumerate(class_ids.tolist()):
        if gt_counts[ci] == 0:
            per_class_ap[k] = math.nan
            continue
        rows = by_class[bounds[ci] : bounds[ci + 1]]
        lv = level[rows]  # non-increasing
        if lv.size > 1 and (lv[1:] == lv[:-1]).any():  # equal scores: the original's order decides
            concat = rows[concatenation_order(np.zeros(len(rows), np.int64), frame_rank[det_frame[rows]], lv,
                                              listed[rows])]  # the class's rows as the original concatenates them
            flags = tp[concat[introsort_argsort(level[concat])[::-1]]]  # its np.argsort(scores)[::-1]
        else:  # distinct scores: every sort gives the same order
            flags = tp[rows]
        curves[k] = precision_recall(flags, int(gt_counts[ci]))
        per_class_ap[k] = average_precision(*curves[k])
    valid = [ap for ap in per_class_ap.values() if not math.isnan(ap)]
    return AvaEvalResult(
        mean_ap=float(np.mean(valid)) if valid else math.nan,
        per_class_ap=per_class_ap,
        class_names={k: label_map[k] for k in class_ids.tolist()},
        num_gt={k: int(n) for k, n in zip(class_ids.tolist(), gt_counts.tolist())},
        num_frames=len(np.unique(gt_frame)),
        iou_threshold=iou_threshold,
        max_dets_per_frame=max_dets_per_frame,
        pr_curves=curves,
        unlisted_gt=_id_counts(gt_all.actions[~listed_gt]),
        unlisted_det=_id_counts(detections.actions[~listed_det]),
    )


def _id_counts(actions: np.ndarray) -> dict[int, int]:
    ids, counts = np.unique(actions, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


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
    gt, det = read_rows_fast(gt_csv), read_rows_fast(pred_csv)
    exclusions = read_exclusions(exclusions_csv) if exclusions_csv is not None else None
    _check_rows(gt, str(gt_csv), is_gt=True)
    _check_rows(det, str(pred_csv), is_gt=False)
    return evaluate_ava(gt, det, label_map, exclusions, max_dets_per_frame, iou_threshold)
