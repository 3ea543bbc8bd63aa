"""Key frame -> clip: the clip datasets over any frame source (AVA layout, UCF/JHMDB, video files).

Contract: one sample = one annotated key frame (:mod:`bmvit.data.keyframes`).
``__getitem__(i)`` (or ``(i, aug_seed)``) of :class:`KeyFrameClips` and its two subclasses returns
``(clip, target)``: ``clip`` uint8 ``(3, T, S, S)`` (0..255 RGB, not yet normalized:
:func:`bmvit.data.transforms.normalize_clips` does that on the device), ``target`` a dict with
``boxes (N, 4)`` normalized cxcywh of the key frame, ``labels (N, K)`` multi-hot float,
``colour (3,)`` colour-jitter factors, ``video_id``, ``timestamp`` and ``orig_size (H, W)``.
With ``eval.time_tta`` (the transform's ``views``: ``V`` frame offsets) the clip is the ``V``
moved clips one after the other, ``(3, V·T, S, S)`` (:mod:`bmvit.models.time_tta`).

Time: the key frame of ``timestamp`` is frame number ``(timestamp - first_timestamp) * rate + 1``
(AVA: ``first_timestamp`` = ``first_second`` = 900 s and ``rate`` = 30 fps; UCF/JHMDB, whose
timestamps *are* frame numbers: 1 and 1). Clip index ``k`` reads frame
``key + (k - T // 2) * stride``, clamped to ``[1, frames of the video]`` (as in PySlowFast);
input index ``T // 2`` is the key frame.

* :class:`AvaClips` — anything in the AVA on-disk layout (AVA v2.2, the synthetic set, users'
  data): the key frames of an AVA-format CSV over ``<frames_root>/<vid>/<vid>_%06d.jpg``.
* :class:`ActClips` — one split of UCF101-24 / JHMDB51-21 (ACT / MOC-Detector pickle,
  :mod:`bmvit.data.formats.act`) over frame folders or video files. Every frame read is checked
  to have the size the pickle states. Videos of the split whose frames folder (or video file) is
  absent raise a DataError naming the folder and the pickle key, or are left out and counted
  under ``on_error="skip"``; a frames folder that ends before ``nframes`` is an error when the
  split is read (under ``skip``, the clips that need its missing frames are skipped when read).

A frame source (:class:`bmvit.data.sources.frame_folder.FrameFolder`,
:class:`bmvit.data.sources.video.VideoFrames`) provides ``num_frames(video)``,
``frame_size(video) -> (H, W)`` and
``read(video, frames, resize, draft, expect_size, mirror) -> (T, h, w, 3) uint8`` (``resize`` works on a
whole ``(n, H, W, 3)`` uint8 stack; ``mirror``: flipped left-right, asked for when the clip
transform's draw for the sample's seed flips, :meth:`~bmvit.data.transforms.ClipTransform.flips`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from bmvit.boxes import xyxy_to_cxcywh
from bmvit.data.formats.act import ActAnnotations, read_act_pkl
from bmvit.data.formats.ava import AvaRows, read_label_map, read_rows
from bmvit.data.keyframes import KeyFrameTable, act_keyframes, group_keyframes
from bmvit.data.skips import SkipLog
from bmvit.data.sources.frame_folder import AVA_TEMPLATE, FrameFolder
from bmvit.data.transforms import ClipTransform
from bmvit.errors import DataError

__all__ = ["ActClips", "AvaClips", "FrameSource", "KeyFrameClips"]


class FrameSource(Protocol):
    def num_frames(self, video: str) -> int: ...

    def frame_size(self, video: str) -> tuple[int, int]: ...

    def read(self, video: str, frames: np.ndarray, resize, draft: tuple[int, int] | None = None,
             expect_size: tuple[int, int] | None = None, mirror: bool = False) -> np.ndarray: ...


class KeyFrameClips(Dataset):
    """Clips + targets of the key frames in ``table`` read from ``source`` (module docstring).

    ``labels`` maps class ids to names in label order (``labels (N, K)`` column ``k`` is the
    ``k``-th id). ``sizes`` gives ``(H, W)`` per video when the annotations state it (UCF/JHMDB):
    every frame is then checked to have that size, since boxes are normalized by it.
    """

    def __init__(self, table: KeyFrameTable, labels: dict[int, str], source: FrameSource, num_frames: int,
                 stride: int, transform: ClipTransform, first_timestamp: int = 900, rate: int = 30,
                 sizes: dict[str, tuple[int, int]] | None = None) -> None:
        self.table = table
        self.labels = labels
        self.class_ids = list(labels)
        self.class_index = {c: i for i, c in enumerate(self.class_ids)}
        self.source = source
        self.num_frames, self.stride = num_frames, stride
        self.first_timestamp, self.rate = first_timestamp, rate
        self.transform = transform
        self.sizes = dict(sizes) if sizes else {}
        self._check_sizes = sizes is not None

    @property
    def keyframes(self) -> KeyFrameTable:
        return self.table

    def __len__(self) -> int:
        return len(self.table)

    def num_video_frames(self, vid: str) -> int:
        return self.source.num_frames(vid)

    def key_frame(self, timestamp: int) -> int:
        """1-based frame number of the key frame of ``timestamp``."""
        return (int(timestamp) - self.first_timestamp) * self.rate + 1

    def frame_indices(self, vid: str, timestamp: int, shift: int = 0) -> np.ndarray:
        """``(T,)`` 1-based frame numbers of the clip centred on a key frame (moved by ``shift``
        frames: temporal jitter), clamped to the video."""
        n = self.num_video_frames(vid)
        idx = self.key_frame(timestamp) + shift + (np.arange(self.num_frames) - self.num_frames // 2) * self.stride
        return np.clip(idx, 1, n)

    def _decode_resize(self, frames: np.ndarray) -> torch.Tensor:
        return self.transform.decode_resize(frames)  # (n, H, W, 3) -> (n, h, w, 3) uint8

    def __getitem__(self, item: int | tuple[int, int]):
        i, seed = item if isinstance(item, tuple) else (item, None)
        kf = self.table[i]
        shift = self.transform.time_shift(seed)
        idx = np.concatenate([self.frame_indices(kf.video_id, kf.timestamp, shift + v)
                              for v in self.transform.views])  # (V·T,): the views one after the other
        size = self.sizes.get(kf.video_id)
        if size is None:
            size = self.sizes[kf.video_id] = self.source.frame_size(kf.video_id)
        mirror = seed is not None and self.transform.flips(seed)  # the source flips while decoding (cheaper)
        frames = self.source.read(kf.video_id, idx, self._decode_resize, self.transform.decode_size(),
                                  size if self._check_sizes else None, mirror=mirror)  # (T, h, w, 3) uint8
        boxes, labels = torch.from_numpy(kf.boxes), torch.from_numpy(kf.labels)
        clip, boxes, labels, colour = self.transform(torch.from_numpy(frames), boxes, labels, seed,
                                                     mirrored=mirror)  # (3, T, h, w) uint8
        target = {
            "boxes": xyxy_to_cxcywh(boxes),
            "labels": labels,
            "video_id": kf.video_id,
            "timestamp": kf.timestamp,
            "orig_size": tuple(size),
            "colour": colour,
        }
        return clip, target


class AvaClips(KeyFrameClips):
    """Clips + targets for key frames listed in an AVA-format CSV (module docstring).

    :class:`~bmvit.data.clips.KeyFrameClips` over a :class:`~bmvit.data.sources.frame_folder.FrameFolder` with
    the AVA file layout; ``__getitem__`` returns ``(clip, target)`` as documented there.
    ``cache_frames`` keeps decoded, resized frames in memory (small datasets such as the
    synthetic set). ``rows``: the CSV's rows already read (e.g. checked by
    :mod:`bmvit.data.formats.ava_checks`); default: read ``csv_path``. ``source``: the frames folder
    already opened over ``frames_root`` (its frame counts, found by those checks, are kept).
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
        source: FrameFolder | None = None,
    ) -> None:
        self.frames_root = Path(frames_root)
        if not self.frames_root.is_dir():
            raise DataError(f"{self.frames_root}: frames folder not found (expected <root>/<video_id>/<video_id>_%06d.jpg)")
        self.csv_path = Path(csv_path)
        labels = read_label_map(label_map)
        class_index = {c: i for i, c in enumerate(labels)}
        keyframes = group_keyframes(read_rows(csv_path) if rows is None else rows, class_index)
        super().__init__(KeyFrameTable.from_keyframes(keyframes, len(labels)), labels,
                         source or FrameFolder(self.frames_root, AVA_TEMPLATE, cache=cache_frames), num_frames, stride,
                         transform, first_timestamp=first_second, rate=fps)


class ActClips(KeyFrameClips):
    """One split of UCF101-24 / JHMDB51-21 (module docstring).

    ``source`` is where the frames are: a :class:`~bmvit.data.sources.frame_folder.FrameFolder` over
    ``rgb-images`` / ``Frames`` (template ``{video}/{frame:05d}.jpg`` / ``.png``) or a
    :class:`~bmvit.data.sources.video.VideoFrames`. ``annotations`` is the pickle's path or an already
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
            if on_error == "error" and isinstance(source, FrameFolder):
                _check_frames_on_disk(source, v, ann)
            kept.append(v)
        skips.print_summary()
        self.annotations = ann
        self.split, self.train = split, train
        labels = {i + 1: name for i, name in enumerate(ann.labels)}
        super().__init__(act_keyframes(ann, kept, train, keyframe_step), labels, source, num_frames, stride,
                         transform, first_timestamp=1, rate=1, sizes={v: ann.resolution[v] for v in kept})

    def num_video_frames(self, vid: str) -> int:
        return self.annotations.nframes[vid]


def _check_frames_on_disk(source: FrameFolder, video: str, ann: ActAnnotations) -> None:
    """A frames folder that ends before the pickle's ``nframes``: one error now, not when a clip
    first needs a missing frame (under ``on_error=skip`` those clips are skipped when read)."""
    have, n = source.num_frames(video), ann.nframes[video]
    if have < n:
        raise DataError(f"{source.folder(video)}: frames end at {source.path(video, have).name} but "
                        f"{ann.path.name} gives nframes['{video}'] = {n} (frames missing on disk; "
                        "data.on_error=skip skips the clips that need them)")


def _where(source: FrameSource, video: str) -> str:
    if hasattr(source, "folder"):
        return str(source.folder(video))  # type: ignore[attr-defined]
    if hasattr(source, "root"):
        return f"{source.root / video}.*"  # type: ignore[attr-defined]
    return video
