"""The files ``bmvit detect`` writes: ``detections.json``, an AVA-format CSV and ``annotated.mp4``.

* ``detections.json``: :meth:`VideoResult.to_dict` (schema in docs/inference.md), written atomically.
* ``detections.csv``: AVA rows ``video_id,timestamp,x1,y1,x2,y2,action_id,score`` — one row per
  detected actor and class (all ``K`` classes, as the AVA evaluator expects), boxes normalized.
  ``timestamp`` is ``first_second + time``: an integer (``%04d``, AVA) when the key frame lies
  within half a frame of a whole second, else seconds with 3 decimals (more than one key frame per
  second; the official evaluator reads only integers).
* ``annotated.mp4``: every frame of the input with the detections of the nearest key frame (within
  half the key-frame interval), one colour per track, captions with the top actions.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from bmvit.atomic import atomic_output, write_text
from bmvit.inference.detector import KeyFrameResult, VideoResult
from bmvit.inference.render import FrameBoxes, color_for, display_scale, draw_frame, write_mp4
from bmvit.inference.video_source import VideoSource


def write_json(path: str | Path, doc: dict) -> Path:
    """Write ``doc`` as indented JSON via a temporary file and a rename (:mod:`bmvit.atomic`)."""
    return write_text(path, json.dumps(doc, indent=1) + "\n")


def csv_timestamp(time: float, fps: float, first_second: float = 0.0) -> str:
    """AVA timestamp text of a key frame at ``time`` seconds (see the module docstring)."""
    ts = first_second + time
    if abs(ts - round(ts)) < 0.5 / fps:
        return f"{int(round(ts)):04d}"
    return f"{ts:.3f}"


def write_csv(path: str | Path, result: VideoResult, video_id: str, first_second: float = 0.0) -> Path:
    """Write the AVA-format CSV of ``result`` (all classes of every actor)."""
    path = Path(path)
    ids = list(result.labels)
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        for kf in result.keyframes:
            ts = csv_timestamp(kf.time, result.video.fps, first_second)
            for a in kf.actors:
                x1, y1, x2, y2 = a.box_normalized
                for cid, s in zip(ids, a.action_scores):
                    f.write(f"{video_id},{ts},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{cid},{s:.6f}\n")
    return path


def caption(kf_actor, max_actions: int = 3, min_score: float = 0.1) -> str:
    """``"walk left 0.91, wave 0.55"``: up to ``max_actions`` actions scoring at least ``min_score``
    (always the best one)."""
    acts = [a for i, a in enumerate(kf_actor.actions[:max_actions]) if i == 0 or a.score >= min_score]
    return ", ".join(f"{a.name} {a.score:.2f}" for a in acts)


def frame_boxes(kf: KeyFrameResult | None, max_actions: int = 3) -> FrameBoxes:
    """What :func:`~bmvit.inference.render.draw_frame` draws for the detections of ``kf``."""
    if kf is None or not kf.actors:
        return FrameBoxes(np.zeros((0, 4)), [], [], [])
    boxes = np.array([a.box for a in kf.actors], dtype=np.float64)  # (M, 4) pixels
    return FrameBoxes(boxes, [caption(a, max_actions) for a in kf.actors],
                      [color_for(max(a.track_id, 0)) for a in kf.actors], ["solid"] * len(kf.actors))


def nearest_keyframes(result: VideoResult, num_frames: int) -> Iterator[KeyFrameResult | None]:
    """For each frame ``0..num_frames-1``, the nearest key frame within half the key-frame interval."""
    keys = [kf.frame_index for kf in result.keyframes]
    per_second = float(result.settings.get("keyframes_per_second", 1.0))
    reach = max(1, math.ceil(result.video.fps / per_second / 2))
    for f in range(num_frames):
        i = bisect.bisect_left(keys, f)
        best = min((j for j in (i - 1, i) if 0 <= j < len(keys)), key=lambda j: abs(keys[j] - f), default=None)
        yield result.keyframes[best] if best is not None and abs(keys[best] - f) <= reach else None


def annotated_frames(source: VideoSource, result: VideoResult, min_width: int = 480,
                     on_keyframe: Callable[[int, np.ndarray, KeyFrameResult], None] | None = None,
                     draw: bool = True) -> Iterator[np.ndarray]:
    """Every frame of ``source`` (a fresh pass over the input) with the detections of its nearest
    key frame drawn on it (frames narrower than ``min_width`` scaled up); ``on_keyframe(i, frame, kf)``
    sees the undrawn key frames (e.g. for explanations). ``draw=False`` yields the frames as read."""
    aspect = result.video.sample_aspect  # anamorphic video: drawn with square pixels
    scale = display_scale(round(result.video.width * aspect), result.video.height, min_width)
    keys = {kf.frame_index: kf for kf in result.keyframes}
    near = nearest_keyframes(result, result.video.num_frames or 10**12)
    for i, (frame, kf) in enumerate(zip(source, near)):
        if on_keyframe is not None and i in keys:
            on_keyframe(i, frame, keys[i])
        yield draw_frame(frame, frame_boxes(kf), scale=scale, pixel_aspect=aspect) if draw else frame


def render_annotated(path: str | Path, source: VideoSource, result: VideoResult, min_width: int = 480,
                     on_keyframe: Callable[[int, np.ndarray, KeyFrameResult], None] | None = None) -> Path:
    """Write ``annotated.mp4`` of :func:`annotated_frames` at the input's frame rate."""
    return write_mp4(path, annotated_frames(source, result, min_width, on_keyframe), fps=result.video.fps)
