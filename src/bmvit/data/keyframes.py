"""Annotated key frames of a dataset split: from checked annotation records to one column-wise table.

Contract: :class:`KeyFrameTable` holds ``S`` key frames — ``(video, timestamp)`` and the boxes
(normalized ``x1, y1, x2, y2``) with multi-hot labels of every actor in them — in a few flat
numpy arrays, so that UCF101-24's ~600k training frames cost tens of MB, not hundreds, and
forked data-loader workers share them without copying. Indexing (``table[i]``, iteration)
yields :class:`KeyFrame` records. Two builders fill it:

* :func:`group_keyframes` — AVA-layout CSV rows (:class:`~bmvit.data.formats.ava.AvaRows`):
  rows of one ``(video, timestamp, person_id)`` are merged into one box with a multi-hot label
  vector (a person is its id and box: rows without a person id, read as id 1, are told apart by box).
* :func:`act_keyframes` — videos of one split of an ACT / MOC-Detector pickle
  (:class:`~bmvit.data.formats.act.ActAnnotations`, UCF101-24 / JHMDB51-21): in **training**
  every frame ``f`` of the videos that at least one ground-truth tube covers (frames without an
  actor are not key frames); in **testing** every frame of the videos (frame-mAP scores all of
  them: a detection on a frame without ground truth is a false positive); in both cases with
  ``(f - 1) % step == 0``. ``timestamp`` is the key-frame number (1-based). Boxes are the tube
  boxes at ``f`` divided by the video's ``resolution`` (W, H); each box gets the one-hot label of
  its tube (tubes with identical boxes on a frame are merged into one multi-hot box). Class ids
  are ``1..K`` in the pickle's ``labels`` order.

:mod:`bmvit.data.clips` turns a key frame into a clip.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bmvit.data.formats.act import ActAnnotations
from bmvit.data.formats.ava import AvaRows
from bmvit.errors import DataError

__all__ = ["KeyFrame", "KeyFrameTable", "act_keyframes", "group_keyframes"]


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


def group_keyframes(rows: AvaRows, class_index: dict[int, int]) -> list[KeyFrame]:
    """Merge CSV rows into key frames; rows whose action is not in ``class_index`` are dropped.

    Rows are merged per ``(video, timestamp, person_id)``; the box of the first row of a person is
    kept (AVA repeats the same box on every row of one person). Rows merge only when their boxes are
    equal too: a 7-column row has no person id (read as 1), so people are told apart by box, as
    PySlowFast groups rows; one id at two places of a frame is two people.
    """
    K = len(class_index)
    frames: dict[tuple[str, int], dict[tuple, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
    for i, vid in enumerate(rows.video_ids):
        key = (vid, int(rows.timestamps[i]))
        people = frames[key]  # creates the key frame even if the action is unknown
        cls = class_index.get(int(rows.actions[i]))
        if cls is None:
            continue
        pid = (float(rows.person_or_score[i]), *rows.boxes[i].tolist())  # person id and box
        if pid not in people:
            people[pid] = (rows.boxes[i].astype(np.float32), np.zeros(K, np.float32))
        people[pid][1][cls] = 1.0
    out = []
    for (vid, ts), people in sorted(frames.items()):
        boxes = np.stack([b for b, _ in people.values()]) if people else np.zeros((0, 4), np.float32)
        labels = np.stack([l for _, l in people.values()]) if people else np.zeros((0, K), np.float32)
        out.append(KeyFrame(vid, ts, boxes, labels))
    return out


def act_keyframes(ann: ActAnnotations, videos: list[str], train: bool, step: int = 1) -> KeyFrameTable:
    """The key frames of ``videos`` (module docstring) as a table."""
    if step < 1:
        raise DataError(f"key-frame step must be at least 1, got {step}")
    K = len(ann.labels)
    vindex, ts, counts, boxes, labels = [], [], [], [], []
    for vi, v in enumerate(videos):
        n = ann.nframes[v]
        H, W = ann.resolution[v]
        scale = np.array([W, H, W, H], np.float64)
        per_frame: dict[int, list[tuple[np.ndarray, int]]] = {}
        for tube in ann.tubes[v]:
            for f, b in zip(tube.frames.tolist(), tube.boxes / scale):
                per_frame.setdefault(f, []).append((b, tube.label))
        frames = sorted(per_frame) if train else range(1, n + 1)
        for f in frames:
            if (f - 1) % step:
                continue
            items = per_frame.get(f, [])
            if len(items) == 1:  # the common case: one actor
                onehot = np.zeros(K, np.uint8)
                onehot[items[0][1]] = 1
                vindex.append(vi)
                ts.append(f)
                counts.append(1)
                boxes.append(items[0][0])
                labels.append(onehot)
                continue
            merged: dict[tuple, np.ndarray] = {}
            for b, lab in items:
                key = tuple(np.round(b, 6))
                if key not in merged:
                    merged[key] = np.zeros(K, np.uint8)
                merged[key][lab] = 1
            vindex.append(vi)
            ts.append(f)
            counts.append(len(merged))
            boxes.extend(np.asarray(k) for k in merged)
            labels.extend(merged.values())
    return KeyFrameTable(list(videos), np.asarray(vindex, np.int32), np.asarray(ts, np.int64), np.r_[0, np.cumsum(counts)],
                         np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.uint8).reshape(-1, K))
