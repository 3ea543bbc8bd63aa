"""The single-stage detector: backbone -> token selection -> heads.

``BMViT(clip)`` with ``clip (B, 3, T, H, W)`` returns the output dict of DESIGN.md —
``boxes (B, L, 4)`` normalized cxcywh, ``actor_logits (B, L)``, ``action_logits (B, L, K)`` —
plus ``cells (L, 4)`` (each token's grid cell) and ``grid (t, h, w)`` for analysis and
assignment aids.

Heads that read more than the selected tokens (the cross-attention action head, §6.1) say so with
``needs_context``; they then also get every backbone token, ``(B, t·h·w, C)`` in ``(t, h, w)``
row-major order. Nothing here depends on the backbone: any ``forward_features`` works.
"""

from __future__ import annotations

from torch import Tensor, nn

from bmvit.models.heads import BMViTHeads
from bmvit.models.token_selection import select_tokens


class BMViT(nn.Module):
    def __init__(self, backbone: nn.Module, heads: BMViTHeads, token_selection: str = "2(c+t)") -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.token_selection = token_selection

    def forward(self, clip: Tensor) -> dict[str, Tensor]:
        features = self.backbone.forward_features(clip)  # (B, C, t, h, w)
        tokens = select_tokens(features, self.token_selection)
        if getattr(self.heads, "needs_context", False):
            out = self.heads(tokens, context=features.flatten(2).transpose(1, 2))  # (B, t*h*w, C)
        else:
            out = self.heads(tokens)
        out["cells"] = tokens.cells
        out["grid"] = tuple(features.shape[2:])
        return out
