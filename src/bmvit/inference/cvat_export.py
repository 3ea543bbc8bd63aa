"""Detections as CVAT pre-annotations: ``bmvit detect … --export cvat`` → ``cvat_annotations.xml``.

Contract: :func:`detections_to_cvat` turns a :class:`~bmvit.inference.detector.VideoResult` into a
CVAT for video 1.1 task (:mod:`bmvit.data.formats.cvat`) with one label, ``person``, that has one
checkbox attribute per class (named as in the label map):

* one track per ``track_id`` (an actor without one gets a track of its own), with a box at every
  key frame where it was detected (pixels of the input frame);
* where a track is missing at the next key frame, an ``outside="1"`` box there (same corners), so
  CVAT shows it from its key frame up to that one and not beyond;
* a class is checked (``true``) when its score is at least ``threshold`` (the detector's
  p(actor) threshold θ), and the best class always, so every actor carries one action.

Uploaded into a CVAT task made from the same video (label ``person`` with these checkboxes), it
gives the annotator the model's guesses to correct; the corrected export goes back in through
``bmvit prepare import-cvat`` (:mod:`bmvit.data.prepare.cvat_import`), which reads these boxes and
actions back unchanged (to CVAT's 2 decimals and the CSV's 3).
"""

from __future__ import annotations

from pathlib import Path

from bmvit.data.formats.cvat import CvatAttribute, CvatShape, CvatTask, CvatTrack, write_cvat
from bmvit.errors import ConfigError
from bmvit.inference.detector import Actor, VideoResult

__all__ = ["FILE_NAME", "detections_to_cvat", "export_cvat"]

FILE_NAME = "cvat_annotations.xml"
LABEL = "person"


def checked(actor: Actor, class_names: list[str], threshold: float) -> dict[str, str]:
    """``{class name: "true" | "false"}`` for one actor (module docstring)."""
    scores = actor.action_scores
    best = max(range(len(scores)), key=lambda k: scores[k]) if scores else -1
    return {n: "true" if (s >= threshold or k == best) else "false"
            for k, (n, s) in enumerate(zip(class_names, scores))}


def _written_box(box: list[float]) -> tuple[float, float, float, float]:
    """``box`` as written (2 decimals); a box thinner than 0.01 px gets 0.01 px, so that the file
    reads back (a box with ``xtl >= xbr`` is refused by the reader, and by ``import-cvat``)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if round(x2, 2) <= round(x1, 2):
        x1, x2 = round(x1, 2), round(x1, 2) + 0.01
    if round(y2, 2) <= round(y1, 2):
        y1, y2 = round(y1, 2), round(y1, 2) + 0.01
    return x1, y1, x2, y2


def detections_to_cvat(result: VideoResult, threshold: float) -> CvatTask:
    names = [str(n) for n in result.labels.values()]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"class name {dup[0]!r} appears twice in the label map: CVAT attributes need unique names")
    keys = result.keyframes
    fresh = max((a.track_id for kf in keys for a in kf.actors), default=-1) + 1
    per_track: dict[int, dict[int, Actor]] = {}  # track id -> {key-frame position: actor}
    for i, kf in enumerate(keys):
        for a in kf.actors:
            tid = a.track_id
            if tid < 0 or i in per_track.get(tid, {}):
                tid, fresh = fresh, fresh + 1
            per_track.setdefault(tid, {})[i] = a
    tracks = []
    for tid in sorted(per_track):
        shapes = []
        for i, a in sorted(per_track[tid].items()):
            attrs = checked(a, names, threshold)
            box = _written_box(a.box)
            shapes.append(CvatShape(keys[i].frame_index, box, attributes=attrs))  # type: ignore[arg-type]
            if i + 1 < len(keys) and i + 1 not in per_track[tid]:
                shapes.append(CvatShape(keys[i + 1].frame_index, box, outside=True, attributes=attrs))  # type: ignore[arg-type]
        tracks.append(CvatTrack(tid, LABEL, shapes, source="auto"))
    v = result.video
    size = v.num_frames or (keys[-1].frame_index + 1 if keys else 0)
    attrs = [CvatAttribute(n, "checkbox", "false", ["false"]) for n in names]
    return CvatTask(Path(v.name).stem or "video", size, 0, max(size - 1, 0), 1, v.width, v.height, {LABEL: attrs},
                    tracks, Path(v.name).name)


def export_cvat(out_dir: str | Path, result: VideoResult, threshold: float) -> Path:
    """Write ``out_dir/cvat_annotations.xml`` (module docstring); returns its path."""
    return write_cvat(Path(out_dir) / FILE_NAME, detections_to_cvat(result, threshold))
