"""Clip dataset over any frame source: the shared part of the UCF/JHMDB and video-file readers.

Contract: one sample = one annotated key frame. ``__getitem__(i)`` (or ``(i, aug_seed)``)
returns ``(clip, target)`` exactly like :class:`bmvit.data.ava.AvaClips`: ``clip`` uint8
``(3, T, S, S)`` (0..255 RGB, not yet normalized: :func:`bmvit.data.transforms.normalize_clips` does
that on the device), ``target`` a dict with ``boxes (N, 4)`` normalized cxcywh of the key frame,
``labels (N, K)`` multi-hot float, ``colour (3,)`` colour-jitter factors, ``video_id``,
``timestamp`` and ``orig_size (H, W)``.

Time: the key frame of ``timestamp`` is frame number ``(timestamp - first_timestamp) * rate + 1``
(AVA: ``first_timestamp`` = 900 s and ``rate`` = 30 fps; UCF/JHMDB, whose timestamps *are*
frame numbers: 1 and 1). Clip index ``k`` reads frame ``key + (k - T // 2) * stride``, clamped to
``[1, frames of the video]``; input index ``T // 2`` is the key frame.

A frame source (:class:`bmvit.data.frames.FrameFolder`, :class:`bmvit.data.video.VideoFrames`)
provides ``num_frames(video)``, ``frame_size(video) -> (H, W)`` and
``read(video, frames, resize, draft, expect_size) -> (T, h, w, 3) uint8`` (``resize`` works on a
whole ``(n, H, W, 3)`` uint8 stack).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from bmvit.boxes import xyxy_to_cxcywh
from bmvit.data.keyframes import KeyFrameTable
from bmvit.data.transforms import ClipTransform

__all__ = ["FrameSource", "KeyFrameClips"]


class FrameSource(Protocol):
    def num_frames(self, video: str) -> int: ...

    def frame_size(self, video: str) -> tuple[int, int]: ...

    def read(self, video: str, frames: np.ndarray, resize, draft: tuple[int, int] | None = None,
             expect_size: tuple[int, int] | None = None) -> np.ndarray: ...


class KeyFrameClips(Dataset):
    """Clips + targets of the key frames in ``table`` read from ``source`` (module docstring).

    ``labels`` maps class ids to names in label order (``labels (N, K)`` column ``k`` is the
    ``k``-th id). ``sizes`` gives ``(H, W)`` per video when the annotations state it (UCF/JHMDB):
    every frame is then checked to have that size, since boxes are normalized by it.
    """

    def __init__(self, table: KeyFrameTable, labels: dict[int, str], source: FrameSource, num_frames: int,
                 stride: int, transform: ClipTransform, first_timestamp: int = 900, rate: int = 30,
                 sizes: dict[str, tuple[int, int]] | None = None) -> None:
        self.table = table
        self.labels = labels
        self.class_ids = list(labels)
        self.class_index = {c: i for i, c in enumerate(self.class_ids)}
        self.source = source
        self.num_frames, self.stride = num_frames, stride
        self.first_timestamp, self.rate = first_timestamp, rate
        self.transform = transform
        self.sizes = dict(sizes) if sizes else {}
        self._check_sizes = sizes is not None

    @property
    def keyframes(self) -> KeyFrameTable:
        return self.table

    def __len__(self) -> int:
        return len(self.table)

    def num_video_frames(self, vid: str) -> int:
        return self.source.num_frames(vid)

    def key_frame(self, timestamp: int) -> int:
        """1-based frame number of the key frame of ``timestamp``."""
        return (int(timestamp) - self.first_timestamp) * self.rate + 1

    def frame_indices(self, vid: str, timestamp: int) -> np.ndarray:
        """``(T,)`` 1-based frame numbers of the clip centred on a key frame, clamped to the video."""
        n = self.num_video_frames(vid)
        idx = self.key_frame(timestamp) + (np.arange(self.num_frames) - self.num_frames // 2) * self.stride
        return np.clip(idx, 1, n)

    def _decode_resize(self, frames: np.ndarray) -> torch.Tensor:
        return self.transform.decode_resize(frames)  # (n, H, W, 3) -> (n, h, w, 3) uint8

    def __getitem__(self, item: int | tuple[int, int]):
        i, seed = item if isinstance(item, tuple) else (item, None)
        kf = self.table[i]
        idx = self.frame_indices(kf.video_id, kf.timestamp)
        size = self.sizes.get(kf.video_id)
        if size is None:
            size = self.sizes[kf.video_id] = self.source.frame_size(kf.video_id)
        frames = self.source.read(kf.video_id, idx, self._decode_resize, self.transform.decode_size(),
                                  size if self._check_sizes else None)  # (T, h, w, 3) uint8
        boxes, labels = torch.from_numpy(kf.boxes), torch.from_numpy(kf.labels)
        clip, boxes, labels, colour = self.transform(torch.from_numpy(frames), boxes, labels, seed)  # (3, T, h, w) uint8
        target = {
            "boxes": xyxy_to_cxcywh(boxes),
            "labels": labels,
            "video_id": kf.video_id,
            "timestamp": kf.timestamp,
            "orig_size": tuple(size),
            "colour": colour,
        }
        return clip, target
