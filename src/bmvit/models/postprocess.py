"""From raw outputs to detections (BMViT §3.2, "Inference").

Keep the tokens whose actor probability exceeds ``threshold`` (θ = 0.2 in the paper); each kept
token is one detected actor with a box and K action scores. Options beyond the paper (off by
default): class-agnostic NMS over kept boxes ranked by p(actor), and action scores multiplied by
p(actor).

It sits next to the model (outputs in, detections out) so that evaluation (``engine/evaluate.py``)
and inference (``inference/detector.py``) both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bmvit.boxes import cxcywh_to_xyxy, nms


@dataclass
class Detections:
    """Detected actors of one clip."""

    boxes: Tensor  # (M, 4) normalized x1, y1, x2, y2, clipped to [0, 1]
    actor_scores: Tensor  # (M,)
    action_scores: Tensor  # (M, K)
    tokens: Tensor  # (M,) index of the token that produced each detection


@torch.no_grad()
def postprocess(outputs: dict[str, Tensor], threshold: float = 0.2, nms_iou: float | None = None, score: str = "action",
                valid: Tensor | None = None) -> list[Detections]:
    """Detections per clip; ``valid (B, L)`` bool (padded batches) excludes tokens over padding."""
    boxes = cxcywh_to_xyxy(outputs["boxes"].float()).clamp(0, 1)  # (B, L, 4)
    actor = outputs["actor_logits"].float().sigmoid()  # (B, L)
    action = outputs["action_logits"].float().sigmoid()  # (B, L, K)
    if score == "actor*action":
        action = action * actor[..., None]
    elif score != "action":
        raise ValueError(f"unknown score mode {score!r}; expected 'action' or 'actor*action'")
    out = []
    for b in range(boxes.shape[0]):
        kept = actor[b] > threshold
        if valid is not None:
            kept &= valid[b]
        keep = torch.nonzero(kept).flatten()
        if nms_iou is not None and len(keep):
            keep = keep[nms(boxes[b, keep], actor[b, keep], nms_iou)]
        out.append(Detections(boxes[b, keep].cpu(), actor[b, keep].cpu(), action[b, keep].cpu(), keep.cpu()))
    return out
