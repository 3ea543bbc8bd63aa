"""The official AVA evaluator's per-frame heap, reproduced row for row (rules 2 and 4 of
:mod:`bmvit.evaluation.ava`): the per-frame detection cap with its tie-breaking, and the order in
which the original lists a frame's detections and GT rows before matching them.

The original feeds each frame's rows, in file order, through a bounded min-heap of
``(score, action, y1, x1, y2, x2)`` tuples and lists the heap's array sorted stably by descending
score (GT rows go through the same heap with the person id in the score slot). These functions
compute the same outcome vectorized and replay the heap only for the frames where ties make it
matter.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["cap_and_list", "frame_runs", "gt_rank", "heap_array", "stable_argsort_ints"]


def stable_argsort_ints(values: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative ints; radix sort (numpy's for <= 16-bit types) when they fit."""
    top = int(values.max(initial=0))
    small = np.uint8 if top < 256 else np.uint16 if top < 65536 else None
    return np.argsort(values.astype(small) if small else values, kind="stable")


def heap_array(scores: np.ndarray, actions: np.ndarray, boxes: np.ndarray, cap: int) -> list[tuple]:
    """The original's heap array for one frame's rows (file order); ``cap=0`` is unbounded.

    Items are ``(score, action, y1, x1, y2, x2, row)``; the trailing row index only orders
    exactly equal tuples, which cannot change the outcome.
    """
    heap: list[tuple] = []
    rows = zip(scores.tolist(), actions.tolist(), boxes.tolist())
    for i, (s, a, (x1, y1, x2, y2)) in enumerate(rows):
        item = (s, a, y1, x1, y2, x2, i)
        if cap <= 0 or len(heap) < cap:
            heapq.heappush(heap, item)
        elif s > heap[0][0]:
            heapq.heapreplace(heap, item)
    return heap


def frame_runs(frame: np.ndarray, frames: np.ndarray) -> list[np.ndarray]:
    """For each frame number in ``frames``, its rows (indices into ``frame``) in file order."""
    by_frame = np.argsort(frame, kind="stable")
    lo = np.searchsorted(frame[by_frame], frames)
    hi = np.searchsorted(frame[by_frame], frames, side="right")
    return [by_frame[a:b] for a, b in zip(lo.tolist(), hi.tolist())]


def gt_rank(frame: np.ndarray, cls: np.ndarray, pid: np.ndarray, actions: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(G,) sort key of each GT row inside its frame: the original's order (rule 4).

    Within a frame and class the original lists GT by descending person id (a stable sort of its
    heap's array). Rows with equal person id but different boxes would keep that heap order, so
    only frames holding such rows are replayed through a heap; elsewhere such rows are identical
    and their order cannot matter.
    """
    n = len(frame)
    order = np.lexsort((np.arange(n), -pid, cls, frame))  # frame, class, pid desc, file order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    if n < 2:
        return rank
    f, c, p, b = frame[order], cls[order], pid[order], boxes[order]
    clash = (f[1:] == f[:-1]) & (c[1:] == c[:-1]) & (p[1:] == p[:-1]) & np.any(b[1:] != b[:-1], axis=1)
    if clash.any():
        for rows in frame_runs(frame, np.unique(f[1:][clash])):
            listed = sorted(heap_array(pid[rows], actions[rows], boxes[rows], 0), key=lambda t: -t[0])
            rank[rows[[t[-1] for t in listed]]] = rank[rows].min() + np.arange(len(listed))
    return rank


def cap_and_list(
    frame: np.ndarray, scores: np.ndarray, actions: np.ndarray, boxes: np.ndarray, cap: int, by_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rules 2 and the per-frame listing, for (D,) detection rows in file order.

    Returns ``keep`` (D,) bool (rows surviving the cap), ``tied`` (D,) bool (rows whose frame
    holds two survivors of equal score and action, or is cut inside a run of equal scores) and
    ``listed`` (D,) int64: each survivor's position in the original's per-frame list (the heap
    array sorted stably by descending score). ``listed`` is exact for rows of ``tied`` frames,
    replayed through the heap; elsewhere file order stands in, which is equivalent because
    positions are only compared between rows of one frame, action and score. ``by_score`` is
    the stable argsort of ``-scores``.
    """
    n = len(frame)
    keep = np.ones(n, dtype=bool)
    listed = np.arange(n, dtype=np.int64)
    if n == 0:
        return keep, np.zeros(0, dtype=bool), listed
    order = by_score[stable_argsort_ints(frame[by_score])]  # frame, score desc, file order
    counts = np.bincount(frame, minlength=int(frame.max()) + 1)  # (F,)
    starts = np.cumsum(counts) - counts  # (F,) first sorted position of each frame
    s_frame, s_score = frame[order], scores[order]
    if cap > 0:
        rank_in_frame = np.arange(n) - starts[s_frame]
        keep[order] = rank_in_frame < cap
    # Frames needing the heap: cut inside a run of equal scores, or equal (score, action) among
    # survivors (equal scores are adjacent in ``order``; check their actions pairwise by run).
    replay = np.zeros(len(counts), dtype=bool)
    if cap > 0:
        over = np.flatnonzero(counts > cap)
        replay[over[s_score[starts[over] + cap - 1] == s_score[starts[over] + cap]]] = True
    same = (s_frame[1:] == s_frame[:-1]) & (s_score[1:] == s_score[:-1]) & keep[order][1:] & keep[order][:-1]
    if same.any():
        run_id = np.cumsum(np.r_[True, ~same])  # (D,) runs of equal (frame, score) survivors
        in_run = np.r_[same, False] | np.r_[False, same]
        idx = np.flatnonzero(in_run)
        key = np.stack([run_id[idx], actions[order][idx]], axis=1)
        _, first, cnt = np.unique(key, axis=0, return_index=True, return_counts=True)
        replay[s_frame[idx[first[cnt > 1]]]] = True
    for rows in frame_runs(frame, np.flatnonzero(replay)):
        heap = heap_array(scores[rows], actions[rows], boxes[rows], cap)
        keep[rows] = False
        keep[rows[[t[-1] for t in heap]]] = True
        listed[rows[[t[-1] for t in sorted(heap, key=lambda t: -t[0])]]] = np.arange(len(heap))
    return keep, replay[frame], listed
