"""What :meth:`bmvit.inference.detector.Detector.predict` returns: per video, per key frame, per
actor, and their JSON form (the ``detections.json`` document of ``bmvit detect``; schema in
docs/inference.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bmvit.inference.video_source import VideoInfo

__all__ = ["Action", "Actor", "KeyFrameResult", "SCHEMA_VERSION", "VideoResult"]

SCHEMA_VERSION = 1


@dataclass
class Action:
    id: int  # label-map id (the AVA CSV's action_id)
    name: str
    score: float


@dataclass
class Actor:
    """One detected actor in a key frame."""

    box: list[float]  # x1, y1, x2, y2 in pixels of the original frame
    box_normalized: list[float]  # x1, y1, x2, y2 in [0, 1]
    actor_score: float  # p(actor)
    actions: list[Action]  # top-k by score, best first
    track_id: int  # stable across key frames (IoU association; for colours, not evaluated)
    token: int  # index of the output token that produced it
    action_scores: list[float] = field(repr=False, default_factory=list)  # all K scores, label-map order

    def to_dict(self) -> dict:
        """JSON form: pixels rounded to 0.01, normalized coordinates and scores to 1e-6."""
        return {"box": [round(v, 2) for v in self.box], "box_normalized": [round(v, 6) for v in self.box_normalized],
                "actor_score": round(self.actor_score, 6), "track_id": self.track_id, "token": self.token,
                "actions": [{"id": a.id, "name": a.name, "score": round(a.score, 6)} for a in self.actions]}


@dataclass
class KeyFrameResult:
    """Detections of one key frame; ``outputs`` holds the raw per-token outputs when asked for."""

    frame_index: int  # 0-based index in the video
    time: float  # seconds: frame_index / fps
    actors: list[Actor]
    outputs: dict[str, Any] | None = field(default=None, repr=False)  # boxes (L, 4) cxcywh, actor_probs (L,), cells, grid

    def to_dict(self) -> dict:
        return {"frame_index": self.frame_index, "time": round(self.time, 6), "actors": [a.to_dict() for a in self.actors]}


@dataclass
class VideoResult:
    """Everything :meth:`Detector.predict` found in one video."""

    video: VideoInfo
    keyframes: list[KeyFrameResult]
    labels: dict[int, str]
    settings: dict[str, Any]  # model and post-processing settings used

    def to_dict(self) -> dict:
        """The ``detections.json`` document (schema in docs/inference.md)."""
        v = self.video
        return {
            "schema_version": SCHEMA_VERSION,
            "video": {"source": v.name, "kind": v.kind, "fps": v.fps, "width": v.width, "height": v.height,
                      "num_frames": v.num_frames, **({"warning": v.warning} if v.warning else {})},
            "settings": self.settings,
            "labels": {str(k): n for k, n in self.labels.items()},
            "keyframes": [kf.to_dict() for kf in self.keyframes],
        }
