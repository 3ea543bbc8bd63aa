"""Clip dataset for anything in the AVA on-disk layout (AVA v2.2, the synthetic set, users' data).

One sample = one annotated key frame: a clip of ``num_frames`` frames at ``stride`` centred on it
(input index ``num_frames // 2`` is the key frame; indices are clamped at the video edges, as in
PySlowFast) and the targets of every actor in it. CSV rows of one ``(video, timestamp,
person_id)`` are merged into one box with a multi-hot label vector.

Frames are ``<frames_root>/<vid>/<vid>_%06d.jpg`` at ``fps``; frame 1 is at second
``first_second`` (900 for AVA), so the key frame of timestamp ``s`` is file number
``(s - first_second) * fps + 1``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from bmvit.data.ava_format import AvaRows, read_label_map, read_rows
from bmvit.data.clips import KeyFrameClips
from bmvit.data.frames import AVA_TEMPLATE, FrameFolder
from bmvit.data.keyframes import KeyFrame, KeyFrameTable
from bmvit.data.transforms import ClipTransform
from bmvit.errors import DataError

__all__ = ["AvaClips", "KeyFrame", "group_keyframes"]


def group_keyframes(rows: AvaRows, class_index: dict[int, int]) -> list[KeyFrame]:
    """Merge CSV rows into key frames; rows whose action is not in ``class_index`` are dropped.

    Rows are merged per ``(video, timestamp, person_id)``; the box of the first row of a person is
    kept (AVA repeats the same box on every row of one person).
    """
    K = len(class_index)
    frames: dict[tuple[str, int], dict[float, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
    for i, vid in enumerate(rows.video_ids):
        key = (vid, int(rows.timestamps[i]))
        people = frames[key]  # creates the key frame even if the action is unknown
        cls = class_index.get(int(rows.actions[i]))
        if cls is None:
            continue
        pid = float(rows.extra[i])
        if pid not in people:
            people[pid] = (rows.boxes[i].astype(np.float32), np.zeros(K, np.float32))
        people[pid][1][cls] = 1.0
    out = []
    for (vid, ts), people in sorted(frames.items()):
        boxes = np.stack([b for b, _ in people.values()]) if people else np.zeros((0, 4), np.float32)
        labels = np.stack([l for _, l in people.values()]) if people else np.zeros((0, K), np.float32)
        out.append(KeyFrame(vid, ts, boxes, labels))
    return out


class AvaClips(KeyFrameClips):
    """Clips + targets for key frames listed in an AVA-format CSV (module docstring).

    :class:`~bmvit.data.clips.KeyFrameClips` over a :class:`~bmvit.data.frames.FrameFolder` with
    the AVA file layout; ``__getitem__`` returns ``(clip, target)`` as documented there.
    ``cache_frames`` keeps decoded, resized frames in memory (small datasets such as the
    synthetic set). ``rows``: the CSV's rows already read (e.g. checked by
    :mod:`bmvit.data.ava_checks`); default: read ``csv_path``.
    """

    def __init__(
        self,
        frames_root: str | Path,
        csv_path: str | Path,
        label_map: str | Path,
        num_frames: int,
        stride: int,
        transform: ClipTransform,
        fps: int = 30,
        first_second: int = 900,
        cache_frames: bool = False,
        rows: AvaRows | None = None,
    ) -> None:
        self.frames_root = Path(frames_root)
        if not self.frames_root.is_dir():
            raise DataError(f"{self.frames_root}: frames folder not found (expected <root>/<video_id>/<video_id>_%06d.jpg)")
        self.csv_path = Path(csv_path)
        labels = read_label_map(label_map)
        class_index = {c: i for i, c in enumerate(labels)}
        keyframes = group_keyframes(read_rows(csv_path) if rows is None else rows, class_index)
        super().__init__(KeyFrameTable.from_keyframes(keyframes, len(labels)), labels,
                         FrameFolder(self.frames_root, AVA_TEMPLATE, cache=cache_frames), num_frames, stride,
                         transform, first_timestamp=first_second, rate=fps)
