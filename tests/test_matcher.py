import itertools

import numpy as np
import pytest
import torch

from bmvit.losses.matcher import HungarianMatcher, centre_cell_positives
from bmvit.models.token_selection import grid_cells


def _random_problem(rng, L, N, K=4):
    cxcy = torch.tensor(rng.uniform(0.2, 0.8, (L, 2)), dtype=torch.float)
    wh = torch.tensor(rng.uniform(0.05, 0.3, (L, 2)), dtype=torch.float)
    outputs = {
        "boxes": torch.cat([cxcy, wh], -1)[None],
        "actor_logits": torch.tensor(rng.normal(size=(1, L)), dtype=torch.float),
        "action_logits": torch.tensor(rng.normal(size=(1, L, K)), dtype=torch.float),
    }
    gcxcy = torch.tensor(rng.uniform(0.2, 0.8, (N, 2)), dtype=torch.float)
    gwh = torch.tensor(rng.uniform(0.05, 0.3, (N, 2)), dtype=torch.float)
    target = {"boxes": torch.cat([gcxcy, gwh], -1), "labels": torch.tensor(rng.integers(0, 2, (N, K)), dtype=torch.float)}
    return outputs, target


def test_matcher_equals_brute_force():
    rng = np.random.default_rng(0)
    matcher = HungarianMatcher(cost_l1=5, cost_giou=2, cost_actor=2, cost_action=6)
    for _ in range(40):
        L = int(rng.integers(1, 7))
        N = int(rng.integers(1, L + 1))
        outputs, target = _random_problem(rng, L, N)
        (rows, cols), = matcher(outputs, [target])
        cost = matcher.cost_matrix(outputs["boxes"][0], outputs["actor_logits"][0], outputs["action_logits"][0],
                                   target["boxes"], target["labels"])
        assert sorted(cols.tolist()) == list(range(N))  # every GT matched exactly once
        assert len(set(rows.tolist())) == N  # to distinct tokens
        got = cost[rows, cols].sum().item()
        best = min(sum(cost[p[j], j].item() for j in range(N)) for p in itertools.permutations(range(L), N))
        assert abs(got - best) < 1e-4


def test_cost_is_cross_entropy_with_the_right_sign():
    """Eq. 1 prints minus signs; the cost must *grow* as p(true label) falls."""
    m = HungarianMatcher()
    box = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    labels = torch.tensor([[1.0, 0.0]])
    def cost(actor, action):
        return m.cost_matrix(box, torch.tensor([actor]), torch.tensor([action]), box, labels).item()
    assert cost(3.0, [3.0, -3.0]) < cost(-3.0, [3.0, -3.0])  # confident actor is cheaper
    assert cost(0.0, [3.0, -3.0]) < cost(0.0, [-3.0, 3.0])  # right classes are cheaper
    # exact value: BCE(1, σ(0)) + BCE([1,0], σ([0,0])) = 3 log 2 with identical boxes (L1 = 0, 1 - GIoU = 0)
    assert abs(cost(0.0, [0.0, 0.0]) - 3 * np.log(2)) < 1e-5


def test_empty_targets_give_empty_matches():
    rng = np.random.default_rng(1)
    outputs, _ = _random_problem(rng, 5, 1)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, 4)}
    (rows, cols), = HungarianMatcher()(outputs, [empty])
    assert rows.numel() == 0 and cols.numel() == 0


def test_centre_cell_positives():
    cells = grid_cells(4, 4).repeat(2, 1)  # two slices of a 4x4 grid: L = 32
    target = {"boxes": torch.tensor([[0.30, 0.30, 0.2, 0.2], [0.80, 0.80, 0.1, 0.1]]), "labels": torch.zeros(2, 3)}
    matches = [(torch.tensor([0, 31]), torch.tensor([0, 1]))]
    (rows, cols), = centre_cell_positives(matches, cells, [target])
    pairs = set(zip(rows.tolist(), cols.tolist()))
    # GT 0 centre (0.3, 0.3) lies in cell (row 1, col 1) = token 5 and 21; GT 1 in cell (3, 3) = 15 and 31.
    assert pairs == {(0, 0), (31, 1), (5, 0), (21, 0), (15, 1)}


def test_centre_region_positives_hand_case():
    from bmvit.losses.matcher import centre_region_positives
    from bmvit.models.token_selection import grid_cells

    cells = torch.cat([grid_cells(4, 4), grid_cells(4, 4)])  # two temporal slices of a 4x4 grid
    # GT 0: centre (0.3, 0.4) in cell (row 1, col 1); box x in [0.15, 0.45], y in [0.1, 0.7].
    # Within 1 cell of the centre *and* with the cell centre inside the box: col 1 only (x = 0.125
    # is outside), rows 1 and 2 (row 0's centre y = 0.125 is 1.1 cells away) -> tokens 5, 9.
    # GT 1: a tiny box whose centre cell (row 3, col 3) = 15 qualifies although its centre is outside.
    t = {"boxes": torch.tensor([[0.3, 0.4, 0.3, 0.6], [0.8, 0.8, 0.1, 0.1]])}
    matches = [(torch.tensor([0]), torch.tensor([1]))]  # Hungarian matched token 0 to GT 1: kept
    rows, cols = centre_region_positives(matches, cells, [t], radius=1.0)[0]
    got = sorted(zip(rows.tolist(), cols.tolist()))
    assert got == [(0, 1), (5, 0), (9, 0), (15, 1), (21, 0), (25, 0), (31, 1)]
    # radius 0: only the centre cells
    rows, cols = centre_region_positives(matches, cells, [t], radius=0.0)[0]
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (5, 0), (15, 1), (21, 0), (31, 1)]


def test_centre_region_conflict_goes_to_nearest_centre():
    from bmvit.losses.matcher import centre_region_positives
    from bmvit.models.token_selection import grid_cells

    cells = grid_cells(1, 4)  # cells centred at x = 0.125, 0.375, 0.625, 0.875
    t = {"boxes": torch.tensor([[0.30, 0.5, 0.8, 1.0], [0.50, 0.5, 0.8, 1.0]])}
    empty = torch.zeros(0, dtype=torch.long)
    rows, cols = centre_region_positives([(empty, empty)], cells, [t], radius=1.0)[0]
    owner = dict(zip(rows.tolist(), cols.tolist()))
    # token 1 (x=0.375) qualifies for both: 0.3 cells from GT 0, 0.5 from GT 1 -> GT 0;
    # token 3 (x=0.875) is 1.5 cells from GT 1: nobody's
    assert owner == {0: 0, 1: 0, 2: 1}


# --- Each cost term of Eq. 1 against a hand-computed matrix -------------------------------------------
# Tokens P0 (0.25,0.25,0.1,0.1), P1 (0.5,0.5,0.2,0.2), P2 (0.8,0.8,0.1,0.1); actors G0 (0.5,0.5,0.2,0.4),
# G1 (0.3,0.25,0.1,0.1) (cxcywh). In xyxy: P0 [.2,.2,.3,.3], P1 [.4,.4,.6,.6], P2 [.75,.75,.85,.85],
# G0 [.4,.3,.6,.7], G1 [.25,.2,.35,.3].
PRED = torch.tensor([[0.25, 0.25, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]])
GT = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.3, 0.25, 0.1, 0.1]])
LABELS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
ACTOR = torch.tensor([2.0, -6.0, 1.0])
ACTION = torch.tensor([[0.0, 0.0], [-4.0, 4.0], [4.0, -4.0]])  # P1 looks like G1's class, P2 like G0's
# |Δcx| + |Δcy| + |Δw| + |Δh|
L1 = [[0.25 + 0.25 + 0.1 + 0.3, 0.05],
      [0.2, 0.2 + 0.25 + 0.1 + 0.1],
      [0.3 + 0.3 + 0.1 + 0.3, 0.5 + 0.55]]
# 1 - GIoU = 1 - IoU + (enclosing - union) / enclosing
ONE_MINUS_GIOU = [[1 + (0.2 - 0.09) / 0.2, 1 - 1 / 3],  # P0-G0 disjoint, enclosing .4 x .5; P0-G1 IoU 1/3 = GIoU
                  [1 - 0.5, 1 + (0.14 - 0.05) / 0.14],  # P1 inside G0 (half its area); P1-G1 enclosing .35 x .4
                  [1 + (0.2475 - 0.09) / 0.2475, 1 + (0.39 - 0.02) / 0.39]]  # enclosing .45 x .55, .6 x .65


def _sp(x):
    return float(np.log1p(np.exp(x)))


def _bce(y, x):
    """Ordinary binary cross-entropy -y log σ(x) - (1 - y) log(1 - σ(x))."""
    return y * _sp(-x) + (1 - y) * _sp(x)


def _hand(term):
    if term == "l1":
        return torch.tensor(L1)
    if term == "giou":
        return torch.tensor(ONE_MINUS_GIOU)
    if term == "actor":  # BCE(α = 1, p(α_i)): the same for every actor column
        return torch.tensor([[_bce(1, a.item())] * 2 for a in ACTOR])
    return torch.tensor([[sum(_bce(LABELS[j, c].item(), ACTION[i, c].item()) for c in range(2)) for j in range(2)]
                         for i in range(3)])  # action: summed over classes


def _only(term, w=1.0):
    weights = {"cost_l1": 0.0, "cost_giou": 0.0, "cost_actor": 0.0, "cost_action": 0.0}
    weights[f"cost_{term}"] = w
    return HungarianMatcher(**weights)


@pytest.mark.parametrize("term", ["l1", "giou", "actor", "action"])
def test_each_cost_term_matches_a_hand_computed_matrix(term):
    got = _only(term, 3.0).cost_matrix(PRED, ACTOR, ACTION, GT, LABELS)
    assert got.shape == (3, 2)
    assert torch.allclose(got, 3.0 * _hand(term), atol=1e-5), (got, _hand(term))


def test_weighted_cost_is_the_weighted_sum_of_the_terms():
    m = HungarianMatcher(cost_l1=5.0, cost_giou=2.0, cost_actor=0.5, cost_action=7.0)
    want = 5 * _hand("l1") + 2 * _hand("giou") + 0.5 * _hand("actor") + 7 * _hand("action")
    assert torch.allclose(m.cost_matrix(PRED, ACTOR, ACTION, GT, LABELS), want, atol=1e-4)


def _assign(**weights):
    out = {"boxes": PRED[None], "actor_logits": ACTOR[None], "action_logits": ACTION[None]}
    (rows, cols), = HungarianMatcher(**weights)(out, [{"boxes": GT, "labels": LABELS}])
    return dict(zip(cols.tolist(), rows.tolist()))  # GT -> token


def test_each_weight_steers_the_assignment_of_its_own_term():
    """Which token each actor gets, by hand, when one term dominates (the other weights 0 or small)."""
    zero = {"cost_l1": 0.0, "cost_giou": 0.0, "cost_actor": 0.0, "cost_action": 0.0}
    # boxes: P1 sits on G0 (L1 0.2, GIoU 1/2), P0 next to G1 (0.05, 1/3): total 0.25 vs >= 1.05 otherwise
    assert _assign(**{**zero, "cost_l1": 1.0}) == {0: 1, 1: 0}
    assert _assign(**{**zero, "cost_giou": 1.0}) == {0: 1, 1: 0}
    # classes: P2 is confident in G0's class, P1 in G1's
    assert _assign(**{**zero, "cost_action": 1.0}) == {0: 2, 1: 1}
    # boxes plus a strong actor term: P1 (logit -6) costs ~6 more than P0 or P2, so the pair {P0, P2}
    # (L1 1.05 + actor 0.44) beats {P0, P1} (L1 0.25 + actor 6.13); Eq. 1's printed minus sign would pick P1
    assert _assign(**{**zero, "cost_l1": 1.0, "cost_actor": 1.0}) == {0: 2, 1: 0}


def test_non_finite_outputs_still_match():
    """A diverged model (NaN/inf outputs) must reach the loss, whose non-finite check applies
    ``train.nan_policy``; scipy refuses NaN in a cost matrix, so the matcher must not pass it on."""
    rng = np.random.default_rng(2)
    outputs, target = _random_problem(rng, 5, 2)
    outputs["boxes"][0, 1] = float("nan")
    outputs["actor_logits"][0, 3] = float("inf")
    outputs["action_logits"][0, 0] = float("-inf")
    (rows, cols), = HungarianMatcher()(outputs, [target])
    assert sorted(cols.tolist()) == [0, 1] and len(set(rows.tolist())) == 2
