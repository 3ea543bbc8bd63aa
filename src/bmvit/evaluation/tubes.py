"""Action tubes (a box per frame over a span of frames) and their spatio-temporal IoU.

Contract: :class:`Tubes` holds many tubes in one CSR layout; :func:`tubes_from_rows` builds
them from GT-tube or detected-tube rows (:mod:`bmvit.evaluation.frame_csv`), and
:func:`st_iou` computes the spatio-temporal IoU of tube pairs as ACT's ``iou3dt`` does:

    ST-IoU(A, B) = temporal IoU x mean over the frames of the temporal intersection of the
                   per-frame box IoU (+1 pixel convention),

where a tube's temporal extent is ``[first frame, last frame]`` (inclusive) and
``temporal IoU = |extent(A) ∩ extent(B)| / |extent(A) ∪ extent(B)|`` in frames (0 if disjoint,
then ST-IoU is 0). A frame inside the intersection where either tube has no box (a gap)
contributes IoU 0; ACT assumes gap-free tubes, for which the two definitions agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bmvit.errors import DataError
from bmvit.evaluation.act_protocol import pixel_iou
from bmvit.evaluation.frame_csv import FrameRows

__all__ = ["Tubes", "st_iou", "tubes_from_rows"]


@dataclass
class Tubes:
    """T tubes; the rows of tube ``t`` are ``offsets[t]:offsets[t + 1]``, sorted by frame."""

    videos: np.ndarray  # (T,) str
    labels: np.ndarray  # (T,) int64 class index
    scores: np.ndarray  # (T,) float64 tube score (1.0 for GT)
    offsets: np.ndarray  # (T + 1,) int64
    frames: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float64 absolute x1, y1, x2, y2
    names: np.ndarray  # (T,) str tube id (from the file, or assigned by linking)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def first(self) -> np.ndarray:
        """(T,) first frame of each tube."""
        return self.frames[self.offsets[:-1]]

    @property
    def last(self) -> np.ndarray:
        """(T,) last frame of each tube."""
        return self.frames[self.offsets[1:] - 1]

    def select(self, idx: np.ndarray) -> Tubes:
        """The tubes ``idx`` (an index array), in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = np.diff(self.offsets)[idx]
        rows = np.repeat(self.offsets[:-1][idx] - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        return Tubes(self.videos[idx], self.labels[idx], self.scores[idx], np.r_[0, np.cumsum(lengths)].astype(np.int64),
                     self.frames[rows], self.boxes[rows], self.names[idx])

    @classmethod
    def empty(cls) -> Tubes:
        return cls(np.zeros(0, str), np.zeros(0, np.int64), np.zeros(0), np.zeros(1, np.int64),
                   np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, str))


def tubes_from_rows(rows: FrameRows) -> Tubes:
    """Group rows by ``(video, tube_id)`` into tubes (score = mean of the rows' scores).

    Raises ``DataError`` (``file:line``) if a tube's rows disagree on the class or repeat a
    frame, or if the file has no tube ids.
    """
    if len(rows) == 0:
        return Tubes.empty()
    if (rows.tubes == "").any():
        i = int(np.flatnonzero(rows.tubes == "")[0])
        raise DataError(f"{rows.where(i)}: empty tube id")
    _, tube = np.unique(np.stack([rows.videos, rows.tubes], axis=1), axis=0, return_inverse=True)
    tube = tube.reshape(-1)
    # Keep tubes in order of first appearance (file order), rows by frame inside a tube.
    first_row = np.full(tube.max() + 1, len(tube))
    np.minimum.at(first_row, tube, np.arange(len(tube)))
    appearance = np.argsort(np.argsort(first_row))
    t = appearance[tube]
    order = np.lexsort((rows.frames, t))
    t_sorted = t[order]
    bad_label = np.flatnonzero((t_sorted[1:] == t_sorted[:-1]) & (rows.labels[order][1:] != rows.labels[order][:-1]))
    if bad_label.size:
        a, b = order[bad_label[0]], order[bad_label[0] + 1]
        raise DataError(f"{rows.where(max(a, b))}: tube '{rows.tubes[b]}' of video '{rows.videos[b]}' changes class "
                        f"(see line {rows.lines[min(a, b)]})")
    dup = np.flatnonzero((t_sorted[1:] == t_sorted[:-1]) & (rows.frames[order][1:] == rows.frames[order][:-1]))
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise DataError(f"{rows.where(max(a, b))}: tube '{rows.tubes[b]}' of video '{rows.videos[b]}' has frame "
                        f"{rows.frames[b]} twice (see line {rows.lines[min(a, b)]})")
    counts = np.bincount(t_sorted)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    head = order[offsets[:-1]]
    scores = np.bincount(t_sorted, weights=rows.scores[order]) / counts
    return Tubes(rows.videos[head], rows.labels[head], scores, offsets, rows.frames[order], rows.boxes[order],
                 rows.tubes[head])


def _dense(tubes: Tubes) -> tuple[np.ndarray, np.ndarray]:
    """Boxes on a per-tube dense frame axis: (M, 4) with NaN in gaps, and (T,) start of each tube."""
    extent = tubes.last - tubes.first + 1  # (T,)
    start = np.r_[0, np.cumsum(extent)[:-1]].astype(np.int64)
    dense = np.full((int(extent.sum()), 4), np.nan)
    tube_of_row = np.repeat(np.arange(len(tubes)), np.diff(tubes.offsets))
    dense[start[tube_of_row] + tubes.frames - tubes.first[tube_of_row]] = tubes.boxes
    return dense, start


def st_iou(a: Tubes, ia: np.ndarray, b: Tubes, ib: np.ndarray) -> np.ndarray:
    """(P,) spatio-temporal IoU of the tube pairs ``(a[ia[p]], b[ib[p]])`` (module docstring)."""
    ia, ib = np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)
    out = np.zeros(len(ia))
    if len(ia) == 0:
        return out
    sa, ea, sb, eb = a.first[ia], a.last[ia], b.first[ib], b.last[ib]
    lo, hi = np.maximum(sa, sb), np.minimum(ea, eb)
    overlap = np.flatnonzero(hi >= lo)
    if overlap.size == 0:
        return out
    n = (hi - lo + 1)[overlap]  # (Q,) frames in the intersection
    t_iou = n / (np.maximum(ea, eb) - np.minimum(sa, sb) + 1)[overlap]
    dense_a, start_a = _dense(a)
    dense_b, start_b = _dense(b)
    pair = np.repeat(np.arange(overlap.size), n)  # (K,)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # frame offset inside the intersection
    pa = start_a[ia[overlap]][pair] + (lo - sa)[overlap][pair] + k
    pb = start_b[ib[overlap]][pair] + (lo - sb)[overlap][pair] + k
    gap = np.isnan(dense_a[pa, 0]) | np.isnan(dense_b[pb, 0])  # (K,) a tube has no box on that frame
    with np.errstate(invalid="ignore"):
        frame_iou = np.where(gap, 0.0, pixel_iou(dense_a[pa], dense_b[pb]))  # gaps -> 0; NaN IoU stays NaN (ACT)
    spatial = np.bincount(pair, weights=frame_iou, minlength=overlap.size) / n
    out[overlap] = t_iou * spatial
    return out
