"""Horizontal-flip test-time augmentation (``eval.hflip_tta``; not in the paper, off by default).

The clip and its mirror image go through the model as one batch of ``2B``. Every token
selection orders its tokens as blocks of one ``h × w`` grid in row-major order
(:mod:`bmvit.models.token_selection`), so the token of cell ``(r, c)`` in the mirrored clip
looks at the content of cell ``(r, w - 1 - c)`` of the original: its outputs are moved to that
token (:func:`mirror_index`), its boxes mirrored (``cx -> 1 - cx``) and its direction-sensitive
action columns swapped (``swap``: the pairs of ``data.hflip_swap``, e.g. *walk left* <->
*walk right*, as label indices). The two views are then averaged per token: boxes (cxcywh)
arithmetically, actor and action scores as probabilities (returned as logits again, so the
output dict keeps the contract of DESIGN.md and post-processing is unchanged).

Padded batches (``keep_aspect``) are mirrored as whole canvases: a token still meets the same
image content in both views, and tokens over padding stay excluded by the valid mask of the
unmirrored clip. The cost is one more forward pass per clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bmvit.errors import ConfigError

__all__ = ["FlipTTA", "mean_probability_logit", "mirror_index", "swap_columns"]

_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the logit


def mirror_index(num_tokens: int, h: int, w: int, device: torch.device | None = None) -> Tensor:
    """``(L,)`` long: for each token, the token of the mirrored grid cell (``L`` a multiple of ``h·w``)."""
    if num_tokens % (h * w):
        raise ValueError(f"flip TTA: {num_tokens} tokens are not blocks of the {h}x{w} output grid")
    idx = torch.arange(num_tokens, device=device)
    block, rest = idx // (h * w), idx % (h * w)
    row, col = rest // w, rest % w
    return block * (h * w) + row * w + (w - 1 - col)


def swap_columns(pairs: Sequence[Sequence[int]], class_ids: Sequence[int]) -> list[tuple[int, int]]:
    """``data.hflip_swap`` (action-id pairs) as column pairs of the model's action outputs."""
    cols = {c: i for i, c in enumerate(class_ids)}
    for pair in pairs:
        if any(a not in cols for a in pair):
            raise ConfigError(f"'data.hflip_swap': {list(pair)} must be two action ids of the labels ({sorted(cols)})")
    return [(cols[a], cols[b]) for a, b in pairs]


def mean_probability_logit(*logits: Tensor) -> Tensor:
    """Logit of the mean of the probabilities given as logits (same shapes), in float32."""
    p = torch.stack([x.float().sigmoid() for x in logits]).mean(0)
    return torch.logit(p.clamp(_EPS, 1 - _EPS))


class FlipTTA(nn.Module):
    """Wraps a detector: ``forward(clip (B, 3, T, H, W))`` -> the detector's output dict, averaged
    over the clip and its horizontal mirror image."""

    def __init__(self, model: nn.Module, swap: Sequence[tuple[int, int]] = ()) -> None:
        super().__init__()
        self.model = model
        self.swap = [(int(a), int(b)) for a, b in swap]

    def forward(self, clip: Tensor) -> dict[str, Tensor]:
        B = clip.shape[0]
        both = self.model(torch.cat((clip, clip.flip(-1)), dim=0))  # one batch of 2B
        _, h, w = both["grid"]
        L = both["boxes"].shape[1]
        perm = mirror_index(L, h, w, clip.device)  # (L,)
        boxes, boxes_m = both["boxes"][:B], both["boxes"][B:, perm]  # (B, L, 4) cxcywh
        boxes_m = torch.cat((1 - boxes_m[..., :1], boxes_m[..., 1:]), dim=-1)
        action_m = both["action_logits"][B:, perm]  # (B, L, K)
        if self.swap:
            cols = list(range(action_m.shape[-1]))
            for a, b in self.swap:
                cols[a], cols[b] = cols[b], cols[a]
            action_m = action_m[..., cols]
        out = dict(both)
        out["boxes"] = (boxes + boxes_m) / 2
        out["actor_logits"] = mean_probability_logit(both["actor_logits"][:B], both["actor_logits"][B:, perm])  # (B, L)
        out["action_logits"] = mean_probability_logit(both["action_logits"][:B], action_m)  # (B, L, K)
        return out
