"""Which frames form the clip of a key frame, and a ring buffer that assembles clips as frames arrive.

The arithmetic is that of the training/evaluation reader (``data/clips.py``, docs/architecture.md):
the clip of key frame ``k`` has ``T`` frames at stride ``τ`` with the key frame at input index
``T // 2``, i.e. frames ``k + (j - T//2)·τ`` for ``j = 0..T-1``, clamped to the video — so a video
shorter than a clip is padded by repeating its first/last frame. Indices here are 0-based (frame
files of the AVA layout are 1-based: file ``i + 1`` is frame ``i``).

A :class:`RingBuffer` of ``(T-1)·τ + 1`` frames is all the memory a clip needs:
:class:`SlidingClips` emits the clip of a key frame as soon as its last frame has arrived, and the
remaining ones (clamped to the last frame) when the video ends.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator
from typing import Generic, TypeVar

import numpy as np

from bmvit.errors import ConfigError

F = TypeVar("F")


def clip_indices(key: int, num_frames: int, stride: int, total: int | None = None,
                 views: tuple[int, ...] = (0,)) -> np.ndarray:
    """0-based frame indices ``(T,)`` of the clip centred on frame ``key``, clamped to
    ``[0, total - 1]`` (only below at 0 when ``total`` is None). With ``views`` (the frame offsets of
    ``eval.time_tta``): the clips centred on ``key + v`` one after the other, ``(V·T,)``."""
    idx = np.concatenate([key + v + (np.arange(num_frames) - num_frames // 2) * stride for v in views])  # (V·T,)
    return np.clip(idx, 0, None if total is None else total - 1)


def clip_span(num_frames: int, stride: int, views: tuple[int, ...] = (0,)) -> tuple[int, int]:
    """``(before, after)``: how many frames before and after its key frame a clip (all its views) reads."""
    before = (num_frames // 2) * stride + max(0, -min(views))
    after = (num_frames - 1 - num_frames // 2) * stride + max(0, max(views))
    return before, after


def keyframe_schedule(fps: float, per_second: float) -> Iterator[int]:
    """Increasing 0-based key-frame indices: ``floor(j · fps / per_second + 1/2)`` for ``j = 0, 1, ...``
    (the nearest frame, halves up; duplicates dropped, so ``per_second ≥ fps`` means every frame). Infinite; stop at the video end."""
    if not _positive(per_second):
        raise ConfigError(f"key frames per second must be a positive number, got {per_second!r}")
    if not (_positive(fps) and math.isfinite(fps)):
        raise ConfigError(f"frame rate must be a positive number, got {fps!r}")
    step = fps / per_second
    if step <= 1:  # consecutive values differ by at most 1: every frame (a step near 0 would loop on k = 0)
        yield from itertools.count()
    last, j = -1, 0
    while True:
        k = math.floor(j * step + 0.5)
        j += 1
        if k > last:
            last = k
            yield k


def _positive(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and x > 0  # NaN is not > 0


def keyframe_indices(total: int, fps: float, per_second: float) -> list[int]:
    """Key frames of a video of ``total`` frames (see :func:`keyframe_schedule`)."""
    out = []
    for k in keyframe_schedule(fps, per_second):
        if k >= total:
            return out
        out.append(k)
    return out  # pragma: no cover (the schedule is infinite)


class RingBuffer(Generic[F]):
    """The newest ``capacity`` items of a sequence, addressed by their absolute 0-based index."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: list[F | None] = [None] * capacity
        self.count = 0  # items pushed so far; the newest has index count - 1

    def push(self, item: F) -> int:
        """Store ``item``; returns its index."""
        self._items[self.count % self.capacity] = item
        self.count += 1
        return self.count - 1

    @property
    def oldest(self) -> int:
        """Index of the oldest item still held."""
        return max(0, self.count - self.capacity)

    def __getitem__(self, index: int) -> F:
        if not self.oldest <= index < self.count:
            raise IndexError(f"item {index} is not in the buffer (holds {self.oldest}..{self.count - 1})")
        return self._items[index % self.capacity]  # type: ignore[return-value]


class SlidingClips:
    """Assemble the clips of key frames from frames pushed one at a time.

    ``push(frame)`` returns the ``(key_index, clip)`` pairs that became complete with this frame
    and ``flush()`` those left when the video ends, where ``clip`` is ``np.stack`` of the ``T``
    frames (e.g. ``(T, S, S, 3)`` uint8 when the frames are resized key frames; ``V·T`` frames
    with ``views``, see :func:`clip_indices`). Key frames come
    from ``keyframes`` (an increasing iterator of indices); those at or past the end are dropped.
    """

    def __init__(self, num_frames: int, stride: int, keyframes: Iterator[int], views: tuple[int, ...] = (0,)) -> None:
        self.num_frames, self.stride, self.views = num_frames, stride, tuple(views)
        self.before, self.after = clip_span(num_frames, stride, self.views)  # frames needed before/after the key frame
        self.ring: RingBuffer[np.ndarray] = RingBuffer(self.before + self.after + 1)
        self._keys = keyframes
        self._next: int | None = next(self._keys, None)

    def _clip(self, key: int, total: int | None) -> np.ndarray:
        idx = clip_indices(key, self.num_frames, self.stride, total, self.views)
        return np.stack([self.ring[int(i)] for i in idx])

    def push(self, frame: np.ndarray) -> list[tuple[int, np.ndarray]]:
        newest = self.ring.push(frame)
        out = []
        while self._next is not None and self._next + self.after <= newest:
            out.append((self._next, self._clip(self._next, None)))
            self._next = next(self._keys, None)
        return out

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Clips of the key frames whose clips run past the end (clamped to the last frame)."""
        total = self.ring.count
        out = []
        while self._next is not None and self._next < total:
            out.append((self._next, self._clip(self._next, total)))
            self._next = next(self._keys, None)
        self._next = None
        return out
