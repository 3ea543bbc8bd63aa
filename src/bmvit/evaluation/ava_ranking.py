"""The AVA evaluator's rank order of a class's detections, as the 2019 original computes it.

The original concatenates, per class, its per-frame detection lists (frames in order of first
appearance in the file; inside a frame by descending score, equal scores in listing order) and
ranks them with ``np.argsort(scores)[::-1]`` under numpy 1.23. :func:`concatenation_order`
rebuilds that list and :func:`introsort_argsort` runs that ``np.argsort`` on any numpy, so the
order among equal scores, and hence AP, is the original's for any number of ties.
"""

from __future__ import annotations

import numpy as np

__all__ = ["concatenation_order", "introsort_argsort", "score_levels"]


def introsort_argsort(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values)`` exactly as numpy < 1.26 computes it for float64, for (N,) int64 ``values``.

    The original ranks with ``np.argsort(scores)`` under numpy 1.23: numpy's generic introsort
    (median-of-3 quicksort, insertion sort below 16 elements, heapsort past a depth limit).
    Newer numpy sorts float64 with SIMD code on AVX-512 machines, which orders equal values
    differently; its timedelta64 argsort still runs the generic introsort. That algorithm only
    compares elements, so on integer levels that order the scores as the scores themselves do
    (:func:`score_levels`) it returns the permutation it returns on the scores.
    ``tests/test_eval_ava.py`` checks this against a transcription of the algorithm.
    """
    return np.argsort(np.ascontiguousarray(values, dtype=np.int64).view("m8[ns]"), kind="quicksort")


def score_levels(scores_desc: np.ndarray) -> np.ndarray:
    """(N,) int64 dense levels of (N,) non-increasing scores: equal scores equal, higher score higher."""
    if len(scores_desc) == 0:
        return np.zeros(0, dtype=np.int64)
    step = np.cumsum(np.r_[0, (scores_desc[1:] != scores_desc[:-1]).astype(np.int64)])
    return step[-1] - step


def concatenation_order(cls: np.ndarray, frame_rank: np.ndarray, level: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """(D,) permutation of the rows: by class, then the original's concatenation order.

    The original concatenates, per class, its per-frame lists: frames in order of first
    appearance (``frame_rank``), inside a frame by descending score (``level``), equal scores
    in listing order (``listed``, comparable between rows of one frame).
    """
    first = np.argsort(listed, kind="stable")
    frames = int(frame_rank.max(initial=0)) + 1
    top = int(level.max(initial=0)) + 1
    if (int(cls.max(initial=0)) + 1) * frames * top >= 2**62:  # keys would overflow: three-key sort
        return first[np.lexsort((-level[first], frame_rank[first], cls[first]))]
    key = (cls.astype(np.int64) * frames + frame_rank) * top + (top - 1 - level)  # (D,)
    return first[np.argsort(key[first], kind="stable")]
