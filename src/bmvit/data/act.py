"""UCF101-24 and JHMDB51-21 clips from the ACT / MOC-Detector files (pkl + frame folders).

Contract: :class:`ActClips` is a :class:`~bmvit.data.clips.KeyFrameClips` over one split of an
ACT ground-truth pickle (:mod:`bmvit.data.act_format`). Its samples:

* **training** (``train=True``): every frame ``f`` of the split's training videos that at least
  one ground-truth tube covers (frames without an actor are not key frames), with
  ``(f - 1) % keyframe_step == 0``;
* **testing**: every frame of the test videos (frame-mAP scores all of them: a detection on a
  frame without ground truth is a false positive), with the same step.

``timestamp`` is the key-frame number (1-based), so the clip of ``T`` frames at stride ``tau``
reads frames ``f + (k - T // 2) * tau`` clamped to ``[1, nframes]``. Boxes are the tube boxes
at ``f`` divided by the video's ``resolution`` (W, H); each box gets the one-hot label of its
tube (tubes with identical boxes on a frame are merged into one multi-hot box). Class ids are
``1..K`` in the pickle's ``labels`` order. Every frame read is checked to have the size the
pickle states. Videos of the split whose frames folder (or video file) is absent raise a
DataError naming the folder and the pickle key, or are left out and counted under
``on_error="skip"``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bmvit.data.act_format import ActAnnotations, read_act_pkl
from bmvit.data.clips import FrameSource, KeyFrameClips
from bmvit.data.keyframes import KeyFrameTable
from bmvit.data.skips import SkipLog
from bmvit.data.transforms import ClipTransform
from bmvit.errors import DataError

__all__ = ["ActClips", "act_keyframes"]


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


class ActClips(KeyFrameClips):
    """One split of UCF101-24 / JHMDB51-21 (module docstring).

    ``source`` is where the frames are: a :class:`~bmvit.data.frames.FrameFolder` over
    ``rgb-images`` / ``Frames`` (template ``{video}/{frame:05d}.jpg`` / ``.png``) or a
    :class:`~bmvit.data.video.VideoFrames`. ``annotations`` is the pickle's path or an already
    read :class:`ActAnnotations` (the splits of one file share it).
    """

    def __init__(self, annotations: str | Path | ActAnnotations, source: FrameSource, split: int, train: bool,
                 num_frames: int, stride: int, transform: ClipTransform, keyframe_step: int = 1,
                 on_error: str = "error") -> None:
        ann = annotations if isinstance(annotations, ActAnnotations) else read_act_pkl(annotations, on_error)
        if ann.skipped:  # each was logged when read; the count goes to the console once per split
            print(f"data.on_error=skip: {len(ann.skipped)} bad tube row(s)/tube(s) of {ann.path} left out "
                  f"(first: {ann.skipped[0]})", file=sys.stderr)
        videos = ann.split_videos(split, train)
        skips = SkipLog(on_error, str(ann.path))
        kept = []
        for v in videos:
            if not source.has_video(v):  # type: ignore[attr-defined]
                what = "train_videos" if train else "test_videos"
                skips.handle(f"{ann.path}: video '{v}' ({what}[{split - 1}]) is absent on disk: "
                             f"{_where(source, v)} not found")
                continue
            kept.append(v)
        skips.print_summary()
        self.annotations = ann
        self.split, self.train = split, train
        labels = {i + 1: name for i, name in enumerate(ann.labels)}
        super().__init__(act_keyframes(ann, kept, train, keyframe_step), labels, source, num_frames, stride,
                         transform, first_timestamp=1, rate=1, sizes={v: ann.resolution[v] for v in kept})

    def num_video_frames(self, vid: str) -> int:
        return self.annotations.nframes[vid]


def _where(source: FrameSource, video: str) -> str:
    if hasattr(source, "folder"):
        return str(source.folder(video))  # type: ignore[attr-defined]
    if hasattr(source, "root"):
        return f"{source.root / video}.*"  # type: ignore[attr-defined]
    return video
