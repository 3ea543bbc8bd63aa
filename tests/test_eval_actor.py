"""Actor detector metrics (paper Table 1b's precision / recall, and actor AP): hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bmvit.evaluation.actor_metrics import evaluate_actors, iou_normalized

G1, G2, G3 = (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0), (0.2, 0.2, 0.6, 0.6)
NEAR_G1 = (0.0, 0.0, 0.5, 0.4)  # IoU 0.8 with G1, 0 with G2


def _case(**kw):
    """Frame 0: actors G1, G2; frame 1: actor G3, no candidate.

    Candidates of frame 0, best first: G1 (0.9) TP; NEAR_G1 (0.8): its best actor G1 is taken and
    G2 does not overlap -> FP; G2 (0.3) TP; a far box (0.1) FP.
    """
    gt_frame, gt_boxes = [0, 0, 1], [G1, G2, G3]
    det_frame = [0, 0, 0, 0]
    det_boxes = [NEAR_G1, (0.9, 0.0, 1.0, 0.1), G1, G2]  # not in score order: the order must not matter
    det_scores = [0.8, 0.1, 0.9, 0.3]
    return evaluate_actors(np.array(gt_frame), np.array(gt_boxes), np.array(det_frame), np.array(det_boxes),
                           np.array(det_scores), **kw)


def test_precision_recall_at_theta_and_actor_ap():
    res = _case(threshold=0.2)
    assert (res.num_gt, res.num_kept, res.tp_kept) == (3, 3, 2)
    assert res.precision == pytest.approx(2 / 3) and res.recall == pytest.approx(2 / 3)
    # ranked TP, FP, TP, FP: precision 1, 1/2, 2/3, 1/2; recall 1/3, 1/3, 2/3, 2/3;
    # envelope 1, 2/3, 2/3, 1/2 -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert res.ap == pytest.approx(5 / 9)


def test_theta_moves_precision_and_recall_but_not_ap():
    res = _case(threshold=0.5)  # kept: 0.9 (TP), 0.8 (FP)
    assert (res.num_kept, res.tp_kept) == (2, 1)
    assert res.precision == pytest.approx(1 / 2) and res.recall == pytest.approx(1 / 3)
    assert res.ap == pytest.approx(5 / 9)
    none = _case(threshold=0.95)
    assert none.num_kept == 0 and math.isnan(none.precision) and none.recall == 0.0 and none.ap == pytest.approx(5 / 9)


def test_ap_counts_the_first_candidates_of_each_frame():
    res = _case(threshold=0.2, max_candidates=2)  # AP over 0.9 (TP), 0.8 (FP) only
    assert res.ap == pytest.approx(1 / 3)
    assert (res.num_kept, res.tp_kept) == (3, 2)  # precision/recall still see every kept box


def test_one_to_one_best_remaining_matching():
    """A detection whose best actor is taken falls back to the best remaining one (>= 0.5)."""
    a, b = (0.0, 0.0, 0.4, 1.0), (0.1, 0.0, 0.5, 1.0)  # IoU 0.6
    d1, d2 = a, (0.05, 0.0, 0.45, 1.0)  # d2: IoU 0.778 with a (taken), 0.778 with b -> b
    assert iou_normalized(np.array([d2, d2]), np.array([a, b])) == pytest.approx([0.35 / 0.45] * 2)
    res = evaluate_actors(np.array([0, 0]), np.array([a, b]), np.array([0, 0]), np.array([d1, d2]),
                          np.array([0.9, 0.8]), threshold=0.2)
    assert (res.tp_kept, res.precision, res.recall, res.ap) == (2, 1.0, 1.0, 1.0)


def test_kept_flags_from_the_detector_and_empty_inputs():
    res = _case(threshold=0.2, kept=np.array([False, False, True, False]))  # only the 0.9 box kept
    assert (res.num_kept, res.tp_kept) == (1, 1)
    empty = evaluate_actors(np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4)), np.zeros(0), 0.2)
    assert empty.num_gt == 0 and math.isnan(empty.precision) and math.isnan(empty.recall) and math.isnan(empty.ap)
    assert "n/a" in empty.line() and empty.to_json()["ap"] is None
