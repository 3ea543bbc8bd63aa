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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bmvit.boxes import xyxy_to_cxcywh
from bmvit.data.ava_format import AvaRows, read_label_map, read_rows
from bmvit.data.transforms import ClipTransform
from bmvit.errors import DataError


@dataclass
class KeyFrame:
    """One annotated key frame: boxes ``(N, 4)`` normalized xyxy and class ids per box."""

    video_id: str
    timestamp: int
    boxes: np.ndarray  # (N, 4) normalized x1, y1, x2, y2
    labels: np.ndarray  # (N, K) multi-hot float32


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


class AvaClips(Dataset):
    """Clips + targets for key frames listed in an AVA-format CSV.

    ``__getitem__`` returns ``(clip, target)``: ``clip`` float ``(3, T, S, S)`` normalized, and
    ``target`` a dict with ``boxes (N, 4)`` normalized cxcywh, ``labels (N, K)`` multi-hot,
    ``video_id``, ``timestamp``, ``orig_size (H, W)``.
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
        """``rows``: the CSV's rows already read (e.g. checked by :mod:`bmvit.data.ava_checks`);
        default: read ``csv_path``."""
        self.frames_root = Path(frames_root)
        if not self.frames_root.is_dir():
            raise DataError(f"{self.frames_root}: frames folder not found (expected <root>/<video_id>/<video_id>_%06d.jpg)")
        self.labels = read_label_map(label_map)
        self.class_ids = list(self.labels)
        self.class_index = {c: i for i, c in enumerate(self.class_ids)}
        self.keyframes = group_keyframes(read_rows(csv_path) if rows is None else rows, self.class_index)
        self.csv_path = Path(csv_path)
        self.num_frames, self.stride, self.fps, self.first_second = num_frames, stride, fps, first_second
        self.transform = transform
        self._nframes: dict[str, int] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # (H, W) of each video's frames
        self._cache: dict[Path, np.ndarray] | None = {} if cache_frames else None

    def __len__(self) -> int:
        return len(self.keyframes)

    def num_video_frames(self, vid: str) -> int:
        n = self._nframes.get(vid)
        if n is None:
            folder = self.frames_root / vid
            if not folder.is_dir():
                raise DataError(f"{folder}: frames folder of video '{vid}' (listed in {self.csv_path}) not found")
            n = sum(1 for _ in folder.glob(f"{vid}_*.jpg"))
            if n == 0:
                raise DataError(f"{folder}: no frames named {vid}_%06d.jpg")
            self._nframes[vid] = n
        return n

    def frame_indices(self, vid: str, timestamp: int) -> np.ndarray:
        """1-based file numbers of the clip centred on a key frame, clamped to the video."""
        n = self.num_video_frames(vid)
        centre = (timestamp - self.first_second) * self.fps + 1
        idx = centre + (np.arange(self.num_frames) - self.num_frames // 2) * self.stride
        return np.clip(idx, 1, n)

    def _load(self, path: Path, size: tuple[int, int]) -> np.ndarray:
        if self._cache is not None and path in self._cache:
            return self._cache[path]
        try:
            with Image.open(path) as im:
                im.draft("RGB", size)  # reduced-size JPEG decoding when the target is much smaller
                arr = np.asarray(self.transform.decode_resize(im.convert("RGB")))
        except FileNotFoundError:
            raise DataError(f"{path}: frame not found") from None
        except OSError as e:
            raise DataError(f"{path}: cannot decode frame ({e})") from None
        if self._cache is not None:
            self._cache[path] = arr
        return arr

    def __getitem__(self, item: int | tuple[int, int]):
        """``item`` is an index, or ``(index, aug_seed)`` from :class:`~bmvit.engine.sampler.ResumableBatchSampler`."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        kf = self.keyframes[i]
        idx = self.frame_indices(kf.video_id, kf.timestamp)
        folder = self.frames_root / kf.video_id
        paths = [folder / f"{kf.video_id}_{j:06d}.jpg" for j in idx]
        if kf.video_id not in self._sizes:
            with Image.open(paths[len(paths) // 2]) as im:
                self._sizes[kf.video_id] = (im.size[1], im.size[0])
        size = self.transform.decode_size()
        frames = np.stack([self._load(p, size) for p in paths])  # (T, S, S, 3) uint8
        boxes, labels = torch.from_numpy(kf.boxes.copy()), torch.from_numpy(kf.labels.copy())
        clip, boxes, labels = self.transform(torch.from_numpy(frames), boxes, labels, seed)
        target = {
            "boxes": xyxy_to_cxcywh(boxes),
            "labels": labels,
            "video_id": kf.video_id,
            "timestamp": kf.timestamp,
            "orig_size": self._sizes[kf.video_id],
        }
        return clip, target


def collate(batch):
    """Stack clips ``(B, 3, T, S, S)``; keep targets as a list of dicts."""
    clips, targets = zip(*batch)
    return torch.stack(clips), list(targets)
