"""AVA annotation CSVs read for training: every row checked, every problem named by file:line.

Contract: :func:`read_checked_rows` returns the rows of an AVA ground-truth CSV
(``video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]``) that pass these checks, in file
order, as :class:`~bmvit.data.formats.ava.AvaRows`. A row fails when it has the wrong number
of columns, a non-numeric or non-finite value, a non-integer timestamp/action id, a box
coordinate outside [0, 1], ``x1 >= x2`` or ``y1 >= y2``, a timestamp outside
``keyframe_range`` (AVA v2.2: 902..1798), or an action id that is not in the label map. The
first failure raises :class:`~bmvit.errors.DataError` ``"<file>:<line>: ..."``; under
``on_error="skip"`` failing rows are left out, logged and counted (:class:`~bmvit.data.skips.SkipLog`).

Action ids outside the label map have their own switch, ``unknown_actions``: ``error`` (they
follow ``on_error``) or ``ignore`` — the documented way to train on a subset of the classes,
e.g. AVA's 80-class CSVs with the 60-class ``ava_action_list_v2.2_for_activitynet_2019.pbtxt``;
the ignored rows are counted per action id and printed, never dropped silently.

:func:`check_videos` applies the same policy to videos that the CSV lists but that are absent
on disk (no frames folder / no video file), naming the first CSV line of each, and
:func:`check_keyframes` to rows whose key frame is not a frame of its video (a timestamp before
``data.first_second`` or after the video's end).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bmvit.data.formats.ava import AvaRows, header_hint
from bmvit.data.formats.text_file import csv_rows
from bmvit.data.skips import SkipLog
from bmvit.errors import ConfigError, DataError

__all__ = ["UNKNOWN_ACTIONS", "check_keyframes", "check_videos", "read_checked_rows"]

UNKNOWN_ACTIONS = ("error", "ignore")
_BOX = ("x1", "y1", "x2", "y2")


def _number(text: str, name: str, integer: bool) -> float | int | str:
    """The value, or an error message."""
    try:
        v = float(text)
    except ValueError:
        return f"column '{name}' must be {'an integer' if integer else 'a number'}, got {text!r}"
    if not math.isfinite(v):
        return f"column '{name}' must be finite, got {text!r}"
    if integer:
        if not v.is_integer():
            return f"column '{name}' must be an integer, got {text!r}"
        if not -(2**63) <= v < 2**63:
            return f"column '{name}' = {text.strip()[:30]} is out of range (64-bit integer)"
        return int(v)
    return v


def _check_row(row: list[str], class_ids: set[int], keyframe_range: tuple[int, int] | None):
    """``(video, ts, box, action, extra)`` or an error message (without file:line)."""
    if len(row) not in (7, 8):
        return (f"expected 7 or 8 comma-separated columns "
                f"(video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]), got {len(row)}")
    vid = row[0].strip()
    if not vid:
        return "empty video_id"
    ts = _number(row[1], "timestamp", True)
    if isinstance(ts, str):
        return ts
    box = []
    for k in range(4):
        v = _number(row[2 + k], _BOX[k], False)
        if isinstance(v, str):
            return v
        if not 0.0 <= v <= 1.0:
            return f"column '{_BOX[k]}' = {v:g} is outside [0, 1] (boxes are normalized corners)"
        box.append(v)
    if box[0] >= box[2] or box[1] >= box[3]:
        return f"empty box: need x1 < x2 and y1 < y2, got {','.join(f'{b:g}' for b in box)}"
    action = _number(row[6], "action_id", True)
    if isinstance(action, str):
        return action
    extra = 1.0
    if len(row) == 8:
        extra = _number(row[7], "person_id", False)
        if isinstance(extra, str):
            return extra
    if keyframe_range is not None and not keyframe_range[0] <= ts <= keyframe_range[1]:
        return (f"timestamp {ts} outside the key-frame range {keyframe_range[0]}..{keyframe_range[1]} "
                "(data.keyframe_range)")
    if action not in class_ids:
        return ("unknown", vid, ts, tuple(box), action, extra)
    return (vid, ts, tuple(box), action, extra)


def read_checked_rows(path: str | Path, class_ids: set[int] | list[int], on_error: str = "error",
                      unknown_actions: str = "error", keyframe_range: tuple[int, int] | None = None,
                      ) -> tuple[AvaRows, np.ndarray]:
    """Checked rows and ``(R,)`` their 1-based line numbers (module docstring)."""
    if unknown_actions not in UNKNOWN_ACTIONS:
        raise ConfigError(f"'data.unknown_actions': {unknown_actions!r} is not one of {', '.join(UNKNOWN_ACTIONS)}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    ids = {int(c) for c in class_ids}
    skips = SkipLog(on_error, str(path))
    ignored: Counter[int] = Counter()
    vids: list[str] = []
    cols: list[tuple] = []
    lines: list[int] = []
    for line, row in csv_rows(path, "annotation file"):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        got = _check_row(row, ids, keyframe_range)
        if isinstance(got, str):
            hint = header_hint(line, row[1]) if len(row) > 1 else ""  # line 1 a header: say so
            skips.handle(f"{path}:{line}: {got}{hint}")
            continue
        if got[0] == "unknown":
            action = got[4]
            if unknown_actions == "ignore":
                ignored[action] += 1
                continue
            skips.handle(f"{path}:{line}: action id {action} is not in the label map "
                         f"(ids {min(ids)}..{max(ids)}, {len(ids)} classes; "
                         "data.unknown_actions=ignore trains on the label map's classes only)")
            continue
        vids.append(got[0])
        cols.append(got[1:])
        lines.append(line)
    if ignored:
        total = sum(ignored.values())
        print(f"{path}: ignored {total} row(s) whose action id is not in the label map "
              f"(data.unknown_actions=ignore): " + ", ".join(f"id {a}: {n}" for a, n in sorted(ignored.items())),
              file=sys.stderr)
    skips.print_summary()
    if not cols:
        return AvaRows.empty(), np.zeros(0, np.int64)
    ts, boxes, acts, extra = zip(*cols)
    rows = AvaRows(vids, np.asarray(ts, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4),
                   np.asarray(acts, np.int64), np.asarray(extra, np.float64))
    return rows, np.asarray(lines, np.int64)


def check_videos(rows: AvaRows, lines: np.ndarray, csv_path: str | Path, exists: Callable[[str], bool],
                 where: Callable[[str], str], on_error: str = "error") -> tuple[AvaRows, np.ndarray]:
    """Rows whose video ``exists``; a missing one is an error naming ``where(video)`` and its first line."""
    skips = SkipLog(on_error, str(csv_path))
    first: dict[str, int] = {}
    for i, v in enumerate(rows.video_ids):
        first.setdefault(v, i)
    missing = set()
    for v, i in first.items():
        if not exists(v):
            skips.handle(f"{csv_path}:{lines[i]}: video '{v}' is listed but absent on disk ({where(v)} not found)")
            missing.add(v)
    skips.print_summary()
    if not missing:
        return rows, lines
    keep = np.array([v not in missing for v in rows.video_ids], bool)
    return rows.select(keep), lines[keep]


def check_keyframes(rows: AvaRows, lines: np.ndarray, csv_path: str | Path, num_frames: Callable[[str], int],
                    where: Callable[[str], str], first_second: int, fps: int, on_error: str = "error",
                    ) -> tuple[AvaRows, np.ndarray]:
    """Rows whose key frame lies in its video: frame ``(timestamp - first_second) * fps + 1`` in
    ``1 .. n + 1`` for a video of ``num_frames(video)`` = ``n`` frames (a timestamp at the video's
    end time reads its last frame, as clips near the ends are clamped). A timestamp before frame 1
    (e.g. seconds counted from 0 with ``data.first_second`` left at AVA's 900) or after the end (its
    frames are not on disk) is an error naming the row, or a counted skip; so is a video whose
    frame count cannot be had (``num_frames`` raising DataError)."""
    skips = SkipLog(on_error, str(csv_path))
    first: dict[str, int] = {}
    for i, v in enumerate(rows.video_ids):
        first.setdefault(v, i)
    n_of: dict[str, int] = {}
    for v, i in first.items():
        try:
            n_of[v] = num_frames(v)
        except DataError as e:
            skips.handle(f"{csv_path}:{lines[i]}: video '{v}': {e}")
            n_of[v] = -1  # all its rows fail below, silently: the video was reported once
    n = np.array([n_of[v] for v in rows.video_ids], np.int64)  # (R,)
    key = (rows.timestamps - first_second) * fps + 1  # (R,) 1-based key-frame numbers
    keep = (n > 0) & (key >= 1) & (key <= n + 1)
    for i in np.flatnonzero(~keep & (n > 0)):  # only bad rows cost Python time
        v, ts = rows.video_ids[i], int(rows.timestamps[i])
        place = f"frame 1 is second {first_second} at {fps} fps (data.first_second, data.fps)"
        if key[i] < 1:
            skips.handle(f"{csv_path}:{lines[i]}: timestamp {ts} is before the first frame of video '{v}': {place}; "
                         "timestamps counted from the video's start need data.first_second=0")
        else:
            skips.handle(f"{csv_path}:{lines[i]}: timestamp {ts} is past the end of video '{v}': its {n[i]} frames "
                         f"({where(v)}) end at second {first_second + n[i] / fps:g}, {place}")
    skips.print_summary()
    if keep.all():
        return rows, lines
    return rows.select(keep), lines[keep]
