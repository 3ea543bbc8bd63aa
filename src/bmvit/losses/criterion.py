"""The Hungarian loss of BMViT (Eq. 3), with ordinary binary cross-entropies.

For matched pairs ``(σ(j), j)``::

    L = [ Σ_j λ_giou (1 - GIoU) + λ_l1 |b_j - b̂_σ(j)|_1                 (matched tokens only)
        + λ_actor Σ_l BCE(α_l, p(α_l))                                     (all L tokens; α_l = 1 iff matched)
        + λ_action Σ_l Σ_c BCE(a_lc, p(a_lc)) ] / N_actors                (unmatched tokens: all-zero targets)

normalized by the number of ground-truth actors in the (global) batch, at least 1 — DETR's
normalization. Defaults are the paper's λ_actor=2, λ_action=6, λ_l1=5, λ_giou=2.

``focal_gamma > 0`` (not in the paper; off by default) replaces the two BCEs by the sigmoid focal
loss of RetinaNet, ``α_t (1 - p_t)^γ BCE``, with ``α_t = focal_alpha`` for positive targets and
``1 - focal_alpha`` for negatives (``focal_alpha < 0`` disables the α weighting). Almost all L
tokens are negatives; the focal term keeps their many easy cases from dominating the gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmvit.boxes import cxcywh_to_xyxy, generalized_box_iou
from bmvit.losses.matcher import Match


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


class SetCriterion(nn.Module):
    def __init__(self, w_actor: float = 2.0, w_action: float = 6.0, w_l1: float = 5.0, w_giou: float = 2.0,
                 focal_gamma: float = 0.0, focal_alpha: float = 0.25) -> None:
        super().__init__()
        self.weights = {"actor": w_actor, "action": w_action, "l1": w_l1, "giou": w_giou}
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha

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

    def forward(self, outputs: dict[str, Tensor], targets: list[dict], matches: list[Match], num_actors: float,
                valid: Tensor | None = None) -> dict[str, Tensor]:
        """Returns the weighted ``loss`` and its unweighted terms ``actor, action, l1, giou``.

        ``num_actors`` is the normalizer: the number of GT actors in the global batch (training
        passes that count divided by the number of processes, since DDP averages gradients);
        0 (a batch without actors) counts as 1. ``valid (B, L)`` bool (padded batches): tokens
        outside it are neither positives nor negatives — their actor/action terms are dropped."""
        actor_logits = outputs["actor_logits"].float()  # (B, L)
        action_logits = outputs["action_logits"].float()  # (B, L, K)
        B, L, K = action_logits.shape
        dev = actor_logits.device
        b_idx = torch.cat([torch.full_like(r, b) for b, (r, _) in enumerate(matches)]).to(dev)  # (M,)
        p_idx = torch.cat([r for r, _ in matches]).to(dev)  # (M,)
        gt_boxes = torch.cat([t["boxes"][c] for t, (_, c) in zip(targets, matches)]).to(dev).float()  # (M, 4)
        gt_labels = torch.cat([t["labels"][c] for t, (_, c) in zip(targets, matches)]).to(dev).float()  # (M, K)

        actor_t = torch.zeros(B, L, device=dev)
        actor_t[b_idx, p_idx] = 1.0
        action_t = torch.zeros(B, L, K, device=dev)
        action_t[b_idx, p_idx] = gt_labels
        norm = float(num_actors) if num_actors > 0 else 1.0
        terms = {
            "actor": self._bce_sum(actor_logits, actor_t, valid) / norm,
            "action": self._bce_sum(action_logits, action_t, valid) / norm,
        }
        pred = outputs["boxes"][b_idx, p_idx].float()  # (M, 4)
        terms["l1"] = (pred - gt_boxes).abs().sum() / norm
        giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt_boxes)))
        terms["giou"] = (1 - giou).sum() / norm
        terms["loss"] = sum(self.weights[k] * terms[k] for k in self.weights)
        return terms
