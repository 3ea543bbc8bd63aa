"""UCF/JHMDB frame-mAP (ACT protocol): hand-computed cases per rule, a literal loop reference of
ACT's ``frameAP`` on random data, and file errors naming ``file:line``."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bmvit.errors import DataError
from bmvit.evaluation.act_protocol import match_best_remaining, pixel_iou, trapezoid_ap
from bmvit.evaluation.frame_csv import FrameRows, read_classes, read_detections, read_gt
from bmvit.evaluation.frame_map import evaluate_frame_map, evaluate_frame_map_files

CLASSES = ["run", "jump", "walk"]
A = (0, 0, 9, 9)  # 10 x 10 pixels under the +1 convention


def gt_rows(*items) -> FrameRows:
    """GT from ``(video, frame, class_index, box)`` tuples, in file order."""
    return _rows([(v, f, c, 1.0, b) for v, f, c, b in items])


def det_rows(*items) -> FrameRows:
    """Detections from ``(video, frame, class_index, score, box)`` tuples, in file order."""
    return _rows(list(items))


def _rows(items) -> FrameRows:
    n = len(items)
    return FrameRows(
        path="mem", videos=np.array([i[0] for i in items], dtype=str).reshape(n),
        frames=np.array([i[1] for i in items], dtype=np.int64).reshape(n),
        labels=np.array([i[2] for i in items], dtype=np.int64).reshape(n),
        boxes=np.array([i[4] for i in items], dtype=np.float64).reshape(n, 4),
        scores=np.array([i[3] for i in items], dtype=np.float64).reshape(n),
        tubes=np.array([""] * n, dtype=str).reshape(n), lines=np.arange(1, n + 1),
    )


def ap0(gt, det, iou=0.5) -> float:
    return evaluate_frame_map(gt, det, CLASSES, iou).per_class_ap["run"]


def test_plus_one_pixel_iou():
    assert pixel_iou(np.array([A], float), np.array([(0, 0, 4, 9)], float))[0] == 0.5  # 50 / 100
    assert pixel_iou(np.array([A], float), np.array([(10, 0, 19, 9)], float))[0] == 0.0
    # Touching at one pixel column overlaps under +1: 10 / (100 + 100 - 10).
    assert pixel_iou(np.array([A], float), np.array([(9, 0, 18, 9)], float))[0] == pytest.approx(10 / 190)


@pytest.mark.parametrize("box,expected", [((0, 0, 4, 9), 1.0), ((0, 0, 3, 9), 0.0)])
def test_threshold_uses_plus_one_iou(box, expected):
    # (0,0,4,9) vs A: IoU exactly 0.5 with +1 (TP); without +1 it would be 36/81 = 0.44.
    assert ap0(gt_rows(("v", 1, 0, A)), det_rows(("v", 1, 0, 0.9, box))) == expected


def test_detection_falls_back_to_best_remaining_gt():
    # GT A and B overlap. det1 takes A. det2's best box is A (IoU 90/110) but A is gone, so it
    # takes B (IoU 80/120 >= 0.5): a TP under ACT (the AVA/VOC rule would call it a FP).
    b = (3, 0, 12, 9)
    gt = gt_rows(("v", 1, 0, A), ("v", 1, 0, b))
    det = det_rows(("v", 1, 0, 0.9, A), ("v", 1, 0, 0.8, (1, 0, 10, 9)))
    assert ap0(gt, det) == 1.0
    # If the remaining box is too far, it is a FP: P/R points (0,1) (.5,1) (.5,.5) -> AP 0.5.
    gt = gt_rows(("v", 1, 0, A), ("v", 1, 0, (30, 0, 39, 9)))
    assert ap0(gt, det) == 0.5


def test_trapezoid_over_raw_points_from_r0_p1():
    # FP, TP, TP with 2 GT: points (0,1) (0,0) (.5,.5) (1,2/3).
    # Trapezoids: 0 + .5 * (0 + .5) / 2 + .5 * (.5 + 2/3) / 2 = 5/12 (VOC's envelope: 2/3).
    gt = gt_rows(("v", 1, 0, A), ("v", 2, 0, A))
    det = det_rows(("v", 3, 0, 0.9, A), ("v", 1, 0, 0.8, A), ("v", 2, 0, 0.7, A))
    assert ap0(gt, det) == pytest.approx(5 / 12)
    ap, precision, recall = trapezoid_ap(np.array([False, True, True]), 2)
    assert ap == pytest.approx(5 / 12)
    assert precision.tolist() == [0.0, 0.5, 2 / 3] and recall.tolist() == [0.0, 0.5, 1.0]


def test_detections_on_frames_without_gt_are_false_positives():
    gt = gt_rows(("v", 1, 0, A))
    det = det_rows(("v", 1, 0, 0.5, A), ("v", 2, 0, 0.9, A), ("w", 1, 0, 0.8, A))
    # FP, FP, TP: points (0,1) (0,0) (0,0) (1,1/3): AP = 1 * (0 + 1/3) / 2.
    assert ap0(gt, det) == pytest.approx(1 / 6)


def test_duplicate_gt_rows_count_twice():
    gt = gt_rows(("v", 1, 0, A), ("v", 1, 0, A))
    assert ap0(gt, det_rows(("v", 1, 0, 0.9, A))) == pytest.approx(0.5)  # (0,1)->(.5,1)
    two = det_rows(("v", 1, 0, 0.9, A), ("v", 1, 0, 0.8, A))
    assert ap0(gt, two) == 1.0  # the second detection takes the remaining duplicate


def test_equal_scores_keep_file_order():
    gt = gt_rows(("v", 1, 0, A))
    tp, fp = ("v", 1, 0, 0.5, A), ("v", 2, 0, 0.5, A)
    assert ap0(gt, det_rows(tp, fp)) == 1.0  # (0,1) (1,1) (1,.5)
    assert ap0(gt, det_rows(fp, tp)) == 0.25  # (0,1) (0,0) (1,.5)


def test_equal_iou_takes_first_gt_in_file_order():
    a, b = (0, 0, 9, 9), (10, 0, 19, 9)
    mid = (5, 0, 14, 9)  # IoU 50/150 with both
    gt = gt_rows(("v", 1, 0, a), ("v", 1, 0, b))
    det = det_rows(("v", 1, 0, 0.9, mid), ("v", 1, 0, 0.8, a))
    # At IoU 0.3: mid takes a (first), then the detection on a falls back to b: IoU 0 -> FP.
    assert ap0(gt, det, iou=0.3) == 0.5


def test_classes_without_gt_or_detections():
    gt = gt_rows(("v", 1, 0, A), ("v", 1, 1, A))
    det = det_rows(("v", 1, 0, 0.9, A), ("v", 1, 2, 0.9, A))
    res = evaluate_frame_map(gt, det, CLASSES)
    assert res.per_class_ap["run"] == 1.0 and res.per_class_ap["jump"] == 0.0
    assert math.isnan(res.per_class_ap["walk"]) and res.mean_ap == 0.5
    assert res.to_json()["per_class"] == {"run": 1.0, "jump": 0.0, "walk": None}


def test_match_best_remaining_rounds():
    # One group, 2 GT, detections in rank order: d0 -> g0 (.9); d1 best g0 (.8) taken -> g1 (.6);
    # d2 best g1 (.7) but both taken -> FP.
    pair_det = np.array([0, 0, 1, 1, 2, 2])
    pair_gt = np.array([0, 1, 0, 1, 0, 1])
    iou = np.array([0.9, 0.1, 0.8, 0.6, 0.2, 0.7])
    tp = match_best_remaining(pair_det, pair_gt, iou, np.zeros(3, dtype=np.int64), 2, 0.5)
    assert tp.tolist() == [True, True, False]


# ---- literal loop model of ACT's frameAP on random data ------------------------------------


def _act_frame_ap(gt_items, det_items, num_classes, th):
    aps = []
    for c in range(num_classes):
        gt = {}
        for v, f, lab, box in gt_items:
            if lab == c:
                gt.setdefault((v, f), []).append(box)
        gt = {k: np.array(b, dtype=float) for k, b in gt.items()}
        dets = [d for d in det_items if d[2] == c]
        order = sorted(range(len(dets)), key=lambda i: -dets[i][3])  # stable = file order on ties
        n_gt = sum(len(b) for b in gt.values())
        if n_gt == 0:
            aps.append(math.nan)
            continue
        tp = fp = 0
        pr = [(1.0, 0.0)]
        for j in order:
            v, f, _, _, box = dets[j]
            ok = False
            if (v, f) in gt:
                boxes = gt[(v, f)]
                ious = pixel_iou(boxes, np.repeat(np.array([box], float), len(boxes), 0))
                k = int(np.argmax(ious))
                if ious[k] >= th:
                    ok = True
                    gt[(v, f)] = np.delete(boxes, k, 0)
                    if gt[(v, f)].size == 0:
                        del gt[(v, f)]
            tp, fp = tp + ok, fp + (not ok)
            pr.append((tp / (tp + fp), tp / n_gt))
        pr = np.array(pr)
        aps.append(float(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5)))
    return aps


@pytest.mark.parametrize("seed", range(20))
def test_matches_act_loop_on_random_data(seed):
    rng = random.Random(seed)

    def box():
        x, y = rng.randrange(0, 60, 5), rng.randrange(0, 60, 5)
        return (x, y, x + rng.randrange(5, 40, 5), y + rng.randrange(5, 40, 5))

    frames = [(v, f) for v in ("a", "b") for f in range(1, 5)]
    gt = [(*rng.choice(frames), rng.randrange(3), box()) for _ in range(rng.randint(1, 20))]
    det = []
    for _ in range(rng.randint(0, 60)):
        if rng.random() < 0.6:
            v, f, c, (x1, y1, x2, y2) = rng.choice(gt)
            j = [rng.choice((-5, 0, 0, 5)) for _ in range(4)]
            b = (x1 + j[0], y1 + j[1], max(x1 + j[0], x2 + j[2]), max(y1 + j[1], y2 + j[3]))
        else:
            (v, f), c, b = rng.choice(frames), rng.randrange(3), box()
        det.append((v, f, c if rng.random() < 0.8 else rng.randrange(3), round(rng.random(), 1), b))
    for th in (0.3, 0.5, 0.7):
        res = evaluate_frame_map(gt_rows(*gt), det_rows(*det), CLASSES, th)
        ref = _act_frame_ap(gt, det, 3, th)
        for name, r in zip(CLASSES, ref):
            got = res.per_class_ap[name]
            assert (math.isnan(got) and math.isnan(r)) or got == pytest.approx(r, abs=1e-12), (th, name)


# ---- files ------------------------------------------------------------------------------------


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_files_end_to_end(tmp_path):
    classes = _write(tmp_path, "classes.txt", "run\njump\n\nwalk\n")
    gt = _write(tmp_path, "gt.csv", "v1,1,run,0,0,9,9\nv1,2,run,0,0,9,9\n")
    det = _write(tmp_path, "det.csv", "v1,1,run,0.9,0,0,9,9\nv1,2,run,0.8,0,0,4,9\nv1,3,jump,0.5,0,0,9,9\n")
    res = evaluate_frame_map_files(classes, gt, det)
    assert res.per_class_ap["run"] == 1.0 and math.isnan(res.per_class_ap["jump"]) and res.mean_ap == 1.0
    # The 8-column GT (with tube id) serves eval-frame too.
    gt8 = _write(tmp_path, "gt8.csv", "v1,1,run,t0,0,0,9,9\nv1,2,run,t0,0,0,9,9\n")
    assert evaluate_frame_map_files(classes, gt8, det).per_class_ap == res.per_class_ap


@pytest.mark.parametrize(
    "text,needle",
    [
        ("v1,1,run,0.9,0,0,9,9\nv1,2,sprint,0.9,0,0,9,9\n", "det.csv:2: unknown class 'sprint'"),
        ("v1,1,run,0.9,0,0,9\n", "det.csv:1: expected 8 columns"),
        ("v1,1,run,0.9,0,0,9,9\n\nv1,x,run,0.9,0,0,9,9\n", "det.csv:3: column 'frame' must be an integer"),
        ("v1,1.5,run,0.9,0,0,9,9\n", "det.csv:1: column 'frame'"),
        ("v1,1,run,high,0,0,9,9\n", "det.csv:1: column 'score' must be a finite number"),
        ("v1,1,run,nan,0,0,9,9\n", "det.csv:1: column 'score'"),
        ("video,frame,class,score,x1,y1,x2,y2\n", "det.csv:1: column 'frame' must be an integer, got 'frame' (these files have no header"),
    ],
)
def test_bad_detection_rows_name_file_and_line(tmp_path, text, needle):
    det = _write(tmp_path, "det.csv", text)
    with pytest.raises(DataError, match=None) as err:
        read_detections(det, CLASSES)
    assert needle in str(err.value)


def test_bad_gt_and_class_list(tmp_path):
    with pytest.raises(DataError, match=r"classes.txt:3: class 'run' repeats line 1"):
        read_classes(_write(tmp_path, "classes.txt", "run\njump\nrun\n"))
    with pytest.raises(DataError, match="no class names"):
        read_classes(_write(tmp_path, "empty.txt", "\n\n"))
    with pytest.raises(DataError, match=r"gt.csv:2: unknown class 'swim'"):
        read_gt(_write(tmp_path, "gt.csv", "v,1,run,0,0,9,9\nv,2,swim,0,0,9,9\n"), CLASSES)
    with pytest.raises(DataError, match=r"gt.csv:1: expected 8 columns"):
        read_gt(_write(tmp_path, "gt.csv", "v,1,run,0,0,9,9\n"), CLASSES, tubes=True)
    with pytest.raises(DataError, match="not found"):
        read_gt(tmp_path / "missing.csv", CLASSES)


# ---- inverted / degenerate detection boxes: scored as ACT scores them ---------------------------


def test_inverted_detection_boxes_get_acts_iou():
    """ACT's formula on x2 < x1: area (x2 - x1 + 1)(y2 - y1 + 1) may be negative; hand-computed."""
    gt = np.array([A] * 3, dtype=np.float64)
    det = np.array([(9, 0, 0, 9), (5, 0, 4.5, 9), (20, 0, 9, 9)], dtype=np.float64)
    iou = pixel_iou(det, gt)
    # (9,0,0,9): area -8*10 = -80, overlap 0 -> 0 / (100 - 80) = 0
    # (5,0,4.5,9): area 0.5*10 = 5, overlap width min(5.5, 10) - 5 = 0.5 -> 5 / (100 + 5 - 5) = 0.05
    # (20,0,9,9): area -10*10 = -100, overlap 0 -> 0 / 0 = NaN
    assert iou[0] == 0.0 and iou[1] == pytest.approx(0.05) and math.isnan(iou[2])


def test_inverted_detection_boxes_are_accepted_and_scored_as_false_positives(tmp_path, capsys):
    from bmvit.cli.main import main

    classes = _write(tmp_path, "classes.txt", "run\njump\n")
    gt = _write(tmp_path, "gt.csv", "v1,1,run,0,0,9,9\n")
    # NaN IoU (0.9), a TP (0.8), IoU 0.05 (0.7): P = 0, 1/2, 1/3; R = 0, 1, 1 -> AP = 1 * (0 + 1/2) / 2
    det = _write(tmp_path, "det.csv", "v1,1,run,0.9,20,0,9,9\nv1,1,run,0.8,0,0,9,9\nv1,1,run,0.7,5,0,4.5,9\n")
    rows = read_detections(det, ["run", "jump"])
    assert rows.inverted().tolist() == [True, False, True]
    res = evaluate_frame_map_files(classes, gt, det)
    assert res.per_class_ap["run"] == pytest.approx(0.25) and res.num_inverted == 2
    assert main(["eval-frame", "--classes", str(classes), "--gt", str(gt), "--pred", str(det)]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if line.startswith("note:")]
    assert len(notes) == 1 and "2 detection box(es) with x2 < x1 or y2 < y1 (first at line 1)" in notes[0]
    assert out[-1] == "frame-mAP@0.5: 0.2500"
    # A GT box stays an error: it is annotation data, not a prediction.
    with pytest.raises(DataError, match=r"gt.csv:1: box has x2 < x1"):
        read_gt(_write(tmp_path, "gt.csv", "v1,1,run,9,0,0,9\n"), CLASSES)


def test_nan_iou_among_remaining_gt_is_a_false_positive_like_acts_argmax():
    """ACT takes ``np.argmax`` of the IoUs, which returns a NaN: the detection is a FP even if
    another remaining GT box would match; the same GT box is matched by a later detection."""
    # GT: A (area 100), and B = (30, 0, 39, 9); the detection (20,0,9,9) has area -100: NaN with both.
    gt = gt_rows(("v", 1, 0, A), ("v", 1, 0, (30, 0, 39, 9)))
    det = det_rows(("v", 1, 0, 0.9, (20, 0, 9, 9)), ("v", 1, 0, 0.8, A), ("v", 1, 0, 0.7, (30, 0, 39, 9)))
    res = evaluate_frame_map(gt, det, CLASSES)
    # FP, TP, TP: P = 0, 1/2, 2/3; R = 0, 1/2, 1 -> AP = (1/2)(0 + 1/2)/2 + (1/2)(1/2 + 2/3)/2
    assert res.per_class_ap["run"] == pytest.approx(0.5 * 0.25 + 0.5 * (0.5 + 2 / 3) / 2)
