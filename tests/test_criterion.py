import math

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
    terms = SetCriterion()(out, tgt, matches, num_actors=1)
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
    terms = SetCriterion()(out, tgt, matches, num_actors=0)
    assert torch.isfinite(terms["loss"])
    assert terms["l1"].item() == 0 and terms["giou"].item() == 0
    terms["loss"].backward()
    assert out["actor_logits"].grad.abs().sum() > 0


def test_normalised_by_number_of_actors():
    out = _outputs()
    tgt = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([[1.0, 0.0, 1.0]])},
           {"boxes": torch.tensor([[0.3, 0.3, 0.1, 0.2]]), "labels": torch.tensor([[0.0, 1.0, 0.0]])}]
    matches = HungarianMatcher()(out, tgt)
    a = SetCriterion()(out, tgt, matches, num_actors=2)["loss"]
    b = SetCriterion()(out, tgt, matches, num_actors=4)["loss"]
    assert abs(a.item() - 2 * b.item()) < 1e-4
