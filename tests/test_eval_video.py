"""Video-mAP: spatio-temporal IoU, tube linking, tube NMS and AP with hand-computed values, a
literal loop model of ACT's ``videoAP`` on random tubes, and tube-file errors."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bmvit.errors import DataError
from bmvit.evaluation.act_protocol import pixel_iou
from bmvit.evaluation.frame_csv import FrameRows, read_detected_tubes, read_gt
from bmvit.evaluation.tube_linking import LinkingParams, link_tubes
from bmvit.evaluation.tubes import Tubes, st_iou, tubes_from_rows
from bmvit.evaluation.video_map import RANGE_50_95, evaluate_video_map, tube_nms

CLASSES = ["run", "jump"]
A = (0.0, 0.0, 9.0, 9.0)
HALF = (0.0, 0.0, 4.0, 9.0)  # IoU 0.5 with A (+1 convention)


def tubes(*specs) -> Tubes:
    """Tubes from ``(video, class, score, {frame: box})`` specs."""
    if not specs:
        return Tubes.empty()
    frames, boxes, lengths = [], [], []
    for _, _, _, per_frame in specs:
        for f in sorted(per_frame):
            frames.append(f)
            boxes.append(per_frame[f])
        lengths.append(len(per_frame))
    return Tubes(np.array([s[0] for s in specs], dtype=str), np.array([s[1] for s in specs], dtype=np.int64),
                 np.array([s[2] for s in specs], dtype=float), np.r_[0, np.cumsum(lengths)].astype(np.int64),
                 np.array(frames, dtype=np.int64), np.array(boxes, dtype=float).reshape(-1, 4),
                 np.array([f"t{i}" for i in range(len(specs))], dtype=str))


def span(lo, hi, box=A):
    return {f: box for f in range(lo, hi + 1)}


def iou_of(a, b) -> float:
    return float(st_iou(a, np.array([0]), b, np.array([0]))[0])


def test_st_iou_is_temporal_iou_times_mean_frame_iou():
    gt = tubes(("v", 0, 1.0, span(1, 10)))
    assert iou_of(tubes(("v", 0, 1.0, span(1, 10))), gt) == 1.0
    assert iou_of(tubes(("v", 0, 1.0, span(6, 15))), gt) == pytest.approx(5 / 15)  # 5 of 15 frames
    assert iou_of(tubes(("v", 0, 1.0, span(6, 15, HALF))), gt) == pytest.approx(5 / 15 * 0.5)
    assert iou_of(tubes(("v", 0, 1.0, span(11, 20))), gt) == 0.0  # disjoint in time
    mixed = {**span(1, 5), **span(6, 10, HALF)}  # spatial mean over 10 frames: (5 + 2.5) / 10
    assert iou_of(tubes(("v", 0, 1.0, mixed)), gt) == pytest.approx(0.75)


def test_st_iou_counts_gaps_as_zero():
    gt = tubes(("v", 0, 1.0, span(1, 10)))
    gappy = span(1, 10)
    del gappy[5]
    assert iou_of(tubes(("v", 0, 1.0, gappy)), gt) == pytest.approx(0.9)


def test_video_ap_hand_computed():
    # Two GT tubes (v1, v2). Tubes by score: exact on v1 (ST-IoU 1), a duplicate on v1
    # (ST-IoU 0.6: its GT is taken and v1 has no other -> FP), one on v2 with ST-IoU 0.3.
    gt = tubes(("v1", 0, 1, span(1, 10)), ("v2", 0, 1, span(1, 10)))
    det = tubes(("v1", 0, 0.9, span(1, 10)), ("v1", 0, 0.8, span(1, 6)), ("v2", 0, 0.7, span(1, 10, (0, 0, 9, 2))))
    assert iou_of(det.select([1]), gt) == pytest.approx(0.6)
    assert iou_of(det.select([2]), gt.select([1])) == pytest.approx(30 / 100)  # 10x3 px of 10x10
    res = evaluate_video_map(gt, det, CLASSES, tube_nms_iou=None)
    # @0.5: TP FP FP -> (0,1) (.5,1) (.5,.5) (.5,1/3): AP 0.5.
    assert res.per_class_ap[0.5]["run"] == pytest.approx(0.5)
    # @0.2: TP FP TP -> (0,1) (.5,1) (.5,.5) (1,2/3): 0.5 + .5 * (1/2 + 2/3) / 2 = 19/24.
    assert res.per_class_ap[0.2]["run"] == pytest.approx(19 / 24)
    assert res.per_class_ap[0.75]["run"] == pytest.approx(0.5)
    assert all(res.per_class_ap[t]["run"] == pytest.approx(0.5) for t in RANGE_50_95)
    assert res.map_50_95 == pytest.approx(0.5) and math.isnan(res.per_class_ap[0.5]["jump"])
    summary = res.summary()
    assert list(summary) == ["0.2", "0.5", "0.75", "0.5:0.95"] and summary["0.2"] == pytest.approx(19 / 24)
    assert res.to_json()["video_mAP"]["0.5:0.95"] == pytest.approx(0.5)


def test_video_matching_falls_back_to_remaining_gt_tube():
    # Two GT tubes in one video; det2's best GT tube (the first, ST-IoU 1) is taken but the
    # second one (ST-IoU 0.5) remains: TP under ACT.
    gt = tubes(("v", 0, 1, span(1, 10)), ("v", 0, 1, span(1, 10, HALF)))
    det = tubes(("v", 0, 0.9, span(1, 10)), ("v", 0, 0.8, span(1, 10)))
    assert evaluate_video_map(gt, det, CLASSES, tube_nms_iou=None).per_class_ap[0.5]["run"] == 1.0


def test_tube_nms_keeps_best_and_drops_overlaps_above_threshold():
    det = tubes(("v", 0, 0.5, span(1, 10)), ("v", 0, 0.9, span(1, 6)),  # ST-IoU 0.6 with the best
                ("v", 0, 0.4, span(20, 30)), ("v", 1, 0.3, span(1, 10)), ("w", 0, 0.2, span(1, 10)))
    assert tube_nms(det, 0.3).tolist() == [1, 2, 3, 4]
    assert tube_nms(det, 0.7).tolist() == [0, 1, 2, 3, 4]
    assert tube_nms(det, None).tolist() == [0, 1, 2, 3, 4]


def _det_rows(items) -> FrameRows:
    """Detection rows from ``(video, frame, class, score, box)``."""
    n = len(items)
    return FrameRows("mem", np.array([i[0] for i in items], dtype=str), np.array([i[1] for i in items], dtype=np.int64),
                     np.array([i[2] for i in items], dtype=np.int64), np.array([i[4] for i in items], float).reshape(n, 4),
                     np.array([i[3] for i in items], float), np.array([""] * n, dtype=str), np.arange(1, n + 1))


def _as_lists(t: Tubes):
    out = []
    for i in range(len(t)):
        lo, hi = t.offsets[i], t.offsets[i + 1]
        out.append((str(t.videos[i]), int(t.labels[i]), round(float(t.scores[i]), 6), t.frames[lo:hi].tolist(),
                    [tuple(b) for b in t.boxes[lo:hi].tolist()]))
    return sorted(out, key=lambda x: (x[0], x[1], x[3][0], -x[2]))


def test_linking_hand_computed():
    far = (50.0, 50.0, 59.0, 59.0)
    near_hi, near_lo = (1.0, 0.0, 10.0, 9.0), (0.0, 0.0, 9.0, 8.0)  # IoU .82 / .9 with A
    rows = _det_rows([
        ("v", 1, 0, 0.9, A), ("v", 1, 0, 0.6, far),
        # frame 2: two candidates overlap A's tube: it takes the higher score (near_hi, 0.7);
        # near_lo starts a tube; the far tube finds nothing and ends.
        ("v", 2, 0, 0.7, near_hi), ("v", 2, 0, 0.5, near_lo),
        # frame 3: the A tube (mean .8) picks first and takes the only box; the near_lo tube ends.
        ("v", 3, 0, 0.8, A),
        ("v", 3, 1, 0.4, far),  # another class: linked separately
    ])
    got = _as_lists(link_tubes(rows, LinkingParams(min_length=1, min_score=0.0, nms_iou=None)))
    assert got == [
        ("v", 0, 0.8, [1, 2, 3], [A, near_hi, A]),
        ("v", 0, 0.6, [1], [far]),
        ("v", 0, 0.5, [2], [near_lo]),
        ("v", 1, 0.4, [3], [far]),
    ]
    # ACT's filters: length >= 2 frames and mean score >= 0.45 leave only the first tube.
    kept = _as_lists(link_tubes(rows, LinkingParams(min_length=2, min_score=0.45, nms_iou=None)))
    assert [k[3] for k in kept] == [[1, 2, 3]]
    # Per-frame NMS at 0.6 removes near_lo (IoU .73 with near_hi) before linking.
    with_nms = _as_lists(link_tubes(rows, LinkingParams(min_length=1, min_score=0.0, nms_iou=0.6)))
    assert [t[3] for t in with_nms] == [[1, 2, 3], [1], [3]]


def test_linking_a_frame_without_boxes_of_the_class_ends_its_tubes():
    rows = _det_rows([("v", 1, 0, 0.9, A), ("v", 2, 1, 0.9, A), ("v", 3, 0, 0.9, A)])
    got = _as_lists(link_tubes(rows, LinkingParams(min_length=1, min_score=0.0)))
    assert [(t[1], t[3]) for t in got] == [(0, [1]), (0, [3]), (1, [2])]


def test_link_then_evaluate_perfect_track():
    gt = tubes(("v", 0, 1, span(1, 20)))
    rows = _det_rows([("v", f, 0, 0.9, A) for f in range(1, 21)] + [("v", f, 0, 0.2, (40, 40, 49, 49)) for f in range(1, 21)])
    det = link_tubes(rows)
    assert len(det) == 2
    res = evaluate_video_map(gt, det, CLASSES)
    assert res.per_class_ap[0.5]["run"] == 1.0 and res.map_50_95 == 1.0


# ---- literal loop model of ACT's videoAP (gap-free tubes) -----------------------------------


def _act_iou3dt(a, b):
    (fa, ba), (fb, bb) = a, b
    tmin, tmax = max(fa[0], fb[0]), min(fa[-1], fb[-1])
    if tmax < tmin:
        return 0.0
    inter, union = tmax - tmin + 1, max(fa[-1], fb[-1]) - min(fa[0], fb[0]) + 1
    sa, sb = ba[fa.index(tmin): fa.index(tmax) + 1], bb[fb.index(tmin): fb.index(tmax) + 1]
    spatial = np.mean(pixel_iou(np.array(sa, float), np.array(sb, float)))
    return float(spatial) * inter / union


def _act_video_ap(gt_specs, det_specs, th):
    aps = []
    for c in range(2):
        gt = {}
        for v, lab, _, per_frame in gt_specs:
            if lab == c:
                gt.setdefault(v, []).append((sorted(per_frame), [per_frame[f] for f in sorted(per_frame)]))
        dets = [d for d in det_specs if d[1] == c]
        n_gt = sum(len(g) for g in gt.values())
        if n_gt == 0:
            aps.append(math.nan)
            continue
        tp = fp = 0
        pr = [(1.0, 0.0)]
        for j in sorted(range(len(dets)), key=lambda i: -dets[i][2]):
            v, _, _, per_frame = dets[j]
            tube = (sorted(per_frame), [per_frame[f] for f in sorted(per_frame)])
            ok = False
            if v in gt:
                ious = [_act_iou3dt(g, tube) for g in gt[v]]
                k = int(np.argmax(ious))
                if ious[k] >= th:
                    ok = True
                    del gt[v][k]
                    if not gt[v]:
                        del gt[v]
            tp, fp = tp + ok, fp + (not ok)
            pr.append((tp / (tp + fp), tp / n_gt))
        pr = np.array(pr)
        aps.append(float(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5)))
    return aps


@pytest.mark.parametrize("seed", range(15))
def test_matches_act_loop_on_random_tubes(seed):
    rng = random.Random(seed)

    def track(lo, hi, x, w):
        return {f: (x + (f - lo), 0.0, x + (f - lo) + w, 20.0) for f in range(lo, hi + 1)}

    gt_specs = [(rng.choice("ab"), rng.randrange(2), 1.0, track(*sorted(rng.sample(range(1, 30), 2)), rng.randrange(0, 20, 2), 10))
                for _ in range(rng.randint(1, 5))]
    det_specs = []
    for _ in range(rng.randint(0, 15)):
        if rng.random() < 0.7:
            v, c, _, per_frame = rng.choice(gt_specs)
            lo, hi = min(per_frame), max(per_frame)
            lo, hi = max(1, lo + rng.randint(-4, 4)), hi + rng.randint(-4, 4)
            x = per_frame[min(per_frame)][0] + rng.choice((-4, 0, 2))
            det_specs.append((v, c if rng.random() < 0.8 else 1 - c, round(rng.random(), 2), track(lo, max(lo, hi), x, 10)))
        else:
            lo = rng.randint(1, 25)
            det_specs.append((rng.choice("ab"), rng.randrange(2), round(rng.random(), 2), track(lo, lo + rng.randint(0, 10), 5, 12)))
    res = evaluate_video_map(tubes(*gt_specs), tubes(*det_specs), CLASSES, tube_nms_iou=None)
    for th in (0.2, 0.5, 0.75):
        for name, ref in zip(CLASSES, _act_video_ap(gt_specs, det_specs, th)):
            got = res.per_class_ap[th][name]
            assert (math.isnan(got) and math.isnan(ref)) or got == pytest.approx(ref, abs=1e-12), (th, name)


# ---- tube files -------------------------------------------------------------------------------


def test_tube_rows_group_and_validate(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("v,2,run,p1,0,0,9,9\nv,1,run,p1,0,0,9,9\nv,1,jump,p2,5,5,9,9\nw,1,run,p1,0,0,9,9\n")
    t = tubes_from_rows(read_gt(gt, CLASSES, tubes=True))
    assert t.videos.tolist() == ["v", "v", "w"] and t.labels.tolist() == [0, 1, 0]
    assert t.frames[t.offsets[0]:t.offsets[1]].tolist() == [1, 2]  # sorted by frame
    gt.write_text("v,1,run,p1,0,0,9,9\nv,2,jump,p1,0,0,9,9\n")
    with pytest.raises(DataError, match=r"gt.csv:2: tube 'p1' of video 'v' changes class \(see line 1\)"):
        tubes_from_rows(read_gt(gt, CLASSES, tubes=True))
    gt.write_text("v,1,run,p1,0,0,9,9\nv,3,run,p1,0,0,9,9\nv,1,run,p1,1,0,9,9\n")
    with pytest.raises(DataError, match=r"gt.csv:3: tube 'p1' of video 'v' has frame 1 twice \(see line 1\)"):
        tubes_from_rows(read_gt(gt, CLASSES, tubes=True))
    det = tmp_path / "tubes.csv"
    det.write_text("v,1,run,d0,0.5,0,0,9,9\nv,2,run,d0,0.7,0,0,9,9\n")
    t = tubes_from_rows(read_detected_tubes(det, CLASSES))
    assert t.scores.tolist() == [pytest.approx(0.6)]  # tube score = mean of its rows' scores
    det.write_text("v,1,run,0.5,0,0,9,9\n")
    with pytest.raises(DataError, match=r"tubes.csv:1: expected 9 columns"):
        read_detected_tubes(det, CLASSES)


def test_inverted_boxes_in_detected_tubes_are_accepted_and_reported(tmp_path, capsys):
    """A tube of inverted boxes has ST-IoU 1 x mean(0) = 0 with the GT tube: a FP; hand-computed AP."""
    from bmvit.cli.main import main

    (tmp_path / "classes.txt").write_text("run\n")
    (tmp_path / "gt.csv").write_text("".join(f"v,{f},run,g,0,0,9,9\n" for f in range(1, 21)))
    tubes = "".join(f"v,{f},run,bad,0.9,9,0,0,9\n" for f in range(1, 21))  # x2 < x1 on every row
    tubes += "".join(f"v,{f},run,good,0.5,0,0,9,9\n" for f in range(1, 21))
    (tmp_path / "tubes.csv").write_text(tubes)
    code = main(["eval-video", "--classes", str(tmp_path / "classes.txt"), "--gt", str(tmp_path / "gt.csv"),
                 "--pred-tubes", str(tmp_path / "tubes.csv"), "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    # FP (0.9) then TP (0.5): P = 0, 1/2; R = 0, 1 -> AP = (1 - 0)(0 + 1/2)/2 = 0.25 at every threshold
    assert out[-4:] == ["video-mAP@0.2: 0.2500", "video-mAP@0.5: 0.2500", "video-mAP@0.75: 0.2500",
                        "video-mAP@0.5:0.95: 0.2500"]
    notes = [line for line in out if line.startswith("note:")]
    assert len(notes) == 1 and "20 detection box(es) with x2 < x1" in notes[0]
    assert __import__("json").loads((tmp_path / "v.json").read_text())["num_inverted_detection_boxes"] == 20


def test_st_iou_gap_is_zero_but_a_nan_frame_iou_stays_nan():
    """ACT's iou3d averages per-frame IoUs: a NaN (0/0, inverted box) makes the tube pair NaN, a
    frame where one tube has no box counts 0 (tubes with gaps, not in ACT)."""
    from bmvit.evaluation.frame_csv import FrameRows
    from bmvit.evaluation.tubes import st_iou, tubes_from_rows

    def tubes(rows):
        n = len(rows)
        return tubes_from_rows(FrameRows("mem", np.array(["v"] * n), np.array([r[0] for r in rows]), np.zeros(n, np.int64),
                                         np.array([r[1] for r in rows], float), np.ones(n), np.array(["t"] * n),
                                         np.arange(1, n + 1)))

    a = tubes([(1, (0, 0, 9, 9)), (2, (0, 0, 9, 9))])
    gap = tubes([(1, (0, 0, 9, 9)), (3, (0, 0, 9, 9))])  # no box on frame 2
    nan = tubes([(1, (0, 0, 9, 9)), (2, (20, 0, 9, 9))])  # area -100 on frame 2: 0 / 0
    assert st_iou(a, [0], gap, [0])[0] == pytest.approx(2 / 3 * (1 + 0) / 2)
    assert math.isnan(st_iou(a, [0], nan, [0])[0])


def test_tubes_out_under_a_file_is_one_line(tmp_path, capsys):
    from bmvit.cli.main import main

    (tmp_path / "classes.txt").write_text("run\n")
    (tmp_path / "gt.csv").write_text("".join(f"v,{f},run,g,0,0,9,9\n" for f in range(1, 21)))
    (tmp_path / "pred.csv").write_text("".join(f"v,{f},run,0.9,0,0,9,9\n" for f in range(1, 21)))
    (tmp_path / "file").write_text("")
    code = main(["eval-video", "--classes", str(tmp_path / "classes.txt"), "--gt", str(tmp_path / "gt.csv"),
                 "--pred", str(tmp_path / "pred.csv"), "--tubes-out", str(tmp_path / "file" / "tubes.csv")])
    assert code == 2
    assert f"error: {tmp_path / 'file' / 'tubes.csv'}: cannot write output" in capsys.readouterr().err
