"""Box formats and box geometry — the one module that converts between box formats.

Conventions (docs/architecture.md):
- inside the model and losses: normalized ``(cx, cy, w, h)`` relative to the resized key frame;
- at file boundaries: normalized ``(x1, y1, x2, y2)`` (AVA CSVs) or absolute pixel corners.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cxcywh_to_xyxy(b: Tensor) -> Tensor:
    """``(..., 4)`` centre/size boxes to corner boxes."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(b: Tensor) -> Tensor:
    """``(..., 4)`` corner boxes to centre/size boxes."""
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)


def scale_xyxy(b: Tensor, width: float, height: float) -> Tensor:
    """Normalized corners to absolute pixel corners (or back, with ``1/width, 1/height``)."""
    return b * b.new_tensor([width, height, width, height])


def box_area(b: Tensor) -> Tensor:
    """Area of ``(..., 4)`` corner boxes (0 for degenerate boxes)."""
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of corner boxes ``a (N, 4)`` and ``b (M, 4)``; returns ``(iou, union)``, each ``(N, M)``."""
    area_a, area_b = box_area(a), box_area(b)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    inter = (rb - lt).clamp(min=0).prod(-1)  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-12), union


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019) of corner boxes: ``(N, 4), (M, 4) -> (N, M)``.

    ``GIoU = IoU - (|C| - |A ∪ B|) / |C|`` with ``C`` the smallest enclosing box; in [-1, 1].
    """
    iou, union = box_iou(a, b)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    enclosing = (rb - lt).clamp(min=0).prod(-1)  # (N, M)
    return iou - (enclosing - union) / enclosing.clamp(min=1e-12)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression on corner boxes ``(N, 4)``; returns kept indices, best first."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True)
    iou = box_iou(boxes[order], boxes[order])[0]  # (N, N) in score order
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1 :] &= iou[i, i + 1 :] <= iou_threshold
    return order[keep]
