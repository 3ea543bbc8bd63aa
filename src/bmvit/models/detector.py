"""The single-stage detector: backbone -> token selection -> heads.

``BMViT(clip)`` with ``clip (B, 3, T, H, W)`` returns the output dict of DESIGN.md —
``boxes (B, L, 4)`` normalized cxcywh, ``actor_logits (B, L)``, ``action_logits (B, L, K)`` —
plus ``cells (L, 4)`` (each token's grid cell) and ``grid (t, h, w)`` for analysis and
assignment aids.
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
        out = self.heads(tokens)
        out["cells"] = tokens.cells
        out["grid"] = tuple(features.shape[2:])
        return out
