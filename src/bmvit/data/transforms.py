"""Clip + box transforms applied together.

Frames are resized to a fixed square without cropping (BMViT §4): normalized box coordinates are
unchanged by the resize. Training adds horizontal flips (with optional label swaps for
direction-sensitive classes, e.g. *walk left* <-> *walk right*) and colour jitter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import Tensor

KINETICS_MEAN = (0.45, 0.45, 0.45)  # PySlowFast / MViTv2 Kinetics checkpoints
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass
class ClipTransform:
    size: int = 224
    train: bool = False
    hflip_prob: float = 0.0
    hflip_swap: list[tuple[int, int]] = field(default_factory=list)  # label *indices* swapped on flip
    color_jitter: float = 0.0  # max relative change of brightness/contrast/saturation
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    generator: torch.Generator | None = None

    def decode_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def decode_resize(self, im: Image.Image) -> Image.Image:
        return im.resize((self.size, self.size), Image.BILINEAR)

    def __call__(self, frames: Tensor, boxes: Tensor, labels: Tensor, seed: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """frames (T, S, S, 3) uint8, boxes (N, 4) normalized xyxy, labels (N, K) ->
        clip (3, T, S, S) float normalized, boxes, labels.

        Random choices come from a generator seeded with ``seed`` when given (training: the
        sampler's per-sample seed, so results do not depend on worker count or resumption),
        else from ``self.generator`` (or torch's global generator)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else self.generator

        def rand() -> float:
            return float(torch.rand((), generator=gen))

        clip = frames.permute(3, 0, 1, 2).float().div_(255.0)  # (3, T, S, S)
        if self.train and self.hflip_prob > 0 and rand() < self.hflip_prob:
            clip = clip.flip(-1)
            boxes = torch.stack((1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]), dim=-1)
            if self.hflip_swap and len(labels):
                labels = labels.clone()
                for a, b in self.hflip_swap:
                    labels[:, [a, b]] = labels[:, [b, a]]
        if self.train and self.color_jitter > 0:
            j = self.color_jitter
            bright = 1 + (2 * rand() - 1) * j
            contrast = 1 + (2 * rand() - 1) * j
            sat = 1 + (2 * rand() - 1) * j
            gray = clip.mean(0, keepdim=True)
            clip = gray + (clip - gray) * sat
            clip = (clip - clip.mean()) * contrast + clip.mean()
            clip = (clip * bright).clamp_(0, 1)
        mean = clip.new_tensor(self.mean)[:, None, None, None]
        std = clip.new_tensor(self.std)[:, None, None, None]
        return (clip - mean) / std, boxes, labels
