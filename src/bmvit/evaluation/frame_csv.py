"""CSV formats of the UCF101-24 / JHMDB evaluations (``eval-frame``, ``eval-video``).

All files are plain CSV without a header; blank lines are ignored. Boxes are absolute pixel
corners ``x1,y1,x2,y2`` of the original frame (the ``+1`` convention applies at evaluation:
a box spans ``x2 - x1 + 1`` pixels). ``frame`` is an integer frame number (1-based in the
datasets' annotations; any integers work as long as GT and detections agree).

==============  =========================================================  ==============
file            columns                                                    used by
==============  =========================================================  ==============
classes         one class name per line (the class index is its order)     both
GT boxes        ``video,frame,class_name,x1,y1,x2,y2``                      eval-frame
GT tubes        ``video,frame,class_name,tube_id,x1,y1,x2,y2``              both
detections      ``video,frame,class_name,score,x1,y1,x2,y2``                both
detected tubes  ``video,frame,class_name,tube_id,score,x1,y1,x2,y2``        eval-video
==============  =========================================================  ==============

``eval-frame`` accepts either GT form (the tube id is then ignored), so one GT file serves both
commands. A GT tube is the set of rows sharing ``(video, tube_id)``; its class must be the
same on every row and a frame may appear once per tube. A detected tube's score is the mean
of its rows' scores (ACT's tube score).

Every malformed row raises :class:`~bmvit.errors.DataError` naming ``file:line``: wrong column
count, non-integer frame, non-numeric or non-finite number, a class name that is not in the
class list, or a *ground-truth* box with ``x2 < x1`` or ``y2 < y1``. A *detection* box with
``x2 < x1`` or ``y2 < y1`` is accepted, as ACT's evaluator accepts it: it is scored with ACT's
+1-pixel IoU formula applied to the inverted box (its overlap with any box is 0 once it is
inverted by a pixel or more, so it is a false positive in practice; a NaN IoU, which the formula
gives when the union is 0, is a false positive too). :func:`inverted_note` reports how many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmvit.data.formats.text_file import csv_rows, read_text
from bmvit.errors import DataError

__all__ = ["FrameRows", "inverted_note", "read_classes", "read_detected_tubes", "read_detections", "read_gt",
           "shared_codes"]


@dataclass
class FrameRows:
    """Rows of one of the CSVs above, column-wise, in file order."""

    path: str
    videos: np.ndarray  # (R,) str video id
    frames: np.ndarray  # (R,) int64
    labels: np.ndarray  # (R,) int64 class index into the class list
    boxes: np.ndarray  # (R, 4) float64 absolute x1, y1, x2, y2
    scores: np.ndarray  # (R,) float64 (1.0 for GT)
    tubes: np.ndarray  # (R,) str tube id ("" if the file has none)
    lines: np.ndarray  # (R,) int64 line number of each row in ``path``

    def __len__(self) -> int:
        return len(self.frames)

    def where(self, line_index: int) -> str:
        """``file:line`` of row ``line_index``, for error messages."""
        return f"{self.path}:{int(self.lines[line_index])}"

    def inverted(self) -> np.ndarray:
        """(R,) bool: rows whose box has ``x2 < x1`` or ``y2 < y1``."""
        return (self.boxes[:, 2] < self.boxes[:, 0]) | (self.boxes[:, 3] < self.boxes[:, 1])


def inverted_note(rows: FrameRows) -> str | None:
    """One line about the detection boxes with ``x2 < x1`` or ``y2 < y1``, or ``None`` if none."""
    bad = np.flatnonzero(rows.inverted())
    if bad.size == 0:
        return None
    return (f"note: {rows.path}: {bad.size} detection box(es) with x2 < x1 or y2 < y1 (first at line "
            f"{int(rows.lines[bad[0]])}) scored as ACT scores them: +1-pixel IoU of the inverted box, "
            f"in practice false positives")


def read_classes(path: str | Path) -> list[str]:
    """Class names, one per line (surrounding spaces stripped, blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class list not found")
    names: list[str] = []
    seen: dict[str, int] = {}
    for line, text in enumerate(read_text(path, "class list").splitlines(), start=1):
        name = text.strip()
        if not name:
            continue
        if name in seen:
            raise DataError(f"{path}:{line}: class '{name}' repeats line {seen[name]}")
        if "," in name:
            raise DataError(f"{path}:{line}: class name '{name}' contains a comma")
        seen[name] = line
        names.append(name)
    if not names:
        raise DataError(f"{path}: no class names (expected one per line)")
    return names


def _read(path: str | Path, classes: list[str], layout: tuple[str, ...], what: str) -> FrameRows:
    """Parse ``path`` whose rows hold the named columns ``layout`` (one of the layouts above)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    index = {n: i for i, n in enumerate(classes)}
    col = {n: i for i, n in enumerate(layout)}
    videos, tubes = [], []
    frames, labels, lines = [], [], []
    boxes: list[tuple[float, float, float, float]] = []
    scores: list[float] = []
    spec = ",".join(layout)
    for line, row in csv_rows(path, f"{what} file"):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        where = f"{path}:{line}"
        if len(row) != len(layout):
            raise DataError(f"{where}: expected {len(layout)} columns ({spec}), got {len(row)}")
        frame_text = row[col["frame"]].strip()
        try:
            frame = int(frame_text)
        except ValueError:
            value = _number(frame_text)
            if value is None or not value.is_integer():
                hint = " (these files have no header line)" if line == 1 else ""
                raise DataError(f"{where}: column 'frame' must be an integer, got {frame_text!r}{hint}") from None
            frame = int(value)
        name = row[col["class_name"]].strip()
        if name not in index:
            raise DataError(f"{where}: unknown class {name!r} (not in the class list){_ava_hint(row, layout)}")
        values = []
        for key in ("x1", "y1", "x2", "y2") + (("score",) if "score" in col else ()):
            v = _number(row[col[key]])
            if v is None or not math.isfinite(v):
                raise DataError(f"{where}: column '{key}' must be a finite number, got {row[col[key]]!r}")
            values.append(v)
        x1, y1, x2, y2 = values[:4]
        if (x2 < x1 or y2 < y1) and "score" not in col:  # GT; detections: scored as ACT does
            raise DataError(f"{where}: box has x2 < x1 or y2 < y1 ({x1:g},{y1:g},{x2:g},{y2:g})")
        videos.append(row[col["video"]].strip())
        tubes.append(row[col["tube_id"]].strip() if "tube_id" in col else "")
        frames.append(frame)
        labels.append(index[name])
        boxes.append((x1, y1, x2, y2))
        scores.append(values[4] if "score" in col else 1.0)
        lines.append(line)
    return FrameRows(
        path=str(path),
        videos=np.asarray(videos, dtype=str),
        frames=np.asarray(frames, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        scores=np.asarray(scores, dtype=np.float64),
        tubes=np.asarray(tubes, dtype=str),
        lines=np.asarray(lines, dtype=np.int64),
    )


def _ava_hint(row: list[str], layout: tuple[str, ...]) -> str:
    """A pointer to the expected columns when ``row`` has the AVA layout instead
    (``video,timestamp,x1,y1,x2,y2,action_id,score|person_id``, normalized boxes: e.g. the
    ``detections_<split>.csv`` of ``bmvit eval``, or ``prepare act-gt``'s ``*_test.csv``)."""
    ava = len(row) == 8 and all(_number(t) is not None for t in row[1:8]) and \
        all(0 <= float(t) <= 1 for t in row[2:6])
    if not ava:
        return ""
    return (f"; the row looks like the AVA layout video,timestamp,x1,y1,x2,y2,action_id,score with normalized "
            f"boxes, this file takes {','.join(layout)} (boxes in pixels)")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


GT_BOXES = ("video", "frame", "class_name", "x1", "y1", "x2", "y2")
GT_TUBES = ("video", "frame", "class_name", "tube_id", "x1", "y1", "x2", "y2")
DETECTIONS = ("video", "frame", "class_name", "score", "x1", "y1", "x2", "y2")
DETECTED_TUBES = ("video", "frame", "class_name", "tube_id", "score", "x1", "y1", "x2", "y2")


def read_gt(path: str | Path, classes: list[str], tubes: bool = False) -> FrameRows:
    """GT rows: 7 columns (boxes) or 8 (with ``tube_id``); ``tubes=True`` requires the 8."""
    path = Path(path)
    if tubes:
        return _read(path, classes, GT_TUBES, "ground-truth")
    width = _first_row_width(path)
    return _read(path, classes, GT_TUBES if width == len(GT_TUBES) else GT_BOXES, "ground-truth")


def read_detections(path: str | Path, classes: list[str]) -> FrameRows:
    """Per-frame detection rows (8 columns)."""
    return _read(path, classes, DETECTIONS, "detection")


def read_detected_tubes(path: str | Path, classes: list[str]) -> FrameRows:
    """Already-linked detection tubes (9 columns)."""
    return _read(path, classes, DETECTED_TUBES, "detected-tube")


def _first_row_width(path: Path) -> int:
    """Column count of the first non-blank row (0 for an empty or missing file)."""
    if not path.is_file():
        return 0
    for _, row in csv_rows(path):
        if row and not (len(row) == 1 and not row[0].strip()):
            return len(row)
    return 0


def shared_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of two (R,) string arrays (e.g. video ids), consistent between them."""
    _, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    return inv[: len(a)], inv[len(a) :]
