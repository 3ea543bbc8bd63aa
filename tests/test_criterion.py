import dataclasses
import math

import pytest
import torch

from bmvit.losses.criterion import SetCriterion
from bmvit.losses.matcher import HungarianMatcher


def _outputs(B=2, L=6, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "boxes": torch.cat([torch.rand(B, L, 2, generator=g) * 0.6 + 0.2, torch.rand(B, L, 2, generator=g) * 0.2 + 0.05], -1),
        "actor_logits": torch.randn(B, L, generator=g),
        "action_logits": torch.randn(B, L, 3, generator=g),
    }


def test_hand_computed_single_match():
    out = {
        "boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]]),
        "actor_logits": torch.zeros(1, 2),
        "action_logits": torch.zeros(1, 2, 2),
    }
    tgt = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4]]), "labels": torch.tensor([[1.0, 0.0]])}]
    matches = [(torch.tensor([0]), torch.tensor([0]))]
    terms = SetCriterion().losses(out, tgt, matches, num_actors=1)
    ln2 = math.log(2)
    assert abs(terms["actor"].item() - 2 * ln2) < 1e-5  # two tokens at p = 0.5
    assert abs(terms["action"].item() - 4 * ln2) < 1e-5  # 2 tokens x 2 classes at p = 0.5
    assert abs(terms["l1"].item() - 0.2) < 1e-6
    # pred box (0.4,0.4,0.6,0.6) inside GT (0.4,0.3,0.6,0.7): IoU = 0.04/0.08, enclosing = union -> GIoU 0.5
    assert abs(terms["giou"].item() - 0.5) < 1e-5
    expected = 2 * 2 * ln2 + 6 * 4 * ln2 + 5 * 0.2 + 2 * 0.5
    assert abs(terms["loss"].item() - expected) < 1e-4


def test_empty_gt_clip_is_finite_and_has_no_box_loss():
    out = _outputs(B=1)
    out["boxes"].requires_grad_(True)
    out["actor_logits"].requires_grad_(True)
    tgt = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, 3)}]
    matches = HungarianMatcher()(out, tgt)
    terms = SetCriterion().losses(out, tgt, matches, num_actors=0)
    assert torch.isfinite(terms["loss"])
    assert terms["l1"].item() == 0 and terms["giou"].item() == 0
    terms["loss"].backward()
    assert out["actor_logits"].grad.abs().sum() > 0


def test_normalised_by_number_of_actors():
    out = _outputs()
    tgt = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([[1.0, 0.0, 1.0]])},
           {"boxes": torch.tensor([[0.3, 0.3, 0.1, 0.2]]), "labels": torch.tensor([[0.0, 1.0, 0.0]])}]
    matches = HungarianMatcher()(out, tgt)
    a = SetCriterion().losses(out, tgt, matches, num_actors=2)["loss"]
    b = SetCriterion().losses(out, tgt, matches, num_actors=4)["loss"]
    assert abs(a.item() - 2 * b.item()) < 1e-4


# --- Hand-computed values with non-zero logits (Eq. 2-3; docs/architecture.md "Choices") -----------
# Three tokens, two actors, K = 2. Hungarian says: token 2 <-> GT 0, token 0 <-> GT 1 (listed in that
# order), token 1 is "no actor". With all-zero logits every BCE is ln 2 whatever its target; here each
# token's targets matter, so a wrong matched token or a target put on the wrong token changes the loss.

def _sp(x):
    """softplus: BCE(y=1, logit x) = -log σ(x) = sp(-x); BCE(y=0, x) = -log(1 - σ(x)) = sp(x)."""
    return math.log1p(math.exp(x))


ACTOR = [1.0, -2.0, 0.5]
ACTION = [[2.0, -1.0], [0.0, 3.0], [-1.5, 0.5]]


def _three_tokens():
    out = {
        "boxes": torch.tensor([[[0.25, 0.25, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2]]]),
        "actor_logits": torch.tensor([ACTOR]),
        "action_logits": torch.tensor([ACTION]),
    }
    tgt = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.3, 0.25, 0.1, 0.1]]),
            "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}]
    matches = [(torch.tensor([2, 0]), torch.tensor([0, 1]))]
    return out, tgt, matches


# actor: tokens 0 and 2 are positives (-log p), token 1 a negative (-log(1 - p))
ACTOR_SUM = _sp(-1.0) + _sp(-2.0) + _sp(-0.5)
# action, summed over classes: token 0 carries GT 1's labels [0, 1], token 1 all zeros, token 2 GT 0's [1, 0]
ACTION_SUM = (_sp(2.0) + _sp(1.0)) + (_sp(0.0) + _sp(3.0)) + (_sp(1.5) + _sp(0.5))
# boxes: token 2 vs GT 0: |Δh| = 0.2, GIoU 1/2 (inside, half the area); token 0 vs GT 1: |Δcx| = 0.05,
# x overlap 0.05 of 0.15, same y range -> IoU 1/3 and the enclosing box is the union -> GIoU 1/3
L1_SUM = 0.2 + 0.05
GIOU_SUM = (1 - 0.5) + (1 - 1 / 3)


def test_hand_computed_terms_with_nonzero_logits():
    out, tgt, matches = _three_tokens()
    terms = SetCriterion().losses(out, tgt, matches, num_actors=2)
    assert terms["actor"].item() == pytest.approx(ACTOR_SUM / 2, abs=1e-6)
    assert terms["action"].item() == pytest.approx(ACTION_SUM / 2, abs=1e-6)
    assert terms["l1"].item() == pytest.approx(L1_SUM / 2, abs=1e-6)
    assert terms["giou"].item() == pytest.approx(GIOU_SUM / 2, abs=1e-6)
    # the paper's weights: λ_actor 2, λ_action 6, λ_l1 5, λ_giou 2
    expected = (2 * ACTOR_SUM + 6 * ACTION_SUM + 5 * L1_SUM + 2 * GIOU_SUM) / 2
    assert terms["loss"].item() == pytest.approx(expected, abs=1e-5)


def test_each_weight_multiplies_its_own_term():
    out, tgt, matches = _three_tokens()
    terms = SetCriterion(w_actor=1.0, w_action=10.0, w_l1=100.0, w_giou=1000.0).losses(out, tgt, matches, num_actors=1)
    expected = ACTOR_SUM + 10 * ACTION_SUM + 100 * L1_SUM + 1000 * GIOU_SUM
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_swapping_the_matched_tokens_changes_every_term():
    """The same pairs listed the other way round give the same loss; a different assignment does not."""
    out, tgt, _ = _three_tokens()
    crit = SetCriterion().losses
    ref = crit(out, tgt, [(torch.tensor([2, 0]), torch.tensor([0, 1]))], 2)
    same = crit(out, tgt, [(torch.tensor([0, 2]), torch.tensor([1, 0]))], 2)
    other = crit(out, tgt, [(torch.tensor([0, 2]), torch.tensor([0, 1]))], 2)  # GT 0 on token 0 now
    for k in ("actor", "action", "l1", "giou", "loss"):
        assert same[k].item() == pytest.approx(ref[k].item(), abs=1e-6), k
    for k in ("action", "l1", "giou"):  # actor targets are the same set of tokens: only these move
        assert abs(other[k].item() - ref[k].item()) > 1e-3, k
    moved = crit(out, tgt, [(torch.tensor([2, 1]), torch.tensor([0, 1]))], 2)  # token 1 instead of 0
    assert moved["actor"].item() == pytest.approx((_sp(1.0) + _sp(2.0) + _sp(-0.5)) / 2, abs=1e-6)


def test_batch_targets_stay_in_their_clip():
    """Two clips: clip 1's match must put targets on clip 1's tokens (b index), not clip 0's."""
    out, tgt, matches = _three_tokens()
    two = {k: torch.cat([v, v.flip(1)]) for k, v in out.items()}  # clip 1: tokens in reverse order
    flipped = [(2 - matches[0][0], matches[0][1])]  # the same tokens, at their new positions
    terms = SetCriterion().losses(two, tgt + tgt, matches + flipped, num_actors=4)
    for k, v in (("actor", ACTOR_SUM), ("action", ACTION_SUM), ("l1", L1_SUM), ("giou", GIOU_SUM)):
        assert terms[k].item() == pytest.approx(2 * v / 4, abs=1e-6), k


def test_focal_loss_hand_computed():
    """γ = 2, α = 0.25 on the actor term: α_t (1 - p_t)^γ BCE, summed over tokens."""
    out, tgt, matches = _three_tokens()
    terms = SetCriterion(focal_gamma=2.0, focal_alpha=0.25).losses(out, tgt, matches, num_actors=1)

    def sig(x):
        return 1 / (1 + math.exp(-x))

    pos = [(ACTOR[0], 1), (ACTOR[1], 0), (ACTOR[2], 1)]
    want = 0.0
    for x, y in pos:
        p_t = sig(x) if y else 1 - sig(x)
        want += (0.25 if y else 0.75) * (1 - p_t) ** 2 * -math.log(p_t)
    assert terms["actor"].item() == pytest.approx(want, abs=1e-6)


def test_criterion_from_config_matches_then_adds_extra_positives():
    """criterion(outputs, targets, n, valid) == matcher -> extra positives -> losses, with the config's values."""
    from bmvit.config import LossConfig
    from bmvit.losses.matcher import centre_region_positives

    cfg = LossConfig(actor=1.5, action=3.0, l1=4.0, giou=0.5, cost_l1=5.0, cost_giou=2.0, cost_action=0.5,
                     extra_positives="centre_region", positive_radius=1.0)
    out = _outputs(B=1, L=4)
    out["cells"] = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5],
                                 [0.75, 0.75, 0.5, 0.5]])
    tgt = [{"boxes": torch.tensor([[0.3, 0.3, 0.8, 0.8]]), "labels": torch.tensor([[1.0, 0.0, 1.0]])}]
    crit = SetCriterion.from_config(cfg)
    got = crit(out, tgt, num_actors=1)
    matches = HungarianMatcher(cost_l1=5.0, cost_giou=2.0, cost_action=0.5)(out, tgt)
    matches = centre_region_positives(matches, out["cells"], tgt, radius=1.0)
    assert len(matches[0][0]) > 1  # the aid added positives
    want = SetCriterion(1.5, 3.0, 4.0, 0.5).losses(out, tgt, matches, 1)
    for k in ("actor", "action", "l1", "giou", "loss"):
        assert torch.equal(got[k], want[k]), k
    without = SetCriterion.from_config(dataclasses.replace(cfg, extra_positives="none"))(out, tgt, num_actors=1)
    assert abs(without["actor"].item() - got["actor"].item()) > 1e-3  # the config's aid is what changed it
