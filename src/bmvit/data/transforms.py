"""Clip + box transforms applied together: the CPU half in the data loader, the device half in the step.

Frames are resized to a fixed square without cropping (BMViT §4): normalized box coordinates are
unchanged by the resize. Training adds horizontal flips (with optional label swaps for
direction-sensitive classes, e.g. *walk left* <-> *walk right*), jitter of the ground-truth boxes
(BMViT §4, strength not given in the paper) and colour jitter.

``resize="keep_aspect"`` (Table 1c, "variable aspect ratio") keeps the aspect ratio instead:
frames are decoded with short side ``short_side[1]`` and, in training, resized again to a short
side drawn uniformly from ``short_side``; evaluation uses short side ``size``. Boxes stay
normalized to the whole frame (no crop), so they are unchanged. Clips of one batch then differ
in size: batch them with :func:`bmvit.data.collate.pad_collate`.

Split between loader and device (a GPU consumes clips faster than float work on the CPU allows):

* CPU (:class:`ClipTransform`, in the DataLoader workers): resize (:func:`resize_frames`: torch's
  antialiased bilinear uint8 kernel on the whole clip), flip, box jitter, and the *draw* of the
  colour-jitter factors. The clip stays **uint8** ``(3, T, h, w)`` (a channels-last view: the
  memory is ``(T, h, w, 3)``, no copy); the factors ``(brightness, contrast, saturation)`` travel
  in the target as ``colour (3,)``. A reader may flip the frames itself while decoding, where that
  is cheaper (:meth:`ClipTransform.flips` tells it the seed's draw; ``mirrored=True`` then).
* Device (:func:`normalize_clips`, called by training, evaluation and the Detector after the
  host-to-device copy): uint8 -> float, colour jitter with the target's factors, ``mean``/``std``
  normalization, zeros outside each clip's valid region of a padded batch.

The random draws are those of the former all-CPU transform, in the same order and from the same
per-sample seed, so the augmentation distribution is unchanged; the float results equal the
former CPU ones to float32 rounding (``atol`` 1e-4 after normalization, ``tests/test_transforms_boxes.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bmvit.errors import ConfigError

KINETICS_MEAN = (0.45, 0.45, 0.45)  # PySlowFast / MViTv2 Kinetics checkpoints
KINETICS_STD = (0.225, 0.225, 0.225)
NO_JITTER = (1.0, 1.0, 1.0)  # colour factors (brightness, contrast, saturation) that change nothing

__all__ = ["ClipTransform", "KINETICS_MEAN", "KINETICS_STD", "jitter_boxes", "keep_aspect_size", "normalize_clips",
           "resize_frames", "views_of"]


def resize_frames(frames: Tensor | np.ndarray, hw: tuple[int, int]) -> Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, h, w, 3)`` uint8, bilinear, antialiased when shrinking.

    torch's uint8 channels-last kernel (vectorized; ~6x cheaper than Pillow's per-frame resize).
    Its pixels differ from Pillow's ``BILINEAR`` resize by at most 2 levels (a few per cent of the
    values by 1). Returned contiguous; the input itself when the size already fits."""
    if isinstance(frames, np.ndarray):
        frames = np.ascontiguousarray(frames) if frames.flags.writeable else frames.copy()  # torch needs writable
        x = torch.from_numpy(frames)
    else:
        x = frames.contiguous()
    if tuple(x.shape[1:3]) == tuple(hw):
        return x
    y = F.interpolate(x.permute(0, 3, 1, 2), size=tuple(hw), mode="bilinear", align_corners=False,
                      antialias=True)  # (T, 3, h, w) channels-last
    return y.permute(0, 2, 3, 1).contiguous()  # (T, h, w, 3): no copy when channels-last


def views_of(time_tta) -> tuple[int, ...]:
    """Frame offsets of the clips read per key frame for ``eval.time_tta`` (``(0,)`` when empty);
    :class:`ConfigError` unless they are distinct integers."""
    try:
        values = list(time_tta)
        ok = all(not isinstance(v, bool) and float(v).is_integer() for v in values)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"time TTA: expected a list of integer frame offsets, got {time_tta!r}")
    out = tuple(int(v) for v in values)
    if len(set(out)) != len(out):
        raise ConfigError(f"time TTA: frame offsets must be distinct, got {list(out)}")
    return out or (0,)


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
    time_jitter: int = 0  # training: the clip's frames shifted by a uniform integer in [-j, j] (time_shift)
    views: tuple[int, ...] = (0,)  # evaluation (eval.time_tta): frame offsets of the clips read per key
    #                                frame, one after the other along T (models/time_tta.py)

    def _decode_short(self) -> int:
        return int(self.short_side[1]) if self.train else self.size

    def decode_size(self) -> tuple[int, int]:
        """Smallest ``(w, h)`` a JPEG may be DCT-downscaled to before :meth:`decode_resize`."""
        s = self._decode_short() if self.resize == "keep_aspect" else self.size
        return (s, s)

    def decode_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` that frames decoded at ``hw`` are resized to (``size``² or keep-aspect)."""
        if self.resize == "keep_aspect":
            w, h = keep_aspect_size((hw[1], hw[0]), self._decode_short())
            return h, w
        return self.size, self.size

    def decode_resize(self, frames: Tensor | np.ndarray) -> Tensor:
        """Decoded frames ``(T, H, W, 3)`` uint8 -> the size the clip is assembled at, ``(T, h, w, 3)``."""
        return resize_frames(frames, self.decode_hw(tuple(frames.shape[1:3])))

    def blank(self, num_frames: int) -> Tensor:
        """A uint8 clip ``(3, T, s, s)`` of the mean colour (a placeholder for an unreadable sample)."""
        w, h = self.decode_size()
        fill = torch.tensor([round(255 * m) for m in self.mean], dtype=torch.uint8)
        return fill[:, None, None, None].expand(3, num_frames, h, w).contiguous()

    def _first_draws(self, gen: torch.Generator | None) -> tuple[int, bool]:
        """The draws that come before the frames are touched: ``keep_aspect`` training short side
        (0 otherwise), then whether to flip."""
        short = 0
        if self.train and self.resize == "keep_aspect":
            lo, hi = int(self.short_side[0]), int(self.short_side[1])
            short = lo + int(torch.randint(hi - lo + 1, (), generator=gen))
        flip = self.train and self.hflip_prob > 0 and float(torch.rand((), generator=gen)) < self.hflip_prob
        return short, flip

    def time_shift(self, seed: int | None) -> int:
        """Frames by which a training clip is moved along the video (``time_jitter``; 0 otherwise).

        Temporal jitter (not in the paper): the clip keeps its length and stride but its centre is
        ``key frame + shift``, while the targets stay the key frame's boxes and actions — right for
        actions that last longer than the shift, a small box offset for moving actors (as
        ``box_jitter``). Drawn from its own generator seeded by ``seed``, so the other draws of
        the seed are those without it."""
        if not (self.train and self.time_jitter > 0 and seed is not None):
            return 0
        j = int(self.time_jitter)
        return int(np.random.default_rng((int(seed), 7157)).integers(-j, j + 1))

    def flips(self, seed: int) -> bool:
        """Whether ``self(..., seed=seed)`` flips the clip (the same draws): a frame source can then
        return the frames already mirrored, where that is cheaper (``mirrored=True`` below)."""
        return self._first_draws(torch.Generator().manual_seed(seed))[1]

    def __call__(self, frames: Tensor, boxes: Tensor, labels: Tensor, seed: int | None = None,
                 mirrored: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """frames (T, h, w, 3) uint8, boxes (N, 4) normalized xyxy, labels (N, K) ->
        clip (3, T, h, w) uint8, boxes, labels, colour (3,) float (brightness, contrast, saturation
        factors for :func:`normalize_clips`; ``keep_aspect`` training: a random (h, w)).

        Random choices come from a generator seeded with ``seed`` when given (training: the
        sampler's per-sample seed, so results do not depend on worker count or resumption),
        else from ``self.generator`` (or torch's global generator). ``mirrored``: the frames come
        already flipped left-right because :meth:`flips` said this seed flips (boxes and labels
        are flipped here all the same)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else self.generator

        def rand() -> float:
            return float(torch.rand((), generator=gen))

        short, flip = self._first_draws(gen)
        if mirrored and not flip:
            raise ValueError("ClipTransform: frames came mirrored but this draw does not flip (see flips())")
        if flip:
            if not mirrored:
                frames = frames.flip(2)  # (T, H, W, 3) uint8
            boxes = torch.stack((1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]), dim=-1)
            if self.hflip_swap and len(labels):
                labels = labels.clone()
                for a, b in self.hflip_swap:
                    labels[:, [a, b]] = labels[:, [b, a]]
        if self.train and self.resize == "keep_aspect":
            T, H, W, _ = frames.shape
            w, h = keep_aspect_size((W, H), short)
            frames = resize_frames(frames, (h, w))  # (T, h, w, 3)
        if self.train and self.box_jitter > 0 and len(boxes):
            boxes = jitter_boxes(boxes, self.box_jitter, torch.rand((len(boxes), 4), generator=gen))
        colour = NO_JITTER
        if self.train and self.color_jitter > 0:  # applied on the device: normalize_clips
            j = self.color_jitter
            colour = tuple(1 + (2 * rand() - 1) * j for _ in range(3))  # brightness, contrast, saturation
        clip = frames.contiguous().permute(3, 0, 1, 2)  # (3, T, h, w) view of (T, h, w, 3) memory
        return clip, boxes, labels, torch.tensor(colour, dtype=torch.float32)


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-channel ``scale, shift`` ``(3, 1, 1, 1)`` on ``device`` mapping 0..255 to normalized values
    (made once per device: a later call copies nothing to the device)."""
    scale = torch.tensor([1 / (255 * s) for s in std])[:, None, None, None]
    shift = torch.tensor([-mu / s for mu, s in zip(mean, std)])[:, None, None, None]
    return scale.to(device), shift.to(device)


def normalize_clips(clips: Tensor, mean, std, targets: list[dict] | None = None,
                    colour: Tensor | None = None) -> Tensor:
    """Device half of the transform: ``clips (B, 3, T, H, W)`` uint8 (or float 0..255) -> float32
    normalized ``(B, 3, T, H, W)`` contiguous, on the clips' device.

    Colour jitter (when ``colour (B, 3)``, the targets' ``colour`` factors, is given and not all
    ones): saturation ``s`` towards the per-pixel grey ``g``, contrast ``c`` towards the clip's mean
    grey ``m`` (over its valid region), brightness ``b``, then clamp to 0..255::

        out = b·c·s·x + b·c·(1 - s)·g + b·(1 - c)·m

    ``targets`` with ``image_size``/``canvas_size`` (padded batches, :func:`~bmvit.data.collate.pad_collate`):
    the mean uses each clip's valid region and everything outside it becomes 0 (the mean colour).
    Tensors reach the device without a host synchronization (``colour`` should come pinned or be
    on the device already)."""
    # (B, 3, T, H, W) 0..255, row-major: the loader's channels-last batches made contiguous while still
    # uint8 (the same values; on CPU the jitter and normalization below then run ~3x faster)
    x = clips.contiguous().float()
    sizes = None
    if targets is not None and any("canvas_size" in t for t in targets):
        sizes = [t.get("image_size", tuple(x.shape[-2:])) for t in targets]
    if colour is not None:
        if x.is_cuda and colour.device.type == "cpu" and not colour.is_pinned():
            colour = colour.pin_memory()  # a non_blocking copy from pageable memory would wait for the stream
        colour = colour.to(x.device, non_blocking=True).float()
        b, c, s = (v[:, None, None, None] for v in colour.unbind(1))  # (B, 1, 1, 1) each
        grey = x.mean(1)  # (B, T, H, W)
        if sizes is None:
            m = grey.mean((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        else:
            m = torch.stack([grey[i, :, :h, :w].mean() for i, (h, w) in enumerate(sizes)])[:, None, None, None]
        grey = grey * (b * c * (1 - s)) + b * (1 - c) * m
        x = (x * (b * c * s)[:, None] + grey[:, None]).clamp_(0, 255)
    scale, shift = _affine(tuple(float(v) for v in mean), tuple(float(v) for v in std), x.device)
    x = (x * scale + shift).contiguous()
    if sizes is not None:
        for i, (h, w) in enumerate(sizes):
            x[i, :, :, h:, :] = 0
            x[i, :, :, :, w:] = 0
    return x


def batch_colour(targets: list[dict]) -> Tensor | None:
    """``(B, 3)`` colour-jitter factors of a batch's targets; ``None`` when no clip is jittered."""
    rows = [t.get("colour") for t in targets]
    if all(r is None or bool((r == 1).all()) for r in rows):
        return None
    return torch.stack([r if r is not None else torch.ones(3) for r in rows])


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
