"""AVA frame-mAP: hand-computed cases for each rule, plus a loop-based reference on random data."""

from __future__ import annotations

import heapq
import json
import math
import re
import random
from collections import defaultdict

import numpy as np
import pytest

from bmvit.data.formats.ava import AvaRows, frame_key, write_label_map, write_rows
from bmvit.errors import DataError
from bmvit.evaluation.ava import AvaEvalResult, evaluate_ava, evaluate_ava_files, format_table

FULL = (0.0, 0.0, 1.0, 1.0)
LEFT = (0.0, 0.0, 0.5, 1.0)
RIGHT = (0.5, 0.0, 1.0, 1.0)
LABELS = {1: "stand", 2: "sit", 3: "walk"}


def rows(*items) -> AvaRows:
    """Rows from ``(video, ts, box, action, extra)`` tuples, in the given (file) order."""
    if not items:
        return AvaRows.empty()
    return AvaRows(
        [it[0] for it in items],
        np.array([it[1] for it in items], dtype=np.int64),
        np.array([it[2] for it in items], dtype=np.float64).reshape(-1, 4),
        np.array([it[3] for it in items], dtype=np.int64),
        np.array([it[4] for it in items], dtype=np.float64),
    )


def ap1(gt, det, **kw) -> float:
    return evaluate_ava(gt, det, LABELS, **kw).per_class_ap[1]


def test_perfect_detections_score_one():
    gt = rows(("a", 1, LEFT, 1, 0), ("a", 1, RIGHT, 2, 1), ("b", 7, FULL, 1, 0))
    det = rows(("a", 1, LEFT, 1, 0.3), ("a", 1, RIGHT, 2, 0.9), ("b", 7, FULL, 1, 0.8))
    res = evaluate_ava(gt, det, LABELS)
    assert res.per_class_ap[1] == 1.0 and res.per_class_ap[2] == 1.0
    assert math.isnan(res.per_class_ap[3])
    assert res.mean_ap == 1.0
    assert res.num_gt == {1: 2, 2: 1, 3: 0} and res.num_frames == 2


def test_gt_rows_are_not_deduplicated():
    gt = rows(("a", 1, FULL, 1, 0), ("a", 1, FULL, 1, 0))
    res = evaluate_ava(gt, rows(("a", 1, FULL, 1, 0.9)), LABELS)
    assert res.num_gt[1] == 2 and res.per_class_ap[1] == 0.5


def test_duplicate_detection_is_a_false_positive():
    gt = rows(("a", 1, LEFT, 1, 0), ("a", 1, RIGHT, 1, 0))
    det = rows(("a", 1, LEFT, 1, 0.9), ("a", 1, LEFT, 1, 0.8), ("a", 1, RIGHT, 1, 0.7))
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3
    assert ap1(gt, det) == pytest.approx(0.5 + 1 / 3)


def test_detection_whose_best_gt_is_taken_is_fp_even_if_another_gt_matches():
    a, b = (0.0, 0.0, 0.5, 1.0), (0.1, 0.0, 0.6, 1.0)
    near_a = (0.02, 0.0, 0.52, 1.0)  # IoU 0.923 with a (taken), 0.724 with b (free)
    gt = rows(("a", 1, a, 1, 0), ("a", 1, b, 1, 0))
    det = rows(("a", 1, a, 1, 0.9), ("a", 1, near_a, 1, 0.8))
    assert ap1(gt, det) == 0.5


def test_equal_iou_takes_first_gt():
    a, b = (0.0, 0.0, 0.5, 1.0), (0.25, 0.0, 0.75, 1.0)
    mid = (0.125, 0.0, 0.625, 1.0)  # IoU exactly 0.6 with both: takes a, so the one on a is FP
    gt = rows(("a", 1, a, 1, 0), ("a", 1, b, 1, 0))
    det = rows(("a", 1, mid, 1, 0.9), ("a", 1, a, 1, 0.8))
    assert ap1(gt, det) == 0.5


def test_equal_iou_takes_gt_of_highest_person_id_first():
    # The original lists a frame's GT by descending person id (the CSV's 8th column): the
    # midway detection takes b (person 1), so the detection on a is a TP. Checked against the
    # official script.
    a, b = (0.0, 0.0, 0.5, 1.0), (0.25, 0.0, 0.75, 1.0)
    mid = (0.125, 0.0, 0.625, 1.0)
    gt = rows(("a", 1, a, 1, 0), ("a", 1, b, 1, 1))
    det = rows(("a", 1, mid, 1, 0.9), ("a", 1, a, 1, 0.8))
    assert ap1(gt, det) == 1.0
    gt = rows(("a", 1, a, 1, 1), ("a", 1, b, 1, 0))  # now a is listed first: FP as above
    assert ap1(gt, det) == 0.5


def test_equal_scores_rank_later_frame_first():
    # One GT on frame 1; equal-score detections: TP on frame 1, FP on frame 2. The original
    # ranks the frame that appears later in the detection file first (reversed stable sort).
    gt = rows(("a", 1, FULL, 1, 0))
    tp, fp = ("a", 1, FULL, 1, 0.5), ("a", 2, FULL, 1, 0.5)
    assert ap1(gt, rows(tp, fp)) == 0.5  # FP ranked first: precision 1/2 at recall 1
    assert ap1(gt, rows(fp, tp)) == 1.0


def test_equal_scores_in_one_frame_follow_the_heap_listing():
    # Two equal-score detections claim the same GT. The heap lists the smaller tuple first,
    # (0.5, 1, y1=0, x1=0, ...) = the exact box, so it is matched first (TP) and the shifted one
    # is the FP; ranked in reverse listing order, the FP comes first: AP 1/2 either file order.
    gt = rows(("a", 1, LEFT, 1, 0))
    shifted, exact = ("a", 1, (0.1, 0.0, 0.6, 1.0), 1, 0.5), ("a", 1, LEFT, 1, 0.5)
    assert ap1(gt, rows(shifted, exact)) == 0.5
    assert ap1(gt, rows(exact, shifted)) == 0.5


@pytest.mark.parametrize(
    "box,expected",
    [((0.0, 0.0, 0.5, 1.0), 1.0), ((0.0, 0.0, 0.49, 1.0), 0.0), ((0.0, 0.0, 0.51, 1.0), 1.0)],
)
def test_iou_threshold_boundary(box, expected):
    # IoU with FULL is exactly 0.5 / 0.49 / 0.51 (no +1 pixel convention).
    gt = rows(("a", 1, FULL, 1, 0))
    assert ap1(gt, rows(("a", 1, box, 1, 0.9))) == expected
    assert ap1(gt, rows(("a", 1, box, 1, 0.9)), iou_threshold=0.6) == 0.0


def test_precision_envelope_is_non_increasing():
    gt = rows(("a", 1, LEFT, 1, 0), ("a", 1, RIGHT, 1, 0))
    miss = (0.0, 0.0, 0.1, 0.1)
    det = rows(("a", 1, miss, 1, 0.9), ("a", 1, LEFT, 1, 0.8), ("a", 1, RIGHT, 1, 0.7))
    # FP, TP, TP: raw precision 0, 1/2, 2/3 rises; envelope 2/3 at both recall steps.
    assert ap1(gt, det) == pytest.approx(2 / 3)


def test_cap_drops_low_scoring_tp_beyond_50_per_frame():
    gt = rows(("a", 1, FULL, 1, 0))
    fps = [("a", 1, (0.0, 0.0, 0.1, 0.1), 2, 0.9 - i * 0.01) for i in range(50)]
    det = rows(*fps, ("a", 1, FULL, 1, 0.05), ("b", 1, (0, 0, 0.1, 0.1), 1, 0.99))
    # The FP on frame b has its own budget; with the cap the TP is gone.
    assert ap1(gt, det) == 0.0
    assert ap1(gt, det, max_dets_per_frame=0) == 0.5  # FP (b), then TP
    assert ap1(gt, det, max_dets_per_frame=51) == 0.5


def test_cap_ties_follow_the_heap_of_the_original():
    gt = rows(*[("a", 1, FULL, k, 0) for k in (1, 2, 3)])
    # Full heap of (0.5, 1), (0.5, 2): a higher score evicts the smallest tuple, (0.5, action 1),
    # not the first row in file order.
    det = rows(("a", 1, FULL, 1, 0.5), ("a", 1, FULL, 2, 0.5), ("a", 1, FULL, 3, 0.9))
    res = evaluate_ava(gt, det, LABELS, max_dets_per_frame=2)
    assert res.per_class_ap == {1: 0.0, 2: 1.0, 3: 1.0}
    # An equal score never enters a full heap: action 3 is rejected although its tuple is larger.
    det = rows(("a", 1, FULL, 1, 0.5), ("a", 1, FULL, 2, 0.5), ("a", 1, FULL, 3, 0.5))
    res = evaluate_ava(gt, det, LABELS, max_dets_per_frame=2)
    assert res.per_class_ap == {1: 1.0, 2: 1.0, 3: 0.0}


def test_exclusions_drop_gt_and_detections():
    miss = (0.0, 0.0, 0.1, 0.1)
    gt = rows(("a", 1, FULL, 1, 0), ("a", 2, FULL, 1, 0))
    det = rows(("a", 1, FULL, 1, 0.5), ("a", 2, miss, 1, 0.9))
    assert ap1(gt, det) == 0.25  # FP then TP, 2 GT
    res = evaluate_ava(gt, det, LABELS, exclusions={frame_key("a", 2)})
    assert res.per_class_ap[1] == 1.0 and res.num_gt[1] == 1 and res.num_frames == 1


def test_actions_outside_label_map_are_dropped_before_the_cap():
    gt = rows(("a", 1, FULL, 1, 0), ("a", 1, FULL, 9, 0))
    det = rows(("a", 1, LEFT, 9, 0.9), ("a", 1, FULL, 1, 0.5))
    res = evaluate_ava(gt, det, LABELS, max_dets_per_frame=1)
    assert 9 not in res.per_class_ap and res.per_class_ap[1] == 1.0 and res.num_gt[1] == 1


def test_frames_with_only_unlisted_gt_do_not_count():
    gt = rows(("a", 1, FULL, 1, 0), ("a", 2, FULL, 9, 0))
    det = rows(("a", 1, FULL, 1, 0.5), ("a", 2, FULL, 1, 0.9))  # frame 2 has no listed GT
    res = evaluate_ava(gt, det, LABELS)
    assert res.num_frames == 1 and res.per_class_ap[1] == 0.5


def test_class_without_detections_scores_zero_and_without_gt_is_nan():
    gt = rows(("a", 1, FULL, 1, 0), ("a", 1, FULL, 2, 0))
    det = rows(("a", 1, FULL, 1, 0.5), ("a", 1, FULL, 3, 0.9))
    res = evaluate_ava(gt, det, LABELS)
    assert res.per_class_ap[1] == 1.0 and res.per_class_ap[2] == 0.0
    assert math.isnan(res.per_class_ap[3])
    assert res.mean_ap == 0.5


def test_no_gt_at_all_gives_nan_mean():
    res = evaluate_ava(rows(), rows(("a", 1, FULL, 1, 0.5)), LABELS)
    assert math.isnan(res.mean_ap) and res.num_frames == 0


def test_degenerate_detection_boxes_are_dropped_after_the_cap():
    gt = rows(("a", 1, FULL, 1, 0))
    flat_x, flat_y, inverted = (0.5, 0, 0.5, 1), (0, 0.5, 1, 0.5), (0.9, 0, 0.1, 1)
    det = rows(
        ("a", 1, flat_x, 1, 0.9), ("a", 1, flat_y, 1, 0.8), ("a", 1, inverted, 1, 0.7),
        ("a", 1, FULL, 1, 0.6),
    )
    assert ap1(gt, det) == 1.0  # were they FPs, AP would be 1/4
    assert ap1(gt, det, max_dets_per_frame=3) == 0.0  # the cap counts them, then they go


def test_detections_on_frames_without_gt_are_false_positives():
    gt = rows(("a", 1, FULL, 1, 0))
    det = rows(("a", 1, FULL, 1, 0.5), ("zzz", 3, FULL, 1, 0.9))
    assert ap1(gt, det) == 0.5


def test_timestamps_are_matched_by_frame_key():
    gt = rows(("a", 902, FULL, 1, 0))
    assert ap1(gt, rows(("a", 902, FULL, 1, 0.5))) == 1.0
    assert ap1(gt, rows(("a", 903, FULL, 1, 0.5))) == 0.0


def test_invalid_values_raise_data_error():
    with pytest.raises(DataError, match="ground truth"):
        evaluate_ava(rows(("a", 1, (0.6, 0, 0.4, 1), 1, 0)), rows(), LABELS)
    with pytest.raises(DataError, match="detections"):
        evaluate_ava(rows(), rows(("a", 1, FULL, 1, math.nan)), LABELS)


def test_files_json_and_table(tmp_path):
    write_label_map(tmp_path / "labels.pbtxt", LABELS)
    write_rows(tmp_path / "gt.csv", rows(("a", 1, FULL, 1, 0), ("a", 2, FULL, 2, 1)), "{:d}")
    write_rows(tmp_path / "det.csv", rows(("a", 1, FULL, 1, 0.9), ("a", 2, FULL, 2, 0.8)))
    (tmp_path / "excl.csv").write_text("a,0002\n")
    paths = [tmp_path / n for n in ("gt.csv", "det.csv", "labels.pbtxt")]
    res = evaluate_ava_files(*paths, exclusions_csv=tmp_path / "excl.csv")
    assert isinstance(res, AvaEvalResult)
    assert res.per_class_ap[1] == 1.0 and math.isnan(res.per_class_ap[2]) and res.mean_ap == 1.0
    data = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert data["mean_ap"] == 1.0 and data["classes"][1] == {"id": 2, "name": "sit", "ap": None, "num_gt": 0}
    table = format_table(res)
    assert "stand" in table and "100.00" in table and "n/a" in table
    write_rows(tmp_path / "det.csv", rows(("a", 1, FULL, 1, math.inf)))
    with pytest.raises(DataError, match="det.csv"):
        evaluate_ava_files(*paths)


# ---- independent loop-based reference (semantics of the 2019 official evaluator) ----------


def _ref_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _ref_ap(hits, num_gt):
    if not hits:
        return 0.0
    precision, recall, tp = [], [], 0
    for n, hit in enumerate(hits, start=1):
        tp += hit
        precision.append(tp / n)
        recall.append(tp / num_gt)
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    total, prev = 0.0, 0.0
    for p, r in zip(precision, recall):
        if r != prev:
            total += (r - prev) * p
        prev = r
    return total


def numpy_introsort_argsort(v) -> list[int]:
    """Transcription of numpy's generic ``aquicksort`` (``np.argsort`` of float64 in numpy 1.23,
    the original's numpy): median-of-3 quicksort, insertion sort for ranges of <= 16, heapsort
    past the depth limit ``2 * msb(n)``."""
    n = len(v)
    t = list(range(n))

    def heapsort(lo, num):
        a = lambda k: lo + k - 1  # 1-based heap index -> position in t

        def sift_down(tmp, i, num):  # numpy's inner loop: move tmp down from heap slot i
            j = i << 1
            while j <= num:
                if j < num and v[t[a(j)]] < v[t[a(j + 1)]]:
                    j += 1
                if v[tmp] < v[t[a(j)]]:
                    t[a(i)], i, j = t[a(j)], j, j + j
                else:
                    break
            t[a(i)] = tmp

        for left in range(num >> 1, 0, -1):
            sift_down(t[a(left)], left, num)
        while num > 1:
            tmp = t[a(num)]
            t[a(num)] = t[a(1)]
            num -= 1
            sift_down(tmp, 1, num)

    pl, pr, stack = 0, n - 1, []
    depth = 2 * (n.bit_length() - 1) if n else 0
    while True:
        if depth < 0:
            heapsort(pl, pr - pl + 1)
        else:
            while pr - pl > 15:
                pm = pl + ((pr - pl) >> 1)
                if v[t[pm]] < v[t[pl]]:
                    t[pm], t[pl] = t[pl], t[pm]
                if v[t[pr]] < v[t[pm]]:
                    t[pr], t[pm] = t[pm], t[pr]
                if v[t[pm]] < v[t[pl]]:
                    t[pm], t[pl] = t[pl], t[pm]
                vp = v[t[pm]]
                pi, pj = pl, pr - 1
                t[pm], t[pj] = t[pj], t[pm]
                while True:
                    pi += 1
                    while v[t[pi]] < vp:
                        pi += 1
                    pj -= 1
                    while vp < v[t[pj]]:
                        pj -= 1
                    if pi >= pj:
                        break
                    t[pi], t[pj] = t[pj], t[pi]
                t[pi], t[pr - 1] = t[pr - 1], t[pi]
                depth -= 1
                if pi - pl < pr - pi:
                    stack.append((pi + 1, pr, depth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, depth))
                    pl = pi + 1
            for pi in range(pl + 1, pr + 1):
                vi, pj = t[pi], pi
                while pj > pl and v[vi] < v[t[pj - 1]]:
                    t[pj] = t[pj - 1]
                    pj -= 1
                t[pj] = vi
        if not stack:
            return t
        pl, pr, depth = stack.pop()


@pytest.mark.parametrize("n", [0, 1, 5, 16, 17, 40, 300, 2000])
def test_introsort_argsort_is_numpys_generic_introsort(n):
    """The original's ``np.argsort`` on tie-heavy scores, reproduced on any numpy (ties included)."""
    from bmvit.evaluation.ava import introsort_argsort

    rng = np.random.default_rng(n)
    for levels in (2, 7, 1000):
        v = rng.integers(0, levels, n)
        assert introsort_argsort(v).tolist() == numpy_introsort_argsort(v.tolist())
    v = np.r_[np.arange(n // 2), np.arange(n - n // 2)][::-1].copy()  # runs, sorted halves
    assert introsort_argsort(v).tolist() == numpy_introsort_argsort(v.tolist())


def reference(gt_items, det_items, labels, excluded, cap, thr):
    """Loop-based model of the original's data flow: per-frame heaps fed in file order, each
    listed by a stable sort on descending score (GT: person id), matched per frame in that
    order, concatenated per class in order of first appearance, ranked by a stable ascending
    sort reversed (what numpy's sort does for up to 16 scores)."""

    def read(items, capacity):
        heaps = {}  # insertion order = first appearance of the frame
        for i, (vid, ts, (x1, y1, x2, y2), act, extra) in enumerate(items):
            if act not in labels:
                continue
            heap, item = heaps.setdefault(frame_key(vid, ts), []), (extra, act, y1, x1, y2, x2, i)
            if capacity == 0 or len(heap) < capacity:
                heapq.heappush(heap, item)
            elif extra > heap[0][0]:
                heapq.heapreplace(heap, item)
        return {key: sorted(heap, key=lambda t: -t[0]) for key, heap in heaps.items()}

    gt = {key: listed for key, listed in read(gt_items, 0).items() if key not in excluded}
    per_class = defaultdict(list)  # action -> [(score, hit)] in concatenation order
    for key, listed in read(det_items, cap).items():
        if key in excluded:
            continue
        taken = set()
        for score, act, y1, x1, y2, x2, _ in listed:
            box = (x1, y1, x2, y2)
            if not (x1 < x2 and y1 < y2):
                continue
            best, best_j = -1.0, None
            for j, (_, g_act, gy1, gx1, gy2, gx2, _) in enumerate(gt.get(key, [])):
                if g_act == act and _ref_iou(box, (gx1, gy1, gx2, gy2)) > best:
                    best, best_j = _ref_iou(box, (gx1, gy1, gx2, gy2)), j
            hit = best_j is not None and best >= thr and best_j not in taken
            if hit:
                taken.add(best_j)
            per_class[act].append((score, hit))
    num_gt = {k: sum(t[1] == k for listed in gt.values() for t in listed) for k in labels}
    aps = {}
    for k in labels:
        dets = per_class[k]
        order = numpy_introsort_argsort([sc for sc, _ in dets])[::-1]
        aps[k] = _ref_ap([dets[o][1] for o in order], num_gt[k]) if num_gt[k] else math.nan
    return aps, num_gt


def _random_case(rng: random.Random):
    grid = [i / 10 for i in range(11)]

    def box(valid):
        xs, ys = sorted(rng.sample(grid, 2)), sorted(rng.sample(grid, 2))
        return (xs[0], ys[0], xs[1], ys[1]) if valid else tuple(rng.choice(grid) for _ in range(4))

    frames = [(v, t) for v in ("v0", "v1") for t in range(900, 904)]
    gt = [(*rng.choice(frames), box(True), rng.randint(1, 5), rng.randint(0, 3)) for _ in range(rng.randint(0, 25))]
    det = []
    for _ in range(rng.randint(0, 80)):
        if gt and rng.random() < 0.6:  # near a GT box, maybe in another class
            vid, ts, (x1, y1, x2, y2), act, _ = rng.choice(gt)
            j = [rng.choice((-0.1, 0.0, 0.0, 0.1)) for _ in range(4)]
            b = (x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3])
            act = act if rng.random() < 0.8 else rng.randint(1, 5)
        else:
            vid, ts = rng.choice(frames + [("v2", 900)])
            b, act = box(rng.random() < 0.8), rng.randint(1, 5)
        det.append((vid, ts, b, act, round(rng.random(), 1)))  # coarse scores: many ties
    excluded = {frame_key(*f) for f in frames if rng.random() < 0.15}
    return gt, det, excluded


@pytest.mark.parametrize("seed", range(25))
def test_matches_loop_reference_on_random_data(seed):
    rng = random.Random(seed)
    gt, det, excluded = _random_case(rng)
    labels = {1: "a", 2: "b", 3: "c", 4: "d"}  # action 5 is not listed
    for cap, thr in ((50, 0.5), (3, 0.5), (0, 0.3), (1, 0.5)):
        res = evaluate_ava(rows(*gt), rows(*det), labels, excluded, cap, thr)
        ref_ap, ref_gt = reference(gt, det, labels, excluded, cap, thr)
        assert res.num_gt == ref_gt
        for k in labels:
            if math.isnan(ref_ap[k]):
                assert math.isnan(res.per_class_ap[k])
            else:
                assert res.per_class_ap[k] == pytest.approx(ref_ap[k], abs=1e-12), (cap, thr, k)
        valid = [a for a in ref_ap.values() if not math.isnan(a)]
        assert (math.isnan(res.mean_ap) and not valid) or res.mean_ap == pytest.approx(
            sum(valid) / len(valid), abs=1e-12
        )


# ---- fast CSV reader ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a,0902,0.1,0.2,0.3,0.4,12,0.5\nb,0903,0.0,0.0,1.0,1.0,3,1e-3\n",  # 8 columns
        "a,0902,0.1,0.2,0.3,0.4,12\nb,903,0.0,0.0,1.0,1.0,3",  # 7 columns, no final newline
        "a,0902,0.1,0.2,0.3,0.4,12,0.5\nb,0903,0.0,0.0,1.0,1.0,3\n",  # mixed 8 and 7: careful path
        "a,0902,0.1,0.2,0.3,0.4,12,0.5\r\nb,0903,0.0,0.0,1.0,1.0,3,7\r\n",  # CRLF: careful path
        "a,0902,0.1,0.2,0.3,0.4,12,0.5\n\nb,0903,0.0,0.0,1.0,1.0,3,7\n",  # blank line: careful path
        " a ,902.0,0.1,0.2,0.3,0.4,12,0.5\n",  # spaces, float-typed timestamp: careful path
        "a,0902,-0.1,0.2,0.3,0.4,12,-5\nb,0903,0.0,0.0,1.0,1.0,3,nan\n",
        " a ,0902, 0.1 ,0.2,0.3,0.4,12,0.5\na,0903,.5,5.,1e0,inf,3,-0.0\n",  # spaces: one video id
        '"a",0902,0.1,0.2,0.3,0.4,12,0.5\nb,0903,0.0,0.0,1.0,1.0,3,1\n',  # quoted id
        "a,0902,1_0,0.2,0.3,0.4,12,0.5\n",  # Python's float takes underscores: careful path
        "",
    ],
)
def test_fast_reader_equals_the_careful_reader(tmp_path, text):
    from bmvit.data.formats.ava import read_rows
    from bmvit.evaluation.ava_csv_fast import read_rows_fast

    path = tmp_path / "rows.csv"
    path.write_text(text)
    try:
        careful = read_rows(path)
    except DataError as e:  # then the fast reader raises the same file:line error
        with pytest.raises(DataError, match=re.escape(str(e))):
            read_rows_fast(path)
        return
    fast = read_rows_fast(path).to_rows()
    assert fast.video_ids == careful.video_ids
    for name in ("timestamps", "boxes", "actions", "person_or_score"):
        a, b = getattr(fast, name), getattr(careful, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True), name


def test_fast_reader_parses_full_precision_floats_exactly(tmp_path):
    """repr-written floats (17 significant digits, exponents) round-trip to the same doubles."""
    from bmvit.evaluation.ava_csv_fast import read_rows_fast

    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.random((3000, 5)), rng.random((3000, 5)) * 1e-7]).reshape(-1, 5)
    vals[::7] = np.round(vals[::7], 3)
    lines = [f"v{i % 5},{900 + i % 3},{a!r},{b!r},{c!r},{d!r},{i % 80 + 1},{e!r}" for i, (a, b, c, d, e) in enumerate(vals.tolist())]
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    fast = read_rows_fast(path)
    assert np.array_equal(fast.boxes, vals[:, :4]) and np.array_equal(fast.person_or_score, vals[:, 4])
    assert fast.to_rows().video_ids == [f"v{i % 5}" for i in range(len(vals))]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("a,0902,0.1,0.2,0.3,0.4,12,0.5\nb,0903,0.0,0.0,1.0,1.0\n", "rows.csv:2: expected 7 or 8"),
        ("a,0902,0.1,0.2,0.3,0.4,12,0.5\nb,0903,0.0,zero,1.0,1.0,3,1\n", "rows.csv:2: column 'y1'"),
        ("a,0902.5,0.1,0.2,0.3,0.4,12,0.5\n", "rows.csv:1: column 'timestamp' must be an integer"),
    ],
)
def test_fast_reader_defers_errors_to_the_careful_reader(tmp_path, text, needle):
    from bmvit.evaluation.ava_csv_fast import read_rows_fast

    path = tmp_path / "rows.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_rows_fast(path)
    assert needle in str(err.value)
