"""The Hungarian loss of BMViT (Eq. 3), with ordinary binary cross-entropies.

For matched pairs ``(σ(j), j)``::

    L = [ Σ_j λ_giou (1 - GIoU) + λ_l1 |b_j - b̂_σ(j)|_1                 (matched tokens only)
        + λ_actor Σ_l BCE(α_l, p(α_l))                                     (all L tokens; α_l = 1 iff matched)
        + λ_action Σ_l Σ_c BCE(a_lc, p(a_lc)) ] / N_actors                (unmatched tokens: all-zero targets)

normalized by the number of ground-truth actors in the (global) batch, at least 1 — DETR's
normalization. Defaults are the paper's λ_actor=2, λ_action=6, λ_l1=5, λ_giou=2.

:class:`SetCriterion` is the one loss object of training (built by :meth:`SetCriterion.from_config`
from ``LossConfig``): it matches (:class:`~bmvit.losses.matcher.HungarianMatcher`), adds the optional
extra positives (``loss.extra_positives``, :data:`~bmvit.losses.matcher.EXTRA_POSITIVES`), computes
each term and normalizes. Its terms are a table, DETR-style: ``weights`` maps a term name to its λ
and ``loss_<name>(assigned)`` computes the unnormalized sum, so adding a term is one method and one
weight.

``focal_gamma > 0`` (not in the paper; off by default) replaces the two BCEs by the sigmoid focal
loss of RetinaNet, ``α_t (1 - p_t)^γ BCE``, with ``α_t = focal_alpha`` for positive targets and
``1 - focal_alpha`` for negatives (``focal_alpha < 0`` disables the α weighting). Almost all L
tokens are negatives; the focal term keeps their many easy cases from dominating the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmvit.boxes import cxcywh_to_xyxy, generalized_box_iou
from bmvit.config import LossConfig
from bmvit.losses.matcher import EXTRA_POSITIVES, HungarianMatcher, Match


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, gamma: float, alpha: float) -> Tensor:
    """Element-wise focal loss (same shape as ``logits``); ``gamma = 0, alpha < 0`` is plain BCE."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma > 0:
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        bce = bce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        bce = bce * (alpha * targets + (1 - alpha) * (1 - targets))
    return bce


@dataclass
class Assigned:
    """Predictions and their assignment, as every term reads them (built once per call)."""

    outputs: dict[str, Tensor]  # boxes (B, L, 4), actor_logits (B, L), action_logits (B, L, K)
    b_idx: Tensor  # (M,) clip of each matched pair
    p_idx: Tensor  # (M,) token of each matched pair
    gt_boxes: Tensor  # (M, 4) cxcywh float32
    gt_labels: Tensor  # (M, K) float32
    valid: Tensor | None  # (B, L) bool: tokens that are positives or negatives (padded batches), None: all


class SetCriterion(nn.Module):
    def __init__(self, w_actor: float = 2.0, w_action: float = 6.0, w_l1: float = 5.0, w_giou: float = 2.0,
                 focal_gamma: float = 0.0, focal_alpha: float = 0.25, matcher: HungarianMatcher | None = None,
                 extra_positives: str = "none", positive_radius: float = 1.0) -> None:
        super().__init__()
        if extra_positives not in EXTRA_POSITIVES:
            raise ValueError(f"unknown extra positives {extra_positives!r}; expected one of {', '.join(EXTRA_POSITIVES)}")
        # the term table: name -> λ; each name has a method loss_<name>(assigned) -> unnormalized sum
        self.weights = {"actor": w_actor, "action": w_action, "l1": w_l1, "giou": w_giou}
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.extra_positives, self.positive_radius = extra_positives, positive_radius

    @classmethod
    def from_config(cls, loss: LossConfig) -> SetCriterion:
        """The criterion of ``loss`` (λs, matching costs, extra positives, focal loss)."""
        matcher = HungarianMatcher(loss.cost_l1, loss.cost_giou, loss.cost_actor, loss.cost_action)
        return cls(loss.actor, loss.action, loss.l1, loss.giou, loss.focal_gamma, loss.focal_alpha, matcher,
                   loss.extra_positives, loss.positive_radius)

    def match(self, outputs: dict[str, Tensor], targets: list[dict], valid: Tensor | None = None) -> list[Match]:
        """Hungarian matching, then the extra positives of ``extra_positives`` (none by default)."""
        matches = self.matcher(outputs, targets, valid)
        extra = EXTRA_POSITIVES[self.extra_positives]
        if extra is not None:
            matches = extra(matches, outputs["cells"], targets, valid, self.positive_radius)
        return matches

    def forward(self, outputs: dict[str, Tensor], targets: list[dict], num_actors: float,
                valid: Tensor | None = None) -> dict[str, Tensor]:
        """Match ``outputs`` to ``targets`` and return :meth:`losses` of that assignment."""
        return self.losses(outputs, targets, self.match(outputs, targets, valid), num_actors, valid)

    def losses(self, outputs: dict[str, Tensor], targets: list[dict], matches: list[Match], num_actors: float,
               valid: Tensor | None = None) -> dict[str, Tensor]:
        """Returns the weighted ``loss`` and its unweighted terms ``actor, action, l1, giou``.

        ``num_actors`` is the normalizer: the number of GT actors in the global batch (training
        passes that count divided by the number of processes, since DDP averages gradients);
        0 (a batch without actors) counts as 1. ``valid (B, L)`` bool (padded batches): tokens
        outside it are neither positives nor negatives — their actor/action terms are dropped."""
        dev = outputs["actor_logits"].device
        b_idx = torch.cat([torch.full_like(r, b) for b, (r, _) in enumerate(matches)]).to(dev)  # (M,)
        p_idx = torch.cat([r for r, _ in matches]).to(dev)  # (M,)
        gt_boxes = torch.cat([t["boxes"][c] for t, (_, c) in zip(targets, matches)]).to(dev).float()  # (M, 4)
        gt_labels = torch.cat([t["labels"][c] for t, (_, c) in zip(targets, matches)]).to(dev).float()  # (M, K)
        assigned = Assigned(outputs, b_idx, p_idx, gt_boxes, gt_labels, valid)
        norm = float(num_actors) if num_actors > 0 else 1.0
        terms = {name: getattr(self, f"loss_{name}")(assigned) / norm for name in self.weights}
        terms["loss"] = sum(self.weights[k] * terms[k] for k in self.weights)
        return terms

    # --- the terms: unnormalized sums over the batch --------------------------------------------

    def loss_actor(self, a: Assigned) -> Tensor:
        """Σ_l BCE(α_l, p(α_l)) over all (valid) tokens; α_l = 1 iff token l is matched."""
        logits = a.outputs["actor_logits"].float()  # (B, L)
        target = torch.zeros(logits.shape, device=logits.device)
        target[a.b_idx, a.p_idx] = 1.0
        return self._bce_sum(logits, target, a.valid)

    def loss_action(self, a: Assigned) -> Tensor:
        """Σ_l Σ_c BCE(a_lc, p(a_lc)); unmatched tokens have all-zero targets."""
        logits = a.outputs["action_logits"].float()  # (B, L, K)
        target = torch.zeros(logits.shape, device=logits.device)
        target[a.b_idx, a.p_idx] = a.gt_labels
        return self._bce_sum(logits, target, a.valid)

    def loss_l1(self, a: Assigned) -> Tensor:
        """Σ_j |b_j - b̂_σ(j)|_1 over matched pairs."""
        pred = a.outputs["boxes"][a.b_idx, a.p_idx].float()  # (M, 4)
        return (pred - a.gt_boxes).abs().sum()

    def loss_giou(self, a: Assigned) -> Tensor:
        """Σ_j (1 - GIoU(b_j, b̂_σ(j))) over matched pairs."""
        pred = a.outputs["boxes"][a.b_idx, a.p_idx].float()  # (M, 4)
        giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(a.gt_boxes)))  # (M,)
        return (1 - giou).sum()

    def _bce_sum(self, logits: Tensor, targets: Tensor, valid: Tensor | None) -> Tensor:
        if self.focal_gamma > 0:
            loss = sigmoid_focal_loss(logits, targets, self.focal_gamma, self.focal_alpha)
        elif valid is None:
            return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
        else:
            loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if valid is not None:  # (B, L) -> broadcast over the class axis of action terms
            loss = loss * (valid if loss.ndim == 2 else valid[..., None]).to(loss.dtype)
        return loss.sum()
