"""AVA on-disk formats: annotation/detection CSVs, the label-map ``.pbtxt`` and exclusion lists.

This module (with :mod:`bmvit.data.formats.label_map` for the ``.pbtxt``) is the only place that
parses or writes these files; readers, the evaluator and the synthetic generator all go through it. Every parse error raises :class:`~bmvit.errors.DataError`
naming ``file:line`` and what was expected.

CSV rows (no header)::

    ground truth:  video_id,timestamp,x1,y1,x2,y2,action_id,person_id
    detections:    video_id,timestamp,x1,y1,x2,y2,action_id,score

Boxes are normalized corner coordinates in [0, 1]; ``timestamp`` is an integer second (AVA key
frames are at whole seconds; the frame key used everywhere is ``f"{video_id},{timestamp:04d}"``).
A 7-column row (no person id / score) is accepted, as the official evaluator does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmvit.atomic import atomic_output
from bmvit.data.formats.label_map import read_label_map, write_label_map
from bmvit.data.formats.text_file import csv_rows
from bmvit.errors import DataError

__all__ = [
    "AvaRows",
    "frame_key",
    "read_rows",
    "write_rows",
    "read_label_map",
    "write_label_map",
    "read_exclusions",
]


def frame_key(video_id: str, timestamp: int) -> str:
    """The key that identifies one annotated key frame (same format as the official evaluator)."""
    return f"{video_id},{int(timestamp):04d}"


@dataclass
class AvaRows:
    """Rows of an AVA CSV, column-wise.

    ``person_or_score`` holds the 8th column: the person id for ground truth, the score for
    detections (1.0 when the file has 7 columns, as in the official evaluator).
    """

    video_ids: list[str]  # (R,)
    timestamps: np.ndarray  # (R,) int64
    boxes: np.ndarray  # (R, 4) float64, normalized x1, y1, x2, y2
    actions: np.ndarray  # (R,) int64
    person_or_score: np.ndarray  # (R,) float64: person id (ground truth) or score (detections)

    def __len__(self) -> int:
        return len(self.video_ids)

    @classmethod
    def empty(cls) -> "AvaRows":
        return cls([], np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))

    def select(self, mask: np.ndarray) -> "AvaRows":
        idx = np.flatnonzero(mask)
        return AvaRows(
            [self.video_ids[i] for i in idx],
            self.timestamps[idx],
            self.boxes[idx],
            self.actions[idx],
            self.person_or_score[idx],
        )


_INT64 = 2**63


def _int_field(text: str, path: Path, line: int, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        # Accept "902.0" style integers written by other tools, reject real fractions.
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None or not number.is_integer():
            raise DataError(f"{path}:{line}: column '{name}' must be an integer, got {text!r}") from None
        value = int(number)
    if not -_INT64 <= value < _INT64:
        raise DataError(f"{path}:{line}: column '{name}' = {text.strip()[:30]} is out of range (64-bit integer)")
    return value


def _float_field(text: str, path: Path, line: int, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{line}: column '{name}' must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: column '{name}' must be a finite number, got {text!r}")
    return value


def _timestamp(text: str, path: Path, line: int) -> int:
    try:
        return _int_field(text, path, line, "timestamp")
    except DataError as e:
        if header_hint(line, text):
            raise DataError(f"{e}{header_hint(line, text)}") from None
        raise


def header_hint(line: int, timestamp: str) -> str:
    """What to add to the error of a first line whose timestamp is not a number: a header line, as
    pandas' ``to_csv`` writes; ``""`` otherwise."""
    try:
        float(timestamp)
    except ValueError:
        return " (AVA CSVs have no header line: remove it)" if line == 1 else ""
    return ""


def read_rows(path: str | Path) -> AvaRows:
    """Read an AVA ground-truth or detection CSV (7 or 8 columns, no header; UTF-8, CRLF and a BOM
    accepted). Any malformed row, non-finite number or out-of-range integer is a ``file:line`` DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    vids: list[str] = []
    ts: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    acts: list[int] = []
    extra: list[float] = []
    names = ("x1", "y1", "x2", "y2")
    for line, row in csv_rows(path, "annotation file"):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) not in (7, 8):
            raise DataError(
                f"{path}:{line}: expected 7 or 8 comma-separated columns "
                f"(video_id,timestamp,x1,y1,x2,y2,action_id[,person_id|score]), got {len(row)}"
            )
        vids.append(row[0].strip())
        ts.append(_timestamp(row[1], path, line))
        boxes.append(tuple(_float_field(row[2 + i], path, line, names[i]) for i in range(4)))
        acts.append(_int_field(row[6], path, line, "action_id"))
        extra.append(_float_field(row[7], path, line, "person_id/score") if len(row) == 8 else 1.0)
    return AvaRows(
        vids,
        np.asarray(ts, dtype=np.int64),
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(acts, dtype=np.int64),
        np.asarray(extra, dtype=np.float64),
    )


def write_rows(path: str | Path, rows: AvaRows, person_or_score_format: str = "{:.6f}") -> None:
    """Write rows as an AVA CSV; ``person_or_score_format`` formats the 8th column (``"{:d}"`` for person ids)."""
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        for i, vid in enumerate(rows.video_ids):
            x1, y1, x2, y2 = rows.boxes[i]
            value = rows.person_or_score[i]
            text = person_or_score_format.format(int(value) if "d" in person_or_score_format else float(value))
            f.write(
                f"{vid},{int(rows.timestamps[i]):04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},"
                f"{int(rows.actions[i])},{text}\n"
            )


def read_exclusions(path: str | Path) -> set[str]:
    """Read an excluded-timestamps CSV (``video_id,timestamp`` rows) into a set of frame keys."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: exclusions file not found")
    keys: set[str] = set()
    for line, row in csv_rows(path, "exclusions file"):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 2:
            raise DataError(f"{path}:{line}: expected 2 columns (video_id,timestamp), got {len(row)}")
        keys.add(frame_key(row[0].strip(), _timestamp(row[1], path, line)))
    return keys
