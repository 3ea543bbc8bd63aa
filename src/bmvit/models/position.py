"""Position tables and their resizing rules, shared by a backbone and its checkpoint converter.

One rule per backbone family, each used both at run time and when a checkpoint is fitted to the
configured input size, so a resized checkpoint computes what the backbone computes on the fly:

* :func:`interpolate_rel_pos` — MViTv2's decomposed relative-position tables (linear);
* :func:`sincos_table` — VideoMAE's fixed 1-D sine-cosine table (the ViT's position embedding);
* :func:`resize_pos_embed` — Hiera's separate spatial (bicubic) and temporal (linear) embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["interpolate_rel_pos", "resize_pos_embed", "sincos_table"]

Shape3 = tuple[int, int, int]


def interpolate_rel_pos(table: Tensor, length: int) -> Tensor:
    """Resize a relative-position table ``(L, d)`` to ``(length, d)`` by linear interpolation.

    The reference rule (``F.interpolate``, mode ``linear``, ``align_corners=False``); used both at
    run time and by the checkpoint converter, so a resized checkpoint computes what the reference
    computes when it interpolates on the fly.
    """
    if table.shape[0] == length:
        return table
    out = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear")  # (1, d, length)
    return out.squeeze(0).t()


def sincos_table(n: int, dim: int) -> Tensor:
    """VideoMAE's 1-D sine-cosine table ``(n, dim)``: column ``2i`` is ``sin(p / 10000^(2i/dim))``,
    column ``2i+1`` the cosine of the same angle (float64 arithmetic, float32 result)."""
    pos = torch.arange(n, dtype=torch.float64, device="cpu")[:, None]
    j = torch.arange(dim, device="cpu")
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64, device="cpu"), (2 * (j // 2)).double() / dim)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


def resize_pos_embed(spatial: Tensor, temporal: Tensor, src_hw: tuple[int, int], thw: Shape3) -> tuple[Tensor, Tensor]:
    """Resize separate position embeddings to the grid ``thw``.

    ``spatial (1, h0·w0, C)`` on the ``src_hw`` grid -> ``(1, h·w, C)`` by bicubic interpolation;
    ``temporal (1, t0, C)`` -> ``(1, t, C)`` by linear interpolation (both ``align_corners=False``,
    computed in float32, returned in the input dtype).
    """
    t, h, w = thw
    if tuple(src_hw) != (h, w):
        C = spatial.shape[-1]
        grid = spatial.float().reshape(1, *src_hw, C).permute(0, 3, 1, 2)  # (1, C, h0, w0)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        spatial = grid.permute(0, 2, 3, 1).reshape(1, h * w, C).to(spatial.dtype)
    if temporal.shape[1] != t:
        line = F.interpolate(temporal.float().transpose(1, 2), size=t, mode="linear", align_corners=False)
        temporal = line.transpose(1, 2).to(temporal.dtype)
    return spatial, temporal
