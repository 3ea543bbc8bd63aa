"""The three per-token heads of BMViT (Fig. 2), following OWL-ViT.

- box head: MLP -> 4, plus the grid bias, then sigmoid: ``box = sigmoid(mlp(x) + bias)`` with
  ``bias = logit(cell centre, cell size)`` so that an untrained token predicts its own cell;
- actor head: MLP -> 1 logit (actor vs. not an actor);
- action head: MLP -> K independent logits (multi-label).

The actor and action output biases start at ``logit(prior)`` (``prior=0.01``), so that the
initial loss of the many negative tokens is small — the usual detection initialisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bmvit.models.token_selection import Tokens


def mlp(dim_in: int, hidden: int, dim_out: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = dim_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.GELU()]
        d = hidden
    mods.append(nn.Linear(d, dim_out))
    return nn.Sequential(*mods)


def grid_bias(cells: Tensor, eps: float = 1e-4) -> Tensor:
    """Inverse sigmoid of each token's cell ``(cx, cy, w, h)``: ``(L, 4)``."""
    c = cells.clamp(eps, 1 - eps)
    return torch.log(c) - torch.log1p(-c)


class BMViTHeads(nn.Module):
    """Maps selected tokens to ``{boxes (B, L, 4), actor_logits (B, L), action_logits (B, L, K)}``."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, box_layers: int = 3, cls_layers: int = 2, prior: float = 0.01) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.box = mlp(dim, hidden, 4, box_layers)
        self.actor = mlp(dim, hidden, 1, cls_layers)
        self.action = mlp(dim, hidden, num_classes, cls_layers)
        nn.init.zeros_(self.box[-1].weight)
        nn.init.zeros_(self.box[-1].bias)
        bias = -math.log((1 - prior) / prior)
        nn.init.constant_(self.actor[-1].bias, bias)
        nn.init.constant_(self.action[-1].bias, bias)

    def forward(self, tokens: Tokens) -> dict[str, Tensor]:
        det = self.norm(tokens.det)  # (B, L, C)
        act = self.norm(tokens.act)  # (B, L, C) or (B, S, L, C)
        boxes = torch.sigmoid(self.box(det) + grid_bias(tokens.cells).to(det.dtype))  # (B, L, 4) cxcywh
        actor_logits = self.actor(det).squeeze(-1)  # (B, L)
        action_logits = self.action(act)  # (B, L, K) or (B, S, L, K)
        if action_logits.ndim == 4:
            action_logits = action_logits.amax(dim=1)  # max-pool over time (strategy 'maxpool')
        return {"boxes": boxes, "actor_logits": actor_logits, "action_logits": action_logits}
