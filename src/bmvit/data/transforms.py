"""Clip + box transforms applied together.

Frames are resized to a fixed square without cropping (BMViT §4): normalized box coordinates are
unchanged by the resize. Training adds horizontal flips (with optional label swaps for
direction-sensitive classes, e.g. *walk left* <-> *walk right*), jitter of the ground-truth boxes
(BMViT §4, strength not given in the paper) and colour jitter.

``resize="keep_aspect"`` (Table 1c, "variable aspect ratio") keeps the aspect ratio instead:
frames are decoded with short side ``short_side[1]`` and, in training, resized again to a short
side drawn uniformly from ``short_side``; evaluation uses short side ``size``. Boxes stay
normalized to the whole frame (no crop), so they are unchanged. Clips of one batch then differ
in size: batch them with :func:`bmvit.data.collate.pad_collate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
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
    # --- additions for the real-dataset readers -------------------------------------------------
    box_jitter: float = 0.0  # GT boxes: centre shift and size change up to this fraction of the box size
    resize: str = "square"  # square | keep_aspect
    short_side: tuple[int, int] = (240, 340)  # keep_aspect, training: short side drawn from [lo, hi]

    def _decode_short(self) -> int:
        return int(self.short_side[1]) if self.train else self.size

    def decode_size(self) -> tuple[int, int]:
        """Smallest ``(w, h)`` a JPEG may be DCT-downscaled to before :meth:`decode_resize`."""
        s = self._decode_short() if self.resize == "keep_aspect" else self.size
        return (s, s)

    def decode_resize(self, im: Image.Image) -> Image.Image:
        """One decoded frame -> the size the clip is assembled at (``size``² or keep-aspect)."""
        if self.resize == "keep_aspect":
            return im.resize(keep_aspect_size(im.size, self._decode_short()), Image.BILINEAR)
        return im.resize((self.size, self.size), Image.BILINEAR)

    def __call__(self, frames: Tensor, boxes: Tensor, labels: Tensor, seed: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """frames (T, S, S, 3) uint8, boxes (N, 4) normalized xyxy, labels (N, K) ->
        clip (3, T, S, S) float normalized, boxes, labels (``keep_aspect``: (3, T, h, w)).

        Random choices come from a generator seeded with ``seed`` when given (training: the
        sampler's per-sample seed, so results do not depend on worker count or resumption),
        else from ``self.generator`` (or torch's global generator)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else self.generator

        def rand() -> float:
            return float(torch.rand((), generator=gen))

        # Work on the 0..255 scale and fold 1/255, colour jitter and normalization into two
        # in-place affine passes (the clip is ~3 M values: every full pass costs ~1-2 ms).
        if self.train and self.resize == "keep_aspect":
            lo, hi = int(self.short_side[0]), int(self.short_side[1])
            short = lo + int(torch.randint(hi - lo + 1, (), generator=gen))
        flip = self.train and self.hflip_prob > 0 and rand() < self.hflip_prob
        if flip:
            frames = frames.flip(2)  # (T, H, W, 3) uint8: a quarter of the bytes of the float clip
            boxes = torch.stack((1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]), dim=-1)
            if self.hflip_swap and len(labels):
                labels = labels.clone()
                for a, b in self.hflip_swap:
                    labels[:, [a, b]] = labels[:, [b, a]]
        T, H, W, _ = frames.shape
        clip = torch.empty((3, T, H, W), dtype=torch.float32).copy_(frames.permute(3, 0, 1, 2))  # (3, T, H, W) 0..255
        if self.train and self.resize == "keep_aspect":
            w, h = keep_aspect_size((W, H), short)
            if (h, w) != (H, W):  # (3, T, h, w): bilinear, antialiased when shrinking
                clip = F.interpolate(clip, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        if self.train and self.box_jitter > 0 and len(boxes):
            boxes = jitter_boxes(boxes, self.box_jitter, torch.rand((len(boxes), 4), generator=gen))
        if self.train and self.color_jitter > 0:
            # saturation s (towards the per-pixel grey g), contrast c (towards the clip mean m, which
            # saturation leaves unchanged), brightness b, then clamp:
            #   out = b·c·s·x + b·c·(1 - s)·g + b·(1 - c)·m
            j = self.color_jitter
            bright = 1 + (2 * rand() - 1) * j
            contrast = 1 + (2 * rand() - 1) * j
            sat = 1 + (2 * rand() - 1) * j
            grey = clip.mean(0)  # (T, H, W)
            m = float(grey.mean())
            grey.mul_(bright * contrast * (1 - sat)).add_(bright * (1 - contrast) * m)
            clip.mul_(bright * contrast * sat).add_(grey).clamp_(0, 255)
        scale = torch.tensor([1 / (255 * s) for s in self.std])[:, None, None, None]
        shift = torch.tensor([-mu / s for mu, s in zip(self.mean, self.std)])[:, None, None, None]
        return clip.mul_(scale).add_(shift), boxes, labels


def keep_aspect_size(wh: tuple[int, int], short: int) -> tuple[int, int]:
    """``(w, h)`` of a frame of size ``wh`` resized to short side ``short``, aspect kept."""
    w, h = wh
    if w <= h:
        return short, max(1, round(h * short / w))
    return max(1, round(w * short / h)), short


def jitter_boxes(boxes: Tensor, strength: float, u: Tensor) -> Tensor:
    """Jitter normalized xyxy ``boxes (N, 4)`` with uniform ``u (N, 4)`` in [0, 1).

    The centre moves by up to ``strength`` times the box width/height, and width/height are
    scaled by a factor in ``[1 - strength, 1 + strength]``; the result is clipped to the frame
    and kept at least one thousandth of the frame wide/high.
    """
    s = (2 * u - 1) * strength  # (N, 4) in [-strength, strength)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + s[:, 0] * w
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + s[:, 1] * h
    w, h = w * (1 + s[:, 2]), h * (1 + s[:, 3])
    out = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1).clamp(0, 1)
    eps = 1e-3
    x1 = out[:, 0].clamp(max=1 - eps)
    y1 = out[:, 1].clamp(max=1 - eps)
    return torch.stack((x1, y1, torch.maximum(out[:, 2], x1 + eps), torch.maximum(out[:, 3], y1 + eps)), dim=-1)
