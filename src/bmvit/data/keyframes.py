"""Annotated key frames of a dataset split, stored column-wise.

Contract: :class:`KeyFrameTable` holds ``S`` key frames — ``(video, timestamp)`` and the boxes
(normalized ``x1, y1, x2, y2``) with multi-hot labels of every actor in them — in a few flat
numpy arrays, so that UCF101-24's ~600k training frames cost tens of MB, not hundreds, and
forked data-loader workers share them without copying. Indexing (``table[i]``, iteration)
yields :class:`KeyFrame` records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["KeyFrame", "KeyFrameTable"]


@dataclass
class KeyFrame:
    """One annotated key frame: boxes ``(N, 4)`` normalized xyxy and multi-hot labels per box."""

    video_id: str
    timestamp: int
    boxes: np.ndarray  # (N, 4) normalized x1, y1, x2, y2
    labels: np.ndarray  # (N, K) multi-hot float32


class KeyFrameTable(Sequence):
    """``S`` key frames with ``B`` boxes in total over ``K`` classes."""

    def __init__(self, videos: list[str], video_index: np.ndarray, timestamps: np.ndarray, offsets: np.ndarray,
                 boxes: np.ndarray, labels: np.ndarray) -> None:
        self.videos = videos  # unique video ids
        self.video_index = video_index.astype(np.int32)  # (S,) into videos
        self.timestamps = timestamps.astype(np.int64)  # (S,)
        self.offsets = offsets.astype(np.int64)  # (S + 1,) boxes of key frame i: offsets[i]:offsets[i+1]
        self.boxes = boxes.astype(np.float32).reshape(-1, 4)  # (B, 4) normalized xyxy
        self.labels = labels.astype(np.uint8)  # (B, K) multi-hot

    @property
    def num_classes(self) -> int:
        return self.labels.shape[1]

    def __len__(self) -> int:
        return len(self.timestamps)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return KeyFrame(self.videos[self.video_index[i]], int(self.timestamps[i]), self.boxes[lo:hi].copy(),
                        self.labels[lo:hi].astype(np.float32))

    def __iter__(self) -> Iterator[KeyFrame]:
        return (self[i] for i in range(len(self)))

    def video_of(self, i: int) -> str:
        return self.videos[self.video_index[i]]

    @classmethod
    def from_keyframes(cls, keyframes: list[KeyFrame], num_classes: int) -> KeyFrameTable:
        videos = sorted({kf.video_id for kf in keyframes})
        vindex = {v: k for k, v in enumerate(videos)}
        counts = [len(kf.boxes) for kf in keyframes]
        boxes = np.concatenate([kf.boxes for kf in keyframes]) if keyframes else np.zeros((0, 4))
        labels = np.concatenate([kf.labels for kf in keyframes]) if keyframes else np.zeros((0, num_classes))
        return cls(videos, np.array([vindex[kf.video_id] for kf in keyframes], np.int32),
                   np.array([kf.timestamp for kf in keyframes], np.int64), np.r_[0, np.cumsum(counts)],
                   boxes.reshape(-1, 4), labels.reshape(-1, num_classes))
