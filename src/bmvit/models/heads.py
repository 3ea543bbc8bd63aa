"""The three per-token heads of BMViT (Fig. 2), following OWL-ViT.

- box head: MLP -> 4, plus the grid bias, then sigmoid: ``box = sigmoid(mlp(x) + bias)`` with
  ``bias = logit(cell centre, cell size)`` so that an untrained token predicts its own cell;
- actor head: MLP -> 1 logit (actor vs. not an actor);
- action head: MLP -> K independent logits (multi-label).

The actor and action output biases start at ``logit(prior)`` (``prior=0.01``), so that the
initial loss of the many negative tokens is small — the usual detection initialisation.

Action head variants (``model.action_head``):

- ``mlp`` (default; the paper's MViT setting): the action MLP reads the selected action tokens;
- ``cross_attention`` (§6.1, the ViT-B setting; :class:`CrossAttentionActionHead`): the selected
  action tokens first attend to all ``t·h·w`` backbone tokens through one multi-head
  cross-attention layer at backbone width — pre-norm (``LN`` on queries and on keys/values), q/k/v
  and output projections, residual onto the queries — then a LayerNorm and the action MLP.
  Cost: ``L·C²`` (q) + ``2·N·C²`` (k, v) + ``2·L·N·C`` (QKᵀ, AV) + ``L·C²`` (out) MACs; for
  ViT-B@288 (L = 324 queries, N = 2592 keys, C = 768) that is 4.73 G, the paper's "4.7 GFLOPs".
  With ``maxpool`` every time slice's tokens are queries (``t·h·w`` of them) and their logits are
  max-pooled over time as usual; with the other strategies the queries are the strategy's ``L``
  action tokens. The detector hands the heads the full token set (``context``) only when
  ``needs_context`` is true, whatever the backbone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmvit.errors import ConfigError
from bmvit.models.token_selection import Tokens

ACTION_HEADS = ("mlp", "cross_attention")  # the names of model.action_head (config.CHOICES reads them here)


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


class CrossAttentionActionHead(nn.Module):
    """Action tokens attend to all backbone tokens (one cross-attention layer), then the action MLP.

    ``forward(queries (B, L, C), context (B, N, C)) -> (B, L, K)`` action logits. ``queries`` may
    also be ``(B, S, L, C)`` (strategy ``maxpool``): all ``S·L`` tokens attend and the logits come
    back as ``(B, S, L, K)``.
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, layers: int = 2, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"'model.cross_attn_heads': {num_heads} does not divide the backbone width {dim}")
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = mlp(dim, hidden, num_classes, layers)
        for lin in (self.q, self.k, self.v, self.out):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def attend(self, queries: Tensor, context: Tensor) -> Tensor:
        """``queries + out(softmax(q kᵀ/√d) v)``: ``(B, L, C)`` from ``(B, L, C)`` and ``(B, N, C)``."""
        heads = self.num_heads
        q = self.q(self.norm_q(queries)).unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, L, d)
        kv = self.norm_kv(context)
        k = self.k(kv).unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, N, d)
        v = self.v(kv).unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, N, d)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B, L, C)
        return queries + self.out(a)

    def forward(self, queries: Tensor, context: Tensor) -> Tensor:
        shape = queries.shape
        x = self.attend(queries.reshape(shape[0], -1, shape[-1]), context)  # (B, S*L or L, C)
        return self.mlp(self.norm(x)).reshape(*shape[:-1], -1)


class BMViTHeads(nn.Module):
    """Maps selected tokens to ``{boxes (B, L, 4), actor_logits (B, L), action_logits (B, L, K)}``.

    ``action_head="cross_attention"`` swaps the action MLP for :class:`CrossAttentionActionHead`
    (then ``forward`` needs ``context``, all backbone tokens ``(B, N, C)``; ``needs_context`` says so).
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, box_layers: int = 3, cls_layers: int = 2,
                 prior: float = 0.01, action_head: str = "mlp", cross_attn_heads: int = 8) -> None:
        super().__init__()
        if action_head not in ACTION_HEADS:
            raise ConfigError(f"'model.action_head': {action_head!r} is not one of {', '.join(ACTION_HEADS)}")
        self.action_head = action_head
        self.needs_context = action_head == "cross_attention"
        self.norm = nn.LayerNorm(dim)
        self.box = mlp(dim, hidden, 4, box_layers)
        self.actor = mlp(dim, hidden, 1, cls_layers)
        if self.needs_context:
            self.action = CrossAttentionActionHead(dim, num_classes, hidden, cls_layers, cross_attn_heads)
            action_out = self.action.mlp[-1]
        else:
            self.action = mlp(dim, hidden, num_classes, cls_layers)
            action_out = self.action[-1]
        nn.init.zeros_(self.box[-1].weight)
        nn.init.zeros_(self.box[-1].bias)
        bias = -math.log((1 - prior) / prior)
        nn.init.constant_(self.actor[-1].bias, bias)
        nn.init.constant_(action_out.bias, bias)

    def forward(self, tokens: Tokens, context: Tensor | None = None) -> dict[str, Tensor]:
        det = self.norm(tokens.det)  # (B, L, C)
        boxes = torch.sigmoid(self.box(det) + grid_bias(tokens.cells).to(det.dtype))  # (B, L, 4) cxcywh
        actor_logits = self.actor(det).squeeze(-1)  # (B, L)
        if self.needs_context:
            if context is None:
                raise ValueError("the cross-attention action head needs the backbone tokens (context=(B, N, C))")
            action_logits = self.action(tokens.action, context)  # (B, L, K) or (B, S, L, K)
        else:
            action = self.norm(tokens.action)  # (B, L, C) or (B, S, L, C)
            action_logits = self.action(action)  # (B, L, K) or (B, S, L, K)
        if action_logits.ndim == 4:
            action_logits = action_logits.amax(dim=1)  # max-pool over time (strategy 'maxpool')
        return {"boxes": boxes, "actor_logits": actor_logits, "action_logits": action_logits}
