"""Stable ids for detected actors across key frames, so a person keeps one colour in renderings.

Not the paper's method and not used for evaluation: a greedy IoU association of each key frame's
boxes (in decreasing actor score) with the boxes of the previous key frames, as long as a track was
seen within ``max_age`` key frames. Pairs with IoU below ``iou`` start a new track.
"""

from __future__ import annotations

import numpy as np
import torch

from bmvit.boxes import box_iou


class IoUTracker:
    """``assign(boxes (M, 4) xyxy, scores (M,)) -> ids (M,)``; call once per key frame, in time order."""

    def __init__(self, iou: float = 0.3, max_age: int = 2) -> None:
        self.iou, self.max_age = iou, max_age
        self._boxes = np.zeros((0, 4))  # (N, 4) last box of each live track
        self._ids: list[int] = []
        self._age: list[int] = []
        self._next = 0

    def assign(self, boxes: np.ndarray, scores: np.ndarray) -> list[int]:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = [-1] * len(boxes)
        free = set(range(len(self._ids)))
        if len(boxes) and len(self._ids):
            iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(self._boxes))[0].numpy()  # (M, N)
        for m in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
            best = max(free, key=lambda n: iou[m, n], default=None) if free else None
            if best is not None and iou[m, best] >= self.iou:
                ids[m] = self._ids[best]
                free.discard(best)
                self._boxes[best], self._age[best] = boxes[m], 0
            else:
                ids[m] = self._next
                self._next += 1
        # Age the unmatched tracks, drop the stale ones, add the new ones.
        keep = [n for n in range(len(self._ids)) if n not in free or self._age[n] + 1 <= self.max_age]
        for n in free:
            self._age[n] += 1
        known = set(self._ids)
        new = [m for m in range(len(boxes)) if ids[m] not in known]
        self._boxes = np.concatenate([self._boxes[keep], boxes[new]]) if keep or new else np.zeros((0, 4))
        self._ids = [self._ids[n] for n in keep] + [ids[m] for m in new]
        self._age = [self._age[n] for n in keep] + [0] * len(new)
        return ids
