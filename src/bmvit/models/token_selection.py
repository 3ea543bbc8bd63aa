"""Which output tokens feed the box/actor heads and which feed the action head (BMViT §3.2, §5.2).

Every strategy maps backbone tokens ``(B, C, t, h, w)`` to a :class:`Tokens` triple whose
detection and action tokens are in one-to-one correspondence (the paper's necessary condition for
forming ``<box, p(actor), p(action)>`` triplets). Slice indices are 0-based; the key frame maps to
output slice ``t // 2`` for the MViT 16×4 stem (kernel 3, stride 2, padding 1 in time).

=========  =========================================  ==========================================  =====
name       detection tokens (box, actor)              action tokens                              L
=========  =========================================  ==========================================  =====
singleton  all t·h·w tokens                           the same tokens                            t·h·w
tubelet    temporal mean                              temporal mean                              h·w
c+t        key slice t/2                              temporal mean over all slices              h·w
maxpool    key slice t/2                              all t slices; logits max-pooled over time  h·w
2(c+t)     slices t/2−1 then t/2                      mean over [0, t/2) then over [t/2, t)      2·h·w
central    key slice t/2                              key slice t/2 (the same tokens)            h·w
=========  =========================================  ==========================================  =====

``central`` is the setting of the ViT-B experiment (§6.1 "Generalization": "only the central
tokens for both actor detection and action classification", L = 18×18 = 324 at 16×288²); there
the temporal context reaches the action tokens through the cross-attention action head
(``model.action_head: cross_attention``, :mod:`bmvit.models.heads`). For the ViT's 2×16×16
tubelets, slice ``t // 2`` covers input frames ``T/2`` and ``T/2 + 1``, i.e. it contains the key
frame ``T/2``.

A new strategy is one function ``(features, cells) -> Tokens`` and one entry of :data:`SELECTIONS`
(the only list of ``model.token_selection`` names; the config validates against it).

Every strategy works with every action head: with ``cross_attention`` the action tokens above are
the queries and all ``t·h·w`` backbone tokens are the keys/values.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor


class Tokens(NamedTuple):
    det: Tensor  # (B, L, C) tokens for the box and actor heads
    action: Tensor  # (B, L, C), or (B, S, L, C) whose action logits are max-pooled over S
    cells: Tensor  # (L, 4) normalized cxcywh of each token's grid cell (box bias, assignment aids)


def grid_cells(h: int, w: int, device=None) -> Tensor:
    """Cells of an ``h × w`` grid in row-major order as normalized ``(cx, cy, w, h)``: ``(h*w, 4)``."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    cx, cy = (xs.flatten() + 0.5) / w, (ys.flatten() + 0.5) / h
    return torch.stack((cx, cy, torch.full_like(cx, 1.0 / w), torch.full_like(cy, 1.0 / h)), dim=-1)


def _flat(x: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h*w, C)."""
    return x.flatten(2).transpose(1, 2)


def _singleton(features: Tensor, cells: Tensor) -> Tokens:
    x = features.flatten(2).transpose(1, 2)  # (B, t*h*w, C)
    return Tokens(x, x, cells.repeat(features.shape[2], 1))


def _tubelet(features: Tensor, cells: Tensor) -> Tokens:
    x = _flat(features.mean(2))  # (B, h*w, C)
    return Tokens(x, x, cells)


def _centre_and_temporal(features: Tensor, cells: Tensor) -> Tokens:
    k = features.shape[2] // 2
    return Tokens(_flat(features[:, :, k]), _flat(features.mean(2)), cells)


def _maxpool(features: Tensor, cells: Tensor) -> Tokens:
    B, C, t, h, w = features.shape
    action = features.permute(0, 2, 3, 4, 1).reshape(B, t, h * w, C)  # (B, t, h*w, C)
    return Tokens(_flat(features[:, :, t // 2]), action, cells)


def _two_centre_and_temporal(features: Tensor, cells: Tensor) -> Tokens:
    t = features.shape[2]
    if t < 2:
        raise ValueError(f"token selection '2(c+t)' needs at least 2 output slices, got t={t}")
    k = t // 2
    det = torch.cat((_flat(features[:, :, k - 1]), _flat(features[:, :, k])), dim=1)  # (B, 2hw, C)
    action = torch.cat((_flat(features[:, :, :k].mean(2)), _flat(features[:, :, k:].mean(2))), dim=1)  # (B, 2hw, C)
    return Tokens(det, action, cells.repeat(2, 1))


def _central(features: Tensor, cells: Tensor) -> Tokens:
    x = _flat(features[:, :, features.shape[2] // 2])  # (B, h*w, C)
    return Tokens(x, x, cells)


# ``model.token_selection`` name -> fn(features (B, C, t, h, w), cells (h*w, 4)) -> Tokens (the table above)
SELECTIONS: dict[str, Callable[[Tensor, Tensor], Tokens]] = {
    "singleton": _singleton,
    "tubelet": _tubelet,
    "c+t": _centre_and_temporal,
    "maxpool": _maxpool,
    "2(c+t)": _two_centre_and_temporal,
    "central": _central,
}
STRATEGIES = tuple(SELECTIONS)  # the names, in table order


def select_tokens(features: Tensor, strategy: str = "2(c+t)") -> Tokens:
    """Apply a token-selection strategy to backbone output ``features`` of shape ``(B, C, t, h, w)``."""
    if strategy not in SELECTIONS:
        raise ValueError(f"unknown token selection {strategy!r}; expected one of {', '.join(SELECTIONS)}")
    _, _, _, h, w = features.shape
    return SELECTIONS[strategy](features, grid_cells(h, w, features.device))  # cells (h*w, 4)
