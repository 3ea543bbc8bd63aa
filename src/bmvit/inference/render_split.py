"""Render the videos of an evaluated split: each frame with the ground truth and the predictions.

:func:`videos_to_render` picks the videos (most annotated actors first); :func:`render_split_video`
draws every frame of one video with the boxes of its nearest key frame — ground truth dashed white,
predictions solid and coloured with their captions — and writes an mp4
(:func:`bmvit.inference.render.write_mp4`). Used by ``bmvit eval --render N`` and
``bmvit train --render N`` (from the final evaluation's detections, ``cli/eval.py: render_videos``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bmvit.data.skips import reader_of
from bmvit.data.sources.frame_folder import FrameFolder
from bmvit.errors import DataError
from bmvit.inference.render import FrameBoxes, color_for, display_scale, draw_frame, write_mp4

__all__ = ["render_split_video", "videos_to_render"]

ACT_DISPLAY_FPS = 25.0


def videos_to_render(ds, n: int) -> list[str]:
    """The ``n`` videos of ``ds`` with the most annotated actors (ties: first seen first)."""
    seen: list[str] = []
    for kf in ds.keyframes:  # videos with the most annotated actors first
        if kf.video_id not in seen:
            seen.append(kf.video_id)
    count = {v: sum(len(k.boxes) for k in ds.keyframes if k.video_id == v) for v in seen}
    return sorted(seen, key=lambda v: -count[v])[:n]


def render_split_video(ds, dets, vid: str, path: Path, min_score: float = 0.3) -> Path:
    """Render every frame of ``vid``: predictions (solid, coloured) and GT (dashed white) of the
    nearest key frame within ±0.5 s; ``dets`` are the split's detection rows
    (:class:`~bmvit.data.formats.ava.AvaRows`), captions list the classes scoring ``min_score`` or more."""
    names = ds.labels
    reader = reader_of(ds)  # the frames folder and frame timing are the reader's
    n = reader.num_video_frames(vid)
    gt = {kf.timestamp: kf for kf in ds.keyframes if kf.video_id == vid}
    sel = np.asarray([v == vid for v in dets.video_ids], dtype=bool)
    d_ts, d_boxes, d_act, d_score = dets.timestamps[sel], dets.boxes[sel], dets.actions[sel], dets.person_or_score[sel]

    def frames():
        for f, frame in enumerate(_full_frames(reader.source, vid, n), start=1):
            H, W = frame.shape[:2]
            ts = reader.first_timestamp + int(round((f - 1) / reader.rate))
            scale = np.array([W, H, W, H])
            boxes, labels, colors, style = [], [], [], []
            if ts in gt:
                for b in gt[ts].boxes:
                    boxes.append(b * scale); labels.append(""); colors.append((255, 255, 255)); style.append("dashed")
            m = d_ts == ts
            uniq = {tuple(b): i for i, b in enumerate(np.unique(d_boxes[m], axis=0))} if m.any() else {}
            for b, i in uniq.items():
                rows = m & np.all(d_boxes == np.array(b), axis=1)
                order = np.argsort(-d_score[rows])
                caption = ", ".join(f"{names.get(int(a), a)} {s:.2f}" for a, s in
                                    zip(d_act[rows][order], d_score[rows][order]) if s >= min_score)
                if caption:
                    boxes.append(np.array(b) * scale); labels.append(caption); colors.append(color_for(i)); style.append("solid")
            fb = FrameBoxes(np.array(boxes, dtype=np.float64).reshape(-1, 4), labels, colors, style)
            yield draw_frame(frame, fb, scale=display_scale(W, H))

    # the grid rate of a video source; frame folders: the data's frame rate (ACT, whose timestamps are
    # frame numbers, has none: 25 fps, UCF101's)
    fps = getattr(reader.source, "fps", None) or (reader.rate if reader.rate > 1 else ACT_DISPLAY_FPS)
    return write_mp4(path, frames(), fps=fps)


def _full_frames(source, vid: str, n: int, chunk: int = 32):
    """Frames ``1..n`` of ``vid`` as ``(H, W, 3)`` uint8 at their own size, read from disk: a frame
    folder's cache holds frames resized for the model; a video source decodes ``chunk`` at a time."""
    if isinstance(source, FrameFolder):
        for f in range(1, n + 1):
            path = source.path(vid, f)
            try:
                with Image.open(path) as im:
                    yield np.asarray(im.convert("RGB"))
            except FileNotFoundError:
                raise DataError(f"{path}: frame not found (rendering video '{vid}', frames 1..{n})") from None
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise DataError(f"{path}: cannot decode frame ({e})") from None
        return
    for first in range(1, n + 1, chunk):
        yield from source.read(vid, np.arange(first, min(first + chunk, n + 1)), resize=lambda x: x)
