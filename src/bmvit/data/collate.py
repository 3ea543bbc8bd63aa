"""Batching clips, and the padding contract for clips of different sizes (Table 1c).

Clips are uint8 ``(3, T, h, w)`` views of ``(T, h, w, 3)`` memory (:class:`~bmvit.data.transforms.ClipTransform`);
batches are ``(B, 3, T, H, W)`` views of ``(B, T, H, W, 3)`` memory, so batching is one contiguous
copy per clip. :func:`~bmvit.data.transforms.normalize_clips` makes them float on the device.

With ``data.resize=square`` (the paper) every clip is ``(3, T, S, S)`` and :func:`collate_square`
stacks them. With ``data.resize=keep_aspect`` clips differ in size and :func:`pad_collate`:

* returns ``clips (B, 3, T, H, W)`` with ``H, W`` the largest sizes of the batch rounded up to
  ``multiple`` (32: a multiple of every backbone's total stride, so token cells tile the canvas),
  each clip at the top-left and zeros elsewhere (after device normalization: 0, the mean colour);
* re-normalizes each target's ``boxes`` to the padded canvas and adds ``image_size (h_i, w_i)``
  (the valid region) and ``canvas_size (H, W)``.

The model then sees a canvas whose tokens partly cover padding. A token is *valid* when its cell
centre lies inside its clip's valid region (:func:`valid_tokens`); the matcher never assigns an
invalid token, the loss ignores them (they are neither positives nor negatives), and evaluation
drops their detections and maps boxes back to image-normalized coordinates
(:func:`unpad_boxes`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["collate_fn", "collate_square", "pad_collate", "unpad_boxes", "valid_tokens"]


def collate_square(batch):
    """Stack same-size clips ``(B, 3, T, S, S)``; targets stay a list of dicts."""
    clips, targets = zip(*batch)
    return torch.stack([c.permute(1, 2, 3, 0) for c in clips]).permute(0, 4, 1, 2, 3), list(targets)


def pad_collate(batch, multiple: int = 32):
    """Pad clips of different sizes onto one canvas (module docstring)."""
    clips, targets = zip(*batch)
    H = max(c.shape[-2] for c in clips)
    W = max(c.shape[-1] for c in clips)
    H, W = -(-H // multiple) * multiple, -(-W // multiple) * multiple
    out = clips[0].new_zeros((len(clips), clips[0].shape[1], H, W, clips[0].shape[0]))  # (B, T, H, W, 3)
    new_targets = []
    for i, (c, t) in enumerate(zip(clips, targets)):
        h, w = c.shape[-2:]
        out[i, :, :h, :w] = c.permute(1, 2, 3, 0)
        t = dict(t)
        t["boxes"] = t["boxes"] * t["boxes"].new_tensor([w / W, h / H, w / W, h / H])  # cxcywh/xyxy: per axis
        t["image_size"] = (h, w)
        t["canvas_size"] = (H, W)
        new_targets.append(t)
    return out.permute(0, 4, 1, 2, 3), new_targets  # (B, 3, T, H, W)


def collate_fn(resize: str):
    """The collate function for ``data.resize``."""
    return pad_collate if resize == "keep_aspect" else collate_square


def valid_tokens(cells: Tensor, targets: list[dict]) -> Tensor | None:
    """``(B, L)`` bool: token ``l`` of clip ``b`` has its cell centre inside the clip's valid region.

    ``cells (L, 4)`` are canvas-normalized cxcywh. ``None`` when no target carries
    ``image_size``/``canvas_size`` (unpadded batches: every token is valid)."""
    if not any("canvas_size" in t for t in targets):
        return None
    frac = torch.tensor([[t["image_size"][1] / t["canvas_size"][1], t["image_size"][0] / t["canvas_size"][0]]
                         if "canvas_size" in t else [1.0, 1.0] for t in targets], device=cells.device)  # (B, 2) x, y
    return (cells[None, :, :2] < frac[:, None, :]).all(-1)  # (B, L)


def unpad_boxes(boxes: Tensor, target: dict) -> Tensor:
    """Canvas-normalized boxes ``(M, 4)`` (xyxy or cxcywh) of one clip -> normalized to its image, clamped."""
    if "canvas_size" not in target:
        return boxes
    (h, w), (H, W) = target["image_size"], target["canvas_size"]
    return (boxes / boxes.new_tensor([w / W, h / H, w / W, h / H])).clamp(0, 1)
