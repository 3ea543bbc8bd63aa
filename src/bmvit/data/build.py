"""Which reader a config asks for: ``data.format`` x ``data.source``; where every user of data enters.

Contract: :func:`make_dataset` returns the ``train`` or ``val`` split of a config's data section
as a :class:`~bmvit.data.clip_dataset.ClipDataset` (``(clip (3, T, S, S) uint8, target)`` with the
shared target contract: ``boxes (N, 4)`` normalized cxcywh, ``labels (N, K)``, ``video_id``,
``timestamp``, ``orig_size``; members ``labels`` ({class id: name}), ``class_ids``,
``class_index``, ``keyframes``, ``transform``), with the clip transform it builds from the config
(:func:`checked_mean_std` checks the input normalization); :func:`build_dataset` picks the reader:

=========  ========  ==========================================================================
format     source    reader
=========  ========  ==========================================================================
ava        frames    :class:`bmvit.data.clips.AvaClips` over ``<root>/<frames_dir>/<vid>/<vid>_%06d.jpg``
ava        video     :class:`bmvit.data.clips.KeyFrameClips` + :class:`bmvit.data.sources.video.VideoFrames`
act        frames    :class:`bmvit.data.clips.ActClips` + :class:`bmvit.data.sources.frame_folder.FrameFolder`
act        video     :class:`bmvit.data.clips.ActClips` + :class:`bmvit.data.sources.video.VideoFrames`
=========  ========  ==========================================================================

AVA CSVs go through :func:`bmvit.data.formats.ava_checks.read_checked_rows` (every row checked);
videos absent on disk, and rows whose key frame is not a frame of its video, are found before
training starts. Under ``data.on_error=skip`` the
dataset is wrapped in :class:`bmvit.data.skips.SkipBadSamples` (bad frames at read time).
"""

from __future__ import annotations

import torch

from bmvit.config import Config, DataConfig
from bmvit.data.clip_dataset import ClipDataset
from bmvit.data.clips import ActClips, AvaClips, KeyFrameClips
from bmvit.data.formats.ava import read_label_map
from bmvit.data.formats.ava_checks import check_keyframes, check_videos, read_checked_rows
from bmvit.data.keyframes import KeyFrameTable, group_keyframes
from bmvit.data.skips import SkipBadSamples
from bmvit.data.sources.frame_folder import AVA_TEMPLATE, FrameFolder
from bmvit.data.sources.video import VideoFrames
from bmvit.data.transforms import ClipTransform, views_of
from bmvit.errors import ConfigError, DataError

__all__ = ["build_dataset", "checked_mean_std", "make_dataset"]


def _check(d: DataConfig) -> None:
    if d.num_frames < 1 or d.stride < 1:
        raise ConfigError(f"'data.num_frames' and 'data.stride' must be at least 1, got {d.num_frames}, {d.stride}")
    if d.keyframe_range is not None and (len(d.keyframe_range) != 2 or d.keyframe_range[0] > d.keyframe_range[1]):
        raise ConfigError(f"'data.keyframe_range': expected [first, last], got {d.keyframe_range}")
    if len(d.short_side) != 2 or not 0 < d.short_side[0] <= d.short_side[1]:
        raise ConfigError(f"'data.short_side': expected [lo, hi] with 0 < lo <= hi, got {d.short_side}")
    if d.keyframe_step < 1:
        raise ConfigError(f"'data.keyframe_step' must be at least 1, got {d.keyframe_step}")
    if not 0 <= d.box_jitter < 1:
        raise ConfigError(f"'data.box_jitter' must be in [0, 1), got {d.box_jitter}")


def _require_rows(rows, csv_path, split: str) -> None:
    """A split without a single usable annotation row is an error naming its CSV (and why)."""
    if len(rows):
        return
    empty = csv_path.is_file() and not csv_path.read_bytes().strip()
    why = ("the file is empty" if empty else
           "every row was skipped or ignored (see the messages above; data.on_error / data.unknown_actions)")
    raise DataError(f"{csv_path}: no {split} annotation rows: {why}; expected rows "
                    "video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]")


def _video_source(d: DataConfig) -> VideoFrames:
    """Video files; ACT frame numbers count each video's own frames (its rate: UCF101 25 fps, JHMDB 30)."""
    root = d.path(d.video_dir)
    if not root.is_dir():
        raise DataError(f"{root}: videos folder not found (data.video_dir; expected <root>/{d.video_dir}/<video_id>.mp4)")
    return VideoFrames(root, fps=None if d.format == "act" else d.fps, offset=d.video_offset)


def build_dataset(d: DataConfig, split: str, transform: ClipTransform) -> ClipDataset:
    """The ``split`` ("train" | "val") of ``d`` (module docstring); ``transform`` decides augmentation."""
    _check(d)
    train = split == "train"
    if d.format == "act":
        if d.source == "video":
            source = _video_source(d)
        else:
            root = d.path(d.frames_dir)
            if not root.is_dir():
                raise DataError(f"{root}: frames folder not found (expected <root>/{d.frames_dir}/{d.frame_template})")
            source = FrameFolder(root, d.frame_template)
        ds: ClipDataset = ActClips(d.path(d.annotations), source, d.split, train, d.num_frames, d.stride, transform,
                               d.keyframe_step, d.on_error)
        if len(ds) == 0:
            raise DataError(f"{d.path(d.annotations)}: split {d.split} has no {split} key frames (its "
                            f"{'train' if train else 'test'}_videos list is empty or every tube was skipped)")
    else:
        frames_root = d.path(d.frames_dir)
        if d.source == "frames" and not frames_root.is_dir():  # the first thing a wrong data.root shows
            raise DataError(f"{frames_root}: frames folder not found (expected <root>/<video_id>/<video_id>_%06d.jpg)")
        csv_path = d.path(d.train_csv if train else d.val_csv)
        labels = read_label_map(d.path(d.label_map))
        kr = tuple(d.keyframe_range) if d.keyframe_range is not None else None
        rows, lines = read_checked_rows(csv_path, list(labels), d.on_error, d.unknown_actions, kr)
        _require_rows(rows, csv_path, split)
        if d.source == "video":
            source = _video_source(d)
            rows, lines = check_videos(rows, lines, csv_path, source.has_video,
                                       lambda v: f"{source.root / v}.{{{','.join(source.extensions)}}}", d.on_error)
            rows, lines = check_keyframes(rows, lines, csv_path, source.num_frames, lambda v: str(source.path(v)),
                                          d.first_second, d.fps, d.on_error)
            _require_rows(rows, csv_path, split)
            class_index = {c: i for i, c in enumerate(labels)}
            table = KeyFrameTable.from_keyframes(group_keyframes(rows, class_index), len(labels))
            ds = KeyFrameClips(table, labels, source, d.num_frames, d.stride, transform, d.first_second, d.fps)
        else:
            rows, lines = check_videos(rows, lines, csv_path, lambda v: (frames_root / v).is_dir(),
                                       lambda v: str(frames_root / v), d.on_error)
            folder = FrameFolder(frames_root, AVA_TEMPLATE, cache=d.cache_frames)  # frame counts: cached, shared
            rows, lines = check_keyframes(rows, lines, csv_path, folder.num_frames, lambda v: str(frames_root / v),
                                          d.first_second, d.fps, d.on_error)
            _require_rows(rows, csv_path, split)
            ds = AvaClips(frames_root, csv_path, d.path(d.label_map), d.num_frames, d.stride, transform, d.fps,
                          d.first_second, d.cache_frames, rows=rows, source=folder)
    if d.on_error == "skip":
        ds = SkipBadSamples(ds, substitute=train)
    return ds


def checked_mean_std(d: DataConfig) -> dict:
    """``mean``/``std`` keyword arguments of :class:`ClipTransform` from ``data.mean``/``data.std``,
    after checking them (3 per-channel values, std > 0; :class:`ConfigError` otherwise)."""
    for key in ("mean", "std"):
        v = getattr(d, key)
        if len(v) != 3 or (key == "std" and min(v) <= 0):
            raise ConfigError(f"'data.{key}': expected 3 per-channel (RGB) values{' > 0' if key == 'std' else ''}, "
                              f"got {v}")
    return {"mean": tuple(d.mean), "std": tuple(d.std)}


def make_dataset(cfg: Config, split: str, augment: bool = False, generator: torch.Generator | None = None) -> ClipDataset:
    """The ``train`` or ``val`` split of ``cfg.data``; ``augment`` switches on training augmentation.

    ``data.format`` / ``data.source`` pick the reader (:func:`build_dataset`): AVA layout
    (default) or ACT pkl (UCF101-24 / JHMDB51-21), from frame files or video files."""
    d = cfg.data
    transform = ClipTransform(size=d.size, train=augment, hflip_prob=d.hflip_prob, color_jitter=d.color_jitter,
                              generator=generator, box_jitter=d.box_jitter, time_jitter=d.time_jitter, resize=d.resize,
                              short_side=(d.short_side[0], d.short_side[1]) if len(d.short_side) == 2 else (0, 0),
                              views=(0,) if augment else views_of(cfg.eval.time_tta), **checked_mean_std(d))
    ds = build_dataset(d, split, transform)
    index = ds.class_index
    for pair in d.hflip_swap:
        if len(pair) != 2 or any(a not in index for a in pair):
            raise ConfigError(f"'data.hflip_swap': {pair} must be two action ids of the label map ({sorted(index)})")
    transform.hflip_swap = [(index[a], index[b]) for a, b in d.hflip_swap]
    return ds
