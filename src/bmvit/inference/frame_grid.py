"""Video time on a constant-rate grid: frame ``k`` of a video file is the frame on screen at
``t0 + k / fps`` (:func:`constant_rate`), so a variable-rate video (phones lower the rate in low
light) keeps its timing and a constant-rate one reads frame for frame. Used by
:mod:`bmvit.inference.video_source` for video files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import TypeVar

__all__ = ["MAX_GAP_S", "constant_rate"]

MAX_GAP_S = 10  # a timestamp jump larger than this (or backwards) is a discontinuity, not a pause
_T = TypeVar("_T")


def constant_rate(frames: Iterable[tuple[_T, Fraction | None, Fraction | None]], fps: Fraction) -> Iterator[_T]:
    """``(frame, time, duration)`` in presentation order -> frames on the grid ``t0 + k / fps``.

    A frame at ``t`` replaces the previous one (at ``p``) from the grid points at or after
    ``max((p + t) / 2, t - 1 / (2 fps))``: the nearest frame where frames come faster than the grid
    (they are dropped), the frame on screen where they come slower (it is repeated), and frame for
    frame for a constant-rate video at ``fps`` whose timestamps are rounded by under half a period.
    The last frame is followed as if by a frame ``duration`` later (unknown: ``1 / fps``). A jump
    back in time, or forward by more than :data:`MAX_GAP_S` (a corrupt or wrapped timestamp), joins
    the two sides one period apart instead of dropping or repeating frames across it. Frames
    without a time pass straight through.
    """
    period = 1 / Fraction(fps)
    prev, prev_t, grid, shift = None, Fraction(0), Fraction(0), Fraction(0)
    last_duration = period
    for frame, t, duration in frames:
        if t is None:
            yield frame
            continue
        t += shift
        if prev is None:
            grid = t
        else:
            if t < prev_t or t - prev_t > MAX_GAP_S:
                shift += prev_t + period - t
                t = prev_t + period
            switch = max((prev_t + t) / 2, t - period / 2)
            while grid < switch:
                yield prev
                grid += period
        prev, prev_t, last_duration = frame, t, duration or period
    if prev is not None:
        end = prev_t + max(last_duration / 2, last_duration - period / 2)
        while grid < end:
            yield prev
            grid += period
