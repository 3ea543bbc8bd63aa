"""Batching clips of different sizes (``data.resize=keep_aspect``, Table 1c).

Contract: :func:`pad_collate` takes ``[(clip (3, T, h_i, w_i), target_i), ...]`` and returns
``clips (B, 3, T, H, W)`` with ``H, W`` the largest sizes of the batch rounded up to
``multiple``, each clip at the top-left and zeros (the normalized mean colour) elsewhere, and
the targets with ``boxes`` re-normalized to the padded canvas plus ``image_size (h_i, w_i)``, the
valid region. For clips that all have one size it is :func:`bmvit.data.ava.collate` with
``image_size`` added.
"""

from __future__ import annotations

__all__ = ["pad_collate"]


def pad_collate(batch, multiple: int = 32):
    clips, targets = zip(*batch)
    H = max(c.shape[-2] for c in clips)
    W = max(c.shape[-1] for c in clips)
    H, W = -(-H // multiple) * multiple, -(-W // multiple) * multiple
    out = clips[0].new_zeros((len(clips), clips[0].shape[0], clips[0].shape[1], H, W))  # (B, 3, T, H, W)
    new_targets = []
    for i, (c, t) in enumerate(zip(clips, targets)):
        h, w = c.shape[-2:]
        out[i, :, :, :h, :w] = c
        t = dict(t)
        t["boxes"] = t["boxes"] * t["boxes"].new_tensor([w / W, h / H, w / W, h / H])  # cxcywh scales per axis
        t["image_size"] = (h, w)
        new_targets.append(t)
    return out, new_targets
