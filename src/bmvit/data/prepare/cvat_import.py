"""A CVAT for video export turned into the AVA layout bmvit trains on (``bmvit prepare import-cvat``).

Contract: :func:`import_cvat` reads one task's XML (:func:`bmvit.data.formats.cvat.read_cvat`) made from
one video and

* takes key frames at whole seconds ``s`` of the video — every ``1 / keyframes_per_second``
  seconds, frame ``floor(s · fps + 1/2)`` of the video (the key frames of ``bmvit detect``) — that
  lie in the task's ``start_frame .. stop_frame``;
* takes each track's box there by CVAT's rule (:meth:`bmvit.data.formats.cvat.CvatTrack.at`: listed,
  linearly interpolated between listed boxes, absent after ``outside="1"``); person id = track id;
* takes the actions of that box (``actions``): ``label`` — the track's label, one action per
  track; ``attributes`` — the names of its checkbox attributes that are ``true`` (multi-label;
  only tracks whose label declares checkbox attributes); ``auto`` — ``attributes`` when the task
  declares checkbox attributes, else ``label``;
* normalizes boxes by ``<original_size>`` (which must equal the video's size), clips them to the
  frame (counted) and drops those left with no area after rounding to the CSV's 3 decimals;
* writes the frames with the ``prepare frames`` recipe (:func:`bmvit.data.prepare.frames.extract_frames`,
  ``fps`` frames a second, frame 1 = second 0) when ``ROOT/<frames_dir>/<id>`` is missing,
  then replaces the video's rows in ``ROOT/annotations/<split>.csv`` (timestamp = ``s``, so
  ``data.first_second=0``) and adds new action names to ``ROOT/annotations/label_map.pbtxt``
  (existing ids kept; new ones numbered after the largest), both atomically.

Everything is checked before anything is written; every problem is one DataError/ConfigError
naming the file (and line). Returns an :class:`ImportSummary`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from bmvit.data.formats.ava import AvaRows, read_label_map, read_rows, write_label_map, write_rows
from bmvit.data.formats.cvat import CvatTask, CvatTrack, read_cvat
from bmvit.errors import ConfigError, DataError

__all__ = ["ACTION_MODES", "ImportSummary", "VideoProbe", "import_cvat", "probe_video"]

ACTION_MODES = ("auto", "label", "attributes")
_BOX_TYPES = ("any", "rectangle", "bbox", "")  # CVAT's <label><type> values that allow boxes


@dataclass
class VideoProbe:
    fps: Fraction
    width: int
    height: int
    num_frames: int


def probe_video(path: str | Path) -> VideoProbe:
    """Frame rate, size and frame count of a video file (container metadata; decoded if absent)."""
    from bmvit.data.sources.video import _Stream

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video not found")
    with _Stream(path, threads=0) as s:
        H, W = s.size()
        fps = 1 / s.frame_dur
        n = int(s.stream.frames or 0)
        if n <= 0:
            end = s.metadata_end()
            n = round(end * fps) if end else sum(1 for _ in s.frames())
    if n <= 0:
        raise DataError(f"{path}: no frames")
    return VideoProbe(fps, W, H, n)


@dataclass
class ImportSummary:
    video_id: str
    split: str
    mode: str  # label | attributes
    tracks: int
    tracks_ignored: int  # attributes mode: tracks of labels without checkbox attributes
    keyframes: int
    keyframes_with_rows: int
    first_frame: int
    last_frame: int
    fps: float
    boxes: int  # actor boxes written
    rows_per_action: dict[str, int]
    clipped: int
    dropped: int  # outside the frame after clipping
    no_action: int  # boxes at key frames without any action (not written)
    replaced: int  # earlier rows of this video removed from the CSV
    csv: Path = Path()
    csv_rows: int = 0
    label_map: Path = Path()
    new_labels: list[str] = field(default_factory=list)
    num_labels: int = 0
    frames: str = ""
    other_shapes: int = 0
    other_split: str = ""  # the other split's CSV already lists this video
    tags: int = 0  # frame-level <tag>s of the export (not per person)
    unread: list[str] = field(default_factory=list)  # label mode: select/radio attributes, not read as actions

    def lines(self) -> list[str]:
        acts = ", ".join(f"{n} {c}" for n, c in self.rows_per_action.items())
        source = "track labels" if self.mode == "label" else "checkbox attributes"
        first = (f"{self.video_id} ({self.split}): {self.tracks} tracks, {self.keyframes} key frames "
                 f"({self.keyframes_with_rows} with actors; video frames {self.first_frame}..{self.last_frame} "
                 f"at {self.fps:g} fps), {self.boxes} boxes, {sum(self.rows_per_action.values())} rows "
                 f"[{acts}], {self.clipped} boxes clipped; actions from {source}")
        out = [first]
        skipped = [f"{n} {what}" for n, what in ((self.dropped, "boxes outside the frame"),
                                                   (self.no_action, "boxes without an action"),
                                                   (self.tracks_ignored, "tracks of labels without checkbox attributes"),
                                                   (self.other_shapes, "non-box shapes"),
                                                   (self.tags, "frame tags (not per person)")) if n]
        if skipped:
            out.append("  left out: " + ", ".join(skipped))
        out.append(f"  {self.csv}: {sum(self.rows_per_action.values())} rows written, {self.replaced} earlier rows "
                   f"of {self.video_id} replaced ({self.csv_rows} rows in all); {self.label_map}: {self.num_labels} "
                   f"actions ({len(self.new_labels)} new{': ' + ', '.join(self.new_labels) if self.new_labels else ''})")
        out.append(f"  frames: {self.frames}")
        if self.other_split:
            out.append(f"  note: {self.other_split} also lists {self.video_id}: the same video in train and val")
        if self.unread:
            out.append(f"  note: actions come from the track labels; the select/radio attributes "
                       f"{', '.join(self.unread)} are not read (actions as attributes: one checkbox per action, "
                       "see docs/custom-data.md)")
        return out


def _mode(task: CvatTask, actions: str) -> str:
    if actions not in ACTION_MODES:
        raise ConfigError(f"--actions must be one of {', '.join(ACTION_MODES)}, got {actions!r}")
    if actions != "auto":
        return actions
    if any(a.input_type == "checkbox" for attrs in task.labels.values() for a in attrs):
        return "attributes"
    if not task.labels and any(v.lower() in ("true", "false") for t in task.tracks for s in t.shapes
                               for v in s.attributes.values()):
        return "attributes"
    return "label"


def _vocabulary(task: CvatTask, mode: str) -> tuple[list[str], dict[str, set[str]] | None]:
    """Action names in a stable order, and (attributes mode) the checkbox names of each label
    (None: nothing declared in <meta>, every label uses the names found)."""
    if mode == "label":  # labels that can be boxes (a polygon or tag label is no action of a person box)
        names = [n for n in task.labels if task.label_types.get(n, "any") in _BOX_TYPES]
        names += [t.label for t in task.tracks if t.shapes]
        return list(dict.fromkeys(names)), None
    declared = {label: {a.name for a in attrs if a.input_type == "checkbox"} for label, attrs in task.labels.items()}
    if any(declared.values()):
        names = [a.name for attrs in task.labels.values() for a in attrs if a.input_type == "checkbox"]
        return list(dict.fromkeys(names)), {k: v for k, v in declared.items() if v}
    names = [n for t in task.tracks for s in t.shapes for n, v in s.attributes.items() if v.lower() in ("true", "false")]
    return list(dict.fromkeys(names)), None


def _check_attributes(task: CvatTask, tracks: list[CvatTrack], names: set[str], declared: dict[str, set[str]] | None) -> None:
    path = task.path
    for t in tracks:
        known = task.labels.get(t.label)
        for s in t.shapes:
            for n, v in s.attributes.items():
                if known is not None and task.labels and n not in {a.name for a in known}:
                    raise DataError(f"{path}:{s.line}: attribute {n!r} is not declared for label {t.label!r} in "
                                    f"<meta><labels> (declared: {', '.join(a.name for a in known) or 'none'})")
                checkbox = n in declared.get(t.label, ()) if declared is not None else n in names
                if checkbox and v.lower() not in ("true", "false"):
                    raise DataError(f"{path}:{s.line}: checkbox attribute {n!r} has the value {v!r}; expected "
                                    "true or false")


def _keyframes(probe: VideoProbe, task: CvatTask, keyframes_per_second: float) -> list[tuple[int, int]]:
    """``(second, video frame)`` of every key frame in the task's frame range."""
    if not keyframes_per_second > 0 or abs(round(1 / keyframes_per_second) * keyframes_per_second - 1) > 1e-6:
        raise ConfigError(f"--keyframes-per-second must be 1 or 1/N (one key frame every N seconds: 0.5, 0.25, ...), "
                          f"got {keyframes_per_second}: AVA timestamps are whole seconds")
    period = round(1 / keyframes_per_second)
    lo = task.start_frame
    hi = probe.num_frames - 1 if task.stop_frame is None else min(task.stop_frame, probe.num_frames - 1)
    out, s = [], 0
    while (f := math.floor(s * probe.fps + Fraction(1, 2))) <= hi:
        if f >= lo:
            out.append((s, f))
        s += period
    return out


def _label_ids(path: Path, names: list[str]) -> tuple[dict[int, str], dict[str, int], list[str]]:
    labels = read_label_map(path) if path.is_file() else {}
    ids: dict[str, int] = {}
    for k, n in labels.items():
        ids.setdefault(n, k)
    new = [n for n in names if n not in ids]
    nxt = max(labels, default=0) + 1
    for n in new:
        labels[nxt], ids[n] = n, nxt
        nxt += 1
    return labels, ids, new


def import_cvat(xml: str | Path, video: str | Path, root: str | Path, split: str = "train",
                video_id: str | None = None, keyframes_per_second: float = 1.0, actions: str = "auto",
                fps: int = 30, frames_dir: str = "frames") -> ImportSummary:
    """Import one CVAT for video export (module docstring)."""
    from bmvit.data.prepare.frames import Recipe, extract_frames

    if split not in ("train", "val"):
        raise ConfigError(f"--split must be train or val, got {split!r}")
    Recipe(fps=fps).check()
    xml, video, root = Path(xml), Path(video), Path(root)
    vid = video_id or video.stem
    if not vid.strip() or vid != vid.strip() or any(c in vid for c in ',/\\\n\r') or vid in (".", ".."):
        raise ConfigError(f"--video-id {vid!r}: must be non-empty, without ',', '/', '\\', line breaks or "
                          f"spaces at either end (it names a frames folder and a CSV column)")
    task = read_cvat(xml)
    probe = probe_video(video)
    if task.width is not None and (task.width, task.height) != (probe.width, probe.height):
        raise DataError(f"{xml}: <original_size> is {task.width}x{task.height} but {video} is "
                        f"{probe.width}x{probe.height} (WxH); is this the export of the task made from that video?")
    W, H = probe.width, probe.height
    for t in task.tracks:
        for s in t.shapes:
            if s.frame >= probe.num_frames and not s.outside:  # an outside box there only ends the track
                raise DataError(f"{xml}:{s.line}: box at frame {s.frame}, but {video} has {probe.num_frames} frames "
                                f"(0..{probe.num_frames - 1}); is this the export of the task made from that video?")
    mode = _mode(task, actions)
    names, declared = _vocabulary(task, mode)
    tracks = task.tracks if mode == "label" or declared is None else [t for t in task.tracks if t.label in declared]
    if mode == "attributes":
        _check_attributes(task, tracks, set(names), declared)
    bad = next((n for n in names if '"' in n or "\n" in n or not n.strip()), None)
    if bad is not None:
        raise DataError(f"{xml}: action name {bad!r} cannot go into label_map.pbtxt (empty, or has '\"' or a line "
                        "break); rename it in the CVAT task")
    keys = _keyframes(probe, task, keyframes_per_second)

    rows: list[tuple[int, tuple[float, float, float, float], str, int]] = []  # (second, box, action, person)
    clipped = dropped = no_action = boxes = 0
    seconds_with_rows = set()
    scale = np.array([W, H, W, H], dtype=np.float64)
    for s, f in keys:
        for t in tracks:
            shape = t.at(f, task.stop_frame)
            if shape is None:
                continue
            acts = [t.label] if mode == "label" else [n for n, v in shape.attributes.items()
                                                       if v.lower() == "true" and n in names]
            if not acts:
                no_action += 1
                continue
            px = np.asarray(shape.box, dtype=np.float64)
            b = np.round(np.clip(px / scale, 0.0, 1.0), 3)
            if not (b[0] < b[2] and b[1] < b[3]):
                dropped += 1  # no area left inside the frame
                continue
            clipped += bool(px[0] < 0 or px[1] < 0 or px[2] > W or px[3] > H)
            boxes += 1
            seconds_with_rows.add(s)
            rows += [(s, tuple(float(v) for v in b), a, t.id) for a in dict.fromkeys(acts)]  # type: ignore[misc]
    if not rows:
        why = (f"{len(task.tracks)} tracks, {len(keys)} key frames at whole seconds in frames "
               f"{task.start_frame}..{task.stop_frame if task.stop_frame is not None else probe.num_frames - 1}")
        raise DataError(f"{xml}: no action at any key frame ({why}; actions from "
                        f"{'track labels' if mode == 'label' else 'checkbox attributes set to true'}); "
                        "see docs/custom-data.md for how to set up the CVAT task")

    ann = root / "annotations"
    csv_path, map_path = ann / f"{split}.csv", ann / "label_map.pbtxt"
    labels, ids, new = _label_ids(map_path, names)
    old = read_rows(csv_path) if csv_path.is_file() else AvaRows.empty()
    keep = np.array([v != vid for v in old.video_ids], dtype=bool)
    other = ann / ("val.csv" if split == "train" else "train.csv")
    in_other = other.is_file() and vid in set(read_rows(other).video_ids)

    folder = root / frames_dir / vid
    if folder.is_dir():
        n = sum(1 for _ in folder.glob(f"{vid}_*.*"))
        want = math.ceil(probe.num_frames * fps / probe.fps)  # the recipe's count for this video at --fps
        frames = (f"{folder} kept ({n} files, as {fps} fps gives)" if abs(n - want) <= 1 else
                  f"{folder} kept ({n} files, but {fps} fps gives {want}: made from another video or with "
                  "another --fps? remove the folder to rewrite it)")
    else:
        rep = extract_frames(video, root / frames_dir, Recipe(fps=fps), video_id=vid)
        frames = f"{folder} written ({rep.frames} frames at {fps} fps, frame 1 = second 0)"

    rows.sort(key=lambda r: (r[0], r[3], ids[r[2]]))
    new_rows = AvaRows([vid] * len(rows), np.array([r[0] for r in rows], np.int64),
                       np.array([r[1] for r in rows], np.float64).reshape(-1, 4),
                       np.array([ids[r[2]] for r in rows], np.int64), np.array([r[3] for r in rows], np.float64))
    kept = old.select(keep)
    merged = AvaRows(kept.video_ids + new_rows.video_ids, np.concatenate([kept.timestamps, new_rows.timestamps]),
                     np.concatenate([kept.boxes, new_rows.boxes]), np.concatenate([kept.actions, new_rows.actions]),
                     np.concatenate([kept.person_or_score, new_rows.person_or_score]))
    if new or not map_path.is_file():
        write_label_map(map_path, labels)  # atomic
    write_rows(csv_path, merged, person_or_score_format="{:d}")

    per_action = Counter(r[2] for r in rows)
    return ImportSummary(
        vid, split, mode, len(task.tracks), len(task.tracks) - len(tracks), len(keys), len(seconds_with_rows),
        keys[0][1] if keys else 0, keys[-1][1] if keys else 0, float(probe.fps), boxes,
        {n: per_action.get(n, 0) for n in sorted(set(names) | set(per_action), key=lambda n: ids[n])},
        clipped, dropped, no_action, int((~keep).sum()), csv_path, len(merged), map_path, new, len(labels), frames,
        task.other_shapes, str(other) if in_other else "", task.tags,
        [] if mode != "label" else list(dict.fromkeys(a.name for attrs in task.labels.values() for a in attrs
                                                      if a.input_type in ("select", "radio"))))
